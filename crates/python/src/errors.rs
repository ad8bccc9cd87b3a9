//! The one place where client errors become Python exceptions.
//!
//! The exception classes live in `django_elasticache_rs.exceptions` (Python) so that they can
//! inherit from both the package's base class and the matching builtin (`TimeoutError`,
//! `ConnectionError`, `ValueError`).

use elasticache_client::{Error, ErrorKind};
use pyo3::prelude::*;

pyo3::import_exception!(django_elasticache_rs.exceptions, CacheTimeoutError);
pyo3::import_exception!(django_elasticache_rs.exceptions, CacheConnectionError);
pyo3::import_exception!(django_elasticache_rs.exceptions, CacheServerError);
pyo3::import_exception!(django_elasticache_rs.exceptions, CacheClientError);
pyo3::import_exception!(django_elasticache_rs.exceptions, InvalidKeyError);
pyo3::import_exception!(django_elasticache_rs.exceptions, ValueTooLargeError);

/// The Python exception for a client error.
pub fn to_py(error: Error) -> PyErr {
    let message = error.to_string();
    match error {
        Error::InvalidKey { .. } => InvalidKeyError::new_err(message),
        Error::ValueTooLarge { .. } => ValueTooLargeError::new_err(message),
        other => match other.kind() {
            ErrorKind::Timeout => CacheTimeoutError::new_err(message),
            ErrorKind::Connection => CacheConnectionError::new_err(message),
            ErrorKind::Server => CacheServerError::new_err(message),
            ErrorKind::Client => CacheClientError::new_err(message),
        },
    }
}

/// An invalid key, with a message naming the key as Python would show it.
pub fn invalid_key(message: String) -> PyErr {
    InvalidKeyError::new_err(message)
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
