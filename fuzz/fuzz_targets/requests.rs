#![no_main]
//! A worker decoding the app's requests, `Framed<Vec<(u64, messages::Job<Job>)>>`: a frame
//! `(kind, payload)`, kind 0 inline (a postcard byte string holding the body: each item with its
//! own postcard payload, see the README), kind 1 spilled (a shared-memory index); each item is a request id and `Run(Job)` or
//! `End`. `Job` carries bytes, strings, an enum, an `IpcSharedMemory` and an
//! `Option<IpcSender<u32>>`. The input comes with no OS channels or shared memory attached, so a
//! spilled frame must be refused.

use bincrew_fuzz::Job;
use libfuzzer_sys::{fuzz_target, Corpus};

// `init`/`known::run`: see `bincrew_fuzz::known` (off unless BINCREW_FUZZ_SKIP_KNOWN=1).
fuzz_target!(init: bincrew_fuzz::known::init(), |data: &[u8]| -> Corpus {
    let decoded = bincrew_fuzz::known::run(|| {
        let _ = bincrew::__private::fuzz::requests::<Job>(data);
    });
    if decoded { Corpus::Keep } else { Corpus::Reject }
});
