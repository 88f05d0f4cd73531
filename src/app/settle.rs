//! How a worker's end is settled: a kill, a shutdown, a `Worker` dropped, or the end of its
//! channel read by whoever had the read turn. See `ARCHITECTURE.md` ("How a worker's end is
//! settled") for the state machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connection::{Connection, Phase};
use super::timer;
use crate::error::{RunError, ShutdownError};
use crate::sync::lock;
use crate::wire::messages::{Control, Job};
use crate::IpcValue;

/// How long the reader waits for a worker that closed its channel to exit by itself.
const EXIT_GRACE: Duration = Duration::from_secs(2);

impl<I, O> Connection<I, O> {
    /// Kills the process; the reader then reports the crash with `reason`.
    pub(super) fn kill(&self, reason: String) {
        lock(&self.state).kill_reason.get_or_insert(reason);
        self.process.kill();
    }

    /// Calls `hook` once the worker has exited and its requests were failed (at once if that
    /// already happened).
    pub(super) fn on_exit(&self, hook: Box<dyn FnOnce() + Send>) {
        let mut state = lock(&self.state);
        if state.settled {
            drop(state);
            hook();
        } else {
            state.exit_hook = Some(hook);
        }
    }

    /// The `Worker` was dropped: fail what is in flight, stop sending, kill the process. Never
    /// waits: the process is reaped elsewhere.
    pub(super) fn close(&self) {
        let leftover = {
            let mut state = lock(&self.state);
            if matches!(state.phase, Phase::Running | Phase::ShuttingDown) {
                state.phase = Phase::Closed;
            }
            state.pending.drain()
        };
        self.requests.close();
        self.control.close();
        for pending in leftover {
            if let Some(key) = pending.timer {
                timer::cancel(key);
            }
            pending.slot.complete(Err(self.shut_down()));
        }
        self.wake_waiters();
        self.process.kill();
        // Hands the process to the reaper now: requests may keep this connection alive.
        let _ = self.process.try_exit();
    }
}

impl<I: IpcValue, O: IpcValue> Connection<I, O> {
    pub(super) fn begin_shutdown(&self) -> Result<(), ShutdownError> {
        {
            let mut state = lock(&self.state);
            match &state.phase {
                Phase::Running => {
                    state.phase = Phase::ShuttingDown;
                    state.shutdown_deadline = Some(Instant::now() + self.settings.shutdown_grace);
                }
                Phase::Crashed(report) => return Err(ShutdownError::Crashed(report.clone())),
                Phase::ShuttingDown | Phase::Closed => return Ok(()),
            }
        }
        // The worker learns of it at once on the control channel, and `End` follows every
        // request made before it on the request channel. A worker that is already gone has
        // its fate told by the wait.
        let _ = self.requests.push(u64::MAX, Job::End);
        self.flush_requests();
        self.push_control(Control::Shutdown);
        Ok(())
    }

    pub(super) fn wait_shutdown(&self) -> Result<(), ShutdownError> {
        let grace = self.settings.shutdown_grace;
        let deadline = lock(&self.state)
            .shutdown_deadline
            .unwrap_or_else(|| Instant::now() + grace);
        match self.process.wait_deadline(deadline) {
            Some(exit) if exit.success() => Ok(()),
            Some(exit) => Err(ShutdownError::Crashed(
                self.crash_error()
                    .unwrap_or_else(|| Arc::new(self.process.crash_report(Some(exit), None))),
            )),
            None => {
                // Killed, then reaped: a stopped or stuck process dies at once of SIGKILL; a
                // process stuck in the kernel is left to the reaper after a moment.
                self.process.kill();
                let _ = self.process.wait_deadline(Instant::now() + EXIT_GRACE);
                Err(ShutdownError::Killed {
                    worker: self.process.name.clone(),
                    grace,
                })
            }
        }
    }

    /// Called by whoever read the end of the worker's channel, cleanly or not.
    pub(super) fn finish(&self, protocol_error: Option<String>) {
        self.requests.close();
        self.control.close();
        self.settle(protocol_error);
        let hook = {
            let mut state = lock(&self.state);
            state.settled = true;
            state.exit_hook.take()
        };
        if let Some(hook) = hook {
            hook();
        }
    }

    /// Decides how the worker ended and fails what is still in flight.
    fn settle(&self, protocol_error: Option<String>) {
        let (shutting_down, kill_reason) = {
            let state = lock(&self.state);
            let shutting_down = match state.phase {
                Phase::Closed | Phase::Crashed(_) => return,
                Phase::ShuttingDown => true,
                Phase::Running => false,
            };
            (shutting_down, state.kill_reason.clone())
        };
        if protocol_error.is_some() {
            self.process.kill();
        }
        let mut killed_by_app = protocol_error
            .map(|e| format!("it broke the protocol: {e}"))
            .or(kill_reason);
        let exit = match self.process.wait_deadline(Instant::now() + EXIT_GRACE) {
            Some(exit) => Some(exit),
            None => {
                killed_by_app.get_or_insert_with(|| {
                    "it broke the protocol: it closed its channel but kept running".into()
                });
                self.process.kill();
                self.process.wait()
            }
        };
        let clean = shutting_down && killed_by_app.is_none() && exit.is_some_and(|e| e.success());
        let report = (!clean).then(|| Arc::new(self.process.crash_report(exit, killed_by_app)));
        let leftover = {
            let mut state = lock(&self.state);
            if matches!(state.phase, Phase::Closed) {
                return;
            }
            if let Some(report) = &report {
                state.phase = Phase::Crashed(report.clone());
            }
            state.pending.drain()
        };
        match &report {
            Some(report) => tracing::warn!(
                worker = %self.process.name,
                pid = self.process.pid(),
                requests_failed = leftover.len(),
                "worker crashed: {report}"
            ),
            None => tracing::info!(
                worker = %self.process.name,
                pid = self.process.pid(),
                "worker shut down cleanly"
            ),
        }
        for pending in leftover {
            if let Some(key) = pending.timer {
                timer::cancel(key);
            }
            // A clean exit after a shutdown: requests made after it fail as shut down.
            pending.slot.complete(Err(match &report {
                Some(report) => RunError::Crashed(report.clone()),
                None => self.shut_down(),
            }));
        }
    }
}
