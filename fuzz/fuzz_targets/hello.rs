#![no_main]
//! The app decoding a worker's hello (bincrew's own `key=value` format after a magic line).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bincrew::__private::fuzz::hello(data);
});
