//! Values on the wire in pymemcache's `pickle_serde` format, so both clients read each other.
//!
//! Exact `bytes` are stored raw (flags 0), exact `str` as UTF-8 (16), exact `int` as decimal
//! (2), anything else pickled with the highest protocol (1). Subclasses are pickled so they
//! come back as themselves. A value that cannot be decoded reads as a miss, logged.

use elasticache_client::Item;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyInt, PyString};

pub const FLAG_BYTES: u32 = 0;
pub const FLAG_PICKLE: u32 = 1 << 0;
pub const FLAG_INTEGER: u32 = 1 << 1;
pub const FLAG_LONG: u32 = 1 << 2;
pub const FLAG_TEXT: u32 = 1 << 4;

/// A value ready to send: its flags and bytes, borrowed from Python objects where possible.
pub struct Encoded<'py> {
    pub flags: u32,
    data: Data<'py>,
}

enum Data<'py> {
    Bytes(Bound<'py, PyBytes>),
    Text(Bound<'py, PyString>),
    Owned(Vec<u8>),
}

impl Encoded<'_> {
    /// The bytes to store.
    pub fn bytes(&self) -> PyResult<&[u8]> {
        Ok(match &self.data {
            Data::Bytes(bytes) => bytes.as_bytes(),
            Data::Text(text) => text.to_str()?.as_bytes(),
            Data::Owned(bytes) => bytes,
        })
    }
}

fn pickle_function<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let cell = if name == "dumps" { &DUMPS } else { &LOADS };
    Ok(cell.import(py, "pickle", name)?.clone())
}

fn highest_protocol(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static HIGHEST: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    HIGHEST.import(py, "pickle", "HIGHEST_PROTOCOL")
}

/// Encodes `value` as pymemcache's `pickle_serde` does, or through a custom `serde` object with
/// `serialize(key, value) -> (bytes, flags)`.
pub fn encode<'py>(
    value: &Bound<'py, PyAny>,
    key: &str,
    serde: Option<&Bound<'py, PyAny>>,
) -> PyResult<Encoded<'py>> {
    let py = value.py();
    if let Some(serde) = serde {
        let (data, flags): (Bound<'py, PyAny>, u32) =
            serde.call_method1("serialize", (key, value))?.extract()?;
        return Ok(match data.cast_into::<PyBytes>() {
            Ok(bytes) => Encoded {
                flags,
                data: Data::Bytes(bytes),
            },
            Err(other) => {
                let other = other.into_inner();
                let text = other.cast_into::<PyString>().map_err(|e| {
                    pyo3::exceptions::PyTypeError::new_err(format!(
                        "serde.serialize must return bytes or str, not {}",
                        e.into_inner()
                            .get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ))
                })?;
                Encoded {
                    flags,
                    data: Data::Text(text),
                }
            }
        });
    }
    if value.is_exact_instance_of::<PyBytes>() {
        return Ok(Encoded {
            flags: FLAG_BYTES,
            data: Data::Bytes(value.cast::<PyBytes>()?.clone()),
        });
    }
    if value.is_exact_instance_of::<PyString>() {
        return Ok(Encoded {
            flags: FLAG_TEXT,
            data: Data::Text(value.cast::<PyString>()?.clone()),
        });
    }
    if value.is_exact_instance_of::<PyInt>() {
        let digits = match value.extract::<i64>() {
            Ok(n) => n.to_string(),
            Err(_) => value.str()?.to_str()?.to_owned(),
        };
        return Ok(Encoded {
            flags: FLAG_INTEGER,
            data: Data::Owned(digits.into_bytes()),
        });
    }
    let pickled = pickle_function(py, "dumps")?.call1((value, highest_protocol(py)?))?;
    Ok(Encoded {
        flags: FLAG_PICKLE,
        data: Data::Bytes(pickled.cast_into::<PyBytes>()?),
    })
}

/// Decodes a stored value; `None` when it cannot be decoded (logged, and read as a miss).
pub fn decode<'py>(
    py: Python<'py>,
    key: &str,
    flags: u32,
    data: &[u8],
    serde: Option<&Bound<'py, PyAny>>,
) -> Option<Bound<'py, PyAny>> {
    let decoded = match serde {
        Some(serde) => serde.call_method1("deserialize", (key, PyBytes::new(py, data), flags)),
        None => decode_standard(py, flags, data),
    };
    decoded
        .inspect_err(|error| {
            log::warn!(
                "cannot decode the value of {key:?} (flags {flags}): {error}; read as a miss"
            )
        })
        .ok()
}

fn decode_standard<'py>(py: Python<'py>, flags: u32, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    if flags == FLAG_BYTES {
        Ok(PyBytes::new(py, data).into_any())
    } else if flags & FLAG_TEXT != 0 {
        // Python checks the UTF-8 (a UnicodeDecodeError makes the value unreadable, a miss).
        Ok(PyString::from_bytes(py, data)?.into_any())
    } else if flags & (FLAG_INTEGER | FLAG_LONG) != 0 {
        match std::str::from_utf8(data)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
        {
            Some(n) => Ok(n.into_pyobject(py)?.into_any()),
            None => py.get_type::<PyInt>().call1((PyBytes::new(py, data),)),
        }
    } else if flags & FLAG_PICKLE != 0 {
        pickle_function(py, "loads")?.call1((PyBytes::new(py, data),))
    } else {
        Ok(PyBytes::new(py, data).into_any())
    }
}

/// The decoded value of `item`, or `default` (`None` when not given) for a miss or a value
/// that cannot be decoded.
pub fn decode_or<'py>(
    py: Python<'py>,
    key: &str,
    item: Option<Item>,
    serde: Option<&Bound<'py, PyAny>>,
    default: Option<Py<PyAny>>,
) -> Bound<'py, PyAny> {
    match item.and_then(|item| decode(py, key, item.flags, &item.data, serde)) {
        Some(value) => value,
        None => default.map_or_else(|| py.None().into_bound(py), |d| d.into_bound(py)),
    }
}
