//! A value's way to the wire and back: serializer -> compressor -> signature on writing
//! ([`encode`]), signature -> compressor -> serializer on reading ([`decode`]). Each stage is
//! one function over the bytes and flags the previous one made; a stage for values over the
//! item size goes after the signature.
//!
//! The default serializer is pymemcache's `pickle_serde` format, so both clients read each
//! other: exact `bytes` are stored raw (flags 0), exact `str` as UTF-8 (16), exact `int` as
//! decimal (2), anything else pickled with the highest protocol (1). Subclasses are pickled so
//! they come back as themselves. The other serializers (`serializers.rs`: JSON, msgpack, the
//! user's class) store bytes, `str` and `int` the same way and everything else through their
//! `dumps`; a user serde (pymemcache's `serialize`/`deserialize` interface) takes every value.
//! A value that cannot be decoded reads as a miss, logged.
//!
//! pylibmc (from 1.6) uses the same bits: it writes `int` as 4 (decimal) and `bool` as 2
//! (`"0"`/`"1"`, which it reads back as an `int`, and so does this module); both read 2 and 4
//! as integers. pylibmc before 1.6 stored `bool` under bit 16, which pylibmc 1.6, pymemcache and
//! this module read as text: the README says what such a fleet must do.
//!
//! Compression (`compress.rs`) applies from `min_compress_len` when it makes a value smaller;
//! every compressor's bit is honoured on every read whatever the settings. Signing (`sign.rs`)
//! covers the stored flags and bytes. Our formats' bits are placed by `format.rs` so that
//! pymemcache and pylibmc see their values as plain bytes.

use std::borrow::Cow;

use elasticache_client::{Item, LARGE_FLAG};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyInt, PyString};

use crate::compress::{self, Compression, GIL_RELEASE_LEN};
use crate::format;
use crate::serializers::{self, Objects};
use crate::sign::{Signer, FLAG_SIGNED};

pub use crate::format::{FLAG_BYTES, FLAG_INTEGER, FLAG_LONG, FLAG_PICKLE, FLAG_TEXT};

/// What turns values into bytes and back (`OPTIONS["serializer"]`, or `OPTIONS["serde"]`).
#[derive(Debug)]
pub enum Serializer {
    /// pymemcache's `pickle_serde` format.
    Pickle,
    /// bytes, `str` and `int` as `pickle_serde` stores them, anything else through `dumps`.
    Objects(Objects),
    /// A user serde: `serialize(key, value) -> (bytes, flags)` and `deserialize(key, bytes,
    /// flags)`, for every value.
    Serde(Py<PyAny>),
}

/// How a client turns values into stored bytes and back: its serializer, compression and
/// signing.
#[derive(Debug)]
pub struct Codec {
    pub serializer: Serializer,
    pub compression: Compression,
    pub signer: Signer,
}

impl Codec {
    /// `encoded` compressed when the settings ask for it and the compressor makes it smaller.
    /// A serde that compressed it already (a compressor's bit set) is left alone.
    fn compress<'py>(&self, py: Python<'py>, encoded: Encoded<'py>) -> PyResult<Encoded<'py>> {
        if encoded.flags & compress::FLAGS != 0 {
            return Ok(encoded);
        }
        let compressed = {
            let data = encoded.bytes()?;
            if !self.compression.applies_to(data.len()) {
                return Ok(encoded);
            }
            let compression = &self.compression;
            if data.len() >= GIL_RELEASE_LEN {
                py.detach(|| compression.compress(data))
            } else {
                compression.compress(data)
            }
        };
        Ok(match compressed {
            Some((flag, data)) => Encoded {
                flags: encoded.flags | flag,
                data: Data::Owned(data),
            },
            None => encoded,
        })
    }

    /// `encoded` with its flags as stored (`format::pack`), signed when the client signs (but
    /// a counter, which memcached's `incr` must be able to count on).
    fn seal<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        encoded: Encoded<'py>,
    ) -> PyResult<Encoded<'py>> {
        // Signing off (the usual case): the counter test is not run.
        if !self.signer.signs() || crate::sign::is_counter(encoded.flags, encoded.bytes()?) {
            return Ok(Encoded {
                flags: format::pack(encoded.flags),
                data: encoded.data,
            });
        }
        let flags = format::pack(encoded.flags | FLAG_SIGNED);
        let data = encoded.bytes()?;
        let signer = &self.signer;
        let tag = if data.len() >= GIL_RELEASE_LEN {
            py.detach(|| signer.tag(key, flags, data))
        } else {
            signer.tag(key, flags, data)
        };
        let Some(tag) = tag else {
            return Ok(Encoded {
                flags: format::pack(encoded.flags),
                data: encoded.data,
            });
        };
        let mut signed = Vec::with_capacity(tag.as_ref().len() + data.len());
        signed.extend_from_slice(tag.as_ref());
        signed.extend_from_slice(data);
        Ok(Encoded {
            flags,
            data: Data::Owned(signed),
        })
    }

    /// The stored value's bytes and flags (moved back by `format::unpack`) once its signature
    /// is checked, or why not.
    fn open<'a>(
        &self,
        py: Python<'_>,
        key: &str,
        flags: u32,
        data: &'a [u8],
    ) -> Result<(u32, &'a [u8]), String> {
        let signer = &self.signer;
        // Only a signature's check is worth releasing the GIL for; an unsigned value's is a
        // flag test.
        let opened = if flags & FLAG_SIGNED != 0 && data.len() >= GIL_RELEASE_LEN {
            py.detach(|| signer.open(key, flags, data))
        } else {
            signer.open(key, flags, data)
        };
        let payload = opened.map_err(|refusal| refusal.to_string())?;
        Ok((format::unpack(flags) & !FLAG_SIGNED, payload))
    }

    /// The value's bytes decompressed (with the compressor its flags name), and its flags
    /// without the compressor's bit, or why not.
    fn decompress<'a>(
        &self,
        py: Python<'_>,
        flags: u32,
        data: &'a [u8],
    ) -> Result<(u32, Cow<'a, [u8]>), String> {
        let compressor = flags & compress::FLAGS;
        if compressor == 0 {
            return Ok((flags, Cow::Borrowed(data)));
        }
        let compression = &self.compression;
        let outcome = if data.len() >= GIL_RELEASE_LEN {
            py.detach(|| compression.decompress(compressor, data))
        } else {
            compression.decompress(compressor, data)
        };
        outcome
            .map(|inflated| (flags & !compress::FLAGS, Cow::Owned(inflated)))
            .map_err(|error| format!("cannot decompress it: {error}"))
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

/// Encodes `value` for `key`: serialized, compressed if the codec says so, then sealed (its
/// flags as stored, signed if the codec signs).
pub fn encode<'py>(value: &Bound<'py, PyAny>, key: &str, codec: &Codec) -> PyResult<Encoded<'py>> {
    let py = value.py();
    let encoded = serialize(value, key, &codec.serializer)?;
    let encoded = codec.compress(py, encoded)?;
    codec.seal(py, key, encoded)
}

/// The serializer stage alone: `value`'s bytes and flags before compression and signing.
pub fn serialize<'py>(
    value: &Bound<'py, PyAny>,
    key: &str,
    serializer: &Serializer,
) -> PyResult<Encoded<'py>> {
    let py = value.py();
    if let Serializer::Serde(serde) = serializer {
        let (data, flags): (Bound<'py, PyAny>, u32) = serde
            .bind(py)
            .call_method1("serialize", (key, value))?
            .extract()?;
        return stored_as(data, flags, "serde.serialize");
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
    if let Serializer::Objects(objects) = serializer {
        return stored_as(objects.dumps(value)?, objects.flag, "dumps");
    }
    let pickled = pickle_function(py, "dumps")?.call1((value, highest_protocol(py)?))?;
    Ok(Encoded {
        flags: FLAG_PICKLE,
        data: Data::Bytes(pickled.cast_into::<PyBytes>()?),
    })
}

/// `data` (bytes or `str`, as `what` returned it) to store with `flags`.
fn stored_as<'py>(data: Bound<'py, PyAny>, flags: u32, what: &str) -> PyResult<Encoded<'py>> {
    Ok(match data.cast_into::<PyBytes>() {
        Ok(bytes) => Encoded {
            flags,
            data: Data::Bytes(bytes),
        },
        Err(other) => {
            let other = other.into_inner();
            let text = other.cast_into::<PyString>().map_err(|e| {
                pyo3::exceptions::PyTypeError::new_err(format!(
                    "{what} must return bytes or str, not {}",
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
    })
}

/// Decodes a stored value: its signature checked (before anything else sees a byte), then
/// decompressed, then deserialized (a serde sees the flags without our bits' placement and
/// without the compressor's bit); `None` when it cannot be decoded (logged, and read as a
/// miss).
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
    let opened = codec
        .open(py, key, flags, data)
        .and_then(|(flags, data)| codec.decompress(py, flags, data));
    let (flags, data) = match opened {
        Ok(opened) => opened,
        Err(why) => {
            log::warn!("cannot read the value of {key:?} (flags {flags}): {why}; read as a miss");
            return None;
        }
    };
    deserialize(py, key, flags, &data, &codec.serializer)
        .inspect_err(|error| {
            log::warn!(
                "cannot decode the value of {key:?} (flags {flags}): {error}; read as a miss"
            )
        })
        .ok()
}

fn deserialize<'py>(
    py: Python<'py>,
    key: &str,
    flags: u32,
    data: &[u8],
    serializer: &Serializer,
) -> PyResult<Bound<'py, PyAny>> {
    match serializer {
        Serializer::Serde(serde) => serde
            .bind(py)
            .call_method1("deserialize", (key, PyBytes::new(py, data), flags)),
        _ if flags & serializers::FLAGS == 0 => decode_standard(py, flags, data),
        Serializer::Objects(objects) if flags & serializers::FLAGS == objects.flag => {
            objects.loads(py, data)
        }
        _ if flags & serializers::FLAGS == serializers::FLAG_CUSTOM => {
            Err(pyo3::exceptions::PyValueError::new_err(
                "it was written with a serializer class this client does not have",
            ))
        }
        _ => serializers::loads_any(py, flags & serializers::FLAGS, data),
    }
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
    let value = item.and_then(|item| decode(py, key, item.flags, &item.data, codec));
    or_default(py, value, default)
}

/// `value`, else `default`, else `None`: what a read gives back.
pub fn or_default<'py>(
    py: Python<'py>,
    value: Option<Bound<'py, PyAny>>,
    default: Option<Py<PyAny>>,
) -> Bound<'py, PyAny> {
    match value {
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
