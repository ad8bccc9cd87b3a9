//! A memcached client for ElastiCache clusters, with no Python in it.
//!
//! Key placement matches pymemcache's `HashClient` (rendezvous over murmur3) by default, or
//! pylibmc's (libmemcached's modula or ketama, [`Hashing`]), so Rust, Python and the old
//! clients share one cache. Connections are pooled per node and per process;
//! multi-key operations cost one round trip; failing nodes are marked down without moving keys.
//!
//! Every operation runs on one engine: the blocking methods below wait on the calling thread,
//! and the `start_*` methods return an [`Operation`] for an event loop to drive
//! ([`Operation::advance`] when a socket of [`Operation::waits`] is ready).
//!
//! ```no_run
//! use elasticache_client::{Client, ClientConfig};
//!
//! let client = Client::connect_to(&["127.0.0.1:11211"], ClientConfig::default())?;
//! client.set("greeting", 0, b"hello", 0)?;
//! assert_eq!(client.get("greeting")?.map(|item| item.data.to_vec()), Some(b"hello".to_vec()));
//! # Ok::<(), elasticache_client::Error>(())
//! ```

#![warn(missing_docs)]

// Layers, top to bottom (a module uses those below it, or beside it one way only;
// `tests/module_layers.rs` fails on a circle):
//   client                                   the facade, and the one table of commands
//   classic stampede ttl counters locks      single-key plans (over `single`)
//   batch every_node single                  command frameworks
//   engine                                   the I/O state machine and its drivers
//   cluster                                  routing, membership, health, failure log, events
//   discovery                                memberships from the endpoint, to `cluster`
//   topology pool connection ...             nodes, pools, sockets; `elasticache_proto` below
//   sync                                     locking a mutex without panicking
mod address;
mod batch;
mod classic;
mod client;
mod cluster;
mod config;
mod connection;
mod counters;
mod detour;
mod discovery;
mod engine;
mod error;
mod every_node;
mod failure_log;
mod flights;
mod fork;
mod gutter;
mod hash;
mod health;
mod hot_keys;
mod invalidations;
mod large;
mod lease_keys;
mod local_tier;
mod locks;
mod meta_support;
mod metrics;
mod notify;
mod pool;
mod replay;
mod single;
mod stampede;
mod stream;
mod sync;
mod tls;
mod topology;
mod ttl;
mod unreached;
mod values;
mod warmup;

pub use address::{NodeAddress, DEFAULT_PORT};
pub use batch::{ItemList, KeyList};
pub use client::{
    stored, AcquireOperation, Client, CountOperation, CounterOperation, DeleteIfOperation,
    DeleteManyOperation, DeleteOperation, DiscardOperation, FlushAllOperation, GetLargeOperation,
    GetManyOperation, GetOperation, GetsOperation, LeaseOperation, NodeProbe, ReleaseOperation,
    SetManyOperation, StoreLargeOperation, StoreOperation, TouchLargeOperation, TouchOperation,
    TtlOperation,
};
pub use cluster::{Cluster, Detour, Route, Routes};
pub use config::{
    ClientConfig, DiscoveryConfig, DiscoveryMode, FailureLog, MigrateFrom, Overflow,
    DEFAULT_GUTTER_TTL, DEFAULT_MAX_INVALIDATIONS, DEFAULT_WARMUP_WINDOW,
};
pub use counters::Initial;
pub use detour::Warm;
pub use discovery::{park_background_threads, ParkedThreads};
pub use engine::{
    Coalescing, Command, Cursor, Failed, Fallback, Interest, Operation, Progress, Reading, Share,
    Step,
};
pub use error::{Error, ErrorKind, NameNotResolved, Result};
pub use hash::{murmur3_32, one_at_a_time, Hashing, Murmur3, Ring};
pub use hot_keys::{HotKey, LargeValue};
pub use large::{LargeValues, DEFAULT_MAX_LARGE_VALUE_LEN, LARGE_FLAG, MAX_CHUNK_LEN};
pub use lease_keys::{lease_key, LEASE_PREFIX};
pub use local_tier::{LocalCache, LocalTierSize};
pub use metrics::{CommandName, Metrics, NodeMetrics, COMMANDS, ERROR_KINDS, LATENCY_BOUNDS_US};
pub use notify::{Event, EventSink};
pub use replay::PROBE_INTERVAL;
pub use single::{One, Plan};
pub use stampede::{lease_token, LeaseRequest, Leased};
pub use tls::{Tls, TlsSettings};
pub use topology::{Node, Topology};
pub use ttl::Ttl;
pub use values::{BatchValues, Item, Stats};

// What the client's errors and results carry, so a caller needs no second dependency to
// match on them.
pub use elasticache_proto::{
    validate_key, ClusterConfig, ClusterNode, Counter, DeleteReply, IncrDecrReply, KeyError,
    ReplyError, Store, StoreReply, TouchReply, MAX_KEY_LEN, MAX_VALUE_LEN_LIMIT,
};
