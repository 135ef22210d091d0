//! A development certificate authority that certifies keys it never holds: it issues a device
//! certificate for a key handle's *public* key, as a manufacturer's CA does for a key generated
//! in a token, a TPM or a remote signer. Its own key is a software key: development only.

use std::fmt;
use std::sync::Arc;

use hsm_core::{CertificateDer, KeyHandle, RcgenSigner};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Why a development CA could not be made or could not issue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// rcgen refused the parameters or failed to sign.
    #[error("cannot {operation}")]
    Certificate {
        /// What was being made.
        operation: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// The handle's public key cannot be certified (not a valid `SubjectPublicKeyInfo`, or a key
    /// type rcgen does not know).
    #[error("cannot certify the key handle's public key")]
    Key(#[source] hsm_core::Error),
}

/// A development root CA with a P-256 software key.
pub struct DevCa {
    certificate: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new self-signed root with common name `common_name` and a fresh key.
    ///
    /// # Errors
    /// [`Error::Certificate`] when rcgen fails.
    pub fn generate(common_name: &str) -> Result<Self, Error> {
        let failed = |operation| move |source| Error::Certificate { operation, source };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(failed("generate the CA key"))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(failed("make the CA parameters"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let certificate = params
            .self_signed(&key)
            .map_err(failed("sign the CA certificate"))?;
        Ok(Self {
            certificate: certificate.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (enroll it as an X.509 enrollment group).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// Issues a TLS client certificate with common name `common_name` for `key`'s public key.
    /// The handle is not asked to sign anything.
    ///
    /// # Errors
    /// [`Error::Key`] for a public key rcgen cannot certify, [`Error::Certificate`] when rcgen
    /// fails.
    pub fn issue(
        &self,
        key: Arc<dyn KeyHandle>,
        common_name: &str,
    ) -> Result<CertificateDer<'static>, Error> {
        let failed = |source| Error::Certificate {
            operation: "issue the device certificate",
            source,
        };
        let public_key = RcgenSigner::new(key).map_err(Error::Key)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let certificate = params
            .signed_by(&public_key, &self.issuer)
            .map_err(failed)?;
        Ok(certificate.der().clone())
    }
}
