#![no_main]
//! Fuzz target: see `sluice_fuzz::xml_document` for what it feeds and what it asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::xml_document(data));
