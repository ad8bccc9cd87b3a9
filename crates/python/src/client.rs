//! The `Client` Python class: a shared native client with Python-facing conversions.
//!
//! Every method that touches the network releases the GIL for the I/O. Keys are made and
//! checked here (`prefix:version:key` when a prefix is passed), values encoded in pymemcache's
//! format, and results decoded with the GIL held again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use elasticache_client::{
    Client, ClientConfig, DiscoveryConfig, DiscoveryMode, FailureLog, GetStart, NodeAddress, Stats,
    Store, StoreReply, TlsSettings,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::IntoPyResult;
use crate::keys::{make_key, KeyMaker, MadeKeys};
use crate::pending::PyPendingGet;
use crate::serde::{decode, decode_or, encode};

/// A seconds value from Python as a deadline: `None` or 0 mean "no deadline" where allowed.
fn seconds(name: &str, value: Option<f64>, zero_means_none: bool) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(s) if s == 0.0 && zero_means_none => Ok(None),
        Some(s) => Duration::try_from_secs_f64(s).map(Some).map_err(|_| {
            PyValueError::new_err(format!(
                "{name} must be a non-negative number of seconds, not {s}"
            ))
        }),
    }
}

/// Where failures are logged: a Python logger name (`None`: `elasticache_client.failures`) and
/// a level name (`None`: not logged).
fn failure_log(logger: Option<String>, level: Option<&str>) -> PyResult<FailureLog> {
    let defaults = FailureLog::default();
    let level = match level {
        None => None,
        Some("WARNING") => Some(log::Level::Warn),
        Some("INFO") => Some(log::Level::Info),
        Some("ERROR") => Some(log::Level::Error),
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "failure_log_level must be 'WARNING', 'INFO', 'ERROR' or None, not {other:?}"
            )))
        }
    };
    Ok(FailureLog {
        target: logger.unwrap_or(defaults.target),
        level,
    })
}

/// A memcached client shared by every thread of the process.
#[derive(Debug)]
#[pyclass(frozen, module = "django_elasticache_rs._native", name = "Client")]
pub struct PyClient {
    inner: Arc<Client>,
    serde: Option<Py<PyAny>>,
}

impl PyClient {
    fn serde<'py>(&self, py: Python<'py>) -> Option<&Bound<'py, PyAny>> {
        self.serde.as_ref().map(|s| s.bind(py))
    }
}

#[pymethods]
impl PyClient {
    #[new]
    #[pyo3(signature = (
        servers,
        *,
        connect_timeout = Some(1.0),
        timeout = Some(1.0),
        max_pool_size = 64,
        pool_idle_timeout = 0.0,
        retry_attempts = 2,
        retry_timeout = 1.0,
        dead_timeout = 60.0,
        no_delay = true,
        socket_keepalive = None,
        ignore_exc = false,
        max_value_length = None,
        serde = None,
        discovery = "off",
        discovery_interval = Some(60.0),
        discovery_retry_delay = 0.0,
        use_vpc_ip_address = true,
        tls = false,
        tls_ca_certs = None,
        tls_ca_file = None,
        tls_cert_file = None,
        tls_key_file = None,
        tls_server_name = None,
        tls_verify = true,
        tls_check_hostname = true,
        logger = None,
        failure_log_level = Some("WARNING"),
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        servers: Vec<String>,
        connect_timeout: Option<f64>,
        timeout: Option<f64>,
        max_pool_size: usize,
        pool_idle_timeout: Option<f64>,
        retry_attempts: u32,
        retry_timeout: f64,
        dead_timeout: f64,
        no_delay: bool,
        socket_keepalive: Option<f64>,
        ignore_exc: bool,
        max_value_length: Option<usize>,
        serde: Option<Py<PyAny>>,
        discovery: &str,
        discovery_interval: Option<f64>,
        discovery_retry_delay: f64,
        use_vpc_ip_address: bool,
        tls: bool,
        tls_ca_certs: Option<Vec<Vec<u8>>>,
        tls_ca_file: Option<PathBuf>,
        tls_cert_file: Option<PathBuf>,
        tls_key_file: Option<PathBuf>,
        tls_server_name: Option<String>,
        tls_verify: bool,
        tls_check_hostname: bool,
        logger: Option<String>,
        failure_log_level: Option<&str>,
    ) -> PyResult<Self> {
        if max_pool_size == 0 {
            return Err(PyValueError::new_err("max_pool_size must be at least 1"));
        }
        let defaults = ClientConfig::default();
        let config = ClientConfig {
            connect_timeout: seconds("connect_timeout", connect_timeout, false)?,
            timeout: seconds("timeout", timeout, false)?,
            max_pool_size,
            pool_idle_timeout: seconds("pool_idle_timeout", pool_idle_timeout, true)?,
            retry_attempts,
            retry_timeout: seconds("retry_timeout", Some(retry_timeout), false)?
                .unwrap_or_default(),
            dead_timeout: seconds("dead_timeout", Some(dead_timeout), false)?.unwrap_or_default(),
            no_delay,
            socket_keepalive: seconds("socket_keepalive", socket_keepalive, true)?,
            max_value_len: max_value_length.unwrap_or(defaults.max_value_len),
            ignore_exc,
            tls: None,
            failure_log: failure_log(logger, failure_log_level)?,
        };
        // Any TLS option turns TLS on: a CA file given with plaintext would be a silent downgrade.
        let tls_on = tls
            || tls_ca_certs.as_ref().is_some_and(|certs| !certs.is_empty())
            || tls_ca_file.is_some()
            || tls_cert_file.is_some()
            || tls_key_file.is_some()
            || tls_server_name.is_some();
        let config = if tls_on {
            let settings = TlsSettings {
                ca_certificates: tls_ca_certs.unwrap_or_default(),
                ca_file: tls_ca_file,
                skip_verification: !tls_verify,
                skip_hostname_check: !tls_check_hostname,
                client_cert_file: tls_cert_file,
                client_key_file: tls_key_file,
                server_name: tls_server_name,
            };
            ClientConfig {
                tls: Some(settings.build().py_result()?),
                ..config
            }
        } else {
            config
        };
        let nodes = servers
            .iter()
            .map(|s| NodeAddress::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .py_result()?;
        let mode = match discovery {
            "off" => None,
            "auto" => Some(DiscoveryMode::Auto),
            "on" => Some(DiscoveryMode::On),
            other => {
                return Err(PyValueError::new_err(format!(
                    "discovery must be 'auto', 'on' or 'off', not {other:?}"
                )))
            }
        };
        let inner = match (mode, nodes.as_slice()) {
            (_, []) => return Err(PyValueError::new_err("at least one server is needed")),
            (None, nodes) => Arc::new(Client::new(nodes, config)),
            (Some(mode), [endpoint]) => {
                let settings = DiscoveryConfig {
                    mode,
                    interval: seconds("discovery_interval", discovery_interval, true)?,
                    retry_delay: seconds(
                        "discovery_retry_delay",
                        Some(discovery_retry_delay),
                        false,
                    )?
                    .unwrap_or_default(),
                    use_vpc_ip_address,
                };
                Client::with_discovery(endpoint.clone(), config, settings)
            }
            (Some(_), _) => {
                return Err(PyValueError::new_err(
                    "discovery needs exactly one server: the configuration endpoint",
                ))
            }
        };
        Ok(PyClient { inner, serde })
    }

    /// The configuration endpoint (`host:port`) when nodes are discovered, else `None`.
    #[getter]
    fn discovery_endpoint(&self) -> Option<String> {
        self.inner.discovery_endpoint().map(ToString::to_string)
    }

    /// The version of the cluster configuration in use (discovery only; `None` before the
    /// first discovery or without discovery).
    #[getter]
    fn config_version(&self) -> Option<u64> {
        self.inner.topology().version()
    }

    /// Asks the configuration endpoint for the membership now and applies it if it changed.
    /// Raises if the endpoint cannot be asked; the last good membership stays in use.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        let client = &*self.inner;
        py.detach(|| client.refresh_membership()).py_result()
    }

    /// The nodes' names (`host:port`), as the ring hashes them.
    #[getter]
    fn servers(&self) -> Vec<String> {
        self.inner
            .topology()
            .nodes()
            .iter()
            .map(|n| n.address.name.clone())
            .collect()
    }

    /// The name of the node that owns `key` (made like the other methods' keys).
    #[pyo3(signature = (key, prefix = None, version = None))]
    fn node_for(
        &self,
        key: &Bound<'_, PyAny>,
        prefix: Option<&str>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let key = make_key(key, prefix, version)?;
        elasticache_client::validate_key(key.as_bytes())
            .map_err(|reason| elasticache_client::Error::InvalidKey {
                key: key.clone(),
                reason,
            })
            .py_result()?;
        let topology = self.inner.topology();
        let index = topology
            .node_index_for(&key)
            .ok_or(elasticache_client::Error::NoNodes)
            .py_result()?;
        Ok(topology.nodes()[index].address.name.clone())
    }

    /// Connections this process has open to each node (idle or in use).
    fn open_connections(&self) -> Vec<(String, usize)> {
        let topology = self.inner.topology();
        topology
            .nodes()
            .iter()
            .map(|n| (n.address.name.clone(), n.open_connections()))
            .collect()
    }

    /// Per node: connections this process opened so far, and how many of them resumed a TLS
    /// session.
    fn connections_opened(&self) -> Vec<(String, u64, u64)> {
        let topology = self.inner.topology();
        topology
            .nodes()
            .iter()
            .map(|n| {
                let (opened, resumed) = n.connections_opened();
                (n.address.name.clone(), opened, resumed)
            })
            .collect()
    }

    /// The value of `key`, or `default` when it is missing or unreadable.
    #[pyo3(signature = (key, default = None, prefix = None, version = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Py<PyAny>>,
        prefix: Option<&str>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = make_key(key, prefix, version)?;
        let client = &*self.inner;
        let item = py.detach(|| client.get(&key)).py_result()?;
        Ok(decode_or(py, &key, item, self.serde(py), default))
    }

    /// Like `get`, for asyncio, without blocking: the value (or `default`) when the reply is
    /// already there, else a `PendingGet` for the event loop to drive. Key errors raise here.
    #[pyo3(signature = (key, default = None, prefix = None, version = None))]
    fn get_start<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Py<PyAny>>,
        prefix: Option<&str>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = make_key(key, prefix, version)?;
        let get = match self.inner.start_get(&key).py_result()? {
            GetStart::Done(item) => return Ok(decode_or(py, &key, item, self.serde(py), default)),
            GetStart::Pending(get) => Some(get),
            GetStart::WouldBlock => None,
        };
        let serde = self.serde.as_ref().map(|s| s.clone_ref(py));
        let pending = PyPendingGet::new(Arc::clone(&self.inner), get, key, default, serde);
        Ok(Bound::new(py, pending)?.into_any())
    }

    /// Whether `key` is in the cache (its value is not decoded).
    #[pyo3(signature = (key, prefix = None, version = None))]
    fn contains(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        prefix: Option<&str>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let key = make_key(key, prefix, version)?;
        let client = &*self.inner;
        Ok(py.detach(|| client.get(&key)).py_result()?.is_some())
    }

    /// The values of the keys that are in the cache, as a dict keyed by the keys given.
    #[pyo3(signature = (keys, prefix = None, version = None))]
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        prefix: Option<&str>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let maker = KeyMaker::new(prefix, version)?;
        let originals: Vec<Bound<'py, PyAny>> = keys.try_iter()?.collect::<PyResult<_>>()?;
        let mut made = MadeKeys::with_capacity(originals.len());
        for original in &originals {
            made.push(&maker, original)?;
        }
        let refs = made.all();
        let client = &*self.inner;
        let found = py.detach(|| client.get_many_values(&refs)).py_result()?;
        let result = PyDict::new(py);
        let serde = self.serde(py);
        found.try_for_each(|position, flags, data| {
            if let (Some(original), Some(key)) = (originals.get(position), refs.get(position)) {
                if let Some(value) = decode(py, key, flags, data, serde) {
                    result.set_item(original, value)?;
                }
            }
            Ok::<_, PyErr>(())
        })?;
        Ok(result)
    }

    /// Stores `value`; returns whether it was stored. `exptime` is memcached's: 0 = never
    /// expires, negative = already expired, over 30 days = a Unix time.
    #[pyo3(signature = (key, value, exptime = 0, prefix = None, version = None))]
    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        exptime: i64,
        prefix: Option<&str>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.store(py, Store::Set, key, value, exptime, prefix, version)
    }

    /// Stores `value` only if `key` is not in the cache; returns whether it was stored.
    #[pyo3(signature = (key, value, exptime = 0, prefix = None, version = None))]
    fn add(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        exptime: i64,
        prefix: Option<&str>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.store(py, Store::Add, key, value, exptime, prefix, version)
    }

    /// Stores every item of `mapping` in one round trip; returns the keys that were not stored.
    #[pyo3(signature = (mapping, exptime = 0, prefix = None, version = None))]
    fn set_many<'py>(
        &self,
        py: Python<'py>,
        mapping: &Bound<'py, PyAny>,
        exptime: i64,
        prefix: Option<&str>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let maker = KeyMaker::new(prefix, version)?;
        let mut originals = Vec::new();
        let mut values = Vec::new();
        let mut made = MadeKeys::with_capacity(mapping.len().unwrap_or(0));
        for pair in mapping.call_method0("items")?.try_iter()? {
            let (original, value): (Bound<'py, PyAny>, Bound<'py, PyAny>) = pair?.extract()?;
            made.push(&maker, &original)?;
            originals.push(original);
            values.push(value);
        }
        let serde = self.serde(py);
        let encoded = values
            .iter()
            .enumerate()
            .map(|(position, value)| encode(value, made.get(position), serde))
            .collect::<PyResult<Vec<_>>>()?;
        let items = encoded
            .iter()
            .enumerate()
            .map(|(position, value)| Ok((made.get(position), value.flags, value.bytes()?)))
            .collect::<PyResult<Vec<_>>>()?;
        let client = &*self.inner;
        let failed = py.detach(|| client.set_many(&items, exptime)).py_result()?;
        PyList::new(py, failed.into_iter().map(|position| &originals[position]))
    }

    /// Deletes `key`; returns whether it was there.
    #[pyo3(signature = (key, prefix = None, version = None))]
    fn delete(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        prefix: Option<&str>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let key = make_key(key, prefix, version)?;
        let client = &*self.inner;
        py.detach(|| client.delete(&key)).py_result()
    }

    /// Deletes the keys in one round trip; returns how many were there.
    #[pyo3(signature = (keys, prefix = None, version = None))]
    fn delete_many(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        prefix: Option<&str>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let maker = KeyMaker::new(prefix, version)?;
        let mut made = MadeKeys::with_capacity(keys.len().unwrap_or(0));
        for key in keys.try_iter()? {
            made.push(&maker, &key?)?;
        }
        let refs = made.all();
        let client = &*self.inner;
        py.detach(|| client.delete_many(&refs)).py_result()
    }

    /// Adds `delta` (subtracts, when negative) to a counter; `None` when `key` is missing.
    /// memcached counters are unsigned: a decrement stops at 0.
    #[pyo3(signature = (key, delta = 1, prefix = None, version = None))]
    fn incr(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        delta: i128,
        prefix: Option<&str>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<u64>> {
        let key = make_key(key, prefix, version)?;
        let magnitude = u64::try_from(delta.unsigned_abs())
            .map_err(|_| PyValueError::new_err("delta must fit in 64 bits"))?;
        let client = &*self.inner;
        py.detach(|| {
            if delta < 0 {
                client.decr(&key, magnitude)
            } else {
                client.incr(&key, magnitude)
            }
        })
        .py_result()
    }

    /// Sets a new expiry on `key`; returns whether it was there.
    #[pyo3(signature = (key, exptime = 0, prefix = None, version = None))]
    fn touch(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        exptime: i64,
        prefix: Option<&str>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let key = make_key(key, prefix, version)?;
        let client = &*self.inner;
        py.detach(|| client.touch(&key, exptime)).py_result()
    }

    /// Empties every node.
    fn flush_all(&self, py: Python<'_>) -> PyResult<()> {
        let client = &*self.inner;
        py.detach(|| client.flush_all()).py_result()
    }

    /// Each node's `stats`, as `{node: {name: value}}`; fails if a node cannot answer.
    #[pyo3(signature = (group = None))]
    fn stats(&self, py: Python<'_>, group: Option<&str>) -> PyResult<Vec<(String, Stats)>> {
        let client = &*self.inner;
        py.detach(|| client.stats(group))
            .py_result()?
            .into_iter()
            .map(|(node, stats)| stats.map(|s| (node, s)))
            .collect::<Result<_, _>>()
            .py_result()
    }

    /// Closes the idle pooled connections of this process (connections in use close when
    /// their operation ends). Not needed in normal use: pools are meant to outlive requests.
    fn close_idle(&self) {
        for node in self.inner.topology().nodes() {
            node.close_idle();
        }
    }
}

impl PyClient {
    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        py: Python<'_>,
        command: Store,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        exptime: i64,
        prefix: Option<&str>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let key = make_key(key, prefix, version)?;
        let encoded = encode(value, &key, self.serde(py))?;
        let (flags, data) = (encoded.flags, encoded.bytes()?);
        let client = &*self.inner;
        let reply = py
            .detach(|| client.store(command, &key, flags, data, exptime))
            .py_result()?;
        Ok(reply == StoreReply::Stored)
    }
}
