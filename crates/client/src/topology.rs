//! An immutable snapshot of the cluster: its nodes, their pools and health, and the ring.
//!
//! A snapshot is never changed in place; a new membership is a new snapshot published
//! atomically, and nodes present in both keep their pools. Each snapshot is stamped with the
//! fork generation that built it (`fork`), so a forked child never uses its parent's sockets.

use std::collections::HashSet;
use std::sync::Arc;

use crate::address::NodeAddress;
use crate::config::ClientConfig;
use crate::flights::Flights;
use crate::hash::Ring;
use crate::health::Health;
use crate::hot_keys::HotKeys;
use crate::invalidations::Invalidations;
use crate::meta_support::MetaSupport;
use crate::metrics::{NodeCounters, NodeMetrics};
use crate::pool::Pool;

/// One node of the cluster with its connection pool and failure record.
#[derive(Debug)]
pub struct Node {
    /// Where the node is and the name the ring hashes it by.
    pub address: NodeAddress,
    pub(crate) pool: Pool,
    pub(crate) health: Health,
    pub(crate) counters: NodeCounters,
    /// Whether it speaks the meta protocol (probed once: `single`).
    pub(crate) meta: MetaSupport,
    /// Invalidations that could not reach it, waiting to be replayed (`invalidations`).
    pub(crate) invalidations: Invalidations,
    /// Its reads in flight that identical reads may join (`flights`).
    pub(crate) flights: Flights,
    /// Its most read keys and largest values, sampled (`hot_keys`).
    pub(crate) hot_keys: HotKeys,
}

impl Node {
    fn new(address: NodeAddress, config: &ClientConfig) -> Self {
        let health = Health::new(&address.name, &config.failure_log);
        Node {
            address,
            pool: Pool::new(config),
            health,
            counters: NodeCounters::default(),
            meta: MetaSupport::default(),
            invalidations: Invalidations::default(),
            flights: Flights::default(),
            hot_keys: HotKeys::default(),
        }
    }

    /// The node answered: its health records it, and its recovery (if it was marked down) is
    /// an event.
    pub(crate) fn record_answer(&self, config: &ClientConfig) {
        if self.health.record_success() {
            if let Some(sink) = &config.events {
                sink.send(&crate::notify::Event::NodeUp {
                    node: self.address.name.clone(),
                });
            }
        }
    }

    /// Invalidations of this node that could not be delivered yet: while any wait, its keys
    /// are served by a gutter.
    pub fn undelivered_invalidations(&self) -> usize {
        self.invalidations.waiting()
    }

    /// This node's counters, as read now.
    pub fn metrics(&self) -> NodeMetrics {
        let (opened, _) = self.pool.connections_opened();
        self.counters
            .read(&self.address.name, opened, self.pool.waits())
    }

    /// Connections this process has opened to the node so far, and how many of them resumed
    /// an earlier TLS session instead of a full handshake.
    pub fn connections_opened(&self) -> (u64, u64) {
        self.pool.connections_opened()
    }

    /// Closes this node's idle connections.
    pub fn close_idle(&self) {
        self.pool.close_idle();
    }

    /// Whether this node speaks memcached's meta protocol; `None` until a command that uses it
    /// has probed the node.
    pub fn speaks_meta(&self) -> Option<bool> {
        self.meta.get()
    }

    /// Its `n` most read keys (sampled one read in `every`), most read first.
    pub fn hot_keys(&self, n: usize, every: u32) -> Vec<crate::hot_keys::HotKey> {
        self.hot_keys.hottest(n, every)
    }

    /// The `n` largest values read from it (sampled), largest first.
    pub fn largest_values(&self, n: usize) -> Vec<crate::hot_keys::LargeValue> {
        self.hot_keys.largest(n)
    }

    /// Connections open to this node right now (idle or in use) from this process.
    pub fn open_connections(&self) -> usize {
        self.pool.open_connections()
    }
}

/// The nodes of the cluster as one consistent whole.
#[derive(Debug)]
pub struct Topology {
    /// The fork generation of the process that built it.
    generation: u64,
    nodes: Vec<Arc<Node>>,
    ring: Ring,
    version: Option<u64>,
}

impl Topology {
    /// A snapshot of `addresses` (duplicates dropped), reusing the nodes of `previous` that are
    /// still members so their pooled connections survive the change.
    pub fn new(
        addresses: &[NodeAddress],
        config: &ClientConfig,
        previous: Option<&Topology>,
        version: Option<u64>,
    ) -> Self {
        let generation = crate::fork::stamp();
        let reusable = previous.filter(|p| p.generation == generation);
        let mut seen = HashSet::new();
        let nodes: Vec<Arc<Node>> = addresses
            .iter()
            .filter(|address| seen.insert(address.name.as_str()))
            .map(|address| {
                reusable
                    .and_then(|p| p.nodes.iter().find(|n| n.address == *address))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Node::new(address.clone(), config)))
            })
            .collect();
        // The ring sees the addresses as listed: libmemcached's placements count a server
        // listed twice (and answer with its first listing, which is its node here).
        let ring = Ring::with_hashing(config.hashing, addresses);
        Topology {
            generation,
            nodes,
            ring,
            version,
        }
    }

    /// The configuration version this membership came with (discovery only).
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// The fork generation of the process that built this snapshot.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether this snapshot was built by the calling process (not inherited through `fork()`).
    pub fn belongs_to_this_process(&self) -> bool {
        self.generation == crate::fork::current()
    }

    /// The nodes, in the order they were given.
    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    /// The addresses of the nodes.
    pub fn addresses(&self) -> Vec<NodeAddress> {
        self.nodes.iter().map(|n| n.address.clone()).collect()
    }

    /// The index of the node that owns `key`.
    pub fn node_index_for(&self, key: &str) -> Option<usize> {
        self.ring.node_for(key)
    }
}
