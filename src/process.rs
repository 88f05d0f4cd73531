//! The worker process and the handshake, shared by every way of starting a worker.
//!
//! [`start`] spawns the process, accepts its connection on a thread of its own (because
//! `IpcOneShotServer::accept` has no timeout), and waits for the hello while polling the process
//! for an early exit and watching the connect deadline. At the deadline it tells a worker that
//! never connected ([`StartError::Timeout`]) from a handshake connection another process took
//! and sent nothing on ([`StartError::HandshakeTaken`]), see [`Handshake::taken`]. Whatever goes
//! wrong, the process is killed (by dropping its [`Process`]) and the accept thread is unblocked
//! before the error is returned.
//!
//! The worker's environment is the app's own without the protocol variables the app inherited
//! (see [`crate::env`]), then the builder's variables, then this start's protocol variables. The
//! process inherits no descriptor of the app but stdin, stdout and stderr (on Linux; see
//! `os/linux.rs`).
//!
//! [`Process`] owns the child: its handle, the tail of its stderr, and the panic message the
//! worker reported. Dropping it kills the process if it still runs and never waits: a
//! process-wide reaper reaps it. Waiting and `try_exit` read the status the reaper recorded, so
//! several threads may wait at once.
//!
//! A worker's stderr is drained by one process-wide pump thread into the tail kept for crash
//! reports; when forwarded to the app's stderr, it goes through [`Forward`], a bounded queue
//! written by a thread of its own, so that an app whose stderr is not read never blocks the pump
//! (nor, through it, any worker writing to its stderr).

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcOneShotServer, IpcReceiver, IpcSender, OpaqueIpcReceiver};

use crate::build::{build_info, BuildInfo, Compat};
use crate::env::{APP_PID_ENV, PARALLELISM_ENV, SERVER_ENV, TIMEOUT_ENV, TOKEN_ENV, WORKER_ENV};
use crate::error::{ExitInfo, StartError, VersionMismatch, WorkerCrashError};
use crate::hello::{Hello, RawBytes, Status};
use crate::protocol::Ready;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the handshake checks whether the process already exited.
const EXIT_POLL: Duration = Duration::from_millis(10);
/// How long the handshake waits, after seeing the process exit, for a hello it sent just before
/// (a probed binary answers and exits at once).
const LATE_HELLO_GRACE: Duration = Duration::from_millis(200);
/// How long a crash report waits for the rest of stderr after the process exited.
const STDERR_GRACE: Duration = Duration::from_millis(500);
/// How much of stderr a crash report keeps.
const STDERR_TAIL: usize = 16 * 1024;
/// How long, at the connect deadline, the accept thread has to show that no other process is
/// holding the handshake connection (see [`Handshake::taken`]).
const TAKEN_GRACE: Duration = Duration::from_secs(1);
/// How much worker stderr may wait to be written to the app's stderr before more is dropped.
const FORWARD_QUEUE: usize = 1024 * 1024;
/// How often, at most, dropped stderr is reported.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(1);

/// The bytes that only an executable serving workers contains (referenced by
/// `Workers::run`), stored reversed here so that an app which merely starts workers does not
/// contain them.
const ENTRY_MARKER_REVERSED: &[u8] = b"1/tniop-yrtne-rekrow-wercnib";

/// Everything needed to start one worker process.
pub(crate) struct Spec {
    pub(crate) name: String,
    /// The executable as errors name it.
    pub(crate) exe: PathBuf,
    /// The path spawned: `exe`, or `/proc/self/exe` for a self-spawn on Linux.
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) check: Check,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) forward_stderr: bool,
    /// Discard the process's stdout instead of sharing the app's (probes).
    pub(crate) quiet_stdout: bool,
    pub(crate) parallelism: Option<usize>,
}

/// What the app checks in the hello.
pub(crate) enum Check {
    /// A worker for this app: its identity against the policy, and its types.
    App {
        compat: Compat,
        request_type: &'static str,
        response_type: &'static str,
    },
    /// A probe: nothing is checked but the token, and a binary that serves no such worker
    /// answers with what it serves.
    Probe,
}

/// How a handshake ended well.
pub(crate) enum Started {
    /// The worker is ready for requests.
    Connected(Box<Connected>),
    /// A probe's answer from a binary that serves no worker of the name asked.
    Listed(Box<Hello>),
}

/// A worker that completed the handshake.
pub(crate) struct Connected {
    pub(crate) process: Process,
    /// The worker-to-app channel, to be typed as `IpcReceiver<ToApp<O>>`.
    pub(crate) receiver: OpaqueIpcReceiver,
    /// The app-to-worker channel, to be typed as `IpcSender<ToWorker<I>>`.
    pub(crate) requests: ipc_channel::ipc::OpaqueIpcSender,
    /// The control channel, to be typed as `IpcSender<[(u64, Control)]>`.
    pub(crate) control: ipc_channel::ipc::OpaqueIpcSender,
    pub(crate) hello: Hello,
    pub(crate) build: BuildInfo,
}

enum Event {
    Hello(Result<Vec<u8>, String>),
    Ready(Result<(OpaqueIpcReceiver, Ready), String>),
}

/// Starts the worker process and completes the handshake.
pub(crate) fn start(spec: &Spec) -> Result<Started, StartError> {
    // `Workers::run` removes these variables when it serves: still set means this process was
    // started as a worker and went on into its app code. Starting workers from there would
    // start the same executable again and again.
    if let Some(name) = std::env::var_os(WORKER_ENV) {
        return Err(StartError::StartedAsWorker {
            worker: name.to_string_lossy().into_owned(),
        });
    }
    let app = match &spec.check {
        Check::App { .. } => Some(build_info().ok_or(StartError::NotInitialized)?),
        Check::Probe => None,
    };
    let timeout = match spec.connect_timeout {
        Some(t) => t,
        None => timeout_from_env()?,
    };
    let ipc_error = |source| StartError::Ipc {
        worker: spec.name.clone(),
        source,
    };
    let (server, server_name) = IpcOneShotServer::<RawBytes>::new().map_err(ipc_error)?;
    let token = new_token();
    let mut protocol: Vec<(OsString, OsString)> = vec![
        (WORKER_ENV.into(), spec.name.clone().into()),
        (SERVER_ENV.into(), server_name.clone().into()),
        (TOKEN_ENV.into(), token.clone().into()),
        (APP_PID_ENV.into(), std::process::id().to_string().into()),
    ];
    if let Some(n) = spec.parallelism {
        protocol.push((PARALLELISM_ENV.into(), n.to_string().into()));
    }
    let process = Process::spawn(spec, worker_env(&spec.env, protocol))?;

    let (events, event_rx) = mpsc::channel();
    let accept = thread::Builder::new()
        .name(format!("bincrew-accept-{}", spec.name))
        .spawn(move || accept_connection(server, events));
    if let Err(source) = accept {
        return Err(ipc_error(source));
    }

    let handshake = Handshake {
        spec,
        app,
        token: &token,
        process: &process,
        timeout,
        server_name: &server_name,
        probed: Cell::new(false),
    };
    match handshake.wait(&event_rx, Instant::now() + timeout) {
        Ok(Ok((receiver, ready, hello, build))) => Ok(Started::Connected(Box::new(Connected {
            process,
            receiver,
            requests: ready.requests,
            control: ready.control,
            hello,
            build,
        }))),
        // It exits by itself after an unknown-worker hello; dropping it makes sure.
        Ok(Err(listed)) => Ok(Started::Listed(Box::new(listed))),
        Err(err) => {
            let probed = handshake.probed.get();
            drop(process);
            // The accept thread may still be blocked in `accept`: connecting unblocks it. When it
            // already accepted, this connect fails, and the killed process unblocks its recv.
            // At the deadline `taken` already connected.
            if !probed {
                if let Ok(unblock) = IpcSender::<RawBytes>::connect(server_name) {
                    let _ = unblock.send(RawBytes::default());
                }
            }
            Err(err)
        }
    }
}

/// The worker's environment: the app's own without the protocol variables it inherited (they
/// belong to the start that set them: a `BINCREW_PARALLELISM` left in a shell would cap every
/// worker), then the builder's variables, then this start's protocol variables.
fn worker_env(
    builder: &[(OsString, OsString)],
    protocol: Vec<(OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(key, _)| !crate::env::is_protocol_var(key))
        .collect();
    for (key, value) in builder.iter().cloned().chain(protocol) {
        match env.iter_mut().find(|(k, _)| crate::env::same_key(k, &key)) {
            Some(entry) => entry.1 = value,
            None => env.push((key, value)),
        }
    }
    env
}

/// Runs on the accept thread: the hello, then `Ready`.
fn accept_connection(server: IpcOneShotServer<RawBytes>, events: mpsc::Sender<Event>) {
    let receiver = match server.accept() {
        Ok((receiver, RawBytes(hello))) => {
            let _ = events.send(Event::Hello(Ok(hello)));
            receiver
        }
        Err(e) => {
            let _ = events.send(Event::Hello(Err(e.to_string())));
            return;
        }
    };
    let receiver: IpcReceiver<Ready> = receiver.to_opaque().to();
    let ready = match crate::protocol::recv_guarded(&receiver) {
        Ok(ready) => Ok((receiver.to_opaque(), ready)),
        Err(ipc_channel::IpcError::Disconnected) => {
            Err("it closed the connection after its hello".to_owned())
        }
        Err(e) => Err(format!("its second message is not a bincrew `Ready`: {e}")),
    };
    let _ = events.send(Event::Ready(ready));
}

/// A handshake that succeeded: the connection and the hello, or a probe's listing.
type Outcome = Result<(OpaqueIpcReceiver, Ready, Hello, BuildInfo), Hello>;

struct Handshake<'a> {
    spec: &'a Spec,
    app: Option<&'a BuildInfo>,
    token: &'a str,
    process: &'a Process,
    timeout: Duration,
    server_name: &'a str,
    /// Whether [`taken`](Self::taken) connected to the server.
    probed: Cell<bool>,
}

impl Handshake<'_> {
    fn wait(
        &self,
        events: &mpsc::Receiver<Event>,
        deadline: Instant,
    ) -> Result<Outcome, StartError> {
        let mut checked = None;
        // Once the process has exited: its status, and until when a hello it sent just before
        // exiting may still come from the accept thread.
        let mut exited: Option<(ExitInfo, Instant)> = None;
        loop {
            let now = Instant::now();
            let wait = match exited {
                Some((exit, until)) if now >= until => return Err(self.exited(exit)),
                Some((_, until)) => until - now,
                None if now >= deadline => return Err(self.timed_out(events, checked.is_some())),
                None => (deadline - now).min(EXIT_POLL),
            };
            match events.recv_timeout(wait) {
                Ok(Event::Hello(Ok(bytes))) => match self.check_hello(&bytes)? {
                    Ok(hello_and_build) => checked = Some(hello_and_build),
                    Err(listed) => return Ok(Err(listed)),
                },
                Ok(Event::Hello(Err(reason))) => {
                    return Err(self.exited_or(format!("accepting its connection failed: {reason}")))
                }
                Ok(Event::Ready(Ok((receiver, ready)))) => {
                    let Some((hello, build)) = checked.take() else {
                        return Err(self.rejected("it sent `Ready` before its hello".into()));
                    };
                    return Ok(Ok((receiver, ready, hello, build)));
                }
                Ok(Event::Ready(Err(reason))) => return Err(self.exited_or(reason)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if exited.is_none() {
                        if let Some(exit) = self.process.try_exit() {
                            exited = Some((exit, Instant::now() + LATE_HELLO_GRACE));
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if let Some((exit, _)) = exited {
                        return Err(self.exited(exit));
                    }
                    return Err(self.exited_or("the handshake thread ended unexpectedly".into()));
                }
            }
        }
    }

    /// `Ok(Err(hello))` is a probe's listing.
    fn check_hello(&self, bytes: &[u8]) -> Result<Result<(Hello, BuildInfo), Hello>, StartError> {
        let spec = self.spec;
        let hello = Hello::decode(bytes).map_err(|reason| self.rejected(reason))?;
        if hello.token != self.token {
            return Err(self.rejected(
                "it did not present the token the app gave it (another process connected in its place)"
                    .into(),
            ));
        }
        match hello.status {
            Status::Ready => {}
            Status::UnknownWorker
                if matches!(spec.check, Check::Probe) && hello.build.is_some() =>
            {
                return Ok(Err(hello))
            }
            Status::UnknownWorker => {
                return Err(StartError::UnknownWorker {
                    worker: spec.name.clone(),
                    exe: spec.exe.clone(),
                    available: hello.served,
                })
            }
            Status::NotInitialized => {
                return Err(self.rejected(
                    "the worker executable does not call bincrew::init!() at the top of its main"
                        .into(),
                ))
            }
        }
        let Some(build) = hello.build.clone() else {
            return Err(self.rejected("its hello carries no build information".into()));
        };
        let (
            Check::App {
                compat,
                request_type,
                response_type,
            },
            Some(app),
        ) = (&spec.check, self.app)
        else {
            return Ok(Ok((hello, build)));
        };
        if let Err((kind, fix)) = compat.check(app, &build) {
            return Err(StartError::VersionMismatch(Box::new(VersionMismatch::new(
                &spec.name, compat, app, &build, kind, fix,
            ))));
        }
        if hello.request_type != *request_type || hello.response_type != *response_type {
            return Err(StartError::TypeMismatch {
                worker: spec.name.clone(),
                app_request: (*request_type).to_owned(),
                app_response: (*response_type).to_owned(),
                worker_request: hello.request_type,
                worker_response: hello.response_type,
            });
        }
        Ok(Ok((hello, build)))
    }

    fn rejected(&self, reason: String) -> StartError {
        StartError::Handshake {
            worker: self.spec.name.clone(),
            exe: self.spec.exe.clone(),
            reason,
        }
    }

    /// The process exited: its status and stderr, unless it is not a worker at all.
    fn exited(&self, exit: ExitInfo) -> StartError {
        let stderr = self.process.stderr_tail(STDERR_GRACE);
        if !looks_like_worker(&self.spec.program) {
            return StartError::NotAWorker {
                worker: self.spec.name.clone(),
                exe: self.spec.exe.clone(),
                outcome: format!("exited with {exit}"),
                stderr,
            };
        }
        StartError::ExitedBeforeHandshake {
            worker: self.spec.name.clone(),
            exe: self.spec.exe.clone(),
            exit,
            stderr,
        }
    }

    /// The connection failed: report the exit if the process is ending, else the reason.
    fn exited_or(&self, reason: String) -> StartError {
        match self.process.wait_deadline(Instant::now() + STDERR_GRACE) {
            Some(exit) => self.exited(exit),
            None => self.rejected(reason),
        }
    }

    /// At the connect deadline: the worker is killed, and the error says whether it never
    /// connected or another process took its connection.
    fn timed_out(&self, events: &mpsc::Receiver<Event>, hello_seen: bool) -> StartError {
        self.process.kill();
        if !hello_seen && self.taken(events) {
            return StartError::HandshakeTaken {
                worker: self.spec.name.clone(),
                exe: self.spec.exe.clone(),
            };
        }
        let stderr = self.process.stderr_tail(STDERR_GRACE);
        if !looks_like_worker(&self.spec.program) {
            return StartError::NotAWorker {
                worker: self.spec.name.clone(),
                exe: self.spec.exe.clone(),
                outcome: format!("did not connect within {:?}", self.timeout),
                stderr,
            };
        }
        StartError::Timeout {
            worker: self.spec.name.clone(),
            exe: self.spec.exe.clone(),
            timeout: self.timeout,
            stderr,
        }
    }

    /// Whether the accept thread is stuck reading a first message that will not come, on a
    /// connection that is not the worker's: another process connected first and sent nothing.
    /// Called once the worker was killed, with no hello received.
    ///
    /// The accept thread is in one of three places. Still in `accept`: the connection made here
    /// is accepted and its message delivered. Reading the first message of the worker's own
    /// connection (a worker stopped between its connect and its hello): the worker's death
    /// closes it, and the read fails. Reading a connection some other process holds open:
    /// nothing comes, and after [`TAKEN_GRACE`] the handshake counts as taken. (A process that
    /// holds the connection and is killed in the same moment is missed, and reported as a
    /// timeout.)
    fn taken(&self, events: &mpsc::Receiver<Event>) -> bool {
        self.probed.set(true);
        match IpcSender::<RawBytes>::connect(self.server_name.to_owned()) {
            // Dropped at once: once it has delivered its message, the accept thread's wait for
            // `Ready` on it ends too.
            Ok(probe) => {
                let _ = probe.send(RawBytes(b"bincrew: the connect deadline passed".to_vec()));
            }
            // The server is closed: the accept thread got past reading a first message.
            Err(_) => return false,
        }
        matches!(
            events.recv_timeout(TAKEN_GRACE),
            Err(mpsc::RecvTimeoutError::Timeout)
        )
    }
}

fn timeout_from_env() -> Result<Duration, StartError> {
    let Some(value) = std::env::var_os(TIMEOUT_ENV) else {
        return Ok(DEFAULT_CONNECT_TIMEOUT);
    };
    let value = value.to_string_lossy().into_owned();
    parse_duration(&value).ok_or(StartError::InvalidEnv {
        var: TIMEOUT_ENV,
        value,
        expected:
            "a number of seconds, or a number followed by `s` or `ms`, such as 10, 2.5s or 500ms",
    })
}

fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let seconds = number.trim().parse::<f64>().ok()? * scale;
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
}

/// A secret for this start: 128 bits from std's randomly keyed hasher (seeded by the OS).
fn new_token() -> String {
    use std::hash::{BuildHasher, RandomState};
    let seed = (std::process::id(), Instant::now(), thread::current().id());
    let a = RandomState::new().hash_one(seed);
    let b = RandomState::new().hash_one((a, &seed));
    format!("{a:016x}{b:016x}")
}

/// Whether `exe` contains bincrew's worker entry point. Read only after a failed start.
pub(crate) fn looks_like_worker(exe: &Path) -> bool {
    let Ok(bytes) = std::fs::read(exe) else {
        // Unreadable: do not claim it is not a worker.
        return true;
    };
    let marker: Vec<u8> = ENTRY_MARKER_REVERSED.iter().rev().copied().collect();
    bytes.windows(marker.len()).any(|w| w == marker.as_slice())
}

/// What the platform spawns: see `os/unix.rs` for what every backend does with it.
pub(crate) struct Launch<'a> {
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [OsString],
    /// The whole environment, nothing inherited besides.
    pub(crate) env: Vec<(OsString, OsString)>,
    /// Discard stdout instead of sharing the app's.
    pub(crate) quiet_stdout: bool,
    /// The write end of the stderr pipe, closed by the app once the process has its copy.
    pub(crate) stderr: std::io::PipeWriter,
}

/// A started worker process: its handle, its stderr and what it reported before dying.
///
/// Dropping it kills the process if it has not exited, without waiting; a process-wide reaper
/// reaps it.
pub(crate) struct Process {
    pub(crate) name: String,
    pid: u32,
    child: crate::os::Child,
    stderr: Arc<StderrTail>,
    panic: Mutex<Option<(String, Option<String>)>>,
}

impl Process {
    fn spawn(spec: &Spec, env: Vec<(OsString, OsString)>) -> Result<Process, StartError> {
        let spawn_error = |source| StartError::Spawn {
            worker: spec.name.clone(),
            exe: spec.exe.clone(),
            source,
        };
        let (stderr_read, stderr_write) = std::io::pipe().map_err(spawn_error)?;
        let child = crate::os::spawn(Launch {
            program: &spec.program,
            args: &spec.args,
            env,
            quiet_stdout: spec.quiet_stdout,
            stderr: stderr_write,
        })
        .map_err(spawn_error)?;
        // On failure `child` is dropped, which kills the process.
        let stderr =
            StderrTail::start(stderr_read, spec.forward_stderr, &spec.name).map_err(spawn_error)?;
        Ok(Process {
            name: spec.name.clone(),
            pid: child.id(),
            child,
            stderr,
            panic: Mutex::new(None),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends SIGKILL (on Windows, terminates), unless the process was already reaped. Does not
    /// wait.
    pub(crate) fn kill(&self) {
        if let Err(e) = self.child.kill() {
            tracing::debug!(worker = %self.name, error = %e, "killing the worker failed");
        }
    }

    /// Kills the process and waits for its exit, for a caller that needs the status. (Dropping
    /// the `Process` is enough to clean up.)
    pub(crate) fn kill_and_reap(&self) {
        self.kill();
        self.wait();
    }

    /// Blocks until the process exits. Always `Some`: the status is "unknown" when the process
    /// was reaped by someone else.
    pub(crate) fn wait(&self) -> Option<ExitInfo> {
        Some(self.child.wait())
    }

    /// The exit status, if the process has exited.
    pub(crate) fn try_exit(&self) -> Option<ExitInfo> {
        self.child.try_wait()
    }

    /// Waits for the process to exit until `deadline`.
    pub(crate) fn wait_deadline(&self, deadline: Instant) -> Option<ExitInfo> {
        self.child.wait_deadline(deadline)
    }

    pub(crate) fn record_panic(&self, message: String, location: Option<String>) {
        *lock(&self.panic) = Some((message, location));
    }

    pub(crate) fn stderr_tail(&self, grace: Duration) -> String {
        self.stderr.tail(grace)
    }

    /// Everything known about how the worker ended.
    pub(crate) fn crash_report(
        &self,
        exit: Option<ExitInfo>,
        killed_by_app: Option<String>,
    ) -> WorkerCrashError {
        let (panic_message, panic_location) = match lock(&self.panic).clone() {
            Some((message, location)) => (Some(message), location),
            None => (None, None),
        };
        WorkerCrashError {
            worker: self.name.clone(),
            pid: self.pid,
            exit,
            panic_message,
            panic_location,
            stderr_tail: self.stderr.tail(STDERR_GRACE),
            killed_by_app,
        }
    }
}

/// The end of a worker's stderr, filled by the pump thread, which also hands it to [`Forward`].
struct StderrTail {
    state: Mutex<TailState>,
    closed: Condvar,
}

struct TailState {
    tail: VecDeque<u8>,
    /// The stream ended: the process and every process that inherited its stderr exited.
    ended: bool,
}

impl StderrTail {
    fn start(
        pipe: std::io::PipeReader,
        forward: bool,
        name: &str,
    ) -> std::io::Result<Arc<StderrTail>> {
        let tail = Arc::new(StderrTail {
            state: Mutex::new(TailState {
                tail: VecDeque::new(),
                ended: false,
            }),
            closed: Condvar::new(),
        });
        let forward = if forward { Forward::global() } else { None };
        let filler = tail.clone();
        crate::os::drain(
            pipe,
            name,
            Box::new(move |chunk| match chunk {
                Some(chunk) => {
                    if let Some(forward) = &forward {
                        forward.push(chunk);
                    }
                    let mut state = lock(&filler.state);
                    state.tail.extend(chunk);
                    let excess = state.tail.len().saturating_sub(STDERR_TAIL);
                    state.tail.drain(..excess);
                }
                None => {
                    lock(&filler.state).ended = true;
                    filler.closed.notify_all();
                }
            }),
        )?;
        Ok(tail)
    }

    /// The tail, after waiting up to `grace` for the stream to end.
    fn tail(&self, grace: Duration) -> String {
        let state = lock(&self.state);
        let (state, _) = self
            .closed
            .wait_timeout_while(state, grace, |s| !s.ended)
            .unwrap_or_else(PoisonError::into_inner);
        let bytes: Vec<u8> = state.tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Worker stderr on its way to the app's stderr: a bounded queue, and one thread for the whole
/// process that writes it.
///
/// The pump that drains every worker's stderr must never block: were it to write to an app's
/// stderr that is a full pipe nobody reads, every worker writing to its stderr (a panic hook
/// included) would block behind it. So the pump only queues, up to [`FORWARD_QUEUE`] bytes,
/// and drops (and counts) what does not fit; this thread writes, blocking as the app's stderr
/// pleases, and reports what was dropped with a warning at most once per
/// [`DROP_REPORT_EVERY`]. (The warning is emitted on this thread, so a subscriber writing to
/// the same full stderr blocks this thread only.)
struct Forward {
    queue: Mutex<ForwardQueue>,
    queued: Condvar,
    capacity: usize,
}

#[derive(Default)]
struct ForwardQueue {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    dropped: Dropped,
}

/// Stderr dropped since the last report.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Dropped {
    /// Newlines in the dropped chunks (at least one per chunk).
    lines: u64,
    bytes: u64,
}

impl Forward {
    fn new(capacity: usize) -> Forward {
        Forward {
            queue: Mutex::new(ForwardQueue::default()),
            queued: Condvar::new(),
            capacity,
        }
    }

    /// The queue to the app's stderr, with its thread started on first use; `None` when that
    /// thread cannot be started (then nothing is forwarded).
    fn global() -> Option<Arc<Forward>> {
        static FORWARD: OnceLock<Option<Arc<Forward>>> = OnceLock::new();
        FORWARD
            .get_or_init(|| {
                let forward = Arc::new(Forward::new(FORWARD_QUEUE));
                let writer = forward.clone();
                let started = thread::Builder::new()
                    .name("bincrew-forward".into())
                    .spawn(move || writer.run(std::io::stderr()));
                match started {
                    Ok(_) => Some(forward),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start the thread that forwards worker stderr: it is not forwarded");
                        None
                    }
                }
            })
            .clone()
    }

    /// Queues `chunk`, or drops it when the queue is full. Never blocks but on the lock, which
    /// is never held across a write.
    fn push(&self, chunk: &[u8]) {
        let mut queue = lock(&self.queue);
        if queue.bytes + chunk.len() > self.capacity {
            queue.dropped.bytes += chunk.len() as u64;
            queue.dropped.lines += chunk.iter().filter(|b| **b == b'\n').count().max(1) as u64;
            return;
        }
        queue.bytes += chunk.len();
        queue.chunks.push_back(chunk.to_vec());
        drop(queue);
        self.queued.notify_one();
    }

    /// Waits for the next chunk to write, and takes the drops to report when one is due.
    fn next(&self, last_report: Option<Instant>) -> (Option<Vec<u8>>, Option<Dropped>) {
        let due = |at: Option<Instant>| at.map_or(Instant::now(), |t| t + DROP_REPORT_EVERY);
        let mut queue = lock(&self.queue);
        while queue.chunks.is_empty() {
            if queue.dropped == Dropped::default() {
                queue = self
                    .queued
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let Some(left) = due(last_report).checked_duration_since(Instant::now()) else {
                break;
            };
            queue = self
                .queued
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let chunk = queue.chunks.pop_front();
        if let Some(chunk) = &chunk {
            queue.bytes -= chunk.len();
        }
        let report = (queue.dropped != Dropped::default() && due(last_report) <= Instant::now())
            .then(|| std::mem::take(&mut queue.dropped));
        (chunk, report)
    }

    fn run(&self, mut out: impl Write) {
        let mut last_report = None;
        loop {
            let (chunk, dropped) = self.next(last_report);
            if let Some(dropped) = dropped {
                last_report = Some(Instant::now());
                tracing::warn!(
                    lines = dropped.lines,
                    bytes = dropped.bytes,
                    "dropped {} lines of worker stderr: the app's stderr is not being read fast enough",
                    dropped.lines
                );
            }
            if let Some(chunk) = chunk {
                // The app's stderr being closed must not stop the forwarding.
                let _ = out.write_all(&chunk);
            }
        }
    }
}

/// Locks a mutex, going on with the data if a thread panicked while holding it: every critical
/// section here leaves the data consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_timeout_values() {
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5s"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn entry_marker_matches_the_worker_side() {
        let marker: Vec<u8> = ENTRY_MARKER_REVERSED.iter().rev().copied().collect();
        assert_eq!(marker, crate::serve::ENTRY_MARKER);
    }

    #[test]
    fn the_forward_queue_drops_and_counts_what_does_not_fit() {
        // No writer: the queue only fills, and pushing never waits for one.
        let forward = Forward::new(16);
        for _ in 0..4 {
            forward.push(b"1234567\n");
        }
        forward.push(b"no newline");
        let queue = lock(&forward.queue);
        assert_eq!(queue.chunks.len(), 2);
        assert_eq!(queue.bytes, 16);
        assert_eq!(
            queue.dropped,
            Dropped {
                lines: 3,
                bytes: 26
            }
        );
    }

    #[test]
    fn the_forward_thread_writes_in_order_and_reports_drops_once() {
        let forward = Forward::new(8);
        forward.push(b"ab");
        forward.push(b"cd");
        forward.push(b"too long to fit\n");
        // What the thread's loop does, one step at a time.
        let (chunk, report) = forward.next(None);
        assert_eq!(chunk.as_deref(), Some(&b"ab"[..]));
        assert_eq!(
            report,
            Some(Dropped {
                lines: 1,
                bytes: 16
            })
        );
        let (chunk, report) = forward.next(Some(Instant::now()));
        assert_eq!(chunk.as_deref(), Some(&b"cd"[..]));
        assert_eq!(report, None);
        assert_eq!(lock(&forward.queue).bytes, 0);
    }

    #[test]
    fn the_worker_environment_is_the_apps_with_this_starts_protocol_variables() {
        let builder = vec![
            ("BINCREW_TEST_BUILDER".into(), "b".into()),
            (PARALLELISM_ENV.into(), "7".into()),
        ];
        let protocol = vec![
            (WORKER_ENV.into(), "w".into()),
            (PARALLELISM_ENV.into(), "2".into()),
        ];
        let env = worker_env(&builder, protocol);
        let values = |key: &str| {
            env.iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .collect::<Vec<OsString>>()
        };
        assert_eq!(values(PARALLELISM_ENV), ["2"]);
        assert_eq!(values(WORKER_ENV), ["w"]);
        assert_eq!(values("BINCREW_TEST_BUILDER"), ["b"]);
        assert!(values(TOKEN_ENV).is_empty());
        if let Some((key, value)) = std::env::vars_os().find(|(k, _)| k == "PATH") {
            assert_eq!(values(key.to_str().unwrap_or_default()), [value]);
        }
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 32);
    }
}
