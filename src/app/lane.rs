//! A [`Lane`]: what the app queues for one of a worker's channels, and who sends it.
//!
//! Items are queued by key (a request id, or a sequence number for control items) and go out in
//! batches, in key order. Sending never blocks a caller:
//!
//! - **Inline**: [`Lane::flush`] makes the calling thread the sender unless another thread
//!   already is. It takes everything queued (up to the batch cap), tries to send it on the
//!   channel's non-blocking socket, and goes on until the queue is empty. Items queued while a
//!   send is under way go out in the next batch, right after it, so under load one message
//!   carries many items and an item alone goes out at once, with no hand-off between threads.
//! - **Writer**: when the socket is full (the worker is slow, stopped or flooded) the batch is
//!   queued again and the lane's writer thread takes over: it waits for room and sends, while
//!   inline sends stand aside until it has emptied the queue. Nothing waits for the writer. A
//!   lane whose socket is not known (see `transport.rs`) always sends through its writer, which
//!   may then block in `ipc-channel`'s send: only the writer, never a caller.
//!
//! One thread sends at a time (`sending`), so batches leave in key order.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::sync::lock;
use crate::wire::transport::{Sent, Socket};

/// The most items one message carries by default. `ipc-channel` allows 64 channels and
/// shared-memory regions per message: requests that carry more than 4 of them need a lower cap.
pub(crate) const DEFAULT_MAX_BATCH: usize = 16;

/// How long the writer waits for room before it looks again whether the lane closed.
const WRITER_POLL: Duration = Duration::from_millis(100);

/// What a lane does with a batch: send it, or fail its items.
pub(crate) trait Sink<T> {
    /// Sends one message holding `batch`.
    fn send(&self, batch: &[(u64, T)]) -> Sent;
    /// The batch could not be encoded (nothing was sent): fail its items.
    fn encode_failed(&self, batch: Vec<(u64, T)>, reason: String);
}

pub(crate) struct Lane<T> {
    state: Mutex<LaneState<T>>,
    /// Wakes the writer thread: it has work, or the lane closed; and senders waiting for it.
    wake: Condvar,
    max_batch: usize,
    /// The channel's socket, non-blocking; `None` when every send goes through the writer.
    socket: Option<Socket>,
}

struct LaneState<T> {
    queue: BTreeMap<u64, T>,
    /// A thread is sending a batch.
    sending: bool,
    /// The writer thread owns sending until the queue is empty.
    writer_turn: bool,
    /// The writer thread was started.
    writer_started: bool,
    /// Nothing more is sent: the worker is gone or dropped.
    closed: bool,
}

/// What a flush needs from its caller.
#[must_use]
pub(crate) enum Flushed {
    /// Everything queued went out, or another thread is sending it.
    Done,
    /// The writer thread must be started (see [`Lane::run_writer`]).
    StartWriter,
}

impl<T> Lane<T> {
    pub(crate) fn new(max_batch: usize, socket: Option<Socket>) -> Self {
        let socket = socket.filter(|s| s.set_nonblocking());
        Lane {
            state: Mutex::new(LaneState {
                queue: BTreeMap::new(),
                sending: false,
                writer_turn: false,
                writer_started: false,
                closed: false,
            }),
            wake: Condvar::new(),
            max_batch: max_batch.max(1),
            socket,
        }
    }

    /// Queues an item; `true` when a full batch is waiting, worth flushing now. Nothing is
    /// queued once the lane is closed.
    pub(crate) fn push(&self, key: u64, item: T) -> bool {
        let mut state = lock(&self.state);
        if state.closed {
            return false;
        }
        state.queue.insert(key, item);
        state.queue.len() >= self.max_batch
    }

    /// How many items wait to be sent.
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).queue.len()
    }

    /// Takes back the item with `key` if it was not sent yet.
    pub(crate) fn take(&self, key: u64) -> Option<T> {
        lock(&self.state).queue.remove(&key)
    }

    /// Sends nothing more, drops what is queued and lets the writer thread end.
    pub(crate) fn close(&self) -> Vec<(u64, T)> {
        let mut state = lock(&self.state);
        state.closed = true;
        let left = std::mem::take(&mut state.queue).into_iter().collect();
        drop(state);
        self.wake.notify_all();
        left
    }

    fn take_batch(&self, state: &mut LaneState<T>) -> Vec<(u64, T)> {
        let mut batch = Vec::with_capacity(state.queue.len().min(self.max_batch));
        while batch.len() < self.max_batch {
            match state.queue.pop_first() {
                Some(entry) => batch.push(entry),
                None => break,
            }
        }
        batch
    }

    /// Sends what is queued from the calling thread, without ever blocking: see the module
    /// docs.
    pub(crate) fn flush(&self, sink: &dyn Sink<T>) -> Flushed {
        let mut state = lock(&self.state);
        if state.sending || state.writer_turn || state.queue.is_empty() || state.closed {
            return Flushed::Done;
        }
        if self.socket.is_none() {
            return self.hand_to_writer(state);
        }
        state.sending = true;
        loop {
            let batch = self.take_batch(&mut state);
            drop(state);
            let sent = sink.send(&batch);
            state = lock(&self.state);
            match sent {
                Sent::Done => {}
                Sent::Gone(reason) => {
                    // The worker is gone: its reader fails the requests with the report.
                    tracing::debug!(%reason, "a batch was not sent");
                }
                Sent::WouldBlock => {
                    state.queue.extend(batch);
                    state.sending = false;
                    return self.hand_to_writer(state);
                }
                Sent::Encode(reason) => {
                    drop(state);
                    sink.encode_failed(batch, reason);
                    state = lock(&self.state);
                }
            }
            if state.queue.is_empty() || state.closed {
                // Cleared under the same lock that saw the queue empty: an item pushed after
                // this is flushed by its own pusher, never left behind.
                state.sending = false;
                // A writer may wait for this send to end; without one, nobody waits on `wake`
                // but the writer, and the wake-up (a system call) is saved.
                let writer = state.writer_started;
                drop(state);
                if writer {
                    self.wake.notify_all();
                }
                return Flushed::Done;
            }
        }
    }

    fn hand_to_writer(&self, mut state: std::sync::MutexGuard<'_, LaneState<T>>) -> Flushed {
        state.writer_turn = true;
        if state.writer_started {
            drop(state);
            self.wake.notify_all();
            Flushed::Done
        } else {
            state.writer_started = true;
            Flushed::StartWriter
        }
    }

    /// The writer thread's life: sends whenever it has the turn, waiting for room as long as it
    /// takes, until the lane closes.
    pub(crate) fn run_writer(&self, sink: &dyn Sink<T>) {
        let mut state = lock(&self.state);
        loop {
            if state.closed {
                return;
            }
            if !state.writer_turn || state.sending {
                state = self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            if state.queue.is_empty() {
                // Inline sends may go on.
                state.writer_turn = false;
                continue;
            }
            state.sending = true;
            let batch = self.take_batch(&mut state);
            drop(state);
            let sent = loop {
                match sink.send(&batch) {
                    Sent::WouldBlock => {
                        if lock(&self.state).closed {
                            break Sent::Gone("closed".into());
                        }
                        if let Some(socket) = self.socket {
                            socket.wait_writable(WRITER_POLL);
                        }
                    }
                    other => break other,
                }
            };
            if let Sent::Encode(reason) = sent {
                sink.encode_failed(batch, reason);
            }
            state = lock(&self.state);
            state.sending = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Recorder(RefCell<Vec<Vec<u64>>>, RefCell<Vec<Sent>>);

    impl Sink<u32> for Recorder {
        fn send(&self, batch: &[(u64, u32)]) -> Sent {
            let next = self.1.borrow_mut().pop().unwrap_or(Sent::Done);
            if matches!(next, Sent::Done) {
                self.0
                    .borrow_mut()
                    .push(batch.iter().map(|(k, _)| *k).collect());
            }
            next
        }
        fn encode_failed(&self, _batch: Vec<(u64, u32)>, _reason: String) {}
    }

    fn lane(max_batch: usize) -> Lane<u32> {
        let mut lane = Lane::new(max_batch, None);
        // A lane that may send inline, without a real socket.
        lane.socket = Some(Socket::for_tests());
        lane
    }

    #[test]
    fn flush_sends_in_batches_up_to_the_cap_in_key_order() {
        let lane = lane(3);
        for key in [4, 0, 6, 1, 2, 5, 3] {
            let _ = lane.push(key, 0);
        }
        let sink = Recorder(RefCell::new(Vec::new()), RefCell::new(Vec::new()));
        assert!(matches!(lane.flush(&sink), Flushed::Done));
        assert_eq!(
            sink.0.into_inner(),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]
        );
    }

    #[test]
    fn a_full_socket_hands_the_batch_to_the_writer_once() {
        let lane = lane(8);
        let _ = lane.push(1, 0);
        let _ = lane.push(2, 0);
        let sink = Recorder(
            RefCell::new(Vec::new()),
            RefCell::new(vec![Sent::WouldBlock]),
        );
        assert!(matches!(lane.flush(&sink), Flushed::StartWriter));
        // Nothing was lost, and inline sends stand aside while the writer has the turn.
        assert_eq!(lane.len(), 2);
        let _ = lane.push(3, 0);
        assert!(matches!(lane.flush(&sink), Flushed::Done));
        assert!(sink.0.borrow().is_empty());
        assert_eq!(lane.len(), 3);
    }

    #[test]
    fn take_removes_an_unsent_item_and_close_drops_the_rest() {
        let lane = lane(8);
        let _ = lane.push(1, 10);
        let _ = lane.push(2, 20);
        assert_eq!(lane.take(1), Some(10));
        assert_eq!(lane.take(1), None);
        assert_eq!(lane.close(), vec![(2, 20)]);
        assert!(!lane.push(3, 30));
        assert_eq!(lane.len(), 0);
    }
}
