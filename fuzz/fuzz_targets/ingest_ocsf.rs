#![no_main]
use cordon::ingest::IngestFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cordon_fuzz::ingest(IngestFormat::Ocsf, data));
