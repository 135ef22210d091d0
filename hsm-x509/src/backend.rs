//! The library that holds software keys and signs with them: AWS-LC through aws-lc-rs (feature
//! `aws-lc-rs`, the default, and the one used when both are on) or ring (feature `ring`: for
//! device builds that already link ring for rustls and want one crypto library, not two).
//! Both offer the same signing API; what differs is wrapped here.
//!
//! With ring: RSA keys cannot be generated (ring has no RSA key generation), and EC keys must
//! carry their public key (ring checks it against the private scalar).

#[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
compile_error!("hsm-x509 needs a crypto library: enable feature `aws-lc-rs` (default) or `ring`");

#[cfg(feature = "aws-lc-rs")]
pub(crate) use aws_lc_rs as lib;
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
pub(crate) use ring as lib;

use der::Encode as _;
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier};
use lib::signature::{self as sig, KeyPair as _};

use crate::Error;

/// The library's name, for messages.
pub(crate) const NAME: &str = if cfg!(feature = "aws-lc-rs") {
    "AWS-LC"
} else {
    "ring"
};

pub(crate) const OID_EC_PUBLIC_KEY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(crate) const OID_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

pub(crate) fn rejected(e: lib::error::KeyRejected) -> Error {
    #[cfg(feature = "aws-lc-rs")]
    let reason = e.description_();
    // ring says why only through Display: its fixed reasons, kept as they are.
    #[cfg(not(feature = "aws-lc-rs"))]
    let reason = {
        const REASONS: [&str; 11] = [
            "InconsistentComponents",
            "InvalidComponent",
            "InvalidEncoding",
            "RngFailed",
            "PublicKeyIsMissing",
            "TooSmall",
            "TooLarge",
            "VersionNotSupported",
            "WrongAlgorithm",
            "PrivateModulusLenNotMultipleOf512Bits",
            "UnexpectedError",
        ];
        let text = e.to_string();
        REASONS
            .into_iter()
            .find(|r| *r == text)
            .unwrap_or("ring rejected the key")
    };
    Error::InvalidKey { reason }
}

/// An ECDSA key from PKCS#8.
pub(crate) fn ecdsa_from_pkcs8(
    signing: &'static sig::EcdsaSigningAlgorithm,
    der: &[u8],
) -> Result<sig::EcdsaKeyPair, Error> {
    #[cfg(feature = "aws-lc-rs")]
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, der);
    #[cfg(not(feature = "aws-lc-rs"))]
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, der, &lib::rand::SystemRandom::new());
    pair.map_err(rejected)
}

/// An ECDSA key from SEC1 (`EC PRIVATE KEY`) on the named `curve`.
pub(crate) fn ecdsa_from_sec1(
    signing: &'static sig::EcdsaSigningAlgorithm,
    curve: ObjectIdentifier,
    der: &[u8],
) -> Result<sig::EcdsaKeyPair, Error> {
    #[cfg(feature = "aws-lc-rs")]
    {
        let _ = curve;
        sig::EcdsaKeyPair::from_private_key_der(signing, der).map_err(rejected)
    }
    // ring reads PKCS#8 only: the SEC1 structure goes into a PKCS#8 envelope as it is.
    #[cfg(not(feature = "aws-lc-rs"))]
    {
        let key = der::asn1::OctetStringRef::new(der).map_err(|_| Error::MalformedKey)?;
        let info = pkcs8::PrivateKeyInfoRef::new(
            spki::AlgorithmIdentifier {
                oid: OID_EC_PUBLIC_KEY,
                parameters: Some(AnyRef::from(&curve)),
            },
            key,
        );
        let pkcs8 = zeroize::Zeroizing::new(info.to_der().map_err(|_| Error::MalformedKey)?);
        ecdsa_from_pkcs8(signing, &pkcs8)
    }
}

/// The modulus length of an RSA key, in bytes.
pub(crate) fn rsa_modulus_len(pair: &sig::RsaKeyPair) -> usize {
    #[cfg(feature = "aws-lc-rs")]
    return pair.public_modulus_len();
    #[cfg(not(feature = "aws-lc-rs"))]
    return pair.public().modulus_len();
}

/// A `SubjectPublicKeyInfo` for the raw public key `bits` of algorithm `oid` (with its
/// parameters: the curve for EC, NULL for RSA, none for Ed25519).
fn spki(
    oid: ObjectIdentifier,
    parameters: Option<AnyRef<'_>>,
    bits: &[u8],
) -> Result<Vec<u8>, Error> {
    let cannot = |_| Error::InvalidKey {
        reason: "cannot encode the public key",
    };
    spki::SubjectPublicKeyInfoRef {
        algorithm: spki::AlgorithmIdentifier { oid, parameters },
        subject_public_key: BitStringRef::from_bytes(bits).map_err(cannot)?,
    }
    .to_der()
    .map_err(cannot)
}

/// The public key of an ECDSA key on `curve`, as a DER `SubjectPublicKeyInfo`.
pub(crate) fn ecdsa_spki(
    pair: &sig::EcdsaKeyPair,
    curve: ObjectIdentifier,
) -> Result<Vec<u8>, Error> {
    // Both libraries give the uncompressed point.
    spki(
        OID_EC_PUBLIC_KEY,
        Some(AnyRef::from(&curve)),
        pair.public_key().as_ref(),
    )
}

/// The public key of an RSA key, as a DER `SubjectPublicKeyInfo`.
pub(crate) fn rsa_spki(pair: &sig::RsaKeyPair) -> Result<Vec<u8>, Error> {
    // Both libraries give the PKCS#1 `RSAPublicKey` DER.
    spki(
        OID_RSA_ENCRYPTION,
        Some(AnyRef::NULL),
        pair.public_key().as_ref(),
    )
}

/// The public key of an Ed25519 key, as a DER `SubjectPublicKeyInfo`.
pub(crate) fn ed25519_spki(pair: &sig::Ed25519KeyPair) -> Result<Vec<u8>, Error> {
    spki(OID_ED25519, None, pair.public_key().as_ref())
}
