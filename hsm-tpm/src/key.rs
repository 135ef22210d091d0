//! Signing keys that live in the TPM, as `hsm-core` key handles.

use std::fmt;

use hsm_core::{KeyAlgorithm, KeyHandle, SignatureScheme};
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::KeyHandle as EsysKey;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccScheme, HashScheme, HashcheckTicket, Public, RsaScheme, Signature,
    SignatureScheme as TpmScheme,
};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

use crate::identity::{ensure_srk, flush, persist};
use crate::public::signing_key;
use crate::{Error, KeySpec, PersistentHandle, Tpm};

/// A signing key in the TPM, persisted at a handle, used through [`KeyHandle`]: ECDSA P-256
/// (SHA-256) or RSA 2048-4096 (PKCS#1 v1.5 and PSS with SHA-256/384/512, as the key's scheme
/// allows).
///
/// The message is hashed here and the digest signed with `TPM2_Sign` and a null hash-check
/// ticket, so the key must not be `restricted`. ECDSA's raw `r||s` is converted to DER by
/// `hsm-core`. The private key never leaves the TPM.
pub struct TpmKey {
    tpm: Tpm,
    handle: PersistentHandle,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    schemes: &'static [SignatureScheme],
    public: Vec<u8>,
}

impl TpmKey {
    /// The signing key persisted at `handle`, made by this crate or by tpm2-tools
    /// (`tpm2_create` + `tpm2_load` + `tpm2_evictcontrol`). Its authorisation must be the empty
    /// password (`userWithAuth`).
    ///
    /// # Errors
    /// [`Error::NotFound`] when nothing is persisted there; [`Error::UnsuitableKey`] for a
    /// restricted key, a key without `sign`, a curve other than P-256, an RSA size outside
    /// 2048-4096, or a scheme the key cannot use; [`Error::Tpm`], [`Error::Unavailable`].
    pub fn open(tpm: &Tpm, handle: PersistentHandle) -> Result<Self, Error> {
        let public = tpm.run("open a signing key", move |conn| {
            let object = conn.object(handle, "signing key")?;
            let (public, _, _) = conn
                .context()?
                .read_public(object.into())
                .map_err(Error::tpm("open a signing key", "TPM2_ReadPublic"))?;
            Ok(public)
        })?;
        Self::from_public(tpm, handle, &public)
    }

    /// Creates a key of `spec` under the SRK at [`PersistentHandle::SRK`] (created if missing)
    /// and persists it at `handle`.
    ///
    /// # Errors
    /// [`Error::HandleInUse`] when an object is persisted at `handle` already; [`Error::Tpm`],
    /// [`Error::Unavailable`].
    pub fn create(tpm: &Tpm, spec: KeySpec, handle: PersistentHandle) -> Result<Self, Error> {
        Self::create_under(tpm, PersistentHandle::SRK, spec, handle)
    }

    /// As [`create`](Self::create), under the storage key at `parent` (which, if missing, is
    /// created there with the standard SRK template).
    ///
    /// # Errors
    /// As [`create`](Self::create).
    pub fn create_under(
        tpm: &Tpm,
        parent: PersistentHandle,
        spec: KeySpec,
        handle: PersistentHandle,
    ) -> Result<Self, Error> {
        let template = spec.public()?;
        let public = tpm.run("create a signing key", move |conn| {
            let operation = "create a signing key";
            ensure_srk(conn, parent)?;
            if conn.exists(handle)? {
                return Err(Error::HandleInUse { handle });
            }
            let parent = EsysKey::from(conn.object(parent, "storage root key")?);
            let ctx = conn.context()?;
            let created = ctx
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.create(parent, template.clone(), None, None, None, None)
                })
                .map_err(Error::tpm(operation, "TPM2_Create"))?;
            let loaded = ctx
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.load(parent, created.out_private, created.out_public.clone())
                })
                .map_err(Error::tpm(operation, "TPM2_Load"))?;
            let persisted = persist(conn, loaded.into(), handle, operation);
            flush(conn.context()?, loaded.into());
            persisted?;
            Ok(created.out_public)
        })?;
        Self::from_public(tpm, handle, &public)
    }

    fn from_public(tpm: &Tpm, handle: PersistentHandle, public: &Public) -> Result<Self, Error> {
        let unsuitable = |reason: String| Error::UnsuitableKey { handle, reason };
        let attributes = public.object_attributes();
        if !attributes.sign_encrypt() {
            return Err(unsuitable("not a signing key (no `sign` attribute)".into()));
        }
        if attributes.restricted() {
            return Err(unsuitable(
                "a restricted key signs only TPM-made digests (TPM2_Sign needs a real ticket)"
                    .into(),
            ));
        }
        let (algorithm, spki) = signing_key(public).map_err(unsuitable)?;
        let schemes = schemes(public).map_err(unsuitable)?;
        Ok(Self {
            tpm: tpm.clone(),
            handle,
            algorithm,
            spki,
            schemes,
            public: crate::public::marshal_tpm2b(public)?,
        })
    }

    /// Where the key is persisted.
    pub fn handle(&self) -> PersistentHandle {
        self.handle
    }

    /// The TPM connection.
    pub fn tpm(&self) -> &Tpm {
        &self.tpm
    }

    /// The key's public area as a marshaled `TPM2B_PUBLIC` (`tpm2_readpublic -f tss`).
    pub fn tpm_public(&self) -> &[u8] {
        &self.public
    }

    /// Signs `digest` (already hashed for `scheme`) in the TPM; returns the signature in the
    /// `KeyHandle` format.
    fn sign_digest(&self, scheme: SignatureScheme, digest: Vec<u8>) -> Result<Vec<u8>, Error> {
        let handle = self.handle;
        let (tpm_scheme, _) = tpm_scheme(scheme)?;
        let signature = self.tpm.run("sign", move |conn| {
            let key = EsysKey::from(conn.object(handle, "signing key")?);
            let digest = Digest::try_from(digest.as_slice())
                .map_err(Error::tpm("sign", "TPM2_Sign (digest)"))?;
            let ticket = null_ticket()?;
            conn.context()?
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.sign(key, digest, tpm_scheme, ticket)
                })
                .map_err(Error::tpm("sign", "TPM2_Sign"))
        })?;
        match signature {
            Signature::EcDsa(ecc) => {
                let mut raw = Vec::with_capacity(64);
                for scalar in [ecc.signature_r().value(), ecc.signature_s().value()] {
                    if scalar.len() > 32 {
                        return Err(Error::UnexpectedOutput(
                            "an ECDSA scalar longer than 32 bytes",
                        ));
                    }
                    raw.extend(std::iter::repeat_n(0, 32 - scalar.len()));
                    raw.extend_from_slice(scalar);
                }
                hsm_core::signature::ecdsa_raw_to_der(self.algorithm, &raw)
                    .map_err(|_| Error::UnexpectedOutput("a malformed ECDSA signature"))
            }
            Signature::RsaSsa(rsa) | Signature::RsaPss(rsa) => Ok(rsa.signature().value().to_vec()),
            _ => Err(Error::UnexpectedOutput("a signature of another scheme")),
        }
    }
}

impl KeyHandle for TpmKey {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn schemes(&self) -> &'static [SignatureScheme] {
        self.schemes
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, hsm_core::Error> {
        hsm_core::check_scheme(self, scheme)?;
        let digest = match tpm_scheme(scheme).map(|(_, hash)| hash) {
            Ok(HashingAlgorithm::Sha384) => Sha384::digest(message).to_vec(),
            Ok(HashingAlgorithm::Sha512) => Sha512::digest(message).to_vec(),
            _ => Sha256::digest(message).to_vec(),
        };
        self.sign_digest(scheme, digest)
            .map_err(|e| hsm_core::Error::device("TPM2_Sign", e))
    }
}

impl fmt::Debug for TpmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmKey")
            .field("tpm", &self.tpm)
            .field("handle", &self.handle)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

/// The TPM's "no ticket": a digest the TPM did not hash itself, for a non-restricted key.
fn null_ticket() -> Result<HashcheckTicket, Error> {
    HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: Default::default(),
    })
    .map_err(Error::tpm("sign", "TPM2_Sign (validation ticket)"))
}

fn tpm_scheme(scheme: SignatureScheme) -> Result<(TpmScheme, HashingAlgorithm), Error> {
    use SignatureScheme::*;
    let hash = match scheme {
        EcdsaP256Sha256 | RsaPkcs1Sha256 | RsaPssSha256 => HashingAlgorithm::Sha256,
        EcdsaP384Sha384 | RsaPkcs1Sha384 | RsaPssSha384 => HashingAlgorithm::Sha384,
        RsaPkcs1Sha512 | RsaPssSha512 => HashingAlgorithm::Sha512,
        _ => {
            return Err(Error::UnexpectedOutput(
                "a scheme the TPM key does not claim",
            ));
        }
    };
    let hash_scheme = HashScheme::new(hash);
    let tpm = match scheme {
        EcdsaP256Sha256 | EcdsaP384Sha384 => TpmScheme::EcDsa { hash_scheme },
        RsaPssSha256 | RsaPssSha384 | RsaPssSha512 => TpmScheme::RsaPss { hash_scheme },
        _ => TpmScheme::RsaSsa { hash_scheme },
    };
    Ok((tpm, hash))
}

/// The schemes a key's public area lets `TPM2_Sign` use: all of its algorithm's when the key's
/// scheme is `NULL`, else the one it names.
fn schemes(public: &Public) -> Result<&'static [SignatureScheme], String> {
    use SignatureScheme::*;
    let hash = |h: HashScheme| h.hashing_algorithm();
    match public {
        Public::Ecc { parameters, .. } => match parameters.ecc_scheme() {
            EccScheme::Null => Ok(&[EcdsaP256Sha256]),
            EccScheme::EcDsa(h) if hash(h) == HashingAlgorithm::Sha256 => Ok(&[EcdsaP256Sha256]),
            other => Err(format!("ECC scheme {other:?} (ECDSA with SHA-256 needed)")),
        },
        Public::Rsa { parameters, .. } => match parameters.rsa_scheme() {
            RsaScheme::Null => Ok(KeyAlgorithm::Rsa { bits: 2048 }.schemes()),
            RsaScheme::RsaSsa(h) => match hash(h) {
                HashingAlgorithm::Sha256 => Ok(&[RsaPkcs1Sha256]),
                HashingAlgorithm::Sha384 => Ok(&[RsaPkcs1Sha384]),
                HashingAlgorithm::Sha512 => Ok(&[RsaPkcs1Sha512]),
                other => Err(format!("RSASSA with {other:?}")),
            },
            RsaScheme::RsaPss(h) => match hash(h) {
                HashingAlgorithm::Sha256 => Ok(&[RsaPssSha256]),
                HashingAlgorithm::Sha384 => Ok(&[RsaPssSha384]),
                HashingAlgorithm::Sha512 => Ok(&[RsaPssSha512]),
                other => Err(format!("RSA-PSS with {other:?}")),
            },
            other => Err(format!("RSA scheme {other:?} is not a signing scheme")),
        },
        _ => Err("not an RSA or ECC key".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_allow_every_scheme_of_their_algorithm() {
        assert_eq!(
            schemes(&KeySpec::EcdsaP256.public().unwrap()).unwrap(),
            [SignatureScheme::EcdsaP256Sha256]
        );
        assert_eq!(
            schemes(&KeySpec::Rsa2048.public().unwrap()).unwrap().len(),
            6
        );
        for scheme in (KeyAlgorithm::Rsa { bits: 2048 }).schemes() {
            let (tpm, _) = tpm_scheme(*scheme).unwrap();
            assert_eq!(scheme.is_pss(), matches!(tpm, TpmScheme::RsaPss { .. }));
        }
        assert!(tpm_scheme(SignatureScheme::Ed25519).is_err());
        assert!(null_ticket().is_ok());
    }
}
