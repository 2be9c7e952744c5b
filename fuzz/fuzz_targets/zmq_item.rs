#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| grip::fuzz::zmq_item(data));
