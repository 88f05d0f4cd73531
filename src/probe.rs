//! Asking a binary what it is, through the real handshake, without knowing its types: what
//! deployment checks (`cargo bincrew verify`) use.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipc_channel::ipc::IpcSender;

use crate::build::BuildInfo;
use crate::error::{ExitInfo, StartError};
use crate::process::{self, Check, Spec, Started};
use crate::wire::messages::{Control, Job, RequestBatch};
use crate::wire::transport::FramedRef;

/// The worker name a probe asks for, which no binary serves: the binary answers with the names
/// it does serve.
const LIST_NAME: &str = "bincrew:list-workers";

/// What a bincrew binary says about itself. Made by [`probe_binary`].
///
/// ```no_run
/// use std::time::Duration;
///
/// let probe = bincrew::probe_binary("./hasher".as_ref(), Duration::from_secs(5))?;
/// println!("{} {} serves {:?}", probe.build.package, probe.build.version, probe.workers);
/// # Ok::<(), bincrew::StartError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BinaryProbe {
    /// Its identity.
    pub build: BuildInfo,
    /// The worker names it serves.
    pub workers: Vec<String>,
}

/// What one worker of a binary reported, having started, completed the handshake and shut down
/// cleanly. Made by [`probe_worker`].
///
/// ```no_run
/// use std::time::Duration;
///
/// let probe = bincrew::probe_worker("./hasher".as_ref(), "hash", Duration::from_secs(5))?;
/// println!("takes {}, answers {}", probe.request_type, probe.response_type);
/// assert!(probe.exit.success());
/// # Ok::<(), bincrew::StartError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerProbe {
    /// The binary's identity.
    pub build: BuildInfo,
    /// The request type it takes.
    pub request_type: String,
    /// The response type it answers with.
    pub response_type: String,
    /// How it exited after the shutdown request.
    pub exit: ExitInfo,
}

fn spec(exe: &Path, name: &str, timeout: Duration) -> Spec {
    Spec {
        self_spawn: false,
        name: name.to_owned(),
        exe: exe.to_path_buf(),
        program: exe.to_path_buf(),
        args: Vec::new(),
        env: Vec::new(),
        check: Check::Probe,
        connect_timeout: Some(timeout),
        forward_stderr: false,
        stdin: crate::os::WorkerStdin::Null,
        stdout: crate::os::WorkerStdout::Null,
        current_dir: None,
        env_clear: false,
        env_remove: Vec::new(),
        parallelism: Some(1),
        limits: crate::contain::Limits::default(),
    }
}

/// Probes run nothing that is not a bincrew worker binary: an app's own `main` would run.
fn check_is_worker(exe: &Path, name: &str) -> Result<(), StartError> {
    if process::looks_like_worker(exe) {
        return Ok(());
    }
    Err(StartError::NotAWorker {
        worker: name.to_owned(),
        exe: exe.to_path_buf(),
        outcome: "was not started".to_owned(),
        stderr: String::new(),
    })
}

/// Starts `exe` as a worker of a name it does not serve, so that it reports its identity and
/// the workers it serves, and exits. A file without bincrew's worker entry point is not
/// started at all ([`StartError::NotAWorker`]), and the process's stdout is discarded.
///
/// # Errors
///
/// A [`StartError`] when `exe` is not a bincrew binary, exits, hangs or breaks the handshake.
pub fn probe_binary(exe: &Path, timeout: Duration) -> Result<BinaryProbe, StartError> {
    check_is_worker(exe, LIST_NAME)?;
    let spec = spec(exe, LIST_NAME, timeout);
    match process::start(&spec)? {
        Started::Listed(hello) => match hello.build {
            Some(build) => Ok(BinaryProbe {
                build,
                workers: hello.served,
            }),
            None => Err(StartError::Handshake {
                worker: LIST_NAME.to_owned(),
                exe: PathBuf::from(exe),
                reason: "its hello carries no build information".into(),
            }),
        },
        Started::Connected(_) => Err(StartError::Handshake {
            worker: LIST_NAME.to_owned(),
            exe: PathBuf::from(exe),
            reason: "it claims to serve a worker name that no binary serves".into(),
        }),
    }
}

/// Starts worker `name` from `exe`, completes the handshake (checking the token, nothing else),
/// asks it to shut down and waits for its exit.
///
/// # Errors
///
/// A [`StartError`] for every way the start can fail; [`StartError::Handshake`] when the worker
/// does not exit cleanly within `timeout` of the shutdown request (it is killed then).
pub fn probe_worker(exe: &Path, name: &str, timeout: Duration) -> Result<WorkerProbe, StartError> {
    check_is_worker(exe, name)?;
    let spec = spec(exe, name, timeout);
    let connected = match process::start(&spec)? {
        Started::Connected(connected) => connected,
        Started::Listed(hello) => {
            return Err(StartError::UnknownWorker {
                worker: name.to_owned(),
                exe: PathBuf::from(exe),
                available: hello.served,
                hint: String::new(),
            })
        }
    };
    // `Shutdown` and `End` do not involve the request type: any view of the channels encodes
    // them alike.
    let control: IpcSender<Vec<(u64, Control)>> = connected.control.to();
    let requests: IpcSender<RequestBatch<'_, ()>> = connected.requests.to();
    let failed = |reason: String| StartError::Handshake {
        worker: name.to_owned(),
        exe: PathBuf::from(exe),
        reason,
    };
    let sent = control
        .send(vec![(0, Control::Shutdown)])
        .and_then(|()| requests.send(FramedRef(&[(u64::MAX, Job::End)], None)));
    if let Err(e) = sent {
        connected.process.kill_and_reap();
        return Err(failed(format!("cannot ask it to shut down: {e}")));
    }
    match connected.process.wait_deadline(Instant::now() + timeout) {
        Some(exit) if exit.success() => Ok(WorkerProbe {
            build: connected.build,
            request_type: connected.hello.request_type,
            response_type: connected.hello.response_type,
            exit,
        }),
        Some(exit) => Err(failed(format!("it did not shut down cleanly: {exit}"))),
        None => {
            connected.process.kill_and_reap();
            Err(failed(format!(
                "it did not exit within {timeout:?} of the shutdown request and was killed"
            )))
        }
    }
}
