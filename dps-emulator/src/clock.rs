//! The emulator's clock and randomness: timestamps for DPS's JSON, SAS expiry checks, keys,
//! tracking ids, etags and operation ids.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now, as DPS writes times: RFC 3339 in UTC.
pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `n` bytes from the operating system's RNG.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    if getrandom::fill(&mut bytes).is_err() {
        // Without an OS RNG there is no safe key to hand out; a panic here is the honest answer.
        panic!("the operating system's random number generator failed");
    }
    bytes
}

/// `n` random bytes as lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    data_encoding::HEXLOWER.encode(&random_bytes(n))
}

/// A random UUID in its 8-4-4-4-12 text form.
pub(crate) fn random_uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
