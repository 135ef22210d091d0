//! Who is connecting to a hub, checked as IoT Hub checks it: the user name names the hub and
//! the device, the client id is the device id, the device is registered, enabled and assigned
//! to this hub, and it proves itself with the credential it was provisioned with: a SAS token
//! for `{hub}/devices/{deviceId}` signed with its key (no `skn`), or a TLS client certificate
//! that is the one it registered with or was issued.

use rustls_pki_types::CertificateDer;

use super::{HUB_API_VERSIONS, RefusalReason};
use crate::https::query_param;
use crate::sas::SasToken;
use crate::service::{AttestationKind, DeviceStatus, HubIdentity, Service, sha256_hex};
use crate::x509::{chain_verifies, common_name, valid_now};

/// A hub MQTT user name: `{hub}/{deviceId}/?api-version={v}[&model-id=...][&...]`. The hub is
/// kept as written (a `host:port` included: a client that reaches the hub by a name with a
/// port signs that name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Login {
    pub(crate) hub: String,
    pub(crate) device_id: String,
    pub(crate) api_version: Option<String>,
    pub(crate) model_id: Option<String>,
}

impl Login {
    /// Parses a user name; `None` if it is not a hub's (DPS's user names have a third
    /// segment, `{idScope}/registrations/{registrationId}/...`).
    pub(crate) fn parse(username: &str) -> Option<Self> {
        let (hub, rest) = username.split_once('/')?;
        let (device, tail) = rest.split_once('/')?;
        if hub.is_empty() || device.is_empty() || tail.contains('/') && !tail.starts_with('?') {
            return None;
        }
        // `?api-version=...`, or the old SDKs' `api-version=...` without the `?`.
        let query = tail.strip_prefix('?').unwrap_or(tail);
        Some(Self {
            hub: hub.to_owned(),
            device_id: hsm_core::percent::decode_utf8(device)?,
            api_version: query_param(query, "api-version"),
            model_id: query_param(query, "model-id"),
        })
    }
}

/// A device the hub let in.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) device_id: String,
    pub(crate) hub: String,
    /// When its SAS token expires (seconds since the epoch): the hub ends the connection then.
    pub(crate) expires: Option<u64>,
    /// The API version of its user name.
    pub(crate) api_version: Option<String>,
}

impl Service {
    /// Checks a hub CONNECT. `Err` is the reason to log; the device gets CONNACK 5 (4 for an
    /// unknown API version).
    pub(crate) fn admit(
        &self,
        login: &Login,
        client_id: &str,
        password: Option<&str>,
        chain: &[CertificateDer<'static>],
    ) -> Result<Admitted, RefusalReason> {
        match login.api_version.as_deref() {
            Some(v) if HUB_API_VERSIONS.contains(&v) => {}
            other => {
                return Err(RefusalReason::ApiVersion {
                    api_version: other.map(str::to_owned),
                });
            }
        }
        if client_id != login.device_id {
            return Err(RefusalReason::ClientId);
        }
        let identity = self
            .hub_identity(&login.device_id)
            .ok_or(RefusalReason::UnknownDevice)?;
        let record = &identity.record;
        if !record.assigned_hub.eq_ignore_ascii_case(&login.hub) {
            return Err(RefusalReason::WrongHub {
                assigned: record.assigned_hub.clone(),
            });
        }
        if record.status == DeviceStatus::Disabled {
            return Err(RefusalReason::Disabled);
        }
        let expires = match (password, chain.first()) {
            (Some(token), _) => Some(sas(login, &identity, token, self.now())?),
            (None, Some(leaf)) => {
                certificate(login, &identity, leaf, &chain[1..])?;
                self.hub
                    .record_certificate(&login.device_id, sha256_hex(leaf));
                None
            }
            (None, None) => return Err(RefusalReason::NoCredential),
        };
        Ok(Admitted {
            device_id: login.device_id.clone(),
            hub: login.hub.clone(),
            expires,
            api_version: login.api_version.clone(),
        })
    }
}

/// Checks a SAS token; returns its expiry.
fn sas(login: &Login, identity: &HubIdentity, token: &str, now: u64) -> Result<u64, RefusalReason> {
    let record = &identity.record;
    if record.attestation == AttestationKind::X509 || record.issued_certificate_sha256.is_some() {
        return Err(RefusalReason::SasNotAccepted);
    }
    if identity.sas_keys.is_empty() {
        return Err(match record.attestation {
            AttestationKind::Tpm => RefusalReason::NoHubKey,
            _ => RefusalReason::Sas(crate::SasError::BadSignature),
        });
    }
    let token = SasToken::parse(token)?;
    let resource = format!("{}/devices/{}", login.hub, login.device_id);
    token.verify(
        &resource,
        now,
        None,
        identity.sas_keys.iter().map(|k| k.as_slice()),
    )?;
    Ok(token.expiry())
}

/// Checks a client certificate (its possession was proven by the TLS handshake).
fn certificate(
    login: &Login,
    identity: &HubIdentity,
    leaf: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
) -> Result<(), RefusalReason> {
    let record = &identity.record;
    let thumbprint = sha256_hex(leaf);
    let matches = match (
        &record.issued_certificate_sha256,
        &record.certificate_sha256,
    ) {
        // Once a certificate was issued, it is the device's certificate (or one its hub
        // issued since, until it expires).
        (Some(issued), _) => {
            *issued == thumbprint || record.earlier_issued_sha256.contains(&thumbprint)
        }
        (None, Some(registered)) => {
            *registered == thumbprint
                || identity.group_ca.as_ref().is_some_and(|ca| {
                    common_name(leaf).as_deref() == Some(login.device_id.as_str())
                        && chain_verifies(leaf, intermediates, ca)
                })
        }
        (None, None) => return Err(RefusalReason::CertificateNotAccepted),
    };
    if !matches {
        return Err(RefusalReason::NotTheCertificate);
    }
    if !valid_now(leaf) {
        return Err(RefusalReason::CertificateNotValidNow);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn user_names() {
        assert_eq!(
            Login::parse("hub.example.net/dev-1/?api-version=2021-04-12&model-id=dtmi:x;1"),
            Some(Login {
                hub: "hub.example.net".into(),
                device_id: "dev-1".into(),
                api_version: Some("2021-04-12".into()),
                model_id: Some("dtmi:x;1".into()),
            })
        );
        let with_port = Login::parse(
            "localhost:8884/d/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4",
        )
        .unwrap();
        assert_eq!(with_port.hub, "localhost:8884");
        assert_eq!(
            Login::parse("h/d/api-version=2016-11-14")
                .unwrap()
                .api_version
                .as_deref(),
            Some("2016-11-14")
        );
        // DPS's user names and nonsense are not hub logins.
        for other in [
            "0ne1/registrations/dev-1/api-version=2019-03-31",
            "h/d",
            "/d/?api-version=1",
            "h//?api-version=1",
            "",
        ] {
            assert_eq!(Login::parse(other), None, "{other}");
        }
    }
}
