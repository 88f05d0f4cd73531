//! The limits of one started worker process ([`Contained`]), applied right after the spawn and
//! before the handshake (so before any handler runs), and the app's memory watcher.
//!
//! - Core dumps: `RLIMIT_CORE` 0 for the new process (`prlimit`), unless the builder asks to
//!   keep them.
//! - Memory: the mechanism asked for, else the best available: a cgroup v2 of the worker's own
//!   (made under [`cgroup_parent`](crate::os::limits::cgroup_parent), the process moved into it
//!   at once), else the watcher below. `RLIMIT_DATA` only when asked.
//! - CPU per request: the worker enforces it (`worker/limits.rs`); the app only checks, after
//!   the handshake, that the worker runs its watchdog ([`CPU_WATCHDOG`]), so that an older worker
//!   binary that ignores the limit is refused instead of trusted.
//!
//! **The watcher** is one thread for the whole process, started with the first worker it
//! watches. Every 10 ms it reads the resident memory of each watched worker and of the worker's
//! descendants (found again every 100 ms), and kills the worker's process group when the sum
//! passes its limit. It reads `/proc/<pid>/statm`, which the kernel answers from counters
//! without the worker's memory lock, and it signals without waiting: no worker can hold it. It
//! also removes the cgroups of ended workers that still had processes in them when their handle
//! went. It sleeps while it has nothing to watch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::Duration;

use crate::contain::{Bytes, Limits, MemoryMechanism, CPU_WATCHDOG};
use crate::error::StartError;
use crate::os::limits::{self as os_limits, Cgroup};
use crate::sync::lock;

/// How often the watcher reads the resident memory of the workers it watches.
const WATCH_EVERY: Duration = Duration::from_millis(10);
/// Every how many reads it looks for the workers' descendants again.
const TREE_EVERY: u32 = 10;

/// The limits a started worker process runs under, and what they saw.
#[derive(Default)]
pub(crate) struct Contained {
    /// The memory limit applied, and how.
    pub(crate) memory: Option<(u64, MemoryMechanism)>,
    pub(crate) cpu: Option<Duration>,
    cgroup: Option<CgroupGuard>,
    /// Set by the watcher when it killed the worker for its memory.
    watch_killed: Arc<AtomicBool>,
}

impl Contained {
    /// Applies `limits` to process `pid`, just spawned as worker `worker`. A limit that cannot
    /// be applied fails the start, unless the limits are best effort: then it is left out, with
    /// a warning.
    pub(crate) fn apply(
        limits: &Limits,
        worker: &str,
        pid: u32,
        child: &Arc<crate::os::Child>,
    ) -> Result<Contained, StartError> {
        let mut contained = Contained::default();
        let failed = |limit: &'static str, reason: String, source: Option<std::io::Error>| {
            if limits.best_effort {
                let cause = source
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                tracing::warn!(worker, pid, "starting without its {limit}: {reason}{cause}");
                Ok(())
            } else {
                Err(StartError::Limit {
                    worker: worker.to_owned(),
                    limit,
                    reason,
                    source,
                })
            }
        };
        if limits.core_dumps != Some(true) {
            if let Err(e) = os_limits::core_dumps_off(pid) {
                let reason = "cannot set RLIMIT_CORE of the worker".to_owned();
                if limits.core_dumps.is_none() {
                    // The default, not something asked for: a sandbox that forbids prlimit must
                    // not stop every worker from starting.
                    tracing::warn!(worker, pid, error = %e, "core dumps stay as the app has them: {reason}");
                } else {
                    failed("core dump limit", reason, Some(e))?;
                }
            }
        }
        if let Some(bytes) = limits.memory {
            match contained.memory_limit(limits, worker, pid, child, bytes) {
                Ok(mechanism) => contained.memory = Some((bytes, mechanism)),
                Err(reason) => failed("memory limit", reason, None)?,
            }
        }
        if let Some(limit) = limits.cpu_per_request {
            if cfg!(target_os = "linux") {
                contained.cpu = Some(limit);
            } else {
                failed(
                    "CPU limit",
                    "a limit of CPU time per request needs Linux".into(),
                    None,
                )?;
            }
        }
        Ok(contained)
    }

    /// Applies the memory limit: the mechanism asked for, or the best that works here.
    fn memory_limit(
        &mut self,
        limits: &Limits,
        worker: &str,
        pid: u32,
        child: &Arc<crate::os::Child>,
        bytes: u64,
    ) -> Result<MemoryMechanism, String> {
        let mut tried = Vec::new();
        let order: &[MemoryMechanism] = match limits.mechanism {
            Some(MemoryMechanism::Cgroup) if limits.best_effort => {
                &[MemoryMechanism::Cgroup, MemoryMechanism::Watch]
            }
            Some(mechanism) => &[mechanism][..],
            None => &[MemoryMechanism::Cgroup, MemoryMechanism::Watch],
        };
        for mechanism in order {
            let applied = match mechanism {
                MemoryMechanism::Cgroup => self.cgroup(limits, pid, bytes),
                MemoryMechanism::Watch => watch(worker, pid, bytes, child, &self.watch_killed),
                MemoryMechanism::DataLimit => os_limits::data_limit(pid, bytes)
                    .map_err(|e| format!("cannot set RLIMIT_DATA of the worker: {e}")),
            };
            match applied {
                Ok(()) => {
                    tracing::debug!(worker, pid, limit = %Bytes(bytes), "memory limit {mechanism}");
                    return Ok(*mechanism);
                }
                Err(reason) => tried.push(format!("{mechanism:?}: {reason}")),
            }
        }
        Err(tried.join("; "))
    }

    fn cgroup(&mut self, limits: &Limits, pid: u32, bytes: u64) -> Result<(), String> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let parent = os_limits::cgroup_parent(limits.cgroup.as_deref())?;
        let name = format!(
            "bincrew-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let cgroup = Cgroup::create(&parent, &name, bytes)
            .map_err(|e| format!("cannot make a cgroup in {}: {e}", parent.display()))?;
        // Guarded from here: dropped on failure, it removes the cgroup.
        let guard = CgroupGuard(cgroup);
        guard
            .0
            .add(pid)
            .map_err(|e| format!("cannot move the worker into {}: {e}", guard.0.dir.display()))?;
        self.cgroup = Some(guard);
        Ok(())
    }

    /// Whether the worker runs its CPU watchdog, when it has a CPU limit (checked once it has
    /// completed the handshake: the watchdog starts before).
    pub(crate) fn check_cpu_watchdog(&self, pid: u32) -> Result<(), String> {
        if self.cpu.is_none() || os_limits::has_thread_named(pid, CPU_WATCHDOG) {
            return Ok(());
        }
        Err("the worker does not run bincrew's CPU watchdog (a worker binary built with an older bincrew ignores the limit): rebuild it".into())
    }

    /// Whether the watcher killed the worker for its memory.
    pub(crate) fn watch_killed(&self) -> bool {
        self.watch_killed.load(Ordering::SeqCst)
    }

    /// Whether the worker's cgroup saw an OOM kill.
    pub(crate) fn cgroup_oom(&self) -> bool {
        self.cgroup.as_ref().is_some_and(|c| c.0.oom_killed())
    }

    /// The worker exited: what is left in its cgroup goes too.
    pub(crate) fn ended(&self) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.0.kill();
        }
    }
}

/// Kills what is left in a worker's cgroup and removes it when the worker's handle goes; the
/// watcher retries the removal while processes are still on their way out.
struct CgroupGuard(Cgroup);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        self.0.kill();
        if self.0.remove().is_ok() {
            return;
        }
        let dir = self.0.dir.clone();
        match watcher() {
            Some(watcher) => {
                lock(&watcher.state).cgroups.push((Cgroup { dir }, 0));
                watcher.wake.notify_one();
            }
            None => tracing::debug!(cgroup = %dir.display(), "a worker's cgroup was left behind"),
        }
    }
}

/// A worker whose memory the watcher reads.
struct Watched {
    worker: String,
    pid: u32,
    limit: u64,
    child: Weak<crate::os::Child>,
    killed: Arc<AtomicBool>,
    /// Its descendants, as last found.
    tree: Vec<u32>,
    reads: u32,
}

struct WatcherState {
    watched: Vec<Watched>,
    /// Cgroups to remove once empty, with how many times removing them failed.
    cgroups: Vec<(Cgroup, u32)>,
}

struct Watcher {
    state: Mutex<WatcherState>,
    /// Signalled when something is added.
    wake: Condvar,
}

fn watcher() -> Option<&'static Watcher> {
    static WATCHER: OnceLock<Option<Watcher>> = OnceLock::new();
    WATCHER
        .get_or_init(|| {
            thread::Builder::new()
                .name("bincrew-memory".into())
                .spawn(|| {
                    // Stored right after this thread starts.
                    loop {
                        if let Some(watcher) = watcher() {
                            watcher.run();
                        }
                        thread::sleep(Duration::from_millis(1));
                    }
                })
                .ok()?;
            Some(Watcher {
                state: Mutex::new(WatcherState {
                    watched: Vec::new(),
                    cgroups: Vec::new(),
                }),
                wake: Condvar::new(),
            })
        })
        .as_ref()
}

/// Has the watcher kill worker `pid` once its memory (and its descendants') passes `limit`.
fn watch(
    worker: &str,
    pid: u32,
    limit: u64,
    child: &Arc<crate::os::Child>,
    killed: &Arc<AtomicBool>,
) -> Result<(), String> {
    if os_limits::rss(pid).is_none() {
        return Err("the resident memory of processes cannot be read here (no /proc)".into());
    }
    let watcher = watcher().ok_or("cannot start the thread that watches memory")?;
    lock(&watcher.state).watched.push(Watched {
        worker: worker.to_owned(),
        pid,
        limit,
        child: Arc::downgrade(child),
        killed: killed.clone(),
        tree: Vec::new(),
        reads: 0,
    });
    watcher.wake.notify_one();
    Ok(())
}

impl Watcher {
    fn run(&self) -> ! {
        loop {
            let (mut watched, mut cgroups) = {
                let mut state = lock(&self.state);
                while state.watched.is_empty() && state.cgroups.is_empty() {
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                (
                    std::mem::take(&mut state.watched),
                    std::mem::take(&mut state.cgroups),
                )
            };
            // Read without the lock, so that starting a worker never waits for this.
            watched.retain_mut(Watched::check);
            cgroups.retain_mut(|(cgroup, failures)| {
                *failures += 1;
                // About a minute of tries; a process stuck in the kernel may keep one longer.
                cgroup.remove().is_err() && *failures < 6000
            });
            {
                let mut state = lock(&self.state);
                state.watched.append(&mut watched);
                state.cgroups.append(&mut cgroups);
            }
            thread::sleep(WATCH_EVERY);
        }
    }
}

impl Watched {
    /// Reads the worker's memory and kills it past its limit; whether to go on watching it.
    fn check(&mut self) -> bool {
        let Some(child) = self.child.upgrade() else {
            return false;
        };
        if child.reaped() {
            return false;
        }
        if self.reads.is_multiple_of(TREE_EVERY) {
            self.tree = os_limits::descendants(self.pid);
        }
        self.reads = self.reads.wrapping_add(1);
        let Some(own) = os_limits::rss(self.pid) else {
            return false;
        };
        let total = own
            + self
                .tree
                .iter()
                .filter_map(|p| os_limits::rss(*p))
                .sum::<u64>();
        if total <= self.limit {
            return true;
        }
        self.killed.store(true, Ordering::SeqCst);
        tracing::warn!(
            worker = %self.worker,
            pid = self.pid,
            resident = total,
            limit = self.limit,
            "worker `{}` (pid {}) uses {} of resident memory, over its limit of {}: killing it",
            self.worker,
            self.pid,
            Bytes(total),
            Bytes(self.limit)
        );
        if let Err(e) = child.kill() {
            tracing::debug!(worker = %self.worker, error = %e, "killing the worker failed");
        }
        false
    }
}
