//! `SegmentOptions`: what a segment is to be (kind, element type, capacity, size, mode,
//! timeouts, reclaim); creating one is in `create.rs`, opening one in `open.rs`.

use std::time::Duration;

use crate::header::payload_offset_for;
use crate::{Kind, SegmentError, TypeTag};

/// How long `open` waits, by default, for a creator that is still initialising.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// How to create or open a segment: kind, element type, capacity, size, mode and timeout.
///
/// ```
/// use mproc_segment::{Kind, SegmentOptions};
/// let seg = SegmentOptions::new(Kind::ARRAY).element::<f64>().capacity(1000).anonymous()?;
/// assert_eq!(seg.len(), 8000);
/// assert_eq!(seg.payload_offset(), 256);
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    pub(crate) kind: Kind,
    pub(crate) element: TypeTag,
    pub(crate) capacity: u64,
    pub(crate) payload_len: Option<usize>,
    pub(crate) mode: u32,
    pub(crate) open_timeout: Duration,
    pub(crate) check_type: bool,
    pub(crate) allow_foreign: bool,
    pub(crate) reclaim_stale: bool,
    pub(crate) reserve: Option<usize>,
}

impl SegmentOptions {
    /// Options for a segment of `kind` holding bytes; refine with the other methods.
    pub fn new(kind: Kind) -> SegmentOptions {
        SegmentOptions {
            kind,
            element: TypeTag::bytes(),
            capacity: 0,
            payload_len: None,
            mode: 0o600,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            check_type: true,
            allow_foreign: false,
            reclaim_stale: true,
            reserve: None,
        }
    }

    /// Options that open any mproc segment, whatever its kind and element type.
    pub fn any() -> SegmentOptions {
        SegmentOptions {
            check_type: false,
            ..SegmentOptions::new(Kind::RAW)
        }
    }

    /// The element type is `T`, fingerprinted by [`TypeTag::of`].
    pub fn element<T>(self) -> Self {
        self.type_tag(TypeTag::of::<T>())
    }

    /// The element type's fingerprint, for example [`TypeTag::named`].
    pub fn type_tag(mut self, tag: TypeTag) -> Self {
        self.element = tag;
        self
    }

    /// Number of elements (recorded in the header; the payload defaults to
    /// `capacity * size_of::<T>()` bytes).
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// Payload length in bytes, when it is not simply `capacity` elements.
    pub fn payload_len(mut self, len: usize) -> Self {
        self.payload_len = Some(len);
        self
    }

    /// Reserves only the first `bytes` of the payload when a named segment is created; the
    /// object reserves the rest as it first uses it, with
    /// [`Segment::reserve`](crate::Segment::reserve). By default every page is reserved at creation, so that a
    /// full `/dev/shm` fails `create` rather than raise SIGBUS at a later first touch; an
    /// object that reserves before it touches gets the same guarantee while holding only
    /// what it uses (a queue's body arena). Anonymous segments reserve nothing up front
    /// whatever this says: their pages cannot run out of room, only of memory.
    pub fn reserve_upfront(mut self, bytes: usize) -> Self {
        self.reserve = Some(bytes);
        self
    }

    /// File mode of a named segment (default `0o600`: only this user may open it). The umask
    /// does not apply: the mode is set exactly.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Lets `open` / `open_or_create` / `open_raw` accept an object that another user owns, or
    /// that group or others may write. By default such an object is refused with
    /// [`Untrusted`](SegmentError::Untrusted): whoever created it in advance could read
    /// everything written into it, change it, or truncate it under you.
    pub fn allow_foreign_owner(mut self) -> Self {
        self.allow_foreign = true;
        self
    }

    /// Makes `create` fail with [`AlreadyExists`](SegmentError::AlreadyExists) whenever the
    /// name exists. By default `create` (and `open_or_create`) first removes a *stale*
    /// segment of that name — this user's, whose creator is dead and that no live process
    /// maps, the rule `mproc gc` applies — so a service restarted after `kill -9` comes back
    /// without manual cleanup. Of creators racing for the same stale name exactly one
    /// creates; a live or mapped segment is never touched.
    pub fn fail_if_exists(mut self) -> Self {
        self.reclaim_stale = false;
        self
    }

    /// How long `open` waits for a creator still initialising (default 2 s).
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// (payload offset, payload length, total length), checked for overflow.
    pub(crate) fn sizes(&self) -> Result<(usize, usize, usize), SegmentError> {
        let align = self.element.align as usize;
        if !align.is_power_of_two() || align > 4096 {
            return Err(SegmentError::InvalidSize {
                reason: "element alignment must be a power of two of at most 4096",
            });
        }
        let payload_len = match self.payload_len {
            Some(len) => len,
            None => usize::try_from(self.capacity)
                .ok()
                .and_then(|c| c.checked_mul(self.element.size as usize))
                .ok_or(SegmentError::InvalidSize {
                    reason: "capacity * element size overflows",
                })?,
        };
        if payload_len == 0 {
            return Err(SegmentError::InvalidSize {
                reason: "the payload must not be empty",
            });
        }
        let offset = payload_offset_for(align);
        let total = offset
            .checked_add(payload_len)
            .filter(|&t| t <= i64::MAX as usize)
            .ok_or(SegmentError::InvalidSize {
                reason: "segment length overflows",
            })?;
        Ok((offset, payload_len, total))
    }
}
