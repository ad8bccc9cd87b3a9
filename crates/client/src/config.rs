//! The client's settings, with defaults suited to ElastiCache inside one VPC.

use std::time::Duration;

use elasticache_proto::{DEFAULT_MAX_VALUE_LEN, MAX_VALUE_LEN_LIMIT};
use log::Level;

use crate::hash::Hashing;
use crate::large::LargeValues;
use crate::tls::Tls;

/// Seconds a value written to a gutter lives at most, unless told.
pub const DEFAULT_GUTTER_TTL: u32 = 10;

/// Undelivered invalidations remembered per node, unless told.
pub const DEFAULT_MAX_INVALIDATIONS: usize = 10_000;
/// The default warm-up window: as long as the default discovery interval, because that is how
/// long the other processes of a fleet may go on using the previous membership (writing the
/// keys that moved to their previous owners) after this one has seen the change.
pub const DEFAULT_WARMUP_WINDOW: Duration = Duration::from_secs(60);

/// How a [`crate::Client`] connects, waits, pools and treats failures.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Deadline for establishing a TCP connection; `None` waits as long as the OS does.
    pub connect_timeout: Option<Duration>,
    /// Deadline for each operation's I/O and for waiting on a free pooled connection.
    pub timeout: Option<Duration>,
    /// Most connections open to one node at once (idle and in use).
    pub max_pool_size: usize,
    /// Idle connections older than this are closed; `None` keeps them.
    pub pool_idle_timeout: Option<Duration>,
    /// Failures in a row after which a node is marked down for `dead_timeout`.
    pub retry_attempts: u32,
    /// After a failure short of `retry_attempts`, how long the node is left alone.
    pub retry_timeout: Duration,
    /// How long a node that failed `retry_attempts` times stays marked down.
    pub dead_timeout: Duration,
    /// Set TCP_NODELAY (on by default: requests are small and latency-bound).
    pub no_delay: bool,
    /// TCP keepalive idle time; `None` leaves keepalive off.
    pub socket_keepalive: Option<Duration>,
    /// Largest value accepted for storing and from a server's reply; at most
    /// [`MAX_VALUE_LEN_LIMIT`] whatever is set here.
    pub max_value_len: usize,
    /// Report cache failures (node down, timeout, bad reply) as misses and "not stored" instead
    /// of errors. Invalid keys and values still fail.
    pub ignore_exc: bool,
    /// TLS for the configuration endpoint and every node (`TlsSettings::build`); `None` is
    /// plaintext.
    pub tls: Option<Tls>,
    /// Where failures are logged, and at what level (the policy is in `failure_log`).
    pub failure_log: FailureLog,
    /// Whether the per-node and per-client counters (`Client::metrics`) are kept. They cost
    /// a few uncontended atomic additions per exchange; off only to measure that.
    pub counters: bool,
    /// Where the client's [`crate::Event`]s go (none: nowhere).
    pub events: Option<crate::EventSink>,
    /// Which library's key placement to follow (pymemcache's unless told).
    pub hashing: Hashing,
    /// Seconds a value written to a gutter lives at most (`gutter`); `None` turns the gutter
    /// off: a down node's keys fail fast (or miss under `ignore_exc`) as before.
    pub gutter_ttl: Option<u32>,
    /// Most invalidations remembered per node that could not be delivered (`invalidations`);
    /// 0 remembers none (replay off).
    pub max_invalidations: usize,
    /// What happens when a node's undelivered invalidations exceed `max_invalidations`.
    pub invalidation_overflow: Overflow,
    /// For how long after a membership change a miss on a key whose owner changed reads the
    /// previous owner and copies what it finds (`warmup`); zero turns warm-up off.
    pub warmup_window: Duration,
    /// Another cluster that misses read through from, copying what they find, and that
    /// writes and deletes invalidate (`detour`): the cluster being moved away from.
    pub migrate_from: Option<MigrateFrom>,
    /// Whether identical reads in flight in this process share one request (`get`, and the
    /// keys of `get_many`, join a `get` of the same key on the same node): on by default.
    /// Never across a write this process completed after the shared request was sent.
    pub coalesce_reads: bool,
    /// One read in this many is looked at for the hot-key tables (`Client::hot_keys`); 0: none.
    pub hot_keys_sample: u32,
    /// The hottest keys' values served from process memory for at most their `ttl`
    /// (`local_tier`); `None`, the default: every read reaches its node.
    pub local_cache: Option<crate::local_tier::LocalCache>,
    /// Values over the item size stored as chunks plus an index, and read back whole
    /// (`None`, the default: refused as too large, and an index read as a miss).
    pub large_values: Option<LargeValues>,
}

/// What is done with a node whose undelivered invalidations overflowed their bound: every
/// key beyond it may hold a value deleted meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Empty the node (`flush_all`) before it serves reads again: no stale read, at the cost of
    /// that node's share of the cache.
    #[default]
    Flush,
    /// Replay the invalidations kept and use the node again: the keys beyond the bound may be
    /// read stale until they expire.
    Ignore,
}

/// The cluster a client moves away from (`ClientConfig::migrate_from`): its nodes (or its
/// configuration endpoint) and how it places keys.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MigrateFrom {
    /// Its nodes, or with `discovery` its one configuration endpoint.
    pub servers: Vec<crate::address::NodeAddress>,
    /// How its membership is found, when `servers` is a configuration endpoint.
    pub discovery: Option<DiscoveryConfig>,
    /// Its key placement (it may differ from the new cluster's).
    pub hashing: Hashing,
}

impl MigrateFrom {
    /// The cluster of `servers`, placing keys by `hashing`; with `discovery`, `servers` is its
    /// one configuration endpoint.
    pub fn new(
        servers: Vec<crate::address::NodeAddress>,
        hashing: Hashing,
        discovery: Option<DiscoveryConfig>,
    ) -> Self {
        MigrateFrom {
            servers,
            discovery,
            hashing,
        }
    }
}

impl ClientConfig {
    /// These settings with what no setting may exceed applied: the protocol's hard limit on a
    /// value's length, which the reply parser enforces whatever it is given.
    pub(crate) fn within_limits(mut self) -> Self {
        self.max_value_len = self.max_value_len.min(MAX_VALUE_LEN_LIMIT);
        self
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Some(Duration::from_secs(1)),
            timeout: Some(Duration::from_secs(1)),
            max_pool_size: 64,
            pool_idle_timeout: None,
            retry_attempts: 2,
            retry_timeout: Duration::from_secs(1),
            dead_timeout: Duration::from_secs(60),
            no_delay: true,
            socket_keepalive: None,
            max_value_len: DEFAULT_MAX_VALUE_LEN,
            ignore_exc: false,
            tls: None,
            failure_log: FailureLog::default(),
            counters: true,
            events: None,
            hashing: Hashing::default(),
            gutter_ttl: Some(DEFAULT_GUTTER_TTL),
            max_invalidations: DEFAULT_MAX_INVALIDATIONS,
            invalidation_overflow: Overflow::default(),
            warmup_window: DEFAULT_WARMUP_WINDOW,
            migrate_from: None,
            coalesce_reads: true,
            hot_keys_sample: 100,
            local_cache: None,
            large_values: None,
        }
    }
}

/// Where a client's failure records go, and at what level.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailureLog {
    /// The `log` target of the records; under Python, the logger name (`::` becomes `.`).
    pub target: String,
    /// The level of failure records (recoveries are logged at `Info`); `None` logs nothing.
    pub level: Option<Level>,
}

impl Default for FailureLog {
    fn default() -> Self {
        FailureLog {
            target: "elasticache_client::failures".to_owned(),
            level: Some(Level::Warn),
        }
    }
}

/// Whether an endpoint that is not ElastiCache's (it answers `ERROR` to `config get cluster`)
/// is used as a single node or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryMode {
    /// Plain memcached or ElastiCache Serverless: used as one static node, with a warning.
    Auto,
    /// Only an ElastiCache configuration endpoint will do.
    On,
}

/// How the cluster's membership is found and followed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// What an endpoint that is not ElastiCache's is taken for.
    pub mode: DiscoveryMode,
    /// Time between background discoveries (jittered by ±10% each cycle); `None` discovers
    /// only on first use and whenever the ring is empty.
    pub interval: Option<Duration>,
    /// Pause before retrying a failed discovery; a floor of one second applies. With no
    /// membership the pause stays steady (jittered); with one, it doubles after each further
    /// failure up to `interval`, so a dead endpoint is never hammered.
    pub retry_delay: Duration,
    /// Connect to (and name) each node by its IP when the reply has one, else by hostname.
    pub use_vpc_ip_address: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            mode: DiscoveryMode::Auto,
            interval: Some(Duration::from_secs(60)),
            retry_delay: Duration::ZERO,
            use_vpc_ip_address: true,
        }
    }
}
