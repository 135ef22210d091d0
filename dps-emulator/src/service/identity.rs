//! The devices as their hubs know them: each registration's device id, hub and status, and the
//! credentials it may present there, read from the records DPS writes (one place holds the
//! registrations both sides read). Admin calls change them here.

use rustls_pki_types::CertificateDer;
use zeroize::Zeroizing;

use super::{AttestationKind, DeviceStatus, RegistrationRecord, Service};
use crate::Error;
use crate::enrollment::{GroupAttestation, IndividualAttestation};

/// What a hub checks a connecting device against.
pub(crate) struct HubIdentity {
    /// Its registration (hub, status, attestation, certificate thumbprints).
    pub(crate) record: RegistrationRecord,
    /// The keys its SAS tokens may be signed with: the enrollment's (primary and secondary),
    /// the group's derived keys, or the TPM's hub key. Empty for X.509 devices.
    pub(crate) sas_keys: Vec<Zeroizing<Vec<u8>>>,
    /// For a member of an X.509 enrollment group: the group's CA, which a renewed certificate
    /// may chain to.
    pub(crate) group_ca: Option<CertificateDer<'static>>,
}

impl Service {
    /// The device with this device id, as its hub knows it; `None` if no registration made it.
    pub(crate) fn hub_identity(&self, device_id: &str) -> Option<HubIdentity> {
        let record = {
            let state = self.lock();
            let registration_id = state.devices.get(device_id)?;
            state.registrations.get(registration_id)?.clone()
        };
        let mut sas_keys = Vec::new();
        let mut group_ca = None;
        let enrollments = self.enrollments.read().unwrap_or_else(|e| e.into_inner());
        let group = record
            .enrollment_group_id
            .as_deref()
            .and_then(|id| enrollments.groups.iter().find(|g| g.id == id));
        match (record.attestation, group) {
            (AttestationKind::SymmetricKey, Some(group)) => {
                if let GroupAttestation::SymmetricKey(keys) = &group.attestation {
                    let derived = keys.derive(&record.registration_id);
                    sas_keys.extend(derived.keys().map(|k| Zeroizing::new(k.to_vec())));
                }
            }
            (AttestationKind::SymmetricKey, None) => {
                if let Some(enrollment) = enrollments.individual.get(&record.registration_id)
                    && let IndividualAttestation::SymmetricKey(keys) = &enrollment.attestation
                {
                    sas_keys.extend(keys.keys().map(|k| Zeroizing::new(k.to_vec())));
                }
            }
            (AttestationKind::Tpm, _) => {
                if let Some(key) = self.lock().hub_keys.get(&record.registration_id) {
                    sas_keys.push(key.clone());
                }
            }
            (AttestationKind::X509, Some(group)) => {
                if let GroupAttestation::X509Ca(ca) = &group.attestation {
                    group_ca = Some(ca.clone());
                }
            }
            (AttestationKind::X509, None) => {}
        }
        Some(HubIdentity {
            record,
            sas_keys,
            group_ca,
        })
    }

    /// Changes what the hubs know of a device (an admin call): its status, its hub. Returns
    /// the updated record.
    ///
    /// # Errors
    /// [`Error::UnknownDevice`] when no registration has this device id.
    pub(crate) fn update_device(
        &self,
        device_id: &str,
        status: Option<DeviceStatus>,
        hub: Option<&str>,
    ) -> Result<RegistrationRecord, Error> {
        let mut state = self.lock();
        let mut record = state
            .devices
            .get(device_id)
            .and_then(|id| state.registrations.get(id))
            .cloned()
            .ok_or_else(|| Error::UnknownDevice {
                device_id: hsm_core::untrusted::printable(device_id).into_owned(),
            })?;
        if let Some(status) = status {
            record.status = status;
        }
        if let Some(hub) = hub {
            record.assigned_hub = hub.to_owned();
        }
        self.save(&mut state, record.clone());
        Ok(record)
    }

    /// Makes `leaf` the device's issued certificate (its hub issued it); the one before stays
    /// accepted (the last four).
    pub(crate) fn renew_issued_certificate(&self, device_id: &str, leaf: &CertificateDer<'_>) {
        let mut state = self.lock();
        let Some(mut record) = state
            .devices
            .get(device_id)
            .and_then(|id| state.registrations.get(id))
            .cloned()
        else {
            return;
        };
        if let Some(previous) = record
            .issued_certificate_sha256
            .replace(super::sha256_hex(leaf))
        {
            record.earlier_issued_sha256.push(previous);
            let excess = record.earlier_issued_sha256.len().saturating_sub(4);
            record.earlier_issued_sha256.drain(..excess);
        }
        self.save(&mut state, record);
    }

    /// Keeps the hub key sent to a TPM device (or forgets it, with `None`).
    pub(super) fn keep_hub_key(&self, registration_id: &str, key: Option<Zeroizing<Vec<u8>>>) {
        let mut state = self.lock();
        match key {
            Some(key) => state.hub_keys.insert(registration_id.to_owned(), key),
            None => state.hub_keys.remove(registration_id),
        };
    }
}
