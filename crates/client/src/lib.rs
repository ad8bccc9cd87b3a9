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

mod address;
mod batch;
mod client;
mod commands;
mod config;
mod connection;
mod discovery;
mod engine;
mod error;
mod fork;
mod hash;
mod health;
mod meta;
mod metrics;
mod notify;
mod pool;
mod report;
mod starts;
mod stream;
mod tls;
mod topology;

pub use address::{NodeAddress, DEFAULT_PORT};
pub use batch::BatchValues;
pub use client::{Client, Item, NodeProbe, Stats};
pub use commands::{ItemList, KeyList};
pub use config::{ClientConfig, DiscoveryConfig, DiscoveryMode, FailureLog};
pub use discovery::{park_background_threads, ParkedThreads};
pub use engine::{Command, Cursor, Failed, Interest, Operation, Progress, Reading, Share};
pub use error::{Error, ErrorKind, Result};
pub use hash::{murmur3_32, one_at_a_time, Hashing, Murmur3, Ring};
pub use meta::{lease_key, lease_token, Initial, LeaseRequest, Leased, Ttl, LEASE_PREFIX};
pub use metrics::{CommandName, Metrics, NodeMetrics, COMMANDS, ERROR_KINDS, LATENCY_BOUNDS_US};
pub use notify::{Event, EventSink};
pub use starts::{
    AcquireOperation, CountOperation, CounterOperation, DeleteIfOperation, DeleteManyOperation,
    DeleteOperation, FlushAllOperation, GetManyOperation, GetOperation, LeaseOperation,
    ReleaseOperation, SetManyOperation, StoreOperation, TouchOperation, TtlOperation,
};
pub use tls::{Tls, TlsSettings};
pub use topology::{Node, Topology};

// What the client's errors and results carry, so a caller needs no second dependency to
// match on them.
pub use elasticache_proto::{
    validate_key, ClusterConfig, ClusterNode, Counter, DeleteReply, IncrDecrReply, KeyError,
    ReplyError, Store, StoreReply, TouchReply, MAX_KEY_LEN, MAX_VALUE_LEN_LIMIT,
};
