//! Values on the wire in pymemcache's `pickle_serde` format, so both clients read each other.
//!
//! Exact `bytes` are stored raw (flags 0), exact `str` as UTF-8 (16), exact `int` as decimal
//! (2), anything else pickled with the highest protocol (1). Subclasses are pickled so they
//! come back as themselves. A value that cannot be decoded reads as a miss, logged.
//!
//! pylibmc (from 1.6) uses the same bits: it writes `int` as 4 (decimal) and `bool` as 2
//! (`"0"`/`"1"`, which it reads back as an `int`, and so does this module); both read 2 and 4
//! as integers. pylibmc before 1.6 stored `bool` under bit 16, which pylibmc 1.6, pymemcache and
//! this module read as text: the README says what such a fleet must do.
//!
//! Every value goes through [`encode`] and [`decode`] with the client's [`Codec`], and so
//! through zlib (`compress`): bit 8 is honoured on every read whatever the settings; writes
//! are compressed when `min_compress_len` asks for it and the result is smaller.

use elasticache_client::{Item, LARGE_FLAG};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyInt, PyString};

use crate::compress::{inflate, Compression, FLAG_ZLIB, GIL_RELEASE_LEN};

pub const FLAG_BYTES: u32 = 0;
pub const FLAG_PICKLE: u32 = 1 << 0;
pub const FLAG_INTEGER: u32 = 1 << 1;
pub const FLAG_LONG: u32 = 1 << 2;
pub const FLAG_TEXT: u32 = 1 << 4;

/// How a client turns values into stored bytes and back: a custom serde (pymemcache's
/// `serialize`/`deserialize` interface; `None` for the format above) and zlib compression.
#[derive(Debug)]
pub struct Codec {
    pub serde: Option<Py<PyAny>>,
    pub compression: Compression,
}

impl Codec {
    fn serde<'py>(&self, py: Python<'py>) -> Option<&Bound<'py, PyAny>> {
        self.serde.as_ref().map(|s| s.bind(py))
    }

    /// `encoded` compressed when the settings ask for it and zlib makes it smaller. A serde
    /// that compressed it already (bit 8 set) is left alone.
    fn compress<'py>(&self, py: Python<'py>, encoded: Encoded<'py>) -> PyResult<Encoded<'py>> {
        if encoded.flags & FLAG_ZLIB != 0 {
            return Ok(encoded);
        }
        let compressed = {
            let data = encoded.bytes()?;
            if !self.compression.applies_to(data.len()) {
                return Ok(encoded);
            }
            let compression = self.compression;
            if data.len() >= GIL_RELEASE_LEN {
                py.detach(|| compression.compress(data))
            } else {
                compression.compress(data)
            }
        };
        Ok(match compressed {
            Some(data) => Encoded {
                flags: encoded.flags | FLAG_ZLIB,
                data: Data::Owned(data),
            },
            None => encoded,
        })
    }
}

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

/// Encodes `value` as pymemcache's `pickle_serde` does, or through the codec's custom serde
/// (`serialize(key, value) -> (bytes, flags)`), then compresses it if the codec says so.
pub fn encode<'py>(value: &Bound<'py, PyAny>, key: &str, codec: &Codec) -> PyResult<Encoded<'py>> {
    let py = value.py();
    let encoded = serialize(value, key, codec.serde(py))?;
    codec.compress(py, encoded)
}

fn serialize<'py>(
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

/// Decodes a stored value, inflating it first when bit 8 says it is zlib (the serde then sees
/// the flags without bit 8); `None` when it cannot be decoded (logged, and read as a miss).
pub fn decode<'py>(
    py: Python<'py>,
    key: &str,
    flags: u32,
    data: &[u8],
    codec: &Codec,
) -> Option<Bound<'py, PyAny>> {
    if flags & LARGE_FLAG != 0 {
        // A large value's index, not joined: read with `large_values` off, or by a path that
        // does not join (stampede protection's get-or-lease joins it with a second read).
        log::debug!("{key:?} holds a large value's index: not read here, a miss");
        return None;
    }
    let inflated;
    let (flags, data) = if flags & FLAG_ZLIB != 0 {
        let cap = codec.compression.inflated_cap;
        let outcome = if data.len() >= GIL_RELEASE_LEN {
            py.detach(|| inflate(data, cap))
        } else {
            inflate(data, cap)
        };
        match outcome {
            Ok(bytes) => {
                inflated = bytes;
                (flags & !FLAG_ZLIB, inflated.as_slice())
            }
            Err(error) => {
                log::warn!(
                    "cannot decompress the value of {key:?} (flags {flags}): {error}; read as a \
                     miss"
                );
                return None;
            }
        }
    } else {
        (flags, data)
    };
    let decoded = match codec.serde(py) {
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
    codec: &Codec,
    default: Option<Py<PyAny>>,
) -> Bound<'py, PyAny> {
    match item.and_then(|item| decode(py, key, item.flags, &item.data, codec)) {
        Some(value) => value,
        None => default.map_or_else(|| py.None().into_bound(py), |d| d.into_bound(py)),
    }
}

/// A value found that cannot be decoded (a pickle of a class renamed since, a corrupt or
/// oversized compressed value), as a get-or-lease with `undecodable=True` gives it: stampede
/// protection takes it for a miss of its own, and passes it back (`take=`) to ask for the
/// lease, so that its recheck can tell that value from a new one.
#[pyclass(frozen, module = "django_elasticache_rs._native")]
#[derive(Debug)]
pub struct Undecodable {
    pub item: Item,
}

#[pymethods]
impl Undecodable {
    /// Whether it is a large value's index (`large_values`): a get-or-lease does not join its
    /// chunks, a `get` does.
    #[getter]
    fn large(&self) -> bool {
        self.item.flags & LARGE_FLAG != 0
    }
}

/// As [`decode_or`], but with `undecodable`, a value found that cannot be decoded is an
/// [`Undecodable`] rather than `default`: for a caller that must tell it from a miss.
pub fn decode_or_else<'py>(
    py: Python<'py>,
    key: &str,
    item: Option<Item>,
    codec: &Codec,
    default: Option<Py<PyAny>>,
    undecodable: bool,
) -> PyResult<Bound<'py, PyAny>> {
    match item {
        Some(item) if undecodable => match decode(py, key, item.flags, &item.data, codec) {
            Some(value) => Ok(value),
            None => Ok(Bound::new(py, Undecodable { item })?.into_any()),
        },
        item => Ok(decode_or(py, key, item, codec, default)),
    }
}
