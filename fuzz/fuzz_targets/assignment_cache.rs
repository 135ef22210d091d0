//! The assignment cache reader: whatever a damaged disk, a crash or another program left in
//! `assignment.json` is a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    provisioning::device::fuzz_cache(data);
});
