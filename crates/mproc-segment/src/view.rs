//! Safe, bounds-checked views of typed shared structures inside a segment's payload.

use std::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize, AtomicU8, AtomicU16, AtomicU32,
    AtomicU64, AtomicUsize,
};

/// Types that may be viewed in shared memory through a shared reference (`&Self`).
///
/// # Safety
/// An implementor promises that:
/// - every bit pattern, including all zeros, is a valid value (a peer process may have written
///   anything, and a fresh segment is zero-filled);
/// - it contains no pointers or references (other processes map the segment elsewhere), so
///   positions inside shared memory are expressed as offsets;
/// - all mutation through `&Self` goes through atomics (so concurrent access from other
///   processes is not a data race), i.e. it is made only of atomic integers, arrays of them and
///   `#[repr(C)]` structs of such fields;
/// - its layout is fixed (`#[repr(C)]` or a primitive).
pub unsafe trait ShmSafe: Sync {}

macro_rules! shm_safe {
    ($($t:ty),*) => { $(
        // SAFETY: atomic integers are valid for every bit pattern, hold no pointers, mutate only
        // atomically through `&self`, and have the layout of the integer they wrap.
        unsafe impl ShmSafe for $t {}
    )* };
}
shm_safe!(
    AtomicU8,
    AtomicU16,
    AtomicU32,
    AtomicU64,
    AtomicUsize,
    AtomicI8,
    AtomicI16,
    AtomicI32,
    AtomicI64,
    AtomicIsize
);

// SAFETY: an array of `ShmSafe` elements is laid out contiguously without padding between
// elements, and inherits every property listed on the trait from its element type.
unsafe impl<S: ShmSafe, const N: usize> ShmSafe for [S; N] {}
