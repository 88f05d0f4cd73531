//! The messages after the hello, encoded by `ipc-channel`. Changing them means bumping
//! [`PROTOCOL`](crate::build::PROTOCOL).
//!
//! The connection the worker opened carries worker-to-app messages: the hello (raw bytes), then
//! [`Ready`], then [`ToApp`]. [`Ready`] hands the app the sending end of a channel the worker
//! created for [`ToWorker`] messages; the worker keeps no copy of it, so the worker sees the
//! channel close when the app goes away.

use ipc_channel::ipc::OpaqueIpcSender;
use serde::{Deserialize, Serialize};

/// The worker's second message, sent right after a hello with `Status::Ready`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Ready {
    /// An `IpcSender<ToWorker<I>>`.
    pub(crate) requests: OpaqueIpcSender,
}

/// App to worker.
#[derive(Serialize, Deserialize)]
pub(crate) enum ToWorker<I> {
    /// Run a request.
    Request { id: u64, request: I },
    /// Take no more requests, answer those in flight, exit with code 0.
    Shutdown,
}

/// Worker to app.
#[derive(Serialize, Deserialize)]
pub(crate) enum ToApp<O> {
    /// The answer to request `id`.
    Response { id: u64, response: O },
    /// The response to request `id` could not be encoded.
    EncodeFailed { id: u64, reason: String },
    /// The worker panicked and is about to exit.
    Panicked {
        message: String,
        location: Option<String>,
    },
}
