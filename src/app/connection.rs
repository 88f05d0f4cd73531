//! `Connection`: everything about one worker that its [`Worker`](super::Worker), its replies,
//! its reader thread, its writer threads and the timer share.
//!
//! Ownership:
//! - the requests in flight, the worker's phase and how it ended: `state`;
//! - what waits to be sent: one [`Lane`] per channel (requests, control), each with its own
//!   writer thread, started the first time the worker's socket is full;
//! - the receiving end of the worker's channel: whoever has the read turn (`read.rs`).
//!
//! Nothing here sends from a thread that cannot afford to wait: every send is a non-blocking
//! attempt (see `lane.rs`), so callers, executors and the timer never wait on a worker.
//!
//! Lock order (a lock may be taken while holding the ones before it, never the reverse):
//! `read.rs`'s turns → `state` → the timer's actions → a reply's slot. A lane's lock is taken
//! alone.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcSender, OpaqueIpcSender};

use super::lane::{Flushed, Lane, Sink};
use super::pending::PendingTable;
use super::read::{Inbox, ReadTurns};
use super::reply::{Link, Slot};
use super::timer::{self, TimerKey};
use crate::error::{RunError, WorkerCrashError};
use crate::process::Process;
use crate::sync::lock;
use crate::wire::codec;
use crate::wire::messages::{Answer, Control, Job, RequestBatch};
use crate::wire::region::Region;
use crate::wire::transport::{self, take_encode_failures, FramedRef, Sent, Socket};
use crate::IpcValue;

/// Settings of a started worker, from its builder.
pub(crate) struct Settings {
    pub(crate) shutdown_grace: Duration,
    pub(crate) max_batch: usize,
    pub(crate) kill_after_timeout: Option<Duration>,
    /// The most requests waiting to be sent before `run` fails with `Overloaded`.
    pub(crate) max_pending: Option<usize>,
    /// The largest message, or shared memory in one, accepted from the worker.
    pub(crate) max_message: usize,
    /// The worker's request and response types, by name (from its hello), for the errors of
    /// values the worker could not decode or encode.
    pub(crate) worker_types: (String, String),
}

pub(crate) struct Connection<I, O> {
    pub(super) process: Process,
    pub(super) requests: Lane<Job<I>>,
    pub(super) control: Lane<Control>,
    /// `IpcSender<FramedRef<[(u64, Job<I>)]>>`.
    pub(super) request_tx: OpaqueIpcSender,
    /// Its region, for large batches.
    pub(super) request_region: Region,
    /// `IpcSender<[(u64, Control)]>`.
    pub(super) control_tx: OpaqueIpcSender,
    pub(super) state: Mutex<WorkerState<O>>,
    pub(super) turns: ReadTurns<O>,
    pub(super) next_control: AtomicU64,
    pub(super) settings: Settings,
    /// Itself, for the threads and timers it starts.
    pub(super) this: Weak<Connection<I, O>>,
}

pub(super) struct WorkerState<O> {
    pub(super) phase: Phase,
    /// Requests in flight (queued or sent), by id; ids are handed out here.
    pub(super) pending: PendingTable<Pending<O>>,
    /// Requests that timed out and were cancelled, which the worker has not answered yet.
    pub(super) abandoned: HashSet<u64>,
    /// Why the app killed the worker, when it did.
    pub(super) kill_reason: Option<String>,
    /// Called once the worker's channel has ended and its fate is known (pools restart it).
    pub(super) exit_hook: Option<Box<dyn FnOnce() + Send>>,
    /// The end of the worker's channel was read and its fate settled: every request it took
    /// was answered or failed. Set before the exit hook runs.
    pub(super) settled: bool,
    /// The worker reported a panic: nothing it sends after that is trusted.
    pub(super) panicked: bool,
    /// When a shutdown's grace period ends.
    pub(super) shutdown_deadline: Option<Instant>,
}

/// One request in flight.
pub(super) struct Pending<O> {
    pub(super) slot: Arc<Slot<O>>,
    /// Its deadline on the timer, removed when it is answered.
    pub(super) timer: Option<TimerKey>,
}

pub(super) enum Phase {
    Running,
    ShuttingDown,
    Crashed(Arc<WorkerCrashError>),
    /// The `Worker` was dropped.
    Closed,
}

/// A request just made: where its result goes, its id and its deadline.
pub(super) struct Made<O> {
    pub(super) slot: Arc<Slot<O>>,
    pub(super) id: u64,
    pub(super) deadline: Option<Instant>,
}

/// The channels of a worker that completed its handshake.
pub(super) struct Channels {
    pub(super) requests: OpaqueIpcSender,
    pub(super) control: OpaqueIpcSender,
    pub(super) turns_socket: Option<Socket>,
    pub(super) request_socket: Option<Socket>,
    pub(super) control_socket: Option<Socket>,
}

impl<I, O> Connection<I, O> {
    pub(super) fn shut_down(&self) -> RunError {
        RunError::ShutDown {
            worker: self.process.name.clone(),
        }
    }

    /// Wakes the threads in `Reply::wait`, after requests were completed outside a read.
    pub(super) fn wake_waiters(&self) {
        self.turns.wake_waiters();
    }

    /// The crash report, once the worker died.
    pub(super) fn crash_error(&self) -> Option<Arc<WorkerCrashError>> {
        match &lock(&self.state).phase {
            Phase::Crashed(report) => Some(report.clone()),
            _ => None,
        }
    }

    /// Requests in flight.
    pub(super) fn in_flight(&self) -> usize {
        lock(&self.state).pending.len()
    }

    /// Whether the worker takes requests.
    pub(super) fn is_running(&self) -> bool {
        matches!(lock(&self.state).phase, Phase::Running)
    }

    /// Whether any request is in flight.
    pub(super) fn has_pending(&self) -> bool {
        !lock(&self.state).pending.is_empty()
    }

    /// Whether the end of the worker's channel was read and every request it took settled.
    /// A process that has exited may not be: its last answers can still wait in the channel.
    pub(super) fn is_settled(&self) -> bool {
        lock(&self.state).settled
    }
}

impl<I: IpcValue, O: IpcValue> Connection<I, O> {
    pub(super) fn new(
        process: Process,
        channels: Channels,
        receiver: ipc_channel::ipc::OpaqueIpcReceiver,
        settings: Settings,
    ) -> Arc<Self> {
        let exit = process.exit_fd();
        transport::prepare_discard();
        Arc::new_cyclic(|this| Connection {
            process,
            requests: Lane::new(settings.max_batch, channels.request_socket),
            control: Lane::new(settings.max_batch, channels.control_socket),
            request_tx: channels.requests,
            request_region: Region::new(),
            control_tx: channels.control,
            state: Mutex::new(WorkerState {
                phase: Phase::Running,
                pending: PendingTable::new(),
                abandoned: HashSet::new(),
                kill_reason: None,
                exit_hook: None,
                settled: false,
                panicked: false,
                shutdown_deadline: None,
            }),
            turns: ReadTurns::new(receiver.to(), channels.turns_socket, exit),
            next_control: AtomicU64::new(0),
            settings,
            this: this.clone(),
        })
    }

    /// Queues a request; its slot, id and deadline, or the error it fails with at once.
    pub(super) fn run(&self, request: I, timeout: Option<Duration>) -> Result<Made<O>, RunError> {
        if let Some(limit) = self.settings.max_pending {
            if self.requests.len() >= limit {
                return Err(RunError::Overloaded {
                    worker: self.process.name.clone(),
                    limit,
                });
            }
        }
        let slot = Arc::new(Slot::new());
        let deadline = timeout.map(|t| Instant::now() + t);
        let id = {
            let mut state = lock(&self.state);
            match &state.phase {
                Phase::Running => {}
                Phase::Crashed(report) => return Err(RunError::Crashed(report.clone())),
                Phase::ShuttingDown | Phase::Closed => return Err(self.shut_down()),
            }
            // Ids are handed out under the lock, so the table sees them in order.
            let id = state.pending.next_id();
            // Lock order: `state`, then the timer's actions.
            let timer = match (deadline, timeout) {
                (Some(deadline), Some(timeout)) => {
                    let this = self.this.clone();
                    timer::schedule(
                        deadline,
                        Box::new(move || {
                            if let Some(this) = this.upgrade() {
                                this.expire(id, timeout);
                            }
                        }),
                    )
                }
                _ => None,
            };
            state.pending.push(Pending {
                slot: slot.clone(),
                timer,
            })
        };
        if self.requests.push(id, Job::Run(request)) {
            self.flush_requests();
        }
        Ok(Made { slot, id, deadline })
    }

    pub(super) fn flush_requests(&self) {
        if let Flushed::StartWriter = self.requests.flush(&RequestSink(self)) {
            self.start_writer("requests", |this| {
                this.requests.run_writer(&RequestSink(this))
            });
        }
    }

    fn flush_control(&self) {
        if let Flushed::StartWriter = self.control.flush(&ControlSink(self)) {
            self.start_writer("control", |this| {
                this.control.run_writer(&ControlSink(this))
            });
        }
    }

    pub(super) fn push_control(&self, control: Control) {
        let key = self.next_control.fetch_add(1, Ordering::Relaxed);
        let _ = self.control.push(key, control);
        self.flush_control();
    }

    /// Starts a lane's writer thread; it lives until the lane closes.
    fn start_writer(&self, lane: &str, run: fn(&Self)) {
        let Some(this) = self.this.upgrade() else {
            return;
        };
        let started = thread::Builder::new()
            .name(format!("bincrew-writer-{}-{lane}", self.process.name))
            .spawn(move || run(&this));
        if let Err(e) = started {
            // Without a writer, nothing more reaches the worker: end it like a crash rather than
            // leave its requests waiting for ever.
            self.kill(format!("the app cannot start a thread to send to it: {e}"));
        }
    }

    /// Fails requests that could not be encoded, each with its reason.
    fn fail_encode(&self, failures: Vec<(u64, String)>) {
        let failed: Vec<_> = {
            let mut state = lock(&self.state);
            failures
                .into_iter()
                .filter_map(|(id, reason)| Some((state.pending.remove(id)?, reason)))
                .collect()
        };
        for (pending, reason) in failed {
            if let Some(key) = pending.timer {
                timer::cancel(key);
            }
            pending.slot.complete(Err(RunError::RequestEncode {
                worker: self.process.name.clone(),
                type_name: codec::shown(std::any::type_name::<I>()),
                reason,
            }));
        }
        self.wake_waiters();
    }

    /// The timer's action when request `id` is not answered within `timeout`. Never blocks.
    fn expire(&self, id: u64, timeout: Duration) {
        let Some(pending) = lock(&self.state).pending.remove(id) else {
            return;
        };
        pending.slot.complete(Err(RunError::TimedOut {
            worker: self.process.name.clone(),
            timeout,
        }));
        self.wake_waiters();
        // Never sent: it simply never will be.
        if self.requests.take(id).is_some() {
            return;
        }
        lock(&self.state).abandoned.insert(id);
        self.push_control(Control::Cancel(id));
        if let Some(grace) = self.settings.kill_after_timeout {
            let this = self.this.clone();
            timer::schedule(
                Instant::now() + grace,
                Box::new(move || {
                    let Some(this) = this.upgrade() else {
                        return;
                    };
                    let ignored = {
                        let state = lock(&this.state);
                        matches!(state.phase, Phase::Running | Phase::ShuttingDown)
                            && state.abandoned.contains(&id)
                    };
                    if ignored {
                        this.kill(format!(
                            "request {id} timed out after {timeout:?} and its handler did not give it up within {grace:?}"
                        ));
                    }
                }),
            );
        }
    }

    /// Completes the requests of a batch of answers. After a panic report nothing the worker
    /// sends is trusted: its answers are dropped and the requests fail with the crash report.
    pub(super) fn answer(&self, answers: Vec<Answer<O>>) {
        let mut done = Vec::with_capacity(answers.len());
        {
            let mut state = lock(&self.state);
            if state.panicked {
                return;
            }
            for answer in answers {
                let id = answer.id();
                if !state.abandoned.is_empty() {
                    state.abandoned.remove(&id);
                }
                if let Some(pending) = state.pending.remove(id) {
                    done.push((pending, answer));
                }
            }
        }
        for (pending, answer) in done {
            if let Some(key) = pending.timer {
                timer::cancel(key);
            }
            pending.slot.complete(match answer {
                Answer::Done { response, .. } => Ok(response),
                Answer::EncodeFailed { reason, .. } => Err(RunError::ResponseEncode {
                    worker: self.process.name.clone(),
                    type_name: codec::shown(&self.settings.worker_types.1),
                    reason,
                }),
                Answer::DecodeFailed { reason, .. } => Err(RunError::RequestDecode {
                    worker: self.process.name.clone(),
                    type_name: codec::shown(&self.settings.worker_types.0),
                    reason,
                }),
                Answer::Undecodable { reason, .. } => Err(RunError::ResponseDecode {
                    worker: self.process.name.clone(),
                    type_name: codec::shown(std::any::type_name::<O>()),
                    reason,
                }),
                // Only requests the app gave up on are cancelled: they are no longer pending.
                Answer::Cancelled { .. } => Err(self.shut_down()),
            });
        }
    }

    /// The worker reported a panic.
    pub(super) fn panicked(&self, message: String, location: Option<String>) {
        self.process.record_panic(message, location);
        lock(&self.state).panicked = true;
    }
}

impl<I: IpcValue, O: IpcValue> Link<O> for Connection<I, O> {
    fn flush(&self) {
        self.flush_requests();
    }

    fn wait(&self, slot: &Slot<O>, deadline: Option<Instant>) -> Result<O, RunError> {
        self.turns.wait(self, slot, deadline)
    }

    fn try_read(&self, slot: &Slot<O>) {
        self.turns.try_read(self, slot);
    }

    fn polled(&self) {
        self.turns.future_waits();
    }

    fn abandon(&self, id: u64) {
        let Some(pending) = lock(&self.state).pending.remove(id) else {
            return;
        };
        if let Some(key) = pending.timer {
            timer::cancel(key);
        }
        // Still queued: it is simply never sent. Otherwise the worker is told.
        if self.requests.take(id).is_none() {
            self.push_control(Control::Cancel(id));
        }
    }
}

impl<I: IpcValue, O: IpcValue> Inbox<O> for Connection<I, O> {
    fn turns(&self) -> &ReadTurns<O> {
        &self.turns
    }

    fn max_message(&self) -> usize {
        self.settings.max_message
    }

    fn answer(&self, answers: Vec<Answer<O>>) {
        Connection::answer(self, answers);
    }

    fn panicked(&self, message: String, location: Option<String>) {
        Connection::panicked(self, message, location);
    }

    fn finish(&self, protocol_error: Option<String>) {
        Connection::finish(self, protocol_error);
    }

    fn has_pending(&self) -> bool {
        Connection::has_pending(self)
    }

    fn shut_down(&self) -> RunError {
        Connection::shut_down(self)
    }
}

/// Sends batches of requests.
struct RequestSink<'a, I, O>(&'a Connection<I, O>);

impl<I: IpcValue, O: IpcValue> Sink<Job<I>> for RequestSink<'_, I, O> {
    fn send(&self, batch: &[(u64, Job<I>)]) -> Sent {
        let sender: IpcSender<RequestBatch<'_, I>> = self.0.request_tx.clone().to();
        let claim = self.0.request_region.claim();
        let sent = Sent::from_result(transport::send_guarded(
            &sender,
            FramedRef(batch, claim.as_ref()),
        ));
        if let (Sent::Done, Some(claim)) = (&sent, claim) {
            claim.sent();
        }
        // Requests that did not encode were left out of the message: they fail alone, once
        // the message went out (a batch that did not go out is encoded again later).
        let failures = take_encode_failures();
        if matches!(sent, Sent::Done) && !failures.is_empty() {
            self.0.fail_encode(failures);
        }
        sent
    }

    fn encode_failed(&self, batch: Vec<(u64, Job<I>)>, reason: String) {
        self.0.fail_encode(
            batch
                .into_iter()
                .map(|(id, _)| (id, reason.clone()))
                .collect(),
        );
    }
}

/// Sends batches of control items.
struct ControlSink<'a, I, O>(&'a Connection<I, O>);

impl<I: IpcValue, O: IpcValue> Sink<Control> for ControlSink<'_, I, O> {
    fn send(&self, batch: &[(u64, Control)]) -> Sent {
        let sender: IpcSender<Vec<(u64, Control)>> = self.0.control_tx.clone().to();
        Sent::from_result(sender.send(batch.to_vec()))
    }

    fn encode_failed(&self, _batch: Vec<(u64, Control)>, reason: String) {
        tracing::error!(worker = %self.0.process.name, %reason, "cannot encode a control message");
    }
}
