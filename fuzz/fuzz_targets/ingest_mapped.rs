#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cordon_fuzz::mapped_body(data));
