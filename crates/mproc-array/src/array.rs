//! `Array<T>`: a typed shared array with a robust lock (Python's `multiprocessing.Array`),
//! and `RawArray<T>`: a typed view of memory without a lock (Python's `RawArray`, or a
//! segment made by Python's `shared_memory`).

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;
use mproc_segment::{Kind, Segment, SegmentError};
use mproc_sync::LockError;

use crate::shared::Locked;

use crate::ArrayError;
use crate::shared::Shared;

/// A fixed-length array of `T` in shared memory, with a robust process-shared lock.
///
/// Every safe accessor takes the lock, as Python's `Array(lock=True)` does for each item
/// access; [`lock`](Array::lock) holds it across many accesses and hands out `&[T]` /
/// `&mut [T]`. If a process died holding the lock, accessors return
/// [`ArrayError::Inconsistent`] until someone repairs the data through `lock()` and calls
/// `make_consistent()` on the guard.
///
/// ```
/// use mproc_array::Array;
/// let a: Array<f64> = Array::new_from(&[1.0, 2.0, 3.0])?;   // anonymous: share through fork
/// a.set(1, 20.0)?;
/// assert_eq!(a.get(1)?, 20.0);
/// {
///     let mut g = a.lock_recover()?;
///     g[2] *= 10.0;                                        // many accesses, one lock
/// }
/// assert_eq!(a.to_vec()?, vec![1.0, 20.0, 30.0]);
/// assert!(a.get(3).is_err());                              // out of range: an error
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Array<T> {
    shared: Shared<T>,
}

/// Holds an [`Array`]'s lock; derefs to the elements.
#[must_use = "the lock is released when the guard is dropped"]
#[derive(Debug)]
pub struct ArrayGuard<'a, T> {
    held: Locked<'a, T>,
}

impl<T: Pod> Array<T> {
    /// A zero-filled array of `len` elements in a new named segment.
    pub fn create(name: &str, len: usize) -> Result<Array<T>, SegmentError> {
        Shared::create(Kind::ARRAY, Some(name), len, None).map(|shared| Array { shared })
    }

    /// As [`create`](Self::create), never reclaiming a stale segment of that name.
    ///
    /// A segment of that name left behind by a dead creator is not reclaimed: the call fails
    /// with `AlreadyExists`, and the old contents stay for you to inspect (as
    /// `SegmentOptions::fail_if_exists`; [`create`](Self::create) reclaims it).
    pub fn create_exclusive(name: &str, len: usize) -> Result<Array<T>, SegmentError> {
        Shared::create_as(Kind::ARRAY, Some(name), len, None, true).map(|shared| Array { shared })
    }

    /// A named array holding a copy of `values`.
    pub fn create_from(name: &str, values: &[T]) -> Result<Array<T>, SegmentError> {
        Shared::create(Kind::ARRAY, Some(name), values.len(), Some(values))
            .map(|shared| Array { shared })
    }

    /// A zero-filled array in a new anonymous segment (for children).
    pub fn new(len: usize) -> Result<Array<T>, SegmentError> {
        Shared::create(Kind::ARRAY, None, len, None).map(|shared| Array { shared })
    }

    /// An anonymous array holding a copy of `values`.
    pub fn new_from(values: &[T]) -> Result<Array<T>, SegmentError> {
        Shared::create(Kind::ARRAY, None, values.len(), Some(values)).map(|shared| Array { shared })
    }

    /// Opens an array created by another process; its element type must be `T`.
    pub fn open(name: &str) -> Result<Array<T>, SegmentError> {
        Shared::open(Kind::ARRAY, name).map(|shared| Array { shared })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Always false: arrays have at least one element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn ptr(&self) -> *mut T {
        self.shared.data().as_ptr()
    }

    fn check(&self, index: usize) -> Result<(), ArrayError> {
        if index < self.len() {
            Ok(())
        } else {
            Err(ArrayError::OutOfRange {
                index,
                len: self.len(),
            })
        }
    }

    /// The element at `index` (under the lock).
    pub fn get(&self, index: usize) -> Result<T, ArrayError> {
        self.check(index)?;
        self.shared.locked(|data| data[index])
    }

    /// Sets the element at `index` (under the lock).
    pub fn set(&self, index: usize, value: T) -> Result<(), ArrayError> {
        self.check(index)?;
        self.shared.locked(|data| data[index] = value)
    }

    /// Sets every element to `value` (under the lock).
    pub fn fill(&self, value: T) -> Result<(), ArrayError> {
        self.with_lock(|s| s.fill(value))
    }

    /// Copies `values` over the whole array; a length mismatch is an error and changes
    /// nothing.
    pub fn copy_from_slice(&self, values: &[T]) -> Result<(), ArrayError> {
        self.same_len(values.len())?;
        self.with_lock(|s| s.copy_from_slice(values))
    }

    /// Copies the whole array into `out`; a length mismatch is an error.
    pub fn copy_to_slice(&self, out: &mut [T]) -> Result<(), ArrayError> {
        self.same_len(out.len())?;
        self.with_lock(|s| out.copy_from_slice(s))
    }

    /// A copy of the whole array (one consistent snapshot, under the lock).
    pub fn to_vec(&self) -> Result<Vec<T>, ArrayError> {
        self.with_lock(|s| s.to_vec())
    }

    /// Iterates over a snapshot of the array.
    pub fn iter(&self) -> Result<std::vec::IntoIter<T>, ArrayError> {
        self.to_vec().map(Vec::into_iter)
    }

    fn same_len(&self, found: usize) -> Result<(), ArrayError> {
        if found == self.len() {
            Ok(())
        } else {
            Err(ArrayError::LengthMismatch {
                expected: self.len(),
                found,
            })
        }
    }

    fn with_lock<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> Result<R, ArrayError> {
        match self.lock() {
            Ok(mut g) => Ok(f(&mut g)),
            Err(LockError::OwnerDied(_)) => Err(ArrayError::Inconsistent),
            Err(e) => Err(ArrayError::Lock(e.map(|_| ()))),
        }
    }

    /// Takes the lock and returns a guard that derefs to `[T]`. If a process died holding
    /// the lock, the guard comes in `Err(LockError::OwnerDied(guard))`.
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>, LockError<ArrayGuard<'_, T>>> {
        let wrap = |held| ArrayGuard { held };
        self.shared.lock().map(wrap).map_err(|e| e.map(wrap))
    }

    /// The lock that guards the elements, for bindings whose acquire and release are two calls
    /// (Python's `get_lock()`): see [`RawLock::unlock`](mproc_sync::RawLock::unlock).
    pub fn raw_lock(&self) -> &mproc_sync::RawLock {
        self.shared.raw_lock()
    }

    /// Where the elements start in this process's mapping, for bindings that
    /// read and write them in place (Python's ctypes views). Valid while this handle
    /// lives; reading or writing through it is the caller's `unsafe`, under
    /// [`raw_lock`](Self::raw_lock) or with the promise of
    /// [`as_slice_unsync`](Array::as_slice_unsync).
    pub fn as_ptr(&self) -> *mut T {
        self.shared.data().as_ptr()
    }

    /// Takes the lock for `?`: a holder's death is reported by `guard.owner_died()`, not as
    /// an error (see [`RawLock::lock_recover`](mproc_sync::RawLock::lock_recover)).
    pub fn lock_recover(&self) -> Result<ArrayGuard<'_, T>, LockError<()>> {
        self.lock().or_else(LockError::recover)
    }

    /// The elements without the lock (Python's `RawArray` access).
    ///
    /// # Safety
    /// No other thread or process may write the array while the returned slice is alive
    /// (through `set`, a guard, or any other mapping of the segment).
    pub unsafe fn as_slice_unsync(&self) -> &[T] {
        // SAFETY: the data region holds `len` initialised Pod values (checked at
        // creation/open); exclusivity of writers is the caller's promise.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len()) }
    }

    /// The elements, mutable, without the lock.
    ///
    /// # Safety
    /// Nothing else — no other thread or process, and no other reference from this handle —
    /// may read or write the array while the returned slice is alive.
    #[allow(clippy::mut_from_ref)] // shared memory: exclusivity is the caller's promise
    pub unsafe fn as_mut_slice_unsync(&self) -> &mut [T] {
        // SAFETY: as in `as_slice_unsync`, with exclusive access promised by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len()) }
    }

    /// The segment the array lives in: its name, header and descriptor (nothing that touches the
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

impl<T> ArrayGuard<'_, T> {
    /// Declares the data consistent again after an owner death.
    pub fn make_consistent(&self) {
        self.held.guard.make_consistent()
    }

    /// Whether a holder died holding the lock and nobody has called `make_consistent` since:
    /// the data may be half-updated.
    pub fn owner_died(&self) -> bool {
        self.held.guard.owner_died()
    }
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.held.data()
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.held.data_mut()
    }
}

/// A typed view of `len` elements of `T` at byte `offset` of any segment — one mproc did
/// not make (Python's `shared_memory.SharedMemory`) included — with no lock. Copies in and
/// out are racy, like Python's `RawArray`: a concurrent writer can tear them, but they never
/// leave the mapping.
///
/// ```
/// use mproc_array::RawArray;
/// use mproc_segment::Segment;
/// let seg = Segment::anonymous(64)?;
/// let view: RawArray<u32> = RawArray::from_segment(seg, 0, 16)?;
/// view.copy_from_slice(&[7; 16])?;
/// assert_eq!(view.to_vec()?, vec![7; 16]);
/// # Ok::<(), mproc_array::ArrayError>(())
/// ```
#[derive(Debug)]
pub struct RawArray<T> {
    seg: Segment,
    offset: usize,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> RawArray<T> {
    /// Views `len` elements at byte `offset` of `seg`'s payload; the range must fit and be
    /// aligned for `T`.
    pub fn from_segment(
        seg: Segment,
        offset: usize,
        len: usize,
    ) -> Result<RawArray<T>, ArrayError> {
        let bytes = len.checked_mul(std::mem::size_of::<T>());
        let fits = bytes
            .and_then(|b| offset.checked_add(b))
            .is_some_and(|end| end <= seg.len());
        let aligned = (seg.as_ptr() as usize).wrapping_add(offset) % std::mem::align_of::<T>() == 0;
        if !fits || !aligned {
            return Err(ArrayError::Segment(SegmentError::OutOfBounds {
                offset,
                len: bytes.unwrap_or(usize::MAX),
                align: std::mem::align_of::<T>(),
                payload: seg.len(),
            }));
        }
        Ok(RawArray {
            seg,
            offset,
            len,
            _t: PhantomData,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A (racy) copy of the elements.
    pub fn to_vec(&self) -> Result<Vec<T>, ArrayError> {
        let mut out = vec![T::zeroed(); self.len];
        self.seg
            .read_bytes(self.offset, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    /// Copies `values` over the view (racy); a length mismatch is an error.
    pub fn copy_from_slice(&self, values: &[T]) -> Result<(), ArrayError> {
        if values.len() != self.len {
            return Err(ArrayError::LengthMismatch {
                expected: self.len,
                found: values.len(),
            });
        }
        self.seg
            .write_bytes(self.offset, bytemuck::cast_slice(values))?;
        Ok(())
    }

    /// The segment viewed: its name, header and descriptor (nothing that touches the
    /// bytes, see [`SegmentInfo`](mproc_segment::SegmentInfo)).
    pub fn segment(&self) -> mproc_segment::SegmentInfo<'_> {
        mproc_segment::SegmentInfo::of(&self.seg)
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
        &self.seg
    }
}
