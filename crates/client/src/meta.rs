//! Commands that use memcached's meta protocol where a node speaks it and the classic commands
//! where it does not: get-or-lease (one computation per miss across the fleet, and early
//! recompute), a key's TTL, counters created on a miss, and delete-if-owner (locks).
//!
//! Each node is probed once, with `mn`, by the first such command sent to it: memcached 1.6
//! answers `MN`; servers without meta commands answer `ERROR` (and early 1.6 betas, whose
//! meta dialect differs, answer otherwise), and get the classic fallback. The answer is kept
//! on the node, so a node replaced by a new one (a new `Node`) is probed again. The probe goes
//! on the same connection as the command, whose request follows once the probe is answered
//! (`Reading::Send`): one operation, run by any driver.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use elasticache_proto::{
    self as proto, Counter, IncrDecrReply, MetaCommand, MetaFlag, MetaStatus, Parse, ReplyError,
    Retrieval, RetrievalItem, Store, StoreReply, MAX_KEY_LEN,
};

use crate::client::{Client, Item};
use crate::engine::{Command, Cursor, Failed, Reading, Share};
use crate::error::{Error, Result};
use crate::hash::Murmur3;
use crate::metrics::CommandName;
use crate::topology::{Node, Topology};

type ParseResult<T> = std::result::Result<Parse<T>, ReplyError>;

const SPEAKS_META: u8 = 1;
const CLASSIC_ONLY: u8 = 2;

/// Whether a node speaks the meta protocol: unknown (0) until its first probe.
#[derive(Debug, Default)]
pub(crate) struct MetaSupport(AtomicU8);

impl MetaSupport {
    /// `Some(true)` / `Some(false)` once probed.
    pub(crate) fn get(&self) -> Option<bool> {
        match self.0.load(Ordering::Acquire) {
            SPEAKS_META => Some(true),
            CLASSIC_ONLY => Some(false),
            _ => None,
        }
    }

    fn set(&self, speaks_meta: bool) {
        let state = if speaks_meta {
            SPEAKS_META
        } else {
            CLASSIC_ONLY
        };
        self.0.store(state, Ordering::Release);
    }
}

impl Node {
    /// Whether this node speaks memcached's meta protocol; `None` until a command that uses it
    /// has probed the node.
    pub fn speaks_meta(&self) -> Option<bool> {
        self.meta.get()
    }
}

/// What a plan's reader made of a reply.
#[derive(Debug)]
pub enum Step<T> {
    /// Part of the reply is read; more is due.
    More,
    /// The reader wrote the next request.
    Send,
    /// The outcome.
    Done(T),
}

/// The per-command part of a [`MetaOne`]: its requests with and without meta commands, and how
/// their replies read.
pub trait Plan {
    /// What the command returns.
    type Output;
    /// The command, as the counters name it.
    fn name(&self) -> CommandName;
    /// Whether the plan uses meta commands at all (if not, the node is not probed for them).
    fn uses_meta(&self) -> bool {
        true
    }
    /// Writes the first request; `Err` when the plan cannot run on such a node.
    fn start(&mut self, key: &str, meta: bool, out: &mut Vec<u8>) -> Result<()>;
    /// Reads a reply to the plan's current request.
    fn read(
        &mut self,
        key: &str,
        meta: bool,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> ParseResult<Step<Self::Output>>;
    /// The outcome under `ignore_exc` when the node fails.
    fn fallback(&self) -> Self::Output;
}

/// A one-key command run by a [`Plan`], with the node's meta support probed first if unknown.
#[derive(Debug)]
pub struct MetaOne<P: Plan> {
    key: String,
    plan: P,
    node: Option<Arc<Node>>,
    /// The node's support as this command uses it; `None` while the probe is on the wire.
    meta: Option<bool>,
    /// The first request, made when the node is known.
    first: Vec<u8>,
    /// Why the plan could not run on the node (found out by the probe).
    refused: Option<Error>,
    output: Option<P::Output>,
    /// Whether a failure is always the caller's to see, `ignore_exc` or not: a lock must never
    /// take "the cache could not be asked" for "someone else holds it".
    strict: bool,
}

impl<P: Plan> MetaOne<P> {
    pub(crate) fn new(key: String, plan: P) -> Self {
        MetaOne {
            key,
            plan,
            node: None,
            meta: None,
            first: Vec::new(),
            refused: None,
            output: None,
            strict: false,
        }
    }

    /// The command with failures never turned into the plan's fallback by `ignore_exc`.
    pub(crate) fn strict(key: String, plan: P) -> Self {
        MetaOne {
            strict: true,
            ..MetaOne::new(key, plan)
        }
    }
}

impl<P: Plan> Command for MetaOne<P> {
    type Output = P::Output;

    fn name(&self) -> CommandName {
        self.plan.name()
    }

    fn validate(&self) -> Result<()> {
        Client::validate(&self.key)
    }

    fn shares(&mut self, topology: &Topology) -> Result<Vec<Share>> {
        let index = topology.node_index_for(&self.key).ok_or(Error::NoNodes)?;
        let node = topology.nodes().get(index).ok_or(Error::NoNodes)?;
        self.meta = if self.plan.uses_meta() {
            node.meta.get()
        } else {
            Some(false)
        };
        self.first.clear();
        match self.meta {
            Some(meta) => self.plan.start(&self.key, meta, &mut self.first)?,
            None => proto::encode_meta_noop(&mut self.first),
        }
        self.node = Some(Arc::clone(node));
        Ok(vec![Share {
            node: Arc::clone(node),
            positions: vec![0],
        }])
    }

    fn all_positions(&self) -> Vec<usize> {
        vec![0]
    }

    fn size(&self, _: usize) -> usize {
        self.first.len()
    }

    fn encode(&mut self, out: &mut Vec<u8>, _: &[usize]) {
        out.extend_from_slice(&self.first);
    }

    fn read(
        &mut self,
        _: &str,
        _: &[usize],
        _: &mut Cursor,
        buf: &[u8],
        request: &mut Vec<u8>,
    ) -> ParseResult<Reading> {
        let Some(meta) = self.meta else {
            return self.read_probe(buf, request);
        };
        Ok(match self.plan.read(&self.key, meta, buf, request)? {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(Step::More, used) => Parse::Complete(Reading::More, used),
            Parse::Complete(Step::Send, used) => Parse::Complete(Reading::Send, used),
            Parse::Complete(Step::Done(output), used) => {
                self.output = Some(output);
                Parse::Complete(Reading::Done, used)
            }
        })
    }

    fn finish(self, client: &Client, failed: Vec<Failed>) -> Result<P::Output> {
        let outcome = match (self.refused, failed.into_iter().next()) {
            (Some(error), _) | (None, Some((_, error))) => Err(error),
            // `None` cannot happen: an exchange ends well only once the reply is read.
            (None, None) => self.output.ok_or(Error::NoNodes),
        };
        if self.strict {
            return outcome;
        }
        let plan = &self.plan;
        client.tolerate(outcome, || plan.fallback())
    }
}

impl<P: Plan> MetaOne<P> {
    /// Reads the answer to `mn`, remembers it on the node, and sends the plan's first request.
    fn read_probe(&mut self, buf: &[u8], request: &mut Vec<u8>) -> ParseResult<Reading> {
        let (speaks_meta, used) = match proto::parse_meta_noop(buf)? {
            Parse::Incomplete(needed) => return Ok(Parse::Incomplete(needed)),
            Parse::Complete(speaks_meta, used) => (speaks_meta, used),
        };
        if let Some(node) = &self.node {
            if node.meta.get() != Some(speaks_meta) {
                log::debug!(
                    "{}: meta commands {}",
                    node.address.name,
                    if speaks_meta {
                        "supported"
                    } else {
                        "not supported: classic fallback"
                    }
                );
            }
            node.meta.set(speaks_meta);
        }
        self.meta = Some(speaks_meta);
        Ok(match self.plan.start(&self.key, speaks_meta, request) {
            Ok(()) => Parse::Complete(Reading::Send, used),
            Err(error) => {
                self.refused = Some(error);
                Parse::Complete(Reading::Done, used)
            }
        })
    }
}

/// What starts every lease key: a byte no UTF-8 text holds, so no key function (Django's, a
/// user's, a Rust caller's `&str`) can make a key in the leases' name space, and no user key is
/// ever read, stalled on or deleted as a lease. memcached takes any byte but spaces and
/// control bytes in a key.
pub const LEASE_PREFIX: &[u8] = b"\xfflease:";

/// The key of `key`'s lease: [`LEASE_PREFIX`] and the key, or for keys too long for that,
/// their start and a 64-bit hash of the whole key. Sent to `key`'s node, whichever node the
/// ring would give the lease key itself, so one node decides.
pub fn lease_key(key: &str) -> Vec<u8> {
    let mut lease = Vec::with_capacity(MAX_KEY_LEN);
    lease.extend_from_slice(LEASE_PREFIX);
    if LEASE_PREFIX.len() + key.len() <= MAX_KEY_LEN {
        lease.extend_from_slice(key.as_bytes());
        return lease;
    }
    let mut first = Murmur3::default();
    first.write(key.as_bytes());
    let mut second = Murmur3::default();
    second.write(b"lease:");
    second.write(key.as_bytes());
    let tail = format!(":{:08x}{:08x}", first.finish(), second.finish());
    let mut cut = MAX_KEY_LEN.saturating_sub(LEASE_PREFIX.len() + tail.len());
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    lease.extend_from_slice(&key.as_bytes()[..cut]);
    lease.extend_from_slice(tail.as_bytes());
    lease
}

/// A token for one caller's lease (32 hex digits): what the lease key holds while that caller
/// has it, so that only that caller ends it ([`Client::release_lease`]); a winner slower than
/// its lease never ends the next winner's. Unique per call and per process (a forked child
/// makes other tokens than its parent), unguessable enough for that; not a secret.
pub fn lease_token() -> Vec<u8> {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::AtomicU64;
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    // Each RandomState has keys of its own, seeded by the operating system's randomness.
    let seed = (std::process::id(), call, now);
    let high = RandomState::new().hash_one(seed);
    let low = RandomState::new().hash_one(seed);
    format!("{high:016x}{low:016x}").into_bytes()
}

/// What [`Client::get_or_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    /// The value, if the key holds one.
    pub item: Option<Item>,
    /// Whether this caller won the right to compute the value: on a miss, the lease (others
    /// wait until it is stored or the lease runs out); on a hit, an early recompute (others go
    /// on being served `item`).
    pub won: bool,
}

/// Get-or-lease: `get <key>` (`mg <key> v f R<early>` for early recompute), then on a miss
/// `add <lease key>` of the caller's token for `lease` seconds: the first caller stores it and
/// wins, the others are told `NOT_STORED`. `add` works alike with and without meta commands;
/// early recompute needs `mg` (the classic protocol does not tell the time left).
///
/// A caller that wins the lease reads the key once more: its miss may have come just before
/// another winner stored the value and ended its lease. If the value is there now, it ends the
/// lease it just won (its own token only) and returns the value, so a value is never computed
/// twice for one miss.
///
/// With `take`, the key is not read: the lease is asked for at once (for a value the caller
/// read but cannot decode, which is a miss to it, not a value another caller computes).
#[derive(Debug)]
pub struct LeasePlan {
    lease: u32,
    early: Option<u32>,
    token: Vec<u8>,
    take: bool,
    max_value_len: usize,
    /// A value read (a classic `get` reads it before its `END`; a recheck keeps it while the
    /// lease is ended).
    item: Option<Item>,
    phase: LeasePhase,
}

/// Which request of a [`LeasePlan`] is on the wire.
#[derive(Debug)]
enum LeasePhase {
    /// The key's first read.
    Key,
    /// The lease request, after a miss.
    Lease,
    /// The key read again, the lease won.
    Recheck,
    /// The lease ended (the value found on the recheck), by its owner's token.
    Release(DeleteIfPlan),
}

/// What a read of the key found.
enum KeyRead {
    /// A classic `VALUE` line is read; its `END` follows.
    More,
    /// The value, and whether an early recompute was won.
    Hit(Item, bool),
    Miss,
}

impl Plan for LeasePlan {
    type Output = Leased;

    fn name(&self) -> CommandName {
        CommandName::Get
    }

    fn start(&mut self, key: &str, meta: bool, out: &mut Vec<u8>) -> Result<()> {
        if self.take {
            self.ask_lease(key, out);
        } else {
            self.phase = LeasePhase::Key;
            self.read_key_request(key, meta, self.early, out);
        }
        Ok(())
    }

    fn read(
        &mut self,
        key: &str,
        meta: bool,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> ParseResult<Step<Leased>> {
        let (read, used) = match &mut self.phase {
            LeasePhase::Lease => return self.read_lease(key, meta, buf, out),
            LeasePhase::Release(release) => {
                let step = match release.read(key, meta, buf, out)? {
                    Parse::Incomplete(needed) => return Ok(Parse::Incomplete(needed)),
                    Parse::Complete(step, used) => (step, used),
                };
                return Ok(match step {
                    (Step::More, used) => Parse::Complete(Step::More, used),
                    (Step::Send, used) => Parse::Complete(Step::Send, used),
                    (Step::Done(_), used) => {
                        let item = self.item.take();
                        Parse::Complete(Step::Done(Leased { item, won: false }), used)
                    }
                });
            }
            LeasePhase::Key | LeasePhase::Recheck => match self.read_key(key, meta, buf)? {
                Parse::Incomplete(needed) => return Ok(Parse::Incomplete(needed)),
                Parse::Complete(read, used) => (read, used),
            },
        };
        let recheck = matches!(self.phase, LeasePhase::Recheck);
        let step = match read {
            KeyRead::More => Step::More,
            KeyRead::Hit(item, won) if !recheck => Step::Done(Leased {
                item: Some(item),
                won,
            }),
            KeyRead::Hit(item, _) => {
                // Stored by another winner meanwhile: the lease just won is not needed.
                self.item = Some(item);
                let mut release = self.release_plan(key);
                release.begin(meta, out);
                self.phase = LeasePhase::Release(release);
                Step::Send
            }
            KeyRead::Miss if !recheck => {
                self.ask_lease(key, out);
                Step::Send
            }
            KeyRead::Miss => Step::Done(Leased {
                item: None,
                won: true,
            }),
        };
        Ok(Parse::Complete(step, used))
    }

    fn fallback(&self) -> Leased {
        // The cache failed: the caller computes the value (as on a plain miss).
        Leased {
            item: None,
            won: true,
        }
    }
}
impl LeasePlan {
    /// Whether the key is read with `mg`: only for early recompute, which needs the time left
    /// that only `mg` tells. Otherwise a plain `get`, the cheapest read (a hit costs what a
    /// `get` does), even on a node that speaks meta.
    fn key_in_meta(&self, meta: bool) -> bool {
        meta && self.early.is_some()
    }

    /// `mg <key> v f [R<early>]`, or `get <key>`.
    fn read_key_request(&self, key: &str, meta: bool, early: Option<u32>, out: &mut Vec<u8>) {
        if self.key_in_meta(meta) {
            let mut flags = vec![MetaFlag::Value, MetaFlag::ReturnFlags];
            flags.extend(early.map(MetaFlag::Recache));
            proto::encode_meta(out, MetaCommand::Get, key.as_bytes(), &flags, b"");
        } else {
            proto::encode_retrieval(out, Retrieval::Get, [key.as_bytes()]);
        }
    }

    fn read_key(&mut self, key: &str, meta: bool, buf: &[u8]) -> ParseResult<KeyRead> {
        if self.key_in_meta(meta) {
            let (reply, used) = match proto::parse_meta(buf, self.max_value_len)? {
                Parse::Incomplete(needed) => return Ok(Parse::Incomplete(needed)),
                Parse::Complete(reply, used) => (reply, used),
            };
            let read = match (reply.status, reply.data) {
                (MetaStatus::Value, Some(data)) => KeyRead::Hit(
                    Item {
                        flags: reply.flags.client_flags.unwrap_or_default(),
                        data: Bytes::copy_from_slice(data),
                        cas: None,
                    },
                    reply.flags.won,
                ),
                (MetaStatus::Miss, _) => KeyRead::Miss,
                (other, _) => return Err(unexpected("mg", &other)),
            };
            return Ok(Parse::Complete(read, used));
        }
        Ok(match proto::parse_retrieval(buf, self.max_value_len)? {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(RetrievalItem::Value(value), used) => {
                if value.key != key.as_bytes() || self.item.is_some() {
                    return Err(ReplyError::Malformed(
                        "a value for a key not asked for".to_owned(),
                    ));
                }
                self.item = Some(Item {
                    flags: value.flags,
                    data: Bytes::copy_from_slice(value.data),
                    cas: None,
                });
                Parse::Complete(KeyRead::More, used)
            }
            Parse::Complete(RetrievalItem::End, used) => match self.item.take() {
                Some(item) => Parse::Complete(KeyRead::Hit(item, false), used),
                None => Parse::Complete(KeyRead::Miss, used),
            },
        })
    }

    /// `add <lease key> 0 <lease> <n>` of the caller's token.
    fn ask_lease(&mut self, key: &str, out: &mut Vec<u8>) {
        let exptime = i64::from(self.lease);
        let lease_key = lease_key(key);
        proto::encode_store(out, Store::Add, &lease_key, 0, exptime, &self.token, false);
        self.phase = LeasePhase::Lease;
    }

    /// The end of this caller's lease: deleted only while it holds this caller's token.
    fn release_plan(&self, key: &str) -> DeleteIfPlan {
        DeleteIfPlan::new(lease_key(key), self.token.clone(), self.max_value_len)
    }

    fn read_lease(
        &mut self,
        key: &str,
        meta: bool,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> ParseResult<Step<Leased>> {
        let (won, used) = match proto::parse_store(buf)? {
            Parse::Incomplete(needed) => return Ok(Parse::Incomplete(needed)),
            Parse::Complete(reply, used) => (reply == StoreReply::Stored, used),
        };
        if !won || self.take {
            // Taken without a read: the caller knows the key holds nothing it can use.
            return Ok(Parse::Complete(
                Step::Done(Leased { item: None, won }),
                used,
            ));
        }
        self.phase = LeasePhase::Recheck;
        self.read_key_request(key, meta, None, out);
        Ok(Parse::Complete(Step::Send, used))
    }
}

/// A meta reply that the request cannot have: the stream is not what it seems.
fn unexpected(command: &str, status: &MetaStatus) -> ReplyError {
    ReplyError::Malformed(format!("{status:?} is no reply to {command}"))
}

/// How long a key has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key is not in the cache.
    Missing,
    /// The key never expires.
    Forever,
    /// Seconds left.
    Seconds(u64),
}

/// `mg <key> t`: only with meta commands (the classic protocol does not tell a TTL).
#[derive(Debug)]
pub struct TtlPlan;

impl Plan for TtlPlan {
    type Output = Ttl;

    fn name(&self) -> CommandName {
        CommandName::Get
    }

    fn start(&mut self, key: &str, meta: bool, out: &mut Vec<u8>) -> Result<()> {
        if !meta {
            return Err(Error::MetaUnsupported {
                what: "reading a key's TTL",
            });
        }
        proto::encode_meta(
            out,
            MetaCommand::Get,
            key.as_bytes(),
            &[MetaFlag::ReturnTtl],
            b"",
        );
        Ok(())
    }

    fn read(&mut self, _: &str, _: bool, buf: &[u8], _: &mut Vec<u8>) -> ParseResult<Step<Ttl>> {
        let (reply, used) = match proto::parse_meta(buf, 0)? {
            Parse::Incomplete(needed) => return Ok(Parse::Incomplete(needed)),
            Parse::Complete(reply, used) => (reply, used),
        };
        let ttl = match (reply.status, reply.flags.ttl) {
            (MetaStatus::Miss, _) => Ttl::Missing,
            (MetaStatus::Done, Some(-1)) => Ttl::Forever,
            (MetaStatus::Done, Some(seconds)) => {
                Ttl::Seconds(u64::try_from(seconds).unwrap_or_default())
            }
            (status, _) => return Err(unexpected("mg t", &status)),
        };
        Ok(Parse::Complete(Step::Done(ttl), used))
    }

    fn fallback(&self) -> Ttl {
        Ttl::Missing
    }
}

/// A counter's initial value, as the value path encodes it (so `get` reads it as it reads a
/// number written by `set`).
#[derive(Debug, Clone)]
pub struct Initial {
    /// The number.
    pub value: u64,
    /// The flags to store it with.
    pub flags: u32,
    /// Its bytes.
    pub data: Vec<u8>,
    /// Its expiry.
    pub exptime: i64,
}

/// `incr`/`decr`, and on a miss (with an initial value) `add` of the initial value, then on
/// losing that race `incr`/`decr` again. `ma` with `N` would create the counter in one request
/// but with client flags 0, which every reader takes for bytes: the `add` stores the counter
/// as `set` would.
///
/// The counter may vanish between a lost `add` and the count after it (deleted, evicted or
/// expired by then): the `add` is tried again, up to [`CounterPlan::MAX_ADDS`] times in all, so
/// the initial value is honoured rather than the counter reported missing.
#[derive(Debug)]
pub struct CounterPlan {
    op: Counter,
    delta: u64,
    initial: Option<Initial>,
    /// Whether the request on the wire is the `add` (else a count).
    adding: bool,
    /// The `add`s sent so far.
    adds: u8,
}

impl CounterPlan {
    /// The most `add`s one call sends: each lost one means another client created the counter
    /// and it vanished again before this one's count, which a live counter does not do.
    pub const MAX_ADDS: u8 = 3;

    fn count(&mut self, key: &str, out: &mut Vec<u8>) {
        self.adding = false;
        proto::encode_incr_decr(out, self.op, key.as_bytes(), self.delta, false);
    }
}

impl Plan for CounterPlan {
    type Output = Option<u64>;

    fn name(&self) -> CommandName {
        match self.op {
            Counter::Decr => CommandName::Decr,
            _ => CommandName::Incr,
        }
    }

    fn uses_meta(&self) -> bool {
        false
    }

    fn start(&mut self, key: &str, _: bool, out: &mut Vec<u8>) -> Result<()> {
        self.adds = 0;
        self.count(key, out);
        Ok(())
    }

    fn read(
        &mut self,
        key: &str,
        _: bool,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> ParseResult<Step<Option<u64>>> {
        if self.adding {
            return Ok(match proto::parse_store(buf)? {
                Parse::Incomplete(needed) => Parse::Incomplete(needed),
                Parse::Complete(StoreReply::Stored, used) => {
                    let value = self.initial.as_ref().map(|i| i.value);
                    Parse::Complete(Step::Done(value), used)
                }
                Parse::Complete(_, used) => {
                    // Another caller created it meanwhile: count on theirs.
                    self.count(key, out);
                    Parse::Complete(Step::Send, used)
                }
            });
        }
        Ok(match proto::parse_incr_decr(buf)? {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(IncrDecrReply::Value(value), used) => {
                Parse::Complete(Step::Done(Some(value)), used)
            }
            Parse::Complete(IncrDecrReply::NotFound, used) => match &self.initial {
                Some(initial) if self.adds < Self::MAX_ADDS => {
                    proto::encode_store(
                        out,
                        Store::Add,
                        key.as_bytes(),
                        initial.flags,
                        initial.exptime,
                        &initial.data,
                        false,
                    );
                    self.adding = true;
                    self.adds += 1;
                    Parse::Complete(Step::Send, used)
                }
                _ => Parse::Complete(Step::Done(None), used),
            },
        })
    }

    fn fallback(&self) -> Option<u64> {
        None
    }
}

/// Stores `token` under a key that holds nothing (`add`): a lock's acquire. Run strictly
/// ([`MetaOne::strict`]): "not stored" must mean that someone else holds the key, never that
/// the cache could not be asked.
#[derive(Debug)]
pub struct AcquirePlan {
    token: Vec<u8>,
    exptime: i64,
}

impl Plan for AcquirePlan {
    type Output = bool;

    fn name(&self) -> CommandName {
        CommandName::Add
    }

    fn uses_meta(&self) -> bool {
        false
    }

    fn start(&mut self, key: &str, _: bool, out: &mut Vec<u8>) -> Result<()> {
        let (exptime, token) = (self.exptime, &self.token);
        proto::encode_store(out, Store::Add, key.as_bytes(), 0, exptime, token, false);
        Ok(())
    }

    fn read(&mut self, _: &str, _: bool, buf: &[u8], _: &mut Vec<u8>) -> ParseResult<Step<bool>> {
        Ok(match proto::parse_store(buf)? {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(reply, used) => {
                Parse::Complete(Step::Done(reply == StoreReply::Stored), used)
            }
        })
    }

    fn fallback(&self) -> bool {
        false
    }
}

/// Deletes a key only while it holds `token` (a lock released by its owner alone):
/// `mg <key> v c` then `md <key> C<cas>`; without meta commands `gets` then a `cas` that stores
/// an already expired item. Either way nobody else's value is deleted: the CAS token makes
/// the check and the delete one step.
#[derive(Debug)]
pub struct DeleteIfPlan {
    /// The key acted on: the command's own, or a lease key (which the command's key routes).
    target: Vec<u8>,
    token: Vec<u8>,
    max_value_len: usize,
    /// The CAS token of a matching value, once read (classic `gets`).
    cas: Option<u64>,
    deleting: bool,
}

impl DeleteIfPlan {
    fn new(target: Vec<u8>, token: Vec<u8>, max_value_len: usize) -> Self {
        DeleteIfPlan {
            target,
            token,
            max_value_len,
            cas: None,
            deleting: false,
        }
    }

    /// Writes the first request: the target's value and CAS token.
    fn begin(&mut self, meta: bool, out: &mut Vec<u8>) {
        self.cas = None;
        self.deleting = false;
        let key = self.target.as_slice();
        if meta {
            let flags = [MetaFlag::Value, MetaFlag::ReturnCas];
            proto::encode_meta(out, MetaCommand::Get, key, &flags, b"");
        } else {
            proto::encode_retrieval(out, Retrieval::Gets, [key]);
        }
    }
}

impl Plan for DeleteIfPlan {
    type Output = bool;

    fn name(&self) -> CommandName {
        CommandName::Delete
    }

    fn start(&mut self, _: &str, meta: bool, out: &mut Vec<u8>) -> Result<()> {
        self.begin(meta, out);
        Ok(())
    }

    fn read(
        &mut self,
        _: &str,
        meta: bool,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> ParseResult<Step<bool>> {
        let key = self.target.as_slice();
        if self.deleting {
            return Ok(if meta {
                match proto::parse_meta(buf, 0)? {
                    Parse::Incomplete(needed) => Parse::Incomplete(needed),
                    Parse::Complete(reply, used) => {
                        Parse::Complete(Step::Done(reply.status == MetaStatus::Done), used)
                    }
                }
            } else {
                match proto::parse_store(buf)? {
                    Parse::Incomplete(needed) => Parse::Incomplete(needed),
                    Parse::Complete(reply, used) => {
                        Parse::Complete(Step::Done(reply == StoreReply::Stored), used)
                    }
                }
            });
        }
        if meta {
            let (reply, used) = match proto::parse_meta(buf, self.max_value_len)? {
                Parse::Incomplete(needed) => return Ok(Parse::Incomplete(needed)),
                Parse::Complete(reply, used) => (reply, used),
            };
            return Ok(match (reply.status, reply.data, reply.flags.cas) {
                (MetaStatus::Value, Some(data), Some(cas)) if data == self.token.as_slice() => {
                    let flags = [MetaFlag::CompareCas(cas)];
                    proto::encode_meta(out, MetaCommand::Delete, key, &flags, b"");
                    self.deleting = true;
                    Parse::Complete(Step::Send, used)
                }
                (MetaStatus::Value | MetaStatus::Miss, _, _) => {
                    Parse::Complete(Step::Done(false), used)
                }
                (status, _, _) => return Err(unexpected("mg v c", &status)),
            });
        }
        Ok(match proto::parse_retrieval(buf, self.max_value_len)? {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(RetrievalItem::Value(value), used) => {
                if value.key != key || self.cas.is_some() {
                    return Err(ReplyError::Malformed(
                        "a value for a key not asked for".to_owned(),
                    ));
                }
                if value.data == self.token.as_slice() {
                    self.cas = value.cas;
                }
                Parse::Complete(Step::More, used)
            }
            Parse::Complete(RetrievalItem::End, used) => match self.cas {
                Some(cas) => {
                    // Stored already expired: the item is gone at once, for every reader.
                    proto::encode_store(out, Store::Cas(cas), key, 0, -1, b"", false);
                    self.deleting = true;
                    Parse::Complete(Step::Send, used)
                }
                None => Parse::Complete(Step::Done(false), used),
            },
        })
    }

    fn fallback(&self) -> bool {
        false
    }
}

/// A get-or-lease operation (see [`LeasePlan`]).
pub type LeaseCommand = MetaOne<LeasePlan>;
/// A lease release (a [`DeleteIfPlan`] on the lease key).
pub type ReleaseCommand = MetaOne<DeleteIfPlan>;
/// A TTL read (see [`TtlPlan`]).
pub type TtlCommand = MetaOne<TtlPlan>;
/// A counter that may be created (see [`CounterPlan`]).
pub type CounterCommand = MetaOne<CounterPlan>;
/// A lock's acquire (see [`AcquirePlan`]).
pub type AcquireCommand = MetaOne<AcquirePlan>;
/// A delete-if-owner (see [`DeleteIfPlan`]).
pub type DeleteIfCommand = MetaOne<DeleteIfPlan>;

/// How a get-or-lease asks: for how long, with which early-recompute window, with whose token,
/// and whether the key is read first (see [`Client::get_or_lease`]).
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// The lease's TTL in seconds (at least 1).
    pub lease: u32,
    /// A hit with fewer seconds left than this wins an early recompute (meta nodes only).
    pub early_recompute: Option<u32>,
    /// What the lease key holds while this caller has the lease ([`lease_token`]).
    pub token: Vec<u8>,
    /// Ask for the lease without reading the key (the caller read a value it cannot use).
    pub take: bool,
}

impl LeaseRequest {
    /// A request that reads the key first, with a fresh token.
    pub fn new(lease: u32, early_recompute: Option<u32>) -> Self {
        LeaseRequest {
            lease,
            early_recompute,
            token: lease_token(),
            take: false,
        }
    }
}

impl Client {
    /// The get-or-lease command for `key` (see [`Client::get_or_lease`]).
    pub(crate) fn lease_command(&self, key: String, request: LeaseRequest) -> LeaseCommand {
        let plan = LeasePlan {
            lease: request.lease.max(1),
            early: request.early_recompute.filter(|seconds| *seconds > 0),
            token: request.token,
            take: request.take,
            max_value_len: self.config.max_value_len,
            item: None,
            phase: LeasePhase::Key,
        };
        MetaOne::new(key, plan)
    }

    pub(crate) fn release_command(&self, key: String, token: Vec<u8>) -> ReleaseCommand {
        let plan = DeleteIfPlan::new(lease_key(&key), token, self.config.max_value_len);
        MetaOne::new(key, plan)
    }

    pub(crate) fn counter_command(
        &self,
        key: String,
        op: Counter,
        delta: u64,
        initial: Option<Initial>,
    ) -> CounterCommand {
        let plan = CounterPlan {
            op,
            delta,
            initial,
            adding: false,
            adds: 0,
        };
        MetaOne::new(key, plan)
    }

    pub(crate) fn acquire_command(
        &self,
        key: String,
        token: Vec<u8>,
        exptime: i64,
    ) -> AcquireCommand {
        MetaOne::strict(key, AcquirePlan { token, exptime })
    }

    pub(crate) fn delete_if_command(&self, key: String, token: Vec<u8>) -> DeleteIfCommand {
        let plan = DeleteIfPlan::new(key.as_bytes().to_vec(), token, self.config.max_value_len);
        MetaOne::strict(key, plan)
    }

    /// Reads `key`, and on a miss asks for the lease to compute it: across every client of
    /// the cluster one caller at a time wins it (until its owner releases it with
    /// [`Client::release_lease`] or `lease` seconds pass). With `early_recompute`, a hit with
    /// less than that many seconds left wins (once) the right to refresh it while others keep
    /// reading it. Under `ignore_exc`, a failure reads as a miss with the lease won.
    pub fn get_or_lease(&self, key: &str, request: LeaseRequest) -> Result<Leased> {
        let command = self.lease_command(key.to_owned(), request);
        crate::engine::Operation::new(self, command)?.run(self)
    }

    /// Ends `key`'s lease if it still holds `token` (the one its get-or-lease was given);
    /// returns whether it did. A lease that ran out and was won by another caller is theirs,
    /// and stays.
    pub fn release_lease(&self, key: &str, token: &[u8]) -> Result<bool> {
        let command = self.release_command(key.to_owned(), token.to_vec());
        crate::engine::Operation::new(self, command)?.run(self)
    }

    /// How long `key` has left; [`Error::MetaUnsupported`] on a node without meta commands.
    pub fn ttl(&self, key: &str) -> Result<Ttl> {
        let command = MetaOne::new(key.to_owned(), TtlPlan);
        crate::engine::Operation::new(self, command)?.run(self)
    }

    /// Adds `delta` to (or subtracts it from) a counter; a missing counter is created with
    /// `initial` (and that value returned), atomically across clients. Without `initial`, `None`
    /// when the counter is missing.
    pub fn count(
        &self,
        op: Counter,
        key: &str,
        delta: u64,
        initial: Option<Initial>,
    ) -> Result<Option<u64>> {
        let command = self.counter_command(key.to_owned(), op, delta, initial);
        crate::engine::Operation::new(self, command)?.run(self)
    }

    /// Stores `token` under `key` (for `exptime`, memcached's) if the key holds nothing;
    /// returns whether it did: a lock's acquire. Failures are always errors, `ignore_exc` or
    /// not: "not stored" always means that the key holds something.
    pub fn acquire(&self, key: &str, token: &[u8], exptime: i64) -> Result<bool> {
        let command = self.acquire_command(key.to_owned(), token.to_vec(), exptime);
        crate::engine::Operation::new(self, command)?.run(self)
    }

    /// Deletes `key` only if it holds exactly `token`; returns whether it did. Failures are
    /// always errors, `ignore_exc` or not (a lock's release that did not reach the node).
    pub fn delete_if(&self, key: &str, token: &[u8]) -> Result<bool> {
        let command = self.delete_if_command(key.to_owned(), token.to_vec());
        crate::engine::Operation::new(self, command)?.run(self)
    }
}
