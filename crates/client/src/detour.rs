//! What commands do on the detours of cluster events (design section 17): [`Warm`] wraps a
//! command and, after its owners answered, runs further rounds ([`Command::next_round`]) on
//! the second node [`Routes::detour`] gives a key (a previous owner during a warm-up window,
//! the `migrate_from` cluster's owner):
//!
//! - a read's misses are read there (`mg <key> v f t`: with the value's remaining TTL), in one
//!   round for the whole batch; what is found is returned and copied to the owner with `add`
//!   and that TTL (never over a value written meanwhile). A node without meta commands tells
//!   no TTL: its value is returned but not copied (it is read through again on the next miss).
//!   A get-or-lease that won the lease and found the value there ends its lease in the copy's
//!   exchange and returns the value as a plain hit: nothing is computed.
//! - a write or delete deletes the key there too, after the owner's write, so no stale copy is
//!   read or copied back later.
//!
//! The routing is the cluster's; this module only sends what the command needs on it.

use std::sync::Arc;

use bytes::Bytes;
use elasticache_proto::{
    self as proto, DeleteReply, MetaCommand, MetaFlag, MetaStatus, Parse, ReplyError, Retrieval,
    RetrievalItem, Store, StoreReply,
};

use crate::batch::{DeleteMany, GetMany, Items, Keys, SetMany};
use crate::classic::{LinePlan, RetrievePlan, StorePlan};
use crate::cluster::{Cluster, Detour, Routes};
use crate::engine::{
    incomplete, Coalescing, Command, Cursor, Failed, Fallback, Reading, Share, Step,
};
use crate::error::Result;
use crate::large::LARGE_FLAG;
use crate::locks::DeleteIfPlan;
use crate::metrics::{ClientCounters, CommandName};
use crate::single::{stray_value, unexpected, One, ParseResult, Plan};
use crate::stampede::{LeasePlan, Leased};
use crate::topology::Node;
use crate::values::{BatchValues, Item};

/// What a command does to the copies its keys have elsewhere during a cluster event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A read: its misses are read through.
    Read,
    /// A write or delete: the key is deleted there.
    Write,
}

/// A command [`Warm`] can wrap: its keys, and for a read, its misses and how a value found
/// elsewhere goes into its outcome.
pub trait Detoured: Command {
    /// What the command does to other copies.
    const EFFECT: Effect;

    /// How many keys.
    fn key_count(&self) -> usize;

    /// The key at `position`.
    fn key_at(&self, position: usize) -> &str;

    /// Once the owners answered: whether the key at `position` was read and not found.
    fn missed(&self, _position: usize) -> bool {
        false
    }

    /// The largest value accepted from a node.
    fn max_value_len(&self) -> usize {
        0
    }

    /// The lease to end when a value is found elsewhere (a get-or-lease that won it).
    fn lease(&self) -> Option<DeleteIfPlan> {
        None
    }

    /// A value found elsewhere for `position`, into the outcome.
    fn fill(_output: &mut Self::Output, _position: usize, _item: Item) {}
}

/// Which round of a [`Warm`] command is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The owners' (the command's own).
    Owners,
    /// The misses read on their detours.
    Read,
    /// What was found, copied to the owners (and a won lease ended).
    Copy,
    /// The copied keys read again where they were found.
    Recheck,
    /// The copies of keys gone from there meanwhile (deleted), deleted.
    Undo,
    /// The written keys deleted on their detours, before the owners' write.
    Delete,
    /// Nothing more.
    Over,
}

/// One key with a detour.
#[derive(Debug)]
struct Way {
    position: usize,
    detour: Arc<Node>,
    owner: Arc<Node>,
    why: Detour,
    found: Option<Item>,
    /// The found value's remaining TTL (`-1`: none), when the detour told it.
    ttl: Option<i64>,
    copied: bool,
    /// Found gone from the detour after it was copied: the copy is deleted.
    undo: bool,
    deleted: bool,
    /// How its read of the detour was sent: `None`, behind a probe of the node's meta
    /// support; else meta or classic. Kept with the request, not read again from the node,
    /// whose support another caller's probe may learn meanwhile: the replies are those of
    /// the request that was sent.
    read_meta: Option<bool>,
}

impl Way {
    /// Whether its value goes to the owner: found with a TTL known and not over.
    fn copies(&self) -> bool {
        self.found.is_some() && self.ttl.is_some_and(|ttl| ttl != 0)
    }
}

/// A command with its cluster events' detours: see the module's documentation.
#[derive(Debug)]
pub struct Warm<C> {
    inner: C,
    stage: Stage,
    ways: Vec<Way>,
    /// The won lease to end after a read-through hit, and whether its exchange is on (with
    /// the owner's meta support it was sent with: its reply is read the same way).
    release: Option<DeleteIfPlan>,
    releasing: bool,
    release_meta: bool,
    /// A write's own shares, sent once its detours' deletes are done.
    stash: Vec<Share>,
    /// Whether the `migrate_from` membership was unknown when this was routed.
    source_unknown: bool,
}

impl<C: Detoured> Warm<C> {
    /// `inner`, with detours.
    pub(crate) fn new(inner: C) -> Self {
        Warm {
            inner,
            stage: Stage::Owners,
            ways: Vec::new(),
            release: None,
            releasing: false,
            release_meta: false,
            stash: Vec::new(),
            source_unknown: false,
        }
    }

    /// The key of way `index`.
    fn key(&self, index: usize) -> &str {
        self.ways
            .get(index)
            .map_or("", |way| self.inner.key_at(way.position))
    }

    /// The ways kept by `keep`, grouped in one share per node (`node` of each way).
    fn group(&self, keep: impl Fn(&Way) -> bool, node: impl Fn(&Way) -> &Arc<Node>) -> Vec<Share> {
        let mut shares: Vec<Share> = Vec::new();
        for (index, way) in self.ways.iter().enumerate().filter(|(_, way)| keep(way)) {
            let node = node(way);
            match shares
                .iter_mut()
                .find(|share| Arc::ptr_eq(&share.node, node))
            {
                Some(share) => share.positions.push(index),
                None => shares.push(Share {
                    node: Arc::clone(node),
                    positions: vec![index],
                }),
            }
        }
        shares
    }

    /// The read of `positions` (ways) on a node that does (`meta`) or does not speak meta.
    fn encode_read(&mut self, out: &mut Vec<u8>, positions: &[usize], meta: bool) {
        let flags = [MetaFlag::Value, MetaFlag::ReturnFlags, MetaFlag::ReturnTtl];
        for &index in positions {
            if let Some(way) = self.ways.get_mut(index) {
                way.read_meta = Some(meta);
            }
            let key = self.key(index).as_bytes();
            if meta {
                proto::encode_meta(out, MetaCommand::Get, key, &flags, b"");
            } else {
                proto::encode_retrieval(out, Retrieval::Get, [key]);
            }
        }
    }

    /// The copies of `positions` (ways) that have one: `add`, never over a value written
    /// meanwhile. `false` when there is none.
    fn encode_copies(&self, out: &mut Vec<u8>, positions: &[usize]) -> bool {
        let mut any = false;
        for way in positions.iter().filter_map(|&index| self.ways.get(index)) {
            if let (true, Some(item), Some(ttl)) = (way.copies(), &way.found, way.ttl) {
                let key = self.inner.key_at(way.position).as_bytes();
                let exptime = ttl.max(0);
                proto::encode_store(out, Store::Add, key, item.flags, exptime, &item.data, false);
                any = true;
            }
        }
        any
    }

    /// Starts the end of the won lease on the owner's connection (the one key's).
    fn begin_release(&mut self, positions: &[usize], out: &mut Vec<u8>) -> bool {
        let meta = positions
            .first()
            .and_then(|&index| self.ways.get(index))
            .and_then(|way| way.owner.meta.get())
            .unwrap_or(false);
        match &mut self.release {
            Some(release) => {
                release.begin(meta, out);
                self.releasing = true;
                self.release_meta = meta;
                true
            }
            None => false,
        }
    }

    fn read_found(
        &mut self,
        positions: &[usize],
        cursor: &mut Cursor,
        buf: &[u8],
        request: &mut Vec<u8>,
    ) -> ParseResult<Reading> {
        let Some((node, sent)) = positions
            .first()
            .and_then(|&index| self.ways.get(index))
            .map(|way| (Arc::clone(&way.detour), way.read_meta))
        else {
            return Ok(Parse::Complete(Step::Done(()), 0));
        };
        let Some(meta) = sent else {
            // The probe's answer: the node's support, then the reads.
            return proto::parse_meta_noop(buf)?.try_map(|speaks_meta| {
                node.meta.set(speaks_meta);
                self.encode_read(request, positions, speaks_meta);
                Ok(Step::Send)
            });
        };
        let limit = self.inner.max_value_len();
        let mut used = 0;
        loop {
            let Some(&index) = positions.get(cursor.item) else {
                return Ok(Parse::Complete(Step::Done(()), used));
            };
            let rest = buf.get(used..).unwrap_or_default();
            let parsed = if meta {
                proto::parse_meta(rest, limit)?.try_map(|reply| {
                    let found = match (reply.status, reply.data) {
                        (MetaStatus::Value, Some(data)) => Some((
                            Item {
                                flags: reply.flags.client_flags.unwrap_or_default(),
                                data: Bytes::copy_from_slice(data),
                                cas: None,
                            },
                            reply.flags.ttl,
                        )),
                        (MetaStatus::Miss, _) => None,
                        (status, _) => return Err(unexpected("mg", &status)),
                    };
                    Ok((found, true))
                })?
            } else {
                let key = self.key(index).as_bytes();
                proto::parse_retrieval(rest, limit)?.try_map(|item| match item {
                    RetrievalItem::End => Ok((None, true)),
                    RetrievalItem::Value(value) if value.key == key => {
                        let item = Item {
                            flags: value.flags,
                            data: Bytes::copy_from_slice(value.data),
                            cas: None,
                        };
                        Ok((Some((item, None)), false))
                    }
                    RetrievalItem::Value(_) => Err(stray_value()),
                })?
            };
            match parsed {
                Parse::Incomplete(needed) => return Ok(incomplete(used, needed)),
                Parse::Complete((found, last), length) => {
                    used += length;
                    // A large value's index is not read through: its chunks are routed by
                    // their own keys, and are not copied with it (the owner would hold an
                    // index without chunks, a miss until it expires). A miss: it is recomputed.
                    let found = found.filter(|(item, _)| item.flags & LARGE_FLAG == 0);
                    if let (Some((item, ttl)), Some(way)) = (found, self.ways.get_mut(index)) {
                        way.found = Some(item);
                        way.ttl = ttl;
                    }
                    if last {
                        cursor.item += 1;
                    }
                }
            }
        }
    }

    fn read_copies(
        &mut self,
        node: &str,
        positions: &[usize],
        cursor: &mut Cursor,
        buf: &[u8],
        request: &mut Vec<u8>,
    ) -> ParseResult<Reading> {
        if self.releasing {
            let meta = self.release_meta;
            let key = positions
                .first()
                .map_or("", |&index| self.key(index))
                .to_owned();
            let Some(release) = &mut self.release else {
                return Ok(Parse::Complete(Step::Done(()), 0));
            };
            return Ok(release
                .read(node, &key, meta, buf, request)?
                .map(|step| step.map(drop)));
        }
        let copies: Vec<usize> = positions
            .iter()
            .copied()
            .filter(|&index| self.ways.get(index).is_some_and(Way::copies))
            .collect();
        let mut used = 0;
        loop {
            let Some(&index) = copies.get(cursor.item) else {
                let step = if self.begin_release(positions, request) {
                    Step::Send
                } else {
                    Step::Done(())
                };
                return Ok(Parse::Complete(step, used));
            };
            let rest = buf.get(used..).unwrap_or_default();
            match proto::with_error_replies(rest, proto::parse_store)? {
                Parse::Incomplete(needed) => return Ok(incomplete(used, needed)),
                Parse::Complete(reply, length) => {
                    used += length;
                    if let Some(way) = self.ways.get_mut(index) {
                        way.copied = reply == Ok(StoreReply::Stored);
                    }
                    cursor.item += 1;
                }
            }
        }
    }

    /// The answers to the copied keys' second read where they were found: one gone since
    /// (deleted there by a writer that deletes there first, see `Stage::Delete`) has its copy
    /// undone, so the copy cannot outlive the delete it raced.
    fn read_rechecks(
        &mut self,
        positions: &[usize],
        cursor: &mut Cursor,
        buf: &[u8],
    ) -> ParseResult<Reading> {
        let parse = |rest| proto::parse_meta(rest, 0);
        self.read_replies(positions, cursor, buf, parse, |way, reply| {
            way.undo = match reply.status {
                MetaStatus::Miss => true,
                MetaStatus::Done | MetaStatus::Value => false,
                status => return Err(unexpected("mg", &status)),
            };
            Ok(())
        })
    }

    /// The answers to deletes of `positions` (ways); `done` marks each way deleted.
    fn read_deletes(
        &mut self,
        positions: &[usize],
        cursor: &mut Cursor,
        buf: &[u8],
        done: fn(&mut Way),
    ) -> ParseResult<Reading> {
        let parse = |rest| proto::with_error_replies(rest, proto::parse_delete);
        self.read_replies(positions, cursor, buf, parse, |way, reply| {
            if reply.is_ok() {
                done(way);
            }
            Ok(())
        })
    }

    /// The replies to one request per way of `positions`, each read by `parse` and given to
    /// `apply` with its way.
    fn read_replies<'b, R>(
        &mut self,
        positions: &[usize],
        cursor: &mut Cursor,
        buf: &'b [u8],
        parse: impl Fn(&'b [u8]) -> ParseResult<R>,
        mut apply: impl FnMut(&mut Way, R) -> std::result::Result<(), ReplyError>,
    ) -> ParseResult<Reading> {
        let mut used = 0;
        loop {
            let Some(&index) = positions.get(cursor.item) else {
                return Ok(Parse::Complete(Step::Done(()), used));
            };
            match parse(buf.get(used..).unwrap_or_default())? {
                Parse::Incomplete(needed) => return Ok(incomplete(used, needed)),
                Parse::Complete(reply, length) => {
                    used += length;
                    if let Some(way) = self.ways.get_mut(index) {
                        apply(way, reply)?;
                    }
                    cursor.item += 1;
                }
            }
        }
    }
}

impl<C: Detoured> Command for Warm<C> {
    type Output = C::Output;

    fn name(&self) -> CommandName {
        match self.stage {
            Stage::Read | Stage::Recheck => CommandName::Get,
            Stage::Copy => CommandName::Add,
            Stage::Delete | Stage::Undo => CommandName::Delete,
            Stage::Owners | Stage::Over => self.inner.name(),
        }
    }

    fn hits(&self, positions: &[usize]) -> Option<usize> {
        match self.stage {
            Stage::Owners => self.inner.hits(positions),
            _ => None,
        }
    }

    fn validate(&self) -> Result<()> {
        self.inner.validate()
    }

    fn shares(&mut self, routes: Routes<'_>) -> Result<Vec<Share>> {
        let shares = self.inner.shares(routes)?;
        self.source_unknown = routes.source_unknown();
        if routes.has_detours() {
            // Each key's node as the inner command placed it (first-round positions are key
            // positions): placing it again would count a gutter's keys twice.
            let mut owners = vec![None; self.inner.key_count()];
            for share in &shares {
                for &position in &share.positions {
                    if let Some(owner) = owners.get_mut(position) {
                        *owner = Some(&share.node);
                    }
                }
            }
            for position in 0..self.inner.key_count() {
                let key = self.inner.key_at(position);
                let Some((detour, why)) = routes.detour(key) else {
                    continue;
                };
                if C::EFFECT == Effect::Read && !routes.reads_through(key) {
                    // A write could not delete the copy there: it may be stale.
                    continue;
                }
                let Some(owner) = owners.get(position).copied().flatten() else {
                    continue;
                };
                self.ways.push(Way {
                    position,
                    detour: Arc::clone(detour),
                    owner: Arc::clone(owner),
                    why,
                    found: None,
                    ttl: None,
                    copied: false,
                    undo: false,
                    deleted: false,
                    read_meta: None,
                });
            }
        }
        if C::EFFECT == Effect::Write && !self.ways.is_empty() {
            // The detours' copies go first: see `Stage::Delete`.
            self.stash = shares;
            self.stage = Stage::Delete;
            return Ok(self.group(|_| true, |way| &way.detour));
        }
        Ok(shares)
    }

    fn all_positions(&self) -> Vec<usize> {
        self.inner.all_positions()
    }

    // What the owners' round invalidates is the inner command's: its keys are remembered for
    // replay when an owner cannot be reached (a detour's own failures are not, see `aside`).
    fn invalidates(&self) -> bool {
        self.inner.invalidates()
    }

    fn writes(&self) -> bool {
        self.inner.writes()
    }

    fn key(&self, position: usize) -> Option<&str> {
        Command::key(&self.inner, position)
    }

    // Identical reads in flight are the owners' round's: the inner command's (`flights`). A
    // joined read's miss is a miss like any other, read from the previous owner after.
    fn coalescing(&self) -> Coalescing {
        self.inner.coalescing()
    }

    fn shared_key(&self, position: usize) -> Option<&str> {
        match self.stage {
            Stage::Owners => self.inner.shared_key(position),
            _ => None,
        }
    }

    fn shared_value(&self, position: usize) -> Option<Item> {
        match self.stage {
            Stage::Owners => self.inner.shared_value(position),
            _ => None,
        }
    }

    fn read_size(&self, position: usize) -> Option<usize> {
        match self.stage {
            Stage::Owners => self.inner.read_size(position),
            _ => None,
        }
    }

    fn take_shared(&mut self, position: usize, item: Option<Item>) {
        self.inner.take_shared(position, item);
    }

    // The local tier serves and keeps the owners' round's reads, as the flights do.
    fn local_key(&self, position: usize) -> Option<&str> {
        match self.stage {
            Stage::Owners => self.inner.local_key(position),
            _ => None,
        }
    }

    fn take_local(&mut self, position: usize, item: Item) {
        self.inner.take_local(position, item);
    }

    fn local_value(&self, position: usize) -> Option<Item> {
        match self.stage {
            Stage::Owners => self.inner.local_value(position),
            _ => None,
        }
    }

    fn written_key(&self, position: usize) -> Option<&str> {
        // A detour's positions are its ways, not the inner command's.
        match self.stage {
            Stage::Owners => self.inner.written_key(position),
            _ => None,
        }
    }

    fn writes_all(&self) -> bool {
        self.inner.writes_all()
    }

    fn size(&self, position: usize) -> usize {
        match self.stage {
            Stage::Owners => self.inner.size(position),
            _ => {
                let value = self
                    .ways
                    .get(position)
                    .and_then(|way| way.found.as_ref())
                    .map_or(0, |item| item.data.len());
                self.key(position).len() + value + 48
            }
        }
    }

    fn encode(&mut self, out: &mut Vec<u8>, positions: &[usize]) {
        match self.stage {
            Stage::Owners | Stage::Over => self.inner.encode(out, positions),
            Stage::Read => {
                let meta = positions
                    .first()
                    .and_then(|&index| self.ways.get(index))
                    .and_then(|way| way.detour.meta.get());
                match meta {
                    // Probed first, as a single-key plan probes (`single`).
                    None => proto::encode_meta_noop(out),
                    Some(meta) => self.encode_read(out, positions, meta),
                }
            }
            Stage::Copy => {
                self.releasing = false;
                if !self.encode_copies(out, positions) {
                    self.begin_release(positions, out);
                }
            }
            Stage::Recheck => {
                for &index in positions {
                    let key = self.key(index).as_bytes();
                    proto::encode_meta(out, MetaCommand::Get, key, &[], b"");
                }
            }
            Stage::Delete | Stage::Undo => {
                for &index in positions {
                    proto::encode_delete(out, self.key(index).as_bytes(), false);
                }
            }
        }
    }

    fn read(
        &mut self,
        node: &str,
        positions: &[usize],
        cursor: &mut Cursor,
        buf: &[u8],
        request: &mut Vec<u8>,
    ) -> ParseResult<Reading> {
        match self.stage {
            Stage::Owners | Stage::Over => self.inner.read(node, positions, cursor, buf, request),
            Stage::Read => self.read_found(positions, cursor, buf, request),
            Stage::Copy => self.read_copies(node, positions, cursor, buf, request),
            Stage::Recheck => self.read_rechecks(positions, cursor, buf),
            Stage::Delete => self.read_deletes(positions, cursor, buf, |way| way.deleted = true),
            Stage::Undo => self.read_deletes(positions, cursor, buf, |way| way.copied = false),
        }
    }

    fn aside(&self) -> bool {
        self.stage != Stage::Owners
    }

    fn follow_up(&mut self) -> bool {
        self.stage == Stage::Owners && self.inner.follow_up()
    }

    fn fallback(&self) -> Fallback<C::Output> {
        self.inner.fallback()
    }

    // The inner command's own further rounds (a large value's chunks) are part of the owners'
    // stage, run first; then this command's stages, on nodes it holds (`routes` unused).
    fn next_round(&mut self, routes: Routes<'_>, failed: &[Failed]) -> Result<Vec<Share>> {
        if self.stage == Stage::Owners {
            let shares = self.inner.next_round(routes, failed)?;
            if !shares.is_empty() {
                return Ok(shares);
            }
        }
        loop {
            let (next, shares) = match self.stage {
                Stage::Delete => (Stage::Owners, std::mem::take(&mut self.stash)),
                Stage::Owners if self.ways.is_empty() || C::EFFECT == Effect::Write => {
                    (Stage::Over, Vec::new())
                }
                Stage::Owners => {
                    let inner = &self.inner;
                    self.ways.retain(|way| inner.missed(way.position));
                    (Stage::Read, self.group(|_| true, |way| &way.detour))
                }
                Stage::Read => {
                    if self.ways.iter().any(|way| way.found.is_some()) {
                        self.release = self.inner.lease();
                    }
                    let leased = self.release.is_some();
                    let keep = |way: &Way| way.copies() || (leased && way.found.is_some());
                    (Stage::Copy, self.group(keep, |way| &way.owner))
                }
                Stage::Copy => (Stage::Recheck, self.group(|w| w.copied, |w| &w.detour)),
                Stage::Recheck => (Stage::Undo, self.group(|w| w.undo, |w| &w.owner)),
                Stage::Undo | Stage::Over => (Stage::Over, Vec::new()),
            };
            self.stage = next;
            if !shares.is_empty() || next == Stage::Over {
                return Ok(shares);
            }
        }
    }

    fn settled(&self, cluster: &Cluster) {
        if self.ways.is_empty() && !self.source_unknown {
            // No cluster event: nothing to count (no atomic touched on the hot path).
            return;
        }
        let counters = &cluster.counters;
        let count = |why: Detour, test: fn(&Way) -> bool| {
            self.ways.iter().filter(|w| w.why == why && test(w)).count()
        };
        match C::EFFECT {
            Effect::Write => {
                let deleted = self.ways.iter().filter(|way| way.deleted).count();
                ClientCounters::count_many(&counters.detour_deletes, deleted);
                for way in &self.ways {
                    let key = self.inner.key_at(way.position);
                    if way.deleted && !self.source_unknown {
                        cluster.reached(key);
                    } else {
                        cluster.unreached(key);
                    }
                }
                if self.source_unknown {
                    // No copy in the `migrate_from` cluster could be deleted: none is read.
                    for position in 0..self.inner.key_count() {
                        if !self.ways.iter().any(|way| way.position == position) {
                            cluster.unreached(self.inner.key_at(position));
                        }
                    }
                }
            }
            Effect::Read => {
                for (why, reads, hits, copies) in [
                    (
                        Detour::WarmUp,
                        &counters.warmup_reads,
                        &counters.warmup_hits,
                        &counters.warmup_copies,
                    ),
                    (
                        Detour::Migration,
                        &counters.migration_reads,
                        &counters.migration_hits,
                        &counters.migration_copies,
                    ),
                ] {
                    // The ways left after the owners' round are the misses read through.
                    if !matches!(self.stage, Stage::Owners) {
                        ClientCounters::count_many(reads, count(why, |_| true));
                    }
                    ClientCounters::count_many(hits, count(why, |w| w.found.is_some()));
                    ClientCounters::count_many(copies, count(why, |w| w.copied));
                }
            }
        }
    }

    fn finish(self, failed: Vec<Failed>) -> Result<C::Output> {
        let Warm { inner, ways, .. } = self;
        let mut output = inner.finish(failed)?;
        for way in ways {
            if let Some(item) = way.found {
                C::fill(&mut output, way.position, item);
            }
        }
        Ok(output)
    }
}

impl Detoured for One<RetrievePlan> {
    const EFFECT: Effect = Effect::Read;

    fn key_count(&self) -> usize {
        1
    }

    fn key_at(&self, _: usize) -> &str {
        self.key()
    }

    fn missed(&self, _: usize) -> bool {
        matches!(self.output(), Some(None))
    }

    fn max_value_len(&self) -> usize {
        self.plan().max_value_len()
    }

    fn fill(output: &mut Option<Item>, _: usize, item: Item) {
        *output = Some(item);
    }
}

impl Detoured for One<LeasePlan> {
    const EFFECT: Effect = Effect::Read;

    fn key_count(&self) -> usize {
        1
    }

    fn key_at(&self, _: usize) -> &str {
        self.key()
    }

    fn missed(&self, _: usize) -> bool {
        // Only the lease's winner reads through: the others wait for what it stores.
        matches!(
            self.output(),
            Some(Leased {
                item: None,
                won: true
            })
        )
    }

    fn max_value_len(&self) -> usize {
        self.plan().max_value_len()
    }

    fn lease(&self) -> Option<DeleteIfPlan> {
        Some(self.plan().release_plan(self.key()))
    }

    fn fill(output: &mut Leased, _: usize, item: Item) {
        // A plain hit: the lease is ended, nothing is to be computed.
        *output = Leased {
            item: Some(item),
            won: false,
        };
    }
}

impl Detoured for One<StorePlan<'_>> {
    const EFFECT: Effect = Effect::Write;

    fn key_count(&self) -> usize {
        1
    }

    fn key_at(&self, _: usize) -> &str {
        self.key()
    }
}

impl Detoured for One<LinePlan<DeleteReply>> {
    const EFFECT: Effect = Effect::Write;

    fn key_count(&self) -> usize {
        1
    }

    fn key_at(&self, _: usize) -> &str {
        self.key()
    }
}

impl<K: Keys> Detoured for GetMany<K> {
    const EFFECT: Effect = Effect::Read;

    fn key_count(&self) -> usize {
        self.keys().count()
    }

    fn key_at(&self, position: usize) -> &str {
        self.keys().key(position)
    }

    fn missed(&self, position: usize) -> bool {
        !self.found(position)
    }

    fn max_value_len(&self) -> usize {
        GetMany::max_value_len(self)
    }

    fn fill(output: &mut BatchValues, position: usize, item: Item) {
        output.keep(position, item.flags, &item.data);
    }
}

impl<I: Items> Detoured for SetMany<I> {
    const EFFECT: Effect = Effect::Write;

    fn key_count(&self) -> usize {
        self.items().count()
    }

    fn key_at(&self, position: usize) -> &str {
        self.items().item(position).0
    }
}

impl<K: Keys> Detoured for DeleteMany<K> {
    const EFFECT: Effect = Effect::Write;

    fn key_count(&self) -> usize {
        self.keys().count()
    }

    fn key_at(&self, position: usize) -> &str {
        self.keys().key(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::NodeAddress;
    use crate::classic;
    use crate::cluster::Detours;
    use crate::config::ClientConfig;
    use crate::topology::Topology;
    use elasticache_proto::DeleteReply;

    /// A `delete` of `key`, as the client's `start_delete` builds it (unwrapped).
    fn delete(key: String) -> One<classic::LinePlan<DeleteReply>> {
        One::new(
            key,
            classic::LinePlan {
                line: classic::Line::Delete,
                parse: elasticache_proto::parse_delete,
                fallback: DeleteReply::NotFound,
            },
        )
    }

    fn topology(names: &[&str], previous: Option<&Topology>) -> Arc<Topology> {
        let nodes: Vec<NodeAddress> = names
            .iter()
            .filter_map(|n| NodeAddress::parse(n).ok())
            .collect();
        let config = ClientConfig::default();
        Arc::new(Topology::new(&nodes, &config, previous, None))
    }

    /// Two nodes, then a third: a key that moved to it, and the routes while warm-up is on.
    fn scaled_out() -> (Arc<Topology>, Detours<'static>, String) {
        let before = topology(&["10.0.0.1:11211", "10.0.0.2:11211"], None);
        let after = topology(
            &["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"],
            Some(&before),
        );
        let key = (0..)
            .map(|i| format!("key-{i}"))
            .find(|key| after.node_index_for(key) == Some(2))
            .unwrap_or_default();
        for node in after.nodes() {
            node.meta.set(true);
        }
        let detours = Detours::warming(before);
        (after, detours, key)
    }

    /// Reads `reply` as the answer to the round's share `share`; returns what it asked next.
    fn answer<C: Detoured>(warm: &mut Warm<C>, share: &Share, reply: &[u8]) -> Vec<u8> {
        let mut request = Vec::new();
        let mut cursor = Cursor::default();
        let read = warm.read(
            &share.node.address.name,
            &share.positions,
            &mut cursor,
            reply,
            &mut request,
        );
        assert!(
            matches!(read, Ok(Parse::Complete(Step::Done(()), used)) if used == reply.len()),
            "{read:?}"
        );
        request
    }

    fn encoded<C: Detoured>(warm: &mut Warm<C>, share: &Share) -> String {
        let mut out = Vec::new();
        warm.encode(&mut out, &share.positions);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn a_miss_reads_the_previous_owner_copies_and_undoes_a_copy_that_raced_a_delete() {
        let (after, detours, key) = scaled_out();
        let routes = Routes::with_detours(&after, &detours);
        let mut warm = Warm::new(classic::get(key.clone(), Retrieval::Get, 1 << 20));
        let owners = warm.shares(routes).unwrap_or_default();
        assert_eq!(owners.len(), 1);
        answer(&mut warm, &owners[0], b"END\r\n");

        let read = warm.next_round(routes, &[]).unwrap_or_default();
        assert_ne!(read[0].node.address.name, owners[0].node.address.name);
        assert_eq!(encoded(&mut warm, &read[0]), format!("mg {key} v f t\r\n"));
        answer(&mut warm, &read[0], b"VA 3 f7 t100\r\nabc\r\n");

        let copy = warm.next_round(routes, &[]).unwrap_or_default();
        assert!(Arc::ptr_eq(&copy[0].node, &owners[0].node));
        assert_eq!(
            encoded(&mut warm, &copy[0]),
            format!("add {key} 7 100 3\r\nabc\r\n")
        );
        answer(&mut warm, &copy[0], b"STORED\r\n");

        // Deleted where it was found meanwhile: the copy goes too.
        let recheck = warm.next_round(routes, &[]).unwrap_or_default();
        assert!(Arc::ptr_eq(&recheck[0].node, &read[0].node));
        assert_eq!(encoded(&mut warm, &recheck[0]), format!("mg {key}\r\n"));
        answer(&mut warm, &recheck[0], b"EN\r\n");
        let undo = warm.next_round(routes, &[]).unwrap_or_default();
        assert!(Arc::ptr_eq(&undo[0].node, &owners[0].node));
        assert_eq!(encoded(&mut warm, &undo[0]), format!("delete {key}\r\n"));
        answer(&mut warm, &undo[0], b"DELETED\r\n");
        assert!(warm.next_round(routes, &[]).unwrap_or_default().is_empty());
        // The value was read before the delete: it is this read's outcome all the same.
        let found = warm.finish(Vec::new()).ok().flatten();
        assert_eq!(
            found.map(|item| item.data),
            Some(Bytes::from_static(b"abc"))
        );
    }

    #[test]
    fn a_copy_still_there_on_the_recheck_stays() {
        let (after, detours, key) = scaled_out();
        let routes = Routes::with_detours(&after, &detours);
        let mut warm = Warm::new(classic::get(key.clone(), Retrieval::Get, 1 << 20));
        let owners = warm.shares(routes).unwrap_or_default();
        answer(&mut warm, &owners[0], b"END\r\n");
        let read = warm.next_round(routes, &[]).unwrap_or_default();
        assert_eq!(encoded(&mut warm, &read[0]), format!("mg {key} v f t\r\n"));
        answer(&mut warm, &read[0], b"VA 1 f0 t-1\r\nx\r\n");
        let copy = warm.next_round(routes, &[]).unwrap_or_default();
        assert!(
            encoded(&mut warm, &copy[0]).contains(" 0 0 1\r\nx\r\n"),
            "no TTL: none"
        );
        answer(&mut warm, &copy[0], b"STORED\r\n");
        let recheck = warm.next_round(routes, &[]).unwrap_or_default();
        answer(&mut warm, &recheck[0], b"HD\r\n");
        assert!(warm.next_round(routes, &[]).unwrap_or_default().is_empty());
    }

    #[test]
    fn without_meta_a_value_found_is_returned_but_not_copied() {
        let (after, detours, key) = scaled_out();
        for node in after.nodes() {
            node.meta.set(false);
        }
        let routes = Routes::with_detours(&after, &detours);
        let mut warm = Warm::new(classic::get(key.clone(), Retrieval::Get, 1 << 20));
        let owners = warm.shares(routes).unwrap_or_default();
        answer(&mut warm, &owners[0], b"END\r\n");
        let read = warm.next_round(routes, &[]).unwrap_or_default();
        assert_eq!(encoded(&mut warm, &read[0]), format!("get {key}\r\n"));
        let reply = format!("VALUE {key} 0 1\r\nx\r\nEND\r\n");
        answer(&mut warm, &read[0], reply.as_bytes());
        assert!(warm.next_round(routes, &[]).unwrap_or_default().is_empty());
        assert!(warm.finish(Vec::new()).ok().flatten().is_some());
    }

    #[test]
    fn a_delete_reaches_the_previous_owner_before_the_owner() {
        let (after, detours, key) = scaled_out();
        let routes = Routes::with_detours(&after, &detours);
        let mut warm = Warm::new(delete(key.clone()));
        let first = warm.shares(routes).unwrap_or_default();
        assert!(warm.aside());
        assert_eq!(encoded(&mut warm, &first[0]), format!("delete {key}\r\n"));
        answer(&mut warm, &first[0], b"NOT_FOUND\r\n");
        let owners = warm.next_round(routes, &[]).unwrap_or_default();
        assert!(!warm.aside());
        assert_ne!(owners[0].node.address.name, first[0].node.address.name);
        // The owner's delete ends the key's get_or_set lease first (`end_lease`, noreply).
        let owners_delete = encoded(&mut warm, &owners[0]);
        assert!(
            owners_delete.ends_with(&format!(" noreply\r\ndelete {key}\r\n")),
            "{owners_delete:?}"
        );
        answer(&mut warm, &owners[0], b"DELETED\r\n");
        assert!(warm.next_round(routes, &[]).unwrap_or_default().is_empty());
    }

    #[test]
    fn a_key_that_stayed_has_no_detour() {
        let (after, detours, _) = scaled_out();
        let routes = Routes::with_detours(&after, &detours);
        let stayed = (0..)
            .map(|i| format!("key-{i}"))
            .find(|key| after.node_index_for(key) != Some(2))
            .unwrap_or_default();
        let mut warm = Warm::new(delete(stayed));
        assert_eq!(warm.shares(routes).unwrap_or_default().len(), 1);
        assert!(!warm.aside());
    }

    /// A `get_many` of `key` with large values on (chunks of 1024 bytes), wrapped.
    fn large_get(key: &str) -> Warm<GetMany<crate::batch::KeyList>> {
        let config = ClientConfig {
            large_values: Some(crate::large::LargeValues::new(1024, 1 << 20)),
            ..ClientConfig::default()
        };
        let mut keys = crate::batch::KeyList::default();
        keys.push(key);
        Warm::new(GetMany::new(keys, &config))
    }

    #[test]
    fn a_large_value_on_its_owner_has_its_chunks_read_in_the_owners_stage_and_no_detour() {
        use crate::large::{chunk_key, Index};
        let (after, detours, key) = scaled_out();
        let routes = Routes::with_detours(&after, &detours);
        let mut warm = large_get(&key);
        let owners = warm.shares(routes).unwrap_or_default();
        let value = vec![7u8; 3000];
        let index = Index::of(0, &value, 1024);
        let stored = index.encode();
        let head = format!("VALUE {key} {LARGE_FLAG} {}\r\n", stored.len());
        let reply = [head.as_bytes(), &stored, b"\r\nEND\r\n"].concat();
        answer(&mut warm, &owners[0], &reply);

        // The inner command's chunk round comes first, as the owners' (not aside).
        let chunks = warm.next_round(routes, &[]).unwrap_or_default();
        assert!(!warm.aside());
        let sent: usize = chunks.iter().map(|share| share.positions.len()).sum();
        assert_eq!(sent, index.count());
        for share in &chunks {
            let mut reply = Vec::new();
            for &position in &share.positions {
                let number = position - 1;
                let bytes = value.get(index.range(number)).unwrap_or_default();
                let chunk = chunk_key(&key, index.generation, number);
                reply.extend_from_slice(format!("VALUE {chunk} 0 {}\r\n", bytes.len()).as_bytes());
                reply.extend_from_slice(bytes);
                reply.extend_from_slice(b"\r\n");
            }
            reply.extend_from_slice(b"END\r\n");
            answer(&mut warm, share, &reply);
        }
        // Found on its owner: nothing is read on the previous one.
        assert!(warm.next_round(routes, &[]).unwrap_or_default().is_empty());
        let values = warm.finish(Vec::new()).map(BatchValues::into_items);
        let joined = values.ok().and_then(|mut items| items.pop().flatten());
        assert_eq!(joined.map(|item| item.data.len()), Some(value.len()));
    }

    #[test]
    fn a_large_values_index_on_the_previous_owner_is_not_read_through_nor_copied() {
        let (after, detours, key) = scaled_out();
        let routes = Routes::with_detours(&after, &detours);
        let mut warm = large_get(&key);
        let owners = warm.shares(routes).unwrap_or_default();
        answer(&mut warm, &owners[0], b"END\r\n");
        let read = warm.next_round(routes, &[]).unwrap_or_default();
        assert!(warm.aside());
        encoded(&mut warm, &read[0]);
        let index = crate::large::Index::of(0, &[1u8; 3000], 1024).encode();
        let head = format!("VA {} f{LARGE_FLAG} t100\r\n", index.len());
        let reply = [head.as_bytes(), &index, b"\r\n"].concat();
        answer(&mut warm, &read[0], &reply);
        assert!(warm.next_round(routes, &[]).unwrap_or_default().is_empty());
        let values = warm.finish(Vec::new()).map(BatchValues::into_items);
        assert!(matches!(values.as_deref(), Ok([None])), "{values:?}");
    }
}
