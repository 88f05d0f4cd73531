//! The worker process and the handshake, shared by every way of starting a worker.
//!
//! - `mod.rs`: [`start`], what a start needs ([`Spec`]) and gives ([`Started`]), the worker's
//!   environment.
//! - `handshake.rs`: accepting the worker's connection and checking its hello.
//! - `child.rs`: [`Process`], the handle on a started worker process.
//! - `stderr.rs`: the tail of a worker's stderr, and forwarding it to the app's stderr.
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
//! process inherits no descriptor of the app but its stdin, stdout and stderr (on Linux; see
//! `os/linux.rs`), which are the null device, its stderr pipe and the stderr pipe unless the
//! builder asks otherwise.
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
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcOneShotServer, IpcSender, OpaqueIpcReceiver};

use crate::build::{build_info, BuildInfo, Compat};
use crate::env::{
    APP_PID_ENV, CPU_LIMIT_ENV, PARALLELISM_ENV, SERVER_ENV, TIMEOUT_ENV, TOKEN_ENV, WORKER_ENV,
};
use crate::error::StartError;
use crate::wire::hello::{Greeting, Hello};

mod child;
mod handshake;
mod limits;
mod stderr;

pub(crate) use child::Process;
use handshake::{accept_connection, Handshake};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a crash report waits for the rest of stderr after the process exited.
pub(super) const STDERR_GRACE: Duration = Duration::from_millis(500);

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
    /// Whether the app started its own executable.
    pub(crate) self_spawn: bool,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) check: Check,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) forward_stderr: bool,
    pub(crate) stdin: crate::os::WorkerStdin,
    pub(crate) stdout: crate::os::WorkerStdout,
    pub(crate) current_dir: Option<PathBuf>,
    /// Start from an empty environment instead of the app's.
    pub(crate) env_clear: bool,
    /// Variables of the app's environment the worker does not get.
    pub(crate) env_remove: Vec<OsString>,
    pub(crate) parallelism: Option<usize>,
    /// Memory, CPU and core dump limits.
    pub(crate) limits: crate::contain::Limits,
}

/// What the app checks in the hello.
pub(crate) enum Check {
    /// A worker for this app: its identity against the policy, and its types.
    App {
        compat: Compat,
        request: std::sync::Arc<crate::wire::shape::Traced>,
        response: std::sync::Arc<crate::wire::shape::Traced>,
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
    /// The thread that accepted the connection, waiting to run what the app gives it next (the
    /// worker's reader), so that a start costs one thread, not two. Dropped unused, it ends.
    pub(crate) next_job: NextJob,
}

/// Work for the thread that accepted a worker's connection, once the handshake is done; see
/// [`Connected::next_job`].
pub(crate) type NextJob = mpsc::Sender<Box<dyn FnOnce() + Send>>;

/// Starts the worker process and completes the handshake, and says how it went in `tracing`
/// events (target `bincrew`): the worker, its pid and executable, and the handshake's duration.
pub(crate) fn start(spec: &Spec) -> Result<Started, StartError> {
    let began = std::time::Instant::now();
    let started = start_process(spec);
    let ms = began.elapsed().as_secs_f64() * 1e3;
    match &started {
        Ok(Started::Connected(c)) => tracing::info!(
            worker = %spec.name,
            pid = c.process.pid(),
            exe = %spec.exe.display(),
            self_spawn = spec.self_spawn,
            handshake_ms = ms,
            "worker started"
        ),
        Ok(Started::Listed(_)) => {}
        Err(e) => {
            tracing::warn!(worker = %spec.name, exe = %spec.exe.display(), handshake_ms = ms, error = %e, "worker start failed")
        }
    }
    started
}

fn start_process(spec: &Spec) -> Result<Started, StartError> {
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
    let (server, server_name) = IpcOneShotServer::<Greeting>::new().map_err(ipc_error)?;
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
    if let Some(limit) = spec
        .limits
        .cpu_per_request
        .filter(|_| cfg!(target_os = "linux"))
    {
        protocol.push((CPU_LIMIT_ENV.into(), limit.as_micros().to_string().into()));
    }
    let process = Process::spawn(spec, worker_env(spec, protocol))?;

    let (events, event_rx) = mpsc::channel();
    let (next_job, next_job_rx): (NextJob, _) = mpsc::channel();
    let accept = thread::Builder::new()
        // It accepts the connection, then reads the worker's messages (`Connected::next_job`).
        .name(format!("bincrew-reader-{}", spec.name))
        .spawn(move || {
            if accept_connection(server, events) {
                // Connected: the app may hand this thread the worker's reader.
                if let Ok(job) = next_job_rx.recv() {
                    job();
                }
            }
        });
    if let Err(source) = accept {
        return Err(StartError::Thread {
            worker: spec.name.clone(),
            source,
        });
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
    let outcome = handshake.wait(&event_rx, Instant::now() + timeout);
    let outcome = match outcome {
        Ok(Ok(connected)) => match process.contained.check_cpu_watchdog(process.pid()) {
            Ok(()) => Ok(Ok(connected)),
            Err(reason) if spec.limits.best_effort => {
                tracing::warn!(worker = %spec.name, "starting without its CPU limit: {reason}");
                Ok(Ok(connected))
            }
            Err(reason) => Err(StartError::Limit {
                worker: spec.name.clone(),
                limit: "CPU limit",
                reason,
                source: None,
            }),
        },
        other => other,
    };
    match outcome {
        Ok(Ok((receiver, ready, hello, build))) => Ok(Started::Connected(Box::new(Connected {
            process,
            receiver,
            requests: ready.requests,
            control: ready.control,
            hello,
            build,
            next_job,
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
                if let Ok(unblock) = IpcSender::<Greeting>::connect(server_name) {
                    let _ = unblock.send(Greeting::bare(Vec::new()));
                }
            }
            Err(err)
        }
    }
}

/// The worker's environment: the app's own without the protocol variables it inherited (they
/// belong to the start that set them: a `BINCREW_PARALLELISM` left in a shell would cap every
/// worker), then the builder's variables, then this start's protocol variables.
fn worker_env(spec: &Spec, protocol: Vec<(OsString, OsString)>) -> Vec<(OsString, OsString)> {
    let inherited = std::env::vars_os().filter(|_| !spec.env_clear);
    let mut env: Vec<(OsString, OsString)> = inherited
        .filter(|(key, _)| !crate::env::is_protocol_var(key))
        .filter(|(key, _)| !spec.env_remove.iter().any(|r| crate::env::same_key(r, key)))
        .collect();
    for (key, value) in spec.env.iter().cloned().chain(protocol) {
        match env.iter_mut().find(|(k, _)| crate::env::same_key(k, &key)) {
            Some(entry) => entry.1 = value,
            None => env.push((key, value)),
        }
    }
    env
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
        assert_eq!(marker, crate::worker::ENTRY_MARKER);
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
        let env = worker_env(&spec(builder.clone(), false, Vec::new()), protocol.clone());
        // Cleared: only what the builder and the protocol set; removed: the app's variable goes.
        let cleared = worker_env(&spec(builder, true, Vec::new()), protocol.clone());
        assert_eq!(cleared.len(), 3, "{cleared:?}");
        let removed = worker_env(&spec(Vec::new(), false, vec!["PATH".into()]), protocol);
        assert!(removed.iter().all(|(k, _)| k != "PATH"));
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

    fn spec(env: Vec<(OsString, OsString)>, env_clear: bool, env_remove: Vec<OsString>) -> Spec {
        Spec {
            self_spawn: false,
            name: "w".into(),
            exe: PathBuf::from("w"),
            program: PathBuf::from("w"),
            args: Vec::new(),
            env,
            check: Check::Probe,
            connect_timeout: None,
            forward_stderr: false,
            stdin: crate::os::WorkerStdin::Null,
            stdout: crate::os::WorkerStdout::Stderr,
            current_dir: None,
            env_clear,
            env_remove,
            parallelism: None,
            limits: crate::contain::Limits::default(),
        }
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 32);
    }
}
