//! Platforms other than Linux: no cgroups, no `/proc`, no `prlimit` on another process. The
//! start fails with `StartError::Limit` for a memory or CPU limit unless it is best effort;
//! core dumps are turned off at the spawn where the platform spawns with `setrlimit`
//! (`duct_spawn.rs` on Unix).

use std::io;
use std::path::{Path, PathBuf};

fn unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "not supported on this platform")
}

/// Done at the spawn here (`Launch::core_dumps`): `setrlimit` in the child before `exec` on
/// Unix; Windows writes no core files.
pub(crate) fn core_dumps_off(_pid: u32) -> io::Result<()> {
    Ok(())
}

pub(crate) fn data_limit(_pid: u32, _bytes: u64) -> io::Result<()> {
    Err(unsupported())
}

pub(crate) fn rss(_pid: u32) -> Option<u64> {
    None
}

pub(crate) fn descendants(_pid: u32) -> Vec<u32> {
    Vec::new()
}

pub(crate) fn has_thread_named(_pid: u32, _name: &str) -> bool {
    false
}

/// Never made here.
#[derive(Debug)]
pub(crate) struct Cgroup {
    pub(crate) dir: PathBuf,
}

impl Cgroup {
    pub(crate) fn create(_parent: &Path, _name: &str, _bytes: u64) -> io::Result<Cgroup> {
        Err(unsupported())
    }

    pub(crate) fn add(&self, _pid: u32) -> io::Result<()> {
        Err(unsupported())
    }

    pub(crate) fn oom_killed(&self) -> bool {
        false
    }

    pub(crate) fn kill(&self) {}

    pub(crate) fn remove(&self) -> io::Result<()> {
        Err(unsupported())
    }
}

pub(crate) fn cgroup_parent(_explicit: Option<&Path>) -> Result<PathBuf, String> {
    Err("cgroups exist only on Linux".to_owned())
}
