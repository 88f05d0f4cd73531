//! Linux: how a worker process is started, killed and reaped, and how a worker hides its token.
//!
//! - **Spawning.** [`spawn`] uses `posix_spawn` (a `vfork`-style spawn: no code of ours runs in
//!   the child) with file actions that give the worker the stdin and stdout asked for (by default
//!   `/dev/null` and the stderr pipe; or the app's own, or `/dev/null` for stdout), the stderr
//!   pipe, the working directory asked for, and close every other descriptor. ipc-channel's
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
//!   exited, and never waits: the reaper reaps it. A child is handed to the reaper the first
//!   time someone waits for its exit or its handle drops, not at the spawn, so that starting a
//!   worker wakes no other thread.
//! - **The process tree.** A worker is spawned as the leader of a process group of its own
//!   (unless it shares the app's terminal, see `process::child`). [`Child::kill`] signals the
//!   whole group, and the reaper signals it once more right before it reaps the worker: what the
//!   worker started dies with it, however the worker ended. Both happen before the worker is
//!   reaped, while its pid (the group's id) cannot have been reused.
//! - **The token.** [`remove_secret_env`] blanks a variable's entry in the initial environment
//!   block, which is what `/proc/<pid>/environ` shows to other processes, before removing it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};

use super::{Launch, WorkerStdin, WorkerStdout};
use crate::sync::lock;

#[path = "linux_reap.rs"]
mod reap;
pub(crate) use reap::Child;
use reap::{reaper, Record};

/// Starts a worker process; see the module docs.
pub(crate) fn spawn(launch: Launch<'_>) -> io::Result<Child> {
    // Started before the first worker, so that a worker is never without a reaper.
    reaper()?;
    let prepared = Prepared::new(launch)?;
    let group = prepared.new_group;
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
        watched: std::sync::atomic::AtomicBool::new(false),
        group,
    });
    // The reaper is told when someone first waits for the exit, or the handle drops.
    Ok(Child { record })
}

/// Runs the spawn on the main thread or the spawner thread (see the module docs).
fn on_spawning_thread(prepared: Prepared) -> io::Result<libc::pid_t> {
    type SpawnJob = Box<dyn FnOnce() + Send>;
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<SpawnJob>>>> = OnceLock::new();

    if std::thread::current().name() == Some("main") {
        return prepared.spawn();
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, job_rx) = mpsc::channel::<SpawnJob>();
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
    let job: SpawnJob = Box::new(move || {
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
    stdin: WorkerStdin,
    stdout: WorkerStdout,
    current_dir: Option<CString>,
    /// The write end of the stderr pipe; closed here once the child has its copy.
    stderr: OwnedFd,
    /// The child leads a process group of its own.
    new_group: bool,
}

impl Prepared {
    fn new(launch: Launch<'_>) -> io::Result<Prepared> {
        // posix_spawn cannot set resource limits: core dumps are turned off right after the
        // spawn, before the handshake (`os::limits::core_dumps_off`).
        let _ = launch.core_dumps;
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
        let current_dir = match launch.current_dir {
            Some(dir) => Some(c_string(dir.as_os_str().as_bytes().to_vec())?),
            None => None,
        };
        Ok(Prepared {
            program,
            argv,
            envp,
            stdin: launch.stdin,
            stdout: launch.stdout,
            current_dir,
            stderr: launch.stderr.into(),
            new_group: launch.new_group,
        })
    }

    fn spawn(self) -> io::Result<libc::pid_t> {
        let mut actions = FileActions::new()?;
        // The stderr pipe first: it has a low number when the app closed its stdin or stdout.
        actions.dup2(self.stderr.as_raw_fd(), 2)?;
        match self.stdin {
            WorkerStdin::Null => actions.open(0, c"/dev/null", libc::O_RDONLY)?,
            WorkerStdin::Inherit => {}
        }
        match self.stdout {
            WorkerStdout::Stderr => actions.dup2(self.stderr.as_raw_fd(), 1)?,
            WorkerStdout::Null => actions.open(1, c"/dev/null", libc::O_WRONLY)?,
            WorkerStdout::Inherit => {}
        }
        if let Some(dir) = &self.current_dir {
            actions.chdir(dir)?;
        }
        actions.close_from(3)?;
        let attrs = SpawnAttrs::new(self.new_group)?;
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
    /// Changes the child's working directory before it runs the worker.
    fn chdir(&mut self, dir: &std::ffi::CStr) -> io::Result<()> {
        let Some(add_chdir) = add_chdir() else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this C library cannot set a spawned process's directory (glibc 2.29 or later can)",
            ));
        };
        // SAFETY: an initialized structure and a nul-terminated path that outlives the spawn.
        check(unsafe { add_chdir(&mut self.0, dir.as_ptr()) })
    }

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

type AddChdir =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, *const libc::c_char) -> libc::c_int;
type AddClosefrom =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, libc::c_int) -> libc::c_int;

/// A C library function that may be missing (a glibc extension), looked up once at run time so
/// that bincrew still builds and runs where it is absent.
fn c_function(name: &std::ffi::CStr) -> Option<*mut libc::c_void> {
    // SAFETY: dlsym with a nul-terminated name.
    let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!symbol.is_null()).then_some(symbol)
}

/// glibc's `posix_spawn_file_actions_addchdir_np` (2.29 and later), when this C library has it.
fn add_chdir() -> Option<AddChdir> {
    static ADD_CHDIR: OnceLock<Option<usize>> = OnceLock::new();
    let symbol = *ADD_CHDIR
        .get_or_init(|| c_function(c"posix_spawn_file_actions_addchdir_np").map(|f| f as usize));
    // SAFETY: that symbol is this function, of C signature
    // `int (posix_spawn_file_actions_t *, const char *)`.
    symbol.map(|f| unsafe { std::mem::transmute::<usize, AddChdir>(f) })
}

/// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), when this C library has it.
fn add_closefrom() -> Option<AddClosefrom> {
    static ADD_CLOSEFROM: OnceLock<Option<usize>> = OnceLock::new();
    let symbol = *ADD_CLOSEFROM.get_or_init(|| {
        c_function(c"posix_spawn_file_actions_addclosefrom_np").map(|f| f as usize)
    });
    // SAFETY: that symbol is this function, of C signature
    // `int (posix_spawn_file_actions_t *, int)`.
    symbol.map(|f| unsafe { std::mem::transmute::<usize, AddClosefrom>(f) })
}

struct SpawnAttrs(libc::posix_spawnattr_t);

impl SpawnAttrs {
    /// As std sets them: no blocked signals, and SIGPIPE back to its default action (the app,
    /// like every Rust program, ignores it, and ignored signals survive `exec`). With
    /// `new_group`, the child leads a process group of its own (whose id is its pid).
    fn new(new_group: bool) -> io::Result<SpawnAttrs> {
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
            let mut flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
            if new_group {
                check(libc::posix_spawnattr_setpgroup(&mut attrs.0, 0))?;
                flags |= libc::POSIX_SPAWN_SETPGROUP;
            }
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

/// An address range that holds the initial environment block and no memory the C library
/// allocates: the strings `exec` put on the initial stack, from the auxiliary vector without a
/// system call. The kernel copies the executable's name first (`AT_EXECFN`, the highest), then
/// the environment strings below it, then the arguments; the 16 random bytes of `AT_RANDOM` lie
/// below them all. Where the vector lacks either entry, `/proc/self/stat` tells (fields 50 and 51,
/// `env_start` and `env_end`), which costs a rendering of the file by the kernel.
fn initial_environment() -> Option<std::ops::Range<usize>> {
    // SAFETY: getauxval only reads the auxiliary vector.
    let (random, execfn) = unsafe {
        (
            libc::getauxval(libc::AT_RANDOM) as usize,
            libc::getauxval(libc::AT_EXECFN) as usize,
        )
    };
    match random.checked_add(16) {
        Some(start) if random != 0 && start < execfn => Some(start..execfn),
        _ => environment_from_stat(),
    }
}

/// [`initial_environment`] from `/proc/self/stat`.
fn environment_from_stat() -> Option<std::ops::Range<usize>> {
    use std::io::Read;
    // One read with room for the whole line (a few hundred bytes): the kernel renders the
    // file anew for each read, which `read_to_string`'s small first reads would repeat.
    let mut bytes = Vec::with_capacity(4096);
    std::fs::File::open("/proc/self/stat")
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut bytes)
        .ok()?;
    let stat = String::from_utf8_lossy(&bytes);
    // Fields after the command name, which is in parentheses and may contain anything.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(50 - 3);
    let start: usize = fields.next()?.parse().ok()?;
    let end: usize = fields.next()?.parse().ok()?;
    (start < end).then_some(start..end)
}

/// Names the calling thread, and so the process when it is the main thread, `name` (at most 15
/// bytes, cut at a character boundary): what `ps` and `top` show.
pub(crate) fn name_process(name: &str) {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let Ok(name) = CString::new(&name[..end]) else {
        return;
    };
    // SAFETY: PR_SET_NAME reads a nul-terminated string of at most 16 bytes.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
}

#[cfg(test)]
mod tests {
    /// The range found without a system call holds the kernel's own `env_start..env_end`.
    #[test]
    fn the_auxiliary_vector_bounds_the_initial_environment() {
        let stat = super::environment_from_stat().expect("/proc/self/stat");
        let found = super::initial_environment().expect("the range");
        assert!(
            found.start <= stat.start && stat.end <= found.end,
            "{found:x?} does not hold {stat:x?}"
        );
        // And no heap memory: the C library's allocations lie far below the initial stack.
        let heap = Box::new(0u8);
        let at = std::ptr::addr_of!(*heap) as usize;
        assert!(!found.contains(&at));
    }
}
