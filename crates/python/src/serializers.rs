//! The serializers of `OPTIONS["serializer"]` other than pickle: JSON (orjson when installed,
//! else the standard library's `json`), msgpack (ormsgpack, else msgpack) and the user's class
//! with `dumps`/`loads`. Each has its flag bit (ours: see `format.rs`); JSON and msgpack values
//! are read whatever the setting, so a fleet can switch gradually.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString};

/// The flag bit of a JSON value.
pub const FLAG_JSON: u32 = 1 << 8;
/// The flag bit of a msgpack value.
pub const FLAG_MSGPACK: u32 = 1 << 9;
/// The flag bit of a value of the user's serializer class.
pub const FLAG_CUSTOM: u32 = 1 << 10;
/// Every serializer's bit.
pub const FLAGS: u32 = FLAG_JSON | FLAG_MSGPACK | FLAG_CUSTOM;

/// A serializer: its `dumps` and `loads`, and the flag its values carry.
#[derive(Debug)]
pub struct Objects {
    /// As `OPTIONS["serializer"]` names it, for messages.
    pub name: String,
    pub flag: u32,
    dumps: Py<PyAny>,
    /// Keyword arguments of `dumps` (the standard library's compact JSON).
    dumps_kwargs: Option<Py<PyDict>>,
    loads: Py<PyAny>,
}

impl Objects {
    /// The serializer `OPTIONS["serializer"]` names: "json", "msgpack", or a dotted path to a
    /// class with `dumps` and `loads` (made with no arguments) or an object with them.
    pub fn named(py: Python<'_>, name: &str) -> PyResult<Self> {
        match name {
            "json" => library(py, FLAG_JSON).map(|l| l.objects(py, name)),
            "msgpack" => library(py, FLAG_MSGPACK).map(|l| l.objects(py, name)),
            path => {
                let (module, attribute) = path.rsplit_once('.').ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "serializer must be 'pickle', 'json', 'msgpack' or a dotted path, not \
                         {path:?}"
                    ))
                })?;
                let found = py.import(module)?.getattr(attribute)?;
                let made = if found.is_instance_of::<pyo3::types::PyType>() {
                    found.call0()?
                } else {
                    found
                };
                let method = |name: &str| -> PyResult<Py<PyAny>> {
                    let method = made.getattr(name)?;
                    if method.is_callable() {
                        Ok(method.unbind())
                    } else {
                        Err(PyTypeError::new_err(format!(
                            "{path}.{name} is not callable"
                        )))
                    }
                };
                Ok(Objects {
                    name: path.to_owned(),
                    flag: FLAG_CUSTOM,
                    dumps: method("dumps")?,
                    dumps_kwargs: None,
                    loads: method("loads")?,
                })
            }
        }
    }

    /// `value`'s bytes, or the serializer's refusal as a `TypeError` (or `ValueError`) naming it.
    pub fn dumps<'py>(&self, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = value.py();
        let dumped = self
            .dumps
            .bind(py)
            .call((value,), self.dumps_kwargs.as_ref().map(|k| k.bind(py)))
            .map_err(|error| {
                let message = format!(
                    "the {} serializer cannot encode a value of type {}: {error}; nothing was \
                     stored",
                    self.name,
                    value
                        .get_type()
                        .name()
                        .map_or_else(|_| "value".to_owned(), |n| n.to_string())
                );
                let refusal = if error.is_instance_of::<PyValueError>(py) {
                    PyValueError::new_err(message)
                } else {
                    PyTypeError::new_err(message)
                };
                refusal.set_cause(py, Some(error));
                refusal
            })?;
        if dumped.is_instance_of::<PyBytes>() || dumped.is_instance_of::<PyString>() {
            Ok(dumped)
        } else {
            Err(PyTypeError::new_err(format!(
                "the {} serializer's dumps must return bytes or str, not {}",
                self.name,
                dumped.get_type().name()?
            )))
        }
    }

    pub fn loads<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        self.loads.bind(py).call1((PyBytes::new(py, data),))
    }
}

/// The library behind "json" or "msgpack" in this process.
struct Library {
    dumps: Py<PyAny>,
    dumps_kwargs: Option<Py<PyDict>>,
    loads: Py<PyAny>,
}

impl Library {
    fn objects(&self, py: Python<'_>, name: &str) -> Objects {
        Objects {
            name: name.to_owned(),
            flag: if name == "json" {
                FLAG_JSON
            } else {
                FLAG_MSGPACK
            },
            dumps: self.dumps.clone_ref(py),
            dumps_kwargs: self.dumps_kwargs.as_ref().map(|k| k.clone_ref(py)),
            loads: self.loads.clone_ref(py),
        }
    }
}

/// JSON's or msgpack's library (`flag` says which), imported once: the fast one when
/// installed, else the fallback.
fn library(py: Python<'_>, flag: u32) -> PyResult<&'static Library> {
    static JSON: PyOnceLock<Library> = PyOnceLock::new();
    static MSGPACK: PyOnceLock<Library> = PyOnceLock::new();
    if flag == FLAG_JSON {
        JSON.get_or_try_init(py, || {
            if let Ok(orjson) = py.import("orjson") {
                return Ok(Library {
                    dumps: orjson.getattr("dumps")?.unbind(),
                    dumps_kwargs: None,
                    loads: orjson.getattr("loads")?.unbind(),
                });
            }
            let json = py.import("json")?;
            let kwargs = PyDict::new(py);
            kwargs.set_item("separators", (",", ":"))?;
            kwargs.set_item("ensure_ascii", false)?;
            Ok(Library {
                dumps: json.getattr("dumps")?.unbind(),
                dumps_kwargs: Some(kwargs.unbind()),
                loads: json.getattr("loads")?.unbind(),
            })
        })
    } else {
        MSGPACK.get_or_try_init(py, || {
            let module = py
                .import("ormsgpack")
                .or_else(|_| py.import("msgpack"))
                .map_err(|_| {
                    pyo3::exceptions::PyImportError::new_err(
                        "the msgpack serializer needs ormsgpack (pip install \
                         django-elasticache-rs[msgpack]) or msgpack",
                    )
                })?;
            Ok(Library {
                dumps: module.getattr("packb")?.unbind(),
                dumps_kwargs: None,
                loads: module.getattr("unpackb")?.unbind(),
            })
        })
    }
}

/// Loads a JSON or msgpack value (`flag` says which) whatever this client writes.
pub fn loads_any<'py>(py: Python<'py>, flag: u32, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    if flag != FLAG_JSON && flag != FLAG_MSGPACK {
        return Err(PyValueError::new_err(format!(
            "flags {flag} name more than one serializer"
        )));
    }
    library(py, flag)?
        .loads
        .bind(py)
        .call1((PyBytes::new(py, data),))
}
