//! The app side: [`Worker`], its builder, and the futures of requests in flight.
//!
//! Ownership: a `Worker` owns the sending end of the app-to-worker channel and shares
//! [`Shared`] with its reader thread and with every [`Reply`]. The reader thread alone owns the
//! receiving end; it completes replies and, when the channel closes, writes the crash report and
//! fails what is still pending. The [`Process`] inside `Shared` is reaped by whoever sees the exit
//! first (the reader, `shutdown` or `Drop`); `duct` makes waiting from several threads safe.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcReceiver, IpcSender};
use ipc_channel::IpcError;

use crate::build::{BuildInfo, Compat};
use crate::error::{RunError, ShutdownError, StartError, WorkerCrashError};
use crate::locate::Locate;
use crate::process::{self, lock, Check, Process, Spec, Started};
use crate::protocol::{ToApp, ToWorker};
use crate::IpcValue;

const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long the reader waits for a worker that closed its channel to exit by itself.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// A running worker process that answers requests of type `I` with responses of type `O`.
///
/// `Worker` is `Send + Sync`: share it (for example in an `Arc`) and call [`run`](Self::run) from
/// any number of tasks or threads; the worker runs several requests at once.
///
/// Dropping a `Worker` without [`shutdown`](Self::shutdown) kills the process and reaps it; the
/// requests still in flight fail with [`RunError::ShutDown`].
pub struct Worker<I, O> {
    shared: Arc<Shared<O>>,
    requests: IpcSender<ToWorker<I>>,
    next_id: AtomicU64,
    build: BuildInfo,
    shutdown_grace: Duration,
}

impl<I, O> fmt::Debug for Worker<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.shared.process.name)
            .field("pid", &self.shared.process.pid())
            .field("build", &self.build)
            .finish_non_exhaustive()
    }
}

/// Configures and starts a [`Worker`]. Made by [`Worker::builder`].
#[must_use = "a builder does nothing until started"]
pub struct WorkerBuilder<I, O> {
    name: String,
    exe: Option<PathBuf>,
    locate: Option<Locate>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    compat: Option<Compat>,
    connect_timeout: Option<Duration>,
    shutdown_grace: Duration,
    forward_stderr: bool,
    parallelism: Option<usize>,
    types: PhantomData<fn(I) -> O>,
}

impl<I: IpcValue, O: IpcValue> WorkerBuilder<I, O> {
    /// Runs the worker from this executable instead of the app's own: a dedicated worker binary.
    /// It takes precedence over [`binary`](Self::binary).
    pub fn exe(mut self, path: impl Into<PathBuf>) -> Self {
        self.exe = Some(path.into());
        self
    }

    /// Runs the worker from the dedicated worker binary named `binary` (a cargo binary target's
    /// name, without `.exe`), found when the worker starts in this order:
    ///
    /// 1. the path given to [`exe`](Self::exe), if any;
    /// 2. the environment variable `BINCREW_EXE_<BINARY>` (the name in upper case, `-` as `_`);
    /// 3. beside the app's own executable (the deployed layout), as `binary` or as
    ///    `binary-<target-triple>` (the form bundlers use);
    /// 4. `CARGO_BIN_EXE_<binary>`, which cargo sets for tests;
    /// 5. in development, the cargo target dir of the app's workspace, found with `cargo
    ///    metadata` (so it honours `CARGO_TARGET_DIR`), in the app's profile; with
    ///    [`cargo_build`](Self::cargo_build) cargo first builds the binary's package when it is
    ///    missing or older than its sources;
    /// 6. `PATH`, only with [`search_path`](Self::search_path).
    ///
    /// Never the current directory. When it is nowhere, the start fails with
    /// [`StartError::NotFound`] listing every place tried.
    ///
    /// When the app declares `binary` in `[package.metadata.bincrew] workers` and stamps its
    /// build with bincrew-build, the default policy is [`Compat::Semver`] with the declared
    /// requirement instead of [`Compat::SameBuild`].
    pub fn binary(mut self, binary: impl Into<String>) -> Self {
        self.locate = Some(Locate {
            binary: binary.into(),
            cargo_build: false,
            search_path: false,
        });
        self
    }

    /// In development, lets [`binary`](Self::binary) run `cargo build` for the worker's package
    /// before using the binary from the target dir (cargo does nothing when it is up to date).
    pub fn cargo_build(mut self, build: bool) -> Self {
        if let Some(locate) = &mut self.locate {
            locate.cargo_build = build;
        }
        self
    }

    /// Lets [`binary`](Self::binary) search `PATH` when every other place failed.
    pub fn search_path(mut self, search: bool) -> Self {
        if let Some(locate) = &mut self.locate {
            locate.search_path = search;
        }
        self
    }

    /// Adds a command-line argument for the worker process.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the worker process (it inherits the app's others).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// What the worker must share with the app; [`Compat::SameBuild`] by default.
    pub fn compat(mut self, compat: Compat) -> Self {
        self.compat = Some(compat);
        self
    }

    /// How long the worker has to complete the handshake before it is killed.
    ///
    /// Defaults to the `BINCREW_CONNECT_TIMEOUT` environment variable (seconds, or a number
    /// followed by `s` or `ms`), or else 10 seconds.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long [`Worker::shutdown`] waits for the worker to exit before killing it (10 seconds
    /// by default).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Whether the worker's stderr is copied to the app's stderr (the default). Its last 16 KiB
    /// are kept for crash reports either way.
    pub fn forward_stderr(mut self, forward: bool) -> Self {
        self.forward_stderr = forward;
        self
    }

    /// How many requests the worker process runs at once. Defaults to what the worker sets with
    /// [`Workers::parallelism`](crate::Workers::parallelism), or else the machine's parallelism.
    pub fn parallelism(mut self, requests: usize) -> Self {
        self.parallelism = Some(requests.max(1));
        self
    }

    /// Starts the worker and completes the handshake, waiting on a thread of [`blocking`]'s
    /// pool.
    ///
    /// # Errors
    ///
    /// Every way the start can fail is a [`StartError`]; no process is left behind.
    pub async fn start(self) -> Result<Worker<I, O>, StartError> {
        blocking::unblock(move || self.start_blocking()).await
    }

    /// Same as [`start`](Self::start), blocking the calling thread.
    ///
    /// # Errors
    ///
    /// Same as [`start`](Self::start).
    pub fn start_blocking(self) -> Result<Worker<I, O>, StartError> {
        let mut compat = self.compat;
        let (exe, program) = match (self.exe, &self.locate) {
            (Some(exe), _) => (exe.clone(), exe),
            (None, Some(locate)) => {
                let app = crate::build::build_info();
                let exe = locate.find(app).map_err(|tried| StartError::NotFound {
                    worker: self.name.clone(),
                    binary: locate.binary.clone(),
                    tried,
                })?;
                if compat.is_none() {
                    compat = app
                        .and_then(|a| a.worker_requirement(&locate.binary))
                        .map(|req| Compat::Semver(req.clone()));
                }
                (exe.clone(), exe)
            }
            (None, None) => {
                let program = crate::os::self_exe().map_err(|source| StartError::Spawn {
                    worker: self.name.clone(),
                    exe: PathBuf::from("<current executable>"),
                    source,
                })?;
                (
                    std::env::current_exe().unwrap_or_else(|_| program.clone()),
                    program,
                )
            }
        };
        let spec = Spec {
            name: self.name,
            exe,
            program,
            args: self.args,
            env: self.env,
            check: Check::App {
                compat: compat.unwrap_or_default(),
                request_type: std::any::type_name::<I>(),
                response_type: std::any::type_name::<O>(),
            },
            connect_timeout: self.connect_timeout,
            forward_stderr: self.forward_stderr,
            parallelism: self.parallelism,
        };
        let Started::Connected(connected) = process::start(&spec)? else {
            return Err(StartError::Handshake {
                worker: spec.name,
                exe: spec.exe,
                reason: "it listed its workers instead of serving".into(),
            });
        };
        let receiver: IpcReceiver<ToApp<O>> = connected.receiver.to();
        let shared = Arc::new(Shared {
            process: connected.process,
            state: Mutex::new(State {
                phase: Phase::Running,
                slots: HashMap::new(),
            }),
        });
        let reader_shared = shared.clone();
        let reader = thread::Builder::new()
            .name(format!("bincrew-reader-{}", spec.name))
            .spawn(move || read_loop(reader_shared, receiver));
        if let Err(source) = reader {
            shared.process.kill_and_reap();
            return Err(StartError::Ipc {
                worker: spec.name,
                source,
            });
        }
        Ok(Worker {
            shared,
            requests: connected.requests.to(),
            next_id: AtomicU64::new(0),
            build: connected.build,
            shutdown_grace: self.shutdown_grace,
        })
    }
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
    /// [`Compat`] policy or timeouts.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), bincrew::StartError> {
    /// use std::time::Duration;
    /// let worker = bincrew::Worker::<Vec<u8>, u64>::builder("hash")
    ///     .exe("/opt/app/hasher")
    ///     .compat(bincrew::Compat::SameVersion)
    ///     .connect_timeout(Duration::from_secs(5))
    ///     .start_blocking()?;
    /// # Ok(()) }
    /// ```
    pub fn builder(name: impl Into<String>) -> WorkerBuilder<I, O> {
        WorkerBuilder {
            name: name.into(),
            exe: None,
            locate: None,
            args: Vec::new(),
            env: Vec::new(),
            compat: None,
            connect_timeout: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            forward_stderr: true,
            parallelism: None,
            types: PhantomData,
        }
    }

    /// Sends a request and returns a future of its response.
    ///
    /// The request is sent before `run` returns; the future only waits. Dropping the future
    /// discards the response when it comes. Call `run` many times before awaiting to have many
    /// requests in flight; responses come back in the order the worker finishes them.
    ///
    /// The future fails with [`RunError::Crashed`] if the worker dies before answering.
    pub fn run(&self, request: I) -> Reply<O> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::new());
        {
            let mut state = lock(&self.shared.state);
            match &state.phase {
                Phase::Running => {
                    state.slots.insert(id, slot.clone());
                }
                Phase::Crashed(report) => {
                    return Reply::done(Err(RunError::Crashed(report.clone())))
                }
                Phase::ShuttingDown | Phase::Closed => return Reply::done(Err(self.shut_down())),
            }
        }
        match self.requests.send(ToWorker::Request { id, request }) {
            Ok(()) => {}
            Err(IpcError::SerializationError(e)) => {
                lock(&self.shared.state).slots.remove(&id);
                return Reply::done(Err(RunError::Encode {
                    worker: self.shared.process.name.clone(),
                    reason: e.to_string(),
                }));
            }
            // The worker is gone: the reader thread fails the slot with the crash report.
            Err(e) => {
                tracing::debug!(worker = %self.shared.process.name, error = %e, "request not sent")
            }
        }
        Reply {
            slot: Some(slot),
            owner: Some((self.shared.clone(), id)),
            done: None,
        }
    }

    /// Same as [`run`](Self::run), blocking the calling thread until the response comes.
    ///
    /// # Errors
    ///
    /// Same as the future of [`run`](Self::run).
    pub fn run_blocking(&self, request: I) -> Result<O, RunError> {
        self.run(request).wait()
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
        self.begin_shutdown()?;
        let shared = self.shared.clone();
        let grace = self.shutdown_grace;
        blocking::unblock(move || shared.wait_shutdown(grace)).await
    }

    /// Same as [`shutdown`](Self::shutdown), blocking the calling thread.
    ///
    /// # Errors
    ///
    /// Same as [`shutdown`](Self::shutdown).
    pub fn shutdown_blocking(&self) -> Result<(), ShutdownError> {
        self.begin_shutdown()?;
        self.shared.wait_shutdown(self.shutdown_grace)
    }

    fn begin_shutdown(&self) -> Result<(), ShutdownError> {
        let send = {
            let mut state = lock(&self.shared.state);
            match &state.phase {
                Phase::Running => {
                    state.phase = Phase::ShuttingDown;
                    true
                }
                Phase::Crashed(report) => return Err(ShutdownError::Crashed(report.clone())),
                Phase::ShuttingDown | Phase::Closed => false,
            }
        };
        if send {
            // A failed send means the worker is already gone; waiting tells how it ended.
            let _ = self.requests.send(ToWorker::Shutdown);
        }
        Ok(())
    }

    fn shut_down(&self) -> RunError {
        RunError::ShutDown {
            worker: self.shared.process.name.clone(),
        }
    }

    /// The crash report, once the worker has died unexpectedly.
    pub fn crash_error(&self) -> Option<Arc<WorkerCrashError>> {
        match &lock(&self.shared.state).phase {
            Phase::Crashed(report) => Some(report.clone()),
            _ => None,
        }
    }

    /// The worker's process id.
    pub fn id(&self) -> u32 {
        self.shared.process.pid()
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.shared.process.name
    }

    /// The worker binary's identity, as it reported it in the handshake.
    pub fn build_info(&self) -> &BuildInfo {
        &self.build
    }
}

impl<I, O> Drop for Worker<I, O> {
    fn drop(&mut self) {
        let leftover = {
            let mut state = lock(&self.shared.state);
            if matches!(state.phase, Phase::Running | Phase::ShuttingDown) {
                state.phase = Phase::Closed;
            }
            std::mem::take(&mut state.slots)
        };
        let name = &self.shared.process.name;
        for slot in leftover.into_values() {
            slot.complete(Err(RunError::ShutDown {
                worker: name.clone(),
            }));
        }
        // Kill and reap: no zombie is left, whatever state the worker is in.
        self.shared.process.kill_and_reap();
    }
}

/// What the app and the reader thread share about one worker.
struct Shared<O> {
    process: Process,
    state: Mutex<State<O>>,
}

struct State<O> {
    phase: Phase,
    slots: HashMap<u64, Arc<Slot<O>>>,
}

enum Phase {
    Running,
    ShuttingDown,
    Crashed(Arc<WorkerCrashError>),
    /// The `Worker` was dropped.
    Closed,
}

impl<O> Shared<O> {
    /// Called by the reader thread when the worker's channel ends, cleanly or not.
    fn finish(&self, protocol_error: Option<String>) {
        let shutting_down = match lock(&self.state).phase {
            Phase::Closed | Phase::Crashed(_) => return,
            Phase::ShuttingDown => true,
            Phase::Running => false,
        };
        if protocol_error.is_some() {
            self.process.kill();
        }
        let mut protocol_error = protocol_error;
        let exit = match self.process.wait_deadline(Instant::now() + EXIT_GRACE) {
            Some(exit) => Some(exit),
            None => {
                protocol_error
                    .get_or_insert_with(|| "it closed its channel but kept running".into());
                self.process.kill();
                self.process.wait()
            }
        };
        if shutting_down && protocol_error.is_none() && exit.is_some_and(|e| e.success()) {
            // A clean exit after a shutdown: requests sent after it fail as shut down.
            let leftover = std::mem::take(&mut lock(&self.state).slots);
            for slot in leftover.into_values() {
                slot.complete(Err(RunError::ShutDown {
                    worker: self.process.name.clone(),
                }));
            }
            return;
        }
        let report = Arc::new(self.process.crash_report(exit, protocol_error));
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

    fn wait_shutdown(&self, grace: Duration) -> Result<(), ShutdownError> {
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
}

/// The reader thread: completes replies until the worker's channel ends.
fn read_loop<O: IpcValue>(shared: Arc<Shared<O>>, receiver: IpcReceiver<ToApp<O>>) {
    let protocol_error = loop {
        match receiver.recv() {
            Ok(ToApp::Response { id, response }) => {
                let slot = lock(&shared.state).slots.remove(&id);
                if let Some(slot) = slot {
                    slot.complete(Ok(response));
                }
            }
            Ok(ToApp::EncodeFailed { id, reason }) => {
                let slot = lock(&shared.state).slots.remove(&id);
                if let Some(slot) = slot {
                    slot.complete(Err(RunError::Encode {
                        worker: shared.process.name.clone(),
                        reason: format!("the worker cannot encode its response: {reason}"),
                    }));
                }
            }
            Ok(ToApp::Panicked { message, location }) => {
                shared.process.record_panic(message, location)
            }
            Err(IpcError::Disconnected) => break None,
            Err(IpcError::SerializationError(e)) => {
                break Some(format!("it sent a message that does not decode: {e}"))
            }
            Err(IpcError::Io(e)) => break Some(format!("reading its channel failed: {e}")),
        }
    };
    drop(receiver);
    shared.finish(protocol_error);
}

type SlotState<O> = (Option<Result<O, RunError>>, Option<Waker>);

/// Where the reader thread puts a response for the [`Reply`] waiting on it.
struct Slot<O> {
    /// The result once it came, and the waker of the task awaiting it.
    state: Mutex<SlotState<O>>,
    filled: Condvar,
}

impl<O> Slot<O> {
    fn new() -> Self {
        Slot {
            state: Mutex::new((None, None)),
            filled: Condvar::new(),
        }
    }

    fn complete(&self, result: Result<O, RunError>) {
        let waker = {
            let mut state = lock(&self.state);
            state.0 = Some(result);
            state.1.take()
        };
        self.filled.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The response to one request: a future, or [`wait`](Self::wait) for it blocking.
///
/// Made by [`Worker::run`]. It is `Send + 'static` and does not borrow the worker. Dropping it
/// before the response comes discards the response.
#[must_use = "the response is lost unless the reply is awaited or waited on"]
pub struct Reply<O> {
    slot: Option<Arc<Slot<O>>>,
    /// Where to deregister the request if the reply is dropped unanswered.
    owner: Option<(Arc<Shared<O>>, u64)>,
    done: Option<Result<O, RunError>>,
}

impl<O> Reply<O> {
    fn done(result: Result<O, RunError>) -> Self {
        Reply {
            slot: None,
            owner: None,
            done: Some(result),
        }
    }

    /// Blocks the calling thread until the response comes.
    ///
    /// # Errors
    ///
    /// Same as awaiting the reply.
    pub fn wait(mut self) -> Result<O, RunError> {
        if let Some(result) = self.done.take() {
            return result;
        }
        let slot = self.slot.take().expect("a pending reply has a slot");
        self.owner = None;
        let mut state = lock(&slot.state);
        loop {
            if let Some(result) = state.0.take() {
                return result;
            }
            state = slot
                .filled
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

// The response is only ever moved out, never pinned in place.
impl<O> Unpin for Reply<O> {}

impl<O> Future for Reply<O> {
    type Output = Result<O, RunError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(result) = this.done.take() {
            return Poll::Ready(result);
        }
        let Some(slot) = &this.slot else {
            panic!("Reply polled after it completed");
        };
        let mut state = lock(&slot.state);
        if let Some(result) = state.0.take() {
            drop(state);
            this.slot = None;
            this.owner = None;
            return Poll::Ready(result);
        }
        match &state.1 {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.1 = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<O> Drop for Reply<O> {
    fn drop(&mut self) {
        if let Some((shared, id)) = self.owner.take() {
            lock(&shared.state).slots.remove(&id);
        }
    }
}

impl<O> fmt::Debug for Reply<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("id", &self.owner.as_ref().map(|(_, id)| id))
            .finish_non_exhaustive()
    }
}
