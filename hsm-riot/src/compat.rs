//! The C SDK compatibility profile: reproduces what the Azure IoT C SDK's DICE development HSM
//! (`hsm_client_riot.c` with Microsoft's RIoT code, built on Linux/glibc x86_64) derives, so that
//! devices and enrollments made with it keep working.
//!
//! **For migration and testing only, never for production.** Its quirks, reproduced on purpose:
//! - the two DICE hashes use a SHA-256 variant that loads message words, the length and the
//!   output little-endian (the C code's byte order on little-endian hosts);
//! - key derivation seeds glibc's `rand()` from a byte sum and feeds 48 of its low bytes to an
//!   HMAC-DRBG; the seed is the byte sum of a 32-byte digest plus 31, so there are only about
//!   8,000 possible keys per label;
//! - ECDSA nonces come from that DRBG, not RFC 6979;
//! - the certificates follow the C SDK's own DER layout (see `compat/x509.rs`).

mod drbg;
pub mod ecdsa;
mod glibc;
mod sha256_le;
mod x509;

use std::sync::Arc;

use hsm_core::{CertificateDer, CertifiedKey, RegistrationId, SecretBytes};
use p256::elliptic_curve::PrimeField as _;
use p256::{NonZeroScalar, Scalar};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

pub use drbg::HmacDrbg;

use crate::{DEFAULT_ALIAS_CN, DiceKey, Error};

/// The C SDK's development UDS.
pub const SDK_UDS: [u8; 32] =
    hex32("54105D2ECD07F90199B395C74261A08CFF271A0DF66F1FE00034BB11F7989A12");
/// The C SDK's RIoT Core measurement.
pub const SDK_MEASUREMENT: [u8; 32] =
    hex32("b5859493661e2eae9677c55d590b9294e094abafd740787e050dfe6d859053a0");
/// The C SDK's FWID.
pub const SDK_FWID: [u8; 32] =
    hex32("6BE9B184C937C28E122EEE512B68EA8E00C3DD159EA4E85E84CBA966F446CD4E");
/// The C SDK's fixed development root private key.
pub const SDK_ROOT_KEY: [u8; 32] =
    hex32("e3e7c713573fd9c8b8e1eaf453f1561502f071c05349c8dae626a90b1788e570");

/// The development root's public point as the SDK embeds it: its source bytes as they are, which
/// is not a point on P-256 (the SDK reads the private key big-endian, the point was written for a
/// little-endian reader). Kept so the root certificate comes out as the SDK's.
pub const SDK_ROOT_POINT: [u8; 64] = {
    let x = hex32("eb9cfcc84994d350a71f9dc5093dd2feb94897f495a55decc90f52a1265aab69");
    let y = hex32("7dceb16239f83cd59aad9e05b14f70a2fad4fb04e537d2639a469efdb05b1edf");
    let mut point = [0u8; 64];
    let mut i = 0;
    while i < 32 {
        point[i] = x[i];
        point[32 + i] = y[i];
        i += 1;
    }
    point
};

/// A device of the compatibility profile: the SDK's certificates, and the Alias key as a handle.
///
/// [`identity()`](Self::identity)'s chain is what the SDK's `get_certificate` returns: the Alias certificate, then
/// the DeviceID certificate signed by the development root. The Alias and root certificates are
/// the SDK's byte for byte; the DeviceID certificate cannot be (the SDK hashes heap pointers into
/// its authority key identifier), so it uses SHA-1 of the root point there.
#[derive(Debug)]
pub struct SdkDevice {
    identity: CertifiedKey,
    root: CertificateDer<'static>,
    alias_private_key: SecretBytes,
    device_id_public: [u8; 64],
}

impl SdkDevice {
    /// The SDK's development device: its UDS, RIoT Core measurement and FWID.
    ///
    /// # Errors
    /// As for [`new`](Self::new).
    pub fn development() -> Result<Self, Error> {
        Self::new(
            &SecretBytes::copy_from(&SDK_UDS),
            &SDK_MEASUREMENT,
            &SDK_FWID,
        )
    }

    /// A device of this profile with its own UDS, measurement and FWID.
    ///
    /// # Errors
    /// [`Error::WrongLength`] for a UDS that is not 32 bytes; [`Error::Certificate`]-free, but
    /// [`Error::RootCertificate`] in the 1-in-256 cases where the SDK itself would have written
    /// an invalid signature (a signature scalar below 2^248), which no implementation can match.
    pub fn new(uds: &SecretBytes, measurement: &[u8; 32], fwid: &[u8; 32]) -> Result<Self, Error> {
        if uds.len() != 32 {
            return Err(Error::WrongLength {
                what: "UDS",
                expected: 32,
                got: uds.len(),
            });
        }
        let cdi = cdi(uds, measurement);
        let mut derived = derive_keys(&cdi, fwid);
        let device_id_public = point_of(&derived.device_id);
        let alias_public = point_of(&derived.alias);
        let signer = x509::SdkName {
            common_name: "riot-signer-core",
            organization: "MSR_TEST",
            country: "US",
        };
        let device = x509::SdkName {
            common_name: "riot-device-cert",
            ..signer
        };
        let root = x509::SdkName {
            common_name: "riot-root",
            ..signer
        };
        let root_key = NonZeroScalar::from_repr(SDK_ROOT_KEY.into())
            .into_option()
            .ok_or_else(|| Error::RootCertificate("the SDK root key is not a scalar".into()))?;
        let unmatchable = |what: &str| {
            Error::RootCertificate(format!(
                "the SDK would write an invalid {what} signature for these inputs (a scalar below 2^248)"
            ))
        };
        // Signing order and DRBG as in the SDK: Alias (by DeviceID), root, DeviceID (by root).
        let mut sign = |tbs: Vec<u8>, key: &NonZeroScalar, what: &str| {
            let digest: [u8; 32] = Sha256::digest(&tbs).into();
            let (r, s) = ecdsa::sign(key, &digest, &mut derived.drbg);
            x509::certificate(&tbs, &r, &s).ok_or_else(|| unmatchable(what))
        };
        let alias_cert = sign(
            x509::alias_tbs(&signer, &device, &alias_public, &device_id_public, fwid),
            &derived.device_id,
            "Alias",
        )?;
        let root_cert = sign(x509::root_tbs(&root, &SDK_ROOT_POINT), &root_key, "root")?;
        let device_cert = sign(
            x509::device_id_tbs(&root, &signer, &device_id_public, &SDK_ROOT_POINT),
            &root_key,
            "DeviceID",
        )?;
        let alias_bytes: [u8; 32] = derived.alias.to_repr().into();
        let alias_private_key = SecretBytes::new(x509::ec_private_key(&alias_bytes, &alias_public));
        let alias_signing = p256::ecdsa::SigningKey::from(derived.alias);
        let registration_id =
            RegistrationId::new(DEFAULT_ALIAS_CN).map_err(|e| Error::InvalidCommonName {
                name: DEFAULT_ALIAS_CN.into(),
                reason: e.to_string(),
            })?;
        let identity = CertifiedKey::with_registration_id(
            Arc::new(DiceKey::new(alias_signing)),
            vec![alias_cert.into(), device_cert.into()],
            registration_id,
        )
        .map_err(Error::Identity)?;
        Ok(Self {
            identity,
            root: root_cert.into(),
            alias_private_key,
            device_id_public,
        })
    }

    /// The X.509 identity: the Alias key's handle and the chain Alias, DeviceID; registration id
    /// `riot-device-cert`.
    pub fn identity(&self) -> &CertifiedKey {
        &self.identity
    }

    /// The SDK's development root certificate (its public key is the SDK's off-curve point, so
    /// standard tools cannot decode it: kept for byte compatibility only).
    pub fn root_certificate(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// The Alias private key in the SDK's `EC PRIVATE KEY` layout (what `get_alias_key` returns,
    /// as DER). A secret: for migration tooling only.
    pub fn alias_private_key_der(&self) -> &SecretBytes {
        &self.alias_private_key
    }

    /// The DeviceID public point, X then Y.
    pub fn device_id_public_point(&self) -> &[u8; 64] {
        &self.device_id_public
    }
}

/// X and Y of `d·G`, 32 bytes each.
fn point_of(d: &NonZeroScalar) -> [u8; 64] {
    let public = p256::PublicKey::from_secret_scalar(d);
    let encoded = p256::ecdsa::VerifyingKey::from(&public).to_sec1_point(false);
    let mut point = [0u8; 64];
    point.copy_from_slice(&encoded.as_bytes()[1..65]);
    point
}

/// `CDI = H'(H'(UDS) || measurement)` with the little-endian SHA-256 variant.
pub fn cdi(uds: &SecretBytes, measurement: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let digest = Zeroizing::new(sha256_le::digest(uds.expose()));
    let input = Zeroizing::new([digest.as_slice(), measurement].concat());
    Zeroizing::new(sha256_le::digest(&input))
}

/// The derivation state after both keys: the keys, and the DRBG the signatures draw from.
pub struct Derived {
    /// The DeviceID private scalar.
    pub device_id: NonZeroScalar,
    /// The Alias private scalar.
    pub alias: NonZeroScalar,
    /// The DRBG seeded by the Alias derivation, after the Alias public point was computed.
    pub drbg: HmacDrbg,
}

impl Drop for Derived {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.device_id);
        zeroize::Zeroize::zeroize(&mut self.alias);
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived([redacted])")
    }
}

/// `d1 = SHA-256(CDI)`, DeviceID = derive(d1, "Identity"), `d2 = SHA-256(d1 || FWID)`,
/// Alias = derive(d2, "Alias").
pub fn derive_keys(cdi: &[u8; 32], fwid: &[u8; 32]) -> Derived {
    let d1 = Zeroizing::new(<[u8; 32]>::from(Sha256::digest(cdi)));
    let (device_id, mut identity_drbg) = derive(d1.as_slice(), b"Identity");
    // The public point computation consumes a blinding draw.
    point_draw(&mut identity_drbg);
    let d2 = Zeroizing::new(<[u8; 32]>::from(Sha256::digest(
        [d1.as_slice(), fwid].concat(),
    )));
    let (alias, mut drbg) = derive(d2.as_slice(), b"Alias");
    point_draw(&mut drbg);
    Derived {
        device_id,
        alias,
        drbg,
    }
}

/// derive(src, label): glibc `rand()` seeded with `~sum(~src[i])`, 48 low bytes + label seed an
/// HMAC-DRBG, whose 32-byte big-endian draws are rejected until in `[1, n-1]`.
pub fn derive(src: &[u8], label: &[u8]) -> (NonZeroScalar, HmacDrbg) {
    let sum = src
        .iter()
        .fold(0u32, |acc, &b| acc.wrapping_add(!u32::from(b)));
    let mut rand = glibc::Rand::new(!sum);
    let mut seed = Zeroizing::new(Vec::with_capacity(48 + label.len()));
    for _ in 0..48 {
        seed.push(rand.next().to_le_bytes()[0]);
    }
    seed.extend_from_slice(label);
    let mut drbg = HmacDrbg::new(&seed);
    let scalar = scalar_draw(&mut drbg);
    (scalar, drbg)
}

/// Draws 32-byte big-endian values until one lies in `[1, n-1]`.
pub fn scalar_draw(drbg: &mut HmacDrbg) -> NonZeroScalar {
    loop {
        let bytes = drbg.generate32();
        let candidate = Scalar::from_repr(bytes.into());
        if let Some(scalar) =
            Option::<Scalar>::from(candidate).and_then(|s| Option::from(NonZeroScalar::new(s)))
        {
            return scalar;
        }
    }
}

/// The blinding draw of a point multiplication: 32 bytes, shifted right until below p,
/// rejected while <= 1.
pub fn point_draw(drbg: &mut HmacDrbg) {
    // p = 2^256 - 2^224 + 2^192 + 2^96 - 1, big-endian.
    const P: [u8; 32] = hex32("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
    loop {
        let mut value = drbg.generate32();
        while value >= P {
            shift_right(&mut value);
        }
        let is_small = value[..31].iter().all(|&b| b == 0) && value[31] <= 1;
        if !is_small {
            return;
        }
    }
}

fn shift_right(value: &mut [u8; 32]) {
    let mut carry = 0u8;
    for byte in value.iter_mut() {
        let next = *byte & 1;
        *byte = (*byte >> 1) | (carry << 7);
        carry = next;
    }
}

const fn hex32(text: &str) -> [u8; 32] {
    let bytes = text.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(bytes[2 * i]) << 4) | nibble(bytes[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not a hex digit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn checkpoint_cdi() {
        let cdi = cdi(&SecretBytes::copy_from(&SDK_UDS), &SDK_MEASUREMENT);
        assert_eq!(
            hex(cdi.as_slice()),
            "ce1c95020a4902a87fde4dbf8977b68362a944eac301c4c6c25828c92bd80780"
        );
    }

    #[test]
    fn checkpoint_device_id_public_key() {
        let cdi = cdi(&SecretBytes::copy_from(&SDK_UDS), &SDK_MEASUREMENT);
        let derived = derive_keys(&cdi, &SDK_FWID);
        let public = p256::PublicKey::from_secret_scalar(&derived.device_id);
        assert_eq!(
            hex(p256::ecdsa::VerifyingKey::from(&public)
                .to_sec1_point(false)
                .as_bytes()),
            "0494014b094fb4b76519ad2bb404f1be94d2ffba8cc40341160c40a6f69ee0764407c7b117080d9481a11f07753c7e584779693372f3c229fd3855e1057f1de5bb"
        );
    }
}
