//! The provisioning client's decoding of what DPS sends over AMQP: a SASL frame (mechanisms,
//! challenges, outcome), an answer message (correlation id, `retry-after`, body sections, then
//! the DPS operation inside) and a rejected request's AMQP error (condition, JSON description,
//! info). None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    provisioning::fuzz_amqp_reply(data);
});
