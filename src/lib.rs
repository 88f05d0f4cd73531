//! Run work that may crash, hang or abort in worker processes, so that it cannot take the app
//! down.
//!
//! A *worker* is either the app's own executable started again in worker mode (self-spawn) or a
//! dedicated worker binary shipped beside the app. Both serve typed [`serde`] requests over
//! [`ipc-channel`](ipc_channel), many at once. Requests may carry IPC channels (progress reports)
//! and [`IpcSharedMemory`] (large blobs). When a worker dies, every request in flight fails with a
//! [`WorkerCrashError`] that says what happened (exit code or signal, panic message, the end of
//! its stderr), and the app runs on.
//!
//! Before any request, app and worker exchange their build information in a handshake that does
//! not depend on any serialization format, and the app checks it against a [`Compat`] policy.
//! Every way the start can fail is a [`StartError`].
//!
//! # What the handshake compares
//!
//! Besides the builds, the handshake compares the request and response types of the two sides
//! as the wire sees them: their *shapes*, traced from their `Deserialize` implementations once
//! per type and process. A worker whose types differ fails the start with
//! [`StartError::TypeMismatch`], which names the first difference (a field added, removed,
//! renamed or retyped, a variant added or removed). The names of structs and enums are not
//! compared (the wire does not carry them); field and variant names are.
//!
//! | A type that is (or contains) | is compared by |
//! |---|---|
//! | a primitive, `String`, `Vec<u8>`, `()` | shape |
//! | a struct, tuple struct, newtype or unit struct (derived) | shape: its fields, by name and order |
//! | an enum (derived, externally tagged) | shape: its variants by name, and what each holds |
//! | `Option<T>`, `Vec<T>`, `HashSet<T>`, `[T; N]`, tuples | shape |
//! | `HashMap<K, V>`, `BTreeMap<K, V>` | shape |
//! | a type nested in any of these, or recursive (`Box<Self>` in an enum or an `Option`, `Vec<Self>`) | shape |
//! | `Json<T>` (feature `json`) as the whole request or response | shape: JSON data, whatever `T` (checked per message) |
//! | a `Deserialize` written by hand that refuses the tracer's smallest values | name, with a warning |
//! | an untagged or internally tagged enum, `flatten`, `serde_json::Value` (outside `Json`) | name, with a warning |
//! | IPC channels, [`IpcSharedMemory`] or [`SharedBuffer`] anywhere inside | name, with a warning |
//! | a `Json<T>` among other fields | name, with a warning |
//!
//! "Name" compares the Rust type names, and the warning (a `tracing` event at start) says why
//! the shape could not be traced. A request or response that still does not decode fails that
//! request alone ([`RunError::RequestDecode`] and the like), never the worker.
//!
//! # Testing self-spawned workers
//!
//! A test binary has no `main` of its own: a `#[test]` serves its worker at its top, like a
//! `main` would, and starts it with [`WorkerBuilder::in_test`], which runs that test alone in
//! the worker process. Tests that serve different workers live side by side in one binary,
//! under `cargo test` and `cargo nextest`.
//!
//! # Example
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Job { text: String }
//!
//! async fn count_words(args: bincrew::RequestArgs<Job>) -> usize {
//!     args.request.text.split_whitespace().count()
//! }
//!
//! fn main() {
//!     // Records this binary's package name and version for the handshake.
//!     bincrew::init!();
//!     // In a worker process this serves requests and never returns.
//!     bincrew::run_worker("words", count_words);
//!
//!     // The app's own main.
//!     let worker = bincrew::Worker::<Job, usize>::start_blocking("words").expect("worker");
//!     let n = worker.run_blocking(Job { text: "a b c".into() }).expect("crashed");
//!     assert_eq!(n, 3);
//! }
//! ```
//!
//! # Threads
//!
//! No app thread waits on a worker beyond what its caller asked for: a worker may be stopped,
//! stuck or flooding, and callers, executors, timers and `Drop` go on.
//!
//! On the app side each worker has one reader thread, which reads the worker's channel and
//! completes the requests' futures; a thread blocked in [`Reply::wait`] reads it itself, never
//! past its request's timeout. Requests are sent by the threads that poll or wait their replies,
//! batched, on non-blocking sockets; when a worker's socket is full, a writer thread of that
//! worker takes over, and nothing waits on it. One thread for the whole process fires request
//! timeouts, one reaps workers, and on Unix one drains every worker's stderr. Futures are woken
//! from bincrew's threads, so they work on any executor. The async `start` and `shutdown` wait
//! on a thread of their own. `ARCHITECTURE.md` in the repository describes it all.
//!
//! # Caveats
//!
//! - **A request is sent when its reply is first polled or waited on** (with everything queued
//!   by then, which is what batches requests). A reply dropped before that never sends it.
//! - **Async handlers do not run inside a Tokio runtime** unless the worker asks for one with
//!   `Workers::tokio` (feature `tokio`); otherwise Tokio's timers and I/O panic in them.
//! - **The encoding is not self-describing**: untagged and internally tagged enums, `flatten`,
//!   `skip_serializing_if` and `serde_json::Value` need `bincrew::Json` (feature `json`). Types the handshake cannot
//!   trace are compared by name only (see "What the handshake compares").
//! - **A panic ends the worker process**, failing every request in flight with the panic's
//!   message: state shared with code that panicked cannot be trusted. Use a pool to get a new
//!   worker.
//! - **Processes a handler starts** are in the worker's process group and die with it, unless
//!   they leave the group (`setsid`); under a cgroup memory limit they are killed with the
//!   cgroup. They inherit the worker's stdout and stderr.
//! - **Memory and CPU limits** are Linux only (see [`WorkerBuilder::memory_limit`]); a memory
//!   limit watched by the app (no writable cgroup v2) can overshoot by what the worker allocates
//!   in about 10 ms.
//! - **Dying with the app** is immediate on Linux (the kernel's parent-death signal); elsewhere a
//!   worker notices that its app is gone when its channels close, which takes a handler that is
//!   not stuck.
//! - **Polling a reply may step aside once** (`sched_yield`) when its answer is not there yet,
//!   so that a worker on the same CPU answers before the task parks; when that seldom helps
//!   (the worker runs on another CPU), it stops for a while. It never waits for the worker.
//! - **A worker holds fast answers for up to 200 µs** while more requests of the same batch
//!   are queued, so that they share messages; answers held when it crashes are lost with it
//!   (their requests fail with the crash report).
//! - **Large messages keep shared memory**: a channel that carried a message of 16 KiB or more
//!   keeps a region of shared memory in each direction for the next ones (sixteen times the
//!   first such message, at most 2 MiB, its pages shared by both processes) until the worker
//!   goes. Shared memory in a message may be up to 2 MiB over
//!   [`WorkerBuilder::max_message_size`] (a region); each message in it is held to the limit.
//! - **Channels inside a value that fails to decode** are closed by bincrew on Linux; elsewhere
//!   they may stay open until the process ends.
//! - **Self-spawned workers in tests** need libtest's harness (`cargo test`, `cargo nextest`):
//!   see [`WorkerBuilder::in_test`].
//! - **Linux is the tested platform**; other Unixes and Windows go through `duct` and lack the
//!   checks that need the sockets' descriptors (non-blocking sends, the packet check).
#![deny(missing_docs)]
// The examples show where calls go in `main`.
#![allow(clippy::needless_doctest_main)]

mod app;
mod build;
mod contain;
mod env;
mod error;
#[cfg(feature = "json")]
mod json;
mod locate;
mod probe;
mod process;
mod shared;
mod sync;
mod wire;
mod worker;

#[cfg(unix)]
#[path = "os/unix.rs"]
mod os;
#[cfg(not(unix))]
#[path = "os/other.rs"]
mod os;

pub use app::{PoolBuilder, Reply, RunOptions, Worker, WorkerBuilder, WorkerPool};
pub use app::{PoolStats, WorkerStats};
pub use build::{build_info, BuildInfo, Compat, MismatchKind};
pub use contain::{LimitExceeded, MemoryMechanism};
pub use error::{
    ExitInfo, RollError, RunError, ShutdownError, StartError, TypeSide, VersionMismatch,
    WorkerCrashError,
};
#[cfg(feature = "json")]
pub use json::Json;
pub use os::{WorkerStdin, WorkerStdout};
pub use probe::{probe_binary, probe_worker, BinaryProbe, WorkerProbe};
pub use shared::SharedBuffer;
pub use worker::{run_worker, run_worker_blocking, CancelToken, RequestArgs, Workers};

/// The `semver` crate, whose `VersionReq` [`Compat::Semver`] takes.
pub use semver;

pub use ipc_channel::ipc::{
    bytes_channel, channel, IpcBytesReceiver, IpcBytesSender, IpcReceiver, IpcSender,
    IpcSharedMemory,
};

/// A type that can be a request or a response: any `Serialize + DeserializeOwned + Send +
/// 'static` type.
///
/// The encoding (postcard) is compact and fast but not self-describing, so `#[serde(untagged)]`,
/// internally tagged enums, `flatten`, `skip_serializing_if` and `serde_json::Value` do not
/// round-trip in it: carry such types in `bincrew::Json` (feature `json`). See "What the
/// handshake compares" for what the handshake checks of each kind of type.
///
/// Mark byte fields `#[serde(with = "serde_bytes")]` (the `serde_bytes` crate): serde otherwise
/// encodes a `Vec<u8>` element by element. Large messages travel through shared memory by
/// themselves; for large blobs the app fills itself, see [`SharedBuffer`].
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Thumbnail {
///     width: u32,
///     height: u32,
///     #[serde(with = "serde_bytes")]
///     pixels: Vec<u8>,
/// }
///
/// fn is_ipc_value<T: bincrew::IpcValue>() {}
/// is_ipc_value::<Thumbnail>();
/// is_ipc_value::<Result<Vec<String>, String>>();
/// ```
pub trait IpcValue: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}
impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> IpcValue for T {}

/// Records the calling binary's package name, version and build id for the handshake.
///
/// Call it once, first thing in `main`, in every executable that starts or serves workers. The
/// versions compared by the handshake are those of the binaries' own packages (the crate that
/// calls this macro), not bincrew's.
///
/// It also takes what the build-support crate (`bincrew-build`) stamped into the package at
/// compile time, when its build script calls it: the build id (`BINCREW_BUILD_ID`), the worker
/// binaries the package declares with their version requirements (`BINCREW_WORKERS`), and the
/// apps that declare the package's binaries as workers (`BINCREW_APPS`).
///
/// Calling it again has no effect.
#[macro_export]
macro_rules! init {
    () => {
        $crate::__private::init($crate::__private::Stamp {
            package: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            manifest_dir: env!("CARGO_MANIFEST_DIR"),
            build_id: option_env!("BINCREW_BUILD_ID"),
            workers: option_env!("BINCREW_WORKERS"),
            apps: option_env!("BINCREW_APPS"),
        })
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::build::{init, Stamp};

    /// Entry points for fuzzing every message one side decodes from the other. Not a stable
    /// API.
    pub mod fuzz {
        use ipc_channel::ipc::IpcMessage;

        /// The app decoding a worker's hello.
        pub fn hello(bytes: &[u8]) -> bool {
            crate::wire::hello::Hello::decode(bytes).is_ok()
        }

        /// The app decoding a worker's `Ready` message.
        pub fn ready(bytes: &[u8]) -> bool {
            IpcMessage::from_data(bytes.to_vec())
                .to::<crate::wire::messages::Ready>()
                .is_ok()
        }

        /// The app decoding a worker's answers (in their frame), for a response type `O`.
        pub fn answers<O: crate::IpcValue>(bytes: &[u8]) -> bool {
            IpcMessage::from_data(bytes.to_vec())
                .to::<crate::wire::transport::Framed<crate::wire::messages::ToApp<O>>>()
                .is_ok()
        }

        /// A worker decoding the app's requests (in their frame), for a request type `I`.
        pub fn requests<I: crate::IpcValue>(bytes: &[u8]) -> bool {
            IpcMessage::from_data(bytes.to_vec())
                .to::<crate::wire::transport::Framed<Vec<(u64, crate::wire::messages::Job<I>)>>>()
                .is_ok()
        }

        /// A worker decoding the app's control messages.
        pub fn control(bytes: &[u8]) -> bool {
            IpcMessage::from_data(bytes.to_vec())
                .to::<Vec<(u64, crate::wire::messages::Control)>>()
                .is_ok()
        }

        /// What the app checks before `ipc-channel` reads a message: a packet of the socket,
        /// header first, carrying no descriptors. `Err` is a refusal, never a panic.
        pub fn packet(bytes: &[u8]) -> Result<(), String> {
            crate::os::socket::check_packet_bytes(bytes, 1 << 20)
        }

        /// The app decoding a worker's first message: its hello, and `Ready` after a last line
        /// `ready=`. `true` when the hello comes back as it was sent: all of the input, or (when
        /// a `ready=` line is there) the input up to that line. A `Ready` after it hits the
        /// same known `ipc-channel` panic as [`ready`] without channels (the app's accept
        /// catches it).
        pub fn greeting(bytes: &[u8]) -> bool {
            match IpcMessage::from_data(bytes.to_vec()).to::<crate::wire::hello::Greeting>() {
                Ok(greeting) => {
                    greeting.hello == bytes
                        || (bytes.starts_with(&greeting.hello)
                            && greeting.hello.ends_with(b"\nready="))
                }
                Err(_) => false,
            }
        }
    }
}
