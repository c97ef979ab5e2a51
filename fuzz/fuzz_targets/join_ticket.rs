//! Fuzzes `spillway_chaos::parsers::join_ticket`: see that function for what is
//! checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spillway_chaos::parsers::join_ticket(data));
