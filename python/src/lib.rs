//! `mproc._native`: the Rust half of the `mproc` Python package (the Python half, in
//! `python/mproc/`, gives it multiprocessing's API).
//!
//! Every blocking call waits with the GIL released, in slices of at most 50 ms (`SLICE`), and checks
//! for signals between slices, so Ctrl-C interrupts a blocked `get` or `acquire` promptly
//! (`KeyboardInterrupt`), as it does in `multiprocessing`.
//!
//! Shared memory is reached zero-copy through addresses that the Python half wraps in ctypes
//! objects, whose memoryviews Python code uses: arrays and values hold their handle, so the
//! mapping outlives every view; a queue's loans end only once no view of their memory is
//! left (`mproc._loans`), so no view ever points at memory the queue reuses.

use std::time::{Duration, Instant};

use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyPermissionError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;

mod array;
mod cbor;
mod conn;
mod dict;
mod queue;
mod sync;

create_exception!(
    _native,
    OwnerDied,
    PyRuntimeError,
    "A lock was acquired, but its previous holder died holding it: the data it protects may \
     be half-updated. The lock is held by the caller. Raised once: later acquisitions succeed."
);

/// The longest one GIL-free wait lasts before the caller checks for signals.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// A Python `timeout` argument: `None` waits forever; a negative number is 0, as in
/// `multiprocessing`.
pub(crate) fn deadline(block: bool, timeout: Option<f64>) -> PyResult<Option<Option<Instant>>> {
    if !block {
        return Ok(None);
    }
    match timeout {
        None => Ok(Some(None)),
        Some(t) if t.is_nan() => Err(PyValueError::new_err("'timeout' must be a number")),
        // multiprocessing treats a negative timeout as 0: one try.
        Some(t) => Ok(Some(Some(
            Instant::now()
                + Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::from_secs(1 << 40)),
        ))),
    }
}

/// Runs `step(slice)` with the GIL released until it returns `Some`, checking signals between
/// slices. `wait`: `None` tries once; `Some(None)` waits forever; `Some(Some(t))` until `t`.
/// `Ok(None)` when the wait ended without a result.
pub(crate) fn waiting<R: Send>(
    py: Python<'_>,
    wait: Option<Option<Instant>>,
    mut step: impl FnMut(Duration) -> Option<R> + Send,
) -> PyResult<Option<R>> {
    let Some(until) = wait else {
        return Ok(step(Duration::ZERO));
    };
    loop {
        let slice = until.map_or(SLICE, |d| {
            d.saturating_duration_since(Instant::now()).min(SLICE)
        });
        if let Some(r) = py.detach(|| step(slice)) {
            return Ok(Some(r));
        }
        py.check_signals()?;
        if until.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

/// A segment error as the Python exception a user expects (`FileNotFoundError` for a name
/// that does not exist, `ValueError` for a wrong type or size, ...).
pub(crate) fn segment_error(e: mproc_segment::SegmentError) -> PyErr {
    use mproc_segment::SegmentError as E;
    let msg = e.to_string();
    match e {
        E::NotFound { .. } => PyFileNotFoundError::new_err(msg),
        E::AlreadyExists { .. } => PyFileExistsError::new_err(msg),
        E::PermissionDenied { .. } => PyPermissionError::new_err(msg),
        E::Io { .. } => pyo3::exceptions::PyOSError::new_err(msg),
        E::OutOfSpace { .. } => no_space(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// `OSError(ENOSPC)`: shared memory (`/dev/shm`, or its size limit) is full.
pub(crate) fn no_space(msg: String) -> PyErr {
    pyo3::exceptions::PyOSError::new_err((28, msg))
}

/// The `mproc._native` module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("OwnerDied", m.py().get_type::<OwnerDied>())?;
    queue::register(m)?;
    sync::register(m)?;
    array::register(m)?;
    dict::register(m)?;
    conn::register(m)?;
    cbor::register(m)?;
    Ok(())
}
