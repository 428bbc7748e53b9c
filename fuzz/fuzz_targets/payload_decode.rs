#![no_main]
//! Fuzz target: see `sluice_fuzz::payload_decode` for what it feeds and what it asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::payload_decode(data));
