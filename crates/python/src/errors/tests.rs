//! The error-to-exception mapping, run in an embedded interpreter: every client error becomes
//! the exception class the README documents for it, carrying the error's message.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::Once;
use std::time::Duration;

use elasticache_client::{Error, KeyError, NameNotResolved};
use elasticache_proto::ReplyError;
use pyo3::prelude::*;
use pyo3::types::PyModule;

use super::to_py;

/// The Python package's source directory.
const PACKAGE_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../python/django_elasticache_rs"
);

/// Starts the interpreter and makes `django_elasticache_rs.exceptions` importable from the
/// source tree, as an empty package whose path is the source directory: the package's
/// `__init__` would load the built extension module, which this test does not need (it links
/// the mapping itself).
fn python_with_exceptions() {
    static SETUP: Once = Once::new();
    SETUP.call_once(|| {
        Python::initialize();
        Python::attach(|py| -> PyResult<()> {
            let package = PyModule::new(py, "django_elasticache_rs")?;
            let directory = Path::new(PACKAGE_DIR).canonicalize()?;
            // Import paths are strings (a `pathlib.Path` entry would be skipped).
            package.setattr("__path__", vec![directory.to_string_lossy().into_owned()])?;
            py.import("sys")?
                .getattr("modules")?
                .set_item("django_elasticache_rs", package)?;
            Ok(())
        })
        .expect("the exceptions module must be importable from the source tree");
    });
}

/// The class name of the exception `error` becomes, its message, and whether it is an instance
/// of the builtin `builtin` (`None`: no builtin to check).
fn raised(error: Error, builtin: Option<&str>) -> (String, String, bool) {
    python_with_exceptions();
    Python::attach(|py| -> PyResult<(String, String, bool)> {
        let exception = to_py(error).into_value(py).into_bound(py);
        let class = exception.get_type().name()?.to_string();
        let message = exception.str()?.to_string();
        let is_builtin = match builtin {
            Some(name) => {
                // "socket.gaierror", or a builtin's bare name.
                let (module, class) = name.rsplit_once('.').unwrap_or(("builtins", name));
                exception.is_instance(&py.import(module)?.getattr(class)?)?
            }
            None => true,
        };
        let base = py
            .import("django_elasticache_rs.exceptions")?
            .getattr("CacheError")?;
        assert!(exception.is_instance(&base)?, "{class} is not a CacheError");
        Ok((class, message, is_builtin))
    })
    .expect("the mapping must give a Python exception")
}

fn node() -> String {
    "10.0.0.5:11211".to_owned()
}

fn io_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer")
}

/// Every error the client returns, with the class it must become and the builtin it must also
/// be. One row per variant: a new variant needs a row here.
fn table() -> Vec<(Error, &'static str, Option<&'static str>)> {
    let second = Duration::from_secs(1);
    vec![
        (
            Error::InvalidKey {
                key: String::new(),
                reason: KeyError::Empty,
            },
            "InvalidKeyError",
            Some("ValueError"),
        ),
        (
            Error::ValueTooLarge {
                size: 2_000_000,
                limit: 1_048_576,
            },
            "ValueTooLargeError",
            Some("ValueError"),
        ),
        (
            Error::Refused {
                node: node(),
                message: "bad command line format".to_owned(),
            },
            "CacheClientError",
            None,
        ),
        (
            Error::ServerFailure {
                node: node(),
                message: "out of memory storing object".to_owned(),
            },
            "CacheServerError",
            None,
        ),
        (
            Error::Protocol {
                node: node(),
                source: ReplyError::Malformed("garbage".to_owned()),
            },
            "CacheServerError",
            None,
        ),
        (
            Error::Timeout {
                node: node(),
                timeout: second,
            },
            "CacheTimeoutError",
            Some("TimeoutError"),
        ),
        (
            Error::PoolExhausted {
                node: node(),
                timeout: second,
            },
            "CacheTimeoutError",
            Some("TimeoutError"),
        ),
        (
            Error::Connect {
                node: node(),
                source: io::Error::from(io::ErrorKind::ConnectionRefused),
            },
            "CacheConnectionRefusedError",
            Some("ConnectionRefusedError"),
        ),
        (
            Error::Connect {
                node: node(),
                source: NameNotResolved::wrap(io::Error::other("Name or service not known")),
            },
            "CacheNameResolutionError",
            Some("socket.gaierror"),
        ),
        (
            Error::Connect {
                node: node(),
                source: io::Error::from(io::ErrorKind::HostUnreachable),
            },
            "CacheConnectionError",
            Some("ConnectionError"),
        ),
        (
            Error::Io {
                node: node(),
                source: io_error(),
            },
            "CacheConnectionResetError",
            Some("ConnectionResetError"),
        ),
        (
            Error::Io {
                node: node(),
                source: io::Error::from(io::ErrorKind::BrokenPipe),
            },
            "CacheBrokenPipeError",
            Some("BrokenPipeError"),
        ),
        (
            Error::Io {
                node: node(),
                source: io::Error::from(io::ErrorKind::ConnectionAborted),
            },
            "CacheConnectionAbortedError",
            Some("ConnectionAbortedError"),
        ),
        (
            Error::Closed { node: node() },
            "CacheConnectionError",
            Some("ConnectionError"),
        ),
        (
            Error::NodeDown {
                node: node(),
                retry_in: second,
            },
            "CacheConnectionError",
            Some("ConnectionError"),
        ),
        (
            Error::NoNodes,
            "CacheConnectionError",
            Some("ConnectionError"),
        ),
        (
            Error::Tls {
                node: node(),
                reason: "the server's certificate is not trusted".to_owned(),
            },
            "CacheTlsError",
            Some("ssl.SSLError"),
        ),
        (
            Error::TlsConfig {
                reason: "cannot read ca.pem".to_owned(),
            },
            "CacheClientError",
            None,
        ),
        (
            Error::UnknownCommand { node: node() },
            "CacheServerError",
            None,
        ),
        (
            Error::Discovery {
                endpoint: node(),
                source: Arc::new(Error::Closed { node: node() }),
            },
            "CacheConnectionError",
            Some("ConnectionError"),
        ),
        // A discovery failure is the exception of its cause's kind, down to the builtin.
        (
            Error::Discovery {
                endpoint: node(),
                source: Arc::new(Error::Connect {
                    node: node(),
                    source: io::Error::from(io::ErrorKind::ConnectionRefused),
                }),
            },
            "CacheConnectionRefusedError",
            Some("ConnectionRefusedError"),
        ),
        (
            Error::Discovery {
                endpoint: node(),
                source: Arc::new(Error::Timeout {
                    node: node(),
                    timeout: Duration::from_millis(250),
                }),
            },
            "CacheTimeoutError",
            Some("TimeoutError"),
        ),
        (
            Error::Discovery {
                endpoint: node(),
                source: Arc::new(Error::TlsConfig {
                    reason: "cannot read ca.pem".to_owned(),
                }),
            },
            "CacheClientError",
            None,
        ),
        (
            Error::TooLargeForNode {
                node: node(),
                size: 1_048_577,
                message: "object too large for cache".to_owned(),
            },
            "ValueTooLargeError",
            Some("ValueError"),
        ),
        (
            Error::NotElastiCache { endpoint: node() },
            "CacheClientError",
            None,
        ),
        (
            Error::BadAddress {
                address: "host:99999".to_owned(),
                reason: "the port is not a number from 1 to 65535".to_owned(),
            },
            "CacheClientError",
            None,
        ),
    ]
}

#[test]
fn every_error_becomes_its_documented_exception_with_its_message() {
    for (error, class, builtin) in table() {
        let message = error.to_string();
        let (raised_class, raised_message, is_builtin) = raised(error, builtin);
        assert_eq!(raised_class, class, "{message}");
        assert!(is_builtin, "{class} for {message:?} is not a {builtin:?}");
        if class != "InvalidKeyError" {
            assert_eq!(raised_message, message);
        }
    }
}

#[test]
fn invalid_keys_are_described_in_djangos_words() {
    let too_long = "k".repeat(251);
    let cases = [
        (
            too_long.clone(),
            KeyError::TooLong(251),
            format!(
                "Cache key will cause errors if used with memcached: '{too_long}' (longer than 250)"
            ),
        ),
        (
            "two words".to_owned(),
            KeyError::IllegalByte(b' '),
            "Cache key contains characters that will cause errors if used with memcached: \
             'two words'"
                .to_owned(),
        ),
        (
            // Shown as Python shows it: the control character escaped.
            "bell\x07".to_owned(),
            KeyError::IllegalByte(7),
            "Cache key contains characters that will cause errors if used with memcached: \
             'bell\\x07'"
                .to_owned(),
        ),
    ];
    for (key, reason, expected) in cases {
        let (class, message, _) = raised(Error::InvalidKey { key, reason }, None);
        assert_eq!((class.as_str(), message), ("InvalidKeyError", expected));
    }
    // Django has no words for an empty key: the client's own message stays.
    let (_, message, _) = raised(
        Error::InvalidKey {
            key: String::new(),
            reason: KeyError::Empty,
        },
        None,
    );
    assert_eq!(message, "invalid key \"\": the key is empty");
}
