//! Assignment: which hub a device goes to, its record (kept across registrations), the
//! certificate issued from its CSR, the TPM's hub key, and the `registrationState` it gets.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::auth::Authenticated;
use super::auth::tpm_activation_blob;
use super::{AttestationKind, RegistrationRecord, Reply, Request, Service};
use crate::clock::{now_rfc3339, random_bytes, random_uuid};
use crate::enrollment::AllocationPolicy;
use crate::tls::CsrError;

/// Where a device goes when no hub is configured at all.
const FALLBACK_HUB: &str = "emulated-hub.azure-devices.net";

impl Service {
    /// Assigns an authenticated device and returns its `registrationState`.
    pub(super) fn assign(
        &self,
        request: &Request<'_>,
        auth: &Authenticated,
        payload: Option<Value>,
        csr: Option<&[u8]>,
    ) -> Result<Value, Reply> {
        let id = request.registration_id.as_str();
        let hubs = if auth.common.iot_hubs.is_empty() {
            &self.settings.iot_hubs
        } else {
            &auth.common.iot_hubs
        };
        let policy = auth.common.allocation.unwrap_or(self.settings.allocation);
        let issued = match csr {
            None => None,
            Some(der) => Some(
                self.ca
                    .issue_from_csr(der, id, self.settings.issued_certificate_validity)
                    .map_err(|e| {
                        let why = match e {
                            CsrError::Malformed => "The CSR is not a valid PKCS#10 request.",
                            CsrError::Signature => "The CSR's signature does not verify.",
                            CsrError::CommonName => {
                                "The CSR's common name must be the registration id."
                            }
                        };
                        Reply::error(400, 400004, why)
                    })?,
            ),
        };
        let hub_key = match &auth.tpm {
            None => None,
            Some(keys) => {
                let key = Zeroizing::new(random_bytes(32));
                let blob = tpm_activation_blob(keys, &key).map_err(|reason| {
                    Reply::error(500, 500000, &format!("Cannot build the hub key: {reason}"))
                })?;
                self.keep_hub_key(id, Some(key));
                Some(blob)
            }
        };
        let certificate_sha256 = match auth.attestation {
            AttestationKind::X509 => request.client_chain.first().map(|leaf| sha256_hex(leaf)),
            _ => None,
        };
        let issued_certificate_sha256 = issued
            .as_ref()
            .and_then(|chain| chain.first())
            .map(|leaf| sha256_hex(leaf));
        let now = now_rfc3339();
        let (record, substatus) = {
            let mut state = self.lock();
            let previous = state.registrations.get(id).cloned();
            let (hub, substatus) = match &previous {
                Some(p) if hubs.contains(&p.assigned_hub) => {
                    (p.assigned_hub.clone(), "initialAssignment")
                }
                Some(_) => (choose_hub(hubs, policy, id), "deviceDataMigrated"),
                None => (choose_hub(hubs, policy, id), "initialAssignment"),
            };
            // A device its hub disabled stays disabled when it registers again to that hub;
            // on another hub it is a new device identity, enabled.
            let same_hub = previous.as_ref().filter(|p| p.assigned_hub == hub);
            let status = same_hub.map(|p| p.status).unwrap_or_default();
            // A new certificate for a device that had one on the same hub: the earlier ones
            // stay valid until they expire (the hub accepts every certificate issued for it).
            let mut earlier_issued_sha256 = Vec::new();
            if let (Some(p), Some(_)) = (same_hub, &issued_certificate_sha256) {
                earlier_issued_sha256.clone_from(&p.earlier_issued_sha256);
                earlier_issued_sha256.extend(p.issued_certificate_sha256.clone());
                let excess = earlier_issued_sha256.len().saturating_sub(4);
                earlier_issued_sha256.drain(..excess);
            }
            let record = RegistrationRecord {
                registration_id: id.to_owned(),
                device_id: auth.device_id.clone(),
                assigned_hub: hub,
                created_date_time_utc: previous
                    .as_ref()
                    .map_or_else(|| now.clone(), |p| p.created_date_time_utc.clone()),
                last_updated_date_time_utc: now.clone(),
                etag: format!("\"{}\"", random_uuid()),
                enrollment_group_id: auth.group.clone(),
                attestation: auth.attestation,
                registrations: previous
                    .as_ref()
                    .map_or(1, |p| p.registrations.saturating_add(1)),
                status,
                certificate_sha256,
                issued_certificate_sha256,
                earlier_issued_sha256,
            };
            self.save(&mut state, record.clone());
            (record, substatus)
        };
        self.hub
            .create_twin(&record.device_id, auth.common.initial_twin.as_ref());
        tracing::info!(
            registration_id = %id,
            hub = %record.assigned_hub,
            device_id = %record.device_id,
            attestation = %auth.attestation,
            "assigned"
        );
        let mut state = json!({
            "registrationId": id,
            "createdDateTimeUtc": record.created_date_time_utc,
            "assignedHub": record.assigned_hub,
            "deviceId": record.device_id,
            "status": "assigned",
            "substatus": substatus,
            "lastUpdatedDateTimeUtc": record.last_updated_date_time_utc,
            "etag": record.etag,
        });
        let group = auth.group.as_ref().map(|g| json!({"enrollmentGroupId": g}));
        state[auth.attestation.as_str()] = match auth.attestation {
            AttestationKind::X509 | AttestationKind::SymmetricKey => {
                group.unwrap_or_else(|| json!({}))
            }
            AttestationKind::Tpm => json!({
                "authenticationKey": hub_key.map(|b| BASE64.encode(b)),
            }),
        };
        if let Some(p) = auth.common.return_payload.clone().or(payload) {
            state["payload"] = p;
        }
        if let Some(chain) = issued {
            state["issuedCertificateChain"] =
                Value::from(chain.iter().map(|c| BASE64.encode(c)).collect::<Vec<_>>());
        }
        Ok(state)
    }
}

/// The SHA-256 of a certificate, lowercase hex (as the record keeps it).
pub(crate) fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest as _;
    data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(der))
}

/// A hub for `id` under `policy`: the first (static) or one picked by a hash of the id.
fn choose_hub(hubs: &[String], policy: AllocationPolicy, id: &str) -> String {
    if hubs.is_empty() {
        return FALLBACK_HUB.to_owned();
    }
    let index = match policy {
        AllocationPolicy::Static => 0,
        AllocationPolicy::Hashed => {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(id.as_bytes());
            let n = u64::from_be_bytes([
                digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6],
                digest[7],
            ]);
            // The remainder is below hubs.len(), so it fits usize.
            usize::try_from(n % hubs.len() as u64).unwrap_or(0)
        }
    };
    hubs[index].clone()
}
