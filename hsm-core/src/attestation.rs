use std::fmt::Debug;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use crate::{Error, KeyHandle, RegistrationId};

/// X.509 attestation: the device proves its identity with a certificate chain and a private key
/// that signs in the TLS handshake.
pub trait X509Attestation: Debug + Send + Sync {
    /// The registration id (by default the leaf certificate's common name).
    fn registration_id(&self) -> &RegistrationId;

    /// The certificate chain, leaf first. Never empty.
    fn certificate_chain(&self) -> &[CertificateDer<'static>];

    /// The handle of the leaf certificate's private key (the "alias key").
    fn alias_key(&self) -> Arc<dyn KeyHandle>;
}

/// Symmetric-key attestation: the device proves its identity with an HMAC-SHA256 over the SAS
/// string-to-sign. The key itself is never handed out.
pub trait SymmetricKeyAttestation: Debug + Send + Sync {
    /// The registration id.
    fn registration_id(&self) -> &RegistrationId;

    /// HMAC-SHA256 of `data` with the device key.
    ///
    /// # Errors
    /// [`Error::Device`] when the backend (a token, a key store) fails.
    fn hmac_sha256(&self, data: &[u8]) -> Result<[u8; 32], Error>;
}

/// TPM attestation: the device presents its endorsement key (EK) and storage root key (SRK),
/// imports the identity key DPS sends back encrypted to them, and proves possession by HMACing
/// with that key inside the TPM.
pub trait TpmAttestation: Debug + Send + Sync {
    /// The registration id; by default [`tpm_registration_id`](crate::tpm_registration_id) of the
    /// endorsement key.
    ///
    /// # Errors
    /// [`Error::Device`] when the EK cannot be read.
    fn registration_id(&self) -> Result<RegistrationId, Error>;

    /// The endorsement key's public area as a marshaled `TPM2B_PUBLIC`.
    ///
    /// # Errors
    /// [`Error::Device`] when the TPM fails.
    fn endorsement_key(&self) -> Result<Vec<u8>, Error>;

    /// The storage root key's public area as a marshaled `TPM2B_PUBLIC`.
    ///
    /// # Errors
    /// [`Error::Device`] when the TPM fails.
    fn storage_root_key(&self) -> Result<Vec<u8>, Error>;

    /// Imports the identity key from DPS's activation blob (credential blob, EK-encrypted seed,
    /// duplicated key, SRK-encrypted seed, public area) and keeps it in the TPM.
    ///
    /// # Errors
    /// [`Error::Device`] for a malformed blob or a TPM failure.
    fn activate_identity_key(&self, blob: &[u8]) -> Result<(), Error>;

    /// HMAC-SHA256 of `data` with the imported identity key, computed inside the TPM.
    ///
    /// # Errors
    /// [`Error::Device`] when no identity key is imported or the TPM fails.
    fn sign_with_identity(&self, data: &[u8]) -> Result<[u8; 32], Error>;
}
