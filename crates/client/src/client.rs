//! The client: its operations (run by the engine's blocking driver), routing, failure
//! accounting and `ignore_exc`.

use std::borrow::Cow;
use std::sync::{Arc, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use elasticache_proto::{
    self as proto, Counter, DeleteReply, IncrDecrReply, Retrieval, Store, StoreReply, TouchReply,
};

use crate::address::NodeAddress;
use crate::commands::{EveryNode, OneLine, Retrieve, StoreOne};
use crate::config::{ClientConfig, DiscoveryConfig};
use crate::discovery::Discovery;
use crate::engine::Operation;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::{ClientCounters, Metrics};
use crate::report::Unrouted;
use crate::topology::{Node, Topology};

/// A node's `stats`, as name/value pairs in the order the server sent them.
pub type Stats = Vec<(String, String)>;

/// What [`Client::probe`] found of one node.
#[derive(Debug)]
#[non_exhaustive]
pub struct NodeProbe {
    /// `host:port`, as the ring hashes it.
    pub node: String,
    /// Its hostname (from discovery), or the host it is reached at.
    pub hostname: String,
    /// How long it stays marked down, if it is.
    pub down_for: Option<std::time::Duration>,
    /// The round trip of a `version` exchange; `None` when the node did not answer.
    pub round_trip: Option<std::time::Duration>,
    /// Its `stats`.
    pub stats: Result<Stats>,
}

/// A value read from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The flags stored with the value (its type, for the serializer that wrote it).
    pub flags: u32,
    /// The value's bytes (a cheap-to-clone, shared buffer: `&item.data[..]` is a slice).
    pub data: Bytes,
    /// The CAS token, when read with `gets`.
    pub cas: Option<u64>,
}

/// A memcached client for a set of nodes, safe to share between threads.
///
/// Nothing is connected until the first operation. Connections are pooled per node and per
/// process: after `fork()` the child builds its own pools and never touches the parent's.
#[derive(Debug)]
pub struct Client {
    pub(crate) config: ClientConfig,
    topology: ArcSwap<Topology>,
    discovery: Option<Discovery>,
    /// Handed to the discovery thread, which must not keep the client alive.
    me: Weak<Client>,
    /// The failure logs of subjects outside the ring (the configuration endpoint, removed
    /// nodes), per process.
    pub(crate) unrouted: ArcSwap<Unrouted>,
    /// Discoveries, membership changes, failures ignored (`metrics`).
    pub(crate) counters: ClientCounters,
}

impl Client {
    /// A client for a static list of nodes.
    pub fn new(nodes: &[NodeAddress], config: ClientConfig) -> Self {
        let config = config.within_limits();
        let topology = Topology::new(nodes, &config, None, None);
        Client {
            config,
            topology: ArcSwap::from_pointee(topology),
            discovery: None,
            me: Weak::new(),
            unrouted: ArcSwap::from_pointee(Unrouted::new()),
            counters: ClientCounters::default(),
        }
    }

    /// A client that finds its nodes through an ElastiCache configuration endpoint: on first
    /// use, then in the background every `discovery.interval`. Nothing is contacted before the
    /// first operation. Dropping the last `Arc` stops the background refresher.
    pub fn with_discovery(
        endpoint: NodeAddress,
        config: ClientConfig,
        discovery: DiscoveryConfig,
    ) -> Arc<Self> {
        let config = config.within_limits();
        let topology = Topology::new(&[], &config, None, None);
        Arc::new_cyclic(|me| Client {
            config,
            topology: ArcSwap::from_pointee(topology),
            discovery: Some(Discovery::new(endpoint, discovery)),
            me: me.clone(),
            unrouted: ArcSwap::from_pointee(Unrouted::new()),
            counters: ClientCounters::default(),
        })
    }

    /// A client for nodes given as `host:port` strings.
    pub fn connect_to<S: AsRef<str>>(servers: &[S], config: ClientConfig) -> Result<Self> {
        let nodes = servers
            .iter()
            .map(|s| NodeAddress::parse(s.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Client::new(&nodes, config))
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The current snapshot of the cluster for this process.
    pub fn topology(&self) -> Arc<Topology> {
        // The fork generation, not the process id: a load instead of a system call on every
        // operation.
        let generation = crate::fork::current();
        let mut current = self.topology.load_full();
        if current.generation() != generation {
            // Forked: the parent's sockets must stay untouched, so build fresh pools.
            let fresh = Arc::new(Topology::new(
                &current.addresses(),
                &self.config,
                None,
                current.version(),
            ));
            self.topology.rcu(|t| {
                if t.generation() == generation {
                    Arc::clone(t)
                } else {
                    Arc::clone(&fresh)
                }
            });
            current = self.topology.load_full();
        }
        if let Some(discovery) = &self.discovery {
            if discovery.needs_refresher() {
                discovery.start_refresher(self.me.clone());
            }
        }
        current
    }

    /// The snapshot to route an operation with: with discovery and an empty ring, a discovery
    /// first (single flight, rate-limited).
    pub(crate) fn routing_topology(&self) -> Result<Arc<Topology>> {
        let topology = self.topology();
        if !topology.nodes().is_empty() {
            return Ok(topology);
        }
        let Some(discovery) = &self.discovery else {
            return Err(Error::NoNodes);
        };
        // A caller that finds a discovery in the air waits for it at most until its own
        // deadline: `timeout` from the start of its operation (design section 7, "any call").
        discovery.discover(
            self,
            || !self.topology.load().nodes().is_empty(),
            self.deadline(),
        )?;
        let topology = self.topology();
        if topology.nodes().is_empty() {
            return Err(Error::NoNodes);
        }
        Ok(topology)
    }

    /// Asks the configuration endpoint for the membership now and applies it if it changed
    /// (rate-limited after failures). A failure keeps the last good membership.
    pub fn refresh_membership(&self) -> Result<()> {
        match &self.discovery {
            Some(discovery) => discovery.discover(self, || false, self.deadline()),
            None => Ok(()),
        }
    }

    /// What this process's client has done so far: per node of the current membership and
    /// per client (see [`Metrics`]). Reading costs a few atomic loads per node.
    pub fn metrics(&self) -> Metrics {
        let topology = self.topology();
        let nodes = topology.nodes().iter().map(|node| node.metrics()).collect();
        self.counters.read(nodes, topology.version())
    }

    /// The configuration endpoint, when the nodes are discovered.
    pub fn discovery_endpoint(&self) -> Option<&NodeAddress> {
        self.discovery.as_ref().map(Discovery::endpoint)
    }

    /// Replaces the membership; nodes that stay keep their pools, removed nodes' idle
    /// connections are closed.
    pub fn set_nodes(&self, nodes: &[NodeAddress], version: Option<u64>) {
        let previous = self.topology();
        let next = Arc::new(Topology::new(nodes, &self.config, Some(&previous), version));
        let same = previous.nodes().len() == next.nodes().len()
            && next
                .nodes()
                .iter()
                .all(|n| previous.nodes().iter().any(|o| Arc::ptr_eq(n, o)));
        if !same {
            ClientCounters::count(&self.counters.membership_changes);
            self.emit(|| {
                let names = |t: &Topology| -> Vec<String> {
                    t.nodes().iter().map(|n| n.address.name.clone()).collect()
                };
                let (before, after) = (names(&previous), names(&next));
                crate::Event::MembershipChanged {
                    added: after
                        .iter()
                        .filter(|n| !before.contains(n))
                        .cloned()
                        .collect(),
                    removed: before
                        .iter()
                        .filter(|n| !after.contains(n))
                        .cloned()
                        .collect(),
                    version,
                }
            });
        }
        for old in previous.nodes() {
            if !next.nodes().iter().any(|n| Arc::ptr_eq(n, old)) {
                old.pool.close_idle();
            }
        }
        self.topology.store(next);
    }

    pub(crate) fn validate(key: &str) -> Result<()> {
        proto::validate_key(key.as_bytes()).map_err(|reason| Error::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.config.timeout.map(|t| Instant::now() + t)
    }

    /// Under `ignore_exc`, turns a cache failure into `fallback` (logged by the failure policy,
    /// `report`); invalid requests still fail.
    pub(crate) fn tolerate<T>(&self, result: Result<T>, fallback: impl FnOnce() -> T) -> Result<T> {
        match result {
            // A value too large is a failed write like any other under ignore_exc: not stored.
            Err(error)
                if self.config.ignore_exc
                    && (error.kind() != ErrorKind::Client || error.is_value_too_large()) =>
            {
                ClientCounters::count(&self.counters.ignored_failures);
                // A node failure was logged where it was counted (`note_failure`).
                if !error.counts_against_node() {
                    crate::report::ignored(self, &error);
                }
                Ok(fallback())
            }
            other => other,
        }
    }

    /// Hands the event `make` makes to the configured sink, if there is one (nothing is made
    /// otherwise).
    pub(crate) fn emit(&self, make: impl FnOnce() -> crate::Event) {
        if let Some(sink) = &self.config.events {
            sink.send(&make());
        }
    }

    /// Fails if `node` is marked down.
    pub(crate) fn check_up(node: &Node) -> Result<()> {
        match node.health.down_for() {
            Some(retry_in) => Err(Error::NodeDown {
                node: node.address.name.clone(),
                retry_in,
            }),
            None => Ok(()),
        }
    }

    /// Leases a connection to `node`, unless it is marked down, waiting until `deadline` for
    /// one when the pool is at `max_pool_size`.
    pub(crate) fn lease<'n>(
        &self,
        node: &'n Node,
        deadline: Option<Instant>,
    ) -> Result<crate::pool::Lease<'n>> {
        Self::check_up(node)?;
        node.pool
            .lease(&node.address, &self.config, deadline)
            .inspect_err(|e| self.note_failure(node, e))
    }

    /// Like [`Client::lease`], but `None` instead of waiting when the pool is at
    /// `max_pool_size`: for a caller that holds connections to other nodes.
    pub(crate) fn lease_without_waiting<'n>(
        &self,
        node: &'n Node,
        deadline: Option<Instant>,
    ) -> Result<Option<crate::pool::Lease<'n>>> {
        Self::check_up(node)?;
        node.pool
            .lease_without_waiting(&node.address, &self.config, deadline)
            .inspect_err(|e| self.note_failure(node, e))
    }

    /// Counts a failure against the node's health when it says something about the node, and
    /// logs it by the failure policy (`report`): every node failure passes here, raised or not.
    ///
    /// A node that closed, reset or refused a connection may have restarted: every idle
    /// connection to it is closed too, so that none of them fails again after `dead_timeout`
    /// and marks the node down anew.
    pub(crate) fn note_failure(&self, node: &Node, error: &Error) {
        if error.is_connection_lost() {
            node.pool.close_idle();
            if let Some(discovery) = &self.discovery {
                // A refused or reset connection may mean a scale-in: look at the membership now.
                discovery.nudge();
            }
        }
        if error.counts_against_node() {
            let c = &self.config;
            let now = Instant::now();
            let dead =
                node.health
                    .record_failure(c.retry_attempts, c.retry_timeout, c.dead_timeout);
            let context = if c.ignore_exc {
                crate::report::Context::Ignored
            } else {
                crate::report::Context::Raised
            };
            let log = &node.health.log;
            log.failure(error, context, node.health.down_for(), now);
            if dead {
                if c.counters {
                    node.counters.marked_down();
                }
                let failures = node.health.failures_in_a_row();
                log.marked_down(failures, c.dead_timeout, now);
                self.emit(|| crate::Event::NodeDown {
                    node: node.address.name.clone(),
                    failures,
                    retry_in: c.dead_timeout,
                });
            }
        }
    }

    /// Reads `key`; `None` when it is not in the cache.
    pub fn get(&self, key: &str) -> Result<Option<Item>> {
        Operation::new(self, Retrieve::new(self, key.to_owned(), Retrieval::Get))?.run(self)
    }

    /// Reads `key` with its CAS token.
    pub fn gets(&self, key: &str) -> Result<Option<Item>> {
        Operation::new(self, Retrieve::new(self, key.to_owned(), Retrieval::Gets))?.run(self)
    }

    /// Runs a storage command and returns the server's verdict.
    ///
    /// A `set` that fails because the value is too large (for the client or the node) deletes
    /// the key: the old value must not be read back as if the new one had been stored.
    pub fn store(
        &self,
        command: Store,
        key: &str,
        flags: u32,
        data: &[u8],
        exptime: i64,
    ) -> Result<StoreReply> {
        let data = Cow::Borrowed(data);
        let store = StoreOne::new(self, command, key.to_owned(), flags, data, exptime);
        Operation::new(self, store)?.run(self)
    }

    /// Stores `data` under `key`; returns whether it was stored.
    pub fn set(&self, key: &str, flags: u32, data: &[u8], exptime: i64) -> Result<bool> {
        Ok(self.store(Store::Set, key, flags, data, exptime)? == StoreReply::Stored)
    }

    /// Stores `data` only if `key` is not in the cache; returns whether it was stored.
    pub fn add(&self, key: &str, flags: u32, data: &[u8], exptime: i64) -> Result<bool> {
        Ok(self.store(Store::Add, key, flags, data, exptime)? == StoreReply::Stored)
    }

    /// Deletes `key`; returns whether it was there.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let reply = Operation::new(self, OneLine::delete(key.to_owned()))?.run(self)?;
        Ok(reply == DeleteReply::Deleted)
    }

    /// Adds `delta` to a counter; `None` when `key` is not in the cache.
    pub fn incr(&self, key: &str, delta: u64) -> Result<Option<u64>> {
        self.counter(Counter::Incr, key, delta)
    }

    /// Subtracts `delta` from a counter (memcached stops at 0); `None` when `key` is missing.
    pub fn decr(&self, key: &str, delta: u64) -> Result<Option<u64>> {
        self.counter(Counter::Decr, key, delta)
    }

    fn counter(&self, op: Counter, key: &str, delta: u64) -> Result<Option<u64>> {
        let counter = OneLine::counter(key.to_owned(), op, delta);
        Ok(match Operation::new(self, counter)?.run(self)? {
            IncrDecrReply::Value(value) => Some(value),
            IncrDecrReply::NotFound => None,
        })
    }

    /// Sets a new expiry on `key`; returns whether it was there.
    pub fn touch(&self, key: &str, exptime: i64) -> Result<bool> {
        let reply = Operation::new(self, OneLine::touch(key.to_owned(), exptime))?.run(self)?;
        Ok(reply == TouchReply::Touched)
    }

    /// Empties every node (`flush_all`). Fails if any node could not be flushed.
    pub fn flush_all(&self) -> Result<()> {
        let replies =
            Operation::new(self, EveryNode::flush_all()).and_then(|operation| operation.run(self));
        self.flushed(replies)
    }

    /// The `stats` of every node, by node name.
    pub fn stats(&self, group: Option<&str>) -> Result<Vec<(String, Result<Stats>)>> {
        Operation::new(self, EveryNode::stats(group))?.run(self)
    }

    /// Each node of the membership (discovering it first if needed), asked one at a time:
    /// its `stats`, then the round trip of a `version` on the connection that brought them.
    /// For operators' tools: a node that does not answer is reported, never raised.
    pub fn probe(&self) -> Result<Vec<NodeProbe>> {
        let topology = self.routing_topology()?;
        Ok(topology
            .nodes()
            .iter()
            .map(|node| {
                let name = node.address.name.as_str();
                let one = |outcome: Result<Vec<(String, Result<Stats>)>>| {
                    outcome.and_then(|mut results| match results.pop() {
                        Some((_, result)) => result,
                        None => Err(Error::NoNodes),
                    })
                };
                let stats = one(Operation::new(self, EveryNode::stats(None).only(name))
                    .and_then(|operation| operation.run(self)));
                // Timed only once the node answered (its connection is pooled by then).
                let round_trip = stats.as_ref().ok().and_then(|_| {
                    let started = Instant::now();
                    let version = Operation::new(self, EveryNode::versions().only(name))
                        .and_then(|operation| operation.run(self));
                    let took = started.elapsed();
                    match version.ok()?.into_iter().next() {
                        Some((_, Ok(_))) => Some(took),
                        _ => None,
                    }
                });
                NodeProbe {
                    node: name.to_owned(),
                    hostname: node
                        .address
                        .tls_name
                        .clone()
                        .unwrap_or_else(|| node.address.host.clone()),
                    down_for: node.health.down_for(),
                    round_trip,
                    stats,
                }
            })
            .collect())
    }

    /// The server version of every node, by node name.
    pub fn versions(&self) -> Result<Vec<(String, Result<String>)>> {
        Operation::new(self, EveryNode::versions())?.run(self)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(discovery) = &self.discovery {
            discovery.stop_refresher();
        }
    }
}
