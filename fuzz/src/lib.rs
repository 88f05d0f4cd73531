//! Request and response types for the `requests` and `answers` fuzz targets, shared with the seed
//! generator (`examples/seeds.rs`). On the wire they travel inside bincrew's envelopes, in a
//! frame: `Framed<Vec<(u64, messages::Job<Job>)>>` from the app (`Job::Run(Job)`) and
//! `Framed<ToApp<Output>>` from the worker (`Answer::Done { response: Output, .. }`); an inline
//! frame holds their postcard encoding as a byte string, so the handles below are decoded by a
//! postcard decoder nested in ipc-channel's, against the same side tables.
//!
//! They carry the kinds of values real apps send through bincrew: bytes, strings, enums with
//! unit/tuple/struct variants, options, maps, floats, chars, 128-bit integers, and the
//! `ipc-channel` handles that are encoded as an *index* into the message's side tables: an
//! [`IpcSharedMemory`] (an index into the shared-memory regions, `usize::MAX` for an empty one),
//! an [`IpcSender`] and an [`IpcReceiver`] (indexes into the message's OS channels).
//!
//! The handle types are type parameters with the real types as defaults, so the seed generator
//! can encode the *same* layout with plain `usize` indexes (postcard is not self-describing: the
//! bytes of a `usize` and of a handle are the same varint).

use std::collections::BTreeMap;

use bincrew::{IpcReceiver, IpcSender, IpcSharedMemory};
use serde::{Deserialize, Serialize};

/// A request, as an app would send it to a worker (`messages::Job::Run(Job)`, keyed by its id).
#[derive(Serialize, Deserialize)]
pub struct Job<Shm = IpcSharedMemory, Tx = IpcSender<u32>> {
    pub name: String,
    pub input: Vec<u8>,
    pub mode: Mode,
    /// A large input passed as shared memory.
    pub blob: Shm,
    /// Where the worker reports progress, if the app wants it.
    pub progress: Option<Tx>,
    pub limits: (u32, Option<u64>),
    pub tags: Vec<String>,
}

/// An enum with every variant shape.
#[derive(Serialize, Deserialize)]
pub enum Mode {
    Fast,
    Careful { retries: u8, timeout_ms: u64 },
    Custom(String),
    Ratio(f64),
    Flags([bool; 3]),
}

/// A response, as a worker would send it back (`Answer::Done { response: Output, .. }`).
#[derive(Serialize, Deserialize)]
pub struct Output<Shm = IpcSharedMemory, Tx = IpcSender<u32>, Rx = IpcReceiver<Vec<u8>>> {
    pub bytes: Vec<u8>,
    pub text: String,
    pub outcome: Outcome<Tx, Rx>,
    /// A large result passed as shared memory.
    pub blob: Shm,
    pub stats: BTreeMap<String, i64>,
    pub first: Option<char>,
    pub total: i128,
}

/// The enum of a response; two variants carry channel handles.
#[derive(Serialize, Deserialize)]
pub enum Outcome<Tx = IpcSender<u32>, Rx = IpcReceiver<Vec<u8>>> {
    Complete,
    Partial {
        done: u32,
        of: u32,
    },
    Failed(String),
    /// The worker keeps working and reports on this channel.
    Progress(Tx),
    /// The worker streams the rest of the result on this channel.
    Stream(Rx),
    Scores(Vec<f32>),
}

/// An opt-in way to keep fuzzing past the one known panic (README.md, finding 1), so that a
/// bounded run explores the rest of the decoder instead of stopping at it within a second.
///
/// Off by default: the targets then abort on every panic, the known one included. With
/// `BINCREW_FUZZ_SKIP_KNOWN=1` in the environment, a panic that is exactly the known one (an
/// out-of-range channel index in `ipc-channel` 0.23.1's `deserialize_os_ipc_sender` /
/// `deserialize_os_ipc_receiver`, `src/ipc.rs` lines 1027 and 1056, whether the handle is in the
/// message itself or inside an inline frame) is caught and the input is
/// rejected (not added to the corpus); any other panic still goes to libFuzzer's hook and aborts.
pub mod known {
    use std::cell::Cell;
    use std::panic::{self, AssertUnwindSafe, PanicHookInfo};
    use std::sync::OnceLock;

    /// The variable that turns the filter on.
    pub const ENV: &str = "BINCREW_FUZZ_SKIP_KNOWN";

    static ENABLED: OnceLock<bool> = OnceLock::new();

    thread_local! {
        static HIT: Cell<bool> = const { Cell::new(false) };
    }

    /// Whether a panic is the known channel-index panic.
    pub fn is_known(info: &PanicHookInfo<'_>) -> bool {
        let Some(location) = info.location() else {
            return false;
        };
        let file = location.file().replace('\\', "/");
        file.ends_with("/ipc-channel-0.23.1/src/ipc.rs")
            && matches!(location.line(), 1027 | 1056)
            && info.payload_as_str().is_some_and(|m| {
                m.starts_with("index out of bounds: the len is 0 but the index is ")
            })
    }

    /// Call from the target's `init:`; it runs after libFuzzer installed its abort-on-panic hook.
    pub fn init() {
        let enabled = std::env::var_os(ENV).is_some_and(|v| !v.is_empty() && v != "0");
        let _ = ENABLED.set(enabled);
        if !enabled {
            return;
        }
        eprintln!("{ENV}: the known ipc-channel channel-index panic is skipped, not reported");
        let libfuzzer_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if is_known(info) {
                HIT.with(|hit| hit.set(true));
            } else {
                libfuzzer_hook(info);
            }
        }));
    }

    /// Runs one input; `false` if it hit the known panic (skipped: reject the input).
    pub fn run(f: impl FnOnce()) -> bool {
        if !ENABLED.get().copied().unwrap_or(false) {
            f();
            return true;
        }
        match panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => true,
            Err(payload) => {
                if HIT.with(|hit| hit.replace(false)) {
                    false
                } else {
                    panic::resume_unwind(payload)
                }
            }
        }
    }
}
