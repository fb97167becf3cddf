//! Cross-process synchronisation in shared memory: futex waits, a robust [`Lock`], [`RLock`],
//! [`Semaphore`], [`BoundedSemaphore`], [`Event`], [`Condition`] and [`Barrier`] — Python's
//! `multiprocessing` primitives, made robust.
//!
//! Every primitive is a `#[repr(C)]` structure (`RawLock`, `RawEvent`, ...) that can live
//! inside any [`Segment`](mproc_segment::Segment), plus a handle type that owns a segment of
//! its own (`new` for an anonymous one shared through `fork`, `create`/`open` by name).
//!
//! Blocking waits spin briefly, then sleep in the kernel on a shared futex; a waiter count
//! next to each futex word means a `set`/`release`/`notify` costs no system call when nobody
//! sleeps. A process blocked in a wait uses no CPU.
//!
//! **Robustness.** A thread that exits or a process SIGKILLed while holding a [`Lock`] does
//! not leave it locked: the lock word names its holder's thread (by its liveness token, see
//! `mproc_segment::liveness`), waiters ask the kernel now and then whether the holder still
//! runs, and the next locker gets [`LockError::OwnerDied`] with the
//! guard; the lock keeps reporting the death until someone calls `make_consistent()`.
//! Nothing in a lock is a pointer (unlike a robust pthread mutex, whose robust-list links a
//! peer could rewrite). Semaphore permits and barrier arrivals of a
//! dead process are not recovered (as in Python); use the `*_timeout` waits where a peer may
//! die.
//!
//! ```
//! use mproc_sync::{Lock, LockError};
//! let lock = Lock::new()?;
//! match lock.lock() {
//!     Ok(_guard) => { /* critical section */ }
//!     Err(LockError::OwnerDied(guard)) => {
//!         // check or repair the protected data, then:
//!         guard.make_consistent();
//!     }
//!     Err(e) => return Err(e.to_string().into()),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

pub mod atomic;
mod barrier;
mod deadline;
mod error;
mod event;
mod futex;
mod naps;
mod park;
#[cfg(all(feature = "async", not(loom)))]
mod reactor;
#[cfg(all(feature = "async", not(loom)))]
mod select;
mod semaphore;

#[cfg(not(loom))]
mod condition;
#[cfg(not(loom))]
mod lock;
#[cfg(not(loom))]
mod placed;
mod raw_lock;

/// Building blocks mproc's own crates (mproc-queue, mproc-pool) wait with, through one
/// door: not part of the API users program against, no stability promise, hidden from the
/// documentation. The modules behind it are private.
#[doc(hidden)]
pub mod __private {
    pub use crate::naps::{JOIN_CHECK, PARKING, QUEUE_FIRST_PEER_CHECK, QUEUE_PEER_CHECK};
    #[cfg(all(feature = "async", not(loom)))]
    pub use crate::park::{ParkFuture, wait_async};
    #[cfg(all(feature = "async", not(loom)))]
    pub use crate::reactor::FdWatch;
}

pub use barrier::{BarrierArrival, RawBarrier};
pub use deadline::Deadline;
pub use error::{BarrierError, LockError, SemaphoreError};
pub use event::RawEvent;
pub use park::{Parking, Waiting};
pub use raw_lock::{LockCounters, RawGuard, RawLock};
pub use semaphore::RawSemaphore;

#[cfg(all(feature = "async", not(loom)))]
pub use select::{Readable, Registration, SelectFuture, Waitable, select, select_async};

#[cfg(not(loom))]
pub use barrier::Barrier;
#[cfg(not(loom))]
pub use condition::{Condition, RawCondition, WaitResult};
#[cfg(not(loom))]
pub use event::Event;
#[cfg(not(loom))]
pub use lock::{Lock, LockGuard, RLock, RLockCell};
#[cfg(not(loom))]
pub use semaphore::{BoundedCell, BoundedSemaphore, Semaphore};
