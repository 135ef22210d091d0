//! The dps-emulator's parsers of untrusted input: request targets (path + query), MQTT usernames
//! and topics, SAS tokens, and configuration TOML. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = dps_emulator::fuzz_route(text);
    // Split near the middle, on a character boundary (a split inside a multi-byte character
    // would panic in the target itself, not in the code under test).
    let middle = (0..=text.len() / 2)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let (a, b) = text.split_at(middle);
    let _ = dps_emulator::fuzz_topic(a, b);
    if let Ok(token) = dps_emulator::SasToken::parse(text) {
        let _ = token.verify(token.resource(), 0, Some("registration"), [&b"key"[..]]);
        let _ = token.verify(token.resource(), 0, None, [&b"key"[..]]);
    }
    let _ = dps_emulator::Config::from_toml(text).and_then(|c| c.into_builder());
});
