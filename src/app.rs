//! The app side: [`Worker`] and what it shares with its reader thread and its replies.
//!
//! Ownership: a `Worker` and every [`Reply`] share one [`Inner`]: the process, the requests
//! queued for sending (an [`Outbox`]), the sending end of the channel, and the table of requests
//! in flight. The reader thread alone owns the receiving end; it completes replies and, when the
//! channel closes, writes the crash report and fails what is still pending. Requests are sent by
//! the threads that wait for replies (see `batch.rs`), so no thread sits between a caller and
//! the channel. The process is reaped by whoever sees the exit first (the reader, `shutdown` or
//! `Drop`); `duct` makes waiting from several threads safe.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcReceiver, IpcSender, OpaqueIpcSender};
use ipc_channel::IpcError;

use crate::batch::Outbox;
use crate::build::BuildInfo;
use crate::builder::WorkerBuilder;
use crate::error::{RunError, ShutdownError, StartError, WorkerCrashError};
use crate::process::{lock, Connected, Process};
use crate::protocol::{Answer, Item, ItemsRef, ToApp};
use crate::reply::{Link, Reply, Slot};
use crate::IpcValue;

/// How long the reader waits for a worker that closed its channel to exit by itself.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How long the reader thread leaves the channel to threads in `Reply::wait` after the last one
/// is done, before reading it again itself: long enough for a loop of blocking calls to keep
/// reading its own answers, short enough to notice an idle worker's crash at once.
const IDLE_HANDOVER: Duration = Duration::from_millis(2);

/// Options for one request, for [`Worker::run_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOptions {
    /// Fail the request with [`RunError::TimedOut`] if it is not answered within this time.
    pub timeout: Option<Duration>,
}

impl RunOptions {
    /// No timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Settings of a started worker, from its builder.
pub(crate) struct Settings {
    pub(crate) shutdown_grace: Duration,
    pub(crate) max_batch: usize,
    pub(crate) kill_after_timeout: Option<Duration>,
}

/// A running worker process that answers requests of type `I` with responses of type `O`.
///
/// `Worker` is `Send + Sync`: share it (for example in an `Arc`) and call [`run`](Self::run) from
/// any number of tasks or threads; the worker runs several requests at once.
///
/// Dropping a `Worker` without [`shutdown`](Self::shutdown) kills the process and reaps it; the
/// requests still in flight fail with [`RunError::ShutDown`].
pub struct Worker<I, O> {
    inner: Arc<Inner<I, O>>,
    build: BuildInfo,
}

impl<I, O> fmt::Debug for Worker<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.inner.process.name)
            .field("pid", &self.inner.process.pid())
            .field("build", &self.build)
            .finish_non_exhaustive()
    }
}

/// Everything about one worker that its `Worker`, its replies, its reader thread and the timer
/// share.
pub(crate) struct Inner<I, O> {
    process: Process,
    /// The sending end of the app-to-worker channel (`Vec<Item<I>>` messages).
    sender: OpaqueIpcSender,
    outbox: Outbox<Item<I>>,
    state: Mutex<State<O>>,
    /// Who reads the worker's channel; see [`Reading`].
    reading: Mutex<Reading<O>>,
    /// Wakes the threads in `Reply::wait`: the channel is free to read, a request completed,
    /// or the channel ended.
    turn: Condvar,
    /// Wakes the reader thread: a future waits, or the channel ended.
    reader_turn: Condvar,
    next_id: AtomicU64,
    settings: Settings,
}

/// The receiving end of the worker's channel is read by one thread at a time: a thread blocked
/// in [`Reply::wait`] reads it itself (so its answer reaches it without a hand-off between
/// threads), and otherwise the worker's reader thread does (for futures, and to notice a crash
/// while nothing waits).
struct Reading<O> {
    /// The receiving end, when no thread is reading it.
    receiver: Option<IpcReceiver<ToApp<O>>>,
    /// Threads in `Reply::wait` for this worker.
    waiters: usize,
    /// A future started waiting: the reader thread should read now.
    futures: bool,
    /// The channel has ended and the worker's fate is settled.
    ended: bool,
    /// When the last thread left `Reply::wait`.
    last_wait: Instant,
}

struct State<O> {
    phase: Phase,
    /// Requests in flight.
    slots: HashMap<u64, Arc<Slot<O>>>,
    /// Requests that timed out and were cancelled, which the worker has not answered yet.
    abandoned: HashSet<u64>,
    /// Why the app killed the worker, when it did.
    kill_reason: Option<String>,
    /// Called once the worker's channel has ended and its fate is known (pools restart it).
    exit_hook: Option<Box<dyn FnOnce() + Send>>,
}

enum Phase {
    Running,
    ShuttingDown,
    Crashed(Arc<WorkerCrashError>),
    /// The `Worker` was dropped.
    Closed,
}

impl<I: IpcValue, O: IpcValue> Worker<I, O> {
    /// Starts this executable again as worker `name` (self-spawn) with the default settings.
    ///
    /// The executable's `main` must call [`init!`](crate::init) and then serve `name` with
    /// [`run_worker`](crate::run_worker) or [`Workers`](crate::Workers) before doing anything
    /// else. On Linux the worker is started from `/proc/self/exe`, so it is the very build that
    /// is running even if the file on disk was replaced since.
    ///
    /// # Errors
    ///
    /// Every way the start can fail is a [`StartError`]; no process is left behind.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let worker = bincrew::Worker::<String, usize>::start("count").await?;
    /// let n = worker.run("some text".to_owned()).await?;
    /// worker.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(name: &str) -> Result<Self, StartError> {
        Self::builder(name).start().await
    }

    /// Same as [`start`](Self::start), blocking the calling thread.
    ///
    /// # Errors
    ///
    /// Same as [`start`](Self::start).
    pub fn start_blocking(name: &str) -> Result<Self, StartError> {
        Self::builder(name).start_blocking()
    }

    /// A builder for worker `name`, to set a dedicated binary, arguments, environment,
    /// [`Compat`](crate::Compat) policy or timeouts.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), bincrew::StartError> {
    /// use std::time::Duration;
    /// let worker = bincrew::Worker::<Vec<u8>, u64>::builder("hash")
    ///     .binary("hasher")
    ///     .compat(bincrew::Compat::SameVersion)
    ///     .connect_timeout(Duration::from_secs(5))
    ///     .start_blocking()?;
    /// # Ok(()) }
    /// ```
    pub fn builder(name: impl Into<String>) -> WorkerBuilder<I, O> {
        WorkerBuilder::new(name.into())
    }

    /// Wraps a worker that completed the handshake, and starts its reader thread.
    pub(crate) fn connected(
        name: String,
        connected: Connected,
        settings: Settings,
    ) -> Result<Self, StartError> {
        let receiver: IpcReceiver<ToApp<O>> = connected.receiver.to();
        let inner = Arc::new(Inner {
            reading: Mutex::new(Reading {
                receiver: Some(receiver),
                waiters: 0,
                futures: false,
                ended: false,
                last_wait: Instant::now(),
            }),
            turn: Condvar::new(),
            reader_turn: Condvar::new(),
            process: connected.process,
            sender: connected.requests,
            outbox: Outbox::new(settings.max_batch),
            state: Mutex::new(State {
                phase: Phase::Running,
                slots: HashMap::new(),
                abandoned: HashSet::new(),
                kill_reason: None,
                exit_hook: None,
            }),
            next_id: AtomicU64::new(0),
            settings,
        });
        let reader_inner = inner.clone();
        let reader = thread::Builder::new()
            .name(format!("bincrew-reader-{name}"))
            .spawn(move || reader_inner.read());
        if let Err(source) = reader {
            inner.process.kill_and_reap();
            return Err(StartError::Ipc {
                worker: name,
                source,
            });
        }
        Ok(Worker {
            inner,
            build: connected.build,
        })
    }

    /// Queues a request and returns its reply: a future of the response, or
    /// [`Reply::wait`] to block for it.
    ///
    /// Requests go out when their reply is first polled or waited on, together with everything
    /// queued by then (and at once when a full batch is queued), so call `run` many times before
    /// awaiting to have many requests in flight. Responses come back in the order the worker
    /// finishes them. Dropping a reply cancels its request: it is not sent if it was still
    /// queued, and otherwise the worker is told to give it up (see [`RequestArgs::is_cancelled`](crate::RequestArgs::is_cancelled)).
    ///
    /// The reply fails with [`RunError::Crashed`] if the worker dies before answering.
    pub fn run(&self, request: I) -> Reply<O> {
        self.run_with(request, RunOptions::default())
    }

    /// Same as [`run`](Self::run), with a timeout.
    pub fn run_with(&self, request: I, options: RunOptions) -> Reply<O> {
        let inner = &self.inner;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::new());
        {
            let mut state = lock(&inner.state);
            match &state.phase {
                Phase::Running => {
                    state.slots.insert(id, slot.clone());
                }
                Phase::Crashed(report) => {
                    return Reply::done(Err(RunError::Crashed(report.clone())))
                }
                Phase::ShuttingDown | Phase::Closed => return Reply::done(Err(inner.shut_down())),
            }
        }
        if inner.outbox.push(Item::Request { id, request }) {
            inner.flush();
        }
        if let Some(timeout) = options.timeout {
            let weak: Weak<Inner<I, O>> = Arc::downgrade(inner);
            crate::timer::schedule(
                Instant::now() + timeout,
                Box::new(move || {
                    if let Some(inner) = weak.upgrade() {
                        inner.expire(id, timeout);
                    }
                }),
            );
        }
        Reply::pending(slot, id, inner.clone())
    }

    /// Same as [`run`](Self::run), blocking the calling thread until the response comes.
    ///
    /// # Errors
    ///
    /// Same as the future of [`run`](Self::run).
    pub fn run_blocking(&self, request: I) -> Result<O, RunError> {
        self.run(request).wait()
    }

    /// Calls `hook` once the worker has exited and its requests were failed (at once if that
    /// already happened).
    pub(crate) fn on_exit(&self, hook: Box<dyn FnOnce() + Send>) {
        let mut state = lock(&self.inner.state);
        if matches!(state.phase, Phase::Crashed(_)) {
            drop(state);
            hook();
        } else {
            state.exit_hook = Some(hook);
        }
    }

    pub(crate) fn begin_shutdown(&self) -> Result<(), ShutdownError> {
        self.inner.begin_shutdown()
    }

    pub(crate) fn wait_shutdown(&self) -> Result<(), ShutdownError> {
        self.inner.wait_shutdown()
    }

    /// Shuts the worker down gracefully: it takes no new requests, answers those in flight and
    /// exits with code 0. Waits for the exit, and kills the worker if it takes longer than the
    /// grace period. Calling it again waits for the same exit.
    ///
    /// # Errors
    ///
    /// [`ShutdownError::Crashed`] if the worker died while draining (or had crashed before),
    /// [`ShutdownError::Killed`] if it did not exit in time.
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        self.inner.begin_shutdown()?;
        let inner = self.inner.clone();
        blocking::unblock(move || inner.wait_shutdown()).await
    }

    /// Same as [`shutdown`](Self::shutdown), blocking the calling thread.
    ///
    /// # Errors
    ///
    /// Same as [`shutdown`](Self::shutdown).
    pub fn shutdown_blocking(&self) -> Result<(), ShutdownError> {
        self.inner.begin_shutdown()?;
        self.inner.wait_shutdown()
    }

    /// The crash report, once the worker has died unexpectedly.
    pub fn crash_error(&self) -> Option<Arc<WorkerCrashError>> {
        match &lock(&self.inner.state).phase {
            Phase::Crashed(report) => Some(report.clone()),
            _ => None,
        }
    }

    /// Whether the worker takes requests: not crashed, not shutting down.
    pub fn is_running(&self) -> bool {
        matches!(lock(&self.inner.state).phase, Phase::Running)
    }

    /// How many requests are in flight (sent or queued, not yet answered).
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.state).slots.len()
    }

    /// Kills the worker process now. Requests in flight fail with [`RunError::Crashed`], whose
    /// report says the app killed it and why.
    pub fn kill(&self, reason: &str) {
        self.inner.kill(reason.to_owned());
    }

    /// The worker's process id.
    pub fn id(&self) -> u32 {
        self.inner.process.pid()
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.inner.process.name
    }

    /// The worker binary's identity, as it reported it in the handshake.
    pub fn build_info(&self) -> &BuildInfo {
        &self.build
    }
}

impl<I, O> Drop for Worker<I, O> {
    fn drop(&mut self) {
        let leftover = {
            let mut state = lock(&self.inner.state);
            if matches!(state.phase, Phase::Running | Phase::ShuttingDown) {
                state.phase = Phase::Closed;
            }
            std::mem::take(&mut state.slots)
        };
        for slot in leftover.into_values() {
            slot.complete(Err(self.inner.shut_down()));
        }
        self.inner.wake_waiters();
        // Kill and reap: no zombie is left, whatever state the worker is in.
        self.inner.process.kill_and_reap();
    }
}

impl<I, O> Inner<I, O> {
    /// Wakes the threads in `Reply::wait`, after requests were completed outside a read.
    fn wake_waiters(&self) {
        let waiting = lock(&self.reading).waiters > 0;
        if waiting {
            self.turn.notify_all();
        }
    }

    fn shut_down(&self) -> RunError {
        RunError::ShutDown {
            worker: self.process.name.clone(),
        }
    }

    /// Kills the process; the reader thread then reports the crash with `reason`.
    fn kill(&self, reason: String) {
        lock(&self.state).kill_reason.get_or_insert(reason);
        self.process.kill();
    }
}

impl<I: IpcValue, O: IpcValue> Link<O> for Inner<I, O> {
    fn flush(&self) {
        Inner::flush(self);
    }

    fn wait(&self, slot: &Slot<O>) -> Result<O, RunError> {
        Inner::wait(self, slot)
    }

    fn polled(&self) {
        let mut reading = lock(&self.reading);
        if !reading.futures {
            reading.futures = true;
            drop(reading);
            self.reader_turn.notify_all();
        }
    }

    fn abandon(&self, id: u64) {
        // Still queued: it is simply never sent.
        if self
            .outbox
            .take(|item| matches!(item, Item::Request { id: queued, .. } if *queued == id))
            .is_some()
        {
            lock(&self.state).slots.remove(&id);
            return;
        }
        let sent = lock(&self.state).slots.remove(&id).is_some();
        if sent {
            self.outbox.push(Item::Cancel(id));
            self.flush();
        }
    }
}

impl<I: IpcValue, O: IpcValue> Inner<I, O> {
    /// Sends what is queued; see `batch.rs`.
    fn flush(&self) {
        self.outbox.flush(|batch| {
            let sender: IpcSender<ItemsRef<'_, I>> = self.sender.clone().to();
            match sender.send(ItemsRef(batch)) {
                Ok(()) => {}
                Err(IpcError::SerializationError(e)) => {
                    // Nothing was sent; fail the batch's requests rather than guess which one.
                    let reason = e.to_string();
                    let mut state = lock(&self.state);
                    let slots: Vec<_> = batch
                        .iter()
                        .filter_map(|item| match item {
                            Item::Request { id, .. } => state.slots.remove(id),
                            _ => None,
                        })
                        .collect();
                    drop(state);
                    for slot in slots {
                        slot.complete(Err(RunError::Encode {
                            worker: self.process.name.clone(),
                            reason: reason.clone(),
                        }));
                    }
                    self.wake_waiters();
                }
                // The worker is gone: the reader thread fails the requests with the crash report.
                Err(e) => {
                    tracing::debug!(worker = %self.process.name, error = %e, "requests not sent")
                }
            }
        });
    }

    fn begin_shutdown(&self) -> Result<(), ShutdownError> {
        {
            let mut state = lock(&self.state);
            match &state.phase {
                Phase::Running => state.phase = Phase::ShuttingDown,
                Phase::Crashed(report) => return Err(ShutdownError::Crashed(report.clone())),
                Phase::ShuttingDown | Phase::Closed => return Ok(()),
            }
        }
        // After every request queued before it. A failed send means the worker is already gone;
        // waiting tells how it ended.
        self.outbox.push(Item::Shutdown);
        self.flush();
        Ok(())
    }

    fn wait_shutdown(&self) -> Result<(), ShutdownError> {
        let grace = self.settings.shutdown_grace;
        match self.process.wait_deadline(Instant::now() + grace) {
            Some(exit) if exit.success() => Ok(()),
            Some(exit) => {
                let report = match &lock(&self.state).phase {
                    Phase::Crashed(report) => Some(report.clone()),
                    _ => None,
                };
                Err(ShutdownError::Crashed(report.unwrap_or_else(|| {
                    Arc::new(self.process.crash_report(Some(exit), None))
                })))
            }
            None => {
                self.process.kill_and_reap();
                Err(ShutdownError::Killed {
                    worker: self.process.name.clone(),
                    grace,
                })
            }
        }
    }

    /// The timer's action when request `id` is not answered within `timeout`.
    fn expire(self: &Arc<Self>, id: u64, timeout: Duration) {
        let slot = {
            let mut state = lock(&self.state);
            let slot = state.slots.remove(&id);
            if slot.is_some() {
                state.abandoned.insert(id);
            }
            slot
        };
        let Some(slot) = slot else {
            return;
        };
        slot.complete(Err(RunError::TimedOut {
            worker: self.process.name.clone(),
            timeout,
        }));
        self.wake_waiters();
        self.outbox.push(Item::Cancel(id));
        self.flush();
        if let Some(grace) = self.settings.kill_after_timeout {
            let weak = Arc::downgrade(self);
            crate::timer::schedule(
                Instant::now() + grace,
                Box::new(move || {
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    let ignored = {
                        let state = lock(&inner.state);
                        matches!(state.phase, Phase::Running | Phase::ShuttingDown)
                            && state.abandoned.contains(&id)
                    };
                    if ignored {
                        inner.kill(format!(
                            "request {id} timed out after {timeout:?} and its handler did not give it up within {grace:?}"
                        ));
                    }
                }),
            );
        }
    }

    /// Reads one message and acts on it; `Err` when the channel ended, with why if it broke
    /// the protocol.
    fn read_once(&self, receiver: &IpcReceiver<ToApp<O>>) -> Result<(), Option<String>> {
        match crate::protocol::recv_guarded(receiver) {
            Ok(ToApp::Answers(answers)) => self.answer(answers),
            Ok(ToApp::Panicked { message, location }) => {
                self.process.record_panic(message, location)
            }
            Err(IpcError::Disconnected) => return Err(None),
            Err(IpcError::SerializationError(e)) => {
                return Err(Some(format!("it sent a message that does not decode: {e}")))
            }
            Err(IpcError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(Some(e.to_string()))
            }
            Err(IpcError::Io(e)) => return Err(Some(format!("reading its channel failed: {e}"))),
        }
        Ok(())
    }

    /// Reads with `receiver` (taken from `reading`) once and gives it back, waking the threads
    /// in `Reply::wait` other than the reader (`by_waiter`), whose requests may be answered or
    /// who may read next; settles the worker's fate if the channel ended.
    fn take_turn(&self, receiver: IpcReceiver<ToApp<O>>, by_waiter: bool) {
        match self.read_once(&receiver) {
            Ok(()) => {
                let others = {
                    let mut reading = lock(&self.reading);
                    reading.receiver = Some(receiver);
                    reading.waiters - usize::from(by_waiter)
                };
                if others > 0 {
                    self.turn.notify_all();
                }
            }
            Err(protocol_error) => {
                drop(receiver);
                self.finish(protocol_error);
                lock(&self.reading).ended = true;
                self.turn.notify_all();
                self.reader_turn.notify_all();
            }
        }
    }

    /// The reader thread: reads whenever no thread in `Reply::wait` does, until the channel
    /// ends. It is woken when a future waits; otherwise it looks again every
    /// [`IDLE_HANDOVER`] while blocking calls are about.
    fn read(self: Arc<Self>) {
        let mut reading = lock(&self.reading);
        loop {
            if reading.ended {
                return;
            }
            let free = reading.receiver.is_some() && reading.waiters == 0;
            let idle = reading.last_wait.elapsed() >= IDLE_HANDOVER;
            // With no blocking call waiting, requests still in flight belong to futures (or to
            // replies not yet polled): read for them now.
            let pending = free && !lock(&self.state).slots.is_empty();
            if free && (reading.futures || pending || idle) {
                if let Some(receiver) = reading.receiver.take() {
                    reading.futures = false;
                    drop(reading);
                    self.take_turn(receiver, false);
                    reading = lock(&self.reading);
                }
                continue;
            }
            let wait = if free {
                IDLE_HANDOVER.saturating_sub(reading.last_wait.elapsed())
            } else {
                IDLE_HANDOVER
            };
            reading = self
                .reader_turn
                .wait_timeout(reading, wait.max(Duration::from_micros(100)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// `Reply::wait`: reads the channel itself while no other thread does, until `slot` is
    /// answered.
    fn wait(&self, slot: &Slot<O>) -> Result<O, RunError> {
        let mut reading = lock(&self.reading);
        reading.waiters += 1;
        let result = loop {
            if let Some(result) = slot.take() {
                break result;
            }
            if reading.ended {
                // Every slot is settled when the channel ends; this one was taken meanwhile.
                break Err(self.shut_down());
            }
            if let Some(receiver) = reading.receiver.take() {
                drop(reading);
                self.take_turn(receiver, true);
                reading = lock(&self.reading);
                continue;
            }
            reading = self
                .turn
                .wait(reading)
                .unwrap_or_else(PoisonError::into_inner);
        };
        reading.waiters -= 1;
        reading.last_wait = Instant::now();
        let last = reading.waiters == 0;
        drop(reading);
        if last && !lock(&self.state).slots.is_empty() {
            // Requests of futures are still in flight: the reader thread takes over now.
            self.reader_turn.notify_all();
        }
        result
    }

    fn answer(&self, answers: Vec<Answer<O>>) {
        let mut done = Vec::with_capacity(answers.len());
        {
            let mut state = lock(&self.state);
            for answer in answers {
                let id = answer.id();
                state.abandoned.remove(&id);
                if let Some(slot) = state.slots.remove(&id) {
                    done.push((slot, answer));
                }
            }
        }
        for (slot, answer) in done {
            slot.complete(match answer {
                Answer::Done { response, .. } => Ok(response),
                Answer::EncodeFailed { reason, .. } => Err(RunError::Encode {
                    worker: self.process.name.clone(),
                    reason: format!("the worker cannot encode its response: {reason}"),
                }),
                // Only requests the app gave up on are cancelled: their slots are gone.
                Answer::Cancelled { .. } => Err(self.shut_down()),
            });
        }
    }

    /// Called by the reader thread when the worker's channel ends, cleanly or not.
    fn finish(&self, protocol_error: Option<String>) {
        self.settle(protocol_error);
        let hook = lock(&self.state).exit_hook.take();
        if let Some(hook) = hook {
            hook();
        }
    }

    fn settle(&self, protocol_error: Option<String>) {
        let shutting_down = match lock(&self.state).phase {
            Phase::Closed | Phase::Crashed(_) => return,
            Phase::ShuttingDown => true,
            Phase::Running => false,
        };
        if protocol_error.is_some() {
            self.process.kill();
        }
        let mut killed_by_app = protocol_error
            .map(|e| format!("it broke the protocol: {e}"))
            .or_else(|| lock(&self.state).kill_reason.clone());
        let exit = match self.process.wait_deadline(Instant::now() + EXIT_GRACE) {
            Some(exit) => Some(exit),
            None => {
                killed_by_app.get_or_insert_with(|| {
                    "it broke the protocol: it closed its channel but kept running".into()
                });
                self.process.kill();
                self.process.wait()
            }
        };
        if shutting_down && killed_by_app.is_none() && exit.is_some_and(|e| e.success()) {
            // A clean exit after a shutdown: requests sent after it fail as shut down.
            let leftover = std::mem::take(&mut lock(&self.state).slots);
            for slot in leftover.into_values() {
                slot.complete(Err(self.shut_down()));
            }
            return;
        }
        let report = Arc::new(self.process.crash_report(exit, killed_by_app));
        let leftover = {
            let mut state = lock(&self.state);
            if matches!(state.phase, Phase::Closed) {
                return;
            }
            state.phase = Phase::Crashed(report.clone());
            std::mem::take(&mut state.slots)
        };
        tracing::warn!(worker = %self.process.name, "{report}");
        for slot in leftover.into_values() {
            slot.complete(Err(RunError::Crashed(report.clone())));
        }
    }
}
