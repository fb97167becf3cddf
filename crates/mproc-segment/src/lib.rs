//! Shared-memory segments for mproc: POSIX `shm_open` objects and anonymous `memfd`s, mapped
//! with `mmap`, each starting with a versioned header that records what the segment holds.
//!
//! This is the base layer of mproc and the one crate that maps memory and turns raw pointers
//! into references. The layers above (`mproc-sync`, `mproc-queue`, `mproc-array`,
//! `mproc-pool`) place `#[repr(C)]` structures in a segment's payload and reach them through
//! [`Segment::view`], which checks bounds and alignment.
//!
//! Opening checks everything a peer could get wrong — magic, format version, kind, element
//! type, lengths — and reports each mismatch as a [`SegmentError`] variant.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use mproc_segment::{Kind, Segment, SegmentOptions};
//!
//! let name = format!("mproc-doc-lib-{}", std::process::id());
//! let seg = Segment::create_for::<u64>(&name, Kind::ARRAY, 16)?;
//! let counter: &AtomicU64 = seg.view(0)?;
//! counter.fetch_add(1, Ordering::Relaxed);
//!
//! // In another process: the same name and type open it; a different type is refused.
//! let again = Segment::open_for::<u64>(&name, Kind::ARRAY)?;
//! assert_eq!(again.view::<AtomicU64>(0)?.load(Ordering::Relaxed), 1);
//! assert!(Segment::open_for::<f64>(&name, Kind::ARRAY).is_err());
//! # Ok::<(), mproc_segment::SegmentError>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

/// Reports a slow-path event (a dead peer's slot recovered, a lock taken over, a worker
/// replaced) as a `tracing` warning with target `"mproc"` when the calling crate is built
/// with its `tracing` feature; expands to nothing otherwise. The arguments are those of
/// `tracing::warn!` after the target; without the feature they are not evaluated.
#[doc(hidden)]
#[macro_export]
macro_rules! slow_path_event {
    ($($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        {
            tracing::warn!(target: "mproc", $($arg)*);
        }
    };
}

pub mod atomic_copy;
mod create;
mod ends;
mod error;
mod header;
pub mod liveness;
mod name;
mod ofd;
mod open;
mod options;
mod process;
mod process_cell;
mod segment;
mod shm_dir;
mod view;

pub use ends::End;
pub use error::{Errno, SegmentError, errno_of};
pub use header::{FORMAT_VERSION, HEADER_LEN, Header, Kind, MAGIC, TYPE_NAME_CAP, TypeTag};
pub use name::{MAX_NAME_LEN, validate_name};
pub use options::{DEFAULT_OPEN_TIMEOUT, SegmentOptions};
pub use process::{OwnThread, ProcStat, ProcessId, current_pid, monotonic_ms, resident_bytes};
pub use process_cell::ProcessCell;
pub use segment::{Segment, SegmentInfo};
pub use shm_dir::{Peek, PeekError, SHM_DIR, in_use, mapped_by, peek, remove_stale};
pub use view::ShmSafe;
