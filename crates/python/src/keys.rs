//! Cache keys: making `prefix:version:key`, and refusing keys memcached cannot take.
//!
//! The rules and messages are memcached's as Django words them (length in characters and in
//! bytes, no control characters or spaces), so callers get the same errors as with the
//! pure-Python backends.

use std::fmt::Write;

use elasticache_client::MAX_KEY_LEN;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString};

use crate::errors::invalid_key;

/// Appends the text of a key part: a `str` as it is, anything else through `str()`.
fn push_text(made: &mut String, value: &Bound<'_, PyAny>) -> PyResult<()> {
    match value.cast::<PyString>() {
        Ok(text) => made.push_str(text.to_str()?),
        Err(_) => made.push_str(value.str()?.to_str()?),
    }
    Ok(())
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
            let mut made = String::with_capacity(prefix.len() + 48);
            made.push_str(prefix);
            made.push(':');
            match version {
                None => made.push('1'),
                Some(v) if v.is_instance_of::<PyInt>() => match v.extract::<i64>() {
                    // Writing to a String cannot fail.
                    Ok(n) => {
                        let _ = write!(made, "{n}");
                    }
                    Err(_) => push_text(&mut made, v)?,
                },
                Some(v) => push_text(&mut made, v)?,
            }
            made.push(':');
            push_text(&mut made, key)?;
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
