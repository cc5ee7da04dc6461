//! Locks that outlive a panic elsewhere.
//!
//! A `std::sync::Mutex` is poisoned when a thread panics while holding it. Every critical section
//! in this crate is one step (insert, remove, push, pop, a counter update) that leaves the data
//! consistent at each point a panic could occur, so the data behind a poisoned lock is still
//! valid: carrying on with it is right, and refusing it (as `lock().ok()` did) silently dropped
//! messages, acknowledgments and records instead.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// The guard of `mutex`, poisoned or not.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned: PoisonError<_>| {
        tracing::warn!("a lock was poisoned by a panic elsewhere; its data is still consistent");
        poisoned.into_inner()
    })
}
