#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imgbuild_fuzzing::reference(data));
