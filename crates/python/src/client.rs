//! The `Client` Python class: a shared native client with Python-facing conversions.
//!
//! Every method that touches the network releases the GIL for the I/O. Keys are made and
//! checked here (`prefix:version:key` when a prefix is passed), values encoded in pymemcache's
//! format, and results decoded with the GIL held again.

use std::path::PathBuf;
use std::sync::Arc;

use elasticache_client::{
    stored, Client, ClientConfig, Command, DeleteReply, DiscoveryConfig, DiscoveryMode, FailureLog,
    Hashing, IncrDecrReply, Initial, ItemList, KeyList, LargeValues, LeaseRequest, LocalCache,
    MigrateFrom, NodeAddress, Overflow, Stats, Store, StoreReply, Tls, TlsSettings, TouchReply,
    Ttl,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyList, PyString};
use pyo3::IntoPyObjectExt;

use crate::args::{whole, Delta, Exptime, Whole, MAX_LEASE_SECONDS};
use crate::compress::{zstd, Compression, Compressor, DEFAULT_INFLATED_CAP};
use crate::declare::commands;
use crate::errors::{refused, IntoPyResult, Refusal};
use crate::keys::{make_key, make_keys, KeyMaker};
use crate::operation::{converted, Convert, Converted, Either, PyOperation};
use crate::options::{serializer_objects, ClusterSpec, Given};
use crate::serde::{
    decode, decode_or, decode_or_else, encode, or_default, Codec, Serializer, Undecodable,
    FLAG_INTEGER,
};

use crate::sign::Signer;

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

/// `servers` parsed, or refused as option `option`'s value.
fn addresses(option: &'static str, servers: &[String]) -> PyResult<Vec<NodeAddress>> {
    servers
        .iter()
        .map(|s| NodeAddress::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| refused(option, Refusal::Value, format!("{option}: {error}")))
}

/// The key placement a `hashing` option names (pymemcache's unless told).
fn hashing(name: Option<&str>) -> Hashing {
    match name {
        Some("pylibmc") => Hashing::Pylibmc,
        Some("ketama") => Hashing::Ketama,
        _ => Hashing::Pymemcache,
    }
}

/// The cluster of `migrate_from`: its servers parsed, its key placement (this client's default
/// unless given), and with one server and discovery not `'off'`, that server as its
/// configuration endpoint (`'auto'`: an endpoint answering `ERROR`, such as ElastiCache
/// Serverless, is one plain node).
fn migrate_from(spec: ClusterSpec) -> PyResult<MigrateFrom> {
    let servers = addresses("migrate_from", &spec.servers)?;
    let hashing = hashing(spec.hashing.as_deref());
    let mode = match spec.discovery.as_deref() {
        Some("off") => None,
        Some("on") => Some(DiscoveryMode::On),
        _ => Some(DiscoveryMode::Auto),
    };
    let discovery = match (mode, servers.len()) {
        (Some(mode), 1) => {
            let mut settings = DiscoveryConfig::default();
            settings.mode = mode;
            Some(settings)
        }
        _ => None,
    };
    Ok(MigrateFrom::new(servers, hashing, discovery))
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

/// The defaults of `exptime` (never expires) and `delta` (1) in the commands' declarations,
/// which take one token.
const NEVER: Exptime = Exptime::NEVER;
const ONE: Delta = Delta::ONE;

// The class's methods: those written by hand (at the usual indentation, so that they read and
// merge as a plain `#[pymethods]` block), then each command once (see `declare::commands!`).
commands! {
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
        let nodes = addresses("servers", &servers)?;
        let hashing = hashing(given.text("hashing")?.as_deref());
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
        let serializer = match (serde, given.text("serializer")?.as_deref()) {
            (Some(serde), Some("pickle") | None) => Serializer::Serde(serde),
            (Some(_), Some(_)) => {
                return Err(refused(
                    "serializer",
                    Refusal::Value,
                    "serializer cannot be set with serde (a serde encodes every value)".to_owned(),
                ))
            }
            (None, Some("pickle") | None) => Serializer::Pickle,
            (None, Some(name)) => Serializer::Objects(serializer_objects(py, name)?),
        };
        let compressor = match given.text("compressor")?.as_deref() {
            Some("zstd") => Compressor::Zstd,
            Some("lz4") => Compressor::Lz4,
            _ => Compressor::Zlib,
        };
        let zstd_dictionary = match given.path("zstd_dictionary")? {
            Some(path) => {
                let bytes = std::fs::read(&path).map_err(|error| {
                    refused(
                        "zstd_dictionary",
                        Refusal::Value,
                        format!("zstd_dictionary cannot be read: {error}"),
                    )
                })?;
                let dictionary = zstd::Dictionary::new(&bytes).map_err(|why| {
                    refused(
                        "zstd_dictionary",
                        Refusal::Value,
                        format!("zstd_dictionary {} cannot be used: {why}", path.display()),
                    )
                })?;
                Some(Arc::new(dictionary))
            }
            None => None,
        };
        let sign_values = given.flag("sign_values")?;
        let signing_key = given.secret("signing_key")?;
        let fallbacks = given.secrets("signing_key_fallbacks")?;
        if sign_values && signing_key.is_none() {
            return Err(refused(
                "signing_key",
                Refusal::Value,
                "sign_values needs a signing_key".to_owned(),
            ));
        }
        let signer = Signer::new(sign_values, signing_key.as_deref(), &fallbacks);
        let compression = Compression {
            compressor,
            zstd_dictionary,
            min_len: to_usize(
                "min_compress_len",
                given.whole("min_compress_len")?.unwrap_or_default(),
            )?,
            level: to_u32(
                "compress_level",
                given.whole("compress_level")?.unwrap_or_default(),
            )?,
            // A value set explicitly bounds values both as stored and once inflated; a
            // large value is inflated whole.
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
        config.warmup_window = given.seconds("warmup_window")?.unwrap_or_default();
        config.migrate_from = given
            .cluster("migrate_from")?
            .map(migrate_from)
            .transpose()?;
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
        config.coalesce_reads = given.flag("coalesce_reads")?;
        config.hot_keys_sample = to_u32(
            "hot_keys_sample",
            given.whole("hot_keys_sample")?.unwrap_or_default(),
        )?;
        if let Some(given) = given.local_cache("local_cache")? {
            let mut local = LocalCache::default();
            local.ttl = given.ttl.unwrap_or(local.ttl);
            if let Some(keys) = given.max_keys {
                local.max_keys = to_usize("local_cache", keys)?;
            }
            if let Some(bytes) = given.max_bytes {
                local.max_bytes = to_usize("local_cache", bytes)?;
            }
            if let Some(reads) = given.min_reads_per_second {
                local.min_reads_per_second = to_u32("local_cache", reads)?;
            }
            config.local_cache = Some(local);
        }
        config.hashing = hashing;
        let gutter_ttl = to_u32("gutter_ttl", given.whole("gutter_ttl")?.unwrap_or_default())?;
        config.gutter_ttl = given.flag("gutter")?.then_some(gutter_ttl);
        config.max_invalidations = to_usize(
            "max_invalidations",
            given.whole("max_invalidations")?.unwrap_or_default(),
        )?;
        config.invalidation_overflow = match given.text("invalidation_overflow")?.as_deref() {
            Some("ignore") => Overflow::Ignore,
            _ => Overflow::Flush,
        };
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
            codec: Arc::new(Codec {
                serializer,
                compression,
                signer,
            }),
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

    /// The local tier's settings (`local_cache`) as in effect, defaults filled in: `ttl`
    /// (seconds), `max_keys`, `max_bytes`, `min_reads_per_second`; `None` without one.
    #[getter]
    fn local_cache<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(local) = self.inner.config().local_cache else {
            return Ok(None);
        };
        let dict = PyDict::new(py);
        dict.set_item("ttl", local.ttl.as_secs_f64())?;
        dict.set_item("max_keys", local.max_keys)?;
        dict.set_item("max_bytes", local.max_bytes)?;
        dict.set_item("min_reads_per_second", local.min_reads_per_second)?;
        Ok(Some(dict))
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

    /// `value` as the serializer makes it, before compression and signing: what a zstd
    /// dictionary is trained on.
    fn serialized<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let encoded = crate::serde::serialize(value, "", &self.codec.serializer)?;
        Ok(PyBytes::new(py, encoded.bytes()?))
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
        let key = make_key(key, prefix, version)?;
        let encoded = encode(value, &key, &self.codec)?;
        let (flags, data) = (encoded.flags, encoded.bytes()?);
        let client = &*self.inner;
        let reply = py
            .detach(|| {
                if client.chunks(data.len()) {
                    client.store_large(Store::Set, &key, flags, data, exptime.0)
                } else {
                    client.store(Store::Set, &key, flags, data, exptime.0)
                }
            })
            .py_result()?;
        Ok(reply == StoreReply::Stored)
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

    /// Each node asked in turn, for operators' tools: a list of dicts with `node`, `hostname`,
    /// `down_for` (seconds it stays marked down, or `None`), `round_trip` (seconds of a
    /// `version` exchange, `None` without an answer), `stats` (`{name: value}`, `None` without
    /// an answer), `error` (why not, or `None`) and `last_failure` (the last failure counted
    /// against the node, in words, or `None`). Raises only when there is no node to ask (the
    /// configuration endpoint does not answer).
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
            dict.set_item("last_failure", probe.last_failure)?;
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

    /// The `n` keys this process reads most, over every node, most read first: `(node, key,
    /// reads per second)`, keys as sent (prefix and version included). Sampled one read in
    /// `hot_keys_sample`; empty when that is 0.
    fn hot_keys(&self, n: usize) -> Vec<(String, String, f64)> {
        let every = self.inner.config().hot_keys_sample;
        let mut hot: Vec<(String, String, f64)> = self
            .inner
            .topology()
            .nodes()
            .iter()
            .flat_map(|node| {
                node.hot_keys(n, every)
                    .into_iter()
                    .map(|hot| (node.address.name.clone(), hot.key, hot.reads_per_second))
            })
            .collect();
        hot.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.1.cmp(&b.1)));
        hot.truncate(n);
        hot
    }

    /// The `n` largest values this process read, over every node, largest first: `(node,
    /// key, bytes)` (sampled as `hot_keys`).
    fn largest_values(&self, n: usize) -> Vec<(String, String, usize)> {
        let mut large: Vec<(String, String, usize)> = self
            .inner
            .topology()
            .nodes()
            .iter()
            .flat_map(|node| {
                node.largest_values(n)
                    .into_iter()
                    .map(|large| (node.address.name.clone(), large.key, large.bytes))
            })
            .collect();
        large.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.cmp(&b.1)));
        large.truncate(n);
        large
    }

    /// Closes the idle pooled connections of this process (connections in use close when
    /// their operation ends). Not needed in normal use: pools are meant to outlive requests.
    fn close_idle(&self) {
        for node in self.inner.topology().nodes() {
            node.close_idle();
        }
    }
}

    // Each command, declared once (`declare::commands!`): its `start_*` method (an `Operation`
    // for the asyncio and gevent drivers, `_futures.run` and `_green.run`: the same arguments,
    // key errors raised at once, the I/O left to the caller's scheduler), its blocking method
    // (the same operation run on the calling thread, the GIL released while it waits) and its
    // stub in `_native.pyi`.

    derived {
        /// Whether `key` is in the cache (its value is not decoded).
        contains / start_contains(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "bool" {
            let key = make_key(key, prefix, version)?;
            let operation = self.inner.start_get(key).py_result()?;
            converted(operation, |py, _, found| to_object(py, found.py_result()?.is_some()))
        }

        /// Stores `value` only if `key` is not in the cache; returns whether it was stored.
        add / start_add(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            value: &Bound<'_, PyAny> => "Any",
            exptime: Exptime = NEVER => "int = 0",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "bool" text "($self, key, value, exptime=0, prefix=None, version=None)" {
            self.store(Store::Add, key, value, exptime, prefix, version)?
        }

        /// Deletes `key`; returns whether it was there.
        delete / start_delete(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "bool" {
            let key = make_key(key, prefix, version)?;
            let operation = self.inner.start_delete(key).py_result()?;
            converted(operation, |py, _, reply| {
                to_object(py, reply.py_result()? == DeleteReply::Deleted)
            })
        }

        /// `delete` of the key leaving its `get_or_set` lease alone (a `delete` ends it): a
        /// computation takes back its value so once it finds its own lease ended, which by then
        /// may be another caller's. Returns whether the key was there.
        discard / start_discard(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "bool" {
            let key = make_key(key, prefix, version)?;
            let operation = self.inner.start_discard(key).py_result()?;
            converted(operation, |py, _, reply| {
                to_object(py, reply.py_result()? == DeleteReply::Deleted)
            })
        }

        /// Deletes the keys in one round trip; returns how many were there.
        delete_many / start_delete_many(
            &self,
            keys: &Bound<'_, PyAny> => "Iterable[Any]",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "int" {
            let maker = KeyMaker::new(prefix, version)?;
            let (made, _) = make_keys(&maker, keys)?;
            let operation = self.inner.start_delete_many(made).py_result()?;
            converted(operation, |py, _, deleted| to_object(py, deleted.py_result()?))
        }

        /// Adds `delta` (subtracts, when negative, stopping at 0: memcached counters are
        /// unsigned) to a counter; `None` when `key` is missing. A `delta` that is not an `int`
        /// raises `TypeError`; one of 2**64 or more in magnitude `ValueError`.
        incr / start_incr(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            delta: Delta = ONE => "int = 1",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "int | None" text "($self, key, delta=1, prefix=None, version=None)" {
            let key = make_key(key, prefix, version)?;
            let operation = self
                .inner
                .start_counter(delta.counter(), key, delta.magnitude)
                .py_result()?;
            converted(operation, |py, _, reply| {
                let value = match reply.py_result()? {
                    IncrDecrReply::Value(value) => Some(value),
                    _ => None,
                };
                to_object(py, value)
            })
        }

        /// Sets a new expiry on `key`; returns whether it was there.
        touch / start_touch(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            exptime: Exptime = NEVER => "int = 0",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "bool" text "($self, key, exptime=0, prefix=None, version=None)" {
            let key = make_key(key, prefix, version)?;
            if self.inner.reads_large() {
                // A large value's chunks are touched with its index.
                let operation = self.inner.start_touch_large(key, exptime.0).py_result()?;
                Either::Right(converted(operation, |py, _, touched| {
                    to_object(py, touched.py_result()?)
                }))
            } else {
                let operation = self.inner.start_touch(key, exptime.0).py_result()?;
                Either::Left(converted(operation, |py, _, reply| {
                    to_object(py, reply.py_result()? == TouchReply::Touched)
                }))
            }
        }

        /// Empties every node.
        flush_all / start_flush_all(&self) -> "None" {
            let operation = self.inner.start_flush_all().py_result()?;
            converted(operation, |py, client, replies| {
                client.flushed(replies).py_result()?;
                Ok(py.None())
            })
        }

        /// Get-or-lease (stampede protection): `(value, won)`, `value` being `default` on a
        /// miss (with `undecodable`, an `Undecodable` for a value found that cannot be decoded)
        /// and `won` saying whether this caller computes the value: on a miss, one caller
        /// across every client wins the lease (for `lease` seconds, or until its owner's
        /// `release_lease` with the same `token`, a fresh one when not given); on a hit with
        /// fewer than `early_recompute` seconds left, one caller wins an early recompute (on
        /// nodes with meta commands). With `take` (an `Undecodable` read before), the lease is
        /// asked for at once without reading the key; the winner's recheck takes that value
        /// for a miss.
        get_or_lease / start_get_or_lease(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            lease: Whole => "int",
            early_recompute: Option<Whole> = None => "int | None = None",
            default: Option<Py<PyAny>> = None => "Any = None",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) * (
            token: Option<Vec<u8>> = None => "bytes | None = None",
            undecodable: bool = false => "bool = False",
            take: Option<PyRef<'_, Undecodable>> = None => "Undecodable | None = None",
        ) -> "tuple[Any, bool]" {
            let key = make_key(key, prefix, version)?;
            let request = lease_request(lease, early_recompute, token, take)?;
            let operation = self
                .inner
                .start_get_or_lease(key.clone(), request)
                .py_result()?;
            let codec = Arc::clone(&self.codec);
            converted(operation, move |py, _, leased| {
                let leased = leased.py_result()?;
                let value = decode_or_else(py, &key, leased.item, &codec, default, undecodable)?;
                to_object(py, (value, leased.won))
            })
        }

        /// Ends the lease won with `get_or_lease` and `token`, if it still holds that token;
        /// returns whether it did (not when the lease ran out and another caller holds it
        /// now).
        release_lease / start_release_lease(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            token: Vec<u8> => "bytes",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "bool" {
            let key = make_key(key, prefix, version)?;
            let operation = self.inner.start_release_lease(key, token).py_result()?;
            converted(operation, |py, _, released| to_object(py, released.py_result()?))
        }

        /// The seconds `key` has left: `None` when it never expires, 0 when it is missing.
        /// Needs meta commands on the key's node (else `CacheClientError`).
        ttl / start_ttl(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "int | None" {
            let key = make_key(key, prefix, version)?;
            let operation = self.inner.start_ttl(key).py_result()?;
            converted(operation, |py, _, ttl| {
                // django-redis's convention: 0 for a missing key, None for one that never
                // expires.
                let seconds = match ttl.py_result()? {
                    Ttl::Missing => Some(0),
                    Ttl::Forever => None,
                    Ttl::Seconds(seconds) => Some(seconds),
                };
                to_object(py, seconds)
            })
        }

        /// `incr` that creates a missing counter holding `initial` (returned as is, the delta
        /// not applied), atomically across clients, expiring per `exptime`; without `initial`,
        /// `None` for a missing counter.
        incr_or_create / start_incr_or_create(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            delta: Delta = ONE => "int = 1",
            initial: Option<&Bound<'_, PyAny>> = None => "int | None = None",
            exptime: Exptime = NEVER => "int = 0",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "int | None" text "($self, key, delta=1, initial=None, exptime=0, prefix=None, version=None)" {
            let key = make_key(key, prefix, version)?;
            let initial = match initial {
                None => None,
                Some(value) => {
                    let value = counter_value(value)?;
                    Some(Initial {
                        value,
                        // What memcached counts on and every reader reads as an int, whatever
                        // the serde and compression settings: decimal digits with pymemcache's
                        // int flag.
                        flags: FLAG_INTEGER,
                        data: value.to_string().into_bytes(),
                        exptime: exptime.0,
                    })
                }
            };
            let operation = self
                .inner
                .start_count(delta.counter(), key, delta.magnitude, initial)
                .py_result()?;
            converted(operation, |py, _, value| to_object(py, value.py_result()?))
        }

        /// Stores the bytes `token` (as they are, flags 0) under `key` if it holds nothing;
        /// returns whether it did (a lock's acquire). A failure of the cache raises,
        /// `ignore_exc` or not.
        acquire / start_acquire(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            token: Vec<u8> => "bytes",
            exptime: Exptime = NEVER => "int = 0",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "bool" text "($self, key, token, exptime=0, prefix=None, version=None)" {
            let key = make_key(key, prefix, version)?;
            let operation = self.inner.start_acquire(key, token, exptime.0).py_result()?;
            converted(operation, |py, _, stored| to_object(py, stored.py_result()?))
        }

        /// Deletes `key` only while it holds exactly the bytes `token` (a lock released by its
        /// owner alone); returns whether it did. A failure of the cache raises, `ignore_exc`
        /// or not.
        delete_if / start_delete_if(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            token: Vec<u8> => "bytes",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "bool" {
            let key = make_key(key, prefix, version)?;
            let operation = self.inner.start_delete_if(key, token).py_result()?;
            converted(operation, |py, _, deleted| to_object(py, deleted.py_result()?))
        }
    }

    native {
        /// The value of `key`, or `default` when it is missing or unreadable.
        get / start_get(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            default: Option<Py<PyAny>> = None => "Any = None",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "Any" {
            let key = make_key(key, prefix, version)?;
            let codec = Arc::clone(&self.codec);
            if self.inner.reads_large() {
                // A large value's chunks are read in a second round and joined.
                let operation = self.inner.start_get_large(key.clone()).py_result()?;
                Either::Right(converted(operation, move |py, _, found| {
                    let mut value = None;
                    found.py_result()?.try_for_each(|_, flags, data| {
                        value = decode(py, &key, flags, data, &codec);
                        Ok::<_, PyErr>(())
                    })?;
                    Ok(or_default(py, value, default).unbind())
                }))
            } else {
                let operation = self.inner.start_get(key.clone()).py_result()?;
                Either::Left(converted(operation, move |py, _, found| {
                    Ok(decode_or(py, &key, found.py_result()?, &codec, default).unbind())
                }))
            }
        }

        /// The values of the keys that are in the cache, as a dict keyed by the keys given.
        get_many / start_get_many(
            &self,
            keys: &Bound<'_, PyAny> => "Iterable[Any]",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "dict[Any, Any]" {
            let maker = KeyMaker::new(prefix, version)?;
            let (made, originals) = make_keys(&maker, keys)?;
            let originals: Vec<Py<PyAny>> = originals.into_iter().map(Bound::unbind).collect();
            let operation = self.inner.start_get_many(made.clone()).py_result()?;
            let codec = Arc::clone(&self.codec);
            converted(operation, move |py, _, found| {
                let found = found.py_result()?;
                let result = PyDict::new(py);
                found.try_for_each(|position, flags, data| {
                    if let Some(original) = originals.get(position) {
                        if let Some(value) = decode(py, made.get(position), flags, data, &codec) {
                            result.set_item(original.bind(py), value)?;
                        }
                    }
                    Ok::<_, PyErr>(())
                })?;
                Ok(result.into_any().unbind())
            })
        }

        /// Stores `value`; returns whether it was stored. `exptime` is memcached's: 0 = never
        /// expires, negative = already expired, over 30 days = a Unix time.
        set / start_set(
            &self,
            key: &Bound<'_, PyAny> => "Any",
            value: &Bound<'_, PyAny> => "Any",
            exptime: Exptime = NEVER => "int = 0",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "bool" text "($self, key, value, exptime=0, prefix=None, version=None)" {
            self.store(Store::Set, key, value, exptime, prefix, version)?
        }

        /// Stores every item of `mapping` in one round trip; returns the keys that were not
        /// stored.
        set_many / start_set_many(
            &self,
            mapping: &Bound<'_, PyAny> => "Mapping[Any, Any]",
            exptime: Exptime = NEVER => "int = 0",
            prefix: Option<&Bound<'_, PyString>> = None => "str | None = None",
            version: Option<&Bound<'_, PyAny>> = None => "Any = None",
        ) -> "list[Any]" text "($self, mapping, exptime=0, prefix=None, version=None)" {
            let maker = KeyMaker::new(prefix, version)?;
            let mut items = ItemList::with_capacity(mapping.len().unwrap_or(0));
            let mut originals: Vec<Py<PyAny>> = Vec::with_capacity(mapping.len().unwrap_or(0));
            let mut key = String::new();
            for pair in mapping.call_method0("items")?.try_iter()? {
                let (original, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair?.extract()?;
                key.clear();
                maker.push(&mut key, &original)?;
                let encoded = encode(&value, &key, &self.codec)?;
                items.push(&key, encoded.flags, encoded.bytes()?);
                originals.push(original.unbind());
            }
            let operation = self.inner.start_set_many(items, exptime.0).py_result()?;
            converted(operation, move |py, _, failed| {
                let failed = failed.py_result()?;
                let list = PyList::new(
                    py,
                    failed
                        .into_iter()
                        .filter_map(|position| originals.get(position).map(|o| o.bind(py))),
                )?;
                Ok(list.into_any().unbind())
            })
        }
    }
}

impl PyClient {
    /// A storage command's operation (`set`, `add`): the key made and the value encoded
    /// here, with the GIL; a value stored as chunks (`large_values`) goes through the core's
    /// large-value store.
    // The two operations' types are unnameable (`impl` types and closures): no alias can stand
    // for them.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn store(
        &self,
        command: Store,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        exptime: Exptime,
        prefix: Option<&Bound<'_, PyString>>,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<
        Either<
            Converted<impl Command<Output = StoreReply> + Send + 'static, impl Convert<StoreReply>>,
            Converted<impl Command<Output = Vec<usize>> + Send + 'static, impl Convert<Vec<usize>>>,
        >,
    > {
        let key = make_key(key, prefix, version)?;
        let encoded = encode(value, &key, &self.codec)?;
        let (flags, data) = (encoded.flags, encoded.bytes()?.to_vec());
        if self.inner.chunks(data.len()) {
            // Stored as chunks and an index (`large_values`).
            let operation = self
                .inner
                .start_store_large(command, key, flags, data, exptime.0)
                .py_result()?;
            return Ok(Either::Right(converted(operation, |py, _, not_stored| {
                to_object(py, stored(&not_stored.py_result()?) == StoreReply::Stored)
            })));
        }
        let operation = self
            .inner
            .start_store(command, key, flags, data, exptime.0)
            .py_result()?;
        Ok(Either::Left(converted(operation, |py, _, reply| {
            to_object(py, reply.py_result()? == StoreReply::Stored)
        })))
    }
}

fn to_object<'py>(py: Python<'py>, value: impl IntoPyObject<'py>) -> PyResult<Py<PyAny>> {
    value.into_py_any(py)
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
