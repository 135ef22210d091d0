//! Shared setup for the swtpm tests: each test starts its own swtpm (fresh state, free ports).

#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use hmac::{Hmac, KeyInit as _, Mac as _};
use hsm_testkit::swtpm::Swtpm;
use hsm_tpm::{Tpm, TpmOptions};
use sha2::Sha256;

/// A driver connection to `swtpm`, with short retry pauses so that tests of an unavailable TPM
/// finish quickly.
pub(crate) fn connect(swtpm: &Swtpm) -> Tpm {
    let options = TpmOptions::default()
        .attempts(3)
        .retry_delay(Duration::from_millis(50));
    Tpm::open_with(swtpm.tcti().parse().unwrap(), options).unwrap()
}

/// HMAC-SHA256 in software, the reference for the TPM's.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `n` bytes of a repeating pattern.
pub(crate) fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ salt).collect()
}

/// A fresh random-looking HMAC key (distinct per `salt`).
pub(crate) fn hmac_key(salt: u8) -> Vec<u8> {
    use sha2::Digest as _;
    Sha256::digest([b"hsm-tpm test key ".as_slice(), &[salt]].concat()).to_vec()
}

/// The activation blob that imports `key` into the TPM with this EK and SRK.
pub(crate) fn blob_for(ek: &[u8], srk: &[u8], key: &[u8]) -> Vec<u8> {
    tpm_wire::build_activation(ek, srk, key)
        .unwrap()
        .to_bytes()
        .unwrap()
}

/// The transient objects and loaded sessions swtpm holds (it does not flush them when a client
/// disconnects, so leaks show here). Call after `Tpm::disconnect`.
pub(crate) fn leftovers(swtpm: &Swtpm) -> String {
    let mut out = String::new();
    for what in ["handles-transient", "handles-loaded-session"] {
        let got = swtpm.tpm2_ok(&["getcap", what]);
        out.push_str(String::from_utf8_lossy(&got.stdout).trim());
    }
    out
}
