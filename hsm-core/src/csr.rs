//! PKCS#10 certificate signing requests signed through a key handle.

use std::sync::Arc;

use crate::{Error, KeyHandle, RcgenSigner};

/// A PKCS#10 CSR (DER) whose subject is `CN={common_name}`, signed inside the HSM through
/// `key`. What DPS certificate issuance, `hsm-provision pkcs11 csr` and the drivers' own CSR
/// helpers send.
///
/// Requires the `rcgen` feature.
///
/// # Errors
/// [`Error::UnsupportedScheme`] when the key cannot sign with the scheme a CSR needs, the
/// driver's own error when the signature fails (not rcgen's cause-less "remote key error"), and
/// [`Error::Csr`] when rcgen cannot encode the request.
pub fn csr_der(key: Arc<dyn KeyHandle>, common_name: &str) -> Result<Vec<u8>, Error> {
    let signer = RcgenSigner::new(key)?;
    let encoding = |e: rcgen::Error| Error::Csr {
        source: Box::new(e),
    };
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(encoding)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    match params.serialize_request(&signer) {
        Ok(request) => Ok(request.der().to_vec()),
        Err(rcgen::Error::RemoteKeyError) => Err(signer.take_error().unwrap_or(Error::Csr {
            source: Box::new(rcgen::Error::RemoteKeyError),
        })),
        Err(e) => Err(encoding(e)),
    }
}
