//! Typed shared arrays and values — Python's `multiprocessing.Array`, `Value`, `RawArray` —
//! over mproc segments, readable from Python by name.
//!
//! - [`Array<T: Pod>`](Array): fixed length, zero-filled or copied from a slice, every safe
//!   access under a robust lock; [`Array::lock`] for many accesses at once.
//! - [`Value<T: Pod>`](Value): one value, `get`/`set`/`update` under the lock.
//! - [`AtomicValue<T>`](AtomicValue): one integer, every access atomic, no lock.
//! - [`RawArray<T>`](RawArray): a lock-free typed view of any segment, for memory made by
//!   Python's `shared_memory`.
//!
//! **Python.** The elements of an `Array`/`Value` whose element alignment is at most 64 start
//! at byte [`PYTHON_OFFSET`] (320) of the shared-memory object:
//!
//! ```python
//! from multiprocessing import shared_memory, resource_tracker
//! shm = shared_memory.SharedMemory(name="grid")            # the Rust name, no leading '/'
//! resource_tracker.unregister(shm._name, "shared_memory")  # Rust owns it: never unlink it
//! values = shm.buf[320:320 + 8 * n].cast("d")              # or numpy.frombuffer(..., offset=320)
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

mod array;
mod error;
mod shared;
mod value;

pub use array::{Array, ArrayGuard, RawArray};
pub use error::ArrayError;
pub use shared::{DATA_OFFSET, PYTHON_OFFSET};
pub use value::{AtomicInt, AtomicValue, Value, ValueGuard};
