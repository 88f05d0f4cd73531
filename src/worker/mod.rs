//! The worker side: [`Workers`], [`run_worker`] and the request loop of a worker process.

mod args;
pub(crate) mod exit;
mod outbox;
mod request_loop;
mod serve;

pub use args::{CancelToken, RequestArgs};
#[cfg(test)]
pub(crate) use serve::ENTRY_MARKER;
pub use serve::{run_worker, run_worker_blocking, Workers};
