//! Registration-id parsing on arbitrary text: never panics, and what parses obeys DPS's rules.
#![no_main]

use hsm_core::RegistrationId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = RegistrationId::new(text.as_ref()) {
        let s = id.as_str();
        assert!(!s.is_empty() && s.len() <= 128);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b)));
        let last = s.as_bytes()[s.len() - 1];
        assert!(last.is_ascii_alphanumeric() || last == b'-');
    }
});
