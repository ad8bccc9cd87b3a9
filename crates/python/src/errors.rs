//! The one place where client errors become Python exceptions.
//!
//! The exception classes live in `django_elasticache_rs.exceptions` (Python) so that they can
//! inherit from both the package's base class and the matching builtin (`TimeoutError`,
//! `ConnectionError`, `ValueError`), and, for a connection failure, the builtin pymemcache's
//! users see for it (`socket.gaierror`, `ConnectionRefusedError`, `ConnectionResetError`,
//! `ssl.SSLError`...).

use std::io;

use elasticache_client::{Error, ErrorKind, KeyError, MAX_KEY_LEN};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

pyo3::import_exception!(django_elasticache_rs.exceptions, CacheError);
pyo3::import_exception!(django_elasticache_rs.exceptions, CacheTimeoutError);
pyo3::import_exception!(django_elasticache_rs.exceptions, CacheConnectionError);
pyo3::import_exception!(django_elasticache_rs.exceptions, CacheNameResolutionError);
pyo3::import_exception!(
    django_elasticache_rs.exceptions,
    CacheConnectionRefusedError
);
pyo3::import_exception!(django_elasticache_rs.exceptions, CacheConnectionResetError);
pyo3::import_exception!(
    django_elasticache_rs.exceptions,
    CacheConnectionAbortedError
);
pyo3::import_exception!(django_elasticache_rs.exceptions, CacheBrokenPipeError);
pyo3::import_exception!(django_elasticache_rs.exceptions, CacheTlsError);
pyo3::import_exception!(django_elasticache_rs.exceptions, CacheServerError);
pyo3::import_exception!(django_elasticache_rs.exceptions, CacheClientError);
pyo3::import_exception!(django_elasticache_rs.exceptions, InvalidKeyError);
pyo3::import_exception!(django_elasticache_rs.exceptions, ValueTooLargeError);

/// The Python exception for a client error.
pub fn to_py(error: Error) -> PyErr {
    let message = error.to_string();
    match error {
        Error::InvalidKey { key, reason } => {
            InvalidKeyError::new_err(invalid_key_message(&key, &reason).unwrap_or(message))
        }
        Error::ValueTooLarge { .. } | Error::TooLargeForNode { .. } => {
            ValueTooLargeError::new_err(message)
        }
        other => match other.kind() {
            ErrorKind::Timeout => CacheTimeoutError::new_err(message),
            ErrorKind::Connection => connection_error(&other, message),
            ErrorKind::Server => CacheServerError::new_err(message),
            ErrorKind::Client => CacheClientError::new_err(message),
            // A kind this version does not know of: the package's base class.
            _ => CacheError::new_err(message),
        },
    }
}

/// The exception for a connection failure: the subclass of `CacheConnectionError` that is also
/// the builtin pymemcache raises for the same failure (a name that does not resolve is a
/// `socket.gaierror`, a refused connect a `ConnectionRefusedError`...), with the operating
/// system's `errno` where there is one; otherwise `CacheConnectionError` itself.
fn connection_error(error: &Error, message: String) -> PyErr {
    if error.is_name_not_resolved() {
        return CacheNameResolutionError::new_err(message);
    }
    if is_tls(error) {
        return CacheTlsError::new_err(message);
    }
    let Some(source) = os_error(error) else {
        return CacheConnectionError::new_err(message);
    };
    let exception = match source.kind() {
        io::ErrorKind::ConnectionRefused => CacheConnectionRefusedError::new_err(message),
        io::ErrorKind::ConnectionReset => CacheConnectionResetError::new_err(message),
        io::ErrorKind::ConnectionAborted => CacheConnectionAbortedError::new_err(message),
        io::ErrorKind::BrokenPipe => CacheBrokenPipeError::new_err(message),
        _ => CacheConnectionError::new_err(message),
    };
    if let Some(errno) = source.raw_os_error() {
        Python::attach(|py| {
            // As `OSError(errno, ...)` would have it, the message left as is. Setting an
            // attribute on a fresh exception instance cannot fail but for memory.
            let _ = exception.value(py).setattr("errno", errno);
        });
    }
    exception
}

/// Whether the failure is TLS's (a handshake or record that failed), through a failed discovery.
fn is_tls(error: &Error) -> bool {
    match error {
        Error::Tls { .. } => true,
        Error::Discovery { source, .. } => is_tls(source),
        _ => false,
    }
}

/// The operating system's error behind a connection failure, through a failed discovery.
fn os_error(error: &Error) -> Option<&io::Error> {
    match error {
        Error::Connect { source, .. } | Error::Io { source, .. } => Some(source),
        Error::Discovery { source, .. } => os_error(source),
        _ => None,
    }
}

/// Django's words for a key memcached cannot take (those of its memcached backends), with the
/// key as Python shows it; `None` for a refusal Django has no words for (an empty key).
fn invalid_key_message(key: &str, reason: &KeyError) -> Option<String> {
    let shown = Python::attach(|py| -> PyResult<String> {
        Ok(PyString::new(py, key).repr()?.to_str()?.to_owned())
    })
    .ok()?;
    match reason {
        KeyError::TooLong(_) => Some(format!(
            "Cache key will cause errors if used with memcached: {shown} (longer than {MAX_KEY_LEN})"
        )),
        KeyError::IllegalByte(_) => Some(format!(
            "Cache key contains characters that will cause errors if used with memcached: {shown}"
        )),
        KeyError::Empty => None,
    }
}

/// The error for a key that is no text memcached can take: a `str` that UTF-8 cannot encode
/// (a lone surrogate). Worded as Django words a key with characters memcached refuses.
pub fn unencodable_key(key: &Bound<'_, PyString>) -> PyErr {
    let shown = key
        .repr()
        .and_then(|r| r.to_str().map(str::to_owned))
        .unwrap_or_else(|_| "<key>".to_owned());
    InvalidKeyError::new_err(format!(
        "Cache key contains characters that will cause errors if used with memcached: {shown} \
         (not encodable as UTF-8)"
    ))
}

/// What kind of refusal of an argument: a value of the wrong type, or one out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `TypeError`.
    Type,
    /// `ValueError`.
    Value,
}

/// The error for an argument of the native client refused (an option, `servers`, the TLS
/// settings): a `TypeError` or `ValueError` (as documented for `Client(...)`) whose `option`
/// attribute names the argument, so that no caller has to find it in the message.
pub fn refused(option: &str, refusal: Refusal, message: String) -> PyErr {
    let error = match refusal {
        Refusal::Type => PyTypeError::new_err(message),
        Refusal::Value => PyValueError::new_err(message),
    };
    Python::attach(|py| {
        // Setting an attribute on a fresh exception instance cannot fail but for memory.
        let _ = error.value(py).setattr("option", option);
    });
    error
}

/// Extension to turn a client result into a Python result.
pub trait IntoPyResult<T> {
    fn py_result(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn py_result(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

#[cfg(test)]
mod tests;
