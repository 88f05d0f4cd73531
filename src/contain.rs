//! Containment: the limits a worker process runs under, and how a crash report tells which one
//! it hit. Both sides use this module: the app sets the limits and reads the worker's end; the
//! worker enforces its CPU limit and writes the line the app recognises.
//!
//! - Memory ([`MemoryMechanism`]): a cgroup v2 of the worker's own with `memory.max` where one
//!   can be made, else the app watching the worker's resident memory (Linux), or `RLIMIT_DATA`
//!   when asked. Applied by the app at the spawn (`process/limits.rs`, `os/linux_limits.rs`).
//! - CPU per request: a watchdog thread in the worker reads each running handler's thread CPU
//!   clock (`worker/limits.rs`); past the limit it writes [`CPU_LIMIT_LINE`] to stderr and
//!   exits with [`EXIT_CPU_LIMIT`].
//! - Core dumps: off (`RLIMIT_CORE` 0) unless asked, set by the app on the new process before
//!   the handshake, so before any handler runs.
//! - The process tree: a worker is the leader of a process group of its own, which is killed
//!   with it (and its cgroup, when it has one).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ExitInfo;

/// Exit code of a worker whose handler used more CPU time than its limit: 128 + `SIGXCPU`, as a
/// shell reports a process that `RLIMIT_CPU` ended.
pub(crate) const EXIT_CPU_LIMIT: i32 = 152;

/// The start of the line a worker writes to stderr before it exits for its CPU limit; the
/// request's id follows.
pub(crate) const CPU_LIMIT_LINE: &str = "bincrew worker: CPU limit: request ";

/// The name of the worker's CPU watchdog thread, which the app looks for after the handshake.
pub(crate) const CPU_WATCHDOG: &str = "bincrew-cpu";

/// How a worker's memory limit is enforced; see
/// [`WorkerBuilder::memory_limit`](crate::WorkerBuilder::memory_limit).
///
/// ```no_run
/// use bincrew::{MemoryMechanism, Worker};
///
/// let worker = Worker::<Vec<u8>, Vec<u8>>::builder("decode")
///     .memory_limit(256 << 20)
///     .start_blocking()?;
/// if worker.memory_mechanism() == Some(MemoryMechanism::Watch) {
///     println!("no cgroup here: the app watches the worker's memory");
/// }
/// # Ok::<(), bincrew::StartError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemoryMechanism {
    /// A cgroup v2 of the worker's own with `memory.max` set to the limit (`memory.swap.max` 0,
    /// `memory.oom.group` 1). The kernel counts the worker's whole process tree, page cache
    /// included, and its OOM killer ends the tree (`SIGKILL`) when reclaim cannot keep it under
    /// the limit. Needs a cgroup v2 directory the app may write, with the memory controller
    /// available to its children (see [`WorkerBuilder::cgroup`](crate::WorkerBuilder::cgroup)).
    Cgroup,
    /// The app reads the resident memory of the worker and of its descendants from `/proc`
    /// every 10 ms and kills the worker's process group (`SIGKILL`) once the sum passes the
    /// limit. Linux only. It can overshoot by what the worker touches within one interval, and
    /// pages shared between processes count once per process (as `ps` shows them).
    Watch,
    /// `RLIMIT_DATA`, set on the worker (soft and hard): an allocation past the limit fails
    /// inside the worker, and Rust aborts with "memory allocation of N bytes failed". It counts
    /// the private writable address space, reserved or not, rather than resident memory:
    /// allocators and runtimes that reserve large regions up front (jemalloc, Go, the JVM,
    /// sanitizers), and every thread stack, count in full. Each process of the tree has a limit
    /// of its own. Linux only here; only used when asked for with
    /// [`WorkerBuilder::memory_mechanism`](crate::WorkerBuilder::memory_mechanism).
    DataLimit,
}

impl fmt::Display for MemoryMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryMechanism::Cgroup => "enforced by a cgroup v2 memory.max",
            MemoryMechanism::Watch => "enforced by the app watching its resident memory",
            MemoryMechanism::DataLimit => "enforced by RLIMIT_DATA",
        })
    }
}

/// Which limit a worker exceeded: see [`WorkerCrashError::limit`](crate::WorkerCrashError::limit).
///
/// ```no_run
/// use bincrew::{LimitExceeded, RunError};
///
/// # let worker = bincrew::Worker::<Vec<u8>, Vec<u8>>::start_blocking("decode").unwrap();
/// # let untrusted = Vec::new();
/// if let Err(RunError::Crashed(crash)) = worker.run_blocking(untrusted) {
///     match &crash.limit {
///         Some(LimitExceeded::Memory { limit, .. }) => eprintln!("over {limit} bytes: input refused"),
///         Some(LimitExceeded::Cpu { .. }) => eprintln!("too slow: input refused"),
///         _ => eprintln!("{crash}"),
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitExceeded {
    /// The worker used more memory than its limit.
    Memory {
        /// The limit, in bytes.
        limit: u64,
        /// How it was enforced.
        mechanism: MemoryMechanism,
    },
    /// One request's handler used more CPU time than the limit per request.
    Cpu {
        /// The limit per request.
        limit: Duration,
        /// The id of the request whose handler used it, when the worker said (see
        /// [`RequestArgs::id`](crate::RequestArgs::id)).
        request: Option<u64>,
    },
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitExceeded::Memory { limit, mechanism } => {
                write!(f, "its memory limit of {} ({mechanism})", Bytes(*limit))
            }
            LimitExceeded::Cpu { limit, request } => {
                write!(f, "its CPU limit of {limit:?} per request")?;
                if let Some(id) = request {
                    write!(f, " (request {id})")?;
                }
                Ok(())
            }
        }
    }
}

/// A byte count as people read it: `256 MiB`, `1.5 GiB`, `4096 bytes`.
pub(crate) struct Bytes(pub(crate) u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (unit, size) in UNITS {
            if self.0 >= size {
                let whole = self.0 / size;
                let tenths = (self.0 % size) * 10 / size;
                return if tenths == 0 {
                    write!(f, "{whole} {unit}")
                } else {
                    write!(f, "{whole}.{tenths} {unit}")
                };
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

/// The limits a worker is started under, as its builder set them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Resident memory, in bytes.
    pub(crate) memory: Option<u64>,
    /// The mechanism asked for; the best available when `None`.
    pub(crate) mechanism: Option<MemoryMechanism>,
    /// The cgroup v2 directory under which a worker's cgroup is made; found when `None`.
    pub(crate) cgroup: Option<PathBuf>,
    pub(crate) cpu_per_request: Option<Duration>,
    /// `None`: off, as a default (a failure to turn them off is a warning); `Some(false)`: off,
    /// as asked (a failure fails the start unless best effort).
    pub(crate) core_dumps: Option<bool>,
    /// Start without a limit that cannot be applied (with a warning) instead of failing.
    pub(crate) best_effort: bool,
}

/// What is known of a worker's end that may show a limit.
pub(crate) struct End<'a> {
    pub(crate) exit: Option<ExitInfo>,
    pub(crate) stderr: &'a str,
    /// The memory limit that was applied, and how.
    pub(crate) memory: Option<(u64, MemoryMechanism)>,
    pub(crate) cpu: Option<Duration>,
    /// The app's watcher killed it for its memory.
    pub(crate) watch_killed: bool,
    /// Its cgroup's OOM killer killed something in it.
    pub(crate) cgroup_oom: bool,
}

impl End<'_> {
    /// Which limit, if any, ended the worker.
    pub(crate) fn limit(&self) -> Option<LimitExceeded> {
        if let Some((limit, mechanism)) = self.memory {
            let by_mechanism = match mechanism {
                MemoryMechanism::Watch => self.watch_killed,
                MemoryMechanism::Cgroup => self.cgroup_oom,
                MemoryMechanism::DataLimit => false,
            };
            // Under any mechanism an allocation may fail first (RLIMIT_DATA always does).
            if by_mechanism || allocation_failed(self.stderr) {
                return Some(LimitExceeded::Memory { limit, mechanism });
            }
        }
        if let Some(limit) = self.cpu {
            let code = self.exit.and_then(|e| e.code);
            if code == Some(EXIT_CPU_LIMIT) {
                if let Some(line) = self
                    .stderr
                    .lines()
                    .rev()
                    .find_map(|l| l.trim().strip_prefix(CPU_LIMIT_LINE))
                {
                    let request = line
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|id| id.parse().ok());
                    return Some(LimitExceeded::Cpu { limit, request });
                }
            }
        }
        None
    }
}

/// Whether stderr ends with Rust's report of a failed allocation (`std::alloc::handle_alloc_error`
/// prints "memory allocation of N bytes failed" and aborts).
pub(crate) fn allocation_failed(stderr: &str) -> bool {
    stderr.lines().rev().take(20).any(|line| {
        line.trim()
            .strip_prefix("memory allocation of ")
            .and_then(|rest| rest.strip_suffix(" bytes failed"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(stderr: &str) -> End<'_> {
        End {
            exit: None,
            stderr,
            memory: None,
            cpu: None,
            watch_killed: false,
            cgroup_oom: false,
        }
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(Bytes(256 << 20).to_string(), "256 MiB");
        assert_eq!(Bytes(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(Bytes(4096).to_string(), "4 KiB");
        assert_eq!(Bytes(1000).to_string(), "1000 bytes");
    }

    #[test]
    fn rusts_allocation_failure_is_recognised_and_nothing_else() {
        assert!(allocation_failed(
            "some line\nmemory allocation of 268435456 bytes failed\n"
        ));
        assert!(!allocation_failed("memory allocation of many bytes failed"));
        assert!(!allocation_failed(
            "memory allocation of 12 bytes succeeded"
        ));
        assert!(!allocation_failed(""));
    }

    #[test]
    fn a_memory_limit_is_named_only_when_its_mechanism_or_an_allocation_says_so() {
        let mib = 1 << 20;
        let memory = |mechanism| Some((256 * mib, mechanism));
        let hit = |mechanism| {
            Some(LimitExceeded::Memory {
                limit: 256 * mib,
                mechanism,
            })
        };
        let mut watched = end("");
        watched.memory = memory(MemoryMechanism::Watch);
        assert_eq!(watched.limit(), None, "a crash of its own");
        watched.watch_killed = true;
        assert_eq!(watched.limit(), hit(MemoryMechanism::Watch));

        let mut cgroup = end("");
        cgroup.memory = memory(MemoryMechanism::Cgroup);
        cgroup.watch_killed = true;
        assert_eq!(cgroup.limit(), None, "only the cgroup's OOM kill counts");
        cgroup.cgroup_oom = true;
        assert_eq!(cgroup.limit(), hit(MemoryMechanism::Cgroup));

        let mut data = end("memory allocation of 1048576 bytes failed");
        data.memory = memory(MemoryMechanism::DataLimit);
        assert_eq!(data.limit(), hit(MemoryMechanism::DataLimit));
        assert_eq!(
            hit(MemoryMechanism::DataLimit).map(|l| l.to_string()),
            Some("its memory limit of 256 MiB (enforced by RLIMIT_DATA)".to_owned())
        );

        // Without a memory limit, a failed allocation is just a crash.
        assert_eq!(end("memory allocation of 1 bytes failed").limit(), None);
    }

    #[test]
    fn a_cpu_limit_needs_the_exit_code_and_the_workers_line() {
        let limit = Duration::from_secs(1);
        let stderr = format!("{CPU_LIMIT_LINE}17 used 1.002s of CPU time\n");
        let mut cpu = end(&stderr);
        cpu.cpu = Some(limit);
        assert_eq!(cpu.limit(), None, "no exit code");
        cpu.exit = Some(ExitInfo {
            code: Some(EXIT_CPU_LIMIT),
            signal: None,
        });
        let hit = cpu.limit();
        assert_eq!(
            hit,
            Some(LimitExceeded::Cpu {
                limit,
                request: Some(17)
            })
        );
        assert_eq!(
            hit.map(|h| h.to_string()).as_deref(),
            Some("its CPU limit of 1s per request (request 17)")
        );
        // The same code from a handler's own `exit(152)` is not the limit.
        let mut own = end("bye\n");
        own.cpu = Some(limit);
        own.exit = cpu.exit;
        assert_eq!(own.limit(), None);
    }
}
