//! [`Launch`]: what every platform backend spawns (see `unix.rs` for the contract).

use std::ffi::OsString;
use std::path::Path;

/// What the platform spawns: see `os/unix.rs` for what every backend does with it.
pub(crate) struct Launch<'a> {
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [OsString],
    /// The whole environment, nothing inherited besides.
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) stdin: WorkerStdin,
    pub(crate) stdout: WorkerStdout,
    /// Where the worker starts; the app's own directory when `None`.
    pub(crate) current_dir: Option<&'a Path>,
    /// The write end of the stderr pipe, closed by the app once the process has its copy.
    pub(crate) stderr: std::io::PipeWriter,
    /// Start the worker as the leader of a process group of its own, so that killing it kills
    /// what it started (Unix).
    pub(crate) new_group: bool,
    /// Leave core dumps as the app has them; otherwise the backend turns them off where it can
    /// do so at the spawn (other Unixes; Linux does it right after, `os::limits`).
    pub(crate) core_dumps: bool,
}

/// Where a worker process's standard input comes from; see
/// [`WorkerBuilder::stdin`](crate::WorkerBuilder::stdin).
///
/// ```no_run
/// use bincrew::{Worker, WorkerStdin, WorkerStdout};
///
/// // A worker that reads nothing and whose prints are dropped.
/// let worker = Worker::<String, usize>::builder("words")
///     .stdin(WorkerStdin::Null)
///     .stdout(WorkerStdout::Null)
///     .start_blocking()?;
/// # Ok::<(), bincrew::StartError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerStdin {
    /// The null device: reading gives end of file at once (the default).
    #[default]
    Null,
    /// The app's own standard input.
    Inherit,
}

/// Where a worker process's standard output goes; see
/// [`WorkerBuilder::stdout`](crate::WorkerBuilder::stdout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerStdout {
    /// With the worker's stderr: forwarded to the app's stderr (unless
    /// [`forward_stderr(false)`](crate::WorkerBuilder::forward_stderr)) and kept in the tail that
    /// crash reports show. The default: a worker never writes into the app's stdout, which may be
    /// a protocol (a language server, a JSON-lines tool).
    #[default]
    Stderr,
    /// The app's own standard output.
    Inherit,
    /// Discarded.
    Null,
}
