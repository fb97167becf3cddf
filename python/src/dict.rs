//! The shared dict: mproc's `BytesDict` (keys and values of bytes). The Python half
//! (`mproc.Dict`) encodes keys and values and makes it a `MutableMapping`.

use mproc_queue::{BytesDict, DictError, DictOptions};
use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::{OwnerDied, segment_error};

/// A dict error as the Python exception: `OwnerDied` for a writer's death (the call was not
/// done), `MemoryError` for a full dict, `ValueError` for what does not fit or decode.
fn dict_error(e: DictError) -> PyErr {
    let msg = e.to_string();
    match e {
        DictError::OwnerDied(_) | DictError::Corrupt(_) => OwnerDied::new_err(msg),
        DictError::Full { .. } => PyMemoryError::new_err(msg),
        DictError::TooLarge { .. } | DictError::Encode(_) | DictError::Decode(_) => {
            PyValueError::new_err(msg)
        }
        DictError::Lock(_) => PyRuntimeError::new_err(msg),
    }
}

/// A hash map of bytes in shared memory (mproc's `BytesDict`), the base of `mproc.Dict`. A
/// Rust process opens the same name with `DictOptions::new().type_name("py").open_bytes`.
#[pyclass(module = "mproc._native", frozen, name = "Dict")]
pub struct NativeDict {
    d: BytesDict,
    name: String,
}

/// The type name Python dicts are made with (their keys and values are in the Python
/// package's encoding, not postcard's).
const TYPE_NAME: &str = "dict:py";

#[pymethods]
impl NativeDict {
    /// Creates the named dict, sized for `entries` entries and `arena_bytes` bytes.
    #[staticmethod]
    #[pyo3(signature = (name, entries, arena_bytes=None))]
    fn create(name: &str, entries: usize, arena_bytes: Option<usize>) -> PyResult<Self> {
        let mut opts = DictOptions::new().entries(entries).type_name(TYPE_NAME);
        if let Some(b) = arena_bytes {
            opts = opts.bytes(b);
        }
        let d = opts.create_bytes(name).map_err(segment_error)?;
        Ok(NativeDict {
            d,
            name: name.to_owned(),
        })
    }

    /// Opens the named dict.
    #[staticmethod]
    fn open(name: &str) -> PyResult<Self> {
        let d = DictOptions::new()
            .type_name(TYPE_NAME)
            .open_bytes(name)
            .map_err(segment_error)?;
        Ok(NativeDict {
            d,
            name: name.to_owned(),
        })
    }

    /// The value of `key`, or `None`. Takes no lock.
    fn get<'py>(&self, py: Python<'py>, key: &[u8]) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let mut out = Vec::new();
        let found = self.d.get_into(key, &mut out).map_err(dict_error)?;
        Ok(found.then(|| PyBytes::new(py, &out)))
    }

    /// Whether `key` has a value.
    fn contains(&self, key: &[u8]) -> PyResult<bool> {
        self.d.contains_key(key).map_err(dict_error)
    }

    /// Sets `key` to `value` (the GIL is released while it waits for the writers' lock).
    fn set(&self, py: Python<'_>, key: &[u8], value: &[u8]) -> PyResult<()> {
        py.detach(|| self.d.insert(key, value))
            .map(drop)
            .map_err(dict_error)
    }

    /// Removes `key`: its old value, or `None` if it had none.
    fn pop<'py>(&self, py: Python<'py>, key: &[u8]) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let old = py.detach(|| self.d.remove(key)).map_err(dict_error)?;
        Ok(old.map(|o| PyBytes::new(py, &o)))
    }

    /// Sets `key` to `new` (`None`: removes it) only if its value is `current` now (`None`:
    /// absent); whether it did.
    #[pyo3(signature = (key, current, new))]
    fn compare_and_swap(
        &self,
        py: Python<'_>,
        key: &[u8],
        current: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> PyResult<bool> {
        py.detach(|| self.d.compare_and_swap(key, current, new))
            .map_err(dict_error)
    }

    /// Every `(key, value)`, as of one instant.
    fn items<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
        let items = py.detach(|| self.d.items()).map_err(dict_error)?;
        Ok(items
            .iter()
            .map(|(k, v)| (PyBytes::new(py, k), PyBytes::new(py, v)))
            .collect())
    }

    /// Removes every entry.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.d.clear()).map_err(dict_error)
    }

    /// Repairs the dict now if a writer died mid-write: whether one had.
    fn repair(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.d.repair())
            .map(|r| r.is_some())
            .map_err(dict_error)
    }

    /// `(entries, used_bytes, free_bytes, arena_bytes, repairs)`.
    fn stats(&self, py: Python<'_>) -> PyResult<(u64, u64, u64, u64, u64)> {
        let s = py.detach(|| self.d.stats()).map_err(dict_error)?;
        Ok((
            s.entries,
            s.used_bytes,
            s.free_bytes,
            s.arena_bytes,
            s.repairs,
        ))
    }

    fn __len__(&self) -> usize {
        self.d.len()
    }

    /// The dict's name in shared memory.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeDict>()
}
