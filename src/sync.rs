//! Small helpers for the crate's locks.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, going on with the data if a thread panicked while holding it: every critical
/// section in bincrew leaves the data consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
