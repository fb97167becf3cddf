//! Errors of arrays and values.

use mproc_segment::SegmentError;

/// Why an array or value operation failed. Nothing was changed when it did.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArrayError {
    /// An index past the end.
    #[error("index {index} out of range for length {len}")]
    OutOfRange {
        /// The index asked for.
        index: usize,
        /// The array's length.
        len: usize,
    },
    /// A slice of the wrong length for a whole-array copy.
    #[error("length mismatch: the array has {expected} elements, the slice {found}")]
    LengthMismatch {
        /// The array's length.
        expected: usize,
        /// The slice's length.
        found: usize,
    },
    /// A process died while holding the array's lock, and nobody has declared the data
    /// consistent since: take [`lock()`](crate::Array::lock), check or repair the data, then
    /// call `make_consistent()` on the guard.
    #[error("a process died while holding the lock; the data may be inconsistent")]
    Inconsistent,
    /// The lock could not be taken (an unexpected system error).
    #[error("lock failed")]
    Lock(#[source] mproc_sync::LockError<()>),
    /// A raw view that does not fit its segment (length or alignment).
    #[error(transparent)]
    Segment(#[from] SegmentError),
}
