#![no_main]
//! The app decoding a worker's `Ready` message (postcard, unframed: two `OpaqueIpcSender`s,
//! `requests` then `control`, i.e. two indexes into the message's OS channels). The input comes
//! with no OS channels attached.

use libfuzzer_sys::{fuzz_target, Corpus};

// `init`/`known::run`: see `bincrew_fuzz::known` (off unless BINCREW_FUZZ_SKIP_KNOWN=1).
fuzz_target!(init: bincrew_fuzz::known::init(), |data: &[u8]| -> Corpus {
    let decoded = bincrew_fuzz::known::run(|| {
        let _ = bincrew::__private::fuzz::ready(data);
    });
    if decoded { Corpus::Keep } else { Corpus::Reject }
});
