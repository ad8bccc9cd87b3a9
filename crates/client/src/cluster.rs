//! The cluster beneath the client: its membership (a [`Topology`] snapshot, rebuilt after a
//! fork), where each key goes ([`Routes::route`], the one place that decides it), the nodes'
//! pools and health, the failure-log policy, events, and what `ignore_exc` turns a failure
//! into. Discovery feeds it memberships through [`Membership`] alone.
//!
//! Commands and the engine use it; it knows nothing of either, nor of the `Client` facade.

use std::cell::RefCell;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};

use crate::address::NodeAddress;
use crate::config::{ClientConfig, DiscoveryConfig, MigrateFrom};
use crate::discovery::{Discovery, Membership};
use crate::error::{Error, ErrorKind, Result};
use crate::failure_log::{self, Context, Unrouted};
use crate::gutter;
use crate::local_tier::LocalTier;
use crate::metrics::{ClientCounters, Metrics};
use crate::notify::Event;
use crate::pool::Lease;
use crate::replay::{Replays, PROBE_INTERVAL};
use crate::topology::{Node, Topology};
use crate::unreached::{Unreached, MAX_UNREACHED};
use crate::warmup::{Previous, Window};

/// Where the keys of one operation go: a view of the membership it was routed with.
///
/// [`Routes::route`] is the only code that maps a key to a node; every command asks it, so a
/// route to another node (a gutter while the owner is down, a previous owner while a new
/// membership warms up, another cluster) is one change here, not one per command.
#[derive(Debug, Clone, Copy)]
pub struct Routes<'t> {
    topology: &'t Topology,
    /// The gutter's TTL (`gutter`); `None`: keys stay on their owner whatever its state.
    gutter_ttl: Option<u32>,
    /// Keys this operation sent to a gutter, with their owner's index (`Cluster::diverted`).
    diverted: Option<&'t RefCell<Vec<(usize, String)>>>,
    /// The membership before a change, while its warm-up window is open.
    previous: Option<&'t Topology>,
    /// The membership of the `migrate_from` cluster.
    source: Option<&'t Topology>,
    /// Whether `migrate_from` is set but its membership is not known (yet).
    source_unknown: bool,
    /// Keys whose other copy a write could not delete.
    unreached: Option<&'t Unreached>,
}

/// Where one key goes now (see [`Routes::place`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The index of its node in [`Routes::nodes`].
    pub node: usize,
    /// With a gutter standing in for the owner, the TTL its writes may have at most.
    pub gutter_ttl: Option<u32>,
}

/// Why a key has a second node ([`Routes::detour`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Detour {
    /// Its owner changed less than `warmup_window` ago: the node is its previous owner.
    WarmUp,
    /// The node is its owner in the `migrate_from` cluster.
    Migration,
}

/// The memberships a cluster event routes keys to besides their owners, held for one
/// operation's routing ([`Cluster::detours`]).
#[derive(Debug, Default)]
pub(crate) struct Detours<'c> {
    previous: Option<Arc<Topology>>,
    source: Option<Arc<Topology>>,
    source_unknown: bool,
    unreached: Option<&'c Unreached>,
}

#[cfg(test)]
impl Detours<'_> {
    /// The detours of a warm-up window over `previous`.
    pub(crate) fn warming(previous: Arc<Topology>) -> Self {
        Detours {
            previous: Some(previous),
            ..Detours::default()
        }
    }
}

impl<'t> Routes<'t> {
    /// The routes of `topology`'s membership: with a gutter (`gutter_ttl`, unless `None`) for
    /// the keys of an owner that cannot serve them, collected in `diverted`, and the detours a
    /// cluster event adds.
    pub(crate) fn new(
        topology: &'t Topology,
        gutter_ttl: Option<u32>,
        diverted: &'t RefCell<Vec<(usize, String)>>,
        detours: &'t Detours<'t>,
    ) -> Self {
        Routes {
            topology,
            gutter_ttl,
            diverted: Some(diverted),
            previous: detours.previous.as_deref(),
            source: detours.source.as_deref(),
            source_unknown: detours.source_unknown,
            unreached: detours.unreached,
        }
    }

    /// The routes of `topology`'s membership with the detours a cluster event adds, and no
    /// gutter.
    #[cfg(test)]
    pub(crate) fn with_detours(topology: &'t Topology, detours: &'t Detours<'t>) -> Self {
        Routes {
            topology,
            gutter_ttl: None,
            diverted: None,
            previous: detours.previous.as_deref(),
            source: detours.source.as_deref(),
            source_unknown: detours.source_unknown,
            unreached: detours.unreached,
        }
    }

    /// Whether any key may have a detour: a warm-up window is open or a migration is on.
    #[inline]
    pub fn has_detours(&self) -> bool {
        self.previous.is_some() || self.source.is_some() || self.source_unknown
    }

    /// Whether `migrate_from` is set but its membership is not known yet: a write cannot
    /// delete there, so its keys are not read through until a later write does.
    pub fn source_unknown(&self) -> bool {
        self.source_unknown
    }

    /// Whether a miss on `key` may be read through its detour: not when a write could not
    /// delete the copy there (it may be stale).
    pub fn reads_through(&self, key: &str) -> bool {
        !self
            .unreached
            .is_some_and(|unreached| unreached.blocks(key))
    }

    /// The second node `key` has during a cluster event, besides its owner, and why: its
    /// previous owner while a warm-up window is open (when that node is still a member and no
    /// longer the owner), else its owner in the `migrate_from` cluster. A miss reads it; a
    /// write or delete deletes the key there.
    pub fn detour(&self, key: &str) -> Option<(&'t Arc<Node>, Detour)> {
        if let Some(previous) = self.previous {
            // The ring's owner, not a gutter standing in for it: the key moved or it did not.
            let owner = self.owner(key).and_then(|index| self.nodes().get(index))?;
            let before = previous
                .node_index_for(key)
                .and_then(|index| previous.nodes().get(index));
            if let Some(before) = before {
                // A node that left the membership is not read: it may be gone.
                let member = self.nodes().iter().any(|n| Arc::ptr_eq(n, before));
                if member && !Arc::ptr_eq(before, owner) {
                    return Some((before, Detour::WarmUp));
                }
            }
        }
        let source = self.source?;
        let node = source
            .node_index_for(key)
            .and_then(|index| source.nodes().get(index))?;
        Some((node, Detour::Migration))
    }

    /// Every node a key may be routed to, in order; [`Routes::route`] gives indices into it.
    pub fn nodes(&self) -> &'t [Arc<Node>] {
        self.topology.nodes()
    }

    /// Where `key` goes now: the index of its node in [`Routes::nodes`]; `None` with no node.
    #[inline]
    pub fn route(&self, key: &str) -> Option<usize> {
        self.place(key).map(|route| route.node)
    }

    /// Where `key` goes now, and whether to a gutter: its owner on the ring, unless the owner
    /// cannot serve it (marked down, paused, invalidations waiting) and another node can
    /// (`gutter`). The ring never changes: the keys go back to the owner once it serves.
    #[inline]
    pub fn place(&self, key: &str) -> Option<Route> {
        let owner = self.topology.node_index_for(key)?;
        let direct = Route {
            node: owner,
            gutter_ttl: None,
        };
        let Some(ttl) = self.gutter_ttl else {
            return Some(direct);
        };
        let nodes = self.topology.nodes();
        if nodes.get(owner).is_none_or(|node| gutter::serves(node)) {
            return Some(direct);
        }
        let Some(gutter) = gutter::gutter_for(nodes, key, owner) else {
            return Some(direct);
        };
        if let Some(diverted) = self.diverted {
            diverted.borrow_mut().push((owner, key.to_owned()));
        }
        Some(Route {
            node: gutter,
            gutter_ttl: Some(ttl),
        })
    }

    /// The ring's owner of `key`, whatever its state: for commands one node must decide
    /// (a lock's acquire and release), never served by a gutter.
    #[inline]
    pub fn owner(&self, key: &str) -> Option<usize> {
        self.topology.node_index_for(key)
    }

    /// The node `key` goes to now ([`Routes::route`]); [`Error::NoNodes`] with none.
    #[inline]
    pub fn node_for(&self, key: &str) -> Result<&'t Arc<Node>> {
        self.route(key)
            .and_then(|index| self.nodes().get(index))
            .ok_or(Error::NoNodes)
    }
}

/// A set of nodes, how to reach them, and what is known of their health: see the module's
/// documentation.
#[derive(Debug)]
pub struct Cluster {
    pub(crate) config: ClientConfig,
    topology: ArcSwap<Topology>,
    discovery: Option<Discovery>,
    /// Handed to the discovery thread, which must not keep the cluster alive.
    me: Weak<dyn Membership>,
    /// The failure logs of subjects outside the ring (the configuration endpoint, removed
    /// nodes), per process.
    unrouted: Unrouted,
    /// Discoveries, membership changes, failures ignored (`metrics`).
    pub(crate) counters: ClientCounters,
    /// Invalidations that could not reach their node, replayed (`invalidations`).
    replays: Arc<Replays>,
    /// The warm-up window after a membership change.
    warmup: Window,
    /// The cluster of `migrate_from`, read through and invalidated.
    source: Option<Arc<Cluster>>,
    /// Keys whose other copy a write could not delete: not read through.
    unreached: Unreached,
    /// The hottest keys' values, kept in process memory (`local_cache`): swapped for a fresh
    /// one in a forked child.
    local: Option<ArcSwap<LocalTier>>,
}

impl Cluster {
    /// A cluster of a static list of nodes.
    pub(crate) fn new(nodes: &[NodeAddress], config: ClientConfig) -> Self {
        let config = config.within_limits();
        let topology = Topology::new(nodes, &config, None, None);
        let replays = Arc::new(Replays::new(config.clone()));
        let local = config
            .local_cache
            .map(|local| ArcSwap::from_pointee(LocalTier::new(local)));
        let source = config
            .migrate_from
            .as_ref()
            .map(|from| Self::source(from, &config));
        Cluster {
            config,
            topology: ArcSwap::from_pointee(topology),
            discovery: None,
            me: Weak::<Cluster>::new(),
            unrouted: Unrouted::new(),
            counters: ClientCounters::default(),
            replays,
            warmup: Window::default(),
            source,
            unreached: Unreached::default(),
            local,
        }
    }

    /// The cluster of `migrate_from`: this one's settings, with its own key placement and
    /// membership (discovered, if it is an endpoint), and no events of its own. It reads
    /// through nowhere itself.
    fn source(from: &MigrateFrom, config: &ClientConfig) -> Arc<Cluster> {
        let mut settings = config.clone();
        settings.hashing = from.hashing;
        settings.migrate_from = None;
        // What it reads is copied here, and kept here if hot.
        settings.local_cache = None;
        settings.warmup_window = Duration::ZERO;
        // Its own membership events are not this cluster's (its nodes' failures are, as they
        // happen in this cluster's operations).
        settings.events = None;
        match (&from.discovery, from.servers.as_slice()) {
            (Some(discovery), [endpoint]) => Arc::new_cyclic(|me: &Weak<Cluster>| {
                let me: Weak<dyn Membership> = me.clone();
                Cluster::discovered(endpoint.clone(), settings, discovery.clone(), me)
            }),
            (_, servers) => Arc::new(Cluster::new(servers, settings)),
        }
    }

    /// The memberships this operation may detour to: the previous one while a warm-up window
    /// is open, and the `migrate_from` cluster's (discovered first when `blocking` allows).
    pub(crate) fn detours(&self, blocking: bool) -> Detours<'_> {
        let previous = match self.warmup.previous() {
            Previous::Open(previous) => Some(previous),
            Previous::Closed => None,
            Previous::JustClosed => {
                self.emit(|| Event::WarmupEnded);
                None
            }
        };
        let source = self.source.as_ref().and_then(|source| {
            let topology = if blocking {
                // Unreachable, it is no detour: the keys' owners are this cluster's.
                source.routing_topology().ok()?
            } else {
                source.topology()
            };
            (!topology.nodes().is_empty()).then_some(topology)
        });
        let source_unknown = self.source.is_some() && source.is_none();
        let unreached = (previous.is_some() || self.source.is_some()).then_some(&self.unreached);
        Detours {
            previous,
            source,
            source_unknown,
            unreached,
        }
    }

    /// A write could not delete `key`'s other copy: it is not read through until one does.
    pub(crate) fn unreached(&self, key: &str) {
        ClientCounters::count(&self.counters.detour_delete_failures);
        if self.unreached.note(key) {
            log::warn!(
                "more than {MAX_UNREACHED} keys could not be deleted on a previous owner or the \
                 migrate_from cluster: no key is read through from there any more"
            );
        }
    }

    /// A write deleted `key`'s other copy.
    pub(crate) fn reached(&self, key: &str) {
        self.unreached.reached(key);
    }

    /// The cluster of `migrate_from`, if one is set.
    pub fn migration_source(&self) -> Option<&Cluster> {
        self.source.as_deref()
    }

    /// A cluster whose nodes come from `endpoint`; `me` is what holds it, for the refresher.
    pub(crate) fn discovered(
        endpoint: NodeAddress,
        config: ClientConfig,
        discovery: DiscoveryConfig,
        me: Weak<dyn Membership>,
    ) -> Self {
        let mut cluster = Cluster::new(&[], config);
        cluster.discovery = Some(Discovery::new(endpoint, discovery));
        cluster.me = me;
        cluster
    }

    /// The local tier, when `local_cache` is set: this process's own (a forked child starts
    /// with an empty one, as it starts with pools of its own).
    pub(crate) fn local_tier(&self) -> Option<Guard<Arc<LocalTier>>> {
        let slot = self.local.as_ref()?;
        let tier = slot.load();
        if tier.belongs_to_this_process() {
            return Some(tier);
        }
        // Two threads may both make one: either is empty, and the last one stays.
        slot.store(Arc::new(LocalTier::new(tier.config())));
        Some(slot.load())
    }

    /// The settings this cluster was built with.
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

    /// Whether routing needs a discovery first (no membership yet, an endpoint to ask): what
    /// an event driver must do off its loop.
    pub(crate) fn needs_discovery(&self, topology: &Topology) -> bool {
        topology.nodes().is_empty() && self.discovery.is_some()
    }

    /// Asks the configuration endpoint for the membership now and applies it if it changed
    /// (rate-limited after failures). A failure keeps the last good membership.
    pub fn refresh_membership(&self) -> Result<()> {
        match &self.discovery {
            Some(discovery) => discovery.discover(self, || false, self.deadline()),
            None => Ok(()),
        }
    }

    /// What this process's cluster has done so far: per node of the current membership and
    /// per client (see [`Metrics`]). Reading costs a few atomic loads per node.
    pub fn metrics(&self) -> Metrics {
        let topology = self.topology();
        let nodes = topology.nodes().iter().map(|node| node.metrics()).collect();
        let mut metrics = self.counters.read(nodes, topology.version());
        let replays = self.replays.counts();
        metrics.invalidations_replayed = replays.replayed;
        metrics.invalidations_dropped = replays.dropped;
        metrics.invalidation_overflows = replays.overflows;
        metrics.invalidation_flushes = replays.flushes;
        metrics.invalidations_waiting = topology
            .nodes()
            .iter()
            .map(|node| u64::try_from(node.invalidations.waiting()).unwrap_or(u64::MAX))
            .sum();
        if let Some(local) = self.local_tier() {
            let size = local.size();
            metrics.local_keys = u64::try_from(size.keys).unwrap_or(u64::MAX);
            metrics.local_bytes = u64::try_from(size.bytes).unwrap_or(u64::MAX);
        }
        metrics
    }

    /// The configuration endpoint, when the nodes are discovered.
    pub fn discovery_endpoint(&self) -> Option<&NodeAddress> {
        self.discovery.as_ref().map(Discovery::endpoint)
    }

    /// Replaces the membership; nodes that stay keep their pools, removed nodes' idle
    /// connections are closed. The one entry point of a new membership, discovered or given.
    pub fn apply_membership(&self, nodes: &[NodeAddress], version: Option<u64>) {
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
                Event::MembershipChanged {
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
            // Before the new membership routes anything: its first misses read through.
            let window = self.config.warmup_window;
            if self.warmup.open(&previous, window) {
                // New previous owners: what the last ones missed no longer matters (unless the
                // keys may be read through from the `migrate_from` cluster too).
                if self.source.is_none() {
                    self.unreached.clear();
                }
                self.emit(|| Event::WarmupStarted { window });
            }
        }
        for old in previous.nodes() {
            if !next.nodes().iter().any(|n| Arc::ptr_eq(n, old)) {
                old.pool.close_idle();
            }
        }
        self.topology.store(next);
    }

    /// The deadline of an operation starting now.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.config.timeout.map(|t| Instant::now() + t)
    }

    /// Whether `ignore_exc` turns `error` into a fallback: cache failures do; invalid
    /// requests still fail, but a value too large is a failed write like any other.
    pub(crate) fn tolerates(&self, error: &Error) -> bool {
        self.config.ignore_exc && (error.kind() != ErrorKind::Client || error.is_value_too_large())
    }

    /// Under `ignore_exc`, turns a cache failure into `fallback` (counted, and logged by the
    /// failure policy); otherwise, and for invalid requests, the failure stands.
    pub(crate) fn tolerate<T>(&self, result: Result<T>, fallback: impl FnOnce() -> T) -> Result<T> {
        match result {
            Err(error) if self.tolerates(&error) => {
                self.ignored(&error);
                Ok(fallback())
            }
            other => other,
        }
    }

    /// Counts and logs a failure turned into a fallback under `ignore_exc`.
    pub(crate) fn ignored(&self, error: &Error) {
        ClientCounters::count(&self.counters.ignored_failures);
        // A node failure was logged where it was counted (`note_failure`).
        if !error.counts_against_node() {
            self.log_ignored(error);
        }
    }

    /// Hands the event `make` makes to the configured sink, if there is one (nothing is made
    /// otherwise).
    pub(crate) fn emit(&self, make: impl FnOnce() -> Event) {
        if let Some(sink) = &self.config.events {
            sink.send(&make());
        }
    }

    /// Fails if `node` is marked down, or has invalidations waiting to be replayed (nothing
    /// is read from it before they are: `invalidations`).
    pub(crate) fn check_up(node: &Node) -> Result<()> {
        let down = node
            .health
            .down_for()
            .or_else(|| node.invalidations.pending().then_some(PROBE_INTERVAL));
        match down {
            Some(retry_in) => Err(Error::NodeDown {
                node: node.address.name.clone(),
                retry_in,
            }),
            None => Ok(()),
        }
    }

    /// The routes of an operation on `topology`, its keys sent to a gutter collected in
    /// `diverted` (for [`Cluster::diverted`]), with the `detours` of a cluster event.
    pub(crate) fn routes<'t>(
        &self,
        topology: &'t Topology,
        diverted: &'t RefCell<Vec<(usize, String)>>,
        detours: &'t Detours<'t>,
    ) -> Routes<'t> {
        // After a fork's parking of the replay threads, the replays still needed start again.
        self.replays.resume(topology.nodes());
        Routes::new(topology, self.config.gutter_ttl, diverted, detours)
    }

    /// An operation sent `diverted` keys (with their owners' indices in `topology`) to a
    /// gutter: counted (as reads, or `writes`), and when it changed or deleted them
    /// (`invalidates`), remembered against each owner, which must delete them before it serves
    /// reads again.
    pub(crate) fn diverted(
        &self,
        topology: &Topology,
        writes: bool,
        invalidates: bool,
        diverted: Vec<(usize, String)>,
    ) {
        if diverted.is_empty() {
            return;
        }
        let counter = if writes {
            &self.counters.gutter_writes
        } else {
            &self.counters.gutter_reads
        };
        ClientCounters::count_many(counter, diverted.len());
        if invalidates {
            for (owner, key) in &diverted {
                if let Some(node) = topology.nodes().get(*owner) {
                    self.replays.remember(node, [key.as_str()]);
                }
            }
        }
    }

    /// Invalidations (`keys` deleted or written) that did not reach `node`: remembered, and
    /// replayed before the node serves reads again.
    pub(crate) fn undelivered<'k>(
        &self,
        node: &Arc<Node>,
        keys: impl IntoIterator<Item = &'k str>,
    ) {
        self.replays.remember(node, keys);
    }

    /// Leases a connection to `node`, unless it is marked down, waiting until `deadline` for
    /// one when the pool is at `max_pool_size`.
    pub(crate) fn lease<'n>(&self, node: &'n Node, deadline: Option<Instant>) -> Result<Lease<'n>> {
        Self::check_up(node)?;
        node.pool
            .lease(&node.address, &self.config, deadline)
            .inspect_err(|e| self.note_failure(node, e))
    }

    /// Like [`Cluster::lease`], but `None` instead of waiting when the pool is at
    /// `max_pool_size`: for a caller that holds connections to other nodes.
    pub(crate) fn lease_without_waiting<'n>(
        &self,
        node: &'n Node,
        deadline: Option<Instant>,
    ) -> Result<Option<Lease<'n>>> {
        Self::check_up(node)?;
        node.pool
            .lease_without_waiting(&node.address, &self.config, deadline)
            .inspect_err(|e| self.note_failure(node, e))
    }

    /// A node answered: its health records it, and its recovery is an event.
    pub(crate) fn note_success(&self, node: &Node) {
        node.record_answer(&self.config);
    }

    /// Counts a failure against the node's health when it says something about the node, and
    /// logs it by the failure policy: every node failure passes here, raised or not.
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
            node.health.set_last_failure(error.to_string());
            let context = if c.ignore_exc {
                Context::Ignored
            } else {
                Context::Raised
            };
            let log = &node.health.log;
            log.failure(error, context, node.health.down_for(), now);
            if dead {
                if c.counters {
                    node.counters.marked_down();
                }
                let failures = node.health.failures_in_a_row();
                log.marked_down(failures, c.dead_timeout, now);
                self.emit(|| Event::NodeDown {
                    node: node.address.name.clone(),
                    failures,
                    retry_in: c.dead_timeout,
                });
            }
        }
    }

    /// Logs a failure turned into a miss under `ignore_exc` that was not already counted
    /// against a node (see [`Cluster::note_failure`]): by its node when it is one of the
    /// ring's, else by the node or endpoint it names, else by the configuration endpoint.
    fn log_ignored(&self, error: &Error) {
        let settings = &self.config.failure_log;
        if settings.level.is_none() {
            return;
        }
        let now = Instant::now();
        let named = failure_log::subject(error);
        if let Some(name) = named {
            let topology = self.topology();
            if let Some(node) = topology.nodes().iter().find(|n| n.address.name == name) {
                let down_for = node.health.down_for();
                node.health
                    .log
                    .failure(error, Context::Ignored, down_for, now);
                return;
            }
        }
        let subject = self.unrouted_subject(named);
        self.unrouted
            .log(&subject, settings)
            .failure(error, Context::Ignored, None, now);
    }

    /// What a failure naming no node of the ring is about: what it names, else the
    /// configuration endpoint (no membership), else the cluster's empty node list.
    fn unrouted_subject(&self, named: Option<&str>) -> String {
        match (named, self.discovery_endpoint()) {
            (Some(name), _) => name.to_owned(),
            (None, Some(endpoint)) => endpoint.to_string(),
            (None, None) => "the cluster".to_owned(),
        }
    }
}

impl AsRef<Cluster> for Cluster {
    fn as_ref(&self) -> &Cluster {
        self
    }
}

/// Discovery's view of whatever holds a cluster (the cluster itself, or the `Client` the
/// refresher thread holds weakly).
impl<T: AsRef<Cluster> + Send + Sync> Membership for T {
    fn config(&self) -> &ClientConfig {
        &self.as_ref().config
    }

    fn current(&self) -> Arc<Topology> {
        self.as_ref().topology()
    }

    fn apply_membership(&self, nodes: &[NodeAddress], version: Option<u64>) {
        self.as_ref().apply_membership(nodes, version);
    }

    fn discovered(&self, outcome: &Result<()>) {
        let cluster = self.as_ref();
        ClientCounters::count(&cluster.counters.discoveries);
        match outcome {
            Err(error) => {
                ClientCounters::count(&cluster.counters.discovery_failures);
                cluster.emit(|| Event::DiscoveryFailed {
                    endpoint: cluster
                        .discovery_endpoint()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    error: error.to_string(),
                });
            }
            // The endpoint's recovery, if its failures were logged: whoever ran the discovery
            // (a caller with no membership, or the refresher).
            Ok(()) => {
                if cluster.config.failure_log.level.is_none() {
                    return;
                }
                let Some(endpoint) = cluster.discovery_endpoint() else {
                    return;
                };
                if let Some(log) = cluster.unrouted.find(&endpoint.to_string()) {
                    if log.is_failing() {
                        log.success(Instant::now());
                    }
                }
            }
        }
    }

    fn refresh(&self) -> Result<()> {
        self.as_ref().refresh_membership()
    }

    fn refresh_failed(&self, error: &Error) {
        let cluster = self.as_ref();
        let settings = &cluster.config.failure_log;
        if settings.level.is_none() {
            return;
        }
        let subject = cluster.unrouted_subject(failure_log::subject(error));
        cluster.unrouted.log(&subject, settings).failure(
            error,
            Context::Refresh,
            None,
            Instant::now(),
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(discovery) = &self.discovery {
            discovery.stop_refresher();
        }
    }
}
