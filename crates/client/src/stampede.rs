//! Stampede protection: get-or-lease (one computation per miss across the fleet, and early
//! recompute) and the release of a lease, as single-key plans (`single`). With meta commands
//! where a node speaks them, the classic ones where it does not.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use elasticache_proto::{
    self as proto, MetaCommand, MetaFlag, MetaStatus, Parse, Retrieval, RetrievalItem, Store,
    StoreReply,
};

use crate::engine::Step;
use crate::large::LARGE_FLAG;
use crate::lease_keys::lease_key;
use crate::locks::DeleteIfPlan;
use crate::metrics::CommandName;
use crate::single::{stray_value, unexpected, One, ParseResult, Plan};
use crate::values::Item;

/// A token for one caller's lease (32 hex digits): what the lease key holds while that caller
/// has it, so that only that caller ends it ([`Client::release_lease`](crate::Client::release_lease)); a winner slower than
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

/// What [`Client::get_or_lease`](crate::Client::get_or_lease) found.
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
/// With `take` (a value the caller read but cannot decode, which is a miss to it, not a value
/// another caller computes), the key is not read first: the lease is asked for at once. The
/// winner reads the key again all the same, and unless it still holds that value (or nothing),
/// another caller stored a new one meanwhile: the lease is ended and the new value returned.
#[derive(Debug)]
pub struct LeasePlan {
    lease: u32,
    early: Option<u32>,
    token: Vec<u8>,
    take: Option<Item>,
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

    // A value the local tier keeps is a hit: nothing to lease. Not for a caller that could
    // not decode the value it read (`take`): it asks for the lease at once.
    fn reads_locally(&self) -> bool {
        self.take.is_none()
    }

    fn from_local(item: Item) -> Option<Leased> {
        Some(Leased {
            item: Some(item),
            won: false,
        })
    }

    // A value found (and no early recompute won: the winner is about to replace it); not a
    // large value's index, whose chunks are read apart.
    fn local_value(output: &Leased) -> Option<Item> {
        output
            .item
            .as_ref()
            .filter(|item| !output.won && item.flags & LARGE_FLAG == 0)
            .cloned()
    }

    // A read: what it writes is the lease's own key, never this key's value (the winner's
    // value comes with a write of its own), so it neither ends the key's reads in flight nor
    // counts as a gutter write.

    fn name(&self) -> CommandName {
        CommandName::Get
    }

    fn uses_meta(&self) -> bool {
        true
    }

    fn start(&mut self, key: &str, meta: bool, out: &mut Vec<u8>) {
        if self.take.is_some() {
            self.ask_lease(key, out);
        } else {
            self.phase = LeasePhase::Key;
            self.read_key_request(key, meta, self.early, out);
        }
    }

    fn read(
        &mut self,
        node: &str,
        key: &str,
        meta: bool,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> ParseResult<Step<Leased>> {
        let (read, used) = match &mut self.phase {
            LeasePhase::Lease => return self.read_lease(key, meta, buf, out),
            LeasePhase::Release(release) => {
                let item = &mut self.item;
                return Ok(release.read(node, key, meta, buf, out)?.map(|step| {
                    step.map(|_| Leased {
                        item: item.take(),
                        won: false,
                    })
                }));
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
            KeyRead::Hit(item, _) if self.take.as_ref().is_some_and(|bad| same(bad, &item)) => {
                // Still the value the caller cannot use: the caller computes its replacement.
                Step::Done(Leased {
                    item: None,
                    won: true,
                })
            }
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
    /// The largest value accepted.
    pub(crate) fn max_value_len(&self) -> usize {
        self.max_value_len
    }

    /// Whether the key is read with `mg`: only for early recompute, which needs the time left
    /// that only `mg` tells. Otherwise a plain `get`, the cheapest read (a hit costs what a
    /// `get` does), even on a node that speaks meta.
    fn key_in_meta(&self, meta: bool) -> bool {
        meta && self.early.is_some()
    }

    /// `mg <key> v f [R<early>]`, or `get <key>`.
    fn read_key_request(&self, key: &str, meta: bool, early: Option<u32>, out: &mut Vec<u8>) {
        if self.key_in_meta(meta) {
            // The flags on the stack: no allocation per read.
            let mut get = |flags: &[MetaFlag]| {
                proto::encode_meta(out, MetaCommand::Get, key.as_bytes(), flags, b"");
            };
            match early {
                Some(early) => get(&[
                    MetaFlag::Value,
                    MetaFlag::ReturnFlags,
                    MetaFlag::Recache(early),
                ]),
                None => get(&[MetaFlag::Value, MetaFlag::ReturnFlags]),
            }
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
                    return Err(stray_value());
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
    pub(crate) fn release_plan(&self, key: &str) -> DeleteIfPlan {
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
        if !won {
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

/// Whether `found` is the very value `bad` (same flags and bytes).
fn same(bad: &Item, found: &Item) -> bool {
    bad.flags == found.flags && bad.data == found.data
}

/// How a get-or-lease asks: for how long, with which early-recompute window, with whose token,
/// and whether the key is read first (see [`Client::get_or_lease`](crate::Client::get_or_lease)).
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// The lease's TTL in seconds (at least 1).
    pub lease: u32,
    /// A hit with fewer seconds left than this wins an early recompute (meta nodes only).
    pub early_recompute: Option<u32>,
    /// What the lease key holds while this caller has the lease ([`lease_token`]).
    pub token: Vec<u8>,
    /// The value the caller read and cannot use (cannot decode): the lease is asked for
    /// without reading the key first, and that value counts as a miss on the winner's
    /// recheck.
    pub take: Option<Item>,
}

impl LeaseRequest {
    /// A request that reads the key first, with a fresh token.
    pub fn new(lease: u32, early_recompute: Option<u32>) -> Self {
        LeaseRequest {
            lease,
            early_recompute,
            token: lease_token(),
            take: None,
        }
    }
}

/// The get-or-lease command for `key` (see `Client::get_or_lease`).
pub(crate) fn lease(key: String, request: LeaseRequest, max_value_len: usize) -> One<LeasePlan> {
    let plan = LeasePlan {
        lease: request.lease.max(1),
        early: request.early_recompute.filter(|seconds| *seconds > 0),
        token: request.token,
        take: request.take,
        max_value_len,
        item: None,
        phase: LeasePhase::Key,
    };
    One::new(key, plan)
}

/// The release of `key`'s lease if it still holds `token` (see `Client::release_lease`).
pub(crate) fn release(key: String, token: Vec<u8>, max_value_len: usize) -> One<DeleteIfPlan> {
    let plan = DeleteIfPlan::new(lease_key(&key), token, max_value_len);
    One::new(key, plan)
}
