//! [`Reply`]: the response to one request, as a future or blocking.
//!
//! A reply of a [`Worker`](crate::Worker) waits on one slot. A reply of a
//! [`WorkerPool`](crate::WorkerPool) also holds a [`Dispatch`]: how to send the request to a
//! pool worker, again when a retryable request's worker crashed, or later when no worker is up.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::error::RunError;
use crate::sync::lock;

/// What a reply needs from its worker, whatever the request type.
pub(crate) trait Link<O>: Send + Sync {
    /// Sends the requests queued so far, without blocking.
    fn flush(&self);
    /// Blocks until `slot` is answered, reading the channel itself when nobody else does, but
    /// never past `deadline` (the request's timeout).
    fn wait(&self, slot: &Slot<O>, deadline: Option<Instant>) -> Result<O, RunError>;
    /// Tries to have `slot` answered without waiting: reads a message that is already there
    /// when nobody else reads, and may step aside once for a worker that shares this CPU.
    fn try_read(&self, slot: &Slot<O>);
    /// A future returned `Pending`: someone must read the channel for it.
    fn polled(&self);
    /// The reply was dropped unanswered: withdraw or cancel request `id`.
    fn abandon(&self, id: u64);
}

/// How a dispatch waits when no worker is up.
#[derive(Clone, Copy)]
pub(crate) enum Wait<'a> {
    /// Return `Dispatched::Wait` at once.
    No,
    /// Register the waker to be woken when a worker is up, and return `Dispatched::Wait`.
    Waker(&'a Waker),
    /// Block until a worker is up (or the pool failed).
    Block,
}

/// What a pool reply does to (re)send its request.
pub(crate) trait Dispatch<O>: Send {
    /// Sends the request to a worker.
    fn dispatch(&mut self, wait: Wait<'_>) -> Dispatched<O>;
    /// Whether the request may be sent again after `error`.
    fn retry_after(&self, error: &RunError) -> bool;
}

pub(crate) enum Dispatched<O> {
    Sent(Reply<O>),
    Wait,
    Failed(RunError),
}

/// What a [`Slot`] holds.
struct SlotState<O> {
    /// The result once it came.
    result: Option<Result<O, RunError>>,
    /// The waker of the task awaiting it.
    waker: Option<Waker>,
}

/// Where the reader thread puts a response for the [`Reply`] waiting on it.
pub(crate) struct Slot<O> {
    state: Mutex<SlotState<O>>,
}

impl<O> Slot<O> {
    pub(crate) fn new() -> Self {
        Slot {
            state: Mutex::new(SlotState {
                result: None,
                waker: None,
            }),
        }
    }

    /// Stores the result and wakes the task awaiting it. A thread in `Reply::wait` is woken by
    /// its worker (`Link::wait`).
    pub(crate) fn complete(&self, result: Result<O, RunError>) {
        let waker = {
            let mut state = lock(&self.state);
            state.result = Some(result);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The result, once.
    /// Whether the result came.
    pub(crate) fn is_answered(&self) -> bool {
        lock(&self.state).result.is_some()
    }

    pub(crate) fn take(&self) -> Option<Result<O, RunError>> {
        lock(&self.state).result.take()
    }
}

/// The response to one request: a future, or [`wait`](Self::wait) for it blocking.
///
/// Made by [`Worker::run`](crate::Worker::run) and [`WorkerPool::run`](crate::WorkerPool::run).
/// It is `Send + 'static` and does not borrow the worker. Dropping it before the response comes
/// cancels the request.
///
/// ```no_run
/// # async fn demo() -> Result<(), bincrew::RunError> {
/// # let worker = bincrew::Worker::<String, usize>::start_blocking("words").unwrap();
/// // Both requests go out together when the first reply is awaited.
/// let a = worker.run("one two".to_owned());
/// let b = worker.run("three".to_owned());
/// assert_eq!(a.await? + b.await?, 3);
///
/// // Or block for it, from a plain thread.
/// let n = worker.run("four five six".to_owned()).wait()?;
/// assert_eq!(n, 3);
/// # Ok(()) }
/// ```
#[must_use = "a request is sent when its reply is polled or waited on, and cancelled when dropped"]
pub struct Reply<O> {
    stage: Stage<O>,
    dispatch: Option<Box<dyn Dispatch<O>>>,
}

enum Stage<O> {
    /// Sent (or queued) to a worker.
    Sent(OnWorker<O>),
    /// Waiting for a pool worker to send it to.
    Dispatch,
    Done(Result<O, RunError>),
    Taken,
}

struct OnWorker<O> {
    slot: Arc<Slot<O>>,
    id: u64,
    deadline: Option<Instant>,
    link: Arc<dyn Link<O>>,
}

impl<O> Reply<O> {
    pub(crate) fn done(result: Result<O, RunError>) -> Self {
        Reply {
            stage: Stage::Done(result),
            dispatch: None,
        }
    }

    pub(crate) fn pending(
        slot: Arc<Slot<O>>,
        id: u64,
        deadline: Option<Instant>,
        link: Arc<dyn Link<O>>,
    ) -> Self {
        Reply {
            stage: Stage::Sent(OnWorker {
                slot,
                id,
                deadline,
                link,
            }),
            dispatch: None,
        }
    }

    /// A pool reply: sent now through `dispatch` if a worker is up, else when one is.
    pub(crate) fn dispatched(mut dispatch: Box<dyn Dispatch<O>>) -> Self {
        let mut reply = Reply {
            stage: Stage::Dispatch,
            dispatch: None,
        };
        reply.redispatch(&mut *dispatch, Wait::No);
        reply.dispatch = Some(dispatch);
        reply
    }

    /// Sends through `dispatch`, taking over the stage of the reply it makes.
    fn redispatch(&mut self, dispatch: &mut dyn Dispatch<O>, wait: Wait<'_>) {
        self.stage = match dispatch.dispatch(wait) {
            Dispatched::Sent(mut next) => std::mem::replace(&mut next.stage, Stage::Taken),
            Dispatched::Wait => Stage::Dispatch,
            Dispatched::Failed(error) => Stage::Done(Err(error)),
        };
    }

    /// What to do with a result: keep it, or send the request again.
    fn settle(
        &mut self,
        result: Result<O, RunError>,
        wait: Wait<'_>,
    ) -> Option<Result<O, RunError>> {
        let Some(mut dispatch) = self.dispatch.take() else {
            return Some(result);
        };
        match &result {
            Err(error) if dispatch.retry_after(error) => {
                self.redispatch(&mut *dispatch, wait);
                self.dispatch = Some(dispatch);
                None
            }
            _ => Some(result),
        }
    }

    /// Blocks the calling thread until the response comes. A thread waiting here reads the
    /// worker's channel itself while no other thread does, so its answer reaches it without a
    /// hand-off between threads.
    ///
    /// # Errors
    ///
    /// Same as awaiting the reply.
    ///
    /// # Panics
    ///
    /// If the reply was already polled to completion as a future.
    pub fn wait(mut self) -> Result<O, RunError> {
        loop {
            match std::mem::replace(&mut self.stage, Stage::Taken) {
                Stage::Done(result) => {
                    if let Some(result) = self.settle(result, Wait::Block) {
                        return result;
                    }
                }
                Stage::Dispatch => match self.dispatch.take() {
                    Some(mut dispatch) => {
                        self.redispatch(&mut *dispatch, Wait::Block);
                        self.dispatch = Some(dispatch);
                    }
                    None => unreachable!("a reply waiting for dispatch has a dispatcher"),
                },
                Stage::Sent(sent) => {
                    sent.link.flush();
                    let result = sent.link.wait(&sent.slot, sent.deadline);
                    if let Some(result) = self.settle(result, Wait::Block) {
                        return result;
                    }
                }
                Stage::Taken => panic!("Reply::wait after the reply completed"),
            }
        }
    }
}

// The response is only ever moved out, never pinned in place.
impl<O> Unpin for Reply<O> {}

impl<O> Future for Reply<O> {
    type Output = Result<O, RunError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.stage, Stage::Taken) {
                Stage::Done(result) => {
                    if let Some(result) = this.settle(result, Wait::Waker(cx.waker())) {
                        return Poll::Ready(result);
                    }
                }
                Stage::Dispatch => match this.dispatch.take() {
                    Some(mut dispatch) => {
                        this.redispatch(&mut *dispatch, Wait::Waker(cx.waker()));
                        this.dispatch = Some(dispatch);
                        if matches!(this.stage, Stage::Dispatch) {
                            return Poll::Pending;
                        }
                    }
                    None => unreachable!("a reply waiting for dispatch has a dispatcher"),
                },
                Stage::Sent(sent) => {
                    sent.link.flush();
                    let mut state = lock(&sent.slot.state);
                    if state.result.is_none() {
                        // The answer may be there already (on one CPU the worker usually
                        // answered before the send returned): read it here, without waiting,
                        // rather than wake the reader thread to read it and wake this task.
                        drop(state);
                        sent.link.try_read(&sent.slot);
                        state = lock(&sent.slot.state);
                    }
                    if let Some(result) = state.result.take() {
                        drop(state);
                        if let Some(result) = this.settle(result, Wait::Waker(cx.waker())) {
                            return Poll::Ready(result);
                        }
                        continue;
                    }
                    match &state.waker {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        _ => state.waker = Some(cx.waker().clone()),
                    }
                    drop(state);
                    sent.link.polled();
                    this.stage = Stage::Sent(sent);
                    return Poll::Pending;
                }
                Stage::Taken => panic!("Reply polled after it completed"),
            }
        }
    }
}

impl<O> Drop for Reply<O> {
    fn drop(&mut self) {
        if let Stage::Sent(sent) = &self.stage {
            if let Some(result) = sent.slot.take() {
                // Answered but never collected: nothing to cancel.
                drop(result);
            } else {
                sent.link.abandon(sent.id);
            }
        }
    }
}

impl<O> fmt::Debug for Reply<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match &self.stage {
            Stage::Sent(sent) => format!("sent as request {}", sent.id),
            Stage::Dispatch => "waiting for a pool worker".to_owned(),
            Stage::Done(_) => "done".to_owned(),
            Stage::Taken => "taken".to_owned(),
        };
        f.debug_struct("Reply").field("stage", &stage).finish()
    }
}
