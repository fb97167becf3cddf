//! `Pipe()`'s connections: mproc's `Connection` (two shared-memory rings and an end whose
//! liveness the kernel keeps). The Python half (`mproc.Connection`) pickles objects and
//! passes the descriptors to spawned processes.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use mproc_queue::{Connection, ConnectionFds, GetError, PutError};
use pyo3::exceptions::{PyBrokenPipeError, PyEOFError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::{deadline, segment_error, waiting};

/// One end of a pipe (mproc's `Connection`), the base of `mproc.Connection`.
#[pyclass(module = "mproc._native", frozen, name = "Connection")]
pub struct NativeConnection {
    /// `None` once closed. Calls take a clone of the `Arc`, so `close` never waits for one.
    conn: Mutex<Option<Arc<Connection>>>,
}

impl NativeConnection {
    fn new(c: Connection) -> NativeConnection {
        NativeConnection {
            conn: Mutex::new(Some(Arc::new(c))),
        }
    }

    fn get(&self) -> PyResult<Arc<Connection>> {
        self.conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| PyOSError::new_err("handle is closed"))
    }
}

fn recv_failed(e: GetError) -> Option<PyErr> {
    match e {
        GetError::Empty | GetError::Timeout => None,
        GetError::Closed => Some(PyEOFError::new_err("the other end of the pipe is closed")),
        other => Some(PyOSError::new_err(other.to_string())),
    }
}

fn send_failed<T>(e: PutError<T>) -> Option<PyErr> {
    match e {
        PutError::Full(_) | PutError::Timeout(_) => None,
        PutError::Closed(_) => Some(PyBrokenPipeError::new_err(
            "the other end of the pipe is closed",
        )),
        PutError::TooLarge { size, max, .. } => Some(PyValueError::new_err(format!(
            "message of {size} bytes exceeds the pipe's arena of {max} bytes"
        ))),
        other => Some(PyOSError::new_err(other.to_string())),
    }
}

#[pymethods]
impl NativeConnection {
    /// A connected pair (`duplex`: both ends send and receive; otherwise the first only
    /// receives and the second only sends).
    #[staticmethod]
    fn pair(duplex: bool) -> PyResult<(NativeConnection, NativeConnection)> {
        let (a, b) = mproc_queue::pipe(duplex).map_err(segment_error)?;
        Ok((NativeConnection::new(a), NativeConnection::new(b)))
    }

    /// The end made of these descriptors, which it takes over (`-1`: no such ring).
    #[staticmethod]
    fn from_fds(inbox: i32, outbox: i32, end: i32) -> PyResult<NativeConnection> {
        let own = |fd: i32| {
            // SAFETY: the caller hands over descriptors it owns (received for this end, and
            // closed nowhere else); `-1` is none.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let fds = ConnectionFds {
            inbox: own(inbox),
            outbox: own(outbox),
            end: own(end).ok_or_else(|| PyValueError::new_err("no end descriptor"))?,
        };
        Connection::from_fds(fds)
            .map(NativeConnection::new)
            .map_err(segment_error)
    }

    /// This end's descriptors `(inbox, outbox, end)`, `-1` for a ring it does not have;
    /// borrowed (they stay this handle's).
    fn fds(&self) -> PyResult<(i32, i32, i32)> {
        let c = self.get()?;
        let f = c.fds();
        let raw = |fd: Option<std::os::fd::BorrowedFd<'_>>| fd.map_or(-1, |f| f.as_raw_fd());
        Ok((raw(f.inbox), raw(f.outbox), f.end.as_raw_fd()))
    }

    /// Sends one message, waiting for room (signals are checked while it waits).
    /// `BrokenPipeError` if the other end is closed, as an OS pipe's `write` fails (mproc's
    /// Rust `send_bytes` leaves a message that finds room to be lost with the end; Python
    /// code expects the error, and one `fcntl` is cheap next to a pickle).
    fn send_bytes(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let c = self.get()?;
        if !c.peer_open() {
            return Err(PyBrokenPipeError::new_err(
                "the other end of the pipe is closed",
            ));
        }
        match c.send_bytes_timeout(data, std::time::Duration::ZERO) {
            Ok(()) => return Ok(()),
            Err(e) => {
                if let Some(err) = send_failed(e) {
                    return Err(err);
                }
            }
        }
        let r = waiting(py, Some(None), |slice| {
            match c.send_bytes_timeout(data, slice) {
                Ok(()) => Some(Ok(())),
                Err(e) => send_failed(e).map(Err),
            }
        })?;
        r.unwrap_or(Ok(()))
    }

    /// Receives one message: `bytes`; `None` if `timeout` (seconds) passed first.
    /// `EOFError` once the other end is closed and everything it sent was received.
    #[pyo3(signature = (timeout=None))]
    fn recv_bytes<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let c = self.get()?;
        let wait = deadline(true, timeout)?;
        let got = waiting(py, wait, |slice| {
            match c.recv_bytes_timeout(slice.max(std::time::Duration::from_nanos(1))) {
                Ok(b) => Some(Ok(b)),
                Err(e) => recv_failed(e).map(Err),
            }
        })?;
        got.transpose()
            .map(|b| b.map(|b: Vec<u8>| PyBytes::new(py, &b)))
    }

    /// Whether a message (or end-of-file) can be received, waiting up to `timeout` seconds
    /// (`None`: as long as it takes).
    #[pyo3(signature = (timeout=Some(0.0)))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let c = self.get()?;
        let wait = deadline(true, timeout)?;
        let ready = waiting(py, wait, |slice| match c.poll(Some(slice)) {
            Ok(true) => Some(Ok(true)),
            Ok(false) => None,
            Err(e) => Some(Err(PyOSError::new_err(e.to_string()))),
        })?;
        ready.unwrap_or(Ok(false))
    }

    /// Closes this handle (the end closes once every copy, in every process, is closed).
    fn close(&self) {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Whether `close` was called on this handle.
    #[getter]
    fn closed(&self) -> bool {
        self.conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Whether the other end is open in some process.
    fn peer_open(&self) -> PyResult<bool> {
        Ok(self.get()?.peer_open())
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeConnection>()
}
