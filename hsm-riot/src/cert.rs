//! Certificates of the standard profile, all DER from rcgen.

use std::time::SystemTime;

use hsm_core::{CertificateDer, KeyHandle, RcgenSigner};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// Certificate validity. DICE devices often have no clock, so the default is a fixed start
/// (2026-01-01) and RFC 5280's "no well-defined expiration" end (9999-12-31 23:59:59 UTC): the same
/// inputs then give byte-identical certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Start.
    pub not_before: SystemTime,
    /// End.
    pub not_after: SystemTime,
}

impl Default for Validity {
    fn default() -> Self {
        let from_unix = |secs| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        Self {
            not_before: from_unix(1_767_225_600),
            not_after: from_unix(253_402_300_799),
        }
    }
}

/// Subject names: a common name plus optional organisation and country.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    /// CN.
    pub common_name: String,
    /// O.
    pub organization: Option<String>,
    /// C.
    pub country: Option<String>,
}

impl Name {
    /// A name with only a common name.
    pub fn cn(common_name: impl Into<String>) -> Self {
        Self {
            common_name: common_name.into(),
            organization: None,
            country: None,
        }
    }

    pub(crate) fn distinguished(&self) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        if let Some(c) = &self.country {
            dn.push(DnType::CountryName, c.as_str());
        }
        if let Some(o) = &self.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        dn.push(DnType::CommonName, self.common_name.as_str());
        dn
    }
}

/// The serial number of a certificate for `spki`: 16 bytes of SHA-256(spki), positive and
/// without a leading zero byte.
pub(crate) fn serial_for(spki: &[u8]) -> SerialNumber {
    let digest = Sha256::digest(spki);
    let mut serial = digest[..16].to_vec();
    serial[0] = (serial[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&serial)
}

pub(crate) fn params(subject: &Name, spki: &[u8], validity: &Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject.distinguished();
    params.serial_number = Some(serial_for(spki));
    params.not_before = time::OffsetDateTime::from(validity.not_before);
    params.not_after = time::OffsetDateTime::from(validity.not_after);
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.use_authority_key_identifier_extension = true;
    params
}

/// The parameters of a CA certificate with the given path length (`None`: unconstrained).
pub(crate) fn ca_params(
    subject: &Name,
    spki: &[u8],
    validity: &Validity,
    path_len: Option<u8>,
) -> CertificateParams {
    let mut params = params(subject, spki, validity);
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// The Alias certificate's parameters: end entity, digitalSignature, clientAuth, TcbInfo.
pub(crate) fn alias_params(
    subject: &Name,
    spki: &[u8],
    validity: &Validity,
    tcb_info: Vec<u8>,
) -> CertificateParams {
    let mut params = params(subject, spki, validity);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let mut extension = CustomExtension::from_oid_content(crate::tcb_info::TCB_INFO_OID, tcb_info);
    extension.set_criticality(false);
    params.custom_extensions = vec![extension];
    params
}

/// Signs `params` for the public key `subject_key` with `issuer_key`, whose own certificate
/// parameters are `issuer_params`.
pub(crate) fn sign(
    what: &'static str,
    params: &CertificateParams,
    subject_key: &dyn KeyHandle,
    issuer: &Issuer<'_, &RcgenSigner>,
) -> Result<CertificateDer<'static>, Error> {
    let public = PublicKey::of(subject_key).map_err(|e| Error::Certificate { what, source: e })?;
    params
        .signed_by(&public, issuer)
        .map(|c| c.der().clone())
        .map_err(|source| Error::Certificate { what, source })
}

/// A public key for rcgen (raw subjectPublicKey bits plus algorithm), from a handle's SPKI.
pub(crate) struct PublicKey {
    raw: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
}

impl PublicKey {
    pub(crate) fn of(key: &dyn KeyHandle) -> Result<Self, rcgen::Error> {
        let spki = key.public_key_der();
        // Both DICE keys are P-256; the raw point is the SPKI's last 65 bytes.
        let raw = spki
            .len()
            .checked_sub(65)
            .map(|start| spki[start..].to_vec())
            .ok_or(rcgen::Error::CouldNotParseKeyPair)?;
        Ok(Self {
            raw,
            algorithm: &rcgen::PKCS_ECDSA_P256_SHA256,
        })
    }
}

impl rcgen::PublicKeyData for PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}
