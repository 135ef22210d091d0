//! What each attestation mechanism adds to a registration, one module per mechanism: the
//! evidence in the register request, the TLS identity or the SAS signer, the answer to DPS's
//! TPM challenge, the hub key imported on assignment. The registration run ([`crate::run`])
//! asks a [`Mechanism`] and never matches on which one it is.

mod symmetric_key;
mod tpm;
mod x509;

use std::fmt;

use hsm_core::RegistrationId;
use tls_bridge::TlsIdentity;

pub(crate) use symmetric_key::SymmetricKey;
pub(crate) use tpm::Tpm;
pub(crate) use x509::X509;

use crate::registration::HmacSource;
use crate::transport::BoxFuture;
use crate::wire::{FinalState, TpmKeys};
use crate::{Error, ServiceError};

/// One attestation mechanism, as the registration run sees it.
pub(crate) trait Mechanism: fmt::Debug + Send + Sync {
    /// For messages and logs: `"X.509"`, `"symmetric key"`, `"TPM"`.
    fn name(&self) -> &'static str;

    /// Whether DPS offers this mechanism over MQTT (it has no TPM attestation there).
    fn over_mqtt(&self) -> bool;

    /// The TLS client identity every connection presents (X.509), checked when the client is
    /// built; `None` for mechanisms that authenticate with SAS tokens.
    fn tls_identity(&self) -> Result<Option<TlsIdentity>, Error>;

    /// The registration id, when it is known without asking the device (X.509, symmetric key;
    /// a TPM's is derived from its EK).
    fn known_registration_id(&self) -> Option<&RegistrationId>;

    /// What the register request carries from the device, read from the driver. By default
    /// the known registration id and nothing else.
    fn evidence(&self) -> BoxFuture<'_, Result<Evidence, Error>> {
        let registration_id = self.known_registration_id().cloned();
        Box::pin(async move {
            Ok(Evidence {
                registration_id: registration_id
                    .ok_or_else(|| Error::config("the attestation has no registration id"))?,
                tpm: None,
            })
        })
    }

    /// What signs SAS tokens for DPS and the hub; `None` for X.509.
    fn sas_signer(&self) -> Option<HmacSource>;

    /// Whether the first register request already carries a SAS token (symmetric key), or
    /// waits for DPS's challenge (TPM).
    fn token_on_first_request(&self) -> bool;

    /// Answers DPS's TPM challenge (`401` with an activation blob) by importing the key it
    /// carries. By default, for mechanisms DPS never challenges: refused.
    fn challenge(&self, _blob: Vec<u8>) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Err(unexpected_challenge()) })
    }

    /// What identifies the device's attestation without revealing a secret, for the
    /// assignment cache: the X.509 leaf's SHA-256, the TPM's EK, or for a symmetric key an
    /// HMAC of a fixed label made by the driver (a key change shows, the key does not).
    fn fingerprint(&self) -> BoxFuture<'_, Result<Vec<u8>, Error>>;

    /// After assignment: takes what DPS sent for the device (the TPM's hub key). By default
    /// nothing.
    fn assigned<'a>(&'a self, _state: &'a FinalState) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

/// What a symmetric key (or TPM identity) HMACs for the cache's identity fingerprint.
pub(crate) const FINGERPRINT_LABEL: &[u8] = b"hsm-provisioning assignment cache identity v1";

/// The device's part of the register request.
#[derive(Debug)]
pub(crate) struct Evidence {
    pub(crate) registration_id: RegistrationId,
    /// The `tpm` member (EK and SRK), TPM only.
    pub(crate) tpm: Option<TpmKeys>,
}

/// The error for a TPM challenge sent to a device that cannot answer it (or a second one).
pub(crate) fn unexpected_challenge() -> Error {
    Error::Unauthorized {
        error: ServiceError {
            status: 401,
            message: Some("DPS sent a TPM challenge that cannot be answered".into()),
            ..ServiceError::default()
        },
    }
}

/// Runs a driver call on the blocking pool (drivers block on their device).
pub(crate) async fn blocking<T, F>(operation: &'static str, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, hsm_core::Error> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::driver(operation, hsm_core::Error::device(operation, e)))?
        .map_err(|e| Error::driver(operation, e))
}
