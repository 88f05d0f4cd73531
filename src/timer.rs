//! One thread for the whole process that fires request deadlines, started with the first one.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::Instant;

use crate::process::lock;

type Action = Box<dyn FnOnce() + Send>;

struct Entry {
    deadline: Instant,
    seq: u64,
    action: Action,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: the heap's top is the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

struct Timer {
    state: Mutex<(BinaryHeap<Entry>, u64)>,
    changed: Condvar,
}

static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();

fn timer() -> Option<&'static Timer> {
    *TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            state: Mutex::new((BinaryHeap::new(), 0)),
            changed: Condvar::new(),
        }));
        match thread::Builder::new()
            .name("bincrew-timer".into())
            .spawn(move || run(timer))
        {
            Ok(_) => Some(timer),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the timer thread: request timeouts will not fire");
                None
            }
        }
    })
}

/// Runs `action` on the timer thread at `deadline`. Actions must be short.
pub(crate) fn schedule(deadline: Instant, action: Action) {
    let Some(timer) = timer() else {
        return;
    };
    let mut state = lock(&timer.state);
    state.1 += 1;
    let seq = state.1;
    // The thread sleeps until the earliest deadline: wake it only if this one is earlier.
    let earliest = state.0.peek().is_none_or(|e| deadline < e.deadline);
    state.0.push(Entry {
        deadline,
        seq,
        action,
    });
    drop(state);
    if earliest {
        timer.changed.notify_one();
    }
}

fn run(timer: &'static Timer) {
    let mut state = lock(&timer.state);
    loop {
        let now = Instant::now();
        match state.0.peek().map(|e| e.deadline) {
            Some(deadline) if deadline <= now => {
                if let Some(entry) = state.0.pop() {
                    drop(state);
                    (entry.action)();
                    state = lock(&timer.state);
                }
            }
            Some(deadline) => {
                state = timer
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            None => {
                state = timer
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}
