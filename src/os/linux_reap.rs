//! Linux: the handle on a started worker ([`Child`]) and the process-wide reaper that reaps
//! every worker through its pidfd (see `linux.rs` for the whole story).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::ExitInfo;
use crate::sync::lock;

/// How often a worker without a pidfd is checked for its exit.
const WAITPID_POLL: Duration = Duration::from_millis(20);

/// A worker process started by [`spawn`].
pub(crate) struct Child {
    pub(super) record: Arc<Record>,
}

/// One child, shared by its [`Child`] and the reaper.
pub(super) struct Record {
    pub(super) pid: libc::pid_t,
    /// Readable once the process exited; `None` before Linux 5.3.
    pub(super) pidfd: Option<OwnedFd>,
    /// Set by the reaper, under this lock, in the same critical section as the `waitpid` that
    /// reaped the process.
    pub(super) exit: Mutex<Option<ExitInfo>>,
    pub(super) exited: Condvar,
    /// Handed to the reaper: the first time someone waits for the exit, or the handle drops
    /// (not at the spawn, which then wakes no other thread).
    pub(super) watched: std::sync::atomic::AtomicBool,
    /// The process leads a process group of its own, killed with it.
    pub(super) group: bool,
}

impl Child {
    pub(crate) fn id(&self) -> u32 {
        self.record.pid.unsigned_abs()
    }

    /// A descriptor of the process that becomes readable when it exits (a copy of its pidfd),
    /// for a thread that waits for the exit among other things; `None` without pidfds.
    pub(crate) fn exit_fd(&self) -> Option<OwnedFd> {
        self.record.pidfd.as_ref()?.try_clone().ok()
    }

    /// Sends SIGKILL to the process and, when it leads a group of its own, to its group, unless
    /// the process was already reaped. Does not wait.
    pub(crate) fn kill(&self) -> io::Result<()> {
        let exit = lock(&self.record.exit);
        if exit.is_some() {
            return Ok(());
        }
        self.record.kill_group();
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

    /// Whether the process was reaped (without handing it to the reaper).
    pub(crate) fn reaped(&self) -> bool {
        lock(&self.record.exit).is_some()
    }

    /// Hands the process to the reaper, once.
    fn watch(&self) {
        if !self
            .record
            .watched
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            match reaper() {
                Ok(reaper) => reaper.watch(self.record.clone()),
                Err(e) => {
                    tracing::warn!(pid = self.record.pid, error = %e, "nobody reaps this worker")
                }
            }
        }
    }

    /// Blocks until the reaper has reaped the process.
    pub(crate) fn wait(&self) -> ExitInfo {
        self.watch();
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
        self.watch();
        *lock(&self.record.exit)
    }

    /// Waits until the process was reaped or `deadline` passed.
    pub(crate) fn wait_deadline(&self, deadline: Instant) -> Option<ExitInfo> {
        self.watch();
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
        self.watch();
    }
}

impl Record {
    /// Kills the process group the process leads, if it leads one. Call it only while the
    /// process is not reaped (under the `exit` lock, with `exit` empty): until then its pid,
    /// which is the group's id, cannot belong to anyone else.
    fn kill_group(&self) {
        if self.group {
            // SAFETY: kill has no memory effects; see above for why the group is ours.
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        }
    }

    /// Reaps the process if it exited; whether it is gone.
    fn try_reap(&self) -> bool {
        let mut exit = lock(&self.exit);
        if exit.is_some() {
            return true;
        }
        // Exited (or about to be looked at): what it started goes with it. A process that is
        // still running is not in the group's kill unless it exited: `waitpid` below tells.
        if self.group && self.has_exited() {
            self.kill_group();
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

impl Record {
    /// Whether the process has exited (a zombie waiting to be reaped), without reaping it.
    fn has_exited(&self) -> bool {
        let mut info: libc::siginfo_t = zeroed_siginfo();
        // SAFETY: waitid with a pid of ours and a valid siginfo pointer; WNOWAIT leaves the
        // process to be reaped by waitpid.
        let result = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is valid to read for a siginfo filled by waitid (zero when nothing
        // had exited).
        result == 0 && unsafe { info.si_pid() } == self.pid
    }
}

fn zeroed_siginfo() -> libc::siginfo_t {
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// The process-wide reaper: the children it watches, and the pipe that wakes its `poll` when
/// one is added.
pub(super) struct Reaper {
    watched: Mutex<Vec<Arc<Record>>>,
    wake: io::PipeWriter,
}

/// The reaper, started with the first worker.
pub(super) fn reaper() -> io::Result<&'static Reaper> {
    static REAPER: OnceLock<Option<Arc<Reaper>>> = OnceLock::new();
    let reaper = REAPER.get_or_init(|| {
        let (wake_read, wake) = io::pipe().ok()?;
        crate::os::set_nonblocking(wake_read.as_raw_fd());
        crate::os::set_nonblocking(wake.as_raw_fd());
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
    pub(super) fn watch(&self, record: Arc<Record>) {
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
