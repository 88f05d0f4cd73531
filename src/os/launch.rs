//! [`Launch`]: what every platform backend spawns (see `unix.rs` for the contract).

use std::ffi::OsString;
use std::path::Path;

/// What the platform spawns: see `os/unix.rs` for what every backend does with it.
pub(crate) struct Launch<'a> {
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [OsString],
    /// The whole environment, nothing inherited besides.
    pub(crate) env: Vec<(OsString, OsString)>,
    /// Discard stdout instead of sharing the app's.
    pub(crate) quiet_stdout: bool,
    /// The write end of the stderr pipe, closed by the app once the process has its copy.
    pub(crate) stderr: std::io::PipeWriter,
}
