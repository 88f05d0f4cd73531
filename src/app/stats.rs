//! Counters for a metrics exporter: [`WorkerStats`] and [`PoolStats`], read from the
//! `Counters` a worker (and every worker of a pool) adds to.

use std::sync::atomic::{AtomicU64, Ordering};

/// What happened to a [`Worker`](crate::Worker) since it started: a snapshot of its counters,
/// from [`Worker::stats`](crate::Worker::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Requests sent to its processes.
    pub requests: u64,
    /// Its processes that ended unexpectedly (crashed, were killed, or hit a limit).
    pub crashes: u64,
    /// Of those, the ones a limit ended (see [`WorkerCrashError::limit`](crate::WorkerCrashError::limit)).
    pub limit_kills: u64,
    /// Times its process was replaced by recycling (see
    /// [`WorkerBuilder::recycle_after_requests`](crate::WorkerBuilder::recycle_after_requests)).
    pub recycles: u64,
    /// Times starting a recycling replacement failed (the old process kept serving).
    pub recycle_failures: u64,
}

/// What happened to a [`WorkerPool`](crate::WorkerPool) since it started, for a metrics exporter:
/// a snapshot of its counters, from [`WorkerPool::stats`](crate::WorkerPool::stats). Every
/// counter but `workers` only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Requests sent to its workers (a retried request counts once per attempt).
    pub requests: u64,
    /// Worker processes that ended unexpectedly (crashed, were killed, or hit a limit),
    /// including replaced ones that crashed while they drained.
    pub crashes: u64,
    /// Of those, the ones a limit ended.
    pub limit_kills: u64,
    /// Crashed workers the pool replaced (what its restart limit counts).
    pub restarts: u64,
    /// Worker processes replaced by recycling (not counted as restarts).
    pub recycles: u64,
    /// Times starting a recycling replacement failed (the old process kept serving).
    pub recycle_failures: u64,
    /// Rolling replacements that completed ([`WorkerPool::roll`](crate::WorkerPool::roll)).
    pub rolls: u64,
    /// Workers replaced by rolling replacements.
    pub rolled: u64,
    /// Workers up now.
    pub workers: usize,
}

/// What one worker, or every worker of a pool, counts.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) crashes: AtomicU64,
    pub(crate) limit_kills: AtomicU64,
    pub(crate) recycles: AtomicU64,
    pub(crate) recycle_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn worker(&self) -> WorkerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerStats {
            requests: get(&self.requests),
            crashes: get(&self.crashes),
            limit_kills: get(&self.limit_kills),
            recycles: get(&self.recycles),
            recycle_failures: get(&self.recycle_failures),
        }
    }
}
