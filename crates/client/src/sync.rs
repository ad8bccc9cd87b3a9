//! Locking that never panics, for every module that takes a mutex.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`. Nothing in the crate panics while holding a lock; a poisoned one (a panic in
/// a caller's code elsewhere) is used as it is rather than turned into a second panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
