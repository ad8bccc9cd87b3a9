//! Every option, once: its name, what it accepts, its default and what it means.
//!
//! [`OPTIONS`] is the one table. The native `Client` takes the options marked `native` as
//! keyword arguments (`**options`, their defaults from here); `_native.OPTIONS` hands the table
//! to Python, where `options.py` derives `DEFAULTS` from it and validates a Django `OPTIONS`
//! dict by calling `_native.check_option`, the same check the `Client` applies; the docs'
//! option table is checked against it (`tests/test_docs.py`). A refused value raises
//! `TypeError` (wrong type) or `ValueError` (out of range) with an `option` attribute naming
//! it (`errors::refused`), so that no caller parses a message to learn which option it was.

use std::cell::Cell;
use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString, PyTuple};

use crate::args::{
    keepalive, seconds, Number, Whole, Zero, DEFAULT_MAX_LARGE_VALUE_LENGTH, KEEPALIVE_SECONDS,
    MAX_LARGE_VALUE_LENGTH, MAX_LEASE_SECONDS, MAX_POOL_SIZE, MAX_RETRY_ATTEMPTS, MAX_SECONDS,
    MAX_VALUE_LENGTH, MIN_VALUE_LENGTH,
};
use crate::errors::{refused, Refusal};

/// The most `max_invalidations` accepts: a million keys of a few dozen bytes per node.
pub const MAX_INVALIDATIONS: u64 = 1_000_000;

/// The most keys `local_cache`'s `max_keys` accepts.
pub const MAX_LOCAL_KEYS: u64 = 10_000_000;

/// The most bytes `local_cache`'s `max_bytes` accepts (64 GiB).
pub const MAX_LOCAL_BYTES: u64 = 64 << 30;

/// The most `local_cache`'s `min_reads_per_second` accepts.
pub const MAX_MIN_READS: u64 = 1_000_000;

/// A Python literal: a default, or one of the values a choice accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Literal {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'static str),
}

impl Literal {
    fn to_object<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            Literal::None => py.None().into_bound(py),
            Literal::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
            Literal::Int(i) => i.into_pyobject(py)?.into_any(),
            Literal::Float(f) => f.into_pyobject(py)?.into_any(),
            Literal::Str(s) => PyString::new(py, s).into_any(),
        })
    }

    /// As Python shows it (`repr`), for messages.
    fn shown(self) -> String {
        match self {
            Literal::None => "None".to_owned(),
            Literal::Bool(true) => "True".to_owned(),
            Literal::Bool(false) => "False".to_owned(),
            Literal::Int(i) => i.to_string(),
            Literal::Float(f) => format!("{f:?}"),
            Literal::Str(s) => format!("'{s}'"),
        }
    }

    /// Whether `value` is this literal (of the same type: `1` is not `True`).
    fn matches(self, value: &Bound<'_, PyAny>) -> bool {
        match self {
            Literal::None => value.is_none(),
            Literal::Bool(b) => {
                value.is_instance_of::<PyBool>() && value.is_truthy().ok() == Some(b)
            }
            Literal::Str(s) => value
                .cast::<PyString>()
                .is_ok_and(|text| text.to_str().is_ok_and(|t| t == s)),
            Literal::Int(_) | Literal::Float(_) => false,
        }
    }

    /// Whether `value` has this literal's type (a choice given a value of another type is a
    /// `TypeError`, of its type but not among them a `ValueError`).
    fn same_type(self, value: &Bound<'_, PyAny>) -> bool {
        match self {
            Literal::None => value.is_none(),
            Literal::Bool(_) => value.is_instance_of::<PyBool>(),
            Literal::Str(_) => value.is_instance_of::<PyString>(),
            Literal::Int(_) | Literal::Float(_) => false,
        }
    }
}

/// What an option accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// `True` or `False` (a number is not taken for a bool: it is a slip).
    Flag,
    /// Seconds (an `int` or `float`, not a `bool`) from 0 to [`MAX_SECONDS`]; `zero` says what 0
    /// is, `none` whether `None` is accepted (no deadline, or off).
    Seconds { zero: Zero, none: bool },
    /// An `int` (not a `bool`) from `low` to `high`; with `none`, `None` too (the option's
    /// "unset").
    Whole { low: u64, high: u64, none: bool },
    /// One of these literals.
    Choice(&'static [Literal]),
    /// TCP keepalive idle time: `False`/`None` (off), `True` (60 s), or seconds within
    /// [`KEEPALIVE_SECONDS`], given as a number or as pymemcache's `KeepaliveOpts` (its
    /// `idle`). 0 is refused: `None` or `False` say off.
    Keepalive,
    /// A failure log level: "WARNING", "INFO", "ERROR" (any case, or the `logging` constant),
    /// or `None` (nothing logged).
    LogLevel,
    /// A logger name: a non-empty `str`.
    LoggerName,
    /// `None` or the path (`str` or path object) of a readable file.
    File,
    /// `None` or a DNS name or IP address (non-empty UTF-8 text without spaces).
    ServerName,
    /// `None` or an object with `serialize()` and `deserialize()` methods.
    Serde,
    /// "pickle", "json", "msgpack" (its library importable), or the dotted path of a class
    /// (made with no arguments) or object with `dumps()` and `loads()`.
    Serializer,
    /// `None` or a secret: non-empty `str` or `bytes`.
    Secret,
    /// `None` or a list or tuple of secrets.
    Secrets,
    /// `None` or an `ssl.SSLContext`.
    SslContext,
    /// `None` or another cluster: its `LOCATION` (a `host:port` string, several separated by
    /// `;` or `,`, or a list of them), or a dict with that `LOCATION` and optionally its own
    /// `hashing` and `discovery`.
    Cluster,
    /// `None` (off) or a dict of the local tier's settings, each optional: `ttl` (seconds
    /// above 0), `max_keys`, `max_bytes` and `min_reads_per_second` (see [`LocalCacheSpec`]).
    LocalCache,
}

/// One option.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub name: &'static str,
    pub kind: Kind,
    /// The default under Django (`DEFAULTS`).
    pub default: Literal,
    /// The native `Client`'s default where it differs (`discovery`: a `Client` given servers is
    /// static unless asked; Django's `LOCATION` decides what "auto" means).
    pub client_default: Option<Literal>,
    /// Whether the native `Client` takes it (else it is the Django backend's alone).
    pub native: bool,
    /// What it accepts, in words, where the kind's own words would not do.
    pub accepts: Option<&'static str>,
    /// What it means, in one line.
    pub meaning: &'static str,
}

const fn option(
    name: &'static str,
    kind: Kind,
    default: Literal,
    meaning: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        kind,
        default,
        client_default: None,
        native: true,
        accepts: None,
        meaning,
    }
}

impl OptionSpec {
    /// Not taken by the native `Client`: the Django backend's alone.
    const fn django(self) -> Self {
        OptionSpec {
            native: false,
            ..self
        }
    }

    const fn accepts(self, accepts: &'static str) -> Self {
        OptionSpec {
            accepts: Some(accepts),
            ..self
        }
    }

    const fn client_default(self, default: Literal) -> Self {
        OptionSpec {
            client_default: Some(default),
            ..self
        }
    }

    /// What it accepts, in the words of the error messages.
    pub fn accepted(&self) -> String {
        if let Some(words) = self.accepts {
            return words.to_owned();
        }
        match self.kind {
            Kind::Flag => "True or False".to_owned(),
            Kind::Seconds { zero, none } => {
                let low = if zero == Zero::Refused { "> 0" } else { ">= 0" };
                let none = match (none, zero) {
                    (false, _) => "",
                    (true, Zero::Refused) => ", or None for no deadline",
                    (true, _) => ", or None",
                };
                format!("a number of seconds {low} and <= {MAX_SECONDS:.0}{none}")
            }
            Kind::Whole { low, high, none } => {
                let none = if none { ", or None" } else { "" };
                format!("a whole number from {low} to {high}{none}")
            }
            Kind::Choice(values) => {
                let shown: Vec<String> = values.iter().map(|v| v.shown()).collect();
                match shown.split_last() {
                    Some((last, rest)) if !rest.is_empty() => {
                        format!("{} or {last}", rest.join(", "))
                    }
                    _ => shown.join(""),
                }
            }
            Kind::Keepalive => format!(
                "False/None (off), True (60 s), seconds from {:.0} to {:.0}, or a KeepaliveOpts",
                KEEPALIVE_SECONDS.0, KEEPALIVE_SECONDS.1
            ),
            Kind::LogLevel => {
                "'WARNING', 'INFO', 'ERROR' (or the logging constant), or None".to_owned()
            }
            Kind::LoggerName => "a logger name (a non-empty string)".to_owned(),
            Kind::File => "None or the path of a readable file".to_owned(),
            Kind::ServerName => "None or a DNS name or IP address".to_owned(),
            Kind::Serde => {
                "None or an object with serialize() and deserialize() methods".to_owned()
            }
            Kind::Serializer => "'pickle', 'json', 'msgpack' or the dotted path of a class \
                                 with dumps() and loads()"
                .to_owned(),
            Kind::Secret => "None or a non-empty str or bytes".to_owned(),
            Kind::Secrets => "None or a list of non-empty str or bytes".to_owned(),
            Kind::SslContext => "None or an ssl.SSLContext".to_owned(),
            Kind::Cluster => "None, a LOCATION ('host:port', several separated by ';', or a \
                              list), or a dict with 'LOCATION' and optionally 'hashing' and \
                              'discovery'"
                .to_owned(),
            Kind::LocalCache => format!(
                "None or a dict with any of 'ttl' (seconds, > 0 and <= {MAX_SECONDS}), \
                 'max_keys' (1 to {MAX_LOCAL_KEYS}), 'max_bytes' (1024 to {MAX_LOCAL_BYTES}) and \
                 'min_reads_per_second' (0 to {MAX_MIN_READS})"
            ),
        }
    }

    /// The refusal of `value`: "`name` must be `accepted`, not `value!r`".
    fn refuse(&self, value: &Bound<'_, PyAny>, refusal: Refusal) -> PyErr {
        // A secret is never shown, only its type.
        let shown = if matches!(self.kind, Kind::Secret | Kind::Secrets) {
            value
                .get_type()
                .name()
                .map_or_else(|_| "a secret".to_owned(), |n| format!("a {n} (not shown)"))
        } else {
            value
                .repr()
                .map_or_else(|_| "<unprintable>".to_owned(), |r| r.to_string())
        };
        refused(
            self.name,
            refusal,
            format!("{} must be {}, not {shown}", self.name, self.accepted()),
        )
    }

    /// Whether `None` is among what it accepts.
    fn accepts_none(&self) -> bool {
        match self.kind {
            Kind::Seconds { none, .. } | Kind::Whole { none, .. } => none,
            Kind::Choice(values) => values.contains(&Literal::None),
            Kind::Keepalive
            | Kind::LogLevel
            | Kind::File
            | Kind::ServerName
            | Kind::Serde
            | Kind::Secret
            | Kind::Secrets
            | Kind::SslContext
            | Kind::Cluster
            | Kind::LocalCache => true,
            Kind::Flag | Kind::LoggerName | Kind::Serializer => false,
        }
    }
}

const SECONDS: Kind = Kind::Seconds {
    zero: Zero::Allowed,
    none: false,
};
const DEADLINE: Kind = Kind::Seconds {
    zero: Zero::Refused,
    none: true,
};
// The table's literals, short.
use Literal::{Bool, Float, Int, Str};

/// Every option, in the order the documentation lists them by topic.
pub const OPTIONS: &[OptionSpec] = &[
    // Auto Discovery (with a single LOCATION: the configuration endpoint).
    option(
        "discovery",
        Kind::Choice(&[Str("auto"), Str("on"), Str("off")]),
        Str("auto"),
        "with one LOCATION: 'auto' (an endpoint answering ERROR is one plain node), 'on' (only \
         an ElastiCache configuration endpoint), 'off' (a plain node)",
    )
    .client_default(Str("off")),
    option(
        "discovery_interval",
        Kind::Seconds {
            zero: Zero::MeansNone,
            none: true,
        },
        Float(60.0),
        "seconds between background discoveries (jittered); 0 or None: only at start and while \
         the ring is empty",
    ),
    option(
        "discovery_retry_delay",
        SECONDS,
        Float(0.0),
        "pause before retrying a failed discovery (a floor of 1 s applies, with backoff)",
    ),
    option(
        "use_vpc_ip_address",
        Kind::Flag,
        Bool(true),
        "connect to each node's IP from the discovery reply, else its hostname",
    ),
    // Connections and pooling.
    option(
        "connect_timeout",
        DEADLINE,
        Float(1.0),
        "seconds for a whole connect; None: as long as the OS waits",
    ),
    option(
        "timeout",
        DEADLINE,
        Float(1.0),
        "seconds for a whole operation; None: no deadline",
    ),
    option(
        "use_pooling",
        Kind::Flag,
        Bool(true),
        "accepted for compatibility: connections are always pooled per process",
    )
    .django(),
    option(
        "max_pool_size",
        Kind::Whole {
            low: 1,
            high: MAX_POOL_SIZE,
            none: true,
        },
        Int(64),
        "connections per node and per process (None: the default)",
    ),
    option(
        "pool_idle_timeout",
        Kind::Seconds {
            zero: Zero::MeansNone,
            none: false,
        },
        Int(0),
        "close connections idle this many seconds (0: keep them)",
    ),
    option("no_delay", Kind::Flag, Bool(true), "TCP_NODELAY"),
    option(
        "socket_keepalive",
        Kind::Keepalive,
        Bool(false),
        "TCP keepalive idle time",
    ),
    // Failures.
    option(
        "ignore_exc",
        Kind::Flag,
        Bool(false),
        "a failing cache reads as a miss / not stored instead of raising",
    ),
    option(
        "retry_attempts",
        Kind::Whole {
            low: 1,
            high: MAX_RETRY_ATTEMPTS,
            none: false,
        },
        Int(2),
        "failures in a row after which a node is marked down",
    ),
    option(
        "retry_timeout",
        SECONDS,
        Float(1.0),
        "seconds a node is left alone after a failure short of retry_attempts",
    ),
    option(
        "dead_timeout",
        SECONDS,
        Float(60.0),
        "seconds a node marked down is left alone",
    ),
    // Cluster events: gutter and undelivered invalidations.
    option(
        "gutter",
        Kind::Flag,
        Bool(true),
        "while a node is down, its keys are served by the next live node of their rendezvous \
         order, with writes there kept gutter_ttl seconds at most",
    ),
    option(
        "gutter_ttl",
        Kind::Whole {
            low: 1,
            high: MAX_LEASE_SECONDS,
            none: false,
        },
        Int(10),
        "seconds a value written to a gutter lives at most (never longer than its own timeout)",
    ),
    option(
        "max_invalidations",
        Kind::Whole {
            low: 0,
            high: MAX_INVALIDATIONS,
            none: false,
        },
        Int(10_000),
        "deletes and writes that could not reach a node, remembered per node and replayed \
         before it serves reads again (0: none, replay off)",
    ),
    option(
        "invalidation_overflow",
        Kind::Choice(&[Str("flush"), Str("ignore")]),
        Str("flush"),
        "past max_invalidations: 'flush' empties the node before it serves again, 'ignore' \
         replays what was kept",
    ),
    // Cluster events: scale-out and moves between clusters.
    option(
        "warmup_window",
        SECONDS,
        Float(60.0),
        "seconds after a membership change during which a miss on a moved key reads its \
         previous owner and copies the value (0: off)",
    ),
    option(
        "migrate_from",
        Kind::Cluster,
        Literal::None,
        "the cluster being moved away from: misses read through from it and are copied; \
         writes and deletes delete there",
    ),
    // Hot keys.
    option(
        "local_cache",
        Kind::LocalCache,
        Literal::None,
        "serve the keys this process reads most from its own memory, each for at most its \
         ttl (None: off)",
    ),
    option(
        "coalesce_reads",
        Kind::Flag,
        Bool(true),
        "identical reads in flight in this process share one request",
    ),
    option(
        "hot_keys_sample",
        Kind::Whole {
            low: 0,
            high: 1_000_000,
            none: false,
        },
        Int(100),
        "one read in this many is sampled for cache.hot_keys() (0: none)",
    ),
    option(
        "hot_keys_report",
        Kind::Seconds {
            zero: Zero::Refused,
            none: true,
        },
        Literal::None,
        "each worker writes its hot keys into the cluster at most this often, for manage.py \
         elasticache --hot-keys (None: never)",
    )
    .django(),
    // Observability.
    option(
        "counters",
        Kind::Flag,
        Bool(true),
        "keep the counters behind cache.metrics()",
    ),
    option(
        "metrics",
        Kind::Choice(&[Literal::None, Str("prometheus"), Str("opentelemetry")]),
        Literal::None,
        "export the counters through prometheus_client or OpenTelemetry",
    )
    .django(),
    option(
        "tracing",
        Kind::Choice(&[Literal::None, Str("opentelemetry")]),
        Literal::None,
        "a CLIENT span per cache call",
    )
    .django(),
    option(
        "gevent",
        Kind::Choice(&[Str("auto"), Bool(true), Bool(false)]),
        Str("auto"),
        "whether blocking calls yield to gevent's hub ('auto': when gevent patched socket)",
    )
    .django(),
    // Stampede protection of get_or_set.
    option(
        "stampede_protection",
        Kind::Flag,
        Bool(true),
        "get_or_set with a callable default computes a missing value once across processes",
    )
    .django(),
    option(
        "stampede_lease",
        Kind::Whole {
            low: 1,
            high: MAX_LEASE_SECONDS,
            none: false,
        },
        Int(10),
        "seconds a caller's right to compute a missing value lasts",
    )
    .django(),
    option(
        "stampede_wait",
        Kind::Seconds {
            zero: Zero::Refused,
            none: false,
        },
        Float(15.0),
        "the longest a caller waits for another's value",
    )
    .django(),
    option(
        "early_recompute",
        Kind::Whole {
            low: 1,
            high: MAX_LEASE_SECONDS,
            none: true,
        },
        Literal::None,
        "seconds before expiry when one caller refreshes a value early (None: off)",
    )
    .django()
    .accepts("None or a whole number of seconds from 1 to 2592000"),
    // Failure logs.
    option(
        "logger",
        Kind::LoggerName,
        Str("elasticache_client.failures"),
        "the Python logger failure records go to",
    ),
    option(
        "failure_log_level",
        Kind::LogLevel,
        Str("WARNING"),
        "level of failure records (None: none logged)",
    ),
    // Values and keys.
    option(
        "serde",
        Kind::Serde,
        Literal::None,
        "how values are encoded, every one (None: the serializer's format)",
    ),
    option(
        "serializer",
        Kind::Serializer,
        Str("pickle"),
        "what values other than bytes, str and int become: pickle (pymemcache's format), \
         JSON, msgpack, or your class's dumps() (not with serde)",
    ),
    option(
        "allow_unicode_keys",
        Kind::Flag,
        Bool(true),
        "accepted; keys are always UTF-8 on the wire",
    )
    .django(),
    option(
        "default_noreply",
        Kind::Flag,
        Bool(false),
        "accepted; replies are always awaited",
    )
    .django(),
    option(
        "key_prefix",
        Kind::Choice(&[Str("")]),
        Str(""),
        "pymemcache's wire-level prefix: not supported yet (use KEY_PREFIX)",
    )
    .django()
    .accepts("'' (not supported yet; use the cache's KEY_PREFIX)"),
    option(
        "encoding",
        Kind::Choice(&[Str("utf-8"), Str("ascii")]),
        Str("utf-8"),
        "accepted for compatibility",
    )
    .django(),
    option(
        "max_value_length",
        Kind::Whole {
            low: MIN_VALUE_LENGTH,
            high: MAX_VALUE_LENGTH,
            none: true,
        },
        Literal::None,
        "largest value sent or accepted (None: 1 MiB + 64 KiB)",
    ),
    // Values over the item size.
    option(
        "large_values",
        Kind::Flag,
        Bool(false),
        "store values over the chunk length as chunks plus an index, and read them whole",
    ),
    option(
        "max_large_value_length",
        Kind::Whole {
            low: MIN_VALUE_LENGTH,
            high: MAX_LARGE_VALUE_LENGTH,
            none: false,
        },
        Int(DEFAULT_MAX_LARGE_VALUE_LENGTH),
        "with large_values, the largest value stored or read (64 MiB)",
    ),
    // Compression of writes.
    option(
        "min_compress_len",
        Kind::Whole {
            low: 0,
            high: MAX_VALUE_LENGTH,
            none: false,
        },
        Int(0),
        "compress values of at least this many bytes (0: off)",
    ),
    option(
        "compress_level",
        Kind::Whole {
            low: 1,
            high: 9,
            none: false,
        },
        Int(6),
        "zlib level of compressed writes",
    ),
    option(
        "compressor",
        Kind::Choice(&[Str("zlib"), Str("zstd"), Str("lz4")]),
        Str("zlib"),
        "what compresses writes (reads honour all three whatever the setting)",
    ),
    option(
        "zstd_dictionary",
        Kind::File,
        Literal::None,
        "a zstd dictionary (manage.py elasticache --train-zstd-dictionary) for zstd writes and reads",
    ),
    // Signed values.
    option(
        "sign_values",
        Kind::Flag,
        Bool(false),
        "sign every value but counters (HMAC-SHA256); unsigned or badly signed values read as \
         misses",
    ),
    option(
        "signing_key",
        Kind::Secret,
        Literal::None,
        "the secret values are signed with (None: Django's SECRET_KEY)",
    ),
    option(
        "signing_key_fallbacks",
        Kind::Secrets,
        Literal::None,
        "older secrets signatures are also verified with (None: SECRET_KEY_FALLBACKS when \
         signing_key is None)",
    ),
    // Key placement.
    option(
        "hashing",
        Kind::Choice(&[Str("pymemcache"), Str("pylibmc"), Str("ketama")]),
        Str("pymemcache"),
        "key placement: PyMemcacheCache's, or PyLibMCCache's (default or ketama)",
    )
    .accepts(
        "'pymemcache' (as PyMemcacheCache), 'pylibmc' (as PyLibMCCache) or 'ketama' (as \
         PyLibMCCache with behaviors={'ketama': True})",
    ),
    // TLS.
    option(
        "tls_context",
        Kind::SslContext,
        Literal::None,
        "an ssl.SSLContext: TLS on, with its CA certificates, verify_mode and check_hostname",
    )
    .django(),
    option(
        "tls",
        Kind::Flag,
        Bool(false),
        "TLS on, trusting the system's store (or tls_ca_file)",
    ),
    option(
        "tls_ca_file",
        Kind::File,
        Literal::None,
        "CA certificates to trust (PEM; TLS on)",
    ),
    option(
        "tls_cert_file",
        Kind::File,
        Literal::None,
        "client certificate (PEM; with tls_key_file)",
    ),
    option(
        "tls_key_file",
        Kind::File,
        Literal::None,
        "the client certificate's key (PEM)",
    ),
    option(
        "tls_server_name",
        Kind::ServerName,
        Literal::None,
        "the name certificates are verified against, instead of each node's hostname",
    ),
];

/// The option named `name`.
pub fn spec(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|spec| spec.name == name)
}

/// The options given to the native `Client` (`**options`), checked as each is read: a value
/// given, else the table's default.
pub struct Given<'py> {
    py: Python<'py>,
    options: Option<Bound<'py, PyDict>>,
    /// The options read so far, by their index in [`OPTIONS`] (see [`Given::finish`]).
    read: Cell<u64>,
}

impl std::fmt::Debug for Given<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Given")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<'py> Given<'py> {
    /// Refuses a keyword the `Client` does not take (an unknown name, or an option of the
    /// Django backend alone), as Python refuses an unexpected keyword argument.
    pub fn new(py: Python<'py>, options: Option<&Bound<'py, PyDict>>) -> PyResult<Self> {
        if let Some(options) = options {
            for name in options.keys() {
                let text = name.str()?.to_string();
                if !spec(&text).is_some_and(|spec| spec.native) {
                    return Err(PyTypeError::new_err(format!(
                        "Client() got an unexpected keyword argument {}",
                        name.repr()?
                    )));
                }
            }
        }
        Ok(Given {
            py,
            options: options.cloned(),
            read: Cell::new(0),
        })
    }

    /// Refuses to build a client that has not read every option it takes: an option added to
    /// the table and not wired into `PyClient::new` fails every construction, not silently.
    pub fn finish(self) -> PyResult<()> {
        let unread: Vec<&str> = OPTIONS
            .iter()
            .enumerate()
            .filter(|(i, spec)| spec.native && self.read.get() & (1 << i) == 0)
            .map(|(_, spec)| spec.name)
            .collect();
        if unread.is_empty() {
            Ok(())
        } else {
            Err(PyRuntimeError::new_err(format!(
                "Client options never read (a bug): {}",
                unread.join(", ")
            )))
        }
    }

    /// The option's value (given, or the `Client`'s default), as `convert` reads it with the
    /// option's spec.
    fn value_as<T>(
        &self,
        name: &str,
        convert: impl FnOnce(&'static OptionSpec, &Bound<'py, PyAny>) -> PyResult<T>,
    ) -> PyResult<T> {
        let (index, spec) = OPTIONS
            .iter()
            .enumerate()
            .find(|(_, spec)| spec.name == name && spec.native)
            .ok_or_else(|| PyRuntimeError::new_err(format!("{name} is no option of Client")))?;
        self.read.set(self.read.get() | 1 << index);
        let given = match &self.options {
            Some(options) => options.get_item(name)?,
            None => None,
        };
        let value = match given {
            Some(value) => value,
            None => spec
                .client_default
                .unwrap_or(spec.default)
                .to_object(self.py)?,
        };
        convert(spec, &value)
    }

    pub fn flag(&self, name: &str) -> PyResult<bool> {
        self.value_as(name, flag)
    }

    /// A duration (`Seconds` or `Keepalive`); `None` for none (no deadline, off).
    pub fn seconds(&self, name: &str) -> PyResult<Option<Duration>> {
        self.value_as(name, duration)
    }

    /// A whole number; `None` where the option is unset.
    pub fn whole(&self, name: &str) -> PyResult<Option<u64>> {
        self.value_as(name, whole)
    }

    /// A text (a choice, a name, a level's name); `None` where the option is unset.
    pub fn text(&self, name: &str) -> PyResult<Option<String>> {
        self.value_as(name, text)
    }

    pub fn path(&self, name: &str) -> PyResult<Option<PathBuf>> {
        self.value_as(name, path)
    }

    /// The local tier's settings (`local_cache`); `None` where unset.
    pub fn local_cache(&self, name: &str) -> PyResult<Option<LocalCacheSpec>> {
        self.value_as(name, local_cache)
    }

    /// A cluster option (`migrate_from`); `None` where unset.
    pub fn cluster(&self, name: &str) -> PyResult<Option<ClusterSpec>> {
        self.value_as(name, cluster)
    }

    /// A secret (`Secret`) as bytes; `None` where unset.
    pub fn secret(&self, name: &str) -> PyResult<Option<Vec<u8>>> {
        self.value_as(name, |spec, value| {
            check(spec, value)?;
            secret_bytes(spec, value)
        })
    }

    /// Secrets (`Secrets`) as bytes; empty where unset.
    pub fn secrets(&self, name: &str) -> PyResult<Vec<Vec<u8>>> {
        self.value_as(name, |spec, value| {
            check(spec, value)?;
            if value.is_none() {
                return Ok(Vec::new());
            }
            value
                .try_iter()?
                .map(|item| Ok(secret_bytes(spec, &item?)?.unwrap_or_default()))
                .collect()
        })
    }

    /// An object option (`serde`), checked; `None` where unset.
    pub fn object(&self, name: &str) -> PyResult<Option<Py<PyAny>>> {
        let value = self.value_as(name, check)?;
        Ok((!value.is_none()).then(|| value.unbind()))
    }
}

fn flag(spec: &OptionSpec, value: &Bound<'_, PyAny>) -> PyResult<bool> {
    if !value.is_instance_of::<PyBool>() {
        return Err(spec.refuse(value, Refusal::Type));
    }
    value.is_truthy()
}

fn duration(spec: &OptionSpec, value: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    match spec.kind {
        Kind::Seconds { zero, none } => {
            if value.is_none() && none {
                return Ok(None);
            }
            let number = value
                .extract::<Number>()
                .map_err(|_| spec.refuse(value, Refusal::Type))?;
            seconds(spec.name, Some(number), zero).map_err(|_| spec.refuse(value, Refusal::Value))
        }
        Kind::Keepalive => {
            if value.is_none() {
                return Ok(None);
            }
            if value.is_instance_of::<PyBool>() {
                let on = value.is_truthy()?;
                return Ok(on.then(|| Duration::from_secs(60)));
            }
            // pymemcache's `KeepaliveOpts`: its idle time.
            let idle = if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
                value.clone()
            } else {
                value
                    .getattr("idle")
                    .map_err(|_| spec.refuse(value, Refusal::Type))?
            };
            let number = idle
                .extract::<Number>()
                .map_err(|_| spec.refuse(value, Refusal::Type))?;
            // 0 is off for the native client; under Django it is a slip (`None`/`False` say off).
            if number.0 == 0.0 {
                return Err(spec.refuse(value, Refusal::Value));
            }
            keepalive(Some(number)).map_err(|_| spec.refuse(value, Refusal::Value))
        }
        _ => Err(mismatch(spec, "a duration")),
    }
}

fn whole(spec: &OptionSpec, value: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    let Kind::Whole { low, high, none } = spec.kind else {
        return Err(mismatch(spec, "a whole number"));
    };
    if value.is_none() && none {
        return Ok(None);
    }
    let Whole(n) = value
        .extract::<Whole>()
        .map_err(|_| spec.refuse(value, Refusal::Type))?;
    u64::try_from(n)
        .ok()
        .filter(|n| (low..=high).contains(n))
        .map(Some)
        .ok_or_else(|| spec.refuse(value, Refusal::Value))
}

/// A secret's bytes (a `str` as UTF-8); `None` for `None`.
fn secret_bytes(spec: &OptionSpec, value: &Bound<'_, PyAny>) -> PyResult<Option<Vec<u8>>> {
    if value.is_none() {
        return Ok(None);
    }
    let bytes = if let Ok(text) = value.cast::<PyString>() {
        text.to_str()
            .map_err(|_| spec.refuse(value, Refusal::Value))?
            .as_bytes()
            .to_vec()
    } else if let Ok(bytes) = value.cast::<pyo3::types::PyBytes>() {
        bytes.as_bytes().to_vec()
    } else {
        return Err(spec.refuse(value, Refusal::Type));
    };
    if bytes.is_empty() {
        return Err(spec.refuse(value, Refusal::Value));
    }
    Ok(Some(bytes))
}

/// The log levels and the `logging` constants for them.
const LOG_LEVELS: [(&str, i64); 3] = [("WARNING", 30), ("INFO", 20), ("ERROR", 40)];

fn text(spec: &OptionSpec, value: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    match spec.kind {
        Kind::Choice(values) => {
            if let Some(found) = values.iter().find(|v| v.matches(value)) {
                return Ok(match found {
                    Literal::Str(s) => Some((*s).to_owned()),
                    _ => None,
                });
            }
            let refusal = if values.iter().any(|v| v.same_type(value)) {
                Refusal::Value
            } else {
                Refusal::Type
            };
            Err(spec.refuse(value, refusal))
        }
        Kind::LogLevel => {
            if value.is_none() {
                return Ok(None);
            }
            let found = if let Ok(text) = value.cast::<PyString>() {
                let text = text.to_str().map(str::to_uppercase).unwrap_or_default();
                LOG_LEVELS.iter().find(|(name, _)| *name == text)
            } else if value.is_instance_of::<PyInt>() && !value.is_instance_of::<PyBool>() {
                let number = value.extract::<i64>().ok();
                LOG_LEVELS.iter().find(|(_, n)| Some(*n) == number)
            } else {
                return Err(spec.refuse(value, Refusal::Type));
            };
            found
                .map(|(name, _)| Some((*name).to_owned()))
                .ok_or_else(|| spec.refuse(value, Refusal::Value))
        }
        Kind::LoggerName => {
            let text = value
                .cast::<PyString>()
                .map_err(|_| spec.refuse(value, Refusal::Type))?;
            match text.to_str() {
                Ok(name) if !name.is_empty() => Ok(Some(name.to_owned())),
                _ => Err(spec.refuse(value, Refusal::Value)),
            }
        }
        Kind::Serializer => {
            let text = value
                .cast::<PyString>()
                .map_err(|_| spec.refuse(value, Refusal::Type))?;
            let name = text
                .to_str()
                .map_err(|_| spec.refuse(value, Refusal::Value))?;
            Ok(Some(name.to_owned()))
        }
        Kind::ServerName => {
            if value.is_none() {
                return Ok(None);
            }
            let text = value
                .cast::<PyString>()
                .map_err(|_| spec.refuse(value, Refusal::Type))?;
            match text.to_str() {
                Ok(name) if !name.is_empty() && !name.chars().any(char::is_whitespace) => {
                    Ok(Some(name.to_owned()))
                }
                _ => Err(spec.refuse(value, Refusal::Value)),
            }
        }
        _ => Err(mismatch(spec, "a text")),
    }
}

fn path(spec: &OptionSpec, value: &Bound<'_, PyAny>) -> PyResult<Option<PathBuf>> {
    if spec.kind != Kind::File {
        return Err(mismatch(spec, "a path"));
    }
    if value.is_none() {
        return Ok(None);
    }
    let py = value.py();
    let is_path = value.is_instance_of::<PyString>()
        || value.is_instance(&py.import("os")?.getattr("PathLike")?)?;
    if !is_path {
        return Err(spec.refuse(value, Refusal::Type));
    }
    // A bytes path (from a PathLike) is refused: paths are text here.
    let fspath = py.import("os")?.call_method1("fspath", (value,))?;
    let Ok(text) = fspath.cast::<PyString>() else {
        return Err(spec.refuse(value, Refusal::Type));
    };
    let Ok(text) = text.to_str() else {
        return Err(spec.refuse(value, Refusal::Value));
    };
    let path = PathBuf::from(text);
    if !path.is_file() || std::fs::File::open(&path).is_err() {
        return Err(spec.refuse(value, Refusal::Value));
    }
    Ok(Some(path))
}

/// Checks `value` for the option (any kind), as the `Client` does, and gives it in its
/// canonical form: a keepalive as seconds (`None`: off), a log level as its name, a path as a
/// `str`; any other value as given.
pub fn check<'py>(spec: &OptionSpec, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = value.py();
    match spec.kind {
        Kind::Flag => flag(spec, value).map(|_| value.clone()),
        Kind::Seconds { .. } => duration(spec, value).map(|_| value.clone()),
        Kind::Keepalive => Ok(match duration(spec, value)? {
            Some(idle) => idle.as_secs_f64().into_pyobject(py)?.into_any(),
            None => py.None().into_bound(py),
        }),
        Kind::Whole { .. } => whole(spec, value).map(|_| value.clone()),
        Kind::Choice(_) | Kind::LoggerName | Kind::ServerName => {
            text(spec, value).map(|_| value.clone())
        }
        Kind::Serializer => {
            // Resolved as the client resolves it: a missing library or class, or one without
            // dumps/loads, is heard of now.
            if let Some(name) = text(spec, value)?.filter(|name| name != "pickle") {
                serializer_objects(py, &name)?;
            }
            Ok(value.clone())
        }
        Kind::Secret => secret_bytes(spec, value).map(|_| value.clone()),
        Kind::Secrets => {
            if value.is_none() {
                return Ok(value.clone());
            }
            if !(value.is_instance_of::<pyo3::types::PyList>() || value.is_instance_of::<PyTuple>())
            {
                return Err(spec.refuse(value, Refusal::Type));
            }
            for item in value.try_iter()? {
                secret_bytes(spec, &item?)?;
            }
            Ok(value.clone())
        }
        Kind::LogLevel => Ok(text(spec, value)?.into_pyobject(py)?.into_any()),
        Kind::File => Ok(match path(spec, value)? {
            Some(path) => PyString::new(py, &path.to_string_lossy()).into_any(),
            None => py.None().into_bound(py),
        }),
        Kind::Serde => {
            if value.is_none() {
                return Ok(value.clone());
            }
            let callable = |method: &str| value.getattr(method).is_ok_and(|m| m.is_callable());
            if callable("serialize") && callable("deserialize") {
                Ok(value.clone())
            } else {
                Err(spec.refuse(value, Refusal::Type))
            }
        }
        Kind::Cluster => cluster(spec, value).map(|_| value.clone()),
        Kind::LocalCache => local_cache(spec, value).map(|_| value.clone()),
        Kind::SslContext => {
            let context = py.import("ssl")?.getattr("SSLContext")?;
            if value.is_none() || value.is_instance(&context)? {
                Ok(value.clone())
            } else {
                Err(spec.refuse(value, Refusal::Type))
            }
        }
    }
}

/// Another cluster, as `migrate_from` names it: its servers, its key placement and its
/// discovery setting (`None` where not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub servers: Vec<String>,
    pub hashing: Option<String>,
    pub discovery: Option<String>,
}

/// The servers of a `LOCATION`: a string separated by `;` or `,`, or a list of strings.
fn location(value: &Bound<'_, PyAny>) -> Option<Vec<String>> {
    let entries: Vec<String> = if let Ok(text) = value.cast::<PyString>() {
        text.to_str()
            .ok()?
            .replace(',', ";")
            .split(';')
            .map(str::to_owned)
            .collect()
    } else if value.is_instance_of::<pyo3::types::PyList>() || value.is_instance_of::<PyTuple>() {
        value.extract::<Vec<String>>().ok()?
    } else {
        return None;
    };
    let servers: Vec<String> = entries
        .iter()
        .map(|entry| entry.trim().to_owned())
        .filter(|entry| !entry.is_empty())
        .collect();
    (!servers.is_empty()).then_some(servers)
}

/// Reads a [`Kind::Cluster`] option; `None` where unset. A dict's `hashing` and `discovery` are
/// checked as those options are.
pub fn cluster(spec: &OptionSpec, value: &Bound<'_, PyAny>) -> PyResult<Option<ClusterSpec>> {
    if spec.kind != Kind::Cluster {
        return Err(mismatch(spec, "a cluster"));
    }
    if value.is_none() {
        return Ok(None);
    }
    let Ok(dict) = value.cast::<PyDict>() else {
        return match location(value) {
            Some(servers) => Ok(Some(ClusterSpec {
                servers,
                hashing: None,
                discovery: None,
            })),
            None => Err(spec.refuse(value, Refusal::Type)),
        };
    };
    let mut found = ClusterSpec {
        servers: Vec::new(),
        hashing: None,
        discovery: None,
    };
    for (name, item) in dict.iter() {
        match name.extract::<String>().ok().as_deref() {
            Some("LOCATION") => {
                found.servers =
                    location(&item).ok_or_else(|| spec.refuse(value, Refusal::Value))?;
            }
            Some(inner @ ("hashing" | "discovery")) => {
                let inner_spec = self::spec(inner)
                    .ok_or_else(|| PyRuntimeError::new_err(format!("no option {inner}")))?;
                let chosen =
                    text(inner_spec, &item).map_err(|_| spec.refuse(value, Refusal::Value))?;
                if inner == "hashing" {
                    found.hashing = chosen;
                } else {
                    found.discovery = chosen;
                }
            }
            _ => return Err(spec.refuse(value, Refusal::Value)),
        }
    }
    if found.servers.is_empty() {
        return Err(spec.refuse(value, Refusal::Value));
    }
    Ok(Some(found))
}

/// The local tier's settings as `local_cache` gives them: each `None` where not given.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LocalCacheSpec {
    pub ttl: Option<Duration>,
    pub max_keys: Option<u64>,
    pub max_bytes: Option<u64>,
    pub min_reads_per_second: Option<u64>,
}

/// `local_cache`: `None`, or a dict of any of its settings (another key is refused: a typo
/// must not leave a bound at its default unnoticed).
pub fn local_cache(
    spec: &OptionSpec,
    value: &Bound<'_, PyAny>,
) -> PyResult<Option<LocalCacheSpec>> {
    if spec.kind != Kind::LocalCache {
        return Err(mismatch(spec, "the local tier's settings"));
    }
    if value.is_none() {
        return Ok(None);
    }
    let Ok(dict) = value.cast::<PyDict>() else {
        return Err(spec.refuse(value, Refusal::Type));
    };
    let refuse = |item: &Bound<'_, PyAny>, as_number: bool| {
        let refusal = if as_number && !item.is_instance_of::<PyBool>() {
            Refusal::Value
        } else {
            Refusal::Type
        };
        spec.refuse(value, refusal)
    };
    let within = |item: &Bound<'_, PyAny>, low: u64, high: u64| -> PyResult<u64> {
        let n = item.extract::<Whole>().map_err(|_| refuse(item, false))?;
        crate::args::whole(spec.name, n, low, high).map_err(|_| refuse(item, true))
    };
    let mut found = LocalCacheSpec::default();
    for (name, item) in dict.iter() {
        match name.extract::<String>().ok().as_deref() {
            Some("ttl") => {
                let number = item.extract::<Number>().map_err(|_| refuse(&item, false))?;
                found.ttl = seconds(spec.name, Some(number), Zero::Refused)
                    .map_err(|_| refuse(&item, true))?;
            }
            Some("max_keys") => found.max_keys = Some(within(&item, 1, MAX_LOCAL_KEYS)?),
            Some("max_bytes") => found.max_bytes = Some(within(&item, 1024, MAX_LOCAL_BYTES)?),
            Some("min_reads_per_second") => {
                found.min_reads_per_second = Some(within(&item, 0, MAX_MIN_READS)?);
            }
            _ => return Err(spec.refuse(value, Refusal::Value)),
        }
    }
    Ok(Some(found))
}

/// The serializer `serializer` names (other than "pickle"), resolved: its library imported, or
/// its class made; refused as the option's value when it cannot be.
pub fn serializer_objects(py: Python<'_>, name: &str) -> PyResult<crate::serializers::Objects> {
    crate::serializers::Objects::named(py, name).map_err(|error| {
        let spec = spec("serializer");
        let accepted = spec.map(OptionSpec::accepted).unwrap_or_default();
        refused(
            "serializer",
            Refusal::Value,
            format!("serializer must be {accepted}, not {name:?} ({error})"),
        )
    })
}

/// A bug: an option read as a kind it is not.
fn mismatch(spec: &OptionSpec, wanted: &str) -> PyErr {
    PyRuntimeError::new_err(format!("option {} is not {wanted}", spec.name))
}

/// `_native.check_option(name, value)`: `value` in its canonical form (see [`check`]), or
/// refused as the `Client` would refuse it (`TypeError` or `ValueError`, with an `option`
/// attribute); `KeyError` for no option.
#[pyfunction]
pub fn check_option<'py>(name: &str, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let spec = spec(name).ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(name.to_owned()))?;
    check(spec, value)
}

/// A kind's name, bounds and choices, as `_native.OPTIONS` shows them.
fn describe<'py>(py: Python<'py>, spec: &OptionSpec, entry: &Bound<'py, PyDict>) -> PyResult<()> {
    let none = || py.None().into_bound(py);
    let (kind, low, high) = match spec.kind {
        Kind::Flag => ("bool", none(), none()),
        Kind::Seconds { .. } => (
            "seconds",
            0.0_f64.into_pyobject(py)?.into_any(),
            MAX_SECONDS.into_pyobject(py)?.into_any(),
        ),
        Kind::Whole { low, high, .. } => (
            "whole",
            low.into_pyobject(py)?.into_any(),
            high.into_pyobject(py)?.into_any(),
        ),
        Kind::Choice(_) => ("choice", none(), none()),
        Kind::Keepalive => (
            "keepalive",
            KEEPALIVE_SECONDS.0.into_pyobject(py)?.into_any(),
            KEEPALIVE_SECONDS.1.into_pyobject(py)?.into_any(),
        ),
        Kind::LogLevel => ("log_level", none(), none()),
        Kind::LoggerName => ("logger_name", none(), none()),
        Kind::File => ("file", none(), none()),
        Kind::ServerName => ("server_name", none(), none()),
        Kind::Serde => ("serde", none(), none()),
        Kind::Serializer => ("serializer", none(), none()),
        Kind::Secret => ("secret", none(), none()),
        Kind::Secrets => ("secrets", none(), none()),
        Kind::SslContext => ("ssl_context", none(), none()),
        Kind::Cluster => ("cluster", none(), none()),
        Kind::LocalCache => ("local_cache", none(), none()),
    };
    entry.set_item("kind", kind)?;
    entry.set_item("low", low)?;
    entry.set_item("high", high)?;
    let choices = match spec.kind {
        Kind::Choice(values) => {
            let objects = values
                .iter()
                .map(|v| v.to_object(py))
                .collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, objects)?.into_any()
        }
        _ => none(),
    };
    entry.set_item("choices", choices)?;
    let zero = match spec.kind {
        Kind::Seconds { zero, .. } => Some(zero),
        _ => None,
    };
    entry.set_item("zero_is_none", zero == Some(Zero::MeansNone))?;
    entry.set_item("zero_refused", zero == Some(Zero::Refused))?;
    Ok(())
}

/// Exports the table as `_native.OPTIONS` (a tuple of dicts, in the table's order) and the
/// check as `_native.check_option`.
pub fn install(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let mut entries = Vec::with_capacity(OPTIONS.len());
    for spec in OPTIONS {
        let entry = PyDict::new(py);
        entry.set_item("name", spec.name)?;
        describe(py, spec, &entry)?;
        entry.set_item("none", spec.accepts_none())?;
        entry.set_item("default", spec.default.to_object(py)?)?;
        entry.set_item(
            "client_default",
            spec.client_default.unwrap_or(spec.default).to_object(py)?,
        )?;
        entry.set_item("native", spec.native)?;
        entry.set_item("accepts", spec.accepted())?;
        entry.set_item("meaning", spec.meaning)?;
        entries.push(entry);
    }
    module.add("OPTIONS", PyTuple::new(py, entries)?)?;
    module.add_function(wrap_pyfunction!(check_option, module)?)?;
    Ok(())
}

#[cfg(test)]
mod tests;
