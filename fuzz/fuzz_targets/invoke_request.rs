//! Fuzzes `spillway_chaos::parsers::invoke_request`: see that function for what is
//! checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spillway_chaos::parsers::invoke_request(data));
