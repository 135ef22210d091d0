//! The provisioning client's parsers of DPS responses: an HTTP status and body (operation
//! status, registration state, error body, TPM challenge), a `Retry-After` header and an MQTT
//! response topic. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = u16::from_be_bytes([data[0], data[1]]) % 600;
    let rest = &data[2..];
    // The first line (if any) is the header or topic; the rest is the body.
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(0);
    let header = String::from_utf8_lossy(&rest[..split]);
    provisioning::fuzz_response(status, &rest[split..], &header);
});
