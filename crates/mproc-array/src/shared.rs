//! The layout both `Array` and `Value` use: a robust lock, then the elements.
//!
//! | payload offset | what |
//! |---|---|
//! | 0 | [`RawLock`] (48 bytes) |
//! | [`DATA_OFFSET`] (64, or the element alignment if larger) | `len` elements of `T` |
//!
//! With the segment header's 256 bytes in front, the elements of an array whose element
//! alignment is at most 64 start at byte **320** of the shared-memory object — the offset a
//! Python program uses (see the README).

use std::marker::PhantomData;
use std::ptr::NonNull;

use bytemuck::Pod;
use mproc_segment::{Kind, Segment, SegmentError, SegmentOptions, TypeTag};
use mproc_sync::{LockError, RawGuard, RawLock};

use crate::ArrayError;

/// Offset of the elements inside the payload, for element alignments up to 64.
pub const DATA_OFFSET: usize = 64;

/// Byte offset of the elements from the start of the shared-memory object, for element
/// alignments up to 64: the segment header (256) plus [`DATA_OFFSET`].
pub const PYTHON_OFFSET: usize = mproc_segment::HEADER_LEN + DATA_OFFSET;

pub(crate) fn data_offset<T>() -> usize {
    DATA_OFFSET.next_multiple_of(std::mem::align_of::<T>())
}

/// A segment holding a lock and `len` elements of `T`.
#[derive(Debug)]
pub(crate) struct Shared<T> {
    seg: Segment,
    lock: NonNull<RawLock>,
    data: NonNull<T>,
    len: usize,
    _t: PhantomData<T>,
}

// SAFETY: the elements are only reached through the lock, through volatile racy copies, or
// through atomics; the lock is a process-shared robust mutex; the segment is Send + Sync.
unsafe impl<T: Pod> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Pod> Sync for Shared<T> {}

impl<T: Pod> Shared<T> {
    fn options(kind: Kind, len: usize) -> Result<SegmentOptions, SegmentError> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|b| b.checked_add(data_offset::<T>()))
            .ok_or(SegmentError::InvalidSize {
                reason: "array length overflows",
            })?;
        Ok(SegmentOptions::new(kind)
            .type_tag(TypeTag::of::<T>())
            .capacity(len as u64)
            .payload_len(bytes))
    }

    fn init(init: Option<&[T]>) -> impl FnOnce(&Segment) -> Result<(), SegmentError> + '_ {
        move |seg| {
            // A new segment is zero-filled: its lock was never marked.
            if !seg.view::<RawLock>(0)?.init(false) {
                return Err(SegmentError::InvalidArgument {
                    reason: "the new segment's lock was already initialised",
                });
            }
            if let Some(values) = init {
                seg.write_bytes(data_offset::<T>(), bytemuck::cast_slice(values))?;
            }
            Ok(())
        }
    }

    /// Creates (named, or anonymous when `name` is `None`) a zero-filled segment, or one
    /// holding `init`.
    pub fn create(
        kind: Kind,
        name: Option<&str>,
        len: usize,
        init: Option<&[T]>,
    ) -> Result<Self, SegmentError> {
        Self::create_as(kind, name, len, init, false)
    }

    /// As [`create`](Self::create); `exclusive`: never reclaim a stale segment of that name
    /// (`AlreadyExists` instead, see `SegmentOptions::fail_if_exists`).
    pub fn create_as(
        kind: Kind,
        name: Option<&str>,
        len: usize,
        init: Option<&[T]>,
        exclusive: bool,
    ) -> Result<Self, SegmentError> {
        if len == 0 || std::mem::size_of::<T>() == 0 {
            return Err(SegmentError::InvalidSize {
                reason: "arrays need at least one element of non-zero size",
            });
        }
        let mut options = Self::options(kind, len)?;
        if exclusive {
            options = options.fail_if_exists();
        }
        let seg = match name {
            Some(name) => options.create_with(name, Self::init(init))?,
            None => options.anonymous_with(Self::init(init))?,
        };
        Self::wrap(seg)
    }

    /// Opens a named segment of `kind` holding `T`s.
    pub fn open(kind: Kind, name: &str) -> Result<Self, SegmentError> {
        let seg = SegmentOptions::new(kind)
            .type_tag(TypeTag::of::<T>())
            .open(name)?;
        Self::wrap(seg)
    }

    fn wrap(seg: Segment) -> Result<Self, SegmentError> {
        let len = seg.header().map_or(0, |h| h.capacity) as usize;
        let lock = NonNull::from(seg.view::<RawLock>(0)?);
        let need = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|b| b.checked_add(data_offset::<T>()));
        if need.is_none_or(|n| n > seg.len()) {
            return Err(SegmentError::CorruptHeader {
                reason: "array length does not fit the segment",
            });
        }
        let data = NonNull::new(seg.as_ptr().wrapping_add(data_offset::<T>()).cast::<T>()).ok_or(
            SegmentError::CorruptHeader {
                reason: "null payload",
            },
        )?;
        Ok(Shared {
            seg,
            lock,
            data,
            len,
            _t: PhantomData,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    pub fn data(&self) -> NonNull<T> {
        self.data
    }

    pub fn raw_lock(&self) -> &RawLock {
        // SAFETY: a checked view into the segment `self` owns; RawLock is ShmSafe.
        unsafe { self.lock.as_ref() }
    }

    /// Runs `f` on the elements under the lock (a short internal operation); a past owner
    /// death is an error.
    pub fn locked<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> Result<R, ArrayError> {
        match self.lock() {
            Ok(mut held) => Ok(f(held.data_mut())),
            Err(LockError::OwnerDied(_)) => Err(ArrayError::Inconsistent),
            Err(e) => Err(ArrayError::Lock(e.map(|_| ()))),
        }
    }

    /// Takes the lock: the elements are reachable through the returned [`Locked`] (and only
    /// there, for safe code) while it lives.
    pub fn lock(&self) -> Result<Locked<'_, T>, LockError<Locked<'_, T>>> {
        let wrap = |guard| Locked {
            guard,
            shared: self,
        };
        self.raw_lock().lock().map(wrap).map_err(|e| e.map(wrap))
    }
}

/// The lock of a [`Shared`], held: the one way safe code reaches the elements of a locked
/// `Array` or `Value`.
#[derive(Debug)]
pub(crate) struct Locked<'a, T> {
    pub(crate) guard: RawGuard<'a>,
    shared: &'a Shared<T>,
}

impl<T> Locked<'_, T> {
    /// The elements.
    pub fn data(&self) -> &[T] {
        // SAFETY: `len` initialised Pod elements lie at `data` inside the mapping (checked in
        // `wrap`); the lock is held, and every safe writer takes it, so nothing writes them
        // while this shared borrow of the holder lives.
        unsafe { std::slice::from_raw_parts(self.shared.data.as_ptr(), self.shared.len) }
    }

    /// The elements, to change.
    pub fn data_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `data`; the held lock gives exclusive access, and `&mut self` makes
        // this the only slice handed out at a time.
        unsafe { std::slice::from_raw_parts_mut(self.shared.data.as_ptr(), self.shared.len) }
    }
}
