//! What a handler receives: [`RequestArgs`], and [`CancelToken`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What a handler receives: the request, and details about it.
///
/// ```
/// fn count(args: bincrew::RequestArgs<Vec<String>>) -> usize {
///     let mut n = 0;
///     for line in &args.request {
///         if args.is_cancelled() {
///             break; // the app gave up: the answer would be thrown away
///         }
///         n += line.len();
///     }
///     n
/// }
/// # let _ = count;
/// ```
#[non_exhaustive]
pub struct RequestArgs<I> {
    /// The request.
    pub request: I,
    pub(super) id: u64,
    pub(super) cancelled: Arc<AtomicBool>,
}

impl<I> RequestArgs<I> {
    /// The request's id, unique among the requests of one worker process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the app gave up on this request: its reply was dropped or it timed out. The
    /// answer will be thrown away, so a long handler should check this now and then and return
    /// early (with any value). The app may kill a worker whose handler ignores it (see
    /// [`WorkerBuilder::kill_after_timeout`](crate::WorkerBuilder::kill_after_timeout)).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// A handle on [`is_cancelled`](Self::is_cancelled) that outlives `self`, for handlers that
    /// take the request out of the arguments.
    pub fn cancel_token(&self) -> CancelToken {
        CancelToken(self.cancelled.clone())
    }

    /// How many messages of answers this worker process has sent so far. For bincrew's own
    /// tests (how answers are batched); not part of the API.
    #[doc(hidden)]
    pub fn answer_messages_sent(&self) -> u64 {
        super::request_loop::ANSWER_MESSAGES.load(Ordering::Relaxed)
    }
}

/// Whether the app gave up on a request; from [`RequestArgs::cancel_token`].
///
/// ```
/// fn sum(args: bincrew::RequestArgs<Vec<u64>>) -> u64 {
///     let cancelled = args.cancel_token();
///     let numbers = args.request; // moves the request out of the arguments
///     numbers.into_iter().take_while(|_| !cancelled.is_cancelled()).sum()
/// }
/// # let _ = sum;
/// ```
#[derive(Clone, Debug)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// Same as [`RequestArgs::is_cancelled`].
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl<I: fmt::Debug> fmt::Debug for RequestArgs<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestArgs")
            .field("request", &self.request)
            .field("id", &self.id)
            .finish()
    }
}
