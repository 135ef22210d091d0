#![doc = include_str!("../README.md")]
// docs.rs builds with `--cfg docsrs`: items behind a feature say which one.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod algorithm;
mod attestation;
mod certified_key;
#[cfg(feature = "rcgen")]
mod csr;
mod error;
mod key;
pub mod key_store;
pub mod pem;
pub mod percent;
#[cfg(feature = "rcgen")]
mod rcgen_signer;
mod registration_id;
mod sas;
mod secret;
pub mod signature;
pub mod untrusted;

pub use algorithm::{KeyAlgorithm, SignatureScheme};
pub use attestation::{SymmetricKeyAttestation, TpmAttestation, X509Attestation};
pub use certified_key::{CertificateProblem, CertifiedKey};
#[cfg(feature = "rcgen")]
pub use csr::csr_der;
pub use error::{DeviceError, Error};
pub use key::{KeyHandle, check_scheme};
pub use key_store::{KeyLabel, KeyStore, StoredKey};
#[cfg(feature = "rcgen")]
pub use rcgen_signer::RcgenSigner;
pub use registration_id::{
    MAX_CN_LEN, MAX_REGISTRATION_ID_LEN, RegistrationId, tpm_registration_id,
};
pub use rustls_pki_types::CertificateDer;
pub use sas::{Expiry, ResourceEncoding, SasToken, SasTokenBuilder};
pub use secret::{SecretBytes, SecretString};
