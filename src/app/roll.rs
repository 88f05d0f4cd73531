//! [`WorkerPool::roll`]: replacing every worker of a pool, one at a time, without failing a
//! request.
//!
//! For each slot in turn: start the replacement (with the pool's builder, or the one given to
//! `roll_to`), and only once its handshake succeeded put it in the slot and *retire* the old
//! worker: it takes no new request, answers those it took, and exits (killed after the builder's
//! `recycle_drain_timeout`, if any). A slot is never empty, so a pool of one always has a worker.
//! A replacement that does not start stops the roll: the slots not reached keep their workers,
//! and the error says how far it got. One roll runs at a time; a second waits for the first.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use super::{PoolInner, WorkerPool};
use crate::app::builder::WorkerBuilder;
use crate::error::RollError;
use crate::sync::lock;
use crate::IpcValue;

impl<I: IpcValue, O: IpcValue> WorkerPool<I, O> {
    /// Replaces every worker, one at a time: each replacement is started (and completes its
    /// handshake) before the worker it replaces stops taking requests, and that worker answers
    /// the requests it took before it exits. No request fails for it, and replacements do not
    /// count as restarts. Each worker is started as the pool's builder says, so the binary is
    /// located again: use it after a new worker binary was deployed beside the app.
    ///
    /// Runs on a thread of its own. Requests keep flowing meanwhile.
    ///
    /// # Errors
    ///
    /// [`RollError::Start`] when a replacement does not start (say, a version mismatch): the roll
    /// stops there and the workers it had not reached keep serving. [`RollError::ShutDown`] or
    /// [`RollError::PoolFailed`] when the pool takes no requests.
    ///
    /// ```no_run
    /// # async fn demo(pool: bincrew::WorkerPool<String, String>) {
    /// if let Err(e) = pool.roll().await {
    ///     eprintln!("the old workers keep serving: {e}");
    /// }
    /// # }
    /// ```
    pub async fn roll(&self) -> Result<(), RollError> {
        let inner = self.inner.clone();
        crate::sync::on_thread("bincrew-roll", move || inner.roll(None)).await
    }

    /// Same as [`roll`](Self::roll), blocking the calling thread.
    ///
    /// # Errors
    ///
    /// Same as [`roll`](Self::roll).
    pub fn roll_blocking(&self) -> Result<(), RollError> {
        self.inner.roll(None)
    }

    /// Same as [`roll`](Self::roll), starting the replacements from `builder` instead (another
    /// binary, version requirement, arguments or limits). Once the first replacement has
    /// started, the pool starts every later worker from `builder`, restarts included.
    ///
    /// # Errors
    ///
    /// Same as [`roll`](Self::roll).
    pub async fn roll_to(&self, builder: WorkerBuilder<I, O>) -> Result<(), RollError> {
        let inner = self.inner.clone();
        crate::sync::on_thread("bincrew-roll", move || inner.roll(Some(builder))).await
    }

    /// Same as [`roll_to`](Self::roll_to), blocking the calling thread.
    ///
    /// # Errors
    ///
    /// Same as [`roll`](Self::roll).
    pub fn roll_to_blocking(&self, builder: WorkerBuilder<I, O>) -> Result<(), RollError> {
        self.inner.roll(Some(builder))
    }
}

impl<I: IpcValue, O: IpcValue> PoolInner<I, O> {
    /// Whether the pool takes requests, as a roll's error.
    fn check_usable(&self) -> Result<(), RollError> {
        let state = lock(&self.state);
        if state.shutting_down {
            return Err(RollError::ShutDown {
                pool: self.name.clone(),
            });
        }
        if let Some(reason) = &state.failed {
            return Err(RollError::PoolFailed {
                pool: self.name.clone(),
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    fn roll(self: &Arc<Self>, to: Option<WorkerBuilder<I, O>>) -> Result<(), RollError> {
        let _one_at_a_time = lock(&self.rolling);
        self.check_usable()?;
        let adopt = to.is_some();
        let builder = match to {
            Some(builder) => builder.count_into(self.counters.clone()),
            None => self.builder(),
        };
        let workers = lock(&self.state).slots.len();
        tracing::info!(pool = %self.name, workers, "rolling replacement of pool `{}` begins", self.name);
        for index in 0..workers {
            self.check_usable()?;
            let replacement = match builder.clone().start_blocking() {
                Ok(worker) => Arc::new(worker),
                Err(source) => {
                    tracing::warn!(
                        pool = %self.name,
                        replaced = index,
                        workers,
                        error = %source,
                        "rolling replacement of pool `{}` stopped after {index} of {workers} workers; the others keep serving",
                        self.name
                    );
                    return Err(RollError::Start {
                        pool: self.name.clone(),
                        replaced: index,
                        workers,
                        source: Box::new(source),
                    });
                }
            };
            if index == 0 && adopt {
                *lock(&self.builder) = builder.clone();
            }
            self.watch(&replacement);
            let (old, wakers) = {
                let mut state = lock(&self.state);
                if state.shutting_down || state.failed.is_some() {
                    drop(state);
                    // The replacement was never used: dropped, it is killed.
                    drop(replacement);
                    return self.check_usable();
                }
                let slot = &mut state.slots[index];
                let old = slot.worker.replace(replacement.clone());
                slot.crashes.restarted(Instant::now());
                if let Some(old) = &old {
                    state.retiring.push(old.clone());
                }
                (old, std::mem::take(&mut state.wakers))
            };
            // Requests waiting for a worker (a slot whose worker had crashed) may go now.
            self.changed.notify_all();
            wakers.into_iter().for_each(Waker::wake);
            let old_pid = old.as_ref().map(|w| w.id());
            if let Some(old) = old {
                old.retire();
            }
            self.rolled.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                pool = %self.name,
                slot = index,
                old_pid,
                new_pid = replacement.id(),
                "rolling replacement of pool `{}`: worker {} of {workers} replaced",
                self.name,
                index + 1
            );
        }
        self.rolls.fetch_add(1, Ordering::Relaxed);
        tracing::info!(pool = %self.name, workers, "rolling replacement of pool `{}` complete", self.name);
        Ok(())
    }
}
