//! `Value<T>`: one shared value under a robust lock (Python's `multiprocessing.Value`), and
//! `AtomicValue<T>`: one shared integer without a lock, every access atomic.
//!
//! They are two types because the two styles cannot meet on the same bytes: a locked `get`
//! is a plain read, and an atomic `fetch_add` in another process does not wait for the lock,
//! so mixing them would be a data race.

use std::ops::{Deref, DerefMut};

use bytemuck::Pod;
use mproc_segment::{Kind, SegmentError};
use mproc_sync::LockError;

use crate::shared::Locked;

use crate::ArrayError;
use crate::shared::Shared;

/// One value of `T` in shared memory, with a robust process-shared lock: `get`, `set`,
/// `update` and `lock` all take it. For a counter or flag shared without a lock, use
/// [`AtomicValue`].
///
/// ```
/// use mproc_array::Value;
/// let stats: Value<[f64; 2]> = Value::new([0.0; 2])?;
/// stats.update(|s| { s[0] += 1.0; s[1] += 2.5 })?;     // both fields in one critical section
/// assert_eq!(stats.get()?, [1.0, 2.5]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Value<T> {
    shared: Shared<T>,
}

/// Holds a [`Value`]'s lock; derefs to the value.
#[must_use = "the lock is released when the guard is dropped"]
#[derive(Debug)]
pub struct ValueGuard<'a, T> {
    held: Locked<'a, T>,
}

impl<T: Pod> Value<T> {
    /// A value in a new anonymous segment.
    pub fn new(value: T) -> Result<Value<T>, SegmentError> {
        Shared::create(Kind::VALUE, None, 1, Some(&[value])).map(|shared| Value { shared })
    }

    /// A value in a new named segment.
    pub fn create(name: &str, value: T) -> Result<Value<T>, SegmentError> {
        Shared::create(Kind::VALUE, Some(name), 1, Some(&[value])).map(|shared| Value { shared })
    }

    /// As [`create`](Self::create), never reclaiming a stale segment of that name.
    ///
    /// A segment of that name left behind by a dead creator is not reclaimed: the call fails
    /// with `AlreadyExists`, and the old contents stay for you to inspect (as
    /// `SegmentOptions::fail_if_exists`; [`create`](Self::create) reclaims it).
    pub fn create_exclusive(name: &str, value: T) -> Result<Value<T>, SegmentError> {
        Shared::create_as(Kind::VALUE, Some(name), 1, Some(&[value]), true)
            .map(|shared| Value { shared })
    }

    /// Opens a value created by another process; its type must be `T`.
    pub fn open(name: &str) -> Result<Value<T>, SegmentError> {
        Shared::open(Kind::VALUE, name).map(|shared| Value { shared })
    }

    /// The value (under the lock).
    pub fn get(&self) -> Result<T, ArrayError> {
        self.shared.locked(|data| data[0])
    }

    /// Replaces the value (under the lock).
    pub fn set(&self, value: T) -> Result<(), ArrayError> {
        self.shared.locked(|data| data[0] = value)
    }

    /// Runs `f` on the value under the lock (a read-modify-write no other process can
    /// interleave with) and returns what `f` returns.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, ArrayError> {
        match self.lock() {
            Ok(mut g) => Ok(f(&mut g)),
            Err(LockError::OwnerDied(_)) => Err(ArrayError::Inconsistent),
            Err(e) => Err(ArrayError::Lock(e.map(|_| ()))),
        }
    }

    /// Takes the lock and returns a guard that derefs to `T`.
    pub fn lock(&self) -> Result<ValueGuard<'_, T>, LockError<ValueGuard<'_, T>>> {
        let wrap = |held| ValueGuard { held };
        self.shared.lock().map(wrap).map_err(|e| e.map(wrap))
    }

    /// The lock that guards the value, for bindings whose acquire and release are two calls
    /// (Python's `get_lock()`): see [`RawLock::unlock`](mproc_sync::RawLock::unlock).
    pub fn raw_lock(&self) -> &mproc_sync::RawLock {
        self.shared.raw_lock()
    }

    /// Where the value starts in this process's mapping, for bindings that
    /// read and write it in place (Python's ctypes views). Valid while this handle
    /// lives; reading or writing through it is the caller's `unsafe`, under
    /// [`raw_lock`](Self::raw_lock) or with the promise of
    /// [`as_slice_unsync`](crate::Array::as_slice_unsync).
    pub fn as_ptr(&self) -> *mut T {
        self.shared.data().as_ptr()
    }

    /// Takes the lock for `?`: a holder's death is reported by `guard.owner_died()`, not as
    /// an error (see [`RawLock::lock_recover`](mproc_sync::RawLock::lock_recover)).
    pub fn lock_recover(&self) -> Result<ValueGuard<'_, T>, LockError<()>> {
        self.lock().or_else(LockError::recover)
    }

    /// The segment the value lives in: its name, header and descriptor (nothing that touches the
    /// bytes, see [`SegmentInfo`](mproc_segment::SegmentInfo)).
    pub fn segment(&self) -> mproc_segment::SegmentInfo<'_> {
        mproc_segment::SegmentInfo::of(self.shared.segment())
    }

    /// The segment itself, whose `read_bytes`, `write_bytes` and `view` reach the
    /// object's bytes (for tools and tests).
    ///
    /// # Safety
    /// While this process uses the object (from any thread), nothing may access its bytes
    /// through the segment: the object's own accesses are partly non-atomic, and a
    /// concurrent access is a data race. Another process may (it cannot race with this
    /// one's memory model; the object treats what it reads as untrusted).
    pub unsafe fn raw_segment(&self) -> &mproc_segment::Segment {
        self.shared.segment()
    }
}

impl<T> ValueGuard<'_, T> {
    /// Declares the value consistent again after an owner death.
    pub fn make_consistent(&self) {
        self.held.guard.make_consistent()
    }

    /// Whether a holder died holding the lock and nobody has called `make_consistent` since:
    /// the value may be half-updated.
    pub fn owner_died(&self) -> bool {
        self.held.guard.owner_died()
    }
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // A value is an array of one (its creation checked the length).
        &self.held.data()[0]
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.held.data_mut()[0]
    }
}

/// Integer types an [`AtomicValue`] can hold, with their atomic twin.
pub trait AtomicInt: Pod + Eq + std::fmt::Debug + private::Sealed {
    /// The standard atomic type of the same size.
    #[doc(hidden)]
    type Atomic;
    #[doc(hidden)]
    fn load(a: &Self::Atomic) -> Self;
    #[doc(hidden)]
    fn store(a: &Self::Atomic, v: Self);
    #[doc(hidden)]
    fn swap(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn fetch_add(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn fetch_sub(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn compare_exchange(a: &Self::Atomic, current: Self, new: Self) -> Result<Self, Self>;
    /// # Safety
    /// `p` must be valid, aligned for `Self::Atomic`, and accessed only atomically while
    /// the returned reference lives.
    #[doc(hidden)]
    unsafe fn from_ptr<'a>(p: *mut Self) -> &'a Self::Atomic;
}

mod private {
    pub trait Sealed {}
}

macro_rules! atomic_int {
    ($($t:ty => $atomic:ty),* $(,)?) => { $(
        impl private::Sealed for $t {}
        impl AtomicInt for $t {
            type Atomic = $atomic;
            fn load(a: &$atomic) -> $t {
                a.load(std::sync::atomic::Ordering::SeqCst)
            }
            fn store(a: &$atomic, v: $t) {
                a.store(v, std::sync::atomic::Ordering::SeqCst)
            }
            fn swap(a: &$atomic, v: $t) -> $t {
                a.swap(v, std::sync::atomic::Ordering::SeqCst)
            }
            fn fetch_add(a: &$atomic, v: $t) -> $t {
                a.fetch_add(v, std::sync::atomic::Ordering::SeqCst)
            }
            fn fetch_sub(a: &$atomic, v: $t) -> $t {
                a.fetch_sub(v, std::sync::atomic::Ordering::SeqCst)
            }
            fn compare_exchange(a: &$atomic, current: $t, new: $t) -> Result<$t, $t> {
                a.compare_exchange(
                    current,
                    new,
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                )
            }
            unsafe fn from_ptr<'a>(p: *mut $t) -> &'a $atomic {
                // SAFETY: forwarded from the caller's contract.
                unsafe { <$atomic>::from_ptr(p) }
            }
        }
    )* };
}

atomic_int!(
    u8 => std::sync::atomic::AtomicU8,
    u16 => std::sync::atomic::AtomicU16,
    u32 => std::sync::atomic::AtomicU32,
    u64 => std::sync::atomic::AtomicU64,
    i8 => std::sync::atomic::AtomicI8,
    i16 => std::sync::atomic::AtomicI16,
    i32 => std::sync::atomic::AtomicI32,
    i64 => std::sync::atomic::AtomicI64,
    usize => std::sync::atomic::AtomicUsize,
    isize => std::sync::atomic::AtomicIsize,
);

/// One integer in shared memory that every process accesses atomically, without a lock
/// (Python's `Value(..., lock=False)`, made race-free): `load`, `store`, `fetch_add`,
/// `fetch_sub`, `swap`, `compare_exchange`. A segment of its own kind, so that it cannot be
/// opened as a locked [`Value`] (whose plain reads would race with these atomics).
///
/// ```
/// use mproc_array::AtomicValue;
/// let hits: AtomicValue<u64> = AtomicValue::new(0)?;
/// hits.fetch_add(5);
/// assert_eq!(hits.compare_exchange(5, 7), Ok(5));
/// assert_eq!(hits.load(), 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AtomicValue<T> {
    shared: Shared<T>,
}

impl<T: AtomicInt> AtomicValue<T> {
    /// An atomic value in a new anonymous segment (children get it through `fork`).
    pub fn new(value: T) -> Result<AtomicValue<T>, SegmentError> {
        Shared::create(Kind::ATOMIC_VALUE, None, 1, Some(&[value]))
            .map(|shared| AtomicValue { shared })
    }

    /// An atomic value in a new named segment.
    pub fn create(name: &str, value: T) -> Result<AtomicValue<T>, SegmentError> {
        Shared::create(Kind::ATOMIC_VALUE, Some(name), 1, Some(&[value]))
            .map(|shared| AtomicValue { shared })
    }

    /// As [`create`](Self::create), never reclaiming a stale segment of that name.
    ///
    /// A segment of that name left behind by a dead creator is not reclaimed: the call fails
    /// with `AlreadyExists`, and the old contents stay for you to inspect (as
    /// `SegmentOptions::fail_if_exists`; [`create`](Self::create) reclaims it).
    pub fn create_exclusive(name: &str, value: T) -> Result<AtomicValue<T>, SegmentError> {
        Shared::create_as(Kind::ATOMIC_VALUE, Some(name), 1, Some(&[value]), true)
            .map(|shared| AtomicValue { shared })
    }

    /// Opens an atomic value created by another process; its type must be `T`.
    pub fn open(name: &str) -> Result<AtomicValue<T>, SegmentError> {
        Shared::open(Kind::ATOMIC_VALUE, name).map(|shared| AtomicValue { shared })
    }

    fn atomic(&self) -> &T::Atomic {
        // SAFETY: the data region holds one T and is aligned to at least 64 bytes (more than
        // any integer needs); this segment's kind is only ever opened as an AtomicValue,
        // whose every access is atomic.
        unsafe { T::from_ptr(self.shared.data().as_ptr()) }
    }

    /// Reads the value.
    pub fn load(&self) -> T {
        T::load(self.atomic())
    }

    /// Writes the value.
    pub fn store(&self, v: T) {
        T::store(self.atomic(), v)
    }

    /// Replaces the value; returns the previous one.
    pub fn swap(&self, v: T) -> T {
        T::swap(self.atomic(), v)
    }

    /// Adds (wrapping); returns the previous value.
    pub fn fetch_add(&self, v: T) -> T {
        T::fetch_add(self.atomic(), v)
    }

    /// Subtracts (wrapping); returns the previous value.
    pub fn fetch_sub(&self, v: T) -> T {
        T::fetch_sub(self.atomic(), v)
    }

    /// Replaces the value with `new` if it is `current`; `Err(actual)` otherwise.
    pub fn compare_exchange(&self, current: T, new: T) -> Result<T, T> {
        T::compare_exchange(self.atomic(), current, new)
    }

    /// The segment the value lives in: its name, header and descriptor (nothing that touches the
    /// bytes, see [`SegmentInfo`](mproc_segment::SegmentInfo)).
    pub fn segment(&self) -> mproc_segment::SegmentInfo<'_> {
        mproc_segment::SegmentInfo::of(self.shared.segment())
    }

    /// The segment itself, whose `read_bytes`, `write_bytes` and `view` reach the
    /// object's bytes (for tools and tests).
    ///
    /// # Safety
    /// While this process uses the object (from any thread), nothing may access its bytes
    /// through the segment: the object's own accesses are partly non-atomic, and a
    /// concurrent access is a data race. Another process may (it cannot race with this
    /// one's memory model; the object treats what it reads as untrusted).
    pub unsafe fn raw_segment(&self) -> &mproc_segment::Segment {
        self.shared.segment()
    }
}
