//! [`Process`]: the handle on a started worker process.

use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::contain::End;
use crate::error::{ExitInfo, StartError, WorkerCrashError};
use crate::sync::lock;

use super::limits::Contained;
use super::stderr::StderrTail;
use super::{Spec, STDERR_GRACE};

/// A started worker process: its handle, its stderr, its limits and what it reported before
/// dying.
///
/// Dropping it kills the process (and the process group it leads) if it has not exited, without
/// waiting; a process-wide reaper reaps it.
pub(crate) struct Process {
    pub(crate) name: String,
    pid: u32,
    /// Shared only with the memory watcher, which holds it weakly.
    child: Arc<crate::os::Child>,
    stderr: Arc<StderrTail>,
    panic: Mutex<Option<(String, Option<String>)>>,
    pub(crate) contained: Contained,
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
            new_group: own_group(spec),
            core_dumps: spec.limits.core_dumps == Some(true),
        })
        .map_err(spawn_error)?;
        let child = Arc::new(child);
        let pid = child.id();
        // On failure `child` is dropped, which kills the process. The limits are applied before
        // the handshake, so before any handler runs.
        let contained = Contained::apply(&spec.limits, &spec.name, pid, &child)?;
        let stderr =
            StderrTail::start(stderr_read, spec.forward_stderr, &spec.name).map_err(spawn_error)?;
        Ok(Process {
            name: spec.name.clone(),
            pid,
            child,
            stderr,
            panic: Mutex::new(None),
            contained,
        })
    }

    /// A descriptor that becomes readable when the process exits (Linux), for the app's
    /// reader thread to notice an idle worker's death without reading its channel.
    pub(crate) fn exit_fd(&self) -> Option<crate::os::socket::ExitFd> {
        self.child.exit_fd()
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
        self.exited(Some(self.child.wait()))
    }

    /// The exit status, if the process has exited.
    pub(crate) fn try_exit(&self) -> Option<ExitInfo> {
        self.exited(self.child.try_wait())
    }

    /// Waits for the process to exit until `deadline`.
    pub(crate) fn wait_deadline(&self, deadline: Instant) -> Option<ExitInfo> {
        self.exited(self.child.wait_deadline(deadline))
    }

    /// Once the process has exited, what it left in its cgroup goes too. (Its process group
    /// was killed by the reaper before it reaped it.)
    fn exited(&self, exit: Option<ExitInfo>) -> Option<ExitInfo> {
        if exit.is_some() {
            self.contained.ended();
        }
        exit
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
        let stderr_tail = self.stderr.tail(STDERR_GRACE);
        let limit = End {
            exit,
            stderr: &stderr_tail,
            memory: self.contained.memory,
            cpu: self.contained.cpu,
            watch_killed: self.contained.watch_killed(),
            cgroup_oom: self.contained.cgroup_oom(),
        }
        .limit();
        if let Some(limit) = &limit {
            tracing::warn!(worker = %self.name, pid = self.pid, %limit, "worker `{}` (pid {}) exceeded {limit}", self.name, self.pid);
        }
        WorkerCrashError {
            worker: self.name.clone(),
            pid: self.pid,
            exit,
            panic_message,
            panic_location,
            stderr_tail,
            killed_by_app,
            limit,
        }
    }
}

/// Whether the worker leads a process group of its own: always, unless it shares the app's
/// terminal (a process outside the terminal's foreground group that reads it is stopped by
/// `SIGTTIN`). Then its process tree is not killed with it, except through its cgroup.
fn own_group(spec: &Spec) -> bool {
    use std::io::IsTerminal;
    let stdin_tty = spec.stdin == crate::os::WorkerStdin::Inherit && std::io::stdin().is_terminal();
    let stdout_tty =
        spec.stdout == crate::os::WorkerStdout::Inherit && std::io::stdout().is_terminal();
    !(stdin_tty || stdout_tty)
}
