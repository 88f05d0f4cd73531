#![no_main]
//! The app decoding a worker's first message (`Greeting`): its hello as sent, and `Ready` when a
//! last line `ready=` carries it. The input comes with no OS channels attached, so a `Ready`
//! after that line hits the known channel-index panic (see `ready`).

use libfuzzer_sys::{fuzz_target, Corpus};

// `init`/`known::run`: see `bincrew_fuzz::known` (off unless BINCREW_FUZZ_SKIP_KNOWN=1).
fuzz_target!(init: bincrew_fuzz::known::init(), |data: &[u8]| -> Corpus {
    let mut hello_kept = true;
    let decoded = bincrew_fuzz::known::run(|| {
        hello_kept = bincrew::__private::fuzz::greeting(data);
    });
    assert!(
        hello_kept,
        "Greeting did not give back the hello of {} input bytes",
        data.len()
    );
    if decoded { Corpus::Keep } else { Corpus::Reject }
});
