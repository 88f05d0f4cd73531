//! The requests of the `misbehave` worker, which does on request everything a worker should
//! not: panic, abort, segfault, overflow its stack, exit, hang. The tests and the demo use it.
//!
//! Environment variables make it break the handshake instead (read before it serves):
//! `MISBEHAVE_EXIT_EARLY=<code>` exits before connecting, `MISBEHAVE_NEVER_CONNECT=1` never
//! connects, `MISBEHAVE_WRONG_TOKEN=1` presents a wrong token, `MISBEHAVE_GARBAGE_HELLO=1` sends
//! garbage instead of a hello, `MISBEHAVE_TRUNCATED_HELLO=1` sends half a hello,
//! `MISBEHAVE_NO_INIT=1` skips `bincrew::init!()`, and `MISBEHAVE_FAKE=garbage` or
//! `MISBEHAVE_FAKE=truncated` completes a correct handshake by hand, then sends a message that
//! does not decode; `MISBEHAVE_FAKE=bad-index` does the same as worker `stream` (`u32` requests,
//! `IpcSender<u32>` responses) with an answer naming a channel it did not send, and
//! `MISBEHAVE_FAKE=bad-ready` sends such a `Ready` message. `MISBEHAVE_FAKE=huge-header` writes a packet whose
//! header claims a 1 TiB message. `MISBEHAVE_SLOW_PANIC=1` makes a panic take half a second to
//! report, releasing every `WaitFor` meanwhile. `MISBEHAVE_SQUAT=1` first starts a
//! copy of itself that connects to the handshake server and sends nothing, then serves.
//!
//! For containment tests it also allocates without end, leaks a fixed amount per request, spins
//! the CPU, and starts a grandchild process.

use bincrew::{IpcSender, IpcSharedMemory};
use serde::{Deserialize, Serialize};

/// The worker's name.
pub const WORKER: &str = "misbehave";

/// What to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Answer with the text.
    Echo(String),
    /// Answer with the text; the channel only travels with it.
    EchoWithChannel {
        /// The answer.
        text: String,
        /// Carried, unused.
        channel: IpcSender<u32>,
    },
    /// Answer only once a `Release` with the same key has arrived.
    WaitFor(String),
    /// Release the `WaitFor` requests with this key, and answer with it.
    Release(String),
    /// Sleep, then answer with the text.
    Sleep {
        /// How long.
        ms: u64,
        /// The answer.
        reply: String,
    },
    /// Write the text to stderr, then answer with it.
    Stderr(String),
    /// Send 1..=steps to `progress`, then answer with the number of steps.
    Progress {
        /// How many steps.
        steps: u32,
        /// Receives each step.
        progress: IpcSender<u32>,
    },
    /// Answer with the length and the byte sum of the blob.
    Checksum(IpcSharedMemory),
    /// Answer with the worker's process id.
    Pid,
    /// Panic with this message.
    Panic(String),
    /// Call `std::process::abort`.
    Abort,
    /// Write through a null pointer.
    Segfault,
    /// Recurse until the stack overflows.
    StackOverflow,
    /// Exit with this code.
    Exit(i32),
    /// Never answer, ignoring cancellation.
    Hang,
    /// Work for up to `ms` milliseconds, giving up early when the app cancels the request;
    /// answers `finished` or `cancelled`.
    Busy {
        /// How long.
        ms: u64,
    },
    /// Allocate this many bytes (and touch them), then answer with the count.
    Allocate(u64),
    /// Add one to every byte of the buffer in place, and send it back.
    Increment(bincrew::SharedBuffer),
    /// Wait like `WaitFor` for a `Release` of `after`, when given; then answer `Stamped` with
    /// where the buffer is mapped in this process and whether that mapping already carries the
    /// mark of [`mark_mapping`] (it is a mapping this process kept from an earlier `Stamp`),
    /// after marking it and adding one to every byte.
    Stamp {
        /// The buffer, sent back.
        buffer: bincrew::SharedBuffer,
        /// The key to wait for.
        after: Option<String>,
    },
    /// Answer with the byte sum of the buffer, which is dropped, not sent back.
    Sum(bincrew::SharedBuffer),
    /// Answer with how many `Busy` requests saw their cancellation.
    CancelledCount,
    /// Answer with the number of descriptors this process has open that are sockets.
    Sockets,
    /// Start a child process (this binary, `count-sockets`) and answer with the number of
    /// sockets it has open: what a process started by a handler inherits.
    ChildSockets,
    /// Answer with the value of this environment variable, or `<unset>`.
    Env(String),
    /// Write the text to stdout, then answer with it.
    Stdout(String),
    /// Answer with the working directory.
    Cwd,
    /// Segfault if this file does not exist (creating it first), else answer `survived`: a
    /// request that crashes its first worker only.
    CrashOnce(std::path::PathBuf),
    /// Allocate without end, 1 MiB at a time, touching every page so that the resident memory
    /// grows: what a decompression bomb does. Never answers.
    AllocateForever,
    /// Leak this many bytes (touched, so resident), then answer with the bytes leaked so far.
    Leak(u64),
    /// Spin on the CPU without end, ignoring cancellation. Never answers.
    Spin,
    /// Spin on the CPU for this many milliseconds (of wall time: at most as much CPU time), then
    /// answer `burnt`.
    Burn {
        /// How long.
        ms: u64,
    },
    /// Start a child process (this binary, `hog`) that touches this many MiB and then sleeps;
    /// answer with its pid once it holds them.
    ChildHog(u64),
    /// Start `sleep 1000` as a child of the worker (a grandchild of the app), without waiting
    /// for it, and answer with its pid.
    Grandchild,
    /// Answer with how many messages of answers the worker process has sent so far.
    AnswerMessages,
    /// Use up every file descriptor this process may open (its limit lowered to what it has
    /// open), then answer with text of this many bytes: too large for the socket, so it needs
    /// shared memory, which needs a descriptor.
    NoDescriptors(u64),
}

/// What it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Text.
    Text(String),
    /// A number.
    Number(u64),
    /// A shared buffer.
    Buffer(bincrew::SharedBuffer),
    /// The answer to `Stamp`.
    Stamped {
        /// The buffer.
        buffer: bincrew::SharedBuffer,
        /// Where the worker had it mapped.
        address: u64,
        /// Whether that mapping carried the mark already.
        marked: bool,
    },
}

/// Marks the mapping that holds `bytes` (which must start it), so that [`mapping_is_marked`]
/// tells this mapping from a new mapping of the same memory: `MADV_DONTDUMP`, which shows as
/// `dd` among the mapping's `VmFlags` in `/proc/self/smaps`. Linux only; `false` if it failed.
pub fn mark_mapping(bytes: &[u8]) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: the range is mapped (it is `bytes`); MADV_DONTDUMP only leaves it out of core
        // dumps.
        unsafe {
            libc::madvise(
                bytes.as_ptr() as *mut libc::c_void,
                bytes.len(),
                libc::MADV_DONTDUMP,
            ) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = bytes;
        false
    }
}

/// Whether the mapping that holds `bytes` carries the mark of [`mark_mapping`].
pub fn mapping_is_marked(bytes: &[u8]) -> bool {
    let address = bytes.as_ptr() as u64;
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return false;
    };
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
            {
                inside = (start..end).contains(&address);
                continue;
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().any(|flag| flag == "dd");
            }
        }
    }
    false
}
