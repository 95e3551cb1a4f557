//! Joining threads: a panic in a thread continues in the one that waits for it. A leaf
//! module (it imports nothing of the crate), so every stage can use it.

/// The result of a scoped thread.
pub(crate) fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The result of a spawned thread.
pub(crate) fn join_spawned<T>(handle: std::thread::JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
