//! The `Client` Python class: a shared native client with Python-facing conversions.
//!
//! Every method that touches the network releases the GIL for the I/O. Keys are made and
//! checked here (`prefix:version:key` when a prefix is passed), values encoded in pymemcache's
//! format, and results decoded with the GIL held again.

use std::path::PathBuf;
use std::sync::Arc;

use elasticache_client::{
    Client, ClientConfig, Counter, DiscoveryConfig, DiscoveryMode, FailureLog, Hashing, KeyList,
    LargeValues, LeaseRequest, NodeAddress, Stats, Store, StoreReply, Tls, TlsSettings,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString};

use crate::args::{whole, Delta, Exptime, Whole, MAX_LEASE_SECONDS};
use crate::compress::{Compression, DEFAULT_INFLATED_CAP};
use crate::errors::{refused, IntoPyResult, Refusal};
use crate::keys::{make_key, make_keys, KeyMaker};
use crate::operation::PyOperation;
use crate::options::Given;
use crate::serde::{decode, decode_or, decode_or_else, encode, Codec, Undecodable, FLAG_INTEGER};
use crate::starts;

/// Where failures are logged: a Python logger name and a level name (`None`: not logged),
/// both checked (`options::Given::text`).
fn failure_log(logger: Option<String>, level: Option<&str>) -> FailureLog {
    let mut log = FailureLog::default();
    log.level = match level {
        Some("INFO") => Some(log::Level::Info),
        Some("ERROR") => Some(log::Level::Error),
        Some(_) => Some(log::Level::Warn),
        None => None,
    };
    if let Some(logger) = logger {
        log.target = logger;
    }
    log
}

/// The TLS arguments, checked one by one (`options::Given`), before they are built.
struct TlsArguments {
    on: bool,
    ca_certs: Vec<Vec<u8>>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
    verify: bool,
    check_hostname: bool,
}

impl TlsArguments {
    /// The TLS configuration (`None`: plaintext). Any TLS argument turns TLS on: a CA file
    /// given with plaintext would be a silent downgrade. What cannot be built is refused
    /// naming the argument it comes from: each part is built alone first (the server name,
    /// the trust anchors, the client certificate), so that none is guessed from a message.
    fn build(self) -> PyResult<Option<Tls>> {
        let on = self.on
            || !self.ca_certs.is_empty()
            || self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.server_name.is_some();
        if !on {
            return Ok(None);
        }
        let refuse = |option: &'static str| {
            move |error: elasticache_client::Error| {
                refused(option, Refusal::Value, format!("{option}: {error}"))
            }
        };
        // Parts built alone skip verification, so that none reads the system's trust store.
        let part = || {
            let mut settings = TlsSettings::default();
            settings.skip_verification = true;
            settings
        };
        if let Some(name) = &self.server_name {
            let mut settings = part();
            settings.server_name = Some(name.clone());
            settings.build().map_err(refuse("tls_server_name"))?;
        }
        if !self.ca_certs.is_empty() {
            let mut settings = part();
            settings.ca_certificates = self.ca_certs.clone();
            settings.build().map_err(refuse("tls_ca_certs"))?;
        }
        if let Some(file) = &self.ca_file {
            let mut settings = part();
            settings.ca_file = Some(file.clone());
            settings.build().map_err(refuse("tls_ca_file"))?;
        }
        if self.cert_file.is_some() || self.key_file.is_some() {
            let mut settings = part();
            settings.client_cert_file = self.cert_file.clone();
            settings.client_key_file = self.key_file.clone();
            // The pair is named by its certificate, or by the half that is missing.
            let option = match (&self.cert_file, &self.key_file) {
                (Some(_), None) => "tls_key_file",
                (None, Some(_)) => "tls_cert_file",
                _ => "tls_cert_file",
            };
            settings.build().map_err(refuse(option))?;
        }
        let mut settings = TlsSettings::default();
        settings.ca_certificates = self.ca_certs;
        settings.ca_file = self.ca_file;
        settings.skip_verification = !self.verify;
        settings.skip_hostname_check = !self.check_hostname;
        settings.client_cert_file = self.cert_file;
        settings.client_key_file = self.key_file;
        settings.server_name = self.server_name;
        settings.build().map(Some).map_err(refuse("tls"))
    }
}

/// A memcached client shared by every thread of the process.
#[derive(Debug)]
#[pyclass(frozen, module = "django_elasticache_rs._native", name = "Client")]
pub struct PyClient {
    inner: Arc<Client>,
    /// The serde and compression every value goes through (shared with operations).
    codec: Arc<Codec>,
}

#[pymethods]
impl PyClient {
    /// The options (`**options`) are those of `_native.OPTIONS` marked `native`, with its
    /// defaults; `tls_ca_certs` (DER), `tls_verify`, `tls_check_hostname` and `on_event` are
    /// the Django backend's ways in (an `ssl.SSLContext`'s settings, the signals).
    #[new]
    #[pyo3(signature = (
        servers,
        *,
        tls_ca_certs = None,
        tls_verify = true,
        tls_check_hostname = true,
        on_event = None,
        **options,
    ))]
    fn new(
        py: Python<'_>,
        servers: Vec<String>,
        tls_ca_certs: Option<Vec<Vec<u8>>>,
        tls_verify: bool,
        tls_check_hostname: bool,
        on_event: Option<Py<PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        // Every argument is checked here, before anything else: nothing invalid may surface at
        // the first request. A refusal names its argument in its `option` attribute.
        let given = Given::new(py, options)?;
        let nodes = servers
            .iter()
            .map(|s| NodeAddress::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| refused("servers", Refusal::Value, format!("servers: {error}")))?;
        let hashing = match given.text("hashing")?.as_deref() {
            Some("pylibmc") => Hashing::Pylibmc,
            Some("ketama") => Hashing::Ketama,
            _ => Hashing::Pymemcache,
        };
        let mode = match given.text("discovery")?.as_deref() {
            Some("auto") => Some(DiscoveryMode::Auto),
            Some("on") => Some(DiscoveryMode::On),
            _ => None,
        };
        let serde = given.object("serde")?;
        let max_value_len = given
            .whole("max_value_length")?
            .map(|n| to_usize("max_value_length", n))
            .transpose()?;
        // Read whether or not large values are on: every option given is checked.
        let max_large_value_len = to_usize(
            "max_large_value_length",
            given
                .whole("max_large_value_length")?
                .unwrap_or(elasticache_client::DEFAULT_MAX_LARGE_VALUE_LEN as u64),
        )?;
        let large_values = given.flag("large_values")?.then_some(max_large_value_len);
        let compression = Compression {
            min_len: to_usize(
                "min_compress_len",
                given.whole("min_compress_len")?.unwrap_or_default(),
            )?,
            level: to_u32(
                "compress_level",
                given.whole("compress_level")?.unwrap_or_default(),
            )?,
            // A value set explicitly bounds values both as stored and once inflated.
            inflated_cap: max_value_len
                .unwrap_or(DEFAULT_INFLATED_CAP)
                .max(large_values.unwrap_or_default()),
        };
        let mut config = ClientConfig::default();
        let max_value_len = max_value_len.unwrap_or(config.max_value_len);
        config.connect_timeout = given.seconds("connect_timeout")?;
        config.timeout = given.seconds("timeout")?;
        if let Some(size) = given.whole("max_pool_size")? {
            config.max_pool_size = to_usize("max_pool_size", size)?;
        }
        config.pool_idle_timeout = given.seconds("pool_idle_timeout")?;
        config.retry_attempts = to_u32(
            "retry_attempts",
            given.whole("retry_attempts")?.unwrap_or_default(),
        )?;
        config.retry_timeout = given.seconds("retry_timeout")?.unwrap_or_default();
        config.dead_timeout = given.seconds("dead_timeout")?.unwrap_or_default();
        config.no_delay = given.flag("no_delay")?;
        config.socket_keepalive = given.seconds("socket_keepalive")?;
        config.max_value_len = max_value_len;
        config.large_values = large_values.map(|max| LargeValues::new(max_value_len, max));
        config.ignore_exc = given.flag("ignore_exc")?;
        config.failure_log = failure_log(
            given.text("logger")?,
            given.text("failure_log_level")?.as_deref(),
        );
        config.counters = given.flag("counters")?;
        config.hashing = hashing;
        if let Some(on_event) = on_event {
            if !on_event.bind(py).is_callable() {
                return Err(refused(
                    "on_event",
                    Refusal::Type,
                    "on_event must be callable".to_owned(),
                ));
            }
            config.events = Some(crate::events::sink(on_event));
        }
        let mut discovery_settings = DiscoveryConfig::default();
        discovery_settings.mode = mode.unwrap_or(DiscoveryMode::Auto);
        discovery_settings.interval = given.seconds("discovery_interval")?;
        discovery_settings.retry_delay =
            given.seconds("discovery_retry_delay")?.unwrap_or_default();
        discovery_settings.use_vpc_ip_address = given.flag("use_vpc_ip_address")?;
        let tls = TlsArguments {
            on: given.flag("tls")?,
            ca_certs: tls_ca_certs.unwrap_or_default(),
            ca_file: given.path("tls_ca_file")?,
            cert_file: given.path("tls_cert_file")?,
            key_file: given.path("tls_key_file")?,
            server_name: given.text("tls_server_name")?,
            verify: tls_verify,
            check_hostname: tls_check_hostname,
        };
        config.tls = tls.build()?;
        given.finish()?;
        let inner = match (mode, nodes.as_slice()) {
            (_, []) => {
                return Err(refused(
                    "servers",
                    Refusal::Value,
                    "servers: at least one is needed".to_owned(),
                ))
            }
            (None, nodes) => Arc::new(Client::new(nodes, config)),
            (Some(_), [endpoint]) => {
                Client::with_discovery(endpoint.clone(), config, discovery_settings)
            }
            (Some(_), _) => {
                return Err(refused(
                    "servers",
                    Refusal::Value,
                    "servers: discovery needs exactly one server, the configuration endpoint"
                        .to_owned(),
                ))
            }
        };
        Ok(PyClient {
            inner,
            codec: Arc::new(Codec { serde, compression }),
        })
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
        prefix: Option<&Bound<'_, PyString>>,
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
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = make_key(key, prefix, version)?;
        let client = &*self.inner;
        let item = py
            .detach(|| {
                if client.reads_large() {
                    client.get_large(&key)
                } else {
                    client.get(&key)
                }
            })
            .py_result()?;
        Ok(decode_or(py, &key, item, &self.codec, default))
    }

    /// Whether `key` is in the cache (its value is not decoded).
    #[pyo3(signature = (key, prefix = None, version = None))]
    fn contains(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        prefix: Option<&Bound<'_, PyString>>,
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
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let maker = KeyMaker::new(prefix, version)?;
        let (made, originals) = make_keys(&maker, keys)?;
        let refs = made.all();
        let client = &*self.inner;
        let found = py.detach(|| client.get_many_values(&refs)).py_result()?;
        let result = PyDict::new(py);
        let codec = &*self.codec;
        found.try_for_each(|position, flags, data| {
            if let (Some(original), Some(key)) = (originals.get(position), refs.get(position)) {
                if let Some(value) = decode(py, key, flags, data, codec) {
                    result.set_item(original, value)?;
                }
            }
            Ok::<_, PyErr>(())
        })?;
        Ok(result)
    }

    /// Stores `value`; returns whether it was stored. `exptime` is memcached's: 0 = never
    /// expires, negative = already expired, over 30 days = a Unix time.
    #[pyo3(signature = (key, value, exptime = Exptime::NEVER, prefix = None, version = None))]
    #[pyo3(text_signature = "($self, key, value, exptime=0, prefix=None, version=None)")]
    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        exptime: Exptime,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.store(py, Store::Set, key, value, exptime, prefix, version)
    }

    /// Get-or-lease (see `start_get_or_lease`), blocking: `(value, won)`.
    #[pyo3(signature = (key, lease, early_recompute = None, default = None, prefix = None, version = None, *, token = None, undecodable = false, take = None))]
    #[allow(clippy::too_many_arguments)]
    fn get_or_lease<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        lease: Whole,
        early_recompute: Option<Whole>,
        default: Option<Py<PyAny>>,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'py, PyAny>>,
        token: Option<Vec<u8>>,
        undecodable: bool,
        take: Option<PyRef<'_, Undecodable>>,
    ) -> PyResult<(Bound<'py, PyAny>, bool)> {
        let key = make_key(key, prefix, version)?;
        let request = lease_request(lease, early_recompute, token, take)?;
        let client = &*self.inner;
        let leased = py
            .detach(|| client.get_or_lease(&key, request))
            .py_result()?;
        let value = decode_or_else(py, &key, leased.item, &self.codec, default, undecodable)?;
        Ok((value, leased.won))
    }

    /// Stores `value` only if `key` is not in the cache; returns whether it was stored.
    #[pyo3(signature = (key, value, exptime = Exptime::NEVER, prefix = None, version = None))]
    #[pyo3(text_signature = "($self, key, value, exptime=0, prefix=None, version=None)")]
    fn add(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        exptime: Exptime,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.store(py, Store::Add, key, value, exptime, prefix, version)
    }

    /// Stores every item of `mapping` in one round trip; returns the keys that were not stored.
    #[pyo3(signature = (mapping, exptime = Exptime::NEVER, prefix = None, version = None))]
    #[pyo3(text_signature = "($self, mapping, exptime=0, prefix=None, version=None)")]
    fn set_many<'py>(
        &self,
        py: Python<'py>,
        mapping: &Bound<'py, PyAny>,
        exptime: Exptime,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let maker = KeyMaker::new(prefix, version)?;
        let mut originals = Vec::new();
        let mut values = Vec::new();
        let mut made = KeyList::with_capacity(mapping.len().unwrap_or(0));
        for pair in mapping.call_method0("items")?.try_iter()? {
            let (original, value): (Bound<'py, PyAny>, Bound<'py, PyAny>) = pair?.extract()?;
            made.push_with(|text| maker.push(text, &original).map(drop))?;
            originals.push(original);
            values.push(value);
        }
        let codec = &*self.codec;
        let encoded = values
            .iter()
            .enumerate()
            .map(|(position, value)| encode(value, made.get(position), codec))
            .collect::<PyResult<Vec<_>>>()?;
        let items = encoded
            .iter()
            .enumerate()
            .map(|(position, value)| Ok((made.get(position), value.flags, value.bytes()?)))
            .collect::<PyResult<Vec<_>>>()?;
        let client = &*self.inner;
        let failed = py
            .detach(|| client.set_many(&items, exptime.0))
            .py_result()?;
        PyList::new(py, failed.into_iter().map(|position| &originals[position]))
    }

    /// Deletes `key`; returns whether it was there.
    #[pyo3(signature = (key, prefix = None, version = None))]
    fn delete(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        prefix: Option<&Bound<'_, PyString>>,
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
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let maker = KeyMaker::new(prefix, version)?;
        let (made, _) = make_keys(&maker, keys)?;
        let refs = made.all();
        let client = &*self.inner;
        py.detach(|| client.delete_many(&refs)).py_result()
    }

    /// Adds `delta` (subtracts, when negative) to a counter; `None` when `key` is missing.
    /// memcached counters are unsigned: a decrement stops at 0.
    #[pyo3(signature = (key, delta = Delta::ONE, prefix = None, version = None))]
    #[pyo3(text_signature = "($self, key, delta=1, prefix=None, version=None)")]
    fn incr(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        delta: Delta,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<u64>> {
        let key = make_key(key, prefix, version)?;
        let client = &*self.inner;
        py.detach(|| {
            if delta.negative {
                client.decr(&key, delta.magnitude)
            } else {
                client.incr(&key, delta.magnitude)
            }
        })
        .py_result()
    }

    /// Sets a new expiry on `key`; returns whether it was there.
    #[pyo3(signature = (key, exptime = Exptime::NEVER, prefix = None, version = None))]
    #[pyo3(text_signature = "($self, key, exptime=0, prefix=None, version=None)")]
    fn touch(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        exptime: Exptime,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let key = make_key(key, prefix, version)?;
        let client = &*self.inner;
        py.detach(|| {
            if client.reads_large() {
                client.touch_large(&key, exptime.0)
            } else {
                client.touch(&key, exptime.0)
            }
        })
        .py_result()
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

    // Operations for the asyncio and gevent drivers: the same arguments as the blocking
    // methods, the I/O left to the caller's scheduler (see `Operation`).

    /// `get` as an `Operation`.
    #[pyo3(signature = (key, default = None, prefix = None, version = None))]
    fn start_get(
        &self,
        key: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        let key = make_key(key, prefix, version)?;
        starts::get(&self.inner, key, default, Arc::clone(&self.codec))
    }

    /// `contains` as an `Operation`.
    #[pyo3(signature = (key, prefix = None, version = None))]
    fn start_contains(
        &self,
        key: &Bound<'_, PyAny>,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        starts::contains(&self.inner, make_key(key, prefix, version)?)
    }

    /// `set` as an `Operation`.
    #[pyo3(signature = (key, value, exptime = Exptime::NEVER, prefix = None, version = None))]
    #[pyo3(text_signature = "($self, key, value, exptime=0, prefix=None, version=None)")]
    fn start_set(
        &self,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        exptime: Exptime,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        let key = make_key(key, prefix, version)?;
        starts::store(&self.inner, Store::Set, key, value, exptime.0, &self.codec)
    }

    /// `add` as an `Operation`.
    #[pyo3(signature = (key, value, exptime = Exptime::NEVER, prefix = None, version = None))]
    #[pyo3(text_signature = "($self, key, value, exptime=0, prefix=None, version=None)")]
    fn start_add(
        &self,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        exptime: Exptime,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        let key = make_key(key, prefix, version)?;
        starts::store(&self.inner, Store::Add, key, value, exptime.0, &self.codec)
    }

    /// `delete` as an `Operation`.
    #[pyo3(signature = (key, prefix = None, version = None))]
    fn start_delete(
        &self,
        key: &Bound<'_, PyAny>,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        starts::delete(&self.inner, make_key(key, prefix, version)?)
    }

    /// `incr` as an `Operation`.
    #[pyo3(signature = (key, delta = Delta::ONE, prefix = None, version = None))]
    #[pyo3(text_signature = "($self, key, delta=1, prefix=None, version=None)")]
    fn start_incr(
        &self,
        key: &Bound<'_, PyAny>,
        delta: Delta,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        let key = make_key(key, prefix, version)?;
        let op = if delta.negative {
            Counter::Decr
        } else {
            Counter::Incr
        };
        starts::counter(&self.inner, op, key, delta.magnitude)
    }

    /// `touch` as an `Operation`.
    #[pyo3(signature = (key, exptime = Exptime::NEVER, prefix = None, version = None))]
    #[pyo3(text_signature = "($self, key, exptime=0, prefix=None, version=None)")]
    fn start_touch(
        &self,
        key: &Bound<'_, PyAny>,
        exptime: Exptime,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        starts::touch(&self.inner, make_key(key, prefix, version)?, exptime.0)
    }

    /// `get_many` as an `Operation`.
    #[pyo3(signature = (keys, prefix = None, version = None))]
    fn start_get_many(
        &self,
        keys: &Bound<'_, PyAny>,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        let maker = KeyMaker::new(prefix, version)?;
        starts::get_many(&self.inner, &maker, keys, Arc::clone(&self.codec))
    }

    /// `set_many` as an `Operation`.
    #[pyo3(signature = (mapping, exptime = Exptime::NEVER, prefix = None, version = None))]
    #[pyo3(text_signature = "($self, mapping, exptime=0, prefix=None, version=None)")]
    fn start_set_many(
        &self,
        mapping: &Bound<'_, PyAny>,
        exptime: Exptime,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        let maker = KeyMaker::new(prefix, version)?;
        starts::set_many(&self.inner, &maker, mapping, exptime.0, &self.codec)
    }

    /// `delete_many` as an `Operation`.
    #[pyo3(signature = (keys, prefix = None, version = None))]
    fn start_delete_many(
        &self,
        keys: &Bound<'_, PyAny>,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        let maker = KeyMaker::new(prefix, version)?;
        starts::delete_many(&self.inner, &maker, keys)
    }

    /// `flush_all` as an `Operation`.
    fn start_flush_all(&self) -> PyResult<PyOperation> {
        starts::flush_all(&self.inner)
    }

    /// Get-or-lease as an `Operation` (stampede protection): its result is `(value, won)`,
    /// `value` being `default` on a miss (with `undecodable`, an `Undecodable` for a value found
    /// that cannot be decoded). `won` says this caller computes the value: on a miss, one caller
    /// across every client wins the lease (for `lease` seconds, or until its owner's
    /// `start_release_lease` with the same `token`); on a hit with fewer than `early_recompute`
    /// seconds left, one caller wins an early recompute (nodes with meta commands only). With
    /// `take`, the key is not read: only the lease is asked for.
    #[pyo3(signature = (key, lease, early_recompute = None, default = None, prefix = None, version = None, *, token = None, undecodable = false, take = None))]
    #[allow(clippy::too_many_arguments)]
    fn start_get_or_lease(
        &self,
        key: &Bound<'_, PyAny>,
        lease: Whole,
        early_recompute: Option<Whole>,
        default: Option<Py<PyAny>>,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
        token: Option<Vec<u8>>,
        undecodable: bool,
        take: Option<PyRef<'_, Undecodable>>,
    ) -> PyResult<PyOperation> {
        let key = make_key(key, prefix, version)?;
        let request = lease_request(lease, early_recompute, token, take)?;
        starts::get_or_lease(
            &self.inner,
            key,
            request,
            default,
            undecodable,
            Arc::clone(&self.codec),
        )
    }

    /// Ends the lease won with `start_get_or_lease` and `token`, as an `Operation` (result:
    /// whether it did: not when the lease ran out and another caller holds it now).
    #[pyo3(signature = (key, token, prefix = None, version = None))]
    fn start_release_lease(
        &self,
        key: &Bound<'_, PyAny>,
        token: Vec<u8>,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        starts::release_lease(&self.inner, make_key(key, prefix, version)?, token)
    }

    /// The seconds `key` has left as an `Operation`: `None` when it never expires, 0 when it is
    /// missing. Needs meta commands on the key's node (else `CacheClientError`).
    #[pyo3(signature = (key, prefix = None, version = None))]
    fn start_ttl(
        &self,
        key: &Bound<'_, PyAny>,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        starts::ttl(&self.inner, make_key(key, prefix, version)?)
    }

    /// `incr` as an `Operation` that creates a missing counter holding `initial` (returned as
    /// is, the delta not applied), atomically across clients, expiring per `exptime`. Without
    /// `initial` the result is `None` for a missing counter.
    #[pyo3(signature = (key, delta = Delta::ONE, initial = None, exptime = Exptime::NEVER, prefix = None, version = None))]
    #[pyo3(
        text_signature = "($self, key, delta=1, initial=None, exptime=0, prefix=None, version=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn start_incr_or_create(
        &self,
        key: &Bound<'_, PyAny>,
        delta: Delta,
        initial: Option<&Bound<'_, PyAny>>,
        exptime: Exptime,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        let key = make_key(key, prefix, version)?;
        let initial = match initial {
            None => None,
            Some(value) => {
                let value = counter_value(value)?;
                Some(elasticache_client::Initial {
                    value,
                    // What memcached counts on and every reader reads as an int, whatever the
                    // serde and compression settings: decimal digits with pymemcache's int flag.
                    flags: FLAG_INTEGER,
                    data: value.to_string().into_bytes(),
                    exptime: exptime.0,
                })
            }
        };
        let op = if delta.negative {
            Counter::Decr
        } else {
            Counter::Incr
        };
        starts::count(&self.inner, op, key, delta.magnitude, initial)
    }

    /// Stores the bytes `token` (as they are, flags 0) under `key` if it holds nothing, as an
    /// `Operation` (result: whether it did): a lock's acquire. A failure of the cache raises,
    /// `ignore_exc` or not.
    #[pyo3(signature = (key, token, exptime = Exptime::NEVER, prefix = None, version = None))]
    #[pyo3(text_signature = "($self, key, token, exptime=0, prefix=None, version=None)")]
    fn start_acquire(
        &self,
        key: &Bound<'_, PyAny>,
        token: Vec<u8>,
        exptime: Exptime,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        let key = make_key(key, prefix, version)?;
        starts::acquire(&self.inner, key, token, exptime.0)
    }

    /// Deletes `key` only while it holds exactly the bytes `token` (a lock released by its
    /// owner alone), as an `Operation` (result: whether it deleted). A failure of the cache
    /// raises, `ignore_exc` or not.
    #[pyo3(signature = (key, token, prefix = None, version = None))]
    fn start_delete_if(
        &self,
        key: &Bound<'_, PyAny>,
        token: Vec<u8>,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyOperation> {
        starts::delete_if(&self.inner, make_key(key, prefix, version)?, token)
    }

    /// Each node asked in turn, for operators' tools: a list of dicts with `node`, `hostname`,
    /// `down_for` (seconds it stays marked down, or `None`), `round_trip` (seconds of a
    /// `version` exchange, `None` without an answer), `stats` (`{name: value}`, `None` without
    /// an answer) and `error` (why not, or `None`). Raises only when there is no node to ask
    /// (the configuration endpoint does not answer).
    fn probe<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let client = &*self.inner;
        let probes = py.detach(|| client.probe()).py_result()?;
        let list = PyList::empty(py);
        for probe in probes {
            let dict = PyDict::new(py);
            dict.set_item("node", &probe.node)?;
            dict.set_item("hostname", &probe.hostname)?;
            dict.set_item("down_for", probe.down_for.map(|d| d.as_secs_f64()))?;
            dict.set_item("round_trip", probe.round_trip.map(|d| d.as_secs_f64()))?;
            match probe.stats {
                Ok(stats) => {
                    let values = PyDict::new(py);
                    for (name, value) in stats {
                        values.set_item(name, value)?;
                    }
                    dict.set_item("stats", values)?;
                    dict.set_item("error", py.None())?;
                }
                Err(error) => {
                    dict.set_item("stats", py.None())?;
                    dict.set_item("error", error.to_string())?;
                }
            }
            list.append(dict)?;
        }
        Ok(list)
    }

    /// What this process's client has done so far, as a dict: per node of the current
    /// membership and per client (the README's "Observability" section describes each field).
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        crate::metrics::to_dict(py, &self.inner.metrics())
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
        exptime: Exptime,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let key = make_key(key, prefix, version)?;
        let encoded = encode(value, &key, &self.codec)?;
        let (flags, data) = (encoded.flags, encoded.bytes()?);
        let client = &*self.inner;
        let reply = py
            .detach(|| {
                if client.chunks(data.len()) {
                    client.store_large(command, &key, flags, data, exptime.0)
                } else {
                    client.store(command, &key, flags, data, exptime.0)
                }
            })
            .py_result()?;
        Ok(reply == StoreReply::Stored)
    }
}

/// A counter's initial value: an `int` (not a `bool`) that memcached's unsigned 64-bit
/// counters hold.
fn counter_value(value: &Bound<'_, PyAny>) -> PyResult<u64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "initial must be an int, not {}",
            value.get_type().name()?
        )));
    }
    value.extract().map_err(|_| {
        PyValueError::new_err(format!(
            "initial must be an int from 0 to 2**64 - 1 (memcached counters are unsigned \
             64-bit), not {value}"
        ))
    })
}

/// A get-or-lease request from its Python arguments (a fresh token unless one is given).
fn lease_request(
    lease: Whole,
    early_recompute: Option<Whole>,
    token: Option<Vec<u8>>,
    take: Option<PyRef<'_, Undecodable>>,
) -> PyResult<LeaseRequest> {
    let (lease, early) = lease_terms(lease, early_recompute)?;
    let token = match token {
        Some(token) if token.is_empty() || token.len() > MAX_TOKEN_LEN => {
            return Err(PyValueError::new_err(format!(
                "token must be 1 to {MAX_TOKEN_LEN} bytes"
            )));
        }
        Some(token) => token,
        // Made only when none is given: a caller that passes its own pays for one token.
        None => elasticache_client::lease_token(),
    };
    Ok(LeaseRequest {
        lease,
        early_recompute: early,
        token,
        take: take.map(|value| value.item.clone()),
    })
}

/// The longest lease token taken: a few bytes of randomness are all a token needs.
const MAX_TOKEN_LEN: usize = 1024;

/// A get-or-lease's lease (1 s to 30 days) and early-recompute window (0, off, to 30 days).
fn lease_terms(lease: Whole, early_recompute: Option<Whole>) -> PyResult<(u32, Option<u32>)> {
    let lease = to_u32("lease", whole("lease", lease, 1, MAX_LEASE_SECONDS)?)?;
    let early = early_recompute
        .map(|e| {
            whole("early_recompute", e, 0, MAX_LEASE_SECONDS)
                .and_then(|e| to_u32("early_recompute", e))
        })
        .transpose()?;
    Ok((lease, early))
}

/// A checked number of seconds as a `u32` (within bounds that fit).
fn to_u32(name: &str, value: u64) -> PyResult<u32> {
    u32::try_from(value).map_err(|_| PyValueError::new_err(format!("{name} is out of range")))
}

/// A checked count as a `usize` (it is within bounds that fit every platform's `usize`).
fn to_usize(name: &str, value: u64) -> PyResult<usize> {
    usize::try_from(value).map_err(|_| PyValueError::new_err(format!("{name} is out of range")))
}
