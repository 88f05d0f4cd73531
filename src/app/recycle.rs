//! `Core`: the processes behind one [`Worker`](super::Worker), and replacing them gracefully.
//!
//! A `Worker` has one *current* process (a `Connection`), which takes its requests, and any
//! number of *draining* ones: processes it replaced, which answer the requests they took and
//! then exit. A worker is replaced
//!
//! - by *recycling*, after `after_requests` requests or when its resident memory (with its
//!   descendants'), read at most every 100 ms as requests are made, passes `above_memory`: a
//!   thread starts the replacement with the worker's builder while the current process goes on
//!   serving; once the replacement completed its handshake it becomes current, and the old
//!   process is asked to shut down: it answers everything it took and exits. Nothing fails and
//!   no pool counts a restart. A replacement that fails to start is logged and tried again
//!   after a backoff (1 s, doubling to 60 s), the old process serving meanwhile;
//! - by a pool's rolling replacement, which *retires* the whole `Worker` (see `roll.rs`).
//!
//! A draining process has no time limit unless the builder set one
//! (`recycle_drain_timeout`): then the timer kills it.
//!
//! Ownership: `generations` (the current process, the draining ones, whether the worker takes
//! requests) is behind a read-write lock. A request is made under the read lock, so that a
//! replacement (under the write lock) never asks a process to shut down between the moment a
//! request picked it and the moment the request was queued on it: the shutdown's `End` always
//! comes after it. Lock order: a pool's state, then `generations`, then a `Connection`'s locks.
//! The exit hook of each process (`ended`) takes `generations` with no other lock held.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::builder::WorkerBuilder;
use super::connection::Connection;
use super::reply::Reply;
use super::stats::Counters;
use super::timer;
use crate::contain::Bytes;
use crate::error::{RunError, ShutdownError, WorkerCrashError};
use crate::sync::lock;
use crate::IpcValue;

/// How often, at most, a request reads its worker's resident memory for recycling.
const MEMORY_READ_EVERY: Duration = Duration::from_millis(100);
/// The backoff after a replacement failed to start: from this, doubling.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How long a shutdown waits for a process it killed to be reaped.
const KILLED_EXIT_GRACE: Duration = Duration::from_secs(2);

/// When a worker is recycled; from the builder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RecyclePolicy {
    pub(crate) after_requests: Option<u64>,
    pub(crate) above_memory: Option<u64>,
    /// How long a replaced process may take to drain before it is killed; unlimited if `None`.
    pub(crate) drain_timeout: Option<Duration>,
}

impl RecyclePolicy {
    fn recycles(&self) -> bool {
        self.after_requests.is_some() || self.above_memory.is_some()
    }
}

pub(crate) struct Core<I, O> {
    pub(super) name: String,
    generations: RwLock<Generations<I, O>>,
    /// How replacements start; `None` when the worker is not recycled.
    builder: Option<WorkerBuilder<I, O>>,
    policy: RecyclePolicy,
    /// Requests made on the current process.
    served: AtomicU64,
    /// When the current process's memory was last read, in ms since `epoch`.
    memory_read_at: AtomicU64,
    /// A replacement is being started.
    replacing: AtomicBool,
    /// Replacements that failed to start in a row, and when (ms since `epoch`) to try again.
    failures: AtomicU64,
    retry_at: AtomicU64,
    epoch: Instant,
    pub(super) counters: Arc<Counters>,
    /// Called whenever one of the worker's processes has ended (a pool's supervisor is woken).
    hook: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// When a shutdown's grace period ends, for the draining processes too.
    shutdown_deadline: Mutex<Option<Instant>>,
    this: Weak<Self>,
}

struct Generations<I, O> {
    current: Arc<Connection<I, O>>,
    /// Takes no new requests: shut down, dropped, or retired from its pool.
    closed: bool,
    /// Replaced processes, answering what they took before they were replaced.
    draining: Vec<Arc<Connection<I, O>>>,
}

impl<I, O> Core<I, O> {
    fn read(&self) -> RwLockReadGuard<'_, Generations<I, O>> {
        self.generations
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Generations<I, O>> {
        self.generations
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn current(&self) -> Arc<Connection<I, O>> {
        self.read().current.clone()
    }

    /// Every process of the worker: the current one first, then the draining ones.
    fn all(&self) -> Vec<Arc<Connection<I, O>>> {
        let generations = self.read();
        std::iter::once(generations.current.clone())
            .chain(generations.draining.iter().cloned())
            .collect()
    }

    pub(super) fn is_running(&self) -> bool {
        let generations = self.read();
        !generations.closed && generations.current.is_running()
    }

    pub(super) fn crash_error(&self) -> Option<Arc<WorkerCrashError>> {
        self.current().crash_error()
    }

    /// Requests in flight on every process of the worker.
    pub(super) fn in_flight(&self) -> usize {
        self.all().iter().map(|c| c.in_flight()).sum()
    }

    /// Whether every process of the worker has ended and had the end of its channel read, so
    /// that every request it took is settled. An exit alone is not enough: the answers a
    /// process sent before it exited may still wait in its channel for the reader, and
    /// dropping the worker then would fail them as shut down.
    pub(super) fn is_drained(&self) -> bool {
        let generations = self.read();
        generations.draining.is_empty() && generations.current.is_settled()
    }

    /// Calls `hook` whenever one of the worker's processes has ended, and at once if the
    /// current one already has.
    pub(super) fn on_exit(&self, hook: Arc<dyn Fn() + Send + Sync>) {
        *lock(&self.hook) = Some(hook.clone());
        if self.crash_error().is_some() {
            hook();
        }
    }

    /// Kills every process of the worker.
    pub(super) fn kill(&self, reason: &str) {
        for connection in self.all() {
            connection.kill(reason.to_owned());
        }
    }

    /// The `Worker` was dropped: every process is killed and its requests fail.
    pub(super) fn close(&self) {
        self.write().closed = true;
        for connection in self.all() {
            connection.close();
        }
    }

    fn ms_since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl<I: IpcValue, O: IpcValue> Core<I, O> {
    pub(super) fn new(
        name: String,
        current: Arc<Connection<I, O>>,
        builder: WorkerBuilder<I, O>,
        policy: RecyclePolicy,
        counters: Arc<Counters>,
    ) -> Arc<Self> {
        let core = Arc::new_cyclic(|this| Core {
            name,
            generations: RwLock::new(Generations {
                current: current.clone(),
                closed: false,
                draining: Vec::new(),
            }),
            builder: policy.recycles().then_some(builder),
            policy,
            served: AtomicU64::new(0),
            memory_read_at: AtomicU64::new(0),
            replacing: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            retry_at: AtomicU64::new(0),
            epoch: Instant::now(),
            counters,
            hook: Mutex::new(None),
            shutdown_deadline: Mutex::new(None),
            this: this.clone(),
        });
        core.adopt(&current);
        core
    }

    /// Has `connection`'s exit reported to `ended`. Never called under `generations`: the hook
    /// runs at once for a process that already ended.
    fn adopt(&self, connection: &Arc<Connection<I, O>>) {
        let core = self.this.clone();
        let ended = Arc::downgrade(connection);
        connection.on_exit(Box::new(move || {
            if let (Some(core), Some(ended)) = (core.upgrade(), ended.upgrade()) {
                core.ended(&ended);
            }
        }));
    }

    /// One of the worker's processes ended and its requests were settled.
    fn ended(&self, connection: &Arc<Connection<I, O>>) {
        let crashed = connection.crash_error();
        if let Some(report) = &crashed {
            Counters::add(&self.counters.crashes);
            if report.limit.is_some() {
                Counters::add(&self.counters.limit_kills);
            }
        }
        let drained = {
            let mut generations = self.write();
            let before = generations.draining.len();
            generations.draining.retain(|c| !Arc::ptr_eq(c, connection));
            generations.draining.len() < before
        };
        if drained {
            match &crashed {
                Some(report) => {
                    tracing::warn!(worker = %self.name, "a replaced worker process crashed while it drained: {report}")
                }
                None => {
                    tracing::debug!(worker = %self.name, pid = connection.process.pid(), "a replaced worker process drained and exited")
                }
            }
        }
        let hook = lock(&self.hook).clone();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// Queues `request` on the current process, or gives it back when the worker takes no
    /// requests (shut down, dropped or retired).
    pub(super) fn try_run(&self, request: I, timeout: Option<Duration>) -> Result<Reply<O>, I> {
        let generations = self.read();
        if generations.closed {
            return Err(request);
        }
        let connection = generations.current.clone();
        // Under the read lock: a replacement cannot ask this process to shut down before the
        // request is queued on it.
        let made = connection.run(request, timeout);
        drop(generations);
        Ok(match made {
            Ok(made) => {
                Counters::add(&self.counters.requests);
                self.after_request(&connection);
                Reply::pending(made.slot, made.id, made.deadline, connection)
            }
            Err(error) => Reply::done(Err(error)),
        })
    }

    /// Counts a request on the current process and starts its replacement when it is due.
    fn after_request(&self, connection: &Connection<I, O>) {
        if self.builder.is_none() {
            return;
        }
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let mut reason = None;
        if let Some(limit) = self.policy.after_requests {
            if served >= limit {
                reason = Some(format!(
                    "it served {served} requests (the limit is {limit})"
                ));
            }
        }
        if let (None, Some(limit)) = (&reason, self.policy.above_memory) {
            let now = self.ms_since_epoch();
            let last = self.memory_read_at.load(Ordering::Relaxed);
            let every = MEMORY_READ_EVERY.as_millis() as u64;
            let due = now >= last.saturating_add(every)
                && self
                    .memory_read_at
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
            if due {
                let resident = resident(connection.process.pid());
                if resident > limit {
                    reason = Some(format!(
                        "its resident memory is {} (the limit is {})",
                        Bytes(resident),
                        Bytes(limit)
                    ));
                }
            }
        }
        if let Some(reason) = reason {
            self.recycle(reason);
        }
    }

    /// Starts a replacement on a thread of its own, unless one is being started or the last
    /// failure's backoff is not over.
    fn recycle(&self, reason: String) {
        if self.ms_since_epoch() < self.retry_at.load(Ordering::Relaxed)
            || self.replacing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Some(core) = self.this.upgrade() else {
            self.replacing.store(false, Ordering::Release);
            return;
        };
        let started = thread::Builder::new()
            .name(format!("bincrew-recycle-{}", self.name))
            .spawn(move || core.replace(&reason));
        if let Err(e) = started {
            tracing::warn!(worker = %self.name, error = %e, "cannot start a thread to recycle the worker");
            self.replacing.store(false, Ordering::Release);
        }
    }

    /// Starts a replacement and makes it current, then lets the old process drain.
    fn replace(&self, reason: &str) {
        let Some(builder) = &self.builder else {
            return;
        };
        match builder.start_process() {
            Ok((replacement, _build)) => {
                self.adopt(&replacement);
                let old = {
                    let mut generations = self.write();
                    let usable = !generations.closed
                        && generations.current.is_running()
                        && replacement.is_running();
                    usable.then(|| {
                        let old = std::mem::replace(&mut generations.current, replacement.clone());
                        generations.draining.push(old.clone());
                        old
                    })
                };
                match old {
                    Some(old) => {
                        self.served.store(0, Ordering::Relaxed);
                        self.failures.store(0, Ordering::Relaxed);
                        Counters::add(&self.counters.recycles);
                        tracing::info!(
                            worker = %self.name,
                            old_pid = old.process.pid(),
                            new_pid = replacement.process.pid(),
                            "recycled worker `{}`: {reason}; pid {} drains while pid {} takes the requests",
                            self.name,
                            old.process.pid(),
                            replacement.process.pid()
                        );
                        self.drain(&old);
                    }
                    // The worker crashed, shut down or was dropped meanwhile: nobody will use it.
                    None => replacement.close(),
                }
            }
            Err(error) => {
                Counters::add(&self.counters.recycle_failures);
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                let factor = 2u32.saturating_pow(u32::try_from(failures - 1).unwrap_or(u32::MAX));
                let backoff = RETRY_MIN.saturating_mul(factor).min(RETRY_MAX);
                let at = self.ms_since_epoch() + backoff.as_millis() as u64;
                self.retry_at.store(at, Ordering::Relaxed);
                tracing::warn!(worker = %self.name, %error, "recycling worker `{}` failed: its replacement did not start ({error}); the current process goes on serving, and recycling is tried again in {backoff:?}", self.name);
            }
        }
        self.replacing.store(false, Ordering::Release);
    }

    /// Asks a replaced process to answer what it took and exit; kills it after the drain
    /// timeout, if there is one.
    fn drain(&self, old: &Arc<Connection<I, O>>) {
        // A process that already crashed has had its requests failed.
        let _ = old.begin_shutdown();
        if let Some(timeout) = self.policy.drain_timeout {
            let old = Arc::downgrade(old);
            timer::schedule(
                Instant::now() + timeout,
                Box::new(move || {
                    if let Some(old) = old.upgrade() {
                        if old.process.try_exit().is_none() {
                            old.kill(format!(
                                "it was replaced and did not finish its requests within the drain timeout of {timeout:?}"
                            ));
                        }
                    }
                }),
            );
        }
    }

    /// Takes the worker out of service: it takes no new requests, and its processes answer what
    /// they took and exit (a pool's rolling replacement).
    pub(super) fn retire(&self) {
        let current = {
            let mut generations = self.write();
            generations.closed = true;
            generations.current.clone()
        };
        self.drain(&current);
    }

    pub(super) fn begin_shutdown(&self) -> Result<(), ShutdownError> {
        let current = {
            let mut generations = self.write();
            generations.closed = true;
            generations.current.clone()
        };
        lock(&self.shutdown_deadline)
            .get_or_insert_with(|| Instant::now() + current.settings.shutdown_grace);
        current.begin_shutdown()
    }

    /// Waits for every process of the worker to exit, until the grace period counted from the
    /// first `begin_shutdown` (for a retired worker's current process, from its retirement);
    /// kills those still running then.
    pub(super) fn wait_shutdown(&self) -> Result<(), ShutdownError> {
        let current = self.current();
        let grace = current.settings.shutdown_grace;
        let deadline = *lock(&self.shutdown_deadline).get_or_insert_with(|| Instant::now() + grace);
        // The current process as a plain worker's; the draining ones until the same deadline.
        let mut result = current.wait_shutdown();
        let draining: Vec<_> = self.read().draining.clone();
        for process in draining {
            let ended = match process.process.wait_deadline(deadline) {
                Some(exit) if exit.success() => Ok(()),
                Some(exit) => Err(ShutdownError::Crashed(
                    process.crash_error().unwrap_or_else(|| {
                        Arc::new(process.process.crash_report(Some(exit), None))
                    }),
                )),
                None => {
                    process.kill(format!(
                        "it did not exit within {grace:?} of the shutdown request"
                    ));
                    let _ = process
                        .process
                        .wait_deadline(Instant::now() + KILLED_EXIT_GRACE);
                    Err(ShutdownError::Killed {
                        worker: self.name.clone(),
                        grace,
                    })
                }
            };
            if let (Ok(()), Err(e)) = (&result, ended) {
                result = Err(e);
            }
        }
        result
    }
}

impl<I: IpcValue, O: IpcValue> Core<I, O> {
    /// Same as `try_run`, failing with `ShutDown` when the worker takes no requests.
    pub(super) fn run(&self, request: I, timeout: Option<Duration>) -> Reply<O> {
        self.try_run(request, timeout).unwrap_or_else(|_| {
            Reply::done(Err(RunError::ShutDown {
                worker: self.name.clone(),
            }))
        })
    }
}

/// The resident memory of process `pid` and of its descendants.
pub(crate) fn resident(pid: u32) -> u64 {
    let own = crate::os::limits::rss(pid).unwrap_or(0);
    let tree: u64 = crate::os::limits::descendants(pid)
        .into_iter()
        .filter_map(crate::os::limits::rss)
        .sum();
    own + tree
}
