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
            let lock = seg.view::<RawLock>(0)?;
            // SAFETY: this runs in the creator's initialiser, before the segment is published:
            // nobody else can reach the lock.
            unsafe { lock.init(false) };
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

    /// Takes the lock for a short internal operation; a past owner death is an error.
    pub fn locked<R>(&self, f: impl FnOnce() -> R) -> Result<R, ArrayError> {
        match self.raw_lock().lock() {
            Ok(_guard) => Ok(f()),
            Err(LockError::OwnerDied(_guard)) => Err(ArrayError::Inconsistent),
            Err(e) => Err(ArrayError::Lock(e.map(|_| ()))),
        }
    }

    pub fn lock_raw(&self) -> Result<RawGuard<'_>, LockError<RawGuard<'_>>> {
        self.raw_lock().lock()
    }
}
