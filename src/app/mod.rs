//! The app side: starting workers, sending them requests, reading their answers, supervising
//! pools. `ARCHITECTURE.md` at the repository's root describes the threads, the path of one
//! request and the locks.
//!
//! - `worker.rs`: [`Worker`], the public handle, and [`RunOptions`].
//! - `builder.rs`: [`WorkerBuilder`], how a worker is found, started and checked.
//! - `connection.rs`: `Connection`, what a `Worker`, its replies, its reader thread, its writer
//!   threads and the timer share about one worker: its requests in flight and how it ended.
//! - `read.rs`: who reads a worker's channel, and when.
//! - `settle.rs`: how a worker's end is settled (a kill, a shutdown, a drop, its channel's end).
//! - `lane.rs`: what is queued for one of a worker's channels, and who sends it.
//! - `pending.rs`: the requests in flight of one worker, by id.
//! - `reply.rs`: [`Reply`], the response to one request, as a future or blocking.
//! - `timer.rs`: the process-wide thread that fires request deadlines.
//! - `pool.rs`: [`WorkerPool`], several supervised workers of one kind.
//! - `restart.rs`: when a pool restarts a crashed worker, and when it gives up.
//! - `roll.rs`: a pool's rolling replacement of its workers.
//! - `recycle.rs`: `Core`, the processes behind one `Worker`: recycling them, retiring them.
//! - `stats.rs`: [`WorkerStats`] and [`PoolStats`], the counters a metrics exporter reads.

mod builder;
mod connection;
mod lane;
mod pending;
mod pool;
mod read;
mod recycle;
mod reply;
mod restart;
mod settle;
mod stats;
mod timer;
mod worker;

pub use builder::WorkerBuilder;
pub use pool::{PoolBuilder, WorkerPool};
pub use reply::Reply;
pub use stats::{PoolStats, WorkerStats};
pub use worker::{RunOptions, Worker};
