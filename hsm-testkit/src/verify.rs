//! Signature verification by implementations independent of any driver: RustCrypto (`p256`,
//! `p384`, `rsa`, `ed25519-dalek`) and webpki's algorithms (AWS-LC).

use hsm_core::SignatureScheme;
use rsa::pkcs8::DecodePublicKey as _;
use sha2::{Sha256, Sha384, Sha512};
use signature::Verifier as _;
use spki::der::Decode as _;

/// Why a signature did not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The public key did not parse for this scheme.
    #[error("public key does not parse for {0}")]
    PublicKey(SignatureScheme),
    /// The signature is malformed or does not verify.
    #[error("{0} signature does not verify")]
    BadSignature(SignatureScheme),
    /// The scheme is not one this verifier knows.
    #[error("no independent verifier for {0}")]
    UnknownScheme(SignatureScheme),
}

/// Verifies `signature` over `message` with the `SubjectPublicKeyInfo` `spki`, using RustCrypto.
///
/// # Errors
/// [`VerifyError`] when the key does not parse or the signature does not verify.
pub fn rustcrypto(
    scheme: SignatureScheme,
    spki: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), VerifyError> {
    let key_err = |_| VerifyError::PublicKey(scheme);
    let bad = |_| VerifyError::BadSignature(scheme);
    use SignatureScheme::*;
    match scheme {
        EcdsaP256Sha256 => {
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki).map_err(key_err)?;
            let sig = p256::ecdsa::Signature::from_der(signature).map_err(bad)?;
            key.verify(message, &sig).map_err(bad)
        }
        EcdsaP384Sha384 => {
            let key = p384::ecdsa::VerifyingKey::from_public_key_der(spki).map_err(key_err)?;
            let sig = p384::ecdsa::Signature::from_der(signature).map_err(bad)?;
            key.verify(message, &sig).map_err(bad)
        }
        RsaPkcs1Sha256 | RsaPkcs1Sha384 | RsaPkcs1Sha512 => {
            let key = rsa::PublicKey::from_public_key_der(spki).map_err(key_err)?;
            let sig = rsa::pkcs1v15::Signature::try_from(signature).map_err(bad)?;
            match scheme {
                RsaPkcs1Sha256 => {
                    rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key).verify(message, &sig)
                }
                RsaPkcs1Sha384 => {
                    rsa::pkcs1v15::VerifyingKey::<Sha384>::new(key).verify(message, &sig)
                }
                _ => rsa::pkcs1v15::VerifyingKey::<Sha512>::new(key).verify(message, &sig),
            }
            .map_err(bad)
        }
        RsaPssSha256 | RsaPssSha384 | RsaPssSha512 => {
            let key = rsa::PublicKey::from_public_key_der(spki).map_err(key_err)?;
            let sig = rsa::pss::Signature::try_from(signature).map_err(bad)?;
            // TLS 1.3 and X.509 fix the salt length to the hash length.
            match scheme {
                RsaPssSha256 => rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(key, 32)
                    .verify(message, &sig),
                RsaPssSha384 => rsa::pss::VerifyingKey::<Sha384>::new_with_salt_len(key, 48)
                    .verify(message, &sig),
                _ => rsa::pss::VerifyingKey::<Sha512>::new_with_salt_len(key, 64)
                    .verify(message, &sig),
            }
            .map_err(bad)
        }
        Ed25519 => {
            let key = ed25519_dalek::VerifyingKey::from_public_key_der(spki).map_err(key_err)?;
            let sig = ed25519_dalek::Signature::from_slice(signature).map_err(bad)?;
            key.verify_strict(message, &sig).map_err(bad)
        }
        _ => Err(VerifyError::UnknownScheme(scheme)),
    }
}

/// Verifies with webpki's algorithm implementations (AWS-LC), as rustls does in a handshake.
///
/// # Errors
/// [`VerifyError`] when the key does not parse or the signature does not verify.
pub fn webpki(
    scheme: SignatureScheme,
    spki: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), VerifyError> {
    use webpki::aws_lc_rs as alg;
    let algorithm: &dyn rustls::pki_types::SignatureVerificationAlgorithm = match scheme {
        SignatureScheme::EcdsaP256Sha256 => alg::ECDSA_P256_SHA256,
        SignatureScheme::EcdsaP384Sha384 => alg::ECDSA_P384_SHA384,
        SignatureScheme::RsaPkcs1Sha256 => alg::RSA_PKCS1_2048_8192_SHA256,
        SignatureScheme::RsaPkcs1Sha384 => alg::RSA_PKCS1_2048_8192_SHA384,
        SignatureScheme::RsaPkcs1Sha512 => alg::RSA_PKCS1_2048_8192_SHA512,
        SignatureScheme::RsaPssSha256 => alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        SignatureScheme::RsaPssSha384 => alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        SignatureScheme::RsaPssSha512 => alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        SignatureScheme::Ed25519 => alg::ED25519,
        _ => return Err(VerifyError::UnknownScheme(scheme)),
    };
    let raw_key = spki::SubjectPublicKeyInfoRef::from_der(spki)
        .map_err(|_| VerifyError::PublicKey(scheme))?
        .subject_public_key
        .raw_bytes()
        .to_vec();
    algorithm
        .verify_signature(&raw_key, message, signature)
        .map_err(|_| VerifyError::BadSignature(scheme))
}
