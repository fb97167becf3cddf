//! CBOR for Python objects: what `mproc.Queue(codec="cbor")` writes and every `mproc.Queue`
//! reads, the messages of a Rust `CborQueue<T>`. `None`, `bool`, `int` (64-bit, signed or
//! not), `float`, `str`, `bytes` (and `bytearray` and `memoryview`, read back as `bytes`),
//! `list` and `tuple` (read back as `list`) and `dict` travel; anything else is a
//! `TypeError` in the caller.

use ciborium::value::{Integer, Value};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};

/// Deeper nesting is refused both ways (ciborium's own limit when decoding).
const MAX_DEPTH: usize = 256;

fn to_value(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(
            "nested more than 256 levels deep: too deep for a CBOR message",
        ));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // `bool` before `int`: it is one.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        let out_of_range = || PyValueError::new_err("int out of CBOR's 64-bit range");
        let i: i128 = obj.extract().map_err(|_| out_of_range())?;
        return Integer::try_from(i)
            .map(Value::Integer)
            .map_err(|_| out_of_range());
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::Text(s.to_cow()?.into_owned()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Value::Bytes(b.to_vec()));
    }
    if obj.is_instance_of::<PyMemoryView>() {
        return Ok(Value::Bytes(obj.call_method0("tobytes")?.extract()?));
    }
    let seq = |items: Vec<Bound<'_, PyAny>>| -> PyResult<Value> {
        items
            .iter()
            .map(|item| to_value(item, depth + 1))
            .collect::<PyResult<_>>()
            .map(Value::Array)
    };
    if let Ok(l) = obj.cast::<PyList>() {
        return seq(l.iter().collect());
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return seq(t.iter().collect());
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut entries = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            entries.push((to_value(&k, depth + 1)?, to_value(&v, depth + 1)?));
        }
        return Ok(Value::Map(entries));
    }
    let name = obj.get_type().name()?;
    Err(PyTypeError::new_err(format!(
        "a {name} cannot be written as CBOR (None, bool, int, float, str, bytes, list, tuple \
         and dict can; use the pickle codec for other objects)"
    )))
}

fn to_py<'py>(py: Python<'py>, v: Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        Value::Integer(i) => i128::from(i).into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, f).into_any(),
        Value::Text(s) => PyString::new(py, &s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, &b).into_any(),
        Value::Array(items) => {
            let items = items
                .into_iter()
                .map(|item| to_py(py, item))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        Value::Map(entries) => {
            let d = PyDict::new(py);
            for (k, v) in entries {
                let k = to_py(py, k)?;
                // A key that is a list or a map cannot key a dict.
                let k = match k.cast::<PyList>() {
                    Ok(l) => l.to_tuple().into_any(),
                    Err(_) => k,
                };
                d.set_item(k, to_py(py, v)?).map_err(|e| {
                    PyValueError::new_err(format!("a CBOR map key Python cannot use: {e}"))
                })?;
            }
            d.into_any()
        }
        // A tag's meaning (a date, a bignum, ...) is not kept: its content is.
        Value::Tag(_, inner) => to_py(py, *inner)?,
        _ => return Err(PyValueError::new_err("a CBOR value of an unknown kind")),
    })
}

/// The CBOR encoding of `obj` (without the message's `C` tag).
#[pyfunction]
fn cbor_encode<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let value = to_value(obj, 0)?;
    let mut out = Vec::new();
    ciborium::into_writer(&value, &mut out)
        .map_err(|e| PyValueError::new_err(format!("CBOR encoding failed: {e}")))?;
    Ok(PyBytes::new(py, &out))
}

/// The object encoded in `data`: exactly one CBOR item (`ValueError` otherwise).
#[pyfunction]
fn cbor_decode<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let mut rest = data;
    let value: Value = ciborium::from_reader(&mut rest)
        .map_err(|e| PyValueError::new_err(format!("not a CBOR message: {e}")))?;
    if !rest.is_empty() {
        return Err(PyValueError::new_err(format!(
            "{} bytes after the CBOR item",
            rest.len()
        )));
    }
    to_py(py, value)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cbor_encode, m)?)?;
    m.add_function(wrap_pyfunction!(cbor_decode, m)?)?;
    Ok(())
}
