//! The environment contract between an app and the worker processes it starts: the variables
//! the app sets, and how a worker takes them. Both sides use this module; neither owns it.
//!
//! The *protocol variables* ([`PROTOCOL_VARS`]) belong to one start: the app sets them for the
//! worker it is starting and for nothing else. The app never passes on the ones it inherited
//! itself (a `BINCREW_PARALLELISM` left in a shell would otherwise cap every worker), and the
//! worker removes them as it takes them, so that the processes it starts are not taken for
//! workers. The token is also blanked in the worker's initial environment block where the
//! platform shows that block to other processes (`/proc/<pid>/environ` on Linux).
//!
//! The other `BINCREW_` variables (`BINCREW_EXE_*`, `BINCREW_CONNECT_TIMEOUT`) configure an app
//! and pass through to workers like any variable, for a worker that is itself an app.

use std::ffi::OsStr;

use crate::worker::exit::{exit_with, EXIT_CANNOT_SERVE};

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
/// The CPU time one request's handler may use, in microseconds, when the app sets a limit.
pub(crate) const CPU_LIMIT_ENV: &str = "BINCREW_CPU_LIMIT_US";
/// The app's connect timeout, when the builder does not set one.
pub(crate) const TIMEOUT_ENV: &str = "BINCREW_CONNECT_TIMEOUT";

/// The variables an app sets for one start of one worker, and no process may inherit.
pub(crate) const PROTOCOL_VARS: [&str; 6] = [
    WORKER_ENV,
    SERVER_ENV,
    TOKEN_ENV,
    PARALLELISM_ENV,
    APP_PID_ENV,
    CPU_LIMIT_ENV,
];

/// What to do about protocol variables found where no app put them.
const STRAY_FIX: &str = "if this program was not started by a bincrew app, a bincrew variable was \
     left in its environment: unset BINCREW_WORKER, BINCREW_SERVER, BINCREW_TOKEN and \
     BINCREW_APP_PID where it is started";

/// The environment the app sets for a worker process.
pub(crate) struct WorkerEnv {
    pub(crate) worker: String,
    pub(crate) server: String,
    pub(crate) token: String,
    pub(crate) parallelism: Option<usize>,
    /// The CPU time one request's handler may use.
    pub(crate) cpu_limit: Option<std::time::Duration>,
}

impl WorkerEnv {
    /// Reads the worker variables and removes them, so that processes this worker starts are
    /// not mistaken for workers; `None` when this process is not a worker.
    ///
    /// A process that has `BINCREW_WORKER` but was not started by a bincrew app (the variable
    /// was left in its environment) exits with a message naming the variable and the fix.
    pub(crate) fn take() -> Option<WorkerEnv> {
        let worker = std::env::var(WORKER_ENV).ok()?;
        let server = std::env::var(SERVER_ENV).ok();
        let token = std::env::var(TOKEN_ENV).unwrap_or_default();
        let parallelism = std::env::var(PARALLELISM_ENV)
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0);
        let cpu_limit = std::env::var(CPU_LIMIT_ENV)
            .ok()
            .and_then(|us| us.parse::<u64>().ok())
            .filter(|us| *us > 0)
            .map(std::time::Duration::from_micros);
        let app_pid = std::env::var(APP_PID_ENV)
            .ok()
            .and_then(|pid| pid.parse::<u32>().ok());
        // The token first, blanked where other processes could read it.
        crate::os::remove_secret_env(TOKEN_ENV);
        for key in PROTOCOL_VARS {
            std::env::remove_var(key);
        }
        if !crate::os::die_with_parent(app_pid) {
            let app = app_pid.map_or_else(String::new, |pid| format!(" {pid}"));
            exit_with(
                EXIT_CANNOT_SERVE,
                &format!(
                    "this process was started as worker `{worker}` ({WORKER_ENV}) by app \
                     process{app} ({APP_PID_ENV}), which is not its parent: its app has already \
                     exited, or {STRAY_FIX}"
                ),
            );
        }
        let Some(server) = server else {
            exit_with(
                EXIT_CANNOT_SERVE,
                &format!(
                    "this process was started as worker `{worker}` ({WORKER_ENV} is set) without \
                     a handshake server ({SERVER_ENV} is not set): bincrew workers are started by \
                     their app; {STRAY_FIX}"
                ),
            );
        };
        Some(WorkerEnv {
            worker,
            server,
            token,
            parallelism,
            cpu_limit,
        })
    }
}

/// Whether `key` is a protocol variable.
pub(crate) fn is_protocol_var(key: &OsStr) -> bool {
    PROTOCOL_VARS
        .iter()
        .any(|var| same_key(key, OsStr::new(var)))
}

/// Whether two environment variable names are the same variable (case-insensitive on Windows).
pub(crate) fn same_key(a: &OsStr, b: &OsStr) -> bool {
    if cfg!(windows) {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}
