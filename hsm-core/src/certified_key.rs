//! The X.509 identity every driver hands out: a certificate chain and the handle of its leaf's
//! private key, checked to belong together once, when it is made.

use std::fmt;
use std::sync::Arc;

use der::{Decode as _, Encode as _};
use rustls_pki_types::CertificateDer;
use x509_cert::Certificate;

use crate::{Error, KeyHandle, RegistrationId, X509Attestation};

/// A certificate chain (leaf first) and the handle of the leaf's private key: an
/// [`X509Attestation`] whose registration id is the leaf's common name (or one given
/// explicitly).
///
/// Every driver builds its X.509 identity as a `CertifiedKey` (hsm-x509 from files, hsm-pkcs11
/// from a token, hsm-riot from a DICE derivation, a vendor's driver from its own store), so the
/// checks below are made the same way everywhere:
/// - the chain is not empty and its leaf parses as an X.509 certificate;
/// - the leaf's `SubjectPublicKeyInfo` is the handle's public key, byte for byte;
/// - the registration id is valid: the leaf's first common name, unless one is given.
///
/// ```
/// # fn demo(key: std::sync::Arc<dyn hsm_core::KeyHandle>, chain: Vec<hsm_core::CertificateDer<'static>>)
/// #     -> Result<(), hsm_core::Error> {
/// use hsm_core::CertifiedKey;
///
/// let identity = CertifiedKey::new(key, chain)?; // the leaf certifies the key; its CN is the id
/// println!("registration id: {}", identity.registration_id());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CertifiedKey {
    registration_id: RegistrationId,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn KeyHandle>,
}

/// Why a certificate chain cannot serve as an X.509 identity.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// The chain holds no certificate.
    EmptyChain,
    /// The leaf is not a DER X.509 certificate.
    MalformedLeaf,
    /// The leaf certifies another key than the handle's.
    KeyMismatch,
    /// The leaf has no common name, and no registration id was given.
    NoCommonName,
    /// The leaf's common name is not a valid registration id.
    InvalidCommonName {
        /// The rule it breaks (as [`Error::InvalidRegistrationId`] says it).
        reason: String,
    },
}

impl fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyChain => f.write_str("the certificate chain is empty"),
            Self::MalformedLeaf => f.write_str("the leaf is not a DER X.509 certificate"),
            Self::KeyMismatch => f.write_str("the leaf certificate is for another key"),
            Self::NoCommonName => f.write_str(
                "the leaf certificate has no common name (give the registration id explicitly)",
            ),
            Self::InvalidCommonName { reason } => write!(
                f,
                "the leaf's common name is not a valid registration id: {reason}"
            ),
        }
    }
}

impl CertifiedKey {
    /// Pairs `key` with its chain (leaf first); the registration id is the leaf's common name.
    ///
    /// # Errors
    /// [`Error::Certificate`] for an empty chain, a malformed leaf, a leaf for another key, or a
    /// missing or invalid common name.
    pub fn new(
        key: Arc<dyn KeyHandle>,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<Self, Error> {
        Self::with_optional_registration_id(key, chain, None)
    }

    /// Pairs `key` with its chain under an explicit registration id (the leaf's common name is
    /// not used).
    ///
    /// # Errors
    /// [`Error::Certificate`] for an empty chain, a malformed leaf or a leaf for another key.
    pub fn with_registration_id(
        key: Arc<dyn KeyHandle>,
        chain: Vec<CertificateDer<'static>>,
        registration_id: RegistrationId,
    ) -> Result<Self, Error> {
        Self::with_optional_registration_id(key, chain, Some(registration_id))
    }

    /// Pairs `key` with its chain, the registration id given or else the leaf's common name.
    ///
    /// # Errors
    /// As [`new`](Self::new) and [`with_registration_id`](Self::with_registration_id).
    pub fn with_optional_registration_id(
        key: Arc<dyn KeyHandle>,
        chain: Vec<CertificateDer<'static>>,
        registration_id: Option<RegistrationId>,
    ) -> Result<Self, Error> {
        let leaf = Leaf::parse(&chain)?;
        leaf.check_key(key.as_ref())?;
        let registration_id = match registration_id {
            Some(id) => id,
            None => leaf.registration_id()?,
        };
        Ok(Self {
            registration_id,
            chain,
            key,
        })
    }

    /// `Ok(())` when `chain`'s leaf certifies `key`: the chain is not empty, its leaf parses,
    /// and the leaf's public key is the handle's (the common name is not looked at).
    ///
    /// # Errors
    /// [`Error::Certificate`] for an empty chain, a malformed leaf or a leaf for another key.
    pub fn check_leaf(key: &dyn KeyHandle, chain: &[CertificateDer<'static>]) -> Result<(), Error> {
        Leaf::parse(chain)?.check_key(key)
    }

    /// The key handle.
    pub fn key(&self) -> &Arc<dyn KeyHandle> {
        &self.key
    }

    /// The registration id.
    pub fn registration_id(&self) -> &RegistrationId {
        &self.registration_id
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
}

impl X509Attestation for CertifiedKey {
    fn registration_id(&self) -> &RegistrationId {
        &self.registration_id
    }

    fn certificate_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    fn alias_key(&self) -> Arc<dyn KeyHandle> {
        self.key.clone()
    }
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("registration_id", &self.registration_id)
            .field("certificates", &self.chain.len())
            .field("key", &self.key)
            .finish()
    }
}

/// What the checks need from the leaf.
struct Leaf {
    spki: Vec<u8>,
    common_name: Option<String>,
}

impl Leaf {
    fn parse(chain: &[CertificateDer<'static>]) -> Result<Self, Error> {
        let problem = |problem| Error::Certificate { problem };
        let leaf = chain
            .first()
            .ok_or_else(|| problem(CertificateProblem::EmptyChain))?;
        let certificate = Certificate::from_der(leaf.as_ref())
            .map_err(|_| problem(CertificateProblem::MalformedLeaf))?;
        let tbs = certificate.tbs_certificate();
        let spki = tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|_| problem(CertificateProblem::MalformedLeaf))?;
        let common_name = tbs
            .subject()
            .common_name()
            .ok()
            .flatten()
            .map(|cn| cn.value().into_owned());
        Ok(Self { spki, common_name })
    }

    /// The leaf's common name as a registration id.
    fn registration_id(self) -> Result<RegistrationId, Error> {
        let common_name = self.common_name.ok_or(Error::Certificate {
            problem: CertificateProblem::NoCommonName,
        })?;
        RegistrationId::new(common_name).map_err(|e| match e {
            Error::InvalidRegistrationId { reason } => Error::Certificate {
                problem: CertificateProblem::InvalidCommonName { reason },
            },
            other => other,
        })
    }

    fn check_key(&self, key: &dyn KeyHandle) -> Result<(), Error> {
        if self.spki == key.public_key_der() {
            Ok(())
        } else {
            Err(Error::Certificate {
                problem: CertificateProblem::KeyMismatch,
            })
        }
    }
}
