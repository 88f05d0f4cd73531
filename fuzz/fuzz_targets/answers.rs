#![no_main]
//! The app decoding a worker's answers, `Framed<ToApp<Output>>`: a frame `(kind, payload)`, kind 0
//! inline (a postcard byte string holding the body: each answer with its own postcard payload), kind 1
//! spilled (a shared-memory index). `Output` carries bytes, strings, enums, an `IpcSharedMemory`
//! and, in two `Outcome` variants, an `IpcSender<u32>` and an `IpcReceiver<Vec<u8>>`. The input
//! comes with no OS channels or shared memory attached, so a spilled frame must be refused.

use bincrew_fuzz::Output;
use libfuzzer_sys::{fuzz_target, Corpus};

// `init`/`known::run`: see `bincrew_fuzz::known` (off unless BINCREW_FUZZ_SKIP_KNOWN=1).
fuzz_target!(init: bincrew_fuzz::known::init(), |data: &[u8]| -> Corpus {
    let decoded = bincrew_fuzz::known::run(|| {
        let _ = bincrew::__private::fuzz::answers::<Output>(data);
    });
    if decoded { Corpus::Keep } else { Corpus::Reject }
});
