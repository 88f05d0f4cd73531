#![no_main]
//! A worker decoding the app's control messages, `Vec<(u64, Control)>` (postcard, unframed): a
//! key, then `Cancel(request id)` or `Shutdown`. Nothing in them names a channel or shared memory,
//! so every input must decode or fail with an error.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bincrew::__private::fuzz::control(data);
});
