//! The server side of TPM activation: MakeCredential to the EK and the duplication of an HMAC
//! key to the SRK, in software (TPM 2.0 Part 1 "Credential Protection" and "Protected Storage").

use std::fmt;

use aes::cipher::KeyIvInit;
use rsa::Oaep;
use rsa::rand_core::TryCryptoRng;
use zeroize::Zeroizing;

use crate::alg::Hash;
use crate::kdf::kdfa;
use crate::marshal::{put_small_tpm2b, put_u16};
use crate::public::{KeyedHashDetails, PublicDetails};
use crate::{ActivationBlob, AlgId, Error, ObjectAttributes, Public, Scheme, SymDef};

/// Size of the inner wrapping key (the credential): AES-128.
pub const INNER_KEY_BYTES: usize = 16;
/// Largest HMAC key a TPM imports for an HMAC-SHA256 keyed-hash object: the SHA-256 block
/// size (libtpms refuses longer keys with `TPM_RC_KEY_SIZE`, although `MAX_SYM_DATA` is 128).
pub const MAX_HMAC_KEY_BYTES: usize = 64;

/// The attributes of the HMAC key's public area: `userWithAuth | sign`. Not `fixedTPM` or
/// `fixedParent` (an imported object is a duplicate), not `sensitiveDataOrigin` (the key came
/// from outside), no policy, no `noDA`, no `encryptedDuplication`.
pub const HMAC_KEY_ATTRIBUTES: ObjectAttributes =
    ObjectAttributes(ObjectAttributes::USER_WITH_AUTH.0 | ObjectAttributes::SIGN_ENCRYPT.0);

const LABEL_IDENTITY: &[u8] = b"IDENTITY\0";
const LABEL_DUPLICATE: &[u8] = b"DUPLICATE\0";
const LABEL_STORAGE: &[u8] = b"STORAGE\0";
const LABEL_INTEGRITY: &[u8] = b"INTEGRITY\0";

/// A built activation: the blob DPS sends and the inner wrapping key it chose (which the
/// device recovers with `TPM2_ActivateCredential`).
pub struct Activation {
    /// The blob to send.
    pub blob: ActivationBlob,
    inner_key: Zeroizing<[u8; INNER_KEY_BYTES]>,
}

impl Activation {
    /// The inner wrapping key: what `TPM2_ActivateCredential` returns on the right TPM and
    /// what `TPM2_Import` needs as `encryptionKey`.
    pub fn inner_key(&self) -> &[u8; INNER_KEY_BYTES] {
        &self.inner_key
    }
}

impl fmt::Debug for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Activation")
            .field("blob", &self.blob)
            .field("inner_key", &"[redacted]")
            .finish()
    }
}

/// Builds the activation blob that lets exactly the TPM owning `ek_public` import `hmac_key` as
/// an HMAC-SHA256 key under the storage key `srk_public`, with fresh randomness from the
/// operating system. This is what DPS does for a TPM enrollment.
///
/// `ek_public` and `srk_public` are marshaled `TPM2B_PUBLIC`s (what the device sends as
/// `endorsementKey` and `storageRootKey`). Both must be RSA restricted decryption keys with an
/// AES-CFB symmetric algorithm (every TCG RSA EK template and the usual SRK template).
///
/// The device side: `TPM2_ActivateCredential` (the SRK as the credentialed object, the EK
/// authorised by a `PolicySecret(TPM_RH_ENDORSEMENT)` session) returns the 16-byte inner key;
/// `TPM2_Import` under the SRK with that key as `encryptionKey` and symmetric algorithm
/// AES-128-CFB, then `TPM2_Load`, gives an HMAC key whose public area is
/// [`ActivationBlob::public`].
///
/// # Errors
/// Parse errors of [`Public::from_tpm2b`]; [`Error::Invalid`] when the EK or SRK is not a
/// restricted RSA decryption key with AES-CFB, or `hmac_key` is empty or longer than
/// [`MAX_HMAC_KEY_BYTES`]; [`Error::UnsupportedAlgorithm`] for an ECC EK or SRK or a name
/// algorithm other than SHA-256/384/512; [`Error::RsaKey`], [`Error::SeedEncryption`],
/// [`Error::Random`].
pub fn build_activation(
    ek_public: &[u8],
    srk_public: &[u8],
    hmac_key: &[u8],
) -> Result<ActivationBlob, Error> {
    build_activation_with(ek_public, srk_public, hmac_key, &mut getrandom::SysRng)
        .map(|activation| activation.blob)
}

/// [`build_activation`] with a caller-chosen random number generator (a `rand_core` 0.10
/// `TryCryptoRng`, re-exported as [`crate::rand_core`]), returning the inner key as well: for
/// deterministic tests, and for servers with their own generator.
///
/// The generator is drawn from in this order: the 16-byte inner key, the HMAC key's 32-byte
/// `seedValue`, the credential seed, the EK's OAEP padding, the duplication seed, the SRK's
/// OAEP padding.
///
/// # Errors
/// As [`build_activation`].
pub fn build_activation_with<R>(
    ek_public: &[u8],
    srk_public: &[u8],
    hmac_key: &[u8],
    rng: &mut R,
) -> Result<Activation, Error>
where
    R: TryCryptoRng + ?Sized,
    R::Error: Send + Sync + 'static,
{
    let ek = Public::from_tpm2b(ek_public)?;
    let srk = Public::from_tpm2b(srk_public)?;
    let ek = Protector::new(&ek, "EK public")?;
    let srk = Protector::new(&srk, "SRK public")?;
    if hmac_key.is_empty() || hmac_key.len() > MAX_HMAC_KEY_BYTES {
        return Err(Error::Invalid {
            structure: "HMAC key",
            reason: "must be 1 to 64 bytes long (the SHA-256 block size)",
        });
    }

    let mut inner_key = Zeroizing::new([0u8; INNER_KEY_BYTES]);
    fill(rng, &mut inner_key[..])?;
    let mut seed_value = Zeroizing::new([0u8; 32]);
    fill(rng, &mut seed_value[..])?;

    let key_public = hmac_key_public(&seed_value[..], hmac_key);
    let key_name = key_public.name()?;
    let srk_name = srk.name.clone();

    // MakeCredential(EK, credential = inner key, objectName = SRK name).
    let (credential_blob, ek_encrypted_seed) =
        make_credential(&ek, &srk_name, &inner_key[..], rng)?;

    // Duplicate the HMAC key to the SRK with the inner key as the inner wrapper's key.
    let sensitive = tpm2b_sensitive_keyed_hash(&seed_value[..], hmac_key);
    let (duplicate, srk_encrypted_seed) = duplicate(&srk, &key_name, &sensitive, &inner_key, rng)?;

    Ok(Activation {
        blob: ActivationBlob {
            credential_blob,
            ek_encrypted_seed,
            duplicate,
            srk_encrypted_seed,
            public: key_public.to_tpmt()?,
        },
        inner_key,
    })
}

/// An RSA storage key seeds are encrypted to: its RSA key, name algorithm, symmetric key size
/// and Name.
struct Protector {
    key: rsa::PublicKey,
    hash: Hash,
    sym_key_bytes: usize,
    name: Vec<u8>,
}

impl Protector {
    fn new(public: &Public, structure: &'static str) -> Result<Protector, Error> {
        let PublicDetails::Rsa(details) = &public.details else {
            return Err(Error::UnsupportedAlgorithm {
                structure,
                alg: public.object_type(),
            });
        };
        let storage = ObjectAttributes::RESTRICTED | ObjectAttributes::DECRYPT;
        if !public.attributes.contains(storage) {
            return Err(Error::Invalid {
                structure,
                reason: "not a restricted decryption (storage) key",
            });
        }
        let SymDef::Block {
            algorithm: AlgId::AES,
            key_bits,
            mode: AlgId::CFB,
        } = details.symmetric
        else {
            return Err(Error::Invalid {
                structure,
                reason: "symmetric algorithm is not AES-CFB",
            });
        };
        if !matches!(key_bits, 128 | 192 | 256) {
            return Err(Error::Invalid {
                structure,
                reason: "AES key size is not 128, 192 or 256 bits",
            });
        }
        let key = public.rsa_public_key().map_err(|e| match e {
            Error::RsaKey { source, .. } => Error::RsaKey { structure, source },
            other => other,
        })?;
        Ok(Protector {
            key,
            hash: Hash::from_alg(public.name_alg, structure)?,
            sym_key_bytes: usize::from(key_bits / 8),
            name: public.name()?,
        })
    }

    /// A fresh seed of the name algorithm's digest size and its RSA-OAEP encryption (hash =
    /// the name algorithm, `label`), per TPM 2.0 Part 1 annex B.10.3.
    fn seed<R>(
        &self,
        label: &'static [u8],
        purpose: &'static str,
        rng: &mut R,
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), Error>
    where
        R: TryCryptoRng + ?Sized,
        R::Error: Send + Sync + 'static,
    {
        let mut seed = Zeroizing::new(vec![0u8; self.hash.size()]);
        fill(rng, &mut seed)?;
        let encrypted = match self.hash {
            Hash::Sha256 => {
                self.key
                    .encrypt(rng, Oaep::<sha2::Sha256>::new_with_label(label), &seed)
            }
            Hash::Sha384 => {
                self.key
                    .encrypt(rng, Oaep::<sha2::Sha384>::new_with_label(label), &seed)
            }
            Hash::Sha512 => {
                self.key
                    .encrypt(rng, Oaep::<sha2::Sha512>::new_with_label(label), &seed)
            }
        }
        .map_err(|source| Error::SeedEncryption { purpose, source })?;
        Ok((seed, encrypted))
    }

    /// The symmetric key and HMAC key the TPM derives from `seed` to protect an object or
    /// credential named `name`: `KDFa(nameAlg, seed, "STORAGE", name, "", keyBits)` and
    /// `KDFa(nameAlg, seed, "INTEGRITY", "", "", digestBits)`.
    fn protection_keys(
        &self,
        seed: &[u8],
        name: &[u8],
    ) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>) {
        let sym_bits = (self.sym_key_bytes * 8) as u32;
        let hmac_bits = (self.hash.size() * 8) as u32;
        (
            kdfa(self.hash, seed, LABEL_STORAGE, name, &[], sym_bits),
            kdfa(self.hash, seed, LABEL_INTEGRITY, &[], &[], hmac_bits),
        )
    }
}

/// TPM2_MakeCredential in software (TPM 2.0 Part 1 section 24.4): returns the contents of the
/// `TPM2B_ID_OBJECT` (`TPM2B_DIGEST(integrityHMAC) || encIdentity`) and of the
/// `TPM2B_ENCRYPTED_SECRET`.
fn make_credential<R>(
    ek: &Protector,
    object_name: &[u8],
    credential: &[u8],
    rng: &mut R,
) -> Result<(Vec<u8>, Vec<u8>), Error>
where
    R: TryCryptoRng + ?Sized,
    R::Error: Send + Sync + 'static,
{
    let (seed, encrypted_seed) = ek.seed(LABEL_IDENTITY, "credential", rng)?;
    let (sym_key, hmac_key) = ek.protection_keys(&seed, object_name);
    // encIdentity = CFB(symKey, IV = 0, TPM2B_DIGEST(credential)).
    let mut enc_identity = Zeroizing::new(Vec::with_capacity(2 + credential.len()));
    put_small_tpm2b(&mut enc_identity, credential);
    aes_cfb_encrypt(&sym_key, &mut enc_identity)?;
    let integrity = ek.hash.hmac(&hmac_key, &[&enc_identity, object_name]);
    let mut id_object = Vec::with_capacity(2 + integrity.len() + enc_identity.len());
    put_small_tpm2b(&mut id_object, &integrity);
    id_object.extend_from_slice(&enc_identity);
    Ok((id_object, encrypted_seed))
}

/// Duplication in software (TPM 2.0 Part 1 section 23.3.2): the inner wrapper
/// `CFB(innerKey, IV = 0, TPM2B_DIGEST(H_nameAlg(TPM2B_SENSITIVE || name)) || TPM2B_SENSITIVE)`
/// and the outer wrapper to `parent`. Returns the contents of the `TPM2B_PRIVATE`
/// (`TPM2B_DIGEST(outerHMAC) || dupSensitive`) and of the `TPM2B_ENCRYPTED_SECRET`.
fn duplicate<R>(
    parent: &Protector,
    object_name: &[u8],
    tpm2b_sensitive: &[u8],
    inner_key: &[u8; INNER_KEY_BYTES],
    rng: &mut R,
) -> Result<(Vec<u8>, Vec<u8>), Error>
where
    R: TryCryptoRng + ?Sized,
    R::Error: Send + Sync + 'static,
{
    // The object's nameAlg is SHA-256 (see hmac_key_public).
    let inner_integrity = Hash::Sha256.digest(&[tpm2b_sensitive, object_name]);
    let mut enc_sensitive = Zeroizing::new(Vec::with_capacity(
        2 + inner_integrity.len() + tpm2b_sensitive.len(),
    ));
    put_small_tpm2b(&mut enc_sensitive, &inner_integrity);
    enc_sensitive.extend_from_slice(tpm2b_sensitive);
    aes_cfb_encrypt(inner_key, &mut enc_sensitive)?;

    let (seed, encrypted_seed) = parent.seed(LABEL_DUPLICATE, "duplication", rng)?;
    let (sym_key, hmac_key) = parent.protection_keys(&seed, object_name);
    let mut dup_sensitive = enc_sensitive.to_vec();
    aes_cfb_encrypt(&sym_key, &mut dup_sensitive)?;
    let outer_integrity = parent.hash.hmac(&hmac_key, &[&dup_sensitive, object_name]);
    let mut private = Vec::with_capacity(2 + outer_integrity.len() + dup_sensitive.len());
    put_small_tpm2b(&mut private, &outer_integrity);
    private.extend_from_slice(&dup_sensitive);
    Ok((private, encrypted_seed))
}

/// The HMAC key's public area: KEYEDHASH, nameAlg SHA-256, [`HMAC_KEY_ATTRIBUTES`], no policy,
/// scheme HMAC-SHA256, `unique = SHA-256(seedValue || key)` (the TPM checks this binding on
/// load).
fn hmac_key_public(seed_value: &[u8], key: &[u8]) -> Public {
    Public {
        name_alg: AlgId::SHA256,
        attributes: HMAC_KEY_ATTRIBUTES,
        auth_policy: Vec::new(),
        details: PublicDetails::KeyedHash(KeyedHashDetails {
            scheme: Scheme::HMAC_SHA256,
            unique: Hash::Sha256.digest(&[seed_value, key]),
        }),
    }
}

/// `TPM2B_SENSITIVE` of a keyed-hash object: `sensitiveType = KEYEDHASH`, empty `authValue`,
/// `seedValue`, and the key as `TPM2B_SENSITIVE_DATA`.
fn tpm2b_sensitive_keyed_hash(seed_value: &[u8], key: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut tpmt = Zeroizing::new(Vec::with_capacity(8 + seed_value.len() + key.len()));
    put_u16(&mut tpmt, AlgId::KEYEDHASH.0);
    put_small_tpm2b(&mut tpmt, &[]);
    put_small_tpm2b(&mut tpmt, seed_value);
    put_small_tpm2b(&mut tpmt, key);
    let mut out = Zeroizing::new(Vec::with_capacity(2 + tpmt.len()));
    put_small_tpm2b(&mut out, &tpmt);
    out
}

/// AES-CFB with a zero IV, in place, with the key size chosen by `key.len()`.
fn aes_cfb_encrypt(key: &[u8], data: &mut [u8]) -> Result<(), Error> {
    const IV: [u8; 16] = [0; 16];
    let bad_key = || Error::Invalid {
        structure: "AES-CFB",
        reason: "key is not 16, 24 or 32 bytes",
    };
    match key.len() {
        16 => cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(key, &IV)
            .map_err(|_| bad_key())?
            .encrypt(data),
        24 => cfb_mode::Encryptor::<aes::Aes192>::new_from_slices(key, &IV)
            .map_err(|_| bad_key())?
            .encrypt(data),
        32 => cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(key, &IV)
            .map_err(|_| bad_key())?
            .encrypt(data),
        _ => return Err(bad_key()),
    }
    Ok(())
}

fn fill<R>(rng: &mut R, buf: &mut [u8]) -> Result<(), Error>
where
    R: TryCryptoRng + ?Sized,
    R::Error: Send + Sync + 'static,
{
    rng.try_fill_bytes(buf)
        .map_err(|e| Error::Random(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use rsa::rand_core::{TryCryptoRng, TryRng};

    use super::*;

    const EK: &[u8] = include_bytes!("../tests/data/ek.pub");
    const SRK: &[u8] = include_bytes!("../tests/data/srk.pub");
    const KEY: [u8; 32] = [0x42; 32];

    /// A deterministic generator for tests: SHA-256 in counter mode over a seed.
    struct TestRng {
        seed: u8,
        counter: u64,
    }

    impl TestRng {
        fn new(seed: u8) -> Self {
            Self { seed, counter: 0 }
        }
    }

    impl TryRng for TestRng {
        type Error = Infallible;

        fn try_next_u32(&mut self) -> Result<u32, Infallible> {
            let mut b = [0; 4];
            self.try_fill_bytes(&mut b)?;
            Ok(u32::from_le_bytes(b))
        }

        fn try_next_u64(&mut self) -> Result<u64, Infallible> {
            let mut b = [0; 8];
            self.try_fill_bytes(&mut b)?;
            Ok(u64::from_le_bytes(b))
        }

        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
            for chunk in dst.chunks_mut(32) {
                self.counter += 1;
                let block = Hash::Sha256.digest(&[&[self.seed], &self.counter.to_be_bytes()]);
                chunk.copy_from_slice(&block[..chunk.len()]);
            }
            Ok(())
        }
    }

    impl TryCryptoRng for TestRng {}

    /// A generator that always fails.
    struct BrokenRng;

    impl TryRng for BrokenRng {
        type Error = std::io::Error;

        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Err(std::io::Error::other("no entropy"))
        }

        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            Err(std::io::Error::other("no entropy"))
        }

        fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), Self::Error> {
            Err(std::io::Error::other("no entropy"))
        }
    }

    impl TryCryptoRng for BrokenRng {}

    #[test]
    fn deterministic_with_a_deterministic_generator() {
        let a = build_activation_with(EK, SRK, &KEY, &mut TestRng::new(1)).unwrap();
        let b = build_activation_with(EK, SRK, &KEY, &mut TestRng::new(1)).unwrap();
        let c = build_activation_with(EK, SRK, &KEY, &mut TestRng::new(2)).unwrap();
        assert_eq!(a.blob, b.blob);
        assert_eq!(a.inner_key(), b.inner_key());
        assert_ne!(a.blob, c.blob);
        assert_ne!(a.inner_key(), c.inner_key());
        // The first 16 bytes drawn are the inner key, as documented.
        let mut first = [0u8; INNER_KEY_BYTES];
        TestRng::new(1).try_fill_bytes(&mut first).unwrap();
        assert_eq!(a.inner_key(), &first);
    }

    #[test]
    fn layout_of_the_parts() {
        let a = build_activation_with(EK, SRK, &KEY, &mut TestRng::new(3)).unwrap();
        let blob = &a.blob;
        // TPM2B_DIGEST(HMAC-SHA256) || CFB(TPM2B_DIGEST(16-byte credential)).
        assert_eq!(blob.credential_blob.len(), 2 + 32 + 2 + 16);
        assert_eq!(blob.credential_blob[..2], [0, 32]);
        // RSA-2048 ciphertexts.
        assert_eq!(blob.ek_encrypted_seed.len(), 256);
        assert_eq!(blob.srk_encrypted_seed.len(), 256);
        // TPM2B_DIGEST(outer HMAC) || CFB(CFB(TPM2B_DIGEST(inner) || TPM2B_SENSITIVE)), where
        // TPMT_SENSITIVE = type, empty auth, 32-byte seed, 32-byte key.
        let sensitive = 2 + (2 + 2 + (2 + 32) + (2 + 32));
        assert_eq!(blob.duplicate.len(), 2 + 32 + (2 + 32) + sensitive);
        assert_eq!(blob.duplicate[..2], [0, 32]);

        let public = blob.public_area().unwrap();
        assert_eq!(public.attributes, HMAC_KEY_ATTRIBUTES);
        assert_eq!(public.name_alg, AlgId::SHA256);
        assert!(public.auth_policy.is_empty());
        let PublicDetails::KeyedHash(d) = &public.details else {
            panic!("not keyed-hash: {public:?}")
        };
        assert_eq!(d.scheme, Scheme::HMAC_SHA256);
        assert_eq!(d.unique.len(), 32);
        // The key is nowhere in the clear.
        let wire = blob.to_bytes().unwrap();
        assert!(!wire.windows(KEY.len()).any(|w| w == KEY));
        assert!(!wire.windows(16).any(|w| w == a.inner_key()));
    }

    #[test]
    fn debug_redacts_the_inner_key() {
        let a = build_activation_with(EK, SRK, &KEY, &mut TestRng::new(4)).unwrap();
        let debug = format!("{a:?}");
        assert!(debug.contains("[redacted]"));
        let key_list = format!("{:?}", &a.inner_key()[..]);
        assert!(!debug.contains(&key_list[1..key_list.len() - 1]));
    }

    #[test]
    fn key_lengths() {
        for len in [1, 32, MAX_HMAC_KEY_BYTES] {
            build_activation_with(EK, SRK, &vec![7; len], &mut TestRng::new(5)).unwrap();
        }
        for len in [0, MAX_HMAC_KEY_BYTES + 1] {
            assert!(matches!(
                build_activation_with(EK, SRK, &vec![7; len], &mut TestRng::new(5)),
                Err(Error::Invalid {
                    structure: "HMAC key",
                    ..
                })
            ));
        }
    }

    #[test]
    fn protectors_must_be_rsa_storage_keys() {
        let ek = Public::from_tpm2b(EK).unwrap();

        let mut signing = ek.clone();
        signing.attributes = ObjectAttributes::SIGN_ENCRYPT | ObjectAttributes::FIXED_TPM;
        let err = build_activation_with(
            &signing.to_tpm2b().unwrap(),
            SRK,
            &KEY,
            &mut TestRng::new(6),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Error::Invalid {
                structure: "EK public",
                ..
            }
        ));

        let mut no_symmetric = Public::from_tpm2b(SRK).unwrap();
        if let PublicDetails::Rsa(d) = &mut no_symmetric.details {
            d.symmetric = SymDef::Null;
        }
        let err = build_activation_with(
            EK,
            &no_symmetric.to_tpm2b().unwrap(),
            &KEY,
            &mut TestRng::new(6),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Error::Invalid {
                structure: "SRK public",
                ..
            }
        ));

        let keyed_hash = build_activation_with(EK, SRK, &KEY, &mut TestRng::new(6))
            .unwrap()
            .blob
            .public_area()
            .unwrap()
            .to_tpm2b()
            .unwrap();
        assert!(matches!(
            build_activation_with(&keyed_hash, SRK, &KEY, &mut TestRng::new(6)),
            Err(Error::UnsupportedAlgorithm {
                structure: "EK public",
                alg: AlgId::KEYEDHASH
            })
        ));

        let mut short_modulus = ek;
        if let PublicDetails::Rsa(d) = &mut short_modulus.details {
            d.modulus.truncate(128);
        }
        assert!(matches!(
            build_activation_with(
                &short_modulus.to_tpm2b().unwrap(),
                SRK,
                &KEY,
                &mut TestRng::new(6)
            ),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            build_activation_with(&EK[..10], SRK, &KEY, &mut TestRng::new(6)),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn generator_failure_is_a_typed_error() {
        let err = build_activation_with(EK, SRK, &KEY, &mut BrokenRng).unwrap_err();
        assert!(matches!(err, Error::Random(_)));
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn default_generator_gives_fresh_blobs() {
        let a = build_activation(EK, SRK, &KEY).unwrap();
        let b = build_activation(EK, SRK, &KEY).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.public.len(), b.public.len());
    }
}
