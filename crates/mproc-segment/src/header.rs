//! The segment header: layout, kinds and type fingerprints.
//!
//! # Layout (format version 1)
//!
//! Every mproc segment starts with a 256-byte header; the payload starts at
//! [`Header::payload_offset`], which is 256 for every element type aligned to at most 256 bytes
//! (so Python can attach by name and read the payload at byte 256). All integers are native
//! endian.
//!
//! | offset | size | field | written |
//! |---|---|---|---|
//! | 0 | 8 | magic `b"MPROCSEG"` | first, by the creator (atomic) |
//! | 8 | 4 | state: 0 uninitialised, 1 initialising, 2 ready | atomic; Ready is a Release store |
//! | 12 | 4 | creator pid | atomic, right after the magic |
//! | 16 | 4 | format version | before Ready, never after |
//! | 20 | 4 | kind tag | before Ready |
//! | 24 | 4 | element size | before Ready |
//! | 28 | 4 | element alignment | before Ready |
//! | 32 | 8 | payload offset | before Ready |
//! | 40 | 8 | payload length | before Ready |
//! | 48 | 8 | total length | before Ready |
//! | 56 | 8 | capacity (elements; meaning depends on the kind) | before Ready |
//! | 64 | 8 | type hash (FNV-1a of name, size, align) | before Ready |
//! | 72 | 8 | creator start time (clock ticks after boot) | before Ready |
//! | 80 | 4 | type name length | before Ready |
//! | 84 | 4 | creator's peer token (see [`liveness`](crate::liveness)); 0 if unknown | before Ready |
//! | 88 | 128 | type name, UTF-8, truncated to 128 bytes | before Ready |
//! | 216 | 40 | reserved (0) | |
//!
//! # Protocol
//! The creator stores the magic and its pid, writes every other field, then stores
//! `state = Ready` with Release. An opener reads the fields only after loading `Ready` with
//! Acquire (SYNC POINT: the Release store in `Segment::publish` pairs with the Acquire load in
//! `SegmentOptions::attach`), copies them once into a [`Header`] snapshot and never reads the
//! shared copy again, so a peer that scribbles on the header later cannot make us read out of
//! bounds.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::ProcessId;

/// `b"MPROCSEG"` read as a native-endian `u64`.
pub const MAGIC: u64 = u64::from_ne_bytes(*b"MPROCSEG");
/// The header format this build writes and accepts.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the header; the payload of a segment whose element alignment is at most this many
/// bytes starts exactly here.
pub const HEADER_LEN: usize = 256;
/// Bytes of the type name kept in the header.
pub const TYPE_NAME_CAP: usize = 128;

pub(crate) const STATE_INITIALIZING: u32 = 1;
pub(crate) const STATE_READY: u32 = 2;

/// The shared header as it lies in memory. Only the atomics are touched while others may be
/// looking; the plain fields are written once before Ready.
#[repr(C)]
pub(crate) struct RawHeader {
    pub magic: AtomicU64,
    pub state: AtomicU32,
    pub creator_pid: AtomicU32,
    pub fields: HeaderFields,
}

/// The plain (write-once) part of the header, starting at offset 16.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct HeaderFields {
    pub version: u32,
    pub kind: u32,
    pub elem_size: u32,
    pub elem_align: u32,
    pub payload_offset: u64,
    pub payload_len: u64,
    pub total_len: u64,
    pub capacity: u64,
    pub type_hash: u64,
    pub creator_start: u64,
    pub type_name_len: u32,
    pub creator_peer: u32,
    pub type_name: [u8; TYPE_NAME_CAP],
    pub reserved1: [u8; 40],
}

impl HeaderFields {
    /// The fields from the bytes that follow the magic, state and pid words (`pread` of a
    /// file, for tools that do not map it). Missing bytes read as zero.
    pub(crate) fn from_bytes(b: &[u8]) -> HeaderFields {
        let mut at = 0usize;
        let mut take = |n: usize| -> [u8; 8] {
            let mut out = [0u8; 8];
            if let Some(src) = b.get(at..at + n) {
                out[..n].copy_from_slice(src);
            }
            at += n;
            out
        };
        let u32_of = |a: [u8; 8]| u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
        let version = u32_of(take(4));
        let kind = u32_of(take(4));
        let elem_size = u32_of(take(4));
        let elem_align = u32_of(take(4));
        let payload_offset = u64::from_ne_bytes(take(8));
        let payload_len = u64::from_ne_bytes(take(8));
        let total_len = u64::from_ne_bytes(take(8));
        let capacity = u64::from_ne_bytes(take(8));
        let type_hash = u64::from_ne_bytes(take(8));
        let creator_start = u64::from_ne_bytes(take(8));
        let type_name_len = u32_of(take(4));
        let creator_peer = u32_of(take(4));
        let mut type_name = [0u8; TYPE_NAME_CAP];
        if let Some(src) = b.get(at..at + TYPE_NAME_CAP) {
            type_name.copy_from_slice(src);
        }
        HeaderFields {
            version,
            kind,
            elem_size,
            elem_align,
            payload_offset,
            payload_len,
            total_len,
            capacity,
            type_hash,
            creator_start,
            type_name_len,
            creator_peer,
            type_name,
            reserved1: [0; 40],
        }
    }
}

const _: () = assert!(std::mem::size_of::<RawHeader>() == HEADER_LEN);
const _: () = assert!(std::mem::align_of::<RawHeader>() == 8);
const _: () = assert!(std::mem::offset_of!(RawHeader, fields) == 16);
const _: () = assert!(std::mem::offset_of!(HeaderFields, type_name) == 88 - 16);

/// What a segment holds. Each mproc crate tags its segments so that opening a queue as an
/// array (say) is a [`KindMismatch`](crate::SegmentError::KindMismatch), not a misread.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kind(pub u32);

impl Kind {
    /// Plain bytes (`Segment::create`).
    pub const RAW: Kind = Kind(1);
    /// A queue (`mproc-queue`).
    pub const QUEUE: Kind = Kind(2);
    /// A shared array (`mproc-array`).
    pub const ARRAY: Kind = Kind(3);
    /// A shared value (`mproc-array`).
    pub const VALUE: Kind = Kind(4);
    /// A lock (`mproc-sync`).
    pub const LOCK: Kind = Kind(5);
    /// A re-entrant lock (`mproc-sync`).
    pub const RLOCK: Kind = Kind(6);
    /// A semaphore (`mproc-sync`).
    pub const SEMAPHORE: Kind = Kind(7);
    /// An event (`mproc-sync`).
    pub const EVENT: Kind = Kind(8);
    /// A condition variable with its lock (`mproc-sync`).
    pub const CONDITION: Kind = Kind(9);
    /// A barrier (`mproc-sync`).
    pub const BARRIER: Kind = Kind(10);
    /// A pool's internal state (`mproc-pool`).
    pub const POOL: Kind = Kind(11);
    // 12 was a separate segment for a `Queue`'s out-of-line message bodies, retired when
    // bodies moved into the queue's own arena. It is never reused, so an old segment still
    // shows as `kind#12` rather than as something it is not.
    /// An `AtomicValue` (mproc-array): an integer every access to which is atomic.
    pub const ATOMIC_VALUE: Kind = Kind(13);
    /// A broadcast ring (mproc-queue's `Broadcast`): every subscriber reads every message.
    pub const BROADCAST: Kind = Kind(14);
    /// A shared hash map (mproc-queue's `Dict` and `BytesDict`).
    pub const DICT: Kind = Kind(15);

    /// A short human-readable name (`"queue"`, `"array"`, ...; `"kind#N"` for unknown tags).
    pub fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Kind::RAW => "raw",
            Kind::QUEUE => "queue",
            Kind::ARRAY => "array",
            Kind::VALUE => "value",
            Kind::LOCK => "lock",
            Kind::RLOCK => "rlock",
            Kind::SEMAPHORE => "semaphore",
            Kind::EVENT => "event",
            Kind::CONDITION => "condition",
            Kind::BARRIER => "barrier",
            Kind::POOL => "pool",
            Kind::ATOMIC_VALUE => "atomic",
            Kind::BROADCAST => "broadcast",
            Kind::DICT => "dict",
            Kind(n) => return Cow::Owned(format!("kind#{n}")),
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kind({})", self.name())
    }
}

/// The fingerprint of an element type: a name plus size and alignment.
///
/// By default the name is [`std::any::type_name`], which is the same in every process running
/// the same binary but may change between compiler versions or crate layouts. Processes built
/// separately should agree on an explicit name with [`TypeTag::named`] (for example
/// `"myapp::Job/v2"`).
///
/// ```
/// use mproc_segment::TypeTag;
/// let a = TypeTag::of::<u64>();
/// assert_eq!((a.size, a.align), (8, 8));
/// assert_ne!(a, TypeTag::of::<i64>());
/// assert_eq!(TypeTag::named::<u64>("tick"), TypeTag::named::<u64>("tick"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TypeTag {
    /// The type's stable name.
    pub name: Cow<'static, str>,
    /// `size_of::<T>()`.
    pub size: u32,
    /// `align_of::<T>()`.
    pub align: u32,
}

impl TypeTag {
    /// The tag of `T` under its `std::any::type_name`.
    pub fn of<T>() -> TypeTag {
        TypeTag::named::<T>(std::any::type_name::<T>())
    }

    /// The tag of `T` under an explicit, user-chosen name.
    pub fn named<T>(name: impl Into<Cow<'static, str>>) -> TypeTag {
        TypeTag {
            name: name.into(),
            size: std::mem::size_of::<T>() as u32,
            align: std::mem::align_of::<T>() as u32,
        }
    }

    /// A tag for untyped bytes (`u8`).
    pub fn bytes() -> TypeTag {
        TypeTag::of::<u8>()
    }

    /// The name as stored: truncated to [`TYPE_NAME_CAP`] bytes on a character boundary.
    pub(crate) fn stored_name(&self) -> &str {
        let mut end = self.name.len().min(TYPE_NAME_CAP);
        while !self.name.is_char_boundary(end) {
            end -= 1;
        }
        &self.name[..end]
    }

    /// FNV-1a over the stored name, size and alignment.
    pub fn hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes = self
            .stored_name()
            .bytes()
            .chain(self.size.to_le_bytes())
            .chain(self.align.to_le_bytes());
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
}

impl fmt::Display for TypeTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (size {}, align {})",
            self.name, self.size, self.align
        )
    }
}

/// A validated copy of a segment's header, taken when the segment was created or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version (always [`FORMAT_VERSION`] once validated).
    pub version: u32,
    /// What the segment holds.
    pub kind: Kind,
    /// The element type's fingerprint.
    pub element: TypeTag,
    /// Element capacity; its meaning depends on the kind (slots of a queue, length of an
    /// array).
    pub capacity: u64,
    /// Byte offset of the payload from the start of the segment.
    pub payload_offset: u64,
    /// Length of the payload in bytes.
    pub payload_len: u64,
    /// Length of the whole segment (header, padding and payload) in bytes.
    pub total_len: u64,
    /// The creating process, as its own pid namespace numbers it (for display: a pid means
    /// nothing to a process in another namespace).
    pub creator: ProcessId,
    /// The creator's peer token ([`liveness`](crate::liveness)): whether the creator still
    /// runs is asked with it, in any namespace. 0 if unknown.
    pub creator_peer: u32,
}

impl Header {
    pub(crate) fn type_hash(&self) -> u64 {
        self.element.hash()
    }

    /// Builds the fields a creator writes.
    pub(crate) fn to_fields(&self) -> HeaderFields {
        let name = self.element.stored_name().as_bytes();
        let mut type_name = [0u8; TYPE_NAME_CAP];
        type_name[..name.len()].copy_from_slice(name);
        HeaderFields {
            version: self.version,
            kind: self.kind.0,
            elem_size: self.element.size,
            elem_align: self.element.align,
            payload_offset: self.payload_offset,
            payload_len: self.payload_len,
            total_len: self.total_len,
            capacity: self.capacity,
            type_hash: self.type_hash(),
            creator_start: self.creator.start_time,
            type_name_len: name.len() as u32,
            creator_peer: self.creator_peer,
            type_name,
            reserved1: [0; 40],
        }
    }

    /// Validates fields read from a ready segment of `file_len` bytes.
    pub(crate) fn from_fields(
        f: &HeaderFields,
        creator_pid: u32,
        file_len: u64,
    ) -> Result<Header, crate::SegmentError> {
        use crate::SegmentError::*;
        if f.version != FORMAT_VERSION {
            return Err(VersionMismatch {
                expected: FORMAT_VERSION,
                found: f.version,
            });
        }
        if f.total_len > file_len {
            return Err(Truncated {
                expected: f.total_len,
                found: file_len,
            });
        }
        let end = f
            .payload_offset
            .checked_add(f.payload_len)
            .ok_or(CorruptHeader {
                reason: "payload offset + length overflows",
            })?;
        if f.payload_offset < HEADER_LEN as u64 || end > f.total_len {
            return Err(CorruptHeader {
                reason: "payload lies outside the segment",
            });
        }
        if f.elem_align == 0 || !f.elem_align.is_power_of_two() {
            return Err(CorruptHeader {
                reason: "element alignment is not a power of two",
            });
        }
        if f.payload_offset % u64::from(f.elem_align) != 0 {
            return Err(CorruptHeader {
                reason: "payload is misaligned for its element type",
            });
        }
        let name_len = (f.type_name_len as usize).min(TYPE_NAME_CAP);
        let name = String::from_utf8_lossy(&f.type_name[..name_len]).into_owned();
        let element = TypeTag {
            name: Cow::Owned(name),
            size: f.elem_size,
            align: f.elem_align,
        };
        if element.hash() != f.type_hash {
            return Err(CorruptHeader {
                reason: "type hash does not match the type name",
            });
        }
        Ok(Header {
            version: f.version,
            kind: Kind(f.kind),
            element,
            capacity: f.capacity,
            payload_offset: f.payload_offset,
            payload_len: f.payload_len,
            total_len: f.total_len,
            creator: ProcessId {
                pid: creator_pid,
                start_time: f.creator_start,
            },
            creator_peer: f.creator_peer,
        })
    }
}

/// The payload offset for elements of alignment `align`: the header length, rounded up.
pub(crate) fn payload_offset_for(align: usize) -> usize {
    HEADER_LEN.next_multiple_of(align.max(1))
}
