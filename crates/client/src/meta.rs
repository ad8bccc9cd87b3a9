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

/// The key of `key`'s lease in the add-based protocol: `<key>:lease`, or for keys too long for
/// that, their start and a 64-bit hash of the whole key. Sent to `key`'s node, whichever node
/// the ring would give the lease key itself, so one node decides.
pub fn lease_key(key: &str) -> String {
    const SUFFIX: &str = ":lease";
    if key.len() + SUFFIX.len() <= MAX_KEY_LEN {
        return format!("{key}{SUFFIX}");
    }
    let mut first = Murmur3::default();
    first.write(key.as_bytes());
    let mut second = Murmur3::default();
    second.write(b"lease:");
    second.write(key.as_bytes());
    let tail = format!(":{:08x}{:08x}{SUFFIX}", first.finish(), second.finish());
    let mut cut = MAX_KEY_LEN - tail.len();
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tail}", &key[..cut])
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
/// `mg <lease key> N<lease>` (the first caller is told `W`, the others `Z`); without meta
/// commands `add` of the lease key instead (and no early recompute: it needs the TTL, which
/// only `mg` tells).
///
/// A caller that wins the lease reads the key once more: its miss may have come just before
/// another winner stored the value and ended its lease. If the value is there now, it ends the
/// lease it just won and returns the value, so a value is never computed twice for one miss.
#[derive(Debug)]
pub struct LeasePlan {
    lease: u32,
    early: Option<u32>,
    max_value_len: usize,
    /// A value read (a classic `get` reads it before its `END`; a recheck keeps it while the
    /// lease is ended).
    item: Option<Item>,
    phase: LeasePhase,
}

/// Which request of a [`LeasePlan`] is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeasePhase {
    /// The key's first read.
    Key,
    /// The lease request, after a miss.
    Lease,
    /// The key read again, the lease won.
    Recheck,
    /// The lease's delete, the value found on the recheck.
    Release,
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
        self.phase = LeasePhase::Key;
        self.read_key_request(key, meta, self.early, out);
        Ok(())
    }

    fn read(
        &mut self,
        key: &str,
        meta: bool,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> ParseResult<Step<Leased>> {
        let (read, used) = match self.phase {
            LeasePhase::Lease => return self.read_lease(key, meta, buf, out),
            LeasePhase::Release => {
                return Ok(match proto::parse_delete(buf)? {
                    Parse::Incomplete(needed) => Parse::Incomplete(needed),
                    Parse::Complete(_, used) => {
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
        let recheck = self.phase == LeasePhase::Recheck;
        let step = match read {
            KeyRead::More => Step::More,
            KeyRead::Hit(item, won) if !recheck => Step::Done(Leased {
                item: Some(item),
                won,
            }),
            KeyRead::Hit(item, _) => {
                // Stored by another winner meanwhile: the lease just won is not needed.
                self.item = Some(item);
                self.phase = LeasePhase::Release;
                proto::encode_delete(out, lease_key(key).as_bytes(), false);
                Step::Send
            }
            KeyRead::Miss if !recheck => {
                self.ask_lease(key, meta, out);
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
    /// `get` does), even on a node that speaks meta: the lease needs `mg` only after a miss.
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

    fn ask_lease(&mut self, key: &str, meta: bool, out: &mut Vec<u8>) {
        let lease_key = lease_key(key);
        if meta {
            let flags = [MetaFlag::Vivify(self.lease)];
            proto::encode_meta(out, MetaCommand::Get, lease_key.as_bytes(), &flags, b"");
        } else {
            let exptime = i64::from(self.lease);
            proto::encode_store(
                out,
                Store::Add,
                lease_key.as_bytes(),
                0,
                exptime,
                b"1",
                false,
            );
        }
        self.phase = LeasePhase::Lease;
    }

    fn read_lease(
        &mut self,
        key: &str,
        meta: bool,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> ParseResult<Step<Leased>> {
        let (won, used) = if meta {
            match proto::parse_meta(buf, self.max_value_len)? {
                Parse::Incomplete(needed) => return Ok(Parse::Incomplete(needed)),
                Parse::Complete(reply, used) => match reply.status {
                    MetaStatus::Done | MetaStatus::Value => (reply.flags.won, used),
                    other => return Err(unexpected("mg N", &other)),
                },
            }
        } else {
            match proto::parse_store(buf)? {
                Parse::Incomplete(needed) => return Ok(Parse::Incomplete(needed)),
                Parse::Complete(reply, used) => (reply == StoreReply::Stored, used),
            }
        };
        if !won {
            return Ok(Parse::Complete(
                Step::Done(Leased {
                    item: None,
                    won: false,
                }),
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

/// Ends a lease early (the value is stored, or its computation failed): `delete` of the lease
/// key, on the key's node.
#[derive(Debug)]
pub struct ReleasePlan;

impl Plan for ReleasePlan {
    type Output = bool;

    fn name(&self) -> CommandName {
        CommandName::Delete
    }

    fn uses_meta(&self) -> bool {
        false
    }

    fn start(&mut self, key: &str, _: bool, out: &mut Vec<u8>) -> Result<()> {
        proto::encode_delete(out, lease_key(key).as_bytes(), false);
        Ok(())
    }

    fn read(&mut self, _: &str, _: bool, buf: &[u8], _: &mut Vec<u8>) -> ParseResult<Step<bool>> {
        Ok(match proto::parse_delete(buf)? {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(reply, used) => {
                Parse::Complete(Step::Done(reply == proto::DeleteReply::Deleted), used)
            }
        })
    }

    fn fallback(&self) -> bool {
        false
    }
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
#[derive(Debug)]
pub struct CounterPlan {
    op: Counter,
    delta: u64,
    initial: Option<Initial>,
    /// 0: the first count; 1: the add; 2: the count after a lost add.
    step: u8,
}

impl CounterPlan {
    fn count(&self, key: &str, out: &mut Vec<u8>) {
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
        self.step = 0;
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
        if self.step == 1 {
            return Ok(match proto::parse_store(buf)? {
                Parse::Incomplete(needed) => Parse::Incomplete(needed),
                Parse::Complete(StoreReply::Stored, used) => {
                    let value = self.initial.as_ref().map(|i| i.value);
                    Parse::Complete(Step::Done(value), used)
                }
                Parse::Complete(_, used) => {
                    // Another caller created it meanwhile: count on theirs.
                    self.step = 2;
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
                Some(initial) if self.step == 0 => {
                    proto::encode_store(
                        out,
                        Store::Add,
                        key.as_bytes(),
                        initial.flags,
                        initial.exptime,
                        &initial.data,
                        false,
                    );
                    self.step = 1;
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

/// Deletes a key only while it holds `token` (a lock released by its owner alone):
/// `mg <key> v c` then `md <key> C<cas>`; without meta commands `gets` then a `cas` that stores
/// an already expired item. Either way nobody else's value is deleted: the CAS token makes
/// the check and the delete one step.
#[derive(Debug)]
pub struct DeleteIfPlan {
    token: Vec<u8>,
    max_value_len: usize,
    /// The CAS token of a matching value, once read (classic `gets`).
    cas: Option<u64>,
    deleting: bool,
}

impl Plan for DeleteIfPlan {
    type Output = bool;

    fn name(&self) -> CommandName {
        CommandName::Delete
    }

    fn start(&mut self, key: &str, meta: bool, out: &mut Vec<u8>) -> Result<()> {
        if meta {
            let flags = [MetaFlag::Value, MetaFlag::ReturnCas];
            proto::encode_meta(out, MetaCommand::Get, key.as_bytes(), &flags, b"");
        } else {
            proto::encode_retrieval(out, Retrieval::Gets, [key.as_bytes()]);
        }
        Ok(())
    }

    fn read(
        &mut self,
        key: &str,
        meta: bool,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> ParseResult<Step<bool>> {
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
                    proto::encode_meta(out, MetaCommand::Delete, key.as_bytes(), &flags, b"");
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
                if value.key != key.as_bytes() || self.cas.is_some() {
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
                    proto::encode_store(out, Store::Cas(cas), key.as_bytes(), 0, -1, b"", false);
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
/// A lease release (see [`ReleasePlan`]).
pub type ReleaseCommand = MetaOne<ReleasePlan>;
/// A TTL read (see [`TtlPlan`]).
pub type TtlCommand = MetaOne<TtlPlan>;
/// A counter that may be created (see [`CounterPlan`]).
pub type CounterCommand = MetaOne<CounterPlan>;
/// A delete-if-owner (see [`DeleteIfPlan`]).
pub type DeleteIfCommand = MetaOne<DeleteIfPlan>;

impl Client {
    /// The get-or-lease command for `key`: `lease` is the lease's TTL in seconds; with
    /// `early_recompute`, a hit with less than that many seconds left wins a recompute
    /// (meta nodes only).
    pub(crate) fn lease_command(
        &self,
        key: String,
        lease: u32,
        early_recompute: Option<u32>,
    ) -> LeaseCommand {
        let plan = LeasePlan {
            lease: lease.max(1),
            early: early_recompute.filter(|seconds| *seconds > 0),
            max_value_len: self.config.max_value_len,
            item: None,
            phase: LeasePhase::Key,
        };
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
            step: 0,
        };
        MetaOne::new(key, plan)
    }

    pub(crate) fn delete_if_command(&self, key: String, token: Vec<u8>) -> DeleteIfCommand {
        let plan = DeleteIfPlan {
            token,
            max_value_len: self.config.max_value_len,
            cas: None,
            deleting: false,
        };
        MetaOne::new(key, plan)
    }

    /// Reads `key`, and on a miss asks for the lease to compute it: across every client of
    /// the cluster one caller at a time wins it (until it is released or `lease` seconds
    /// pass). With `early_recompute`, a hit with less than that many seconds left wins (once)
    /// the right to refresh it while others keep reading it. Under `ignore_exc`, a failure
    /// reads as a miss with the lease won.
    pub fn get_or_lease(
        &self,
        key: &str,
        lease: u32,
        early_recompute: Option<u32>,
    ) -> Result<Leased> {
        let command = self.lease_command(key.to_owned(), lease, early_recompute);
        crate::engine::Operation::new(self, command)?.run(self)
    }

    /// Ends `key`'s lease (see [`Client::get_or_lease`]); returns whether there was one.
    pub fn release_lease(&self, key: &str) -> Result<bool> {
        let command = MetaOne::new(key.to_owned(), ReleasePlan);
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

    /// Deletes `key` only if it holds exactly `token`; returns whether it did.
    pub fn delete_if(&self, key: &str, token: &[u8]) -> Result<bool> {
        let command = self.delete_if_command(key.to_owned(), token.to_vec());
        crate::engine::Operation::new(self, command)?.run(self)
    }
}
