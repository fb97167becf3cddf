//! The error of creating, opening and viewing anything in shared memory: every segment-backed
//! object of mproc (queues, arrays, values, locks, events, semaphores, barriers) is created
//! and opened through a segment, and fails with this type there. What the objects do once open
//! has errors of its own (`PutError`, `GetError`, `LockError`, `ArrayError`, ...).

pub use rustix::io::Errno;

/// Why creating, opening or viewing a segment failed.
///
/// Every variant is a precise, recoverable condition: nothing in this crate panics on a bad
/// name, a foreign file or a header that does not match what the caller expected.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SegmentError {
    /// No segment of this name exists.
    #[error("shared-memory segment {name:?} does not exist")]
    NotFound {
        /// The name that was looked up.
        name: String,
    },
    /// `create` found a segment of this name already there (creation is `O_EXCL`).
    #[error("shared-memory segment {name:?} already exists")]
    AlreadyExists {
        /// The name that was taken.
        name: String,
    },
    /// The segment exists but its mode does not let this process open it.
    #[error("permission denied opening shared-memory segment {name:?}")]
    PermissionDenied {
        /// The name that was refused.
        name: String,
    },
    /// This process could not register in its user's liveness roll (see
    /// [`liveness`](crate::liveness)): without a token its peers could not tell it from a
    /// dead process, so no shared object is opened.
    #[error("cannot register this process's liveness token: {reason}")]
    Liveness {
        /// What went wrong.
        reason: &'static str,
    },
    /// The name is not a valid segment name (see [`crate::validate_name`]).
    #[error("invalid segment name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// What rule it breaks.
        reason: &'static str,
    },
    /// A parameter of the object to create is out of its range (a barrier with no party, a
    /// bounded semaphore with no permit); sizes have [`InvalidSize`](Self::InvalidSize).
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A requested size is zero or too large to represent.
    #[error("invalid segment size: {reason}")]
    InvalidSize {
        /// What is wrong with the size.
        reason: &'static str,
    },
    /// The segment does not start with mproc's magic number: it was made by someone else.
    #[error(
        "segment is not an mproc segment (magic {found:#018x}); use open_raw for foreign segments"
    )]
    NotMproc {
        /// The first eight bytes found, read as a native-endian `u64`.
        found: u64,
    },
    /// The segment was written by an incompatible version of mproc's header format.
    #[error("segment header format version {found}, this build understands {expected}")]
    VersionMismatch {
        /// The version this build writes and reads.
        expected: u32,
        /// The version found in the segment.
        found: u32,
    },
    /// The segment holds a different kind of object (a queue opened as an array, say).
    #[error("segment holds a {found}, expected a {expected}")]
    KindMismatch {
        /// The kind the caller asked for.
        expected: crate::Kind,
        /// The kind recorded in the header.
        found: crate::Kind,
    },
    /// The segment's element type differs from the caller's.
    #[error("segment element type is {found}, expected {expected}")]
    TypeMismatch {
        /// The caller's type, as `name (size N, align A)`.
        expected: String,
        /// The type recorded in the header, in the same form.
        found: String,
    },
    /// The file is shorter than its header says (or than a header at all).
    #[error("segment is truncated: {found} bytes, at least {expected} needed")]
    Truncated {
        /// How many bytes are needed.
        expected: u64,
        /// How many bytes the file has.
        found: u64,
    },
    /// The header is self-contradictory (offsets that overflow or point outside the segment).
    #[error("segment header is corrupt: {reason}")]
    CorruptHeader {
        /// Which consistency check failed.
        reason: &'static str,
    },
    /// The creator did not finish initialising within the open timeout (or died before it did).
    #[error("segment was not ready within the open timeout{}", if *.creator_dead { " (its creator is dead)" } else { "" })]
    NotReady {
        /// Whether the creator is known to have died before marking the segment ready.
        creator_dead: bool,
    },
    /// There is not enough space in the shared-memory filesystem for the segment.
    #[error("not enough space in shared memory for {requested} bytes")]
    OutOfSpace {
        /// How many bytes were requested.
        requested: u64,
    },
    /// A view into the payload lies outside it or is misaligned for its type.
    #[error(
        "view of {len} bytes at offset {offset} (align {align}) does not fit a {payload}-byte payload"
    )]
    OutOfBounds {
        /// Offset into the payload.
        offset: usize,
        /// Length of the view in bytes.
        len: usize,
        /// Alignment the view needs.
        align: usize,
        /// Length of the payload.
        payload: usize,
    },
    /// The object exists but does not belong to this process's effective user, or others may
    /// write it: someone else may have created it in advance to read or change what you put
    /// in it. `SegmentOptions::allow_foreign_owner()` opens it anyway.
    #[error(
        "segment {name:?} is owned by uid {owner} with mode {mode:#o}: not a private segment of this user (SegmentOptions::allow_foreign_owner to open it anyway)"
    )]
    Untrusted {
        /// The segment's name.
        name: String,
        /// Its owner's uid.
        owner: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// The name is not a regular file (a directory, FIFO, socket or device planted there).
    #[error("{name:?} is not a regular file")]
    NotRegular {
        /// The name.
        name: String,
    },
    /// Any other operating-system error, with the call that returned it.
    #[error("{call} failed: {errno}")]
    Io {
        /// The system call or library function that failed.
        call: &'static str,
        /// The error number it returned.
        errno: Errno,
    },
}

impl SegmentError {
    pub(crate) fn io(call: &'static str, errno: Errno) -> Self {
        SegmentError::Io { call, errno }
    }

    /// Maps the errno of `shm_open` / `shm_unlink` on `name` to the precise variant.
    pub(crate) fn from_open_errno(call: &'static str, name: &str, errno: Errno) -> Self {
        match errno {
            Errno::NOENT => SegmentError::NotFound { name: name.into() },
            Errno::EXIST => SegmentError::AlreadyExists { name: name.into() },
            Errno::ACCESS | Errno::PERM => SegmentError::PermissionDenied { name: name.into() },
            Errno::NOSPC | Errno::DQUOT => SegmentError::OutOfSpace { requested: 0 },
            Errno::NAMETOOLONG | Errno::INVAL => SegmentError::InvalidName {
                name: name.into(),
                reason: "rejected by the operating system",
            },
            e => SegmentError::io(call, e),
        }
    }
}

/// The [`Errno`] of an I/O error, as mproc's errors carry it (`IO` for an error that carries
/// no OS code): the one place errors from `std` and the system layer (rustix) meet.
///
/// ```
/// use mproc_segment::Errno;
/// let e = std::io::Error::from_raw_os_error(28); // ENOSPC
/// assert_eq!(mproc_segment::errno_of(&e), Errno::NOSPC);
/// assert_eq!(mproc_segment::errno_of(&std::io::Error::other("no code")), Errno::IO);
/// ```
pub fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}
