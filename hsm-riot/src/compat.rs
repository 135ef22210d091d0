//! The C SDK compatibility profile: reproduces what the Azure IoT C SDK's DICE development HSM
//! (`hsm_client_riot.c` with Microsoft's RIoT code, built on Linux/glibc x86_64) derives, so that
//! devices and enrollments made with it keep working.
//!
//! **For migration and testing only, never for production.** Its quirks, reproduced on purpose:
//! - the two DICE hashes use a SHA-256 variant that loads message words, the length and the
//!   output little-endian (the C code's byte order on little-endian hosts);
//! - key derivation seeds glibc's `rand()` from a byte sum and feeds 48 of its low bytes to an
//!   HMAC-DRBG, so the key space per label is about 2^32;
//! - ECDSA nonces come from that DRBG, not RFC 6979;
//! - the certificates follow the C SDK's own DER layout (see `compat/x509.rs`).

mod drbg;
pub mod ecdsa;
mod glibc;
mod sha256_le;

use hsm_core::SecretBytes;
use p256::elliptic_curve::PrimeField as _;
use p256::{NonZeroScalar, Scalar};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

pub use drbg::HmacDrbg;

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
