//! The environment contract between an app and the worker processes it starts: the variables
//! the app sets, and how a worker takes them. Both sides use this module; neither owns it.

use crate::serve::{exit_with, EXIT_CANNOT_SERVE};

/// Names the worker to serve; its presence makes a process a worker.
pub(crate) const WORKER_ENV: &str = "BINCREW_WORKER";
/// The one-shot server the worker connects to.
pub(crate) const SERVER_ENV: &str = "BINCREW_SERVER";
/// The secret the worker must echo in its hello.
pub(crate) const TOKEN_ENV: &str = "BINCREW_TOKEN";
/// How many requests the worker runs at once, when the app sets it.
pub(crate) const PARALLELISM_ENV: &str = "BINCREW_PARALLELISM";
/// The app's process id, so a worker can tell that its app died before it asked to die with it.
pub(crate) const APP_PID_ENV: &str = "BINCREW_APP_PID";
/// The app's connect timeout, when the builder does not set one.
pub(crate) const TIMEOUT_ENV: &str = "BINCREW_CONNECT_TIMEOUT";

/// The environment the app sets for a worker process.
pub(crate) struct WorkerEnv {
    pub(crate) worker: String,
    pub(crate) server: String,
    pub(crate) token: String,
    pub(crate) parallelism: Option<usize>,
}

impl WorkerEnv {
    /// Reads the worker variables and removes them, so that processes this worker starts are
    /// not mistaken for workers.
    pub(crate) fn take() -> Option<WorkerEnv> {
        let worker = std::env::var(WORKER_ENV).ok()?;
        let server = std::env::var(SERVER_ENV).ok();
        let token = std::env::var(TOKEN_ENV).unwrap_or_default();
        let parallelism = std::env::var(PARALLELISM_ENV)
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0);
        let app_pid = std::env::var(APP_PID_ENV)
            .ok()
            .and_then(|pid| pid.parse::<u32>().ok());
        for key in [
            WORKER_ENV,
            SERVER_ENV,
            TOKEN_ENV,
            PARALLELISM_ENV,
            APP_PID_ENV,
        ] {
            std::env::remove_var(key);
        }
        crate::os::die_with_parent(app_pid);
        let Some(server) = server else {
            exit_with(
                EXIT_CANNOT_SERVE,
                &format!(
                    "this process was started as worker `{worker}` without a handshake server: \
                     bincrew workers are started by their app"
                ),
            );
        };
        Some(WorkerEnv {
            worker,
            server,
            token,
            parallelism,
        })
    }
}
