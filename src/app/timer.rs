//! One thread for the whole process that fires request deadlines, started with the first one.
//!
//! A deadline is removed when its request is answered ([`cancel`]), so answered requests leave
//! nothing behind. Actions run on the timer thread and must never block: they complete replies
//! and queue cancellations, and never send.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::Instant;

use crate::sync::lock;

type Action = Box<dyn FnOnce() + Send>;

/// Names a scheduled action, to [`cancel`] it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey {
    deadline: Instant,
    seq: u64,
}

struct Actions {
    /// Ordered by deadline, then by the order they were scheduled in.
    due: BTreeMap<TimerKey, Action>,
    next_seq: u64,
}

struct Timer {
    actions: Mutex<Actions>,
    changed: Condvar,
}

static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();

fn timer() -> Option<&'static Timer> {
    *TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            actions: Mutex::new(Actions {
                due: BTreeMap::new(),
                next_seq: 0,
            }),
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

/// Runs `action` on the timer thread at `deadline`. Actions must be short and never block.
pub(crate) fn schedule(deadline: Instant, action: Action) -> Option<TimerKey> {
    let timer = timer()?;
    let mut actions = lock(&timer.actions);
    actions.next_seq += 1;
    let key = TimerKey {
        deadline,
        seq: actions.next_seq,
    };
    // The thread sleeps until the earliest deadline: wake it only if this one is earlier.
    let earliest = actions.due.first_key_value().is_none_or(|(k, _)| key < *k);
    actions.due.insert(key, action);
    drop(actions);
    if earliest {
        timer.changed.notify_one();
    }
    Some(key)
}

/// Removes a scheduled action that has not run yet.
pub(crate) fn cancel(key: TimerKey) {
    if let Some(timer) = timer() {
        let action = lock(&timer.actions).due.remove(&key);
        // Dropped outside the lock: it may own anything.
        drop(action);
    }
}

/// How many actions are scheduled (for tests).
#[cfg(test)]
fn scheduled() -> usize {
    timer().map_or(0, |t| lock(&t.actions).due.len())
}

fn run(timer: &'static Timer) {
    let mut actions = lock(&timer.actions);
    loop {
        let now = Instant::now();
        match actions.due.first_key_value().map(|(k, _)| k.deadline) {
            Some(deadline) if deadline <= now => {
                if let Some((_, action)) = actions.due.pop_first() {
                    drop(actions);
                    action();
                    actions = lock(&timer.actions);
                }
            }
            Some(deadline) => {
                actions = timer
                    .changed
                    .wait_timeout(actions, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            None => {
                actions = timer
                    .changed
                    .wait(actions)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn cancelled_actions_are_gone_and_the_others_run_in_order() {
        let (tx, rx) = mpsc::channel();
        let base = Instant::now() + Duration::from_millis(50);
        let before = scheduled();
        let mut keys = Vec::new();
        for i in 0..3 {
            let tx = tx.clone();
            keys.push(
                schedule(
                    base + Duration::from_millis(i),
                    Box::new(move || tx.send(i).expect("send")),
                )
                .expect("a timer"),
            );
        }
        let far =
            schedule(Instant::now() + Duration::from_secs(3600), Box::new(|| {})).expect("a timer");
        cancel(keys[1]);
        cancel(far);
        assert!(scheduled() <= before + 2);
        let fired: Vec<u64> = rx.iter().take(2).collect();
        assert_eq!(fired, [0, 2]);
    }
}
