//! Symmetric key: every request carries a SAS token the driver HMACs with the device key.

use std::sync::Arc;

use hsm_core::{RegistrationId, SymmetricKeyAttestation};
use tls_bridge::TlsIdentity;

use super::Mechanism;
use crate::Error;
use crate::registration::HmacSource;
use crate::transport::BoxFuture;

/// Symmetric-key attestation through any driver (a key in memory, an HMAC key on a token).
#[derive(Debug)]
pub(crate) struct SymmetricKey(pub(crate) Arc<dyn SymmetricKeyAttestation>);

impl Mechanism for SymmetricKey {
    fn name(&self) -> &'static str {
        "symmetric key"
    }

    fn over_mqtt(&self) -> bool {
        true
    }

    fn tls_identity(&self) -> Result<Option<TlsIdentity>, Error> {
        Ok(None)
    }

    fn known_registration_id(&self) -> Option<&RegistrationId> {
        Some(self.0.registration_id())
    }

    fn sas_signer(&self) -> Option<HmacSource> {
        Some(HmacSource::Symmetric(self.0.clone()))
    }

    fn token_on_first_request(&self) -> bool {
        true
    }

    fn fingerprint(&self) -> BoxFuture<'_, Result<Vec<u8>, Error>> {
        let key = self.0.clone();
        Box::pin(async move {
            let mac = super::blocking("fingerprint the attestation", move || {
                key.hmac_sha256(super::FINGERPRINT_LABEL)
            })
            .await?;
            Ok(mac.to_vec())
        })
    }
}
