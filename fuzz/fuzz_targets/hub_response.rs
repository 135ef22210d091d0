//! The hub client's parsers of what an IoT Hub sends: a twin response topic (status, `$rid`,
//! `$version`) and its body (the twin document, or the hub's error body). None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line is the topic; the rest is the body.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let topic = String::from_utf8_lossy(&data[..split]);
    provisioning::hub::fuzz_hub_response(&topic, data.get(split + 1..).unwrap_or_default());
});
