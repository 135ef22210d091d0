//! TPM: the register request carries the EK and SRK; DPS answers with a challenge (an identity
//! key only this TPM can import), the device proves possession with a SAS token HMAC'd by that
//! key inside the TPM, and on assignment imports the hub device key the same way.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hsm_core::{RegistrationId, TpmAttestation};
use tls_bridge::TlsIdentity;

use super::{Evidence, Mechanism, blocking};
use crate::Error;
use crate::registration::HmacSource;
use crate::transport::BoxFuture;
use crate::wire::{FinalState, TpmKeys};

/// TPM attestation through any driver.
#[derive(Debug)]
pub(crate) struct Tpm(pub(crate) Arc<dyn TpmAttestation>);

impl Mechanism for Tpm {
    fn name(&self) -> &'static str {
        "TPM"
    }

    fn over_mqtt(&self) -> bool {
        false
    }

    fn tls_identity(&self) -> Result<Option<TlsIdentity>, Error> {
        Ok(None)
    }

    fn known_registration_id(&self) -> Option<&RegistrationId> {
        None
    }

    fn evidence(&self) -> BoxFuture<'_, Result<Evidence, Error>> {
        let tpm = self.0.clone();
        Box::pin(async move {
            let (registration_id, ek, srk) = blocking("read the TPM's EK and SRK", move || {
                Ok((
                    tpm.registration_id()?,
                    tpm.endorsement_key()?,
                    tpm.storage_root_key()?,
                ))
            })
            .await?;
            Ok(Evidence {
                registration_id,
                tpm: Some(TpmKeys {
                    endorsement_key: BASE64.encode(ek),
                    storage_root_key: BASE64.encode(srk),
                }),
            })
        })
    }

    fn sas_signer(&self) -> Option<HmacSource> {
        Some(HmacSource::Tpm(self.0.clone()))
    }

    fn fingerprint(&self) -> BoxFuture<'_, Result<Vec<u8>, Error>> {
        let tpm = self.0.clone();
        Box::pin(super::blocking("read the endorsement key", move || {
            tpm.endorsement_key()
        }))
    }

    fn token_on_first_request(&self) -> bool {
        false
    }

    fn challenge(&self, blob: Vec<u8>) -> BoxFuture<'_, Result<(), Error>> {
        let tpm = self.0.clone();
        Box::pin(async move {
            tracing::info!("challenge: activating the TPM identity key");
            blocking("activate the TPM identity key", move || {
                tpm.activate_identity_key(&blob)
            })
            .await
        })
    }

    fn assigned<'a>(&'a self, state: &'a FinalState) -> BoxFuture<'a, Result<(), Error>> {
        let tpm = self.0.clone();
        let hub_key = state.tpm_authentication_key.clone();
        Box::pin(async move {
            let Some(blob) = hub_key else {
                return Ok(());
            };
            tracing::info!("importing the hub device key into the TPM");
            blocking("import the hub device key", move || {
                tpm.activate_identity_key(&blob)
            })
            .await
        })
    }
}
