//! The worker's answers: sent together, without a sender thread, and held back at most briefly.
//!
//! Items are pushed into an [`Outbox`]. [`Outbox::flush`] makes the calling thread the sender
//! unless another thread already is: the sender takes everything queued (up to the batch cap),
//! sends it as one message outside the lock, and goes on until the queue is empty. Items queued
//! while a send is under way go out in the next batch, right after it, so under load one message
//! carries many items.
//!
//! A thread that pushed an item and is about to do more work whose results would share its
//! message (a handler thread that runs another request already queued) may call
//! [`Outbox::hold`] instead of flushing. Held items wait for the next flush, whoever makes it:
//! the holder's own once the queue of requests is empty or the outbox holds a full batch, a
//! cancellation's, or the [`Deadline`]'s ([`Outbox::expired`]), so a held item waits at most the
//! outbox's bound, however long the holder's next work takes. Without a deadline nothing is
//! held: `hold` says so and the caller flushes.
//!
//! The deadline is started when an item is held while none was, unless a deadline started
//! earlier is still to come (it then comes sooner than needed, which only sends early). A flush
//! does not cancel it: when it expires with nothing held it does nothing. So it costs at most
//! one start and one expiry per bound, whatever the number of items and batches in between:
//! arming and cancelling a timer reprograms the kernel's clock, a few microseconds each in a
//! virtual machine, which cost more than the batching saved when it was done per batch.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// The most answers one message carries. `ipc-channel` allows 64 channels and shared-memory
/// regions per message: responses that carry more than 4 of them need a lower cap.
pub(crate) const MAX_BATCH: usize = 16;

/// Bounds how long items are held: whoever owns it calls [`Outbox::expired`] when it
/// expires. Called under the outbox's lock, so it must not block.
pub(crate) trait Deadline: Send + Sync {
    /// Expires once `after` has passed, replacing any deadline started before.
    fn start(&self, after: Duration);
}

pub(crate) struct Outbox<T> {
    state: Mutex<OutboxState<T>>,
    /// Signalled when a sender stops.
    idle: Condvar,
    max_batch: usize,
    /// Bounds the holding of items, to the duration given; nothing is held without it.
    deadline: Option<(Arc<dyn Deadline>, Duration)>,
}

struct OutboxState<T> {
    queue: VecDeque<T>,
    sending: bool,
    /// Items are held, and a deadline is to come by the bound after the first was held.
    held: bool,
    /// When the last deadline started expires (in the past once it has).
    expires: Option<Instant>,
    /// Threads waiting on `idle` for a send to end (only a drain before the exit): without
    /// them, a send's end wakes nobody, and costs no system call.
    draining: usize,
}

/// Clears the sending flag if the send panics (a user's `Serialize` may).
struct Sending<'a, T>(&'a Outbox<T>);

impl<T> Drop for Sending<'_, T> {
    fn drop(&mut self) {
        lock(&self.0.state).sending = false;
        self.0.idle.notify_all();
    }
}

impl<T> Outbox<T> {
    /// An outbox that sends up to `max_batch` items per message and, with a `deadline`, holds
    /// items for up to the duration that comes with it.
    pub(crate) fn new(max_batch: usize, deadline: Option<(Arc<dyn Deadline>, Duration)>) -> Self {
        Outbox {
            state: Mutex::new(OutboxState {
                queue: VecDeque::new(),
                sending: false,
                held: false,
                expires: None,
                draining: 0,
            }),
            idle: Condvar::new(),
            max_batch: max_batch.max(1),
            deadline,
        }
    }

    /// Queues an item; `true` when a full batch is waiting, worth flushing now.
    pub(crate) fn push(&self, item: T) -> bool {
        let mut state = lock(&self.state);
        state.queue.push_back(item);
        state.queue.len() >= self.max_batch
    }

    /// Leaves what is queued for a later flush, making sure a deadline comes within the bound.
    /// `false` when the caller must flush now instead: there is no deadline, or a full batch
    /// waits.
    pub(crate) fn hold(&self) -> bool {
        let Some((deadline, bound)) = &self.deadline else {
            return false;
        };
        let mut state = lock(&self.state);
        if state.queue.len() >= self.max_batch {
            return false;
        }
        // An empty queue was flushed by someone else meanwhile; a sender at work takes what
        // is queued before it stops. Either way nothing waits for the deadline. Once items are
        // held, the first one's deadline covers those held after it.
        if !state.held && !state.sending && !state.queue.is_empty() {
            state.held = true;
            let now = Instant::now();
            // A deadline still to come expires before `now + bound`: it will do.
            if state.expires.is_none_or(|expires| expires <= now) {
                deadline.start(*bound);
                state.expires = Some(now + *bound);
            }
        }
        true
    }

    /// The deadline expired: sends what is held (and everything queued with it).
    pub(crate) fn expired(&self, send: impl FnMut(&[T])) {
        {
            let mut state = lock(&self.state);
            // Unless a deadline was started again since (then it is still to come).
            if state
                .expires
                .is_some_and(|expires| expires <= Instant::now())
            {
                state.expires = None;
            }
        }
        self.flush(send);
    }

    /// Sends everything queued, in batches, unless another thread is already doing so (it will
    /// send what is queued now too).
    pub(crate) fn flush(&self, mut send: impl FnMut(&[T])) {
        let mut state = lock(&self.state);
        if state.sending || state.queue.is_empty() {
            return;
        }
        state.sending = true;
        // The held items go out now; the deadline, left to expire, may serve the next ones.
        state.held = false;
        let guard = Sending(self);
        loop {
            let n = state.queue.len().min(self.max_batch);
            let batch: Vec<T> = state.queue.drain(..n).collect();
            drop(state);
            send(&batch);
            drop(batch);
            state = lock(&self.state);
            if state.queue.is_empty() {
                // Cleared under the same lock that saw the queue empty: an item pushed after
                // this is flushed (or held) by its own pusher, never left behind.
                state.sending = false;
                break;
            }
        }
        let draining = state.draining > 0;
        drop(state);
        std::mem::forget(guard);
        if draining {
            self.idle.notify_all();
        }
    }
}

impl<T> Outbox<T> {
    /// Waits for another thread's send to end, then sends what is left (held items too):
    /// before a process exits.
    pub(crate) fn drain(&self, send: impl FnMut(&[T])) {
        let mut state = lock(&self.state);
        state.draining += 1;
        while state.sending {
            state = self
                .idle
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.draining -= 1;
        drop(state);
        self.flush(send);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_sends_in_batches_up_to_the_cap() {
        let outbox = Outbox::new(3, None);
        for i in 0..7 {
            outbox.push(i);
        }
        let mut sent = Vec::new();
        outbox.flush(|batch| sent.push(batch.to_vec()));
        assert_eq!(sent, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
        outbox.flush(|_| panic!("nothing left to send"));
    }

    #[test]
    fn items_queued_during_a_send_go_out_next() {
        let outbox = Outbox::new(8, None);
        outbox.push(1);
        let mut sent = Vec::new();
        let mut pushed = false;
        outbox.flush(|batch| {
            sent.push(batch.to_vec());
            if !pushed {
                pushed = true;
                // Another thread queues while this one sends: it must not send itself.
                outbox.push(2);
                outbox.push(3);
                outbox.flush(|_| panic!("only one sender at a time"));
            }
        });
        assert_eq!(sent, vec![vec![1], vec![2, 3]]);
    }

    /// Counts the deadline's starts.
    #[derive(Default)]
    struct Counted(std::sync::atomic::AtomicUsize);

    impl Deadline for Counted {
        fn start(&self, _after: Duration) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    impl Counted {
        fn starts(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    fn holding(max_batch: usize, bound: Duration) -> (Outbox<i32>, Arc<Counted>) {
        let deadline = Arc::new(Counted::default());
        let outbox = Outbox::new(
            max_batch,
            Some((deadline.clone() as Arc<dyn Deadline>, bound)),
        );
        (outbox, deadline)
    }

    #[test]
    fn nothing_is_held_without_a_deadline() {
        let outbox = Outbox::new(8, None);
        outbox.push(1);
        assert!(!outbox.hold());
    }

    #[test]
    fn held_items_share_one_message_and_one_deadline() {
        let (outbox, deadline) = holding(8, Duration::from_secs(3600));
        for i in 0..3 {
            outbox.push(i);
            assert!(outbox.hold());
        }
        // Started once for the batch, not once per item.
        assert_eq!(deadline.starts(), 1);
        let mut sent = Vec::new();
        outbox.flush(|batch| sent.push(batch.to_vec()));
        assert_eq!(sent, vec![vec![0, 1, 2]]);
        // The next batch is held under the same deadline, still to come.
        outbox.push(3);
        assert!(outbox.hold());
        assert_eq!(deadline.starts(), 1);
        // It expires: what is held goes out.
        let mut sent = Vec::new();
        outbox.expired(|batch| sent.push(batch.to_vec()));
        assert_eq!(sent, vec![vec![3]]);
    }

    #[test]
    fn a_deadline_that_passed_is_started_again() {
        let (outbox, deadline) = holding(8, Duration::ZERO);
        outbox.push(1);
        assert!(outbox.hold());
        outbox.flush(|_| {});
        outbox.push(2);
        assert!(outbox.hold());
        assert_eq!(deadline.starts(), 2);
    }

    #[test]
    fn a_full_batch_is_not_held() {
        let (outbox, _deadline) = holding(2, Duration::from_secs(3600));
        outbox.push(1);
        assert!(outbox.hold());
        assert!(outbox.push(2));
        assert!(!outbox.hold());
    }

    #[test]
    fn items_queued_during_a_send_are_not_held() {
        let (outbox, deadline) = holding(8, Duration::from_secs(3600));
        outbox.push(1);
        let mut sent = Vec::new();
        let mut pushed = false;
        outbox.flush(|batch| {
            sent.push(batch.to_vec());
            if !pushed {
                pushed = true;
                // The sender takes it next: no deadline needed.
                outbox.push(2);
                assert!(outbox.hold());
            }
        });
        assert_eq!(sent, vec![vec![1], vec![2]]);
        assert_eq!(deadline.starts(), 0);
    }
}
