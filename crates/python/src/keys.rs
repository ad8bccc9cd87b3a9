//! Cache keys: making `prefix:version:key` from Python objects.
//!
//! The keys made here are checked once, by the client, before anything is sent; `errors`
//! words a refusal as Django's memcached backends do.

use std::fmt::Write;
use std::ops::Range;

use elasticache_client::KeyList;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString};

use crate::errors::unencodable_key;

/// Appends a `str` key part; one UTF-8 cannot encode (a lone surrogate) is an invalid key,
/// as it is for Django, not a `UnicodeEncodeError`.
fn push_str(made: &mut String, text: &Bound<'_, PyString>) -> PyResult<()> {
    made.push_str(text.to_str().map_err(|_| unencodable_key(text))?);
    Ok(())
}

/// Appends the text of a key part: a `str` as it is, anything else through `str()`.
fn push_text(made: &mut String, value: &Bound<'_, PyAny>) -> PyResult<()> {
    match value.cast::<PyString>() {
        Ok(text) => push_str(made, text),
        Err(_) => push_str(made, &value.str()?),
    }
}

/// Makes the keys of one call. With a prefix, a key is `prefix:version:key` (`version`
/// defaulting to 1), the `prefix:version:` part formatted once; without, the key itself,
/// which must be a `str`.
pub struct KeyMaker {
    head: Option<String>,
}

impl KeyMaker {
    pub fn new(
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let Some(prefix) = prefix else {
            return Ok(KeyMaker { head: None });
        };
        let mut head = String::with_capacity(32);
        push_str(&mut head, prefix)?;
        head.push(':');
        match version {
            None => head.push('1'),
            Some(v) if v.is_instance_of::<PyInt>() => match v.extract::<i64>() {
                // Writing to a String cannot fail.
                Ok(n) => {
                    let _ = write!(head, "{n}");
                }
                Err(_) => push_text(&mut head, v)?,
            },
            Some(v) => push_text(&mut head, v)?,
        }
        head.push(':');
        Ok(KeyMaker { head: Some(head) })
    }

    /// Appends the key made of `key` to `keys` and returns where it is there. The client
    /// checks it before anything is sent (`errors` words its refusal as Django does).
    pub fn push(&self, keys: &mut String, key: &Bound<'_, PyAny>) -> PyResult<Range<usize>> {
        let start = keys.len();
        match &self.head {
            None => match key.cast::<PyString>() {
                Ok(text) => push_str(keys, text)?,
                Err(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "cache keys must be str, not {}",
                        key.get_type().name()?
                    )))
                }
            },
            Some(head) => {
                keys.push_str(head);
                push_text(keys, key)?;
            }
        }
        Ok(start..keys.len())
    }

    /// The key made of `key`.
    pub fn make(&self, key: &Bound<'_, PyAny>) -> PyResult<String> {
        let mut made = String::new();
        self.push(&mut made, key)?;
        Ok(made)
    }
}

/// The key sent to the server for `key` (see [`KeyMaker`]).
pub fn make_key(
    key: &Bound<'_, PyAny>,
    prefix: Option<&Bound<'_, PyString>>,
    version: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    KeyMaker::new(prefix, version)?.make(key)
}

/// Makes the keys of `keys` (an iterable) into one buffer; the original objects too.
pub fn make_keys<'py>(
    maker: &KeyMaker,
    keys: &Bound<'py, PyAny>,
) -> PyResult<(KeyList, Vec<Bound<'py, PyAny>>)> {
    let count = keys.len().unwrap_or(0);
    let mut made = KeyList::with_capacity(count);
    let mut originals = Vec::with_capacity(count);
    for key in keys.try_iter()? {
        let key = key?;
        made.push_with(|text| maker.push(text, &key).map(drop))?;
        originals.push(key);
    }
    Ok((made, originals))
}

/// murmur3 x86 32-bit (seed 0) of `text` as pymemcache computes it (low byte of each code point).
#[pyfunction]
pub fn murmur3_32(text: &str) -> u32 {
    elasticache_client::murmur3_32(text)
}
