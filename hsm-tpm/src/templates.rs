//! Object templates: the EK (two variants exist in the field), the SRK, and signing keys.

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    Digest, EccPoint, EccScheme, KeyDerivationFunctionScheme, Public, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, RsaScheme,
    SymmetricDefinitionObject,
};

use crate::Error;

/// `PolicySecret(TPM_RH_ENDORSEMENT)` with SHA-256: the EK's authorisation policy (TCG EK
/// Credential Profile 2.0, B.3.2, "policy A").
pub(crate) const EK_POLICY_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

/// Which endorsement-key template to create the EK from, when none is persisted yet.
///
/// The EK is derived from the TPM's endorsement seed *and the template*, so the two templates in
/// use give two different keys (and registration ids) on the same TPM. Both are RSA-2048 with
/// the same attributes, policy and symmetric algorithm; they differ only in `unique`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EkTemplate {
    /// The TCG "L-1" template (EK Credential Profile 2.0, B.3.3): `unique` is 256 zero bytes.
    /// What `tpm2_createek -G rsa`, Windows and the EK certificates in TPM NV use. The default.
    #[default]
    TcgL1,
    /// The Azure IoT C SDK's template: the same, with an empty `unique`. Choose it for devices
    /// already enrolled by their C SDK registration id.
    Legacy,
}

impl EkTemplate {
    pub(crate) fn public(self) -> Result<Public, Error> {
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_admin_with_policy(true)
            .with_restricted(true)
            .with_decrypt(true)
            .build()
            .map_err(template_error)?;
        let unique = match self {
            Self::TcgL1 => PublicKeyRsa::new_empty_with_size(RsaKeyBits::Rsa2048),
            Self::Legacy => PublicKeyRsa::default(),
        };
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes)
            .with_auth_policy(
                Digest::try_from(EK_POLICY_SHA256.as_slice()).map_err(template_error)?,
            )
            .with_rsa_parameters(storage_rsa_parameters()?)
            .with_rsa_unique_identifier(unique)
            .build()
            .map_err(template_error)
    }
}

/// The storage root key as the C SDK and Azure's identity service make it: RSA-2048, a
/// restricted decryption (storage) key with AES-128-CFB, `userWithAuth` with an empty
/// password, `noDA`, in the owner hierarchy, empty `unique`.
pub(crate) fn srk() -> Result<Public, Error> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(template_error)?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Rsa)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_rsa_parameters(storage_rsa_parameters()?)
        .with_rsa_unique_identifier(PublicKeyRsa::default())
        .build()
        .map_err(template_error)
}

fn storage_rsa_parameters() -> Result<tss_esapi::structures::PublicRsaParameters, Error> {
    PublicRsaParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        RsaKeyBits::Rsa2048,
        RsaExponent::default(),
    )
    .build()
    .map_err(template_error)
}

/// The signing keys [`TpmKey::create`](crate::TpmKey::create) makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeySpec {
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// RSA with a 2048-bit modulus (PKCS#1 v1.5 and PSS).
    Rsa2048,
}

impl KeySpec {
    /// A non-restricted signing key under the SRK: `fixedTPM`, `fixedParent`,
    /// `sensitiveDataOrigin`, `userWithAuth` (empty password), `noDA`, `sign`, and a `NULL`
    /// scheme so that each `TPM2_Sign` picks the scheme and hash.
    pub(crate) fn public(self) -> Result<Public, Error> {
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_no_da(true)
            .with_sign_encrypt(true)
            .build()
            .map_err(template_error)?;
        let builder = PublicBuilder::new()
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes);
        match self {
            Self::EcdsaP256 => builder
                .with_public_algorithm(PublicAlgorithm::Ecc)
                // Not `new_unrestricted_signing_key`: tss-esapi's builder refuses a NULL scheme
                // for signing keys, which the TPM accepts (the scheme comes with each sign).
                .with_ecc_parameters(
                    PublicEccParametersBuilder::new()
                        .with_symmetric(SymmetricDefinitionObject::Null)
                        .with_ecc_scheme(EccScheme::Null)
                        .with_curve(EccCurve::NistP256)
                        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                        .build()
                        .map_err(template_error)?,
                )
                .with_ecc_unique_identifier(EccPoint::default()),
            Self::Rsa2048 => builder
                .with_public_algorithm(PublicAlgorithm::Rsa)
                .with_rsa_parameters(
                    PublicRsaParametersBuilder::new()
                        .with_symmetric(SymmetricDefinitionObject::Null)
                        .with_scheme(RsaScheme::Null)
                        .with_key_bits(RsaKeyBits::Rsa2048)
                        .with_exponent(RsaExponent::default())
                        .build()
                        .map_err(template_error)?,
                )
                .with_rsa_unique_identifier(PublicKeyRsa::default()),
        }
        .build()
        .map_err(template_error)
    }
}

fn template_error(source: tss_esapi::Error) -> Error {
    Error::Tpm {
        operation: "build an object template",
        command: "(none)",
        source: source.into(),
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::*;

    #[test]
    fn ek_policy_is_policy_secret_endorsement() {
        // PolicySecret extends SHA-256(0^32 || TPM_CC_PolicySecret || name(TPM_RH_ENDORSEMENT)),
        // then SHA-256(that || policyRef) with an empty policyRef.
        let mut first = Sha256::new();
        first.update([0u8; 32]);
        first.update(0x0000_0151u32.to_be_bytes());
        first.update(0x4000_000Bu32.to_be_bytes());
        let first = first.finalize();
        let second = Sha256::digest(first);
        assert_eq!(second.as_slice(), EK_POLICY_SHA256);
    }

    #[test]
    fn the_two_ek_templates_differ_only_in_unique() {
        let (Public::Rsa { unique: l1, .. }, Public::Rsa { unique: legacy, .. }) = (
            EkTemplate::TcgL1.public().unwrap(),
            EkTemplate::Legacy.public().unwrap(),
        ) else {
            panic!("RSA templates expected");
        };
        assert_eq!(l1.value(), [0u8; 256]);
        assert!(legacy.value().is_empty());
        let strip = |p: Public| match p {
            Public::Rsa {
                object_attributes,
                auth_policy,
                parameters,
                ..
            } => (object_attributes, auth_policy, parameters),
            _ => unreachable!(),
        };
        assert_eq!(
            strip(EkTemplate::TcgL1.public().unwrap()),
            strip(EkTemplate::Legacy.public().unwrap())
        );
    }

    #[test]
    fn ek_attributes_are_the_tcg_ones() {
        let ek = EkTemplate::TcgL1.public().unwrap();
        // fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt
        assert_eq!(u32::from(ek.object_attributes()), 0x0003_00b2);
        let srk = srk().unwrap();
        // ... | userWithAuth | noDA, without adminWithPolicy
        assert_eq!(u32::from(srk.object_attributes()), 0x0003_0472);
    }

    #[test]
    fn signing_templates_build() {
        for spec in [KeySpec::EcdsaP256, KeySpec::Rsa2048] {
            let public = spec.public().unwrap();
            assert!(public.object_attributes().sign_encrypt());
            assert!(!public.object_attributes().restricted());
        }
    }
}
