//! A development root CA, and the "verification code" certificate DPS asks for as proof of
//! possession when a CA certificate is uploaded.

use std::sync::Arc;

use hsm_core::{CertificateDer, KeyHandle, RcgenSigner, SecretBytes};
use rcgen::{CertificateParams, Issuer as RcgenIssuer};

use crate::cert::{Name, Validity, ca_params, params, sign};
use crate::dice::derive_p256;
use crate::key::DiceKey;
use crate::{Error, Issuer};

/// A development root CA with an in-memory P-256 key. For development and tests: production roots
/// live in an HSM (use [`Issuer::Root`] with that HSM's key handle).
pub struct DevRoot {
    key: Arc<DiceKey>,
    params: CertificateParams,
    certificate: CertificateDer<'static>,
}

impl std::fmt::Debug for DevRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevRoot")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl DevRoot {
    /// A root with a fresh random key.
    ///
    /// # Errors
    /// [`Error::Certificate`], or [`Error::WrongLength`] if the system RNG fails.
    pub fn generate(name: Name, validity: Validity) -> Result<Self, Error> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice()).map_err(|_| Error::WrongLength {
            what: "random seed",
            expected: 32,
            got: 0,
        })?;
        Self::from_seed(&SecretBytes::copy_from(seed.as_slice()), name, validity)
    }

    /// A root whose key is derived from `seed` (HKDF-SHA256, info `DICE development root`):
    /// the same seed gives the same root, for reproducible development setups.
    ///
    /// # Errors
    /// [`Error::Certificate`].
    pub fn from_seed(seed: &SecretBytes, name: Name, validity: Validity) -> Result<Self, Error> {
        let key = Arc::new(DiceKey::new(derive_p256(
            seed.expose(),
            None,
            b"DICE development root",
        )?));
        let params = ca_params(&name, key.public_key_der(), &validity, None);
        let signer = RcgenSigner::new(key.clone()).map_err(Error::UnsupportedRootKey)?;
        let certificate = params
            .self_signed(&signer)
            .map_err(|source| Error::Certificate {
                what: "root",
                source,
            })?
            .der()
            .clone();
        Ok(Self {
            key,
            params,
            certificate,
        })
    }

    /// The root certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The root key, as a handle.
    pub fn key(&self) -> Arc<dyn KeyHandle> {
        self.key.clone()
    }

    /// This root as the issuer of DeviceID certificates.
    pub fn issuer(&self) -> Issuer {
        Issuer::Root {
            key: self.key.clone(),
            certificate: self.certificate.clone(),
        }
    }

    /// The proof-of-possession certificate DPS asks for after a CA upload: subject CN = the
    /// verification code DPS shows, signed by this root.
    ///
    /// # Errors
    /// [`Error::InvalidCommonName`] for an empty or over-long code, [`Error::Certificate`].
    pub fn verification_certificate(&self, code: &str) -> Result<CertificateDer<'static>, Error> {
        if code.is_empty() || code.len() > hsm_core::MAX_CN_LEN {
            return Err(Error::InvalidCommonName {
                name: code.to_owned(),
                reason: "a verification code is 1 to 64 characters".into(),
            });
        }
        // The subject key is irrelevant to DPS: a key derived from the code keeps it reproducible.
        let subject = DiceKey::new(derive_p256(code.as_bytes(), None, b"DICE verification")?);
        let params = params(
            &Name::cn(code),
            subject.public_key_der(),
            &Validity::default(),
        );
        let signer = RcgenSigner::new(self.key.clone()).map_err(Error::UnsupportedRootKey)?;
        let issuer = RcgenIssuer::new(self.params.clone(), &signer);
        sign("verification", &params, &subject, &issuer)
    }
}
