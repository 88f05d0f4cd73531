//! The worker side: [`Workers`], [`run_worker`] and the request loop of a worker process.

mod args;
pub(crate) mod exit;
#[cfg(target_os = "linux")]
mod limits;
#[cfg(not(target_os = "linux"))]
mod limits {
    //! No CPU limit per request here: the app does not ask for one (it refuses to start the
    //! worker, or starts it without, when the limit is best effort).

    pub(crate) fn start(_limit: std::time::Duration) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    /// Measures nothing.
    pub(crate) struct Measured;

    impl Measured {
        pub(crate) fn start(_id: u64) -> Measured {
            Measured
        }
    }
}
mod outbox;
mod request_loop;
mod serve;

pub use args::{CancelToken, RequestArgs};
#[cfg(test)]
pub(crate) use serve::ENTRY_MARKER;
pub use serve::{run_worker, run_worker_blocking, Workers};
