//! X.509: the device's certificate chain and alias key authenticate the TLS connection itself.

use std::sync::Arc;

use hsm_core::{RegistrationId, X509Attestation};
use tls_bridge::TlsIdentity;

use super::Mechanism;
use crate::Error;
use crate::registration::HmacSource;
use crate::transport::BoxFuture;

/// X.509 attestation through any driver.
#[derive(Debug)]
pub(crate) struct X509(pub(crate) Arc<dyn X509Attestation>);

impl Mechanism for X509 {
    fn name(&self) -> &'static str {
        "X.509"
    }

    fn over_mqtt(&self) -> bool {
        true
    }

    fn tls_identity(&self) -> Result<Option<TlsIdentity>, Error> {
        TlsIdentity::from_attestation(self.0.as_ref())
            .map(Some)
            .map_err(|e| Error::Tls {
                operation: "use the X.509 attestation as a TLS identity",
                source: Box::new(e),
            })
    }

    fn known_registration_id(&self) -> Option<&RegistrationId> {
        Some(self.0.registration_id())
    }

    fn sas_signer(&self) -> Option<HmacSource> {
        None
    }

    fn token_on_first_request(&self) -> bool {
        false
    }

    fn fingerprint(&self) -> BoxFuture<'_, Result<Vec<u8>, Error>> {
        let leaf = self.0.certificate_chain().first().map(|c| c.to_vec());
        Box::pin(async move { leaf.ok_or_else(|| Error::config("the X.509 chain is empty")) })
    }
}
