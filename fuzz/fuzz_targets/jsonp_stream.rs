#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| holdfast::fuzz::jsonp_stream(data));
