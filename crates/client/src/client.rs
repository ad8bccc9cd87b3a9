//! The facade: [`Client`], the one public surface over the cluster (`cluster`) and the
//! engine (`engine`). Each command is declared once, in the table at the end of this file,
//! from which come its blocking method (run on the calling thread), its `start_*` method (an
//! [`Operation`] an event driver advances) and its operation type.
//!
//! Layers, one way: `client` -> commands (`classic`, `stampede`, `ttl`, `counters`, `locks`,
//! `batch`, `every_node`, over `single`) and `engine` -> `cluster` (routing, pools, health,
//! failure log, events, fork check; fed by `discovery`) -> `pool`/`connection` -> the protocol
//! crate. The module-cycle check (`tests/module_layers.rs`) keeps it so.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use elasticache_proto::{
    self as proto, Counter, DeleteReply, IncrDecrReply, Retrieval, Store, StoreReply, TouchReply,
};

use crate::address::NodeAddress;
use crate::batch::{DeleteMany, GetMany, ItemList, KeyList, SetMany, TouchLarge};
use crate::classic::{self, Line, LinePlan, RetrievePlan, StorePlan};
use crate::cluster::Cluster;
use crate::config::{ClientConfig, DiscoveryConfig};
use crate::counters::{self, CounterPlan, Initial};
use crate::detour::Warm;
use crate::discovery::Membership;
use crate::engine::{Command, Operation};
use crate::error::{Error, Result};
use crate::every_node::EveryNode;
use crate::locks::{self, AcquirePlan, DeleteIfPlan};
use crate::metrics::CommandName;
use crate::single::One;
use crate::stampede::{self, LeasePlan, LeaseRequest, Leased};
use crate::ttl::{self, Ttl, TtlPlan};
use crate::values::{BatchValues, Item, Stats};

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
    /// The last failure counted against it, in words (why it is marked down).
    pub last_failure: Option<String>,
}

/// A memcached client for a set of nodes, safe to share between threads.
///
/// Nothing is connected until the first operation. Connections are pooled per node and per
/// process: after `fork()` the child builds its own pools and never touches the parent's.
///
/// It dereferences to its [`Cluster`] (membership, metrics, settings), which is also what an
/// [`Operation`] is driven with: `operation.advance(&client)` works as it reads.
#[derive(Debug)]
pub struct Client {
    cluster: Cluster,
}

impl Deref for Client {
    type Target = Cluster;

    #[inline]
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl AsRef<Cluster> for Client {
    fn as_ref(&self) -> &Cluster {
        &self.cluster
    }
}

impl Client {
    /// A client for a static list of nodes.
    pub fn new(nodes: &[NodeAddress], config: ClientConfig) -> Self {
        Client {
            cluster: Cluster::new(nodes, config),
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
        Arc::new_cyclic(|me: &std::sync::Weak<Client>| {
            // The refresher holds the client weakly, through discovery's narrow interface.
            let me: std::sync::Weak<dyn Membership> = me.clone();
            Client {
                cluster: Cluster::discovered(endpoint, config, discovery, me),
            }
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

    /// Replaces the membership; nodes that stay keep their pools, removed nodes' idle
    /// connections are closed.
    pub fn set_nodes(&self, nodes: &[NodeAddress], version: Option<u64>) {
        self.cluster.apply_membership(nodes, version);
    }

    /// Runs `command` to its end on the calling thread: every blocking method is this.
    #[inline]
    fn run<C: Command>(&self, command: C) -> Result<C::Output> {
        Operation::new(&self.cluster, command)?.run(&self.cluster)
    }

    /// Stores `data` under `key`; returns whether it was stored. A set that fails deletes the
    /// key (see [`Client::store`]).
    pub fn set(&self, key: &str, flags: u32, data: &[u8], exptime: i64) -> Result<bool> {
        Ok(self.store(Store::Set, key, flags, data, exptime)? == StoreReply::Stored)
    }

    /// Stores `data` only if `key` is not in the cache; returns whether it was stored.
    pub fn add(&self, key: &str, flags: u32, data: &[u8], exptime: i64) -> Result<bool> {
        Ok(self.store(Store::Add, key, flags, data, exptime)? == StoreReply::Stored)
    }

    /// Adds `delta` to a counter; `None` when `key` is not in the cache.
    pub fn incr(&self, key: &str, delta: u64) -> Result<Option<u64>> {
        self.counter(Counter::Incr, key, delta)
    }

    /// Subtracts `delta` from a counter (memcached stops at 0); `None` when `key` is missing.
    pub fn decr(&self, key: &str, delta: u64) -> Result<Option<u64>> {
        self.counter(Counter::Decr, key, delta)
    }

    /// Whether a value of `len` bytes is stored as chunks (`large_values` on, and the value
    /// over the chunk length): such a value goes through [`Client::store_large`].
    pub fn chunks(&self, len: usize) -> bool {
        self.cluster
            .config
            .large_values
            .is_some_and(|large| large.chunks(len))
    }

    /// Whether large values are read whole (`large_values` on): reads go through
    /// [`Client::get_large`].
    pub fn reads_large(&self) -> bool {
        self.cluster.config.large_values.is_some()
    }

    /// Reads many keys in one round trip; the result is aligned with `keys` (`None` = miss).
    pub fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Item>>> {
        self.get_many_values(keys).map(BatchValues::into_items)
    }

    /// Empties every node (`flush_all`). Fails if any node could not be flushed.
    pub fn flush_all(&self) -> Result<()> {
        self.flushed(self.flush_replies())
    }

    /// What [`Client::flush_all`] makes of every node's reply: a failure unless every node
    /// was flushed (or `ignore_exc` is on).
    pub fn flushed(&self, replies: Result<Vec<(String, Result<()>)>>) -> Result<()> {
        let outcome =
            replies.and_then(|replies| replies.into_iter().try_for_each(|(_, result)| result));
        self.cluster.tolerate(outcome, || ())
    }

    /// The `stats` of every node, by node name.
    pub fn stats(&self, group: Option<&str>) -> Result<Vec<(String, Result<Stats>)>> {
        self.run(EveryNode::stats(group))
    }

    /// The server version of every node, by node name.
    pub fn versions(&self) -> Result<Vec<(String, Result<String>)>> {
        self.run(EveryNode::versions())
    }

    /// Each node of the membership (discovering it first if needed), asked one at a time:
    /// its `stats`, then the round trip of a `version` on the connection that brought them.
    /// For operators' tools: a node that does not answer is reported, never raised.
    pub fn probe(&self) -> Result<Vec<NodeProbe>> {
        let topology = self.cluster.routing_topology()?;
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
                let stats = one(self.run(EveryNode::stats(None).only(name)));
                // Timed only once the node answered (its connection is pooled by then).
                let round_trip = stats.as_ref().ok().and_then(|_| {
                    let started = Instant::now();
                    let version = self.run(EveryNode::versions().only(name));
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
                    last_failure: node.health.last_failure(),
                }
            })
            .collect())
    }
}

/// A key list of `key` alone.
fn one_key(key: impl AsRef<str>) -> KeyList {
    let mut keys = KeyList::with_capacity(1);
    keys.push(key.as_ref());
    keys
}

/// An item list of one item.
fn one_item(key: impl AsRef<str>, flags: u32, data: impl AsRef<[u8]>) -> ItemList {
    let mut items = ItemList::with_capacity(1);
    items.push(key.as_ref(), flags, data.as_ref());
    items
}

/// What [`Client::start_store_large`]'s output (the positions not stored) means.
pub fn stored(not_stored: &[usize]) -> StoreReply {
    if not_stored.is_empty() {
        StoreReply::Stored
    } else {
        StoreReply::NotStored
    }
}

/// Declares each command once: its blocking method (arguments borrowed, output converted
/// by `|reply| ...`), its `start_*` method for event drivers (arguments owned, the raw
/// output), and the [`Operation`] type that method returns. `(cluster)` names the cluster in
/// the command's constructor, for settings such as `max_value_len`; arguments are converted
/// with `.into()` from either form.
macro_rules! commands {
    ($(
        $(#[$doc:meta])*
        $vis:vis fn $name:ident($($arg:ident: $borrowed:ty => $owned:ty),*) -> $output:ty
            = |$reply:ident| $convert:expr;
        $(#[$start_doc:meta])*
        start $start:ident -> $operation:ident = Operation<$command:ty>;
        ($cluster:ident) $build:expr;
    )+) => {
        $(
            #[doc = concat!("What [`Client::", stringify!($start), "`] returns: an operation of `",
                stringify!($name), "` for an event driver.")]
            pub type $operation = Operation<$command>;
        )+

        impl Client {
            $(
                $(#[$doc])*
                $vis fn $name(&self, $($arg: $borrowed),*) -> Result<$output> {
                    // Not every constructor needs the cluster's settings.
                    #[allow(unused_variables)]
                    let $cluster: &Cluster = &self.cluster;
                    let $reply = self.run($build)?;
                    Ok($convert)
                }

                #[doc = concat!("`", stringify!($name), "` for an event driver (asyncio's loop, \
                    gevent's hub), which advances the returned operation as its sockets become \
                    ready. Invalid keys fail here, before anything is sent.")]
                $(#[$start_doc])*
                // One constructor serves both forms: on owned arguments `.into()` is the
                // identity (and compiles to nothing).
                #[allow(clippy::useless_conversion)]
                pub fn $start(&self, $($arg: $owned),*) -> Result<$operation> {
                    let $cluster: &Cluster = &self.cluster;
                    Operation::new($cluster, $build)
                }
            )+
        }
    };
}

commands! {
    /// Reads `key`; `None` when it is not in the cache.
    pub fn get(key: &str => String) -> Option<Item> = |item| item;
    start start_get -> GetOperation = Operation<Warm<One<RetrievePlan>>>;
    (cluster) Warm::new(classic::get(key.into(), Retrieval::Get, cluster.config.max_value_len));

    /// Reads `key` with its CAS token.
    pub fn gets(key: &str => String) -> Option<Item> = |item| item;
    start start_gets -> GetsOperation = Operation<One<RetrievePlan>>;
    (cluster) classic::get(key.into(), Retrieval::Gets, cluster.config.max_value_len);

    /// Runs a storage command and returns the server's verdict.
    ///
    /// A `set` that fails (not stored, refused by the node, or too large for the client or the
    /// node) deletes the key in the same operation: the old value must not be read back as if
    /// the new one had been stored.
    pub fn store(
        command: Store => Store,
        key: &str => String,
        flags: u32 => u32,
        data: &[u8] => Vec<u8>,
        exptime: i64 => i64
    ) -> StoreReply = |reply| reply;
    start start_store -> StoreOperation = Operation<Warm<One<StorePlan<'static>>>>;
    (cluster) Warm::new(classic::store(command, key.into(), flags, data.into(), exptime, cluster.config.max_value_len));

    /// Deletes `key`; returns whether it was there.
    pub fn delete(key: &str => String) -> bool = |reply| reply == DeleteReply::Deleted;
    start start_delete -> DeleteOperation = Operation<Warm<One<LinePlan<DeleteReply>>>>;
    (cluster) Warm::new(One::new(key.into(), LinePlan {
        line: Line::Delete,
        parse: proto::parse_delete,
        fallback: DeleteReply::NotFound,
    }));

    /// Deletes `key` without ending its `get_or_set` lease (a [`Client::delete`] ends it):
    /// for a computation taking back the value it stored once it finds its own lease ended,
    /// which by then may be another caller's. Returns whether the key was there.
    pub fn discard(key: &str => String) -> bool = |reply| reply == DeleteReply::Deleted;
    start start_discard -> DiscardOperation = Operation<One<LinePlan<DeleteReply>>>;
    (cluster) One::new(key.into(), LinePlan {
        line: Line::Discard,
        parse: proto::parse_delete,
        fallback: DeleteReply::NotFound,
    });

    /// `incr` or `decr` of a counter; `None` when `key` is not in the cache.
    fn counter(op: Counter => Counter, key: &str => String, delta: u64 => u64) -> Option<u64>
        = |reply| match reply {
            IncrDecrReply::Value(value) => Some(value),
            IncrDecrReply::NotFound => None,
        };
    start start_counter -> CounterOperation = Operation<One<LinePlan<IncrDecrReply>>>;
    (cluster) One::new(key.into(), LinePlan {
        line: Line::Counter(op, delta),
        parse: proto::parse_incr_decr,
        fallback: IncrDecrReply::NotFound,
    });

    /// Sets a new expiry on `key`; returns whether it was there.
    pub fn touch(key: &str => String, exptime: i64 => i64) -> bool
        = |reply| reply == TouchReply::Touched;
    start start_touch -> TouchOperation = Operation<One<LinePlan<TouchReply>>>;
    (cluster) One::new(key.into(), LinePlan {
        line: Line::Touch(exptime),
        parse: proto::parse_touch,
        fallback: TouchReply::NotFound,
    });

    /// Like [`Client::get_many`], the values kept in the batch's own buffers (no allocation
    /// per value): for callers that convert them right away.
    pub fn get_many_values(keys: &[&str] => KeyList) -> BatchValues = |values| values;
    start start_get_many -> GetManyOperation = Operation<Warm<GetMany<KeyList>>>;
    (cluster) Warm::new(GetMany::new(keys, &cluster.config));

    /// Stores many values in one round trip; returns the positions that were not stored.
    ///
    /// A value over `max_value_len` is not sent: its key is deleted instead (in the same round
    /// trip), so an old value cannot outlive the failed write, and it is reported as not stored.
    /// memcached does the same for values over its own item limit.
    pub fn set_many(items: &[(&str, u32, &[u8])] => ItemList, exptime: i64 => i64) -> Vec<usize>
        = |not_stored| not_stored;
    start start_set_many -> SetManyOperation = Operation<Warm<SetMany<ItemList>>>;
    (cluster) Warm::new(SetMany::new(items, exptime, &cluster.config));

    /// Reads `key` as [`Client::get`] does, a large value's chunks included (read in a second
    /// round, from whichever nodes hold them; see `ClientConfig::large_values`). Without
    /// `large_values`, the same as `get`, but an index item reads as a miss.
    pub fn get_large(key: &str => String) -> Option<Item>
        = |values| values.into_items().into_iter().next().flatten();
    /// Its output holds one position, the key's.
    start start_get_large -> GetLargeOperation = Operation<Warm<GetMany<KeyList>>>;
    (cluster) Warm::new(GetMany::new(one_key(key), &cluster.config).named(CommandName::Get));

    /// A storage command (`Set` or `Add`) of a value that may be over the item size: with
    /// `large_values` on, one over the chunk length is stored as chunks (first) and an index
    /// (see `ClientConfig::large_values`); one over the large-value bound fails as
    /// [`Error::ValueTooLarge`] before anything is stored (a `set` still deletes the key).
    pub fn store_large(
        command: Store => Store,
        key: &str => String,
        flags: u32 => u32,
        data: &[u8] => Vec<u8>,
        exptime: i64 => i64
    ) -> StoreReply = |not_stored| stored(&not_stored);
    /// Its output is empty when the value was stored: see [`stored`].
    start start_store_large -> StoreLargeOperation = Operation<Warm<SetMany<ItemList>>>;
    (cluster) Warm::new(SetMany::single(one_item(key, flags, data), command, exptime, &cluster.config));

    /// Sets a new expiry on `key` and, when it holds a large value's index, on its chunks too
    /// (read first, then touched with the key in a second round); returns whether `key` was
    /// there. With `large_values` on, [`Client::touch`] would leave the chunks' expiry as it was.
    pub fn touch_large(key: &str => String, exptime: i64 => i64) -> bool = |touched| touched;
    start start_touch_large -> TouchLargeOperation = Operation<TouchLarge>;
    (cluster) TouchLarge::new(key.into(), exptime, &cluster.config);

    /// Deletes many keys in one round trip; returns how many were there.
    pub fn delete_many(keys: &[&str] => KeyList) -> usize = |deleted| deleted;
    start start_delete_many -> DeleteManyOperation = Operation<Warm<DeleteMany<KeyList>>>;
    (cluster) Warm::new(DeleteMany::new(keys));

    /// Every node's reply to `flush_all` (see [`Client::flush_all`]).
    pub(crate) fn flush_replies() -> Vec<(String, Result<()>)> = |replies| replies;
    /// Fold its output with [`Client::flushed`].
    start start_flush_all -> FlushAllOperation = Operation<EveryNode<()>>;
    (cluster) EveryNode::flush_all();

    /// Reads `key`, and on a miss asks for the lease to compute it: across every client of
    /// the cluster one caller at a time wins it (until its owner releases it with
    /// [`Client::release_lease`] or `lease` seconds pass). With `early_recompute`, a hit with
    /// less than that many seconds left wins (once) the right to refresh it while others keep
    /// reading it. Under `ignore_exc`, a failure reads as a miss with the lease won.
    pub fn get_or_lease(key: &str => String, request: LeaseRequest => LeaseRequest) -> Leased
        = |leased| leased;
    start start_get_or_lease -> LeaseOperation = Operation<Warm<One<LeasePlan>>>;
    (cluster) Warm::new(stampede::lease(key.into(), request, cluster.config.max_value_len));

    /// Ends `key`'s lease if it still holds `token` (the one its get-or-lease was given);
    /// returns whether it did. A lease that ran out and was won by another caller is theirs,
    /// and stays.
    pub fn release_lease(key: &str => String, token: &[u8] => Vec<u8>) -> bool = |released| released;
    start start_release_lease -> ReleaseOperation = Operation<One<DeleteIfPlan>>;
    (cluster) stampede::release(key.into(), token.into(), cluster.config.max_value_len);

    /// How long `key` has left; [`crate::Error::MetaUnsupported`] on a node without meta commands.
    pub fn ttl(key: &str => String) -> Ttl = |ttl| ttl;
    start start_ttl -> TtlOperation = Operation<One<TtlPlan>>;
    (cluster) ttl::ttl(key.into());

    /// Adds `delta` to (or subtracts it from) a counter; a missing counter is created with
    /// `initial` (and that value returned), atomically across clients. Without `initial`, `None`
    /// when the counter is missing.
    pub fn count(
        op: Counter => Counter,
        key: &str => String,
        delta: u64 => u64,
        initial: Option<Initial> => Option<Initial>
    ) -> Option<u64> = |value| value;
    start start_count -> CountOperation = Operation<One<CounterPlan>>;
    (cluster) counters::count(key.into(), op, delta, initial);

    /// Stores `token` under `key` (for `exptime`, memcached's) if the key holds nothing;
    /// returns whether it did: a lock's acquire. Failures are always errors, `ignore_exc` or
    /// not: "not stored" always means that the key holds something.
    pub fn acquire(key: &str => String, token: &[u8] => Vec<u8>, exptime: i64 => i64) -> bool
        = |stored| stored;
    start start_acquire -> AcquireOperation = Operation<One<AcquirePlan>>;
    (cluster) locks::acquire(key.into(), token.into(), exptime);

    /// Deletes `key` only if it holds exactly `token`; returns whether it did. Failures are
    /// always errors, `ignore_exc` or not (a lock's release that did not reach the node).
    pub fn delete_if(key: &str => String, token: &[u8] => Vec<u8>) -> bool = |deleted| deleted;
    start start_delete_if -> DeleteIfOperation = Operation<One<DeleteIfPlan>>;
    (cluster) locks::delete_if(key.into(), token.into(), cluster.config.max_value_len);
}
