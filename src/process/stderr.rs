//! The tail of a worker's stderr, and forwarding it to the app's stderr without ever blocking.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// How much of stderr a crash report keeps.
const STDERR_TAIL: usize = 16 * 1024;
/// How much worker stderr may wait to be written to the app's stderr before more is dropped.
const FORWARD_QUEUE: usize = 1024 * 1024;
/// How often, at most, dropped stderr is reported.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(1);

/// The end of a worker's stderr, filled by the pump thread, which also hands it to [`Forward`].
pub(super) struct StderrTail {
    state: Mutex<TailState>,
    closed: Condvar,
}

struct TailState {
    tail: VecDeque<u8>,
    /// The stream ended: the process and every process that inherited its stderr exited.
    ended: bool,
}

impl StderrTail {
    pub(super) fn start(
        pipe: std::io::PipeReader,
        forward: bool,
        name: &str,
    ) -> std::io::Result<Arc<StderrTail>> {
        let tail = Arc::new(StderrTail {
            state: Mutex::new(TailState {
                tail: VecDeque::new(),
                ended: false,
            }),
            closed: Condvar::new(),
        });
        let forward = if forward { Forward::global() } else { None };
        let filler = tail.clone();
        crate::os::drain(
            pipe,
            name,
            Box::new(move |chunk| match chunk {
                Some(chunk) => {
                    if let Some(forward) = &forward {
                        forward.push(chunk);
                    }
                    let mut state = lock(&filler.state);
                    state.tail.extend(chunk);
                    let excess = state.tail.len().saturating_sub(STDERR_TAIL);
                    state.tail.drain(..excess);
                }
                None => {
                    lock(&filler.state).ended = true;
                    filler.closed.notify_all();
                }
            }),
        )?;
        Ok(tail)
    }

    /// The tail, after waiting up to `grace` for the stream to end.
    pub(super) fn tail(&self, grace: Duration) -> String {
        let state = lock(&self.state);
        let (state, _) = self
            .closed
            .wait_timeout_while(state, grace, |s| !s.ended)
            .unwrap_or_else(PoisonError::into_inner);
        let bytes: Vec<u8> = state.tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Worker stderr on its way to the app's stderr: a bounded queue, and one thread for the whole
/// process that writes it.
///
/// The pump that drains every worker's stderr must never block: were it to write to an app's
/// stderr that is a full pipe nobody reads, every worker writing to its stderr (a panic hook
/// included) would block behind it. So the pump only queues, up to [`FORWARD_QUEUE`] bytes,
/// and drops (and counts) what does not fit; this thread writes, blocking as the app's stderr
/// pleases, and reports what was dropped with a warning at most once per
/// [`DROP_REPORT_EVERY`]. (The warning is emitted on this thread, so a subscriber writing to
/// the same full stderr blocks this thread only.)
struct Forward {
    queue: Mutex<ForwardQueue>,
    queued: Condvar,
    capacity: usize,
}

#[derive(Default)]
struct ForwardQueue {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    dropped: Dropped,
}

/// Stderr dropped since the last report.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Dropped {
    /// Newlines in the dropped chunks (at least one per chunk).
    lines: u64,
    bytes: u64,
}

impl Forward {
    fn new(capacity: usize) -> Forward {
        Forward {
            queue: Mutex::new(ForwardQueue::default()),
            queued: Condvar::new(),
            capacity,
        }
    }

    /// The queue to the app's stderr, with its thread started on first use; `None` when that
    /// thread cannot be started (then nothing is forwarded).
    fn global() -> Option<Arc<Forward>> {
        static FORWARD: OnceLock<Option<Arc<Forward>>> = OnceLock::new();
        FORWARD
            .get_or_init(|| {
                let forward = Arc::new(Forward::new(FORWARD_QUEUE));
                let writer = forward.clone();
                let started = thread::Builder::new()
                    .name("bincrew-forward".into())
                    .spawn(move || writer.run(std::io::stderr()));
                match started {
                    Ok(_) => Some(forward),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start the thread that forwards worker stderr: it is not forwarded");
                        None
                    }
                }
            })
            .clone()
    }

    /// Queues `chunk`, or drops it when the queue is full. Never blocks but on the lock, which
    /// is never held across a write.
    fn push(&self, chunk: &[u8]) {
        let mut queue = lock(&self.queue);
        if queue.bytes + chunk.len() > self.capacity {
            queue.dropped.bytes += chunk.len() as u64;
            queue.dropped.lines += chunk.iter().filter(|b| **b == b'\n').count().max(1) as u64;
            return;
        }
        queue.bytes += chunk.len();
        queue.chunks.push_back(chunk.to_vec());
        drop(queue);
        self.queued.notify_one();
    }

    /// Waits for the next chunk to write, and takes the drops to report when one is due.
    fn next(&self, last_report: Option<Instant>) -> (Option<Vec<u8>>, Option<Dropped>) {
        let due = |at: Option<Instant>| at.map_or(Instant::now(), |t| t + DROP_REPORT_EVERY);
        let mut queue = lock(&self.queue);
        while queue.chunks.is_empty() {
            if queue.dropped == Dropped::default() {
                queue = self
                    .queued
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let Some(left) = due(last_report).checked_duration_since(Instant::now()) else {
                break;
            };
            queue = self
                .queued
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let chunk = queue.chunks.pop_front();
        if let Some(chunk) = &chunk {
            queue.bytes -= chunk.len();
        }
        let report = (queue.dropped != Dropped::default() && due(last_report) <= Instant::now())
            .then(|| std::mem::take(&mut queue.dropped));
        (chunk, report)
    }

    fn run(&self, mut out: impl Write) {
        let mut last_report = None;
        loop {
            let (chunk, dropped) = self.next(last_report);
            if let Some(dropped) = dropped {
                last_report = Some(Instant::now());
                tracing::warn!(
                    lines = dropped.lines,
                    bytes = dropped.bytes,
                    "dropped {} lines of worker stderr: the app's stderr is not being read fast enough",
                    dropped.lines
                );
            }
            if let Some(chunk) = chunk {
                // The app's stderr being closed must not stop the forwarding.
                let _ = out.write_all(&chunk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forward_queue_drops_and_counts_what_does_not_fit() {
        // No writer: the queue only fills, and pushing never waits for one.
        let forward = Forward::new(16);
        for _ in 0..4 {
            forward.push(b"1234567\n");
        }
        forward.push(b"no newline");
        let queue = lock(&forward.queue);
        assert_eq!(queue.chunks.len(), 2);
        assert_eq!(queue.bytes, 16);
        assert_eq!(
            queue.dropped,
            Dropped {
                lines: 3,
                bytes: 26
            }
        );
    }

    #[test]
    fn the_forward_thread_writes_in_order_and_reports_drops_once() {
        let forward = Forward::new(8);
        forward.push(b"ab");
        forward.push(b"cd");
        forward.push(b"too long to fit\n");
        // What the thread's loop does, one step at a time.
        let (chunk, report) = forward.next(None);
        assert_eq!(chunk.as_deref(), Some(&b"ab"[..]));
        assert_eq!(
            report,
            Some(Dropped {
                lines: 1,
                bytes: 16
            })
        );
        let (chunk, report) = forward.next(Some(Instant::now()));
        assert_eq!(chunk.as_deref(), Some(&b"cd"[..]));
        assert_eq!(report, None);
        assert_eq!(lock(&forward.queue).bytes, 0);
    }
}
