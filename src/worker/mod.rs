//! The worker side: [`Workers`], [`run_worker`] and the request loop of a worker process.

mod outbox;
mod request_loop;
pub(crate) mod serve;

pub use serve::{run_worker, run_worker_blocking, CancelToken, RequestArgs, Workers};
