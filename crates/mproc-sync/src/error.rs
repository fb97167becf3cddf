//! Errors of the synchronisation primitives.

use mproc_segment::Errno;

/// Why acquiring a [`Lock`](crate::Lock) or [`RLock`](crate::RLock) did not simply succeed.
///
/// `G` is the guard: [`OwnerDied`](LockError::OwnerDied) carries it, because the lock *was*
/// acquired — the caller decides whether the protected data can be trusted, and calls
/// `make_consistent()` on the guard once it has repaired or checked it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LockError<G> {
    /// Acquired; but a previous owner died while holding the lock (now or earlier, and no one
    /// has called `make_consistent` since), so the protected data may be half-updated.
    #[error("lock acquired, but a previous owner died holding it; the data may be inconsistent")]
    OwnerDied(G),
    /// `try_lock` found the lock held.
    #[error("lock is held by another thread or process")]
    WouldBlock,
    /// `lock_timeout` gave up.
    #[error("timed out waiting for the lock")]
    Timeout,
    /// `release` was called by a thread that does not hold the lock.
    #[error("lock released by a thread that does not hold it")]
    NotOwner,
    /// An unexpected error from the pthread call.
    #[error("{call} failed: {errno}")]
    Os {
        /// The pthread function that failed.
        call: &'static str,
        /// Its error number.
        errno: Errno,
    },
}

impl<G> LockError<G> {
    /// The guard, if the lock was acquired (the `OwnerDied` case).
    pub fn into_guard(self) -> Option<G> {
        match self {
            LockError::OwnerDied(g) => Some(g),
            _ => None,
        }
    }

    /// The guard, also when its owner died: `Ok(guard)` whenever the lock is held, the
    /// error without a guard otherwise (a `'static` error, so `?` converts it into
    /// `Box<dyn Error>` or `anyhow::Error`). What `lock_recover` returns.
    pub fn recover(self) -> Result<G, LockError<()>> {
        match self {
            LockError::OwnerDied(g) => Ok(g),
            e => Err(e.map(|_| ())),
        }
    }

    /// The same error with the guard transformed (errors without a guard pass through).
    pub fn map<H>(self, f: impl FnOnce(G) -> H) -> LockError<H> {
        match self {
            LockError::OwnerDied(g) => LockError::OwnerDied(f(g)),
            LockError::WouldBlock => LockError::WouldBlock,
            LockError::Timeout => LockError::Timeout,
            LockError::NotOwner => LockError::NotOwner,
            LockError::Os { call, errno } => LockError::Os { call, errno },
        }
    }
}

/// Errors of [`BoundedSemaphore::release`](crate::BoundedSemaphore::release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SemaphoreError {
    /// Releasing would raise the value above the bound it was created with.
    #[error("semaphore released too many times (bound {bound})")]
    OverRelease {
        /// The semaphore's bound.
        bound: u32,
    },
}

/// Why a [`Barrier`](crate::Barrier) wait did not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BarrierError {
    /// The barrier is broken (a party timed out, or it was reset while this party waited);
    /// call `reset` to use it again.
    #[error("barrier is broken")]
    Broken,
    /// This party's `wait_timeout` expired; the barrier is now broken for everyone.
    #[error("timed out waiting at the barrier (the barrier is now broken)")]
    Timeout,
}
