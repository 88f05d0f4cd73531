//! Unix: signals, the executable's identity, starting and reaping workers, draining their
//! stderr.
//!
//! What every backend of `crate::os` provides (`other.rs` is the other one):
//!
//! - `spawn(Launch) -> io::Result<Child>`: starts a worker with exactly the environment given,
//!   the stdin and stdout the builder chose (by default the null device, and the stderr pipe),
//!   the stderr pipe, and the working directory asked for. `Child` has
//!   `id`, `kill` (never signals a process already waited on), `wait`, `try_wait` and
//!   `wait_deadline`, all callable from any number of threads; dropping it kills the process if it
//!   still runs and never waits: a process-wide reaper reaps it.
//! - `drain(pipe, name, sink)`: reads a worker's stderr to its end without ever blocking on
//!   anything but the pipe.
//! - `die_with_parent`, `remove_secret_env`: what a worker does with its environment;
//!   `name_process`: how it shows in `ps` and `top` (a self-spawned worker is started from
//!   `/proc/self/exe` and would show as `exe`).
//! - `exit_signal`, `signal_name`, `self_exe`, `is_current_exe`, `exe_identity`, `prefault`.
//! - `socket`: bincrew's view of `ipc-channel`'s sockets (see `wire/transport.rs`): whether a
//!   descriptor is a channel end of a given process, non-blocking sends, waiting with a deadline,
//!   and checking a packet before `ipc-channel` reads it. Linux has it (`linux_socket.rs`);
//!   elsewhere (`other_socket.rs`) nothing is found, and callers fall back.
//! - `limits`: what a worker's limits are made of: `core_dumps_off` and `data_limit` (resource
//!   limits of another process), `rss` and `descendants` (its resident memory and its process
//!   tree), `has_thread_named`, and `Cgroup` with `cgroup_parent`. Linux has them
//!   (`linux_limits.rs`); elsewhere (`other_limits.rs`) they fail or find nothing, and the start
//!   fails with `StartError::Limit` unless the limits are best effort.
//! - `Launch::new_group`: the worker leads a process group of its own, and `Child::kill` kills
//!   the group (Unix).
//!
//! On Linux, spawning and reaping are in `linux.rs` (`posix_spawn`, pidfds, a worker inherits no
//! descriptor of the app); on other Unixes in `duct_spawn.rs`. The stderr pump is here: one thread
//! for the whole process drains every worker's stderr with `poll(2)`.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;

#[path = "launch.rs"]
mod launch;
pub(crate) use launch::Launch;
pub use launch::{WorkerStdin, WorkerStdout};

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{name_process, remove_secret_env, spawn, Child};

#[cfg(not(target_os = "linux"))]
#[path = "duct_spawn.rs"]
mod duct_spawn;

#[cfg(target_os = "linux")]
#[path = "linux_socket.rs"]
pub(crate) mod socket;
#[cfg(not(target_os = "linux"))]
#[path = "other_socket.rs"]
pub(crate) mod socket;
#[cfg(not(target_os = "linux"))]
pub(crate) use duct_spawn::{spawn, Child};

#[cfg(target_os = "linux")]
#[path = "linux_limits.rs"]
pub(crate) mod limits;
#[cfg(not(target_os = "linux"))]
#[path = "other_limits.rs"]
pub(crate) mod limits;

/// Names the process after the worker it serves (Linux only).
#[cfg(not(target_os = "linux"))]
pub(crate) fn name_process(_name: &str) {}

/// Removes `key` from the environment. (Linux also blanks it where other processes can read it.)
#[cfg(not(target_os = "linux"))]
pub(crate) fn remove_secret_env(key: &str) {
    std::env::remove_var(key);
}

pub(crate) fn exit_signal(status: &ExitStatus) -> Option<i32> {
    status.signal()
}

pub(crate) fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

/// The running executable. On Linux `/proc/self/exe`, which stays this very file even after the
/// file on disk was replaced by an upgrade, so a self-spawned worker is always the same build.
pub(crate) fn self_exe() -> std::io::Result<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        let proc_exe = PathBuf::from("/proc/self/exe");
        if proc_exe.exists() {
            return Ok(proc_exe);
        }
    }
    std::env::current_exe()
}

/// Whether `path` is the running executable's file.
pub(crate) fn is_current_exe(path: &std::path::Path) -> bool {
    match (
        std::fs::metadata(path),
        std::fs::metadata(self_exe().unwrap_or_default()),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Identity of the running executable file: device, inode, size and modification time.
pub(crate) fn exe_identity() -> Option<String> {
    let meta = std::fs::metadata(self_exe().ok()?).ok()?;
    Some(format!(
        "{:x}:{:x}:{}:{}.{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

/// In a worker: dies with its app. On Linux the kernel sends SIGKILL when the app (the thread
/// that spawned this process) ends, even by SIGKILL; `app_pid` closes the race with an app that
/// died before this call: `false` when the parent is not `app_pid` (the app is gone, or the
/// variable was left in the environment of a process no app started). Elsewhere the closed
/// request channel is the only signal, and this returns `true`.
pub(crate) fn die_with_parent(app_pid: Option<u32>) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl and getppid have no memory effects.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            app_pid.is_none_or(|pid| libc::getppid().unsigned_abs() == pid)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = app_pid;
        true
    }
}

type StderrSink = Box<dyn FnMut(Option<&[u8]>) + Send>;

/// One thread for the whole process that drains every worker's stderr, with `poll(2)`: a worker
/// costs the app its reader thread and nothing more. Sinks run on this thread and must never
/// block: every worker's stderr waits on it (the sink forwards to the app's stderr through a
/// bounded queue, see `process::Forward`).
struct Pump {
    pipes: std::sync::Mutex<Vec<(std::io::PipeReader, StderrSink)>>,
    /// Written to when a pipe is added, to wake the `poll`.
    wake: std::io::PipeWriter,
}

static PUMP: std::sync::OnceLock<Option<Pump>> = std::sync::OnceLock::new();

/// Reads `pipe`, the stderr of worker `worker`, to its end, calling `sink` with each chunk and
/// then with `None`.
pub(crate) fn drain(
    pipe: std::io::PipeReader,
    worker: &str,
    sink: StderrSink,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    let pump = PUMP.get_or_init(|| {
        let (wake_read, wake) = std::io::pipe().ok()?;
        set_nonblocking(wake_read.as_raw_fd());
        std::thread::Builder::new()
            .name("bincrew-stderr".into())
            .spawn(move || pump(wake_read))
            .ok()?;
        Some(Pump {
            pipes: std::sync::Mutex::new(Vec::new()),
            wake,
        })
    });
    let Some(pump) = pump else {
        return Err(std::io::Error::other("cannot start the stderr thread"));
    };
    set_nonblocking(pipe.as_raw_fd());
    tracing::trace!(
        worker,
        fd = pipe.as_raw_fd(),
        "draining the worker's stderr"
    );
    crate::sync::lock(&pump.pipes).push((pipe, sink));
    (&pump.wake).write_all(&[1])
}

fn set_nonblocking(fd: std::os::fd::RawFd) {
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

fn pump(mut wake: std::io::PipeReader) {
    use std::io::Read;
    use std::os::fd::AsRawFd;

    // The pump is stored right after this thread starts.
    let pump = loop {
        match PUMP.get() {
            Some(Some(pump)) => break pump,
            Some(None) => return,
            None => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut fds: Vec<libc::pollfd> = vec![libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        fds.extend(
            crate::sync::lock(&pump.pipes)
                .iter()
                .map(|(pipe, _)| libc::pollfd {
                    fd: pipe.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }),
        );
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            while matches!(wake.read(&mut chunk), Ok(n) if n > 0) {}
        }
        let mut pipes = crate::sync::lock(&pump.pipes);
        for polled in &fds[1..] {
            if polled.revents == 0 {
                continue;
            }
            let Some(index) = pipes.iter().position(|(p, _)| p.as_raw_fd() == polled.fd) else {
                continue;
            };
            let (pipe, sink) = &mut pipes[index];
            // Non-blocking: a stale readiness reads nothing and is skipped.
            let ended = loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break true,
                    Ok(n) => sink(Some(&chunk[..n])),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            if ended {
                let (_pipe, mut sink) = pipes.swap_remove(index);
                sink(None);
            }
        }
    }
}

/// Maps every page of a freshly received shared buffer at once (Linux 5.14 and later; elsewhere,
/// or when the kernel refuses, pages are mapped on first use as usual).
pub(crate) fn prefault(memory: &mut [u8]) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if !memory.is_empty() {
        // SAFETY: the range is this process's own mapping; MADV_POPULATE_WRITE only maps its
        // pages, without changing their contents.
        unsafe {
            libc::madvise(
                memory.as_mut_ptr().cast(),
                memory.len(),
                libc::MADV_POPULATE_WRITE,
            );
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = memory;
}

/// Whether this process can open `n` (1 or 2) more descriptors now: what putting shared memory
/// into a message takes (new memory's own, and the duplicate `ipc-channel` sends). `ipc-channel`
/// panics where it finds none, so senders ask first (the answer may change at once: the panic
/// is still caught, but then the app's panic hook has printed it). Only running out
/// (`EMFILE`, `ENFILE`) counts as no.
pub(crate) fn spare_descriptors(n: usize) -> bool {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: eventfd returns a new descriptor or -1; pipe2 and pipe write two descriptors into
    // `fds` when they return 0. Whatever was made is closed below.
    let made = unsafe {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if n <= 1 {
            fds[0] = libc::eventfd(0, libc::EFD_CLOEXEC);
            if fds[0] >= 0 {
                0
            } else {
                -1
            }
        } else {
            libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = n;
            libc::pipe(fds.as_mut_ptr())
        }
    };
    if made != 0 {
        let error = std::io::Error::last_os_error().raw_os_error();
        return !matches!(error, Some(libc::EMFILE | libc::ENFILE));
    }
    for fd in fds {
        if fd >= 0 {
            // SAFETY: a descriptor made above, closed once.
            unsafe { libc::close(fd) };
        }
    }
    true
}
