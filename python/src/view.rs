//! `memoryview`s over shared memory, handed to Python code for the length of one call.

use std::os::raw::c_char;

use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;

const PYBUF_READ: i32 = 0x100;
const PYBUF_WRITE: i32 = 0x200;

/// A `memoryview` of the `len` bytes at `ptr` (format `B`), writable or read-only.
///
/// # Safety
/// The bytes must stay mapped, and (if `writable`) be this process's alone to write, until
/// [`release`] succeeded on the view, or for good if it fails.
pub(crate) unsafe fn over<'py>(
    py: Python<'py>,
    ptr: *const u8,
    len: usize,
    writable: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let flags = if writable { PYBUF_WRITE } else { PYBUF_READ };
    let len = isize::try_from(len).map_err(|_| PyBufferError::new_err("message too large"))?;
    // SAFETY: `ptr` is valid for `len` bytes for as long as the caller promised; the call
    // only records the pointer (no owner object: `release` ends the view's access).
    let raw = unsafe { pyo3::ffi::PyMemoryView_FromMemory(ptr as *mut c_char, len, flags) };
    // SAFETY: a new reference or NULL with an exception set, as the C API documents.
    unsafe { Bound::from_owned_ptr_or_err(py, raw) }
}

/// Ends `view`'s access to its memory (`memoryview.release()`). Fails with `BufferError` when a
/// view derived from it (a slice, a `cast`, a numpy array) is still alive: the memory must
/// then stay mapped for good, which the caller ensures by keeping its owner alive.
pub(crate) fn release(view: &Bound<'_, PyAny>) -> PyResult<()> {
    view.call_method0("release").map(drop).map_err(|e| {
        PyBufferError::new_err(format!(
            "a view of a queue message outlived its call ({e}): release every slice or cast \
             of it before returning; the handle now stays mapped until the process exits"
        ))
    })
}
