//! Linux: what the limits of a worker are made of: resource limits set on the new process
//! (`prlimit`), a cgroup v2 of its own, its resident memory read from `/proc`.
//!
//! Every read here is of a `/proc` file the kernel answers from counters (`statm`) or lists
//! (`children`, `comm`), without taking the worker's memory lock, so that a worker that is
//! stopped, thrashing or in the middle of a huge `mmap` never holds the thread that reads it.

use std::io;
use std::path::{Path, PathBuf};

/// Sets a resource limit of process `pid`; `soft_only` keeps its hard limit as it is.
fn prlimit(pid: u32, resource: u32, value: u64, soft_only: bool) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with a valid pid, a resource number, and valid (or null) pointers.
    let got = unsafe { libc::prlimit(pid, resource as _, std::ptr::null(), &mut old) };
    if got != 0 {
        return Err(io::Error::last_os_error());
    }
    let value = value as libc::rlim_t;
    let new = libc::rlimit {
        rlim_cur: value.min(old.rlim_max),
        rlim_max: if soft_only {
            old.rlim_max
        } else {
            value.min(old.rlim_max)
        },
    };
    // SAFETY: as above.
    let set = unsafe { libc::prlimit(pid, resource as _, &new, std::ptr::null_mut()) };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Core dumps off for `pid`: its soft `RLIMIT_CORE` 0; the hard limit stays, so a worker being
/// debugged may raise it again.
// The casts: the constants are `u32` with glibc and `c_int` with musl.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn core_dumps_off(pid: u32) -> io::Result<()> {
    prlimit(pid, libc::RLIMIT_CORE as u32, 0, true)
}

/// `RLIMIT_DATA` of `pid` to `bytes`, soft and hard: the worker cannot lift it.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn data_limit(pid: u32, bytes: u64) -> io::Result<()> {
    prlimit(pid, libc::RLIMIT_DATA as u32, bytes, false)
}

/// The resident memory of one process, from `/proc/<pid>/statm`; `None` once it is gone.
pub(crate) fn rss(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// Every descendant of `pid` (children of each of its threads, and theirs), from
/// `/proc/<pid>/task/<tid>/children`. Empty where the kernel lacks those files.
pub(crate) fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(parent) = next.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.filter_map(Result::ok) {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                // A bound against a list that changes while it is walked.
                if !found.contains(&child) && found.len() < 4096 {
                    found.push(child);
                    next.push(child);
                }
            }
        }
    }
    found
}

/// Whether a thread of `pid` is named `name` (what `std::thread::Builder::name` sets, cut to 15
/// bytes).
pub(crate) fn has_thread_named(pid: u32, name: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).any(|task| {
        std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == name)
    })
}

/// A cgroup v2 made for one worker.
#[derive(Debug)]
pub(crate) struct Cgroup {
    pub(crate) dir: PathBuf,
}

impl Cgroup {
    /// Makes `parent/name` with `memory.max` at `bytes` and no swap, whose OOM kill takes the
    /// whole group.
    pub(crate) fn create(parent: &Path, name: &str, bytes: u64) -> io::Result<Cgroup> {
        let dir = parent.join(name);
        std::fs::create_dir(&dir)?;
        let cgroup = Cgroup { dir };
        let written = cgroup
            .write("memory.max", &bytes.to_string())
            .and_then(|()| cgroup.write_optional("memory.swap.max", "0"))
            .and_then(|()| cgroup.write_optional("memory.oom.group", "1"));
        if let Err(e) = written {
            let _ = cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        std::fs::write(self.dir.join(file), value)
    }

    /// Writes a file older kernels lack.
    fn write_optional(&self, file: &str, value: &str) -> io::Result<()> {
        match self.write(file, value) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Moves process `pid` into the cgroup (its later children are born in it).
    pub(crate) fn add(&self, pid: u32) -> io::Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// Whether the OOM killer killed something in the cgroup (`memory.events`).
    pub(crate) fn oom_killed(&self) -> bool {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .is_ok_and(|events| oom_kills(&events) > 0)
    }

    /// Kills every process in the cgroup: `cgroup.kill` (Linux 5.14), else each pid listed.
    pub(crate) fn kill(&self) {
        if self.write("cgroup.kill", "1").is_ok() {
            return;
        }
        let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) else {
            return;
        };
        for pid in procs
            .lines()
            .filter_map(|p| p.trim().parse::<libc::pid_t>().ok())
        {
            // SAFETY: kill has no memory effects. A pid listed a moment ago is a member still,
            // or a zombie whose number is not reused until it is reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Removes the cgroup; fails (`EBUSY`) while a process is still in it.
    pub(crate) fn remove(&self) -> io::Result<()> {
        std::fs::remove_dir(&self.dir)
    }
}

/// The OOM kills counted in a `memory.events` file.
fn oom_kills(events: &str) -> u64 {
    events
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(key, _)| *key == "oom_kill" || *key == "oom_group_kill")
        .filter_map(|(_, n)| n.trim().parse::<u64>().ok())
        .sum()
}

/// The cgroup v2 directory under which workers' cgroups are made: `explicit` when given,
/// else the app's own cgroup when its children may have the memory controller (an app that
/// runs in the root cgroup, or in a cgroup that has no processes of its own). `Err` says why
/// none will do.
pub(crate) fn cgroup_parent(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match explicit {
        Some(dir) => dir.to_path_buf(),
        None => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
            let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup v2 hierarchy is mounted")?;
            let own = std::fs::read_to_string("/proc/self/cgroup")
                .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
            let own = own_cgroup(&own).ok_or("this process is in no cgroup v2")?;
            mount.join(own.trim_start_matches('/'))
        }
    };
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    if !dir.join("cgroup.controllers").exists() {
        return Err(format!("{} is not a cgroup v2 directory", dir.display()));
    }
    if has_word(&read("cgroup.subtree_control"), "memory") {
        return Ok(dir);
    }
    if !has_word(&read("cgroup.controllers"), "memory") {
        return Err(format!(
            "the memory controller is not available in {} (on a cgroup v1 or hybrid system, or not delegated)",
            dir.display()
        ));
    }
    // Enabling it for the children works only in a cgroup without processes of its own (or the
    // root): not where the app itself runs, unless that is the root.
    std::fs::write(dir.join("cgroup.subtree_control"), "+memory").map_err(|e| {
        format!(
            "cannot enable the memory controller for the children of {} ({e}): name a delegated cgroup without processes of its own with .cgroup(...)",
            dir.display()
        )
    })?;
    Ok(dir)
}

fn has_word(list: &str, word: &str) -> bool {
    list.split_whitespace().any(|w| w == word)
}

/// Where the cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields: id parent major:minor root mount-point options [optional...] - type source ...
        let (before, after) = line.split_once(" - ")?;
        let fstype = after.split_whitespace().next()?;
        let mount_point = before.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount(mount_point)))
    })
}

/// Mount points escape space, tab, newline and backslash as octal.
fn unescape_mount(path: &str) -> String {
    path.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// This process's cgroup v2 path, from `/proc/self/cgroup` (the `0::` line).
fn own_cgroup(cgroups: &str) -> Option<&str> {
    cgroups.lines().find_map(|line| line.strip_prefix("0::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_and_own_cgroup_are_read_from_proc() {
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
             41 31 0:38 / /sys/fs/cgroup/uni\\040fied rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/uni fied"))
        );
        assert_eq!(cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/x rw\n"), None);
        let cgroups = "4:memory:/process_api/x\n0::/user.slice/app.service\n";
        assert_eq!(own_cgroup(cgroups), Some("/user.slice/app.service"));
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn oom_kills_are_counted_from_memory_events() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills(events), 1);
        assert_eq!(oom_kills("low 0\nmax 3\noom 0\n"), 0);
        assert_eq!(oom_kills("oom_group_kill 2\n"), 2);
    }

    /// The files a worker's cgroup is made of, written into a plain directory (this checks what
    /// is written; the kernel's side needs a cgroup v2 with the memory controller).
    #[test]
    fn a_workers_cgroup_gets_its_limit_no_swap_and_group_oom_kills() {
        let parent = std::env::temp_dir().join(format!("bincrew-cgroup-{}", std::process::id()));
        std::fs::create_dir_all(&parent).expect("temp dir");
        let cgroup = Cgroup::create(&parent, "w1", 256 << 20).expect("created");
        let read = |f: &str| std::fs::read_to_string(cgroup.dir.join(f)).expect(f);
        assert_eq!(read("memory.max"), "268435456");
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("memory.oom.group"), "1");
        cgroup.add(42).expect("added");
        assert_eq!(read("cgroup.procs"), "42");
        assert!(!cgroup.oom_killed());
        std::fs::write(cgroup.dir.join("memory.events"), "oom 1\noom_kill 1\n").expect("w");
        assert!(cgroup.oom_killed());
        assert!(Cgroup::create(&parent, "w1", 1).is_err(), "exists already");
        let _ = std::fs::remove_dir_all(&parent);
    }

    #[test]
    fn a_directory_that_is_not_a_cgroup_is_refused_with_its_name() {
        let dir = std::env::temp_dir();
        let err = cgroup_parent(Some(&dir)).expect_err("not a cgroup");
        assert!(err.contains("is not a cgroup v2 directory"), "{err}");
    }

    #[test]
    fn this_process_has_a_resident_size_and_named_threads() {
        let me = std::process::id();
        assert!(rss(me).is_some_and(|bytes| bytes > 0));
        assert_eq!(rss(u32::MAX), None);
        let (started, running) = std::sync::mpsc::channel();
        let named = std::thread::Builder::new()
            .name("bincrew-named".into())
            .spawn(move || {
                // Named before this runs.
                let _ = started.send(());
                std::thread::park();
            })
            .expect("thread");
        running.recv().expect("started");
        assert!(has_thread_named(me, "bincrew-named"));
        assert!(!has_thread_named(me, "no-such-thread"));
        named.thread().unpark();
        let _ = named.join();
    }
}
