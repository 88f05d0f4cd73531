#![no_main]
//! The app decoding a worker's first message (`Greeting`): its hello as sent, and `Ready` when a
//! last line `ready=` carries it; never an error or a panic the app does not catch.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert!(
        bincrew::__private::fuzz::greeting(data),
        "Greeting did not give back the hello of {} input bytes",
        data.len()
    );
});
