//! Everywhere but Linux: a worker process started and waited on with duct.
//!
//! The worker gets the null device (or the app's) as stdin, its stderr pipe (or the app's stdout,
//! or the null device) as stdout, the stderr
//! pipe and the environment it is given, nothing else. Descriptors the app opened without
//! close-on-exec are still inherited here (see the Linux backend for what that costs).
//!
//! Waiting goes to duct's handle, which lets any number of threads wait. Dropping a [`Child`]
//! kills its process if it has not exited and hands the handle to one process-wide reaper
//! thread that waits for it, so `Drop` never waits.

use std::io;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Instant;

use super::Launch;
use crate::error::ExitInfo;
use crate::sync::lock;

/// A worker process started by [`spawn`].
pub(crate) struct Child {
    handle: Arc<duct::Handle>,
    pid: u32,
    /// The process leads a process group of its own (Unix).
    group: bool,
}

/// Starts a worker process.
pub(crate) fn spawn(launch: Launch<'_>) -> io::Result<Child> {
    let mut expr = duct::cmd(launch.program, launch.args)
        .stderr_file(launch.stderr)
        .full_env(launch.env)
        .unchecked();
    if launch.stdin == super::WorkerStdin::Null {
        expr = expr.stdin_null();
    }
    match launch.stdout {
        super::WorkerStdout::Stderr => expr = expr.stdout_to_stderr(),
        super::WorkerStdout::Null => expr = expr.stdout_null(),
        super::WorkerStdout::Inherit => {}
    }
    if let Some(dir) = launch.current_dir {
        expr = expr.dir(dir);
    }
    #[cfg(unix)]
    {
        let (new_group, core_dumps) = (launch.new_group, launch.core_dumps);
        expr = expr.before_spawn(move |command| {
            use std::os::unix::process::CommandExt;
            if new_group {
                command.process_group(0);
            }
            if !core_dumps {
                // SAFETY: the hook runs in the child between fork and exec, and calls only
                // getrlimit and setrlimit, which are async-signal-safe.
                unsafe {
                    command.pre_exec(|| {
                        let mut limit: libc::rlimit = std::mem::zeroed();
                        if libc::getrlimit(libc::RLIMIT_CORE, &mut limit) == 0 {
                            limit.rlim_cur = 0;
                            libc::setrlimit(libc::RLIMIT_CORE, &limit);
                        }
                        Ok(())
                    });
                }
            }
            Ok(())
        });
    }
    // Windows writes no core files.
    #[cfg(not(unix))]
    let _ = launch.core_dumps;
    let handle = expr.start()?;
    // The expression holds our copy of the stderr pipe's write end: drop it, so the reader sees
    // the end of the stream when the worker exits.
    drop(expr);
    let pid = handle.pids().first().copied().unwrap_or(0);
    Ok(Child {
        handle: Arc::new(handle),
        pid,
        group: launch.new_group && cfg!(unix),
    })
}

fn exit_info(result: io::Result<Option<&std::process::Output>>) -> Option<ExitInfo> {
    match result {
        Ok(output) => output.map(|o| ExitInfo::from_status(&o.status)),
        Err(e) => {
            tracing::debug!(error = %e, "waiting for a worker failed: its exit status is unknown");
            Some(ExitInfo {
                code: None,
                signal: None,
            })
        }
    }
}

impl Child {
    /// No descriptor tells this process's exit here.
    pub(crate) fn exit_fd(&self) -> Option<crate::os::socket::ExitFd> {
        None
    }

    pub(crate) fn id(&self) -> u32 {
        self.pid
    }

    /// Kills the process unless it was already waited on (duct checks), and the process group it
    /// leads. Does not wait.
    pub(crate) fn kill(&self) -> io::Result<()> {
        #[cfg(unix)]
        if self.group && matches!(self.handle.try_wait(), Ok(None)) {
            if let Ok(pid) = libc::pid_t::try_from(self.pid) {
                // SAFETY: kill has no memory effects. Not waited on yet, so the pid (the group's
                // id) is still this child's; duct may reap it between the check and the signal,
                // a window the Linux backend does not have.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
        self.handle.kill()
    }

    /// Whether the process was waited on.
    pub(crate) fn reaped(&self) -> bool {
        matches!(self.handle.try_wait(), Ok(Some(_)))
    }

    /// Blocks until the process exits.
    pub(crate) fn wait(&self) -> ExitInfo {
        exit_info(self.handle.wait().map(Some)).unwrap_or(ExitInfo {
            code: None,
            signal: None,
        })
    }

    /// The exit status, if the process has exited.
    pub(crate) fn try_wait(&self) -> Option<ExitInfo> {
        exit_info(self.handle.try_wait())
    }

    /// Waits until the process exited or `deadline` passed.
    pub(crate) fn wait_deadline(&self, deadline: Instant) -> Option<ExitInfo> {
        exit_info(self.handle.wait_deadline(deadline))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.handle.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Err(e) = self.handle.kill() {
            tracing::debug!(pid = self.pid, error = %e, "killing a dropped worker failed");
        }
        if let Some(reaper) = reaper() {
            let _ = lock(reaper).send(self.handle.clone());
        }
        // Without a reaper thread duct keeps the handle and reaps it at a later spawn.
    }
}

/// The thread that waits for killed workers, one after the other.
fn reaper() -> Option<&'static Mutex<mpsc::Sender<Arc<duct::Handle>>>> {
    static REAPER: OnceLock<Option<Mutex<mpsc::Sender<Arc<duct::Handle>>>>> = OnceLock::new();
    REAPER
        .get_or_init(|| {
            let (handles, handle_rx) = mpsc::channel::<Arc<duct::Handle>>();
            std::thread::Builder::new()
                .name("bincrew-reaper".into())
                .spawn(move || {
                    for handle in handle_rx {
                        let _ = handle.wait();
                    }
                })
                .ok()
                .map(|_| Mutex::new(handles))
        })
        .as_ref()
}
