//! Platforms without Unix signals (Windows): exit codes only, the executable's identity from its
//! size and modification time, workers started with duct (`duct_spawn.rs`), and a thread per
//! worker draining its stderr. `unix.rs` lists what every backend provides.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::UNIX_EPOCH;

#[path = "launch.rs"]
mod launch;
pub(crate) use launch::Launch;
pub use launch::{WorkerStdin, WorkerStdout};

#[path = "duct_spawn.rs"]
mod duct_spawn;
pub(crate) use duct_spawn::{spawn, Child};

#[path = "other_socket.rs"]
pub(crate) mod socket;

#[path = "other_limits.rs"]
pub(crate) mod limits;

pub(crate) fn exit_signal(_status: &ExitStatus) -> Option<i32> {
    None
}

pub(crate) fn signal_name(_signal: i32) -> Option<&'static str> {
    None
}

pub(crate) fn self_exe() -> std::io::Result<PathBuf> {
    std::env::current_exe()
}

/// Whether `path` is the running executable's file.
pub(crate) fn is_current_exe(path: &std::path::Path) -> bool {
    match (
        std::fs::canonicalize(path),
        self_exe().and_then(std::fs::canonicalize),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

pub(crate) fn exe_identity() -> Option<String> {
    let path = self_exe().ok()?;
    let meta = std::fs::metadata(&path).ok()?;
    let modified = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(format!(
        "{}:{}:{}",
        path.display(),
        meta.len(),
        modified.as_nanos()
    ))
}

/// In a worker: nothing here; the closed request channel tells it its app is gone.
pub(crate) fn die_with_parent(_app_pid: Option<u32>) -> bool {
    true
}

/// Names the process after the worker it serves: nothing here.
pub(crate) fn name_process(_name: &str) {}

/// Removes `key` from the environment.
pub(crate) fn remove_secret_env(key: &str) {
    std::env::remove_var(key);
}

/// Reads `pipe` to its end on a thread of its own, calling `sink` with each chunk and then with
/// `None`.
pub(crate) fn drain(
    mut pipe: std::io::PipeReader,
    name: &str,
    mut sink: Box<dyn FnMut(Option<&[u8]>) + Send>,
) -> std::io::Result<()> {
    use std::io::Read;
    std::thread::Builder::new()
        .name(format!("bincrew-stderr-{name}"))
        .spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => sink(Some(&chunk[..n])),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            sink(None);
        })?;
    Ok(())
}

/// Maps a received shared buffer's pages on first use, as usual.
pub(crate) fn prefault(_memory: &mut [u8]) {}

/// Whether this process can open `n` more descriptors now: not known here, so yes.
pub(crate) fn spare_descriptors(_n: usize) -> bool {
    true
}
