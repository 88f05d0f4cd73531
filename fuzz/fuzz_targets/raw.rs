#![no_main]
//! The raw-bytes view the hello travels in: decoding any input must give back exactly the input.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert!(
        bincrew::__private::fuzz::raw(data),
        "RawBytes did not round-trip {} input bytes",
        data.len()
    );
});
