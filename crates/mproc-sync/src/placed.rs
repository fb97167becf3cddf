//! A primitive that lives at the start of its own segment (named or anonymous).

use std::marker::PhantomData;
use std::ptr::NonNull;

use mproc_segment::{Kind, Segment, SegmentError, SegmentOptions, ShmSafe, TypeTag};

/// A shared-memory primitive that can own a segment: its kind tag and its stable type name
/// (stable across separately built binaries, unlike `type_name`).
pub(crate) trait Primitive: ShmSafe {
    const KIND: Kind;
    const TYPE_NAME: &'static str;
}

/// What a creator's initialiser returns after marking a fresh primitive: it must have been
/// unmarked (a new segment is zero-filled), or the segment is not the creator's to set up.
pub(crate) fn fresh(initialised: bool) -> Result<(), SegmentError> {
    if initialised {
        Ok(())
    } else {
        Err(SegmentError::InvalidArgument {
            reason: "the new segment's primitive was already initialised",
        })
    }
}

/// Owns a segment whose payload starts with a `P`.
#[derive(Debug)]
pub(crate) struct Placed<P> {
    seg: Segment,
    /// Points at the `P` at payload offset 0; valid as long as `seg` lives (the mapping never
    /// moves).
    ptr: NonNull<P>,
    _p: PhantomData<P>,
}

// SAFETY: `P: ShmSafe` implies `P: Sync` and that every access through `&P` is designed for
// concurrent use from other processes, hence also from other threads; the segment itself is
// Send + Sync.
unsafe impl<P: Primitive> Send for Placed<P> {}
// SAFETY: as above.
unsafe impl<P: Primitive> Sync for Placed<P> {}

impl<P: Primitive> Placed<P> {
    fn options() -> SegmentOptions {
        SegmentOptions::new(P::KIND)
            .type_tag(TypeTag::named::<P>(P::TYPE_NAME))
            .capacity(1)
    }

    fn wrap(seg: Segment) -> Result<Self, SegmentError> {
        let ptr = NonNull::from(seg.view::<P>(0)?);
        Ok(Placed {
            seg,
            ptr,
            _p: PhantomData,
        })
    }

    /// An anonymous segment holding a `P` initialised by `init` (for sharing with children).
    pub fn anonymous(
        init: impl FnOnce(&P) -> Result<(), SegmentError>,
    ) -> Result<Self, SegmentError> {
        let seg = Self::options().anonymous_with(|seg| init(seg.view::<P>(0)?))?;
        Self::wrap(seg)
    }

    /// A named segment holding a `P` initialised by `init` before anyone can open it.
    pub fn create(
        name: &str,
        init: impl FnOnce(&P) -> Result<(), SegmentError>,
    ) -> Result<Self, SegmentError> {
        Self::create_as(name, false, init)
    }

    /// As [`create`](Self::create); `exclusive`: never reclaim a stale segment of that name.
    pub fn create_as(
        name: &str,
        exclusive: bool,
        init: impl FnOnce(&P) -> Result<(), SegmentError>,
    ) -> Result<Self, SegmentError> {
        let mut options = Self::options();
        if exclusive {
            options = options.fail_if_exists();
        }
        let seg = options.create_with(name, |seg| init(seg.view::<P>(0)?))?;
        Self::wrap(seg)
    }

    /// Opens a named segment holding a `P`, checking its kind and type.
    pub fn open(name: &str) -> Result<Self, SegmentError> {
        Self::wrap(Self::options().open(name)?)
    }

    pub fn get(&self) -> &P {
        // SAFETY: `ptr` came from a checked `Segment::view` of `self.seg`, whose mapping lives
        // as long as `self`; `P: ShmSafe` makes a shared reference sound under concurrent
        // access from other processes.
        unsafe { self.ptr.as_ref() }
    }

    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}
