//! [`Process`]: the handle on a started worker process.

use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{ExitInfo, StartError, WorkerCrashError};
use crate::sync::lock;

use super::stderr::StderrTail;
use super::{Spec, STDERR_GRACE};

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
    pub(super) fn spawn(
        spec: &Spec,
        env: Vec<(OsString, OsString)>,
    ) -> Result<Process, StartError> {
        let spawn_error = |source| StartError::Spawn {
            worker: spec.name.clone(),
            exe: spec.exe.clone(),
            source,
        };
        let (stderr_read, stderr_write) = std::io::pipe().map_err(spawn_error)?;
        let child = crate::os::spawn(crate::os::Launch {
            program: &spec.program,
            args: &spec.args,
            env,
            stdin: spec.stdin,
            stdout: spec.stdout,
            current_dir: spec.current_dir.as_deref(),
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
