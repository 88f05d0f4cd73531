//! Small helpers for the crate's locks.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, going on with the data if a thread panicked while holding it: every critical
/// section in bincrew leaves the data consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `work` on a thread of its own and resolves to its result: how the async `start` and
/// `shutdown` wait, without blocking the executor. A thread per call is what these calls need
/// (each waits on a process for up to its timeout), and spares a thread-pool dependency.
pub(crate) fn on_thread<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> OnThread<T> {
    let shared = std::sync::Arc::new(Mutex::new(Done {
        result: None,
        waker: None,
    }));
    let slot = shared.clone();
    let finish = move |result: T| {
        let waker = {
            let mut done = lock(&slot);
            done.result = Some(result);
            done.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    };
    let work = std::sync::Arc::new(Mutex::new(Some((work, finish))));
    let on_thread = work.clone();
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if let Some((work, finish)) = lock(&on_thread).take() {
                finish(work());
            }
        });
    if spawned.is_err() {
        // No thread to be had: do the work here rather than never.
        if let Some((work, finish)) = lock(&work).take() {
            finish(work());
        }
    }
    OnThread { shared }
}

struct Done<T> {
    result: Option<T>,
    waker: Option<std::task::Waker>,
}

/// The future of [`on_thread`].
pub(crate) struct OnThread<T> {
    shared: std::sync::Arc<Mutex<Done<T>>>,
}

impl<T> std::future::Future for OnThread<T> {
    type Output = T;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        let mut done = lock(&self.shared);
        match done.result.take() {
            Some(result) => std::task::Poll::Ready(result),
            None => {
                done.waker = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
}
