//! ECDSA as the compatibility profile's certificates were signed: the nonce `k` and two blinding
//! draws come from the profile's HMAC-DRBG, and `s` is not normalised to the low half.

use p256::elliptic_curve::Field as _;
use p256::elliptic_curve::ops::{Invert as _, Reduce};
use p256::elliptic_curve::point::AffineCoordinates as _;
use p256::{FieldBytes, NonZeroScalar, ProjectivePoint, Scalar};

use super::{HmacDrbg, point_draw, scalar_draw};

/// Signs a SHA-256 `digest` with `key`: per attempt, draws `k`, the point-blinding value and the
/// blinding scalar `t` (which cancels out), then `r = (kG).x mod n`, `s = k^-1 (e + r d) mod n`.
/// Returns `(r, s)` as 32-byte big-endian values.
pub fn sign(key: &NonZeroScalar, digest: &[u8; 32], drbg: &mut HmacDrbg) -> ([u8; 32], [u8; 32]) {
    let e = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(*digest));
    loop {
        let k = scalar_draw(drbg);
        point_draw(drbg);
        let _blinding = scalar_draw(drbg);
        let point = (ProjectivePoint::GENERATOR * *k).to_affine();
        let r = <Scalar as Reduce<FieldBytes>>::reduce(&point.x());
        if bool::from(r.is_zero()) {
            continue;
        }
        // k is non-zero, so its inverse exists and is non-zero.
        let k_inv: Scalar = *k.invert();
        let s = k_inv * (e + r * **key);
        if bool::from(s.is_zero()) {
            continue;
        }
        return (r.to_bytes().into(), s.to_bytes().into());
    }
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    use p256::ecdsa::{Signature, VerifyingKey};

    use super::*;

    #[test]
    fn signatures_verify_with_rustcrypto() {
        let (key, mut drbg) = super::super::derive(&[9; 32], b"Alias");
        let verifying = VerifyingKey::from(p256::PublicKey::from_secret_scalar(&key));
        for i in 0u8..8 {
            let digest = [i; 32];
            let (r, s) = sign(&key, &digest, &mut drbg);
            let signature = Signature::from_scalars(r, s).unwrap();
            // The profile does not normalise s; RustCrypto accepts high-s signatures too.
            verifying.verify_prehash(&digest, &signature).unwrap();
        }
    }
}
