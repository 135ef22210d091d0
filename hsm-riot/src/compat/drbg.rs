//! SP 800-90A HMAC-DRBG with SHA-256: no reseed, and after each generate the state is updated
//! with empty additional input.

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// An HMAC-DRBG (SHA-256).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct HmacDrbg {
    k: [u8; 32],
    v: [u8; 32],
}

impl std::fmt::Debug for HmacDrbg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacDrbg([redacted])")
    }
}

impl HmacDrbg {
    /// Instantiate with `seed` as the whole seed material (entropy, nonce and personalisation
    /// concatenated).
    pub fn new(seed: &[u8]) -> Self {
        let mut drbg = Self {
            k: [0; 32],
            v: [1; 32],
        };
        drbg.update(Some(seed));
        drbg
    }

    fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
        // HMAC takes any key length; a 32-byte key never fails.
        let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    fn update(&mut self, data: Option<&[u8]>) {
        let data = data.unwrap_or(&[]);
        self.k = Self::mac(&self.k, &[&self.v, &[0x00], data]);
        self.v = Self::mac(&self.k, &[&self.v]);
        if data.is_empty() {
            return;
        }
        self.k = Self::mac(&self.k, &[&self.v, &[0x01], data]);
        self.v = Self::mac(&self.k, &[&self.v]);
    }

    /// 32 bytes of output.
    pub fn generate32(&mut self) -> [u8; 32] {
        self.v = Self::mac(&self.k, &[&self.v]);
        let out = self.v;
        self.update(None);
        out
    }
}
