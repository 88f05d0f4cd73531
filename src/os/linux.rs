//! Linux: how a worker process is started, killed and reaped, and how a worker hides its token.
//!
//! - **Spawning.** [`spawn`] uses `posix_spawn` (a `vfork`-style spawn: no code of ours runs in
//!   the child) with file actions that give the worker `/dev/null` as stdin, the app's stdout
//!   (or `/dev/null`), the stderr pipe, and close every other descriptor. ipc-channel's
//!   `IpcOneShotServer::accept` makes its socket without close-on-exec, so without this each
//!   worker would inherit the app's ends of every earlier worker's channels, and would keep them
//!   open after those workers died (so that their crashes would go unseen). The closing is
//!   glibc's `posix_spawn_file_actions_addclosefrom_np`, looked up when first needed so that
//!   bincrew still builds and runs with C libraries that lack it (glibc before 2.34, musl); there
//!   every descriptor open at the time of the spawn is listed from `/proc/self/fd` and closed one
//!   by one, which misses only a descriptor another thread opens during the spawn.
//! - **Dying with the app.** The worker asks the kernel for SIGKILL when its app dies
//!   (`PR_SET_PDEATHSIG`, see [`die_with_parent`](super::die_with_parent)), and the kernel ties
//!   that to the *thread* that spawned it: workers are spawned from the main thread, or else from
//!   one spawner thread that lives as long as the process.
//! - **Reaping.** One reaper thread for the whole process `poll`s a pidfd per worker (plus a wake
//!   pipe), and reaps a worker with `waitpid(pid, WNOHANG)` when its pidfd says it exited; a
//!   worker whose pidfd could not be opened (before Linux 5.3) is polled with `waitpid` every
//!   20 ms instead. It reaps only the pids bincrew started, never `waitpid(-1)`: the app's own
//!   children are the app's business. It calls `waitpid` and records the status under the
//!   child's lock; [`Child::kill`] checks the status under the same lock, so a pid is never
//!   signalled after it was reaped (and perhaps reused). Waiting is waiting for that record, so
//!   any number of threads may wait. Dropping a [`Child`] kills its process if it has not
//!   exited, and never waits: the reaper reaps it.
//! - **The token.** [`remove_secret_env`] blanks a variable's entry in the initial environment
//!   block, which is what `/proc/<pid>/environ` shows to other processes, before removing it.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::ExitInfo;
use crate::process::Launch;
use crate::sync::lock;

/// How often a worker without a pidfd is checked for its exit.
const WAITPID_POLL: Duration = Duration::from_millis(20);

/// A worker process started by [`spawn`].
pub(crate) struct Child {
    record: Arc<Record>,
}

/// One child, shared by its [`Child`] and the reaper.
struct Record {
    pid: libc::pid_t,
    /// Readable once the process exited; `None` before Linux 5.3.
    pidfd: Option<OwnedFd>,
    /// Set by the reaper, under this lock, in the same critical section as the `waitpid` that
    /// reaped the process.
    exit: Mutex<Option<ExitInfo>>,
    exited: Condvar,
}

impl Child {
    pub(crate) fn id(&self) -> u32 {
        self.record.pid.unsigned_abs()
    }

    /// Sends SIGKILL, unless the process was already reaped. Does not wait.
    pub(crate) fn kill(&self) -> io::Result<()> {
        let exit = lock(&self.record.exit);
        if exit.is_some() {
            return Ok(());
        }
        // Not reaped, and the reaper cannot reap it while we hold the lock: the pid is still
        // this child's (running, or a zombie), so the signal cannot reach another process. The
        // pidfd covers the one exception, an app that has the kernel reap its children (it
        // ignores SIGCHLD).
        if let Some(pidfd) = &self.record.pidfd {
            // SAFETY: pidfd_send_signal with a pidfd of ours, a signal, no info and no flags.
            let sent = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            match sent {
                0 => return Ok(()),
                // It has exited: nothing to kill.
                _ if io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => {
                    return Ok(())
                }
                // Refused by a seccomp filter, say: the pid is still safe to use here.
                _ => {}
            }
        }
        // SAFETY: kill with a pid of ours.
        if unsafe { libc::kill(self.record.pid, libc::SIGKILL) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Blocks until the reaper has reaped the process.
    pub(crate) fn wait(&self) -> ExitInfo {
        let mut exit = lock(&self.record.exit);
        loop {
            if let Some(exit) = *exit {
                return exit;
            }
            exit = self
                .record
                .exited
                .wait(exit)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// The exit status, if the process was reaped.
    pub(crate) fn try_wait(&self) -> Option<ExitInfo> {
        *lock(&self.record.exit)
    }

    /// Waits until the process was reaped or `deadline` passed.
    pub(crate) fn wait_deadline(&self, deadline: Instant) -> Option<ExitInfo> {
        let mut exit = lock(&self.record.exit);
        loop {
            if exit.is_some() {
                return *exit;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            exit = self
                .record
                .exited
                .wait_timeout(exit, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // The reaper keeps watching the process and reaps it once the signal took effect.
        if let Err(e) = self.kill() {
            tracing::debug!(pid = self.record.pid, error = %e, "killing a dropped worker failed");
        }
    }
}

impl Record {
    /// Reaps the process if it exited; whether it is gone.
    fn try_reap(&self) -> bool {
        let mut exit = lock(&self.exit);
        if exit.is_some() {
            return true;
        }
        let mut status = 0;
        let reaped = loop {
            // SAFETY: waitpid on a pid this process started, with a valid status pointer.
            let result = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if result == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break result;
        };
        let info = match reaped {
            0 => return false,
            -1 => {
                // ECHILD: the app reaped it itself (it ignores SIGCHLD, or calls waitpid(-1)).
                tracing::debug!(
                    pid = self.pid,
                    error = %io::Error::last_os_error(),
                    "a worker was reaped by someone else: its exit status is unknown"
                );
                ExitInfo {
                    code: None,
                    signal: None,
                }
            }
            _ => ExitInfo::from_status(&std::process::ExitStatus::from_raw(status)),
        };
        *exit = Some(info);
        self.exited.notify_all();
        true
    }
}

/// The process-wide reaper: the children it watches, and the pipe that wakes its `poll` when
/// one is added.
struct Reaper {
    watched: Mutex<Vec<Arc<Record>>>,
    wake: io::PipeWriter,
}

/// The reaper, started with the first worker.
fn reaper() -> io::Result<&'static Reaper> {
    static REAPER: OnceLock<Option<Arc<Reaper>>> = OnceLock::new();
    let reaper = REAPER.get_or_init(|| {
        let (wake_read, wake) = io::pipe().ok()?;
        super::set_nonblocking(wake_read.as_raw_fd());
        super::set_nonblocking(wake.as_raw_fd());
        let reaper = Arc::new(Reaper {
            watched: Mutex::new(Vec::new()),
            wake,
        });
        let run = reaper.clone();
        std::thread::Builder::new()
            .name("bincrew-reaper".into())
            .spawn(move || run.run(wake_read))
            .ok()?;
        Some(reaper)
    });
    reaper
        .as_deref()
        .ok_or_else(|| io::Error::other("cannot start the thread that reaps workers"))
}

impl Reaper {
    fn watch(&self, record: Arc<Record>) {
        lock(&self.watched).push(record);
        // A full pipe already holds a wake-up.
        let _ = (&self.wake).write(&[1]);
    }

    fn run(&self, mut wake: io::PipeReader) {
        let mut drained = [0u8; 64];
        // Children whose pidfd was readable while `waitpid` found nothing to reap (a kernel that
        // reports a thread-group leader's exit before its other threads'): polled with waitpid
        // from then on, rather than spinning on the pidfd.
        let mut spurious: Vec<libc::pid_t> = Vec::new();
        loop {
            let watched: Vec<Arc<Record>> = lock(&self.watched).clone();
            let mut fds = vec![libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // Each watched child's place in `fds`, or `None` when it is polled with waitpid.
            let slots: Vec<Option<usize>> = watched
                .iter()
                .map(|record| {
                    let pidfd = record.pidfd.as_ref();
                    let pidfd = pidfd.filter(|_| !spurious.contains(&record.pid));
                    pidfd.map(|pidfd| {
                        fds.push(libc::pollfd {
                            fd: pidfd.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        });
                        fds.len() - 1
                    })
                })
                .collect();
            let timeout = if slots.iter().any(Option::is_none) {
                WAITPID_POLL.as_millis() as libc::c_int
            } else {
                -1
            };
            // SAFETY: `fds` is a valid array of pollfd of the given length.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if ready < 0 {
                continue;
            }
            if fds[0].revents != 0 {
                while matches!(wake.read(&mut drained), Ok(n) if n > 0) {}
            }
            let mut gone = Vec::new();
            for (record, slot) in watched.iter().zip(&slots) {
                let due = slot.is_none_or(|i| fds[i].revents != 0);
                if !due {
                    continue;
                }
                if record.try_reap() {
                    gone.push(record.pid);
                } else if slot.is_some() {
                    spurious.push(record.pid);
                }
            }
            if !gone.is_empty() {
                spurious.retain(|pid| !gone.contains(pid));
                lock(&self.watched).retain(|r| !gone.contains(&r.pid));
            }
        }
    }
}

/// Starts a worker process; see the module docs.
pub(crate) fn spawn(launch: Launch<'_>) -> io::Result<Child> {
    let reaper = reaper()?;
    let prepared = Prepared::new(launch)?;
    let pid = on_spawning_thread(prepared)?;
    // Before the reaper knows the pid nobody reaps it, so it is still this child's.
    // SAFETY: pidfd_open takes a pid and flags, and returns a new descriptor (close-on-exec) or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = RawFd::try_from(pidfd)
        .ok()
        .filter(|fd| *fd >= 0)
        // SAFETY: a descriptor the kernel just gave us, owned by nothing else.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    let record = Arc::new(Record {
        pid,
        pidfd,
        exit: Mutex::new(None),
        exited: Condvar::new(),
    });
    reaper.watch(record.clone());
    Ok(Child { record })
}

/// Runs the spawn on the main thread or the spawner thread (see the module docs).
fn on_spawning_thread(prepared: Prepared) -> io::Result<libc::pid_t> {
    type Job = Box<dyn FnOnce() + Send>;
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();

    if std::thread::current().name() == Some("main") {
        return prepared.spawn();
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("bincrew-spawner".into())
            .spawn(move || {
                for job in job_rx {
                    job();
                }
            })
            .ok()
            .map(|_| Mutex::new(jobs))
    });
    let (result_tx, result_rx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let _ = result_tx.send(prepared.spawn());
    });
    let unsent = match spawner {
        Some(spawner) => lock(spawner).send(job).err().map(|e| e.0),
        None => Some(job),
    };
    if let Some(job) = unsent {
        tracing::warn!(
            "spawning from the calling thread: the worker dies with this thread, not the app"
        );
        job();
    }
    result_rx
        .recv()
        .unwrap_or_else(|_| Err(io::Error::other("the spawner thread ended")))
}

/// Everything `posix_spawn` takes, ready before the spawning thread is involved.
struct Prepared {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    quiet_stdout: bool,
    /// The write end of the stderr pipe; closed here once the child has its copy.
    stderr: OwnedFd,
}

impl Prepared {
    fn new(launch: Launch<'_>) -> io::Result<Prepared> {
        let c_string = |bytes: Vec<u8>| {
            CString::new(bytes).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the worker's path, an argument or an environment variable contains a nul byte",
                )
            })
        };
        let program = c_string(launch.program.as_os_str().as_bytes().to_vec())?;
        let mut argv = vec![program.clone()];
        for arg in launch.args {
            argv.push(c_string(arg.as_bytes().to_vec())?);
        }
        let mut envp = Vec::with_capacity(launch.env.len());
        for (key, value) in &launch.env {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            envp.push(c_string(entry)?);
        }
        Ok(Prepared {
            program,
            argv,
            envp,
            quiet_stdout: launch.quiet_stdout,
            stderr: launch.stderr.into(),
        })
    }

    fn spawn(self) -> io::Result<libc::pid_t> {
        let mut actions = FileActions::new()?;
        // The stderr pipe first: it has a low number when the app closed its stdin or stdout.
        actions.dup2(self.stderr.as_raw_fd(), 2)?;
        actions.open(0, c"/dev/null", libc::O_RDONLY)?;
        if self.quiet_stdout {
            actions.open(1, c"/dev/null", libc::O_WRONLY)?;
        }
        actions.close_from(3)?;
        let attrs = SpawnAttrs::new()?;
        let argv = null_terminated(&self.argv);
        let envp = null_terminated(&self.envp);
        let mut pid = 0;
        // Like std and duct: a bare name is looked up in PATH, anything else is a path.
        let search = !self.program.as_bytes().contains(&b'/');
        // SAFETY: every pointer is valid for the call: the strings are owned by `self`, the
        // arrays end with a null pointer, and `actions` and `attrs` are initialized.
        let result = unsafe {
            if search {
                libc::posix_spawnp(
                    &mut pid,
                    self.program.as_ptr(),
                    &actions.0,
                    &attrs.0,
                    argv.as_ptr(),
                    envp.as_ptr(),
                )
            } else {
                libc::posix_spawn(
                    &mut pid,
                    self.program.as_ptr(),
                    &actions.0,
                    &attrs.0,
                    argv.as_ptr(),
                    envp.as_ptr(),
                )
            }
        };
        if result != 0 {
            return Err(io::Error::from_raw_os_error(result));
        }
        Ok(pid)
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(result))
    }
}

struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<FileActions> {
        // SAFETY: init fills in the zeroed structure, which is destroyed only if init succeeded.
        unsafe {
            let mut actions = std::mem::zeroed();
            check(libc::posix_spawn_file_actions_init(&mut actions))?;
            Ok(FileActions(actions))
        }
    }

    fn dup2(&mut self, fd: RawFd, to: RawFd) -> io::Result<()> {
        // SAFETY: an initialized structure; the descriptors are checked by posix_spawn.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, to) })
    }

    fn open(&mut self, fd: RawFd, path: &std::ffi::CStr, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: an initialized structure and a nul-terminated path (glibc copies it).
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(&mut self.0, fd, path.as_ptr(), flags, 0)
        })
    }

    /// Closes every descriptor from `first` on in the child.
    fn close_from(&mut self, first: RawFd) -> io::Result<()> {
        if let Some(add_closefrom) = add_closefrom() {
            // SAFETY: an initialized structure.
            return check(unsafe { add_closefrom(&mut self.0, first) });
        }
        // Without closefrom: every descriptor open now. Closing one that another thread closes
        // meanwhile is harmless: posix_spawn ignores a failed close of a valid number.
        let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd >= first)
            .collect();
        for fd in open {
            // SAFETY: an initialized structure.
            check(unsafe { libc::posix_spawn_file_actions_addclose(&mut self.0, fd) })?;
        }
        Ok(())
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

type AddClosefrom =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, libc::c_int) -> libc::c_int;

/// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), when this C library has it.
fn add_closefrom() -> Option<AddClosefrom> {
    static ADD_CLOSEFROM: OnceLock<Option<AddClosefrom>> = OnceLock::new();
    *ADD_CLOSEFROM.get_or_init(|| {
        // SAFETY: dlsym with a nul-terminated name; a non-null result is that function, whose
        // C signature is `int (posix_spawn_file_actions_t *, int)`.
        unsafe {
            let symbol = libc::dlsym(
                libc::RTLD_DEFAULT,
                c"posix_spawn_file_actions_addclosefrom_np".as_ptr(),
            );
            (!symbol.is_null())
                .then(|| std::mem::transmute::<*mut libc::c_void, AddClosefrom>(symbol))
        }
    })
}

struct SpawnAttrs(libc::posix_spawnattr_t);

impl SpawnAttrs {
    /// As std sets them: no blocked signals, and SIGPIPE back to its default action (the app,
    /// like every Rust program, ignores it, and ignored signals survive `exec`).
    fn new() -> io::Result<SpawnAttrs> {
        // SAFETY: init fills in the zeroed structure, which is destroyed only if init succeeded;
        // the signal sets are initialized by sigemptyset before use.
        unsafe {
            let mut attrs = std::mem::zeroed();
            check(libc::posix_spawnattr_init(&mut attrs))?;
            let mut attrs = SpawnAttrs(attrs);
            let mut signals: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut signals);
            check(libc::posix_spawnattr_setsigmask(&mut attrs.0, &signals))?;
            libc::sigaddset(&mut signals, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(&mut attrs.0, &signals))?;
            let flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(
                &mut attrs.0,
                flags as libc::c_short,
            ))?;
            Ok(attrs)
        }
    }
}

impl Drop for SpawnAttrs {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// Removes `key` from the environment, and blanks its `key=value` string where it lies in the
/// initial environment block (what `/proc/<pid>/environ` shows other processes).
pub(crate) fn remove_secret_env(key: &str) {
    let Ok(name) = CString::new(key) else {
        return;
    };
    // SAFETY: getenv with a nul-terminated name; the result is null or points to the value
    // within a `key=value` string.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    // The environment stops pointing at the string before it is blanked, so nothing that
    // looks the variable up later sees the blanked bytes.
    std::env::remove_var(key);
    if value.is_null() {
        return;
    }
    let Some(block) = initial_environment() else {
        return;
    };
    // SAFETY: `value` points to a nul-terminated string (getenv's result, still in memory: the
    // C library does not free environment strings on removal).
    let value_len = unsafe { libc::strlen(value) };
    let value = value as usize;
    let Some(entry) = value.checked_sub(key.len() + 1) else {
        return;
    };
    let end = value + value_len;
    // Only the initial block: a string the program set later belongs to the C library.
    if entry < block.start || end >= block.end {
        return;
    }
    // SAFETY: `entry..=end` lies within the initial environment block, which the kernel mapped
    // writable at `exec` and which no environment entry points into any more.
    unsafe { std::ptr::write_bytes(entry as *mut u8, 0, end - entry) };
}

/// The address range of the initial environment block, from `/proc/self/stat` (fields 50 and
/// 51, `env_start` and `env_end`).
fn initial_environment() -> Option<std::ops::Range<usize>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain anything.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(50 - 3);
    let start: usize = fields.next()?.parse().ok()?;
    let end: usize = fields.next()?.parse().ok()?;
    (start < end).then_some(start..end)
}
