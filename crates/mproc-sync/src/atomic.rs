//! The one door through which mproc's atomics come in.
//!
//! Under `--cfg loom` these are loom's model-checked types; otherwise the standard ones. The
//! queue and the primitives of this crate import atomics from here and nowhere else, so the
//! same code is model-checked and shipped (as crossbeam's `primitive` module does).

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

/// Yields to other threads; under loom, lets the model checker schedule another thread.
#[inline]
pub fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
