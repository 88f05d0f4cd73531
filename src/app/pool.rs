//! [`WorkerPool`]: several workers of one kind, supervised.
//!
//! Ownership: the pool's state (its slots, each with its worker and the `CrashStreak` of its
//! workers, the pool's `RestartHistory`, the wakers of replies waiting for a worker) sits behind
//! one mutex, shared by the pool handle, its supervisor thread and the replies. Each worker's
//! reader thread tells the supervisor when its worker exits; the supervisor alone starts
//! replacements, after the backoff the slot's crash streak calls for, and gives up (the pool
//! fails) when the restart history reaches the restart intensity limit, as Erlang/OTP supervisors
//! and systemd's start limits do.
//!
//! The `RestartPolicy` (the backoff and the limit, as the builder set them), the crash streaks and
//! the history are plain data over instants the supervisor passes in, so that the backoff and the
//! limit are tested without processes or clocks.
//!
//! Recycling is each worker's own business (`recycle.rs`): the pool sees a recycled worker as
//! the same worker, never as a restart. A rolling replacement (`roll.rs`) puts a new worker in
//! each slot and moves the old one to `retiring`, where it drains; the supervisor forgets it
//! once all its processes have ended and every request they took is settled (the end of each
//! channel read, not just the exit seen: the last answers may still wait in the channel). A
//! crashed worker goes to `retiring` too, so that its replaced processes, if it was recycled,
//! finish their requests. The supervisor does not restart a slot a roll filled meanwhile.
//! Every worker of the pool counts into the pool's `Counters`.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::task::Waker;
use std::thread;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};

use super::builder::WorkerBuilder;
use super::reply::{Dispatch, Dispatched, Reply, Wait};
use super::restart::{CrashStreak, RestartHistory, RestartPolicy};
use super::stats::{Counters, PoolStats};
use super::worker::{RunOptions, Worker};
use crate::error::{RunError, ShutdownError, StartError, WorkerCrashError};
use crate::sync::lock;
use crate::IpcValue;

/// Configures and starts a [`WorkerPool`]. Made by [`WorkerPool::builder`] or
/// [`WorkerPool::from_builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use bincrew::WorkerPool;
///
/// let pool = WorkerPool::<Vec<u8>, u64>::builder("hash")
///     .size(4)
///     .max_restarts(5, Duration::from_secs(60))
///     .backoff(Duration::from_millis(50), Duration::from_secs(2))
///     .configure(|worker| worker.binary("hasher").memory_limit(256 << 20))
///     .start_blocking()?;
/// # Ok::<(), bincrew::StartError>(())
/// ```
#[must_use = "a builder does nothing until started"]
pub struct PoolBuilder<I, O> {
    worker: WorkerBuilder<I, O>,
    size: usize,
    policy: RestartPolicy,
}

impl<I: IpcValue, O: IpcValue> PoolBuilder<I, O> {
    /// How many workers (2 by default; at least 1).
    pub fn size(mut self, workers: usize) -> Self {
        self.size = workers.max(1);
        self
    }

    /// The restart intensity limit: at most `restarts` restarts within `window` (5 in 60 s by
    /// default). One more and the pool fails: its requests fail with
    /// [`RunError::PoolFailed`] instead of the pool crash-looping.
    pub fn max_restarts(mut self, restarts: usize, window: Duration) -> Self {
        self.policy.max_restarts = restarts;
        self.policy.window = window;
        self
    }

    /// The backoff before restarting a crashed worker: `min` after a first crash, doubling with
    /// each crash of a replacement that crashed within the restart window, up to `max` (50 ms to
    /// 5 s by default).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.policy.backoff_min = min;
        self.policy.backoff_max = max.max(min);
        self
    }

    /// Changes the settings of the pool's workers.
    pub fn configure(
        mut self,
        configure: impl FnOnce(WorkerBuilder<I, O>) -> WorkerBuilder<I, O>,
    ) -> Self {
        self.worker = configure(self.worker);
        self
    }

    /// Starts every worker, on a thread of its own.
    ///
    /// # Errors
    ///
    /// The first [`StartError`]; workers already started are shut down.
    pub async fn start(self) -> Result<WorkerPool<I, O>, StartError> {
        crate::sync::on_thread("bincrew-start", move || self.start_blocking()).await
    }

    /// Same as [`start`](Self::start), blocking the calling thread.
    ///
    /// # Errors
    ///
    /// Same as [`start`](Self::start).
    pub fn start_blocking(self) -> Result<WorkerPool<I, O>, StartError> {
        let name = self.worker.name().to_owned();
        let counters = Arc::new(Counters::default());
        let builder = self.worker.count_into(counters.clone());
        let mut workers = Vec::with_capacity(self.size);
        for _ in 0..self.size {
            // On error the workers started so far are dropped: killed and reaped.
            workers.push(Arc::new(builder.clone().start_blocking()?));
        }
        let inner = Arc::new(PoolInner {
            name,
            builder: Mutex::new(builder),
            counters,
            rolls: AtomicU64::new(0),
            rolled: AtomicU64::new(0),
            rolling: Mutex::new(()),
            policy: self.policy,
            state: Mutex::new(PoolState {
                slots: workers
                    .into_iter()
                    .map(|worker| PoolSlot {
                        worker: Some(worker),
                        crashes: CrashStreak::new(Instant::now()),
                    })
                    .collect(),
                restarts: RestartHistory::default(),
                last_crash: None,
                failed: None,
                shutting_down: false,
                wakers: Vec::new(),
                retiring: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        // Not under the state lock: the hook runs at once for a worker that already crashed.
        let workers: Vec<_> = lock(&inner.state)
            .slots
            .iter()
            .filter_map(|s| s.worker.clone())
            .collect();
        for worker in &workers {
            inner.watch(worker);
        }
        let supervised = inner.clone();
        let supervisor = thread::Builder::new()
            .name(format!("bincrew-pool-{}", inner.name))
            .spawn(move || supervised.supervise())
            .map_err(|source| StartError::Thread {
                worker: inner.name.clone(),
                source,
            })?;
        Ok(WorkerPool {
            inner,
            supervisor: Some(supervisor),
        })
    }
}

/// `N` workers of one kind: each request goes to the least-loaded one, and a crashed worker is
/// replaced after a backoff, within a restart intensity limit.
///
/// Requests in flight on a worker that crashes fail with its crash report, unless they were sent
/// with [`run_retryable`](Self::run_retryable): those run again on another worker. A request
/// made while no worker is up waits for a replacement. When the restart limit is reached the
/// pool fails: every request fails with [`RunError::PoolFailed`].
///
/// Workers are configured with [`PoolBuilder::configure`]: limits and recycling apply to each
/// worker on its own (a recycled worker is not a restart). [`roll`](Self::roll) replaces every
/// worker without failing a request, and [`stats`](Self::stats) returns the pool's counters.
///
/// ```no_run
/// use std::time::Duration;
/// use bincrew::{RunOptions, WorkerPool};
///
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = WorkerPool::<String, usize>::builder("words").size(4).start_blocking()?;
///
/// // Many in flight, spread over the workers; a crash fails only that worker's requests.
/// let replies: Vec<_> = (0..100).map(|i| pool.run(format!("request {i}"))).collect();
/// for reply in replies {
///     let _ = reply.wait();
/// }
///
/// // Safe to run twice: retried on another worker if its worker crashes.
/// let n = pool
///     .run_retryable("idempotent".to_owned(), RunOptions::new().timeout(Duration::from_secs(5)))
///     .wait()?;
///
/// let stats = pool.stats();
/// println!("{} requests, {} crashes, {} restarts", stats.requests, stats.crashes, stats.restarts);
/// pool.shutdown_blocking()?;
/// # Ok(()) }
/// ```
pub struct WorkerPool<I, O> {
    inner: Arc<PoolInner<I, O>>,
    supervisor: Option<thread::JoinHandle<()>>,
}

impl<I, O> fmt::Debug for WorkerPool<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.inner.state);
        f.debug_struct("WorkerPool")
            .field("name", &self.inner.name)
            .field("workers", &state.slots.len())
            .field("restarts", &state.restarts.total)
            .field("failed", &state.failed.is_some())
            .finish_non_exhaustive()
    }
}

struct PoolInner<I, O> {
    name: String,
    /// How workers start; a rolling replacement may change it.
    builder: Mutex<WorkerBuilder<I, O>>,
    /// What every worker of the pool counts into.
    counters: Arc<Counters>,
    /// Rolling replacements completed, and workers they replaced.
    rolls: AtomicU64,
    rolled: AtomicU64,
    /// Held for the length of a rolling replacement: one at a time.
    rolling: Mutex<()>,
    policy: RestartPolicy,
    state: Mutex<PoolState<I, O>>,
    /// Signalled when a worker exits, a replacement is up, the pool fails or shuts down.
    changed: Condvar,
}

struct PoolState<I, O> {
    slots: Vec<PoolSlot<I, O>>,
    restarts: RestartHistory,
    last_crash: Option<Arc<WorkerCrashError>>,
    failed: Option<String>,
    shutting_down: bool,
    /// Replies waiting for a worker to be up.
    wakers: Vec<Waker>,
    /// Workers a rolling replacement took out of their slots, and crashed workers taken out
    /// of theirs, until their processes have drained and every request they took is settled.
    retiring: Vec<Arc<Worker<I, O>>>,
}

struct PoolSlot<I, O> {
    /// `None` from the slot's worker's crash until its replacement is up.
    worker: Option<Arc<Worker<I, O>>>,
    crashes: CrashStreak,
}

impl<I: IpcValue, O: IpcValue> WorkerPool<I, O> {
    /// A pool of workers `name` started from this executable (self-spawn), configured like a
    /// [`Worker`] with [`PoolBuilder::configure`].
    pub fn builder(name: impl Into<String>) -> PoolBuilder<I, O> {
        Self::from_builder(Worker::builder(name))
    }

    /// A pool of workers started as `worker` describes.
    pub fn from_builder(worker: WorkerBuilder<I, O>) -> PoolBuilder<I, O> {
        PoolBuilder {
            worker,
            size: 2,
            policy: RestartPolicy::default(),
        }
    }

    /// Sends a request to the least-loaded worker; see [`Worker::run`].
    pub fn run(&self, request: I) -> Reply<O> {
        self.run_with(request, RunOptions::default())
    }

    /// Same as [`run`](Self::run), with options.
    pub fn run_with(&self, request: I, options: RunOptions) -> Reply<O> {
        Reply::dispatched(Box::new(PoolDispatch {
            pool: self.inner.clone(),
            request: Some(request),
            copy: None,
            options,
            attempts: 0,
        }))
    }

    /// Same as [`run_with`](Self::run_with), and if the worker crashes before answering, the
    /// request runs again on another worker (up to the pool's size plus one attempts). Only for
    /// requests whose handler is safe to run twice.
    ///
    /// A request whose worker a limit ended (its memory or CPU limit, see
    /// [`WorkerCrashError::limit`]) is not run again: a decompression bomb must not kill worker
    /// after worker. That holds for every request in flight on that worker, since a memory
    /// limit cannot tell which one used the memory.
    pub fn run_retryable(&self, request: I, options: RunOptions) -> Reply<O>
    where
        I: Clone,
    {
        Reply::dispatched(Box::new(PoolDispatch {
            pool: self.inner.clone(),
            request: Some(request),
            copy: Some(I::clone),
            options,
            attempts: 0,
        }))
    }

    /// Same as [`run`](Self::run), blocking the calling thread until the response comes.
    ///
    /// # Errors
    ///
    /// Same as the future of [`run`](Self::run).
    pub fn run_blocking(&self, request: I) -> Result<O, RunError> {
        self.run(request).wait()
    }

    /// Shuts every worker down gracefully (see [`Worker::shutdown`]) and stops restarting them.
    /// Workers a roll retired, and crashed workers whose replaced processes still drain, are
    /// drained too.
    ///
    /// # Errors
    ///
    /// The first worker's [`ShutdownError`], after every worker was shut down. A crash the pool
    /// had already taken the worker out of its slot for is not one.
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        let inner = self.inner.clone();
        crate::sync::on_thread("bincrew-shutdown", move || inner.shutdown()).await
    }

    /// Same as [`shutdown`](Self::shutdown), blocking the calling thread.
    ///
    /// # Errors
    ///
    /// Same as [`shutdown`](Self::shutdown).
    pub fn shutdown_blocking(&self) -> Result<(), ShutdownError> {
        self.inner.shutdown()
    }

    /// The process ids of the workers that are up.
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.inner.state)
            .slots
            .iter()
            .filter_map(|s| s.worker.as_ref().filter(|w| w.is_running()).map(|w| w.id()))
            .collect()
    }

    /// How many times a worker was restarted.
    pub fn restart_count(&self) -> usize {
        lock(&self.inner.state).restarts.total
    }

    /// The pool's counters, for a metrics exporter: requests, crashes, limit kills, restarts,
    /// recycles, rolls, and the workers up now.
    pub fn stats(&self) -> PoolStats {
        let (restarts, workers) = {
            let state = lock(&self.inner.state);
            let workers = state
                .slots
                .iter()
                .filter(|s| s.worker.as_ref().is_some_and(|w| w.is_running()))
                .count();
            (state.restarts.total as u64, workers)
        };
        let worker = self.inner.counters.worker();
        PoolStats {
            requests: worker.requests,
            crashes: worker.crashes,
            limit_kills: worker.limit_kills,
            restarts,
            recycles: worker.recycles,
            recycle_failures: worker.recycle_failures,
            rolls: self.inner.rolls.load(Ordering::Relaxed),
            rolled: self.inner.rolled.load(Ordering::Relaxed),
            workers,
        }
    }

    /// Why the pool failed, once it did.
    pub fn failure(&self) -> Option<RunError> {
        let state = lock(&self.inner.state);
        state
            .failed
            .as_ref()
            .map(|reason| self.inner.failed(reason, state.last_crash.clone()))
    }
}

impl<I, O> Drop for WorkerPool<I, O> {
    fn drop(&mut self) {
        let (workers, wakers): (Vec<_>, _) = {
            let mut state = lock(&self.inner.state);
            state.shutting_down = true;
            let mut workers: Vec<_> = state
                .slots
                .iter_mut()
                .filter_map(|s| s.worker.take())
                .collect();
            workers.append(&mut state.retiring);
            (workers, std::mem::take(&mut state.wakers))
        };
        // Replies waiting for a worker end with `ShutDown`, blocking or not.
        self.inner.changed.notify_all();
        wakers.into_iter().for_each(Waker::wake);
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
        // Killed and reaped as they drop.
        drop(workers);
    }
}

impl<I, O> PoolInner<I, O> {
    fn failed(&self, reason: &str, last_crash: Option<Arc<WorkerCrashError>>) -> RunError {
        RunError::PoolFailed {
            pool: self.name.clone(),
            reason: reason.to_owned(),
            last_crash,
        }
    }
}

impl<I: IpcValue, O: IpcValue> PoolInner<I, O> {
    /// Asks `worker`'s reader threads to wake the supervisor when one of its processes exits.
    fn watch(self: &Arc<Self>, worker: &Worker<I, O>) {
        let pool: Weak<Self> = Arc::downgrade(self);
        worker.on_exit(Arc::new(move || {
            if let Some(pool) = pool.upgrade() {
                // Taking the lock orders this after the supervisor's check.
                drop(lock(&pool.state));
                pool.changed.notify_all();
            }
        }));
    }

    /// The builder workers start from now.
    fn builder(&self) -> WorkerBuilder<I, O> {
        lock(&self.builder).clone()
    }

    /// The least-loaded worker that is up. Lock order: the pool's state, then each worker's.
    fn pick(state: &PoolState<I, O>) -> Option<Arc<Worker<I, O>>> {
        state
            .slots
            .iter()
            .filter_map(|s| s.worker.as_ref())
            .filter(|w| w.is_running())
            .min_by_key(|w| w.in_flight())
            .cloned()
    }

    /// The supervisor thread: notices exits, restarts after a backoff, fails the pool at the
    /// limit.
    fn supervise(self: Arc<Self>) {
        let mut state = lock(&self.state);
        // The restart last announced, so that a backoff is reported once.
        let mut announced = None;
        loop {
            if state.shutting_down || state.failed.is_some() {
                return;
            }
            let now = Instant::now();
            let policy = &self.policy;
            let mut last_crash = None;
            let mut crashed_workers = Vec::new();
            for slot in &mut state.slots {
                let crashed = slot.worker.as_ref().and_then(|w| w.crash_error());
                if let Some(report) = crashed {
                    // Its replaced processes, if it was recycled, still answer what they took:
                    // it drains with the retired workers rather than being dropped (which would
                    // kill them and fail their requests).
                    crashed_workers.extend(slot.worker.take());
                    slot.crashes.crashed(policy, now);
                    last_crash = Some(report);
                }
            }
            if last_crash.is_some() {
                state.last_crash = last_crash;
            }
            state.retiring.append(&mut crashed_workers);
            // Retired workers go once every process of theirs has ended and every request they
            // took is settled (an exit alone is not enough: see `Worker::is_drained`).
            state.retiring.retain(|w| !w.is_drained());
            let due = state
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.worker.is_none())
                .filter_map(|(i, s)| Some((i, s.crashes.restart_due(policy)?)))
                .min_by_key(|(_, at)| *at);
            let Some((index, at)) = due else {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            if at > now {
                if announced != Some((index, at)) {
                    announced = Some((index, at));
                    tracing::info!(pool = %self.name, slot = index, backoff_ms = (at - now).as_millis() as u64, "a crashed worker is restarted after a backoff");
                }
                state = self
                    .changed
                    .wait_timeout(state, at - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            if state.restarts.exceeded(policy, now) {
                let last = state
                    .last_crash
                    .as_ref()
                    .map_or_else(|| "unknown".to_owned(), |r| r.to_string());
                let reason = format!(
                    "its workers needed more than {} restarts within {:?}; the last crash: {last}",
                    policy.max_restarts, policy.window
                );
                tracing::error!(pool = %self.name, "{reason}");
                state.failed = Some(reason);
                let wakers = std::mem::take(&mut state.wakers);
                drop(state);
                self.changed.notify_all();
                wakers.into_iter().for_each(Waker::wake);
                return;
            }
            state.restarts.record_restart(policy, now);
            drop(state);
            tracing::info!(pool = %self.name, slot = index, "restarting a crashed worker");
            let started = self.builder().start_blocking().map(Arc::new);
            if let Ok(worker) = &started {
                // Not under the state lock: the hook runs at once for a worker that crashed.
                self.watch(worker);
            }
            state = lock(&self.state);
            match started {
                // A rolling replacement filled the slot meanwhile: this one is not needed.
                Ok(_) if state.slots[index].worker.is_some() => {}
                Ok(worker) if !state.shutting_down => {
                    let slot = &mut state.slots[index];
                    slot.worker = Some(worker);
                    slot.crashes.restarted(Instant::now());
                    let wakers = std::mem::take(&mut state.wakers);
                    self.changed.notify_all();
                    wakers.into_iter().for_each(Waker::wake);
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(pool = %self.name, error = %e, "restarting a worker failed");
                    state.slots[index].crashes.start_failed(Instant::now());
                }
            }
        }
    }

    fn shutdown(&self) -> Result<(), ShutdownError> {
        // Each worker with the crash it is known for, if it is out of its slot: a retired or
        // crashed worker whose current process crashed before the shutdown (the pool already
        // counted that crash and restarted the slot) still has its replaced processes drained,
        // and that crash is not the shutdown's error.
        let (workers, wakers): (Vec<_>, _) = {
            let mut state = lock(&self.state);
            state.shutting_down = true;
            let workers = state
                .slots
                .iter()
                .filter_map(|s| s.worker.clone().map(|w| (w, None)))
                .chain(state.retiring.iter().map(|w| (w.clone(), w.crash_error())))
                .collect();
            (workers, std::mem::take(&mut state.wakers))
        };
        // Replies waiting for a worker end with `ShutDown`, blocking or not.
        self.changed.notify_all();
        wakers.into_iter().for_each(Waker::wake);
        // Ask every worker first, so they drain at the same time, then wait for each.
        let begun: Vec<_> = workers.iter().map(|(w, _)| w.begin_shutdown()).collect();
        let mut first_error = None;
        for ((worker, known), begun) in workers.iter().zip(begun) {
            let known_crash = |e: &ShutdownError| match (e, known) {
                (ShutdownError::Crashed(report), Some(known)) => Arc::ptr_eq(report, known),
                _ => false,
            };
            let result = match begun {
                Err(e) if known_crash(&e) => worker.wait_shutdown(),
                begun => begun.and_then(|()| worker.wait_shutdown()),
            };
            match result {
                Err(e) if known_crash(&e) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
                Ok(()) => {}
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Sends a pool request to a worker, and again after a crash when retryable.
struct PoolDispatch<I, O> {
    pool: Arc<PoolInner<I, O>>,
    request: Option<I>,
    /// Set for retryable requests: how to copy the request for each attempt.
    copy: Option<fn(&I) -> I>,
    options: RunOptions,
    attempts: usize,
}

impl<I: IpcValue, O: IpcValue> Dispatch<O> for PoolDispatch<I, O> {
    fn dispatch(&mut self, wait: Wait<'_>) -> Dispatched<O> {
        let mut state = lock(&self.pool.state);
        loop {
            if let Some(reason) = &state.failed {
                return Dispatched::Failed(self.pool.failed(reason, state.last_crash.clone()));
            }
            if state.shutting_down {
                return Dispatched::Failed(RunError::ShutDown {
                    worker: self.pool.name.clone(),
                });
            }
            if let Some(worker) = PoolInner::pick(&state) {
                drop(state);
                let request = match (self.copy, &self.request) {
                    (Some(copy), Some(request)) => copy(request),
                    _ => match self.request.take() {
                        Some(request) => request,
                        None => {
                            return Dispatched::Failed(RunError::ShutDown {
                                worker: self.pool.name.clone(),
                            })
                        }
                    },
                };
                match worker.dispatch(request, &self.options) {
                    Ok(reply) => {
                        self.attempts += 1;
                        return Dispatched::Sent(reply);
                    }
                    // Retired by a rolling replacement since it was picked: pick again.
                    Err(request) => {
                        if self.copy.is_none() {
                            self.request = Some(request);
                        }
                        state = lock(&self.pool.state);
                        continue;
                    }
                }
            }
            match wait {
                Wait::No => return Dispatched::Wait,
                Wait::Waker(waker) => {
                    if !state.wakers.iter().any(|w| w.will_wake(waker)) {
                        state.wakers.push(waker.clone());
                    }
                    return Dispatched::Wait;
                }
                Wait::Block => {
                    state = self
                        .pool
                        .changed
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    fn retry_after(&self, error: &RunError) -> bool {
        let size = lock(&self.pool.state).slots.len();
        self.copy.is_some()
            && matches!(error, RunError::Crashed(report) if report.limit.is_none())
            && self.attempts <= size
    }
}

#[path = "roll.rs"]
mod roll;

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_builder_keeps_the_backoff_cap_at_least_its_start() {
        let builder = WorkerPool::<(), ()>::builder("w").backoff(SECOND, 10 * MS);
        assert_eq!(builder.policy.backoff(1), SECOND);
        assert_eq!(builder.policy.backoff(5), SECOND);
        let builder = builder.max_restarts(3, 10 * SECOND);
        assert_eq!(
            (builder.policy.max_restarts, builder.policy.window),
            (3, 10 * SECOND)
        );
    }
}
