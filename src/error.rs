//! One error type per operation: starting a worker, running a request, shutting down.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::build::{BuildInfo, Compat, MismatchKind};

/// How a process ended: an exit code or, on Unix, a signal.
///
/// ```no_run
/// # let worker = bincrew::Worker::<u32, u32>::start_blocking("w").unwrap();
/// if let Some(exit) = worker.crash_error().and_then(|crash| crash.exit) {
///     match (exit.code, exit.signal_name()) {
///         (Some(code), _) => println!("exited with code {code}"),
///         (None, Some(signal)) => println!("killed by {signal}"),
///         _ => println!("ended: {exit}"),
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExitInfo {
    /// The exit code, when the process exited by itself.
    pub code: Option<i32>,
    /// The signal that ended the process (Unix).
    pub signal: Option<i32>,
}

impl ExitInfo {
    pub(crate) fn from_status(status: &std::process::ExitStatus) -> Self {
        ExitInfo {
            code: status.code(),
            signal: crate::os::exit_signal(status),
        }
    }

    /// The signal's name, such as `SIGSEGV`, when a known signal ended the process.
    pub fn signal_name(&self) -> Option<&'static str> {
        self.signal.and_then(crate::os::signal_name)
    }

    /// Whether the process exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(sig)) => match self.signal_name() {
                Some(name) => write!(f, "signal {sig} ({name})"),
                None => write!(f, "signal {sig}"),
            },
            (None, None) => f.write_str("an unknown status"),
        }
    }
}

/// What is known about a worker process that died: how it ended, its panic message, the end of
/// its stderr.
///
/// Every request in flight when the worker died fails with [`RunError::Crashed`] holding this, and
/// so does every later [`Worker::run`](crate::Worker::run).
///
/// ```no_run
/// use bincrew::{RunError, Worker};
///
/// # let worker = Worker::<String, usize>::start_blocking("words").unwrap();
/// match worker.run_blocking("some text".to_owned()) {
///     Ok(n) => println!("{n} words"),
///     Err(RunError::Crashed(crash)) => {
///         // "worker `words` (pid 4242) was killed by signal 11 (SIGSEGV) ..."
///         eprintln!("{crash}");
///         if let Some(panic) = &crash.panic_message {
///             eprintln!("it panicked: {panic}");
///         }
///         eprintln!("the end of its stderr:\n{}", crash.stderr_tail);
///     }
///     Err(other) => eprintln!("{other}"),
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerCrashError {
    /// The worker's name.
    pub worker: String,
    /// The worker's process id.
    pub pid: u32,
    /// How the process ended, when it could be reaped.
    pub exit: Option<ExitInfo>,
    /// The panic message, when the worker panicked.
    pub panic_message: Option<String>,
    /// Where the worker panicked (`file:line:column`), when it did.
    pub panic_location: Option<String>,
    /// The last lines the worker wrote to stderr (at most 16 KiB).
    pub stderr_tail: String,
    /// Why the app killed the worker, when it did: it broke the protocol (sent a message that
    /// does not decode, or closed its channel while alive), it did not give up a timed-out
    /// request, or [`Worker::kill`](crate::Worker::kill) was called.
    pub killed_by_app: Option<String>,
    /// The limit the worker exceeded, when a limit ended it (see
    /// [`WorkerBuilder::memory_limit`](crate::WorkerBuilder::memory_limit) and
    /// [`WorkerBuilder::cpu_limit_per_request`](crate::WorkerBuilder::cpu_limit_per_request)).
    pub limit: Option<crate::contain::LimitExceeded>,
}

impl WorkerCrashError {
    /// The exit code, when the worker exited by itself.
    pub fn code(&self) -> Option<i32> {
        self.exit.and_then(|e| e.code)
    }

    /// The signal that killed the worker (Unix).
    pub fn signal(&self) -> Option<i32> {
        self.exit.and_then(|e| e.signal)
    }

    /// The name of the signal that killed the worker, such as `SIGSEGV`.
    pub fn signal_name(&self) -> Option<&'static str> {
        self.exit.and_then(|e| e.signal_name())
    }
}

impl fmt::Display for WorkerCrashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker `{}` (pid {}) ", self.worker, self.pid)?;
        if let Some(limit) = &self.limit {
            write!(f, "exceeded {limit} and ")?;
            return match &self.exit {
                Some(exit) if exit.signal.is_some() => write!(f, "was killed by {exit}"),
                Some(exit) => write!(f, "exited with {exit}"),
                None => f.write_str("died"),
            };
        }
        if let Some(reason) = &self.killed_by_app {
            write!(f, "was killed by the app: {reason}")?;
        } else if let Some(msg) = &self.panic_message {
            write!(f, "panicked: {msg}")?;
            if let Some(loc) = &self.panic_location {
                write!(f, " (at {loc})")?;
            }
        } else {
            match &self.exit {
                Some(exit) if exit.signal.is_some() => write!(f, "was killed by {exit}")?,
                Some(exit) => write!(f, "exited with {exit}")?,
                None => f.write_str("died")?,
            }
            if let Some(line) = self
                .stderr_tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
            {
                write!(f, "; its stderr ends with: {}", line.trim())?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for WorkerCrashError {}

/// The worker binary is not compatible with the app: both identities, the policy and the fix.
///
/// ```no_run
/// use bincrew::{StartError, Worker};
///
/// if let Err(StartError::VersionMismatch(m)) =
///     Worker::<Vec<u8>, u64>::builder("hash").binary("hasher").start_blocking()
/// {
///     eprintln!("{} is {} {}; the app wants {}", m.exe.display(), m.peer.package, m.peer.version, m.compat);
///     eprintln!("fix: {}", m.fix);
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VersionMismatch {
    /// The worker's name.
    pub worker: String,
    /// The worker executable that was started.
    pub exe: PathBuf,
    /// The policy that was checked.
    pub compat: Compat,
    /// What did not match.
    pub kind: MismatchKind,
    /// The app's identity.
    pub app: BuildInfo,
    /// The worker binary's identity.
    pub peer: BuildInfo,
    /// What to rebuild or redeploy.
    pub fix: String,
}

impl VersionMismatch {
    pub(crate) fn new(
        worker: &str,
        exe: &std::path::Path,
        compat: &Compat,
        app: &BuildInfo,
        peer: &BuildInfo,
        kind: MismatchKind,
        fix: String,
    ) -> Self {
        VersionMismatch {
            worker: worker.to_owned(),
            exe: exe.to_owned(),
            compat: compat.clone(),
            kind,
            app: app.clone(),
            peer: peer.clone(),
            fix,
        }
    }
}

impl fmt::Display for VersionMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker `{}` is binary {} at {}, but app {} requires {}: {}",
            self.worker,
            self.peer,
            self.exe.display(),
            self.app,
            self.compat,
            self.fix
        )
    }
}

/// Why [`Worker::start`](crate::Worker::start) failed. No worker process is left running.
///
/// Printed with `{}` or `{:?}` (as `main` does when it returns the error), it says what happened
/// and what to do, in a few lines; [`std::error::Error::source`] gives the cause where there is
/// one.
///
/// ```no_run
/// use bincrew::{StartError, Worker};
///
/// match Worker::<Vec<u8>, u64>::builder("hash").binary("hasher").start_blocking() {
///     Ok(_worker) => {}
///     Err(StartError::NotFound { tried, .. }) => eprintln!("not found; looked in {tried:?}"),
///     Err(e @ StartError::TypeMismatch { .. }) => eprintln!("rebuild: {e}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// This executable did not call [`init!`](crate::init), so it has no identity to compare.
    #[error("bincrew::init!() was not called at the top of this executable's main")]
    NotInitialized,
    /// This process was started as a worker but never served: its `main` went on into app code
    /// that starts workers. It refuses, rather than start copies of itself without end.
    #[error("this process was started as worker `{worker}` (BINCREW_WORKER={worker}) but does not serve it: its main must call bincrew::init!() and then bincrew::Workers::run (or run_worker) before anything else; if this app was not started by bincrew, unset BINCREW_WORKER where it is started")]
    StartedAsWorker {
        /// The worker name it was started as.
        worker: String,
    },
    /// An environment variable that configures bincrew holds a value it cannot use.
    #[error("environment variable {var}={value:?} is not valid: {expected}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it should look like.
        expected: &'static str,
    },
    /// The IPC server for the handshake could not be created.
    #[error("cannot create the handshake channel for worker `{worker}`")]
    Ipc {
        /// The worker's name.
        worker: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A thread bincrew needs to start or run the worker could not be started.
    #[error("cannot start a thread for worker `{worker}`")]
    Thread {
        /// The worker's name.
        worker: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The dedicated worker binary was found nowhere.
    #[error("cannot find worker binary `{binary}` for worker `{worker}`; looked in: {}", tried.join("; "))]
    NotFound {
        /// The worker's name.
        worker: String,
        /// The binary's name.
        binary: String,
        /// Every place tried, in order, with why it did not do.
        tried: Vec<String>,
    },
    /// The worker executable could not be started.
    #[error("cannot start worker `{worker}` from {}", exe.display())]
    Spawn {
        /// The worker's name.
        worker: String,
        /// The executable.
        exe: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The worker process exited before completing the handshake.
    #[error("worker `{worker}` ({}) exited before the handshake with {exit}{}", exe.display(), stderr_suffix(stderr))]
    ExitedBeforeHandshake {
        /// The worker's name.
        worker: String,
        /// The executable.
        exe: PathBuf,
        /// How it ended.
        exit: ExitInfo,
        /// The end of its stderr.
        stderr: String,
    },
    /// The executable is not a bincrew worker: it does not contain bincrew's worker entry point
    /// and it exited or did not connect.
    #[error("{} is not a bincrew worker (it has no bincrew worker entry point; it {outcome}){}", exe.display(), stderr_suffix(stderr))]
    NotAWorker {
        /// The worker's name.
        worker: String,
        /// The executable.
        exe: PathBuf,
        /// What it did instead of connecting.
        outcome: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// The worker did not complete the handshake within the connect timeout and was killed.
    #[error("worker `{worker}` ({}) did not complete the handshake within {timeout:?} and was killed (raise it with .connect_timeout() or BINCREW_CONNECT_TIMEOUT){}", exe.display(), stderr_suffix(stderr))]
    Timeout {
        /// The worker's name.
        worker: String,
        /// The executable.
        exe: PathBuf,
        /// The connect timeout.
        timeout: Duration,
        /// The end of its stderr.
        stderr: String,
    },
    /// The executable is a bincrew binary, but it serves no worker by that name.
    #[error("{} does not serve worker `{worker}`; it serves {}{hint}", exe.display(), list_or_none(available))]
    UnknownWorker {
        /// The requested worker name.
        worker: String,
        /// The executable.
        exe: PathBuf,
        /// The worker names it serves.
        available: Vec<String>,
        /// What to do about it, when bincrew can tell (empty otherwise).
        hint: String,
    },
    /// The app's own executable, started as a worker, exited without serving it: its `main`
    /// does not call [`run_worker`](crate::run_worker) (or [`Workers::run`](crate::Workers)) for
    /// that name before the app's own work, or failed before it did.
    #[error("{} was started as worker `{worker}` but its main never served it: it exited with {exit} before calling bincrew::run_worker(\"{worker}\", ...) (or a bincrew::Workers that registers `{worker}`); call it at the top of main, right after bincrew::init!(), before the app's own work{}", exe.display(), stderr_suffix(stderr))]
    NotServed {
        /// The worker's name.
        worker: String,
        /// The executable (the app's own).
        exe: PathBuf,
        /// How it exited.
        exit: ExitInfo,
        /// The end of its stderr.
        stderr: String,
    },
    /// [`WorkerBuilder::in_test`](crate::WorkerBuilder::in_test) was called from a thread that
    /// is not a test's.
    #[error("worker `{worker}` was started with in_test() from {}, which is not a #[test] (libtest names each test's thread after the test): call in_test() in the test function itself", thread.as_deref().map_or_else(|| "a thread without a name".to_owned(), |t| format!("thread `{t}`")))]
    NotATest {
        /// The worker's name.
        worker: String,
        /// The thread's name.
        thread: Option<String>,
    },
    /// The worker binary is not compatible with the app under the chosen [`Compat`] policy.
    #[error("{0}")]
    VersionMismatch(Box<VersionMismatch>),
    /// The worker's request or response type is not the app's: another type, or the same type
    /// in another shape (a field added, removed, renamed or retyped; a variant added or
    /// removed). Shapes are compared where both sides could trace the type, names otherwise
    /// (see the crate docs, "What the handshake compares").
    #[error("worker `{worker}` does not take the app's {side} type: `{app_type}` in the app, `{worker_type}` in the worker: {difference}; build the app and the worker from the same definition of the type (or carry self-describing data in `bincrew::Json`)")]
    TypeMismatch {
        /// The worker's name.
        worker: String,
        /// Which of the two types differs.
        side: TypeSide,
        /// The app's type (its Rust name).
        app_type: String,
        /// The worker's type (its Rust name).
        worker_type: String,
        /// The first difference, in words.
        difference: String,
    },
    /// Another process connected to the handshake server before the worker and sent nothing, so
    /// the worker's own connection was never taken. The worker was killed and reaped.
    #[error("worker `{worker}` ({}) could not complete the handshake: another process took the handshake connection first and sent nothing (something on this machine connects to bincrew's handshake sockets); the worker was killed", exe.display())]
    HandshakeTaken {
        /// The worker's name.
        worker: String,
        /// The executable.
        exe: PathBuf,
    },
    /// The process that connected broke the handshake: a wrong token, a message that is not a
    /// bincrew hello, or a worker that did not call [`init!`](crate::init).
    #[error("worker `{worker}` ({}) was rejected in the handshake: {reason}", exe.display())]
    Handshake {
        /// The worker's name.
        worker: String,
        /// The executable.
        exe: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A limit the builder set (memory, CPU per request, core dumps off) cannot be applied here,
    /// and [`limits_best_effort`](crate::WorkerBuilder::limits_best_effort) was not asked for.
    /// The worker was killed.
    #[error("cannot apply the {limit} of worker `{worker}`: {reason} (start it with .limits_best_effort(true) to run without it)")]
    Limit {
        /// The worker's name.
        worker: String,
        /// Which limit: `memory limit`, `CPU limit`, `core dump limit`.
        limit: &'static str,
        /// Why it cannot be applied.
        reason: String,
        /// The system's error, when there is one.
        #[source]
        source: Option<io::Error>,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let tail: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .take(3)
        .collect();
    if tail.is_empty() {
        String::new()
    } else {
        let lines: Vec<&str> = tail.into_iter().rev().map(str::trim).collect();
        format!("; its stderr ends with: {}", lines.join(" | "))
    }
}

pub(crate) fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "no workers".to_owned()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a request failed.
///
/// ```no_run
/// use std::time::Duration;
/// use bincrew::{RunError, RunOptions, Worker};
///
/// # let worker = Worker::<String, usize>::start_blocking("words").unwrap();
/// let options = RunOptions::new().timeout(Duration::from_secs(2));
/// match worker.run_with("text".to_owned(), options).wait() {
///     Ok(n) => println!("{n}"),
///     Err(RunError::TimedOut { .. }) => eprintln!("too slow; the worker was told to give up"),
///     Err(RunError::Crashed(crash)) => eprintln!("{crash}"),
///     Err(e @ RunError::RequestDecode { .. }) => eprintln!("this request only: {e}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
#[derive(Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The worker process died; this says how.
    #[error(transparent)]
    Crashed(Arc<WorkerCrashError>),
    /// The worker is shutting down or has shut down and takes no new requests.
    #[error("worker `{worker}` is shut down and takes no new requests")]
    ShutDown {
        /// The worker's name.
        worker: String,
    },
    /// The request was not answered within its timeout; the worker was told to give it up.
    #[error("worker `{worker}` did not answer within {timeout:?}")]
    TimedOut {
        /// The worker's name.
        worker: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The [`WorkerPool`](crate::WorkerPool) reached its restart limit and takes no requests.
    #[error("worker pool `{pool}` failed: {reason}")]
    PoolFailed {
        /// The pool's worker name.
        pool: String,
        /// Why: the restart limit, and the last crash.
        reason: String,
        /// The last crash of one of its workers.
        #[source]
        last_crash: Option<Arc<WorkerCrashError>>,
    },
    /// The app could not encode the request; it was not sent. Other requests are not affected.
    #[error(
        "cannot encode a `{type_name}` request for worker `{worker}`: {reason}; it was not sent"
    )]
    RequestEncode {
        /// The worker's name.
        worker: String,
        /// The request type.
        type_name: String,
        /// What the encoder said, with a hint where one helps.
        reason: String,
    },
    /// The worker could not decode the request; it did not run it and serves on. Other requests
    /// are not affected.
    #[error(
        "worker `{worker}` cannot decode a `{type_name}` request: {reason}; it did not run it"
    )]
    RequestDecode {
        /// The worker's name.
        worker: String,
        /// The request type.
        type_name: String,
        /// What the decoder said, with a hint where one helps.
        reason: String,
    },
    /// The worker ran the request but could not encode its response, which is lost. The worker
    /// serves on; other requests are not affected.
    #[error("worker `{worker}` cannot encode its `{type_name}` response: {reason}; the request ran, its response is lost")]
    ResponseEncode {
        /// The worker's name.
        worker: String,
        /// The response type.
        type_name: String,
        /// What the encoder said, with a hint where one helps.
        reason: String,
    },
    /// The app could not decode the worker's response, which is lost. The worker serves on;
    /// other requests are not affected.
    #[error("cannot decode the `{type_name}` response of worker `{worker}`: {reason}; the request ran, its response is lost")]
    ResponseDecode {
        /// The worker's name.
        worker: String,
        /// The response type.
        type_name: String,
        /// What the decoder said, with a hint where one helps.
        reason: String,
    },
    /// The worker already has as many requests waiting to be sent as the app allows
    /// ([`WorkerBuilder::max_pending`](crate::WorkerBuilder::max_pending)); the request was not
    /// queued.
    #[error("worker `{worker}` has {limit} requests waiting to be sent, its limit: the request was not queued (the worker is busy, stopped or flooded)")]
    Overloaded {
        /// The worker's name.
        worker: String,
        /// The limit that was reached.
        limit: usize,
    },
}

/// Which of a worker's two types an error is about.
///
/// ```no_run
/// # let err: bincrew::StartError = todo!();
/// if let bincrew::StartError::TypeMismatch { side, difference, .. } = &err {
///     eprintln!("the {side} types differ: {difference}");
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeSide {
    /// The request type (`I` of `Worker<I, O>`).
    Request,
    /// The response type (`O` of `Worker<I, O>`).
    Response,
}

impl fmt::Display for TypeSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TypeSide::Request => "request",
            TypeSide::Response => "response",
        })
    }
}

/// Why [`Worker::shutdown`](crate::Worker::shutdown) did not end in a clean exit.
///
/// ```no_run
/// # let worker = bincrew::Worker::<u32, u32>::start_blocking("w").unwrap();
/// match worker.shutdown_blocking() {
///     Ok(()) => {}
///     Err(bincrew::ShutdownError::Killed { grace, .. }) => {
///         eprintln!("still busy after {grace:?}: killed")
///     }
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
#[derive(Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The worker died while draining its requests.
    #[error(transparent)]
    Crashed(Arc<WorkerCrashError>),
    /// The worker did not exit within the grace period and was killed.
    #[error(
        "worker `{worker}` did not exit within {grace:?} of the shutdown request and was killed"
    )]
    Killed {
        /// The worker's name.
        worker: String,
        /// The grace period.
        grace: Duration,
    },
}

/// `{:?}` says what `Display` says, followed by the chain of causes: what `main` prints when it
/// returns the error, a few lines rather than every field of every nested value.
fn debug_chain(error: &dyn std::error::Error, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    fmt::Display::fmt(error, f)?;
    let mut source = error.source();
    if source.is_some() {
        f.write_str("\n\nCaused by:")?;
    }
    while let Some(cause) = source {
        write!(f, "\n    {cause}")?;
        source = cause.source();
    }
    Ok(())
}

impl fmt::Debug for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_chain(self, f)
    }
}

impl fmt::Debug for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_chain(self, f)
    }
}

impl fmt::Debug for ShutdownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_chain(self, f)
    }
}

/// Why [`WorkerPool::roll`](crate::WorkerPool::roll) stopped before replacing every worker. The
/// workers it had not replaced yet keep serving.
///
/// ```no_run
/// # let pool = bincrew::WorkerPool::<u32, u32>::builder("w").start_blocking().unwrap();
/// // A new worker binary was deployed beside the app: replace the workers one by one.
/// match pool.roll_blocking() {
///     Ok(()) => println!("every worker runs the new binary"),
///     Err(bincrew::RollError::Start { replaced, source, .. }) => {
///         eprintln!("stopped after {replaced}; the old workers serve on: {source}")
///     }
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum RollError {
    /// A replacement did not start (its handshake failed, say, on a version mismatch): the roll
    /// stopped there.
    #[error("rolling replacement of pool `{pool}` stopped after {replaced} of {workers} workers: a replacement did not start")]
    Start {
        /// The pool's worker name.
        pool: String,
        /// How many workers had been replaced.
        replaced: usize,
        /// How many workers the pool has.
        workers: usize,
        /// Why the replacement did not start.
        #[source]
        source: Box<StartError>,
    },
    /// The pool was shut down (or dropped) before or during the roll.
    #[error("pool `{pool}` is shut down")]
    ShutDown {
        /// The pool's worker name.
        pool: String,
    },
    /// The pool had failed (its restart limit was reached).
    #[error("pool `{pool}` failed: {reason}")]
    PoolFailed {
        /// The pool's worker name.
        pool: String,
        /// Why it failed.
        reason: String,
    },
}

impl fmt::Debug for RollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_chain(self, f)
    }
}
