//! `Value<T>`: one shared value with a robust lock (Python's `multiprocessing.Value`), with
//! lock-free atomics for integer types.

use std::ops::{Deref, DerefMut};

use bytemuck::Pod;
use mproc_segment::{Kind, Segment, SegmentError};
use mproc_sync::{LockError, RawGuard};

use crate::ArrayError;
use crate::shared::Shared;

/// One value of `T` in shared memory, with a robust process-shared lock.
///
/// `get`, `set` and `update` take the lock. For the integer types (`u32`, `u64`, `i32`,
/// `i64`, `usize`, `isize`) there are also lock-free atomics — `fetch_add`, `fetch_sub`,
/// `swap`, `compare_exchange`, `load`, `store`. Use one style per value: an atomic
/// `fetch_add` does not wait for a holder of the lock.
///
/// ```
/// use mproc_array::Value;
/// let counter: Value<u64> = Value::new(0)?;
/// counter.fetch_add(5);
/// counter.update(|v| *v *= 2)?;
/// assert_eq!(counter.get()?, 10);
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
    guard: RawGuard<'a>,
    value: &'a Value<T>,
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

    /// Opens a value created by another process; its type must be `T`.
    pub fn open(name: &str) -> Result<Value<T>, SegmentError> {
        Shared::open(Kind::VALUE, name).map(|shared| Value { shared })
    }

    fn ptr(&self) -> *mut T {
        self.shared.data().as_ptr()
    }

    /// The value (under the lock).
    pub fn get(&self) -> Result<T, ArrayError> {
        // SAFETY: the data region holds one T; the lock is held.
        self.shared.locked(|| unsafe { self.ptr().read() })
    }

    /// Replaces the value (under the lock).
    pub fn set(&self, value: T) -> Result<(), ArrayError> {
        // SAFETY: as in `get`; the lock gives exclusive access.
        self.shared.locked(|| unsafe { self.ptr().write(value) })
    }

    /// Runs `f` on the value under the lock (a read-modify-write no other process can
    /// interleave with) and returns what `f` returns.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, ArrayError> {
        match self.lock() {
            Ok(mut g) => Ok(f(&mut g)),
            Err(LockError::OwnerDied(_)) => Err(ArrayError::Inconsistent),
            Err(e) => Err(ArrayError::Lock(e.to_string())),
        }
    }

    /// Takes the lock and returns a guard that derefs to `T`.
    pub fn lock(&self) -> Result<ValueGuard<'_, T>, LockError<ValueGuard<'_, T>>> {
        let wrap = |guard| ValueGuard { guard, value: self };
        self.shared.lock_raw().map(wrap).map_err(|e| e.map(wrap))
    }

    /// The segment the value lives in.
    pub fn segment(&self) -> &Segment {
        self.shared.segment()
    }
}

impl<T> ValueGuard<'_, T> {
    /// Declares the value consistent again after an owner death.
    pub fn make_consistent(&self) {
        self.guard.make_consistent()
    }
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held; the data region holds one initialised T.
        unsafe { &*self.value.ptr() }
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the lock held by this guard gives exclusive access.
        unsafe { &mut *self.value.ptr() }
    }
}

macro_rules! atomic_value {
    ($($t:ty => $atomic:ty),* $(,)?) => { $(
        impl Value<$t> {
            fn atomic(&self) -> &$atomic {
                // SAFETY: the data region is aligned to at least 64 bytes and holds one
                // value of the atomic's size; other processes access it only atomically or
                // under the lock, as documented on `Value`.
                unsafe { <$atomic>::from_ptr(self.ptr()) }
            }

            /// Adds atomically (wrapping); returns the previous value.
            pub fn fetch_add(&self, v: $t) -> $t {
                self.atomic().fetch_add(v, std::sync::atomic::Ordering::SeqCst)
            }

            /// Subtracts atomically (wrapping); returns the previous value.
            pub fn fetch_sub(&self, v: $t) -> $t {
                self.atomic().fetch_sub(v, std::sync::atomic::Ordering::SeqCst)
            }

            /// Replaces atomically; returns the previous value.
            pub fn swap(&self, v: $t) -> $t {
                self.atomic().swap(v, std::sync::atomic::Ordering::SeqCst)
            }

            /// Replaces with `new` if the value is `current`; `Err(actual)` otherwise.
            pub fn compare_exchange(&self, current: $t, new: $t) -> Result<$t, $t> {
                self.atomic().compare_exchange(
                    current,
                    new,
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                )
            }

            /// Reads atomically.
            pub fn load(&self) -> $t {
                self.atomic().load(std::sync::atomic::Ordering::SeqCst)
            }

            /// Writes atomically.
            pub fn store(&self, v: $t) {
                self.atomic().store(v, std::sync::atomic::Ordering::SeqCst)
            }
        }
    )* };
}

atomic_value!(
    u32 => std::sync::atomic::AtomicU32,
    u64 => std::sync::atomic::AtomicU64,
    i32 => std::sync::atomic::AtomicI32,
    i64 => std::sync::atomic::AtomicI64,
    usize => std::sync::atomic::AtomicUsize,
    isize => std::sync::atomic::AtomicIsize,
);
