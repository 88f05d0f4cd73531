//! The worker's side of its CPU limit per request: a watchdog thread that reads the CPU clock of
//! each thread while it runs a handler.
//!
//! A handler thread registers itself for the length of one request ([`Measured`]): its thread's
//! CPU clock (`pthread_getcpuclockid`) and the CPU time it had used when the request started.
//! While requests run, the watchdog wakes every twentieth of the limit (between 1 and 50 ms; it
//! sleeps while none runs), and when a request has used more than the limit it writes
//! [`CPU_LIMIT_LINE`] to stderr and ends the process with [`EXIT_CPU_LIMIT`]: the app's crash
//! report then names the CPU limit and the request. Only the handler's own thread is counted,
//! not threads it starts, and not time it spends waiting, so a long-lived worker never dies of
//! old age as it would under `RLIMIT_CPU`.
//!
//! The watchdog reads a clock only while holding the lock its thread needs to unregister, so the
//! thread cannot have exited when its clock is read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::contain::{CPU_LIMIT_LINE, CPU_WATCHDOG, EXIT_CPU_LIMIT};
use crate::sync::lock;

struct Watchdog {
    limit: Duration,
    running: Mutex<Vec<Running>>,
    /// Signalled when a request starts while none ran: the watchdog sleeps while none runs.
    started: Condvar,
}

/// A request being handled.
struct Running {
    /// Names this registration, to remove it.
    key: u64,
    /// The request's id.
    id: u64,
    clock: libc::clockid_t,
    /// The thread's CPU time when the request started.
    start: Duration,
}

static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();

/// Starts the watchdog for a limit of `limit` per request. Called once, before the handshake.
pub(crate) fn start(limit: Duration) -> std::io::Result<()> {
    if WATCHDOG
        .set(Watchdog {
            limit,
            running: Mutex::new(Vec::new()),
            started: Condvar::new(),
        })
        .is_err()
    {
        return Ok(());
    }
    let tick = (limit / 20).clamp(Duration::from_millis(1), Duration::from_millis(50));
    let (started, running) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(CPU_WATCHDOG.into())
        .spawn(move || {
            // The thread has its name by now: the app may look for it once this returns.
            let _ = started.send(());
            let Some(watchdog) = WATCHDOG.get() else {
                return;
            };
            loop {
                watchdog.wait_for_requests();
                std::thread::sleep(tick);
                watchdog.check();
            }
        })?;
    running
        .recv()
        .map_err(|_| std::io::Error::other("the CPU watchdog thread ended at once"))
}

impl Watchdog {
    /// Returns once a request is running.
    fn wait_for_requests(&self) {
        let mut running = lock(&self.running);
        while running.is_empty() {
            running = self
                .started
                .wait(running)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn check(&self) {
        let running = lock(&self.running);
        for request in running.iter() {
            let Some(now) = cpu_time(request.clock) else {
                continue;
            };
            let used = now.saturating_sub(request.start);
            if used > self.limit {
                let line = format!(
                    "{CPU_LIMIT_LINE}{} used {used:?} of CPU time, over its limit of {:?} per request; the worker exits\n",
                    request.id, self.limit
                );
                // Straight to the descriptor: a handler may hold std's stderr lock.
                // SAFETY: write reads `line` for its length.
                unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
                super::exit::exit_now(EXIT_CPU_LIMIT);
            }
        }
    }
}

/// The CPU time a clock shows.
fn cpu_time(clock: libc::clockid_t) -> Option<Duration> {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(clock, &mut time) } != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(time.tv_sec).ok()?,
        u32::try_from(time.tv_nsec).ok()?,
    ))
}

/// The CPU time of one request, measured while it lives on the thread that handles it.
pub(crate) struct Measured {
    key: Option<u64>,
}

impl Measured {
    /// Starts measuring request `id` on the calling thread; does nothing without a CPU limit.
    pub(crate) fn start(id: u64) -> Measured {
        static KEYS: AtomicU64 = AtomicU64::new(0);
        let Some(watchdog) = WATCHDOG.get() else {
            return Measured { key: None };
        };
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_getcpuclockid of the calling thread, writing the clock id given.
        if unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } != 0 {
            return Measured { key: None };
        }
        let Some(start) = cpu_time(clock) else {
            return Measured { key: None };
        };
        let key = KEYS.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut running = lock(&watchdog.running);
            running.push(Running {
                key,
                id,
                clock,
                start,
            });
            running.len() == 1
        };
        if first {
            watchdog.started.notify_one();
        }
        Measured { key: Some(key) }
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        if let (Some(key), Some(watchdog)) = (self.key, WATCHDOG.get()) {
            lock(&watchdog.running).retain(|r| r.key != key);
        }
    }
}
