//! Cache keys: making `prefix:version:key`, and refusing keys memcached cannot take.
//!
//! The rules and messages are memcached's as Django words them (length in characters and in
//! bytes, no control characters or spaces), so callers get the same errors as with the
//! pure-Python backends.

use elasticache_client::MAX_KEY_LEN;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString};

use crate::errors::invalid_key;

/// The text of a key part: a `str` as it is, anything else through `str()`.
fn text_of(value: &Bound<'_, PyAny>) -> PyResult<String> {
    match value.cast::<PyString>() {
        Ok(text) => Ok(text.to_str()?.to_owned()),
        Err(_) => Ok(value.str()?.to_str()?.to_owned()),
    }
}

/// The key sent to the server: `key` itself (which must be a `str`), or `prefix:version:key`
/// when a prefix is given, with `version` defaulting to 1.
pub fn make_key(
    key: &Bound<'_, PyAny>,
    prefix: Option<&str>,
    version: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let made = match prefix {
        None => match key.cast::<PyString>() {
            Ok(text) => text.to_str()?.to_owned(),
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "cache keys must be str, not {}",
                    key.get_type().name()?
                )))
            }
        },
        Some(prefix) => {
            let key_text = text_of(key)?;
            let version_text = match version {
                None => "1".to_owned(),
                Some(v) if v.is_instance_of::<PyInt>() => v
                    .extract::<i64>()
                    .map_or_else(|_| text_of(v), |n| Ok(n.to_string()))?,
                Some(v) => text_of(v)?,
            };
            let mut made =
                String::with_capacity(prefix.len() + version_text.len() + key_text.len() + 2);
            made.push_str(prefix);
            made.push(':');
            made.push_str(&version_text);
            made.push(':');
            made.push_str(&key_text);
            made
        }
    };
    validate(key.py(), &made)?;
    Ok(made)
}

/// Refuses a key longer than 250 characters (or bytes), or holding a control character or space.
pub fn validate(py: Python<'_>, key: &str) -> PyResult<()> {
    let too_long = key.len() > MAX_KEY_LEN;
    let bad_char = key
        .chars()
        .any(|c| u32::from(c) < 33 || u32::from(c) == 127);
    if !too_long && !bad_char {
        return Ok(());
    }
    let shown = PyString::new(py, key).repr()?.to_str()?.to_owned();
    if too_long {
        Err(invalid_key(format!(
            "Cache key will cause errors if used with memcached: {shown} (longer than {MAX_KEY_LEN})"
        )))
    } else {
        Err(invalid_key(format!(
            "Cache key contains characters that will cause errors if used with memcached: {shown}"
        )))
    }
}

/// murmur3 x86 32-bit (seed 0) of `text` as pymemcache computes it (low byte of each code point).
#[pyfunction]
pub fn murmur3_32(text: &str) -> u32 {
    elasticache_client::murmur3_32(text)
}
