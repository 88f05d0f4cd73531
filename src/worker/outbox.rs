//! The worker's answers: sent together, without a sender thread and without added delay.
//!
//! Items are pushed into an [`Outbox`]. [`Outbox::flush`] makes the calling thread the sender
//! unless another thread already is: the sender takes everything queued (up to the batch cap),
//! sends it as one message outside the lock, and goes on until the queue is empty. Items queued
//! while a send is under way go out in the next batch, right after it, so under load one message
//! carries many items, and an item alone is sent at once.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, PoisonError};

use crate::sync::lock;

/// The most answers one message carries. `ipc-channel` allows 64 channels and shared-memory
/// regions per message: responses that carry more than 4 of them need a lower cap.
pub(crate) const MAX_BATCH: usize = 16;

pub(crate) struct Outbox<T> {
    state: Mutex<OutboxState<T>>,
    /// Signalled when a sender stops.
    idle: Condvar,
    max_batch: usize,
}

struct OutboxState<T> {
    queue: VecDeque<T>,
    sending: bool,
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
    pub(crate) fn new(max_batch: usize) -> Self {
        Outbox {
            state: Mutex::new(OutboxState {
                queue: VecDeque::new(),
                sending: false,
            }),
            idle: Condvar::new(),
            max_batch: max_batch.max(1),
        }
    }

    /// Queues an item; `true` when a full batch is waiting, worth flushing now.
    pub(crate) fn push(&self, item: T) -> bool {
        let mut state = lock(&self.state);
        state.queue.push_back(item);
        state.queue.len() >= self.max_batch
    }

    /// Sends everything queued, in batches, unless another thread is already doing so (it will
    /// send what is queued now too).
    pub(crate) fn flush(&self, mut send: impl FnMut(&[T])) {
        let mut state = lock(&self.state);
        if state.sending || state.queue.is_empty() {
            return;
        }
        state.sending = true;
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
                // this is flushed by its own pusher, never left behind.
                state.sending = false;
                break;
            }
        }
        drop(state);
        std::mem::forget(guard);
        self.idle.notify_all();
    }
}

impl<T> Outbox<T> {
    /// Waits for another thread's send to end, then sends what is left: before a process exits.
    pub(crate) fn drain(&self, send: impl FnMut(&[T])) {
        let mut state = lock(&self.state);
        while state.sending {
            state = self
                .idle
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(state);
        self.flush(send);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_sends_in_batches_up_to_the_cap() {
        let outbox = Outbox::new(3);
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
        let outbox = Outbox::new(8);
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
}
