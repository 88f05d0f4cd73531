//! [`Reply`]: the response to one request, as a future or blocking.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::error::RunError;
use crate::process::lock;

/// What a reply needs from its worker, whatever the request type.
pub(crate) trait Link<O>: Send + Sync {
    /// Sends the requests queued so far.
    fn flush(&self);
    /// The reply was dropped unanswered: withdraw or cancel request `id`.
    fn abandon(&self, id: u64);
}

type SlotState<O> = (Option<Result<O, RunError>>, Option<Waker>);

/// Where the reader thread puts a response for the [`Reply`] waiting on it.
pub(crate) struct Slot<O> {
    /// The result once it came, and the waker of the task awaiting it.
    state: Mutex<SlotState<O>>,
    filled: Condvar,
}

impl<O> Slot<O> {
    pub(crate) fn new() -> Self {
        Slot {
            state: Mutex::new((None, None)),
            filled: Condvar::new(),
        }
    }

    pub(crate) fn complete(&self, result: Result<O, RunError>) {
        let waker = {
            let mut state = lock(&self.state);
            state.0 = Some(result);
            state.1.take()
        };
        self.filled.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The response to one request: a future, or [`wait`](Self::wait) for it blocking.
///
/// Made by [`Worker::run`](crate::Worker::run). It is `Send + 'static` and does not borrow the
/// worker. Dropping it before the response comes cancels the request.
#[must_use = "a request is sent when its reply is polled or waited on, and cancelled when dropped"]
pub struct Reply<O> {
    pending: Option<Pending<O>>,
    done: Option<Result<O, RunError>>,
}

struct Pending<O> {
    slot: Arc<Slot<O>>,
    id: u64,
    link: Arc<dyn Link<O>>,
}

impl<O> Reply<O> {
    pub(crate) fn done(result: Result<O, RunError>) -> Self {
        Reply {
            pending: None,
            done: Some(result),
        }
    }

    pub(crate) fn pending(slot: Arc<Slot<O>>, id: u64, link: Arc<dyn Link<O>>) -> Self {
        Reply {
            pending: Some(Pending { slot, id, link }),
            done: None,
        }
    }

    /// Blocks the calling thread until the response comes.
    ///
    /// # Errors
    ///
    /// Same as awaiting the reply.
    pub fn wait(mut self) -> Result<O, RunError> {
        if let Some(result) = self.done.take() {
            return result;
        }
        let Some(pending) = self.pending.take() else {
            // Only a reply polled to completion has neither; it is not waited on again.
            unreachable!("Reply::wait after the reply completed")
        };
        pending.link.flush();
        let mut state = lock(&pending.slot.state);
        loop {
            if let Some(result) = state.0.take() {
                return result;
            }
            state = pending
                .slot
                .filled
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

// The response is only ever moved out, never pinned in place.
impl<O> Unpin for Reply<O> {}

impl<O> Future for Reply<O> {
    type Output = Result<O, RunError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(result) = this.done.take() {
            return Poll::Ready(result);
        }
        let Some(pending) = &this.pending else {
            panic!("Reply polled after it completed");
        };
        pending.link.flush();
        let mut state = lock(&pending.slot.state);
        if let Some(result) = state.0.take() {
            drop(state);
            this.pending = None;
            return Poll::Ready(result);
        }
        match &state.1 {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.1 = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<O> Drop for Reply<O> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            if lock(&pending.slot.state).0.is_none() {
                pending.link.abandon(pending.id);
            }
        }
    }
}

impl<O> fmt::Debug for Reply<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("id", &self.pending.as_ref().map(|p| p.id))
            .field("done", &self.done.is_some())
            .finish_non_exhaustive()
    }
}
