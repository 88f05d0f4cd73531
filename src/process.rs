//! The worker process and the handshake, shared by every way of starting a worker.
//!
//! [`start`] spawns the process, accepts its connection on a thread of its own (because
//! `IpcOneShotServer::accept` has no timeout), and waits for the hello while polling the process
//! for an early exit and watching the connect deadline. Whatever goes wrong, the process is killed
//! and reaped and the accept thread is unblocked before the error is returned.
//!
//! [`Process`] owns the child: its handle, the thread that drains its stderr into a bounded tail,
//! and the panic message the worker reported.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
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
    let mut env = spec.env.clone();
    env.push((WORKER_ENV.into(), spec.name.clone().into()));
    env.push((SERVER_ENV.into(), server_name.clone().into()));
    env.push((TOKEN_ENV.into(), token.clone().into()));
    env.push((APP_PID_ENV.into(), std::process::id().to_string().into()));
    if let Some(n) = spec.parallelism {
        env.push((PARALLELISM_ENV.into(), n.to_string().into()));
    }
    let process = Process::spawn(spec, &env)?;

    let (events, event_rx) = mpsc::channel();
    let accept = thread::Builder::new()
        .name(format!("bincrew-accept-{}", spec.name))
        .spawn(move || accept_connection(server, events));
    if let Err(source) = accept {
        process.kill_and_reap();
        return Err(ipc_error(source));
    }

    let handshake = Handshake {
        spec,
        app,
        token: &token,
        process: &process,
        timeout,
    };
    match handshake.wait(&event_rx, Instant::now() + timeout) {
        Ok(Ok((receiver, ready, hello, build))) => Ok(Started::Connected(Box::new(Connected {
            process,
            receiver,
            requests: ready.requests,
            hello,
            build,
        }))),
        Ok(Err(listed)) => {
            // It exits by itself after an unknown-worker hello; reap it.
            if process
                .wait_deadline(Instant::now() + STDERR_GRACE)
                .is_none()
            {
                process.kill_and_reap();
            }
            Ok(Started::Listed(Box::new(listed)))
        }
        Err(err) => {
            process.kill_and_reap();
            // The accept thread may still be blocked in `accept`: connecting unblocks it. When it
            // already accepted, this connect fails, and killing the process unblocked its recv.
            if let Ok(unblock) = IpcSender::<RawBytes>::connect(server_name) {
                let _ = unblock.send(RawBytes::default());
            }
            Err(err)
        }
    }
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
                None if now >= deadline => return Err(self.timed_out()),
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

    fn timed_out(&self) -> StartError {
        self.process.kill_and_reap();
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

/// A started worker process: its handle, its stderr and what it reported before dying.
pub(crate) struct Process {
    pub(crate) name: String,
    pid: u32,
    handle: duct::Handle,
    stderr: Arc<StderrTail>,
    panic: Mutex<Option<(String, Option<String>)>>,
}

impl Process {
    fn spawn(spec: &Spec, env: &[(OsString, OsString)]) -> Result<Process, StartError> {
        let spawn_error = |source| StartError::Spawn {
            worker: spec.name.clone(),
            exe: spec.exe.clone(),
            source,
        };
        let (stderr_read, stderr_write) = std::io::pipe().map_err(spawn_error)?;
        let mut expr = duct::cmd(&spec.program, &spec.args)
            .stdin_null()
            .stderr_file(stderr_write)
            .unchecked();
        if spec.quiet_stdout {
            expr = expr.stdout_null();
        }
        for (key, value) in env {
            expr = expr.env(key, value);
        }
        let handle = crate::os::start(expr.clone()).map_err(spawn_error)?;
        // The expression holds our copy of the stderr pipe's write end: drop it, so the reader
        // sees the end of the stream when the worker exits.
        drop(expr);
        let pid = handle.pids().first().copied().unwrap_or(0);
        let stderr = StderrTail::start(stderr_read, spec.forward_stderr, &spec.name);
        let stderr = match stderr {
            Ok(stderr) => stderr,
            Err(source) => {
                let _ = handle.kill();
                let _ = handle.wait();
                return Err(spawn_error(source));
            }
        };
        Ok(Process {
            name: spec.name.clone(),
            pid,
            handle,
            stderr,
            panic: Mutex::new(None),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn kill(&self) {
        if let Err(e) = self.handle.kill() {
            tracing::debug!(worker = %self.name, error = %e, "killing the worker failed");
        }
    }

    pub(crate) fn kill_and_reap(&self) {
        self.kill();
        self.wait();
    }

    /// Blocks until the process exits; `None` if waiting failed.
    pub(crate) fn wait(&self) -> Option<ExitInfo> {
        match self.handle.wait() {
            Ok(out) => Some(ExitInfo::from_status(&out.status)),
            Err(e) => {
                tracing::warn!(worker = %self.name, error = %e, "waiting for the worker failed");
                None
            }
        }
    }

    pub(crate) fn try_exit(&self) -> Option<ExitInfo> {
        match self.handle.try_wait() {
            Ok(out) => out.map(|o| ExitInfo::from_status(&o.status)),
            Err(_) => None,
        }
    }

    pub(crate) fn wait_deadline(&self, deadline: Instant) -> Option<ExitInfo> {
        match self.handle.wait_deadline(deadline) {
            Ok(out) => out.map(|o| ExitInfo::from_status(&o.status)),
            Err(_) => None,
        }
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

/// The end of a worker's stderr, filled by a thread that also forwards it to the app's stderr.
struct StderrTail {
    state: Mutex<(VecDeque<u8>, bool)>,
    closed: Condvar,
}

impl StderrTail {
    fn start(
        pipe: std::io::PipeReader,
        forward: bool,
        name: &str,
    ) -> std::io::Result<Arc<StderrTail>> {
        let tail = Arc::new(StderrTail {
            state: Mutex::new((VecDeque::new(), false)),
            closed: Condvar::new(),
        });
        let filler = tail.clone();
        crate::os::drain(
            pipe,
            name,
            Box::new(move |chunk| match chunk {
                Some(chunk) => {
                    if forward {
                        // The app's stderr being closed must not stop the draining.
                        let _ = std::io::stderr().write_all(chunk);
                    }
                    let mut state = lock(&filler.state);
                    state.0.extend(chunk);
                    let excess = state.0.len().saturating_sub(STDERR_TAIL);
                    state.0.drain(..excess);
                }
                None => {
                    lock(&filler.state).1 = true;
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
            .wait_timeout_while(state, grace, |s| !s.1)
            .unwrap_or_else(PoisonError::into_inner);
        let bytes: Vec<u8> = state.0.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
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
    fn tokens_differ() {
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 32);
    }
}
