//! The commands the engine runs: for each, its requests, how its replies read (with the
//! wrong-key checks), and its outcome under `ignore_exc`. No I/O here: see `engine`.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use elasticache_proto::{
    self as proto, Counter, DeleteReply, IncrDecrReply, Parse, ReplyError, Retrieval,
    RetrievalItem, Store, StoreReply, TouchReply,
};

use crate::batch::BatchValues;
use crate::client::{Client, Item, Stats};
use crate::engine::{part, Command, Cursor, Failed, Reading, Share};
use crate::error::{Error, Result};
use crate::metrics::CommandName;
use crate::topology::Topology;

type ParseResult<T> = std::result::Result<Parse<T>, ReplyError>;

/// A value for a key not asked for (or a second value for one): the stream is out of step.
fn stray_value() -> ReplyError {
    ReplyError::Malformed("a value for a key not asked for".to_owned())
}

/// The share of a single-key command.
fn one_share(topology: &Topology, key: &str) -> Result<Vec<Share>> {
    let index = topology.node_index_for(key).ok_or(Error::NoNodes)?;
    let node = topology.nodes().get(index).ok_or(Error::NoNodes)?;
    Ok(vec![Share {
        node: Arc::clone(node),
        positions: vec![0],
    }])
}

/// The first failure of a single-key command, if any.
fn first_error(failed: Vec<Failed>) -> Option<Error> {
    failed.into_iter().next().map(|(_, error)| error)
}

/// `get`/`gets` of one key.
#[derive(Debug)]
pub struct Retrieve {
    key: String,
    kind: Retrieval,
    max_value_len: usize,
    found: Option<Item>,
}

impl Retrieve {
    pub(crate) fn new(client: &Client, key: String, kind: Retrieval) -> Self {
        Retrieve {
            key,
            kind,
            max_value_len: client.config.max_value_len,
            found: None,
        }
    }
}

impl Command for Retrieve {
    type Output = Option<Item>;

    fn name(&self) -> CommandName {
        match self.kind {
            Retrieval::Gets => CommandName::Gets,
            _ => CommandName::Get,
        }
    }

    fn hits(&self, _: &[usize]) -> Option<usize> {
        Some(usize::from(self.found.is_some()))
    }

    fn validate(&self) -> Result<()> {
        Client::validate(&self.key)
    }

    fn shares(&mut self, topology: &Topology) -> Result<Vec<Share>> {
        one_share(topology, &self.key)
    }

    fn all_positions(&self) -> Vec<usize> {
        vec![0]
    }

    fn size(&self, _: usize) -> usize {
        self.key.len() + 8
    }

    fn encode(&mut self, out: &mut Vec<u8>, _: &[usize]) {
        out.reserve(self.key.len() + 8);
        proto::encode_retrieval(out, self.kind, [self.key.as_bytes()]);
    }

    fn read(
        &mut self,
        _: &str,
        _: &[usize],
        _: &mut Cursor,
        buf: &[u8],
        _: &mut Vec<u8>,
    ) -> ParseResult<Reading> {
        Ok(match proto::parse_retrieval(buf, self.max_value_len)? {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(RetrievalItem::End, used) => Parse::Complete(Reading::Done, used),
            Parse::Complete(RetrievalItem::Value(value), used) => {
                if value.key != self.key.as_bytes() || self.found.is_some() {
                    return Err(stray_value());
                }
                self.found = Some(Item {
                    flags: value.flags,
                    data: Bytes::copy_from_slice(value.data),
                    cas: value.cas,
                });
                Parse::Complete(Reading::More, used)
            }
        })
    }

    fn finish(self, client: &Client, failed: Vec<Failed>) -> Result<Option<Item>> {
        match first_error(failed) {
            Some(error) => client.tolerate(Err(error), || None),
            None => Ok(self.found),
        }
    }
}

/// A storage command of one key. A `set` that fails (too large for the client, or refused by
/// the node) deletes the key in the same exchange: the old value must not be read back as
/// if the new one had been stored.
#[derive(Debug)]
pub struct StoreOne<'v> {
    key: String,
    command: Store,
    flags: u32,
    data: Cow<'v, [u8]>,
    exptime: i64,
    /// The set's own outcome; a value too large for the client has it from the start.
    verdict: Option<Result<StoreReply>>,
    /// Whether the request on the wire is the cleanup `delete`.
    cleanup: bool,
}

impl<'v> StoreOne<'v> {
    pub(crate) fn new(
        client: &Client,
        command: Store,
        key: String,
        flags: u32,
        data: Cow<'v, [u8]>,
        exptime: i64,
    ) -> Self {
        let limit = client.config.max_value_len;
        let verdict = (data.len() > limit).then(|| {
            Err(Error::ValueTooLarge {
                size: data.len(),
                limit,
            })
        });
        StoreOne {
            key,
            command,
            flags,
            data,
            exptime,
            verdict,
            cleanup: false,
        }
    }

    fn too_large(&self) -> bool {
        self.verdict.is_some()
    }
}

impl Command for StoreOne<'_> {
    type Output = StoreReply;

    fn name(&self) -> CommandName {
        match self.command {
            Store::Add => CommandName::Add,
            Store::Replace => CommandName::Replace,
            Store::Append => CommandName::Append,
            Store::Prepend => CommandName::Prepend,
            _ => CommandName::Set,
        }
    }

    fn validate(&self) -> Result<()> {
        Client::validate(&self.key)
    }

    fn shares(&mut self, topology: &Topology) -> Result<Vec<Share>> {
        if self.too_large() && self.command != Store::Set {
            // Nothing to send, nothing to clean up: only a set replaces a value.
            return Ok(Vec::new());
        }
        one_share(topology, &self.key)
    }

    fn all_positions(&self) -> Vec<usize> {
        vec![0]
    }

    fn size(&self, _: usize) -> usize {
        self.key.len() + self.data.len() + 48
    }

    fn encode(&mut self, out: &mut Vec<u8>, _: &[usize]) {
        if self.too_large() {
            self.cleanup = true;
            proto::encode_delete(out, self.key.as_bytes(), false);
            return;
        }
        out.reserve(self.key.len() + self.data.len() + 48);
        proto::encode_store(
            out,
            self.command,
            self.key.as_bytes(),
            self.flags,
            self.exptime,
            &self.data,
            false,
        );
    }

    fn read(
        &mut self,
        node: &str,
        _: &[usize],
        _: &mut Cursor,
        buf: &[u8],
        request: &mut Vec<u8>,
    ) -> ParseResult<Reading> {
        if self.cleanup {
            return Ok(match proto::with_error_replies(buf, proto::parse_delete)? {
                Parse::Incomplete(needed) => Parse::Incomplete(needed),
                Parse::Complete(deleted, used) => {
                    if let Err(error) = deleted {
                        // Best effort: the set already failed, and that is what is reported.
                        log::debug!("{node}: delete {:?} after a failed set: {error}", self.key);
                    }
                    Parse::Complete(Reading::Done, used)
                }
            });
        }
        Ok(match proto::with_error_replies(buf, proto::parse_store)? {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(Ok(reply), used) => {
                self.verdict = Some(Ok(reply));
                Parse::Complete(Reading::Done, used)
            }
            // A server error is a whole reply line: the stream stays in step.
            Parse::Complete(Err(ReplyError::Server(message)), used) => {
                let error = Error::ServerFailure {
                    node: node.to_owned(),
                    message,
                };
                self.verdict = Some(Err(error.for_store(self.data.len())));
                if self.command != Store::Set {
                    return Ok(Parse::Complete(Reading::Done, used));
                }
                self.cleanup = true;
                proto::encode_delete(request, self.key.as_bytes(), false);
                Parse::Complete(Reading::Send, used)
            }
            Parse::Complete(Err(error), _) => return Err(error),
        })
    }

    fn finish(self, client: &Client, failed: Vec<Failed>) -> Result<StoreReply> {
        let size = self.data.len();
        let outcome = match (self.verdict, first_error(failed)) {
            // The set's own failure is what is reported, whatever its cleanup met.
            (Some(Err(error)), _) => Err(error),
            (_, Some(error)) => Err(error.for_store(size)),
            (Some(Ok(reply)), None) => Ok(reply),
            // Cannot happen: an exchange ends well only once the reply is read.
            (None, None) => Err(Error::NoNodes),
        };
        client.tolerate(outcome, || StoreReply::NotStored)
    }
}

/// A one-line command of one key: `delete`, `incr`/`decr`, `touch`.
#[derive(Debug)]
pub struct OneLine<T> {
    key: String,
    line: Line,
    parse: fn(&[u8]) -> ParseResult<T>,
    /// The reply under `ignore_exc` when the node fails.
    fallback: T,
    reply: Option<T>,
}

/// Which one-line command.
#[derive(Debug, Clone, Copy)]
enum Line {
    Delete,
    Counter(Counter, u64),
    Touch(i64),
}

impl OneLine<DeleteReply> {
    pub(crate) fn delete(key: String) -> Self {
        OneLine {
            key,
            line: Line::Delete,
            parse: proto::parse_delete,
            fallback: DeleteReply::NotFound,
            reply: None,
        }
    }
}

impl OneLine<IncrDecrReply> {
    pub(crate) fn counter(key: String, op: Counter, delta: u64) -> Self {
        OneLine {
            key,
            line: Line::Counter(op, delta),
            parse: proto::parse_incr_decr,
            fallback: IncrDecrReply::NotFound,
            reply: None,
        }
    }
}

impl OneLine<TouchReply> {
    pub(crate) fn touch(key: String, exptime: i64) -> Self {
        OneLine {
            key,
            line: Line::Touch(exptime),
            parse: proto::parse_touch,
            fallback: TouchReply::NotFound,
            reply: None,
        }
    }
}

impl<T: Copy> Command for OneLine<T> {
    type Output = T;

    fn name(&self) -> CommandName {
        match self.line {
            Line::Delete => CommandName::Delete,
            Line::Counter(Counter::Decr, _) => CommandName::Decr,
            Line::Counter(_, _) => CommandName::Incr,
            Line::Touch(_) => CommandName::Touch,
        }
    }

    fn validate(&self) -> Result<()> {
        Client::validate(&self.key)
    }

    fn shares(&mut self, topology: &Topology) -> Result<Vec<Share>> {
        one_share(topology, &self.key)
    }

    fn all_positions(&self) -> Vec<usize> {
        vec![0]
    }

    fn size(&self, _: usize) -> usize {
        self.key.len() + 32
    }

    fn encode(&mut self, out: &mut Vec<u8>, _: &[usize]) {
        out.reserve(self.key.len() + 32);
        let key = self.key.as_bytes();
        match self.line {
            Line::Delete => proto::encode_delete(out, key, false),
            Line::Counter(op, delta) => proto::encode_incr_decr(out, op, key, delta, false),
            Line::Touch(exptime) => proto::encode_touch(out, key, exptime, false),
        }
    }

    fn read(
        &mut self,
        _: &str,
        _: &[usize],
        _: &mut Cursor,
        buf: &[u8],
        _: &mut Vec<u8>,
    ) -> ParseResult<Reading> {
        Ok(match (self.parse)(buf)? {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(reply, used) => {
                self.reply = Some(reply);
                Parse::Complete(Reading::Done, used)
            }
        })
    }

    fn finish(self, client: &Client, failed: Vec<Failed>) -> Result<T> {
        let fallback = self.fallback;
        match first_error(failed) {
            Some(error) => client.tolerate(Err(error), || fallback),
            // `None` cannot happen: an exchange ends well only once the reply is read.
            None => self.reply.ok_or(Error::NoNodes),
        }
    }
}

/// The keys of a multi-key command, by position.
pub trait Keys {
    /// How many keys.
    fn count(&self) -> usize;
    /// The key at `position` (empty past the end).
    fn key(&self, position: usize) -> &str;
}

impl Keys for &[&str] {
    fn count(&self) -> usize {
        self.len()
    }

    fn key(&self, position: usize) -> &str {
        self.get(position).copied().unwrap_or_default()
    }
}

/// Keys owned in one buffer: what an operation that outlives its caller's borrows holds.
#[derive(Debug, Default, Clone)]
pub struct KeyList {
    text: String,
    ends: Vec<usize>,
}

impl KeyList {
    /// Room for `count` keys of about 24 bytes.
    pub fn with_capacity(count: usize) -> Self {
        KeyList {
            text: String::with_capacity(count * 24),
            ends: Vec::with_capacity(count),
        }
    }

    /// Appends a key.
    pub fn push(&mut self, key: &str) {
        self.text.push_str(key);
        self.ends.push(self.text.len());
    }

    /// Appends a key made by `make`, which appends its text to the buffer it is given.
    pub fn push_with<E>(
        &mut self,
        make: impl FnOnce(&mut String) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let start = self.text.len();
        if let Err(error) = make(&mut self.text) {
            self.text.truncate(start);
            return Err(error);
        }
        self.ends.push(self.text.len());
        Ok(())
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The key at `position` (empty past the end).
    pub fn get(&self, position: usize) -> &str {
        self.text
            .get(part(&self.ends, position))
            .unwrap_or_default()
    }

    /// Every key, in order (borrowed), for the blocking batch methods.
    pub fn all(&self) -> Vec<&str> {
        (0..self.len()).map(|p| self.get(p)).collect()
    }
}

impl Keys for KeyList {
    fn count(&self) -> usize {
        self.len()
    }

    fn key(&self, position: usize) -> &str {
        self.get(position)
    }
}

/// The items of a `set_many`, by position.
pub trait Items {
    /// How many items.
    fn count(&self) -> usize;
    /// The key, flags and bytes of the item at `position`.
    fn item(&self, position: usize) -> (&str, u32, &[u8]);
}

impl Items for &[(&str, u32, &[u8])] {
    fn count(&self) -> usize {
        self.len()
    }

    fn item(&self, position: usize) -> (&str, u32, &[u8]) {
        self.get(position).copied().unwrap_or(("", 0, &[]))
    }
}

/// Items owned in two buffers (keys, values): see [`KeyList`].
#[derive(Debug, Default, Clone)]
pub struct ItemList {
    keys: KeyList,
    flags: Vec<u32>,
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl ItemList {
    /// Room for `count` items.
    pub fn with_capacity(count: usize) -> Self {
        ItemList {
            keys: KeyList::with_capacity(count),
            flags: Vec::with_capacity(count),
            data: Vec::new(),
            ends: Vec::with_capacity(count),
        }
    }

    /// Appends an item.
    pub fn push(&mut self, key: &str, flags: u32, data: &[u8]) {
        self.keys.push(key);
        self.flags.push(flags);
        self.data.extend_from_slice(data);
        self.ends.push(self.data.len());
    }

    /// The keys, by position.
    pub fn keys(&self) -> &KeyList {
        &self.keys
    }
}

impl Items for ItemList {
    fn count(&self) -> usize {
        self.keys.len()
    }

    fn item(&self, position: usize) -> (&str, u32, &[u8]) {
        (
            self.keys.get(position),
            self.flags.get(position).copied().unwrap_or_default(),
            self.data
                .get(part(&self.ends, position))
                .unwrap_or_default(),
        )
    }
}

/// Groups a batch's positions by the node that owns each key.
fn batch_shares<'k>(
    topology: &Topology,
    count: usize,
    key: impl Fn(usize) -> &'k str,
) -> Vec<Share> {
    let nodes = topology.nodes();
    let capacity = count * 2 / nodes.len().max(1) + 1;
    let mut shares: Vec<Share> = nodes
        .iter()
        .map(|node| Share {
            node: Arc::clone(node),
            positions: Vec::with_capacity(capacity),
        })
        .collect();
    for position in 0..count {
        if let Some(share) = topology
            .node_index_for(key(position))
            .and_then(|index| shares.get_mut(index))
        {
            share.positions.push(position);
        }
    }
    shares.retain(|share| !share.positions.is_empty());
    shares
}

/// The longest `get` command line sent: ElastiCache Serverless refuses longer ones.
const MAX_GET_LINE: usize = 16 * 1024;

/// Splits a node's keys into `get` lines of at most [`MAX_GET_LINE`] bytes each.
fn get_lines<'p, K: Keys>(
    keys: &'p K,
    positions: &'p [usize],
) -> impl Iterator<Item = &'p [usize]> + 'p {
    const OVERHEAD: usize = "get".len() + "\r\n".len();
    crate::engine::split_by_size(positions, MAX_GET_LINE - OVERHEAD, move |p| {
        1 + keys.key(p).len()
    })
}

/// Fails with the first share's error unless `ignore_exc` lets the batch go on without it;
/// the positions of the failed shares.
fn settle(client: &Client, failed: Vec<Failed>) -> Result<Vec<usize>> {
    let mut positions = Vec::new();
    for (share, error) in failed {
        client.tolerate(Err(error), || ())?;
        positions.extend(share);
    }
    Ok(positions)
}

/// `get` of many keys: the values in the batch's own buffers.
#[derive(Debug)]
pub struct GetMany<K> {
    keys: K,
    max_value_len: usize,
    values: BatchValues,
}

impl<K: Keys> GetMany<K> {
    pub(crate) fn new(client: &Client, keys: K) -> Self {
        let count = keys.count();
        GetMany {
            keys,
            max_value_len: client.config.max_value_len,
            values: BatchValues::new(count),
        }
    }
}

impl<K: Keys> Command for GetMany<K> {
    type Output = BatchValues;

    fn name(&self) -> CommandName {
        CommandName::GetMany
    }

    fn hits(&self, positions: &[usize]) -> Option<usize> {
        Some(positions.iter().filter(|&&p| self.values.has(p)).count())
    }

    fn validate(&self) -> Result<()> {
        (0..self.keys.count()).try_for_each(|p| Client::validate(self.keys.key(p)))
    }

    fn shares(&mut self, topology: &Topology) -> Result<Vec<Share>> {
        let keys = &self.keys;
        Ok(batch_shares(topology, keys.count(), |p| keys.key(p)))
    }

    fn all_positions(&self) -> Vec<usize> {
        (0..self.keys.count()).collect()
    }

    fn size(&self, position: usize) -> usize {
        1 + self.keys.key(position).len()
    }

    fn encode(&mut self, out: &mut Vec<u8>, positions: &[usize]) {
        let keys = &self.keys;
        out.reserve(
            positions
                .iter()
                .map(|&p| 1 + keys.key(p).len())
                .sum::<usize>()
                + 64,
        );
        for line in get_lines(keys, positions) {
            proto::encode_retrieval(
                out,
                Retrieval::Get,
                line.iter().map(|&p| keys.key(p).as_bytes()),
            );
        }
    }

    fn read(
        &mut self,
        _: &str,
        positions: &[usize],
        cursor: &mut Cursor,
        buf: &[u8],
        _: &mut Vec<u8>,
    ) -> ParseResult<Reading> {
        let keys = &self.keys;
        let mut used = 0;
        let mut lines = get_lines(keys, positions).skip(cursor.line);
        let Some(mut line) = lines.next() else {
            return Ok(Parse::Complete(Reading::Done, 0));
        };
        loop {
            match proto::parse_retrieval(buf.get(used..).unwrap_or_default(), self.max_value_len)? {
                Parse::Incomplete(needed) if used == 0 => return Ok(Parse::Incomplete(needed)),
                Parse::Incomplete(_) => return Ok(Parse::Complete(Reading::More, used)),
                Parse::Complete(RetrievalItem::End, length) => {
                    used += length;
                    cursor.line += 1;
                    cursor.next = 0;
                    match lines.next() {
                        Some(next) => line = next,
                        None => return Ok(Parse::Complete(Reading::Done, used)),
                    }
                }
                Parse::Complete(RetrievalItem::Value(value), length) => {
                    // The server answers hits in request order, so walking the request once
                    // pairs each value with its key (duplicates included) and exposes any
                    // stray key: `next` is the first key not answered yet. Matched in the
                    // buffer, without copying the key.
                    let rest = line.get(cursor.next..).unwrap_or_default();
                    let offset = rest
                        .iter()
                        .position(|&p| keys.key(p).as_bytes() == value.key)
                        .ok_or_else(stray_value)?;
                    if let Some(&position) = rest.get(offset) {
                        self.values.keep(position, value.flags, value.data);
                    }
                    cursor.next += offset + 1;
                    used += length;
                }
            }
        }
    }

    fn finish(mut self, client: &Client, failed: Vec<Failed>) -> Result<BatchValues> {
        self.values.forget(&settle(client, failed)?);
        Ok(self.values)
    }
}

/// `set` of many items; the output is the positions not stored. A value over
/// `max_value_len` is not sent: its key is deleted instead (in the same round trip), so an old
/// value cannot outlive the failed write. memcached does the same for values over its own
/// item limit.
#[derive(Debug)]
pub struct SetMany<I> {
    items: I,
    exptime: i64,
    limit: usize,
    not_stored: Vec<usize>,
}

impl<I: Items> SetMany<I> {
    pub(crate) fn new(client: &Client, items: I, exptime: i64) -> Self {
        SetMany {
            items,
            exptime,
            limit: client.config.max_value_len,
            not_stored: Vec::new(),
        }
    }

    fn oversized(&self, position: usize) -> bool {
        self.items.item(position).2.len() > self.limit
    }
}

impl<I: Items> Command for SetMany<I> {
    type Output = Vec<usize>;

    fn name(&self) -> CommandName {
        CommandName::SetMany
    }

    fn validate(&self) -> Result<()> {
        (0..self.items.count()).try_for_each(|p| Client::validate(self.items.item(p).0))
    }

    fn shares(&mut self, topology: &Topology) -> Result<Vec<Share>> {
        let items = &self.items;
        Ok(batch_shares(topology, items.count(), |p| items.item(p).0))
    }

    fn all_positions(&self) -> Vec<usize> {
        (0..self.items.count()).collect()
    }

    fn size(&self, position: usize) -> usize {
        let (key, _, data) = self.items.item(position);
        key.len() + data.len() + 48
    }

    fn encode(&mut self, out: &mut Vec<u8>, positions: &[usize]) {
        out.reserve(positions.iter().map(|&p| self.size(p)).sum::<usize>());
        for &p in positions {
            let (key, flags, data) = self.items.item(p);
            if self.oversized(p) {
                proto::encode_delete(out, key.as_bytes(), false);
            } else {
                proto::encode_store(
                    out,
                    Store::Set,
                    key.as_bytes(),
                    flags,
                    self.exptime,
                    data,
                    false,
                );
            }
        }
    }

    fn read(
        &mut self,
        node: &str,
        positions: &[usize],
        cursor: &mut Cursor,
        buf: &[u8],
        _: &mut Vec<u8>,
    ) -> ParseResult<Reading> {
        // Per-key refusals are the caller's to see (the key comes back as not stored), so they
        // are logged at debug only: at WARNING a batch writing values that are too large would
        // log once per key and per call.
        let mut used = 0;
        while let Some(&p) = positions.get(cursor.item) {
            let rest = buf.get(used..).unwrap_or_default();
            let key = self.items.item(p).0;
            let length = if self.oversized(p) {
                match proto::with_error_replies(rest, proto::parse_delete)? {
                    Parse::Incomplete(needed) => return Ok(incomplete(used, needed)),
                    Parse::Complete(deleted, length) => {
                        if let Err(error) = deleted {
                            log::debug!("{node}: delete {key:?} failed: {error}");
                        }
                        log::debug!("set {key:?} not sent: over the {}-byte limit", self.limit);
                        self.not_stored.push(p);
                        length
                    }
                }
            } else {
                match proto::with_error_replies(rest, proto::parse_store)? {
                    Parse::Incomplete(needed) => return Ok(incomplete(used, needed)),
                    Parse::Complete(reply, length) => {
                        match reply {
                            Ok(StoreReply::Stored) => {}
                            Ok(_) => self.not_stored.push(p),
                            Err(error) => {
                                log::debug!("{node}: set {key:?} failed: {error}");
                                self.not_stored.push(p);
                            }
                        }
                        length
                    }
                }
            };
            used += length;
            cursor.item += 1;
        }
        Ok(Parse::Complete(Reading::Done, used))
    }

    fn finish(mut self, client: &Client, failed: Vec<Failed>) -> Result<Vec<usize>> {
        self.not_stored.extend(settle(client, failed)?);
        self.not_stored.sort_unstable();
        Ok(self.not_stored)
    }
}

/// `Incomplete` when nothing was used yet, else the progress so far.
fn incomplete(used: usize, needed: usize) -> Parse<Reading> {
    if used == 0 {
        Parse::Incomplete(needed)
    } else {
        Parse::Complete(Reading::More, used)
    }
}

/// `delete` of many keys; the output is how many were there.
#[derive(Debug)]
pub struct DeleteMany<K> {
    keys: K,
    deleted: usize,
}

impl<K: Keys> DeleteMany<K> {
    pub(crate) fn new(keys: K) -> Self {
        DeleteMany { keys, deleted: 0 }
    }
}

impl<K: Keys> Command for DeleteMany<K> {
    type Output = usize;

    fn name(&self) -> CommandName {
        CommandName::DeleteMany
    }

    fn validate(&self) -> Result<()> {
        (0..self.keys.count()).try_for_each(|p| Client::validate(self.keys.key(p)))
    }

    fn shares(&mut self, topology: &Topology) -> Result<Vec<Share>> {
        let keys = &self.keys;
        Ok(batch_shares(topology, keys.count(), |p| keys.key(p)))
    }

    fn all_positions(&self) -> Vec<usize> {
        (0..self.keys.count()).collect()
    }

    fn size(&self, position: usize) -> usize {
        self.keys.key(position).len() + 10
    }

    fn encode(&mut self, out: &mut Vec<u8>, positions: &[usize]) {
        for &p in positions {
            proto::encode_delete(out, self.keys.key(p).as_bytes(), false);
        }
    }

    fn read(
        &mut self,
        _: &str,
        positions: &[usize],
        cursor: &mut Cursor,
        buf: &[u8],
        _: &mut Vec<u8>,
    ) -> ParseResult<Reading> {
        let mut used = 0;
        while cursor.item < positions.len() {
            let rest = buf.get(used..).unwrap_or_default();
            match proto::with_error_replies(rest, proto::parse_delete)? {
                Parse::Incomplete(needed) => return Ok(incomplete(used, needed)),
                Parse::Complete(reply, length) => {
                    if reply == Ok(DeleteReply::Deleted) {
                        self.deleted += 1;
                    }
                    used += length;
                    cursor.item += 1;
                }
            }
        }
        Ok(Parse::Complete(Reading::Done, used))
    }

    fn finish(self, client: &Client, failed: Vec<Failed>) -> Result<usize> {
        settle(client, failed)?;
        Ok(self.deleted)
    }
}

/// One request to every node (`flush_all`, `stats`, `version`); the output is each node's
/// result, in node order. Fails only when there is no node to ask.
#[derive(Debug)]
pub struct EveryNode<T> {
    name: CommandName,
    /// Only this node (by name), when set.
    only: Option<String>,
    request: Vec<u8>,
    parse: fn(&[u8]) -> ParseResult<T>,
    results: Vec<(String, Option<Result<T>>)>,
}

impl<T> EveryNode<T> {
    fn new(name: CommandName, request: Vec<u8>, parse: fn(&[u8]) -> ParseResult<T>) -> Self {
        EveryNode {
            name,
            only: None,
            request,
            parse,
            results: Vec::new(),
        }
    }
}

impl<T> EveryNode<T> {
    /// The same command for the node named `node` alone.
    pub(crate) fn only(mut self, node: &str) -> Self {
        self.only = Some(node.to_owned());
        self
    }
}

impl EveryNode<()> {
    pub(crate) fn flush_all() -> Self {
        let mut request = Vec::new();
        proto::encode_flush_all(&mut request, None, false);
        EveryNode::new(CommandName::FlushAll, request, proto::parse_ok)
    }
}

impl EveryNode<Stats> {
    pub(crate) fn stats(group: Option<&str>) -> Self {
        let mut request = Vec::new();
        proto::encode_stats(&mut request, group);
        EveryNode::new(CommandName::Stats, request, proto::parse_stats)
    }
}

impl EveryNode<String> {
    pub(crate) fn versions() -> Self {
        let mut request = Vec::new();
        proto::encode_version(&mut request);
        EveryNode::new(CommandName::Version, request, proto::parse_version)
    }
}

impl<T> Command for EveryNode<T> {
    type Output = Vec<(String, Result<T>)>;

    fn name(&self) -> CommandName {
        self.name
    }

    fn validate(&self) -> Result<()> {
        Ok(())
    }

    fn shares(&mut self, topology: &Topology) -> Result<Vec<Share>> {
        let only = self.only.as_deref();
        let nodes: Vec<&Arc<crate::topology::Node>> = topology
            .nodes()
            .iter()
            .filter(|node| only.is_none_or(|name| node.address.name == name))
            .collect();
        self.results = nodes
            .iter()
            .map(|node| (node.address.name.clone(), None))
            .collect();
        Ok(nodes
            .into_iter()
            .enumerate()
            .map(|(index, node)| Share {
                node: Arc::clone(node),
                positions: vec![index],
            })
            .collect())
    }

    fn all_positions(&self) -> Vec<usize> {
        (0..self.results.len()).collect()
    }

    fn size(&self, _: usize) -> usize {
        self.request.len()
    }

    fn encode(&mut self, out: &mut Vec<u8>, _: &[usize]) {
        out.extend_from_slice(&self.request);
    }

    fn read(
        &mut self,
        _: &str,
        positions: &[usize],
        _: &mut Cursor,
        buf: &[u8],
        _: &mut Vec<u8>,
    ) -> ParseResult<Reading> {
        Ok(match (self.parse)(buf)? {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(reply, used) => {
                if let Some(slot) = positions.first().and_then(|&i| self.results.get_mut(i)) {
                    slot.1 = Some(Ok(reply));
                }
                Parse::Complete(Reading::Done, used)
            }
        })
    }

    fn finish(mut self, _: &Client, failed: Vec<Failed>) -> Result<Self::Output> {
        for (positions, error) in failed {
            match positions.first().and_then(|&i| self.results.get_mut(i)) {
                Some(slot) => slot.1 = Some(Err(error)),
                // No node to ask.
                None => return Err(error),
            }
        }
        Ok(self
            .results
            .into_iter()
            .map(|(node, result)| (node.clone(), result.unwrap_or(Err(Error::Closed { node }))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_lines_stay_under_the_limit_and_keep_every_key_in_order() {
        let long: Vec<String> = (0..400).map(|i| format!("{i:0>200}")).collect();
        let keys: Vec<&str> = long.iter().map(String::as_str).collect();
        let keys = keys.as_slice();
        let positions: Vec<usize> = (0..keys.len()).collect();
        let lines: Vec<&[usize]> = get_lines(&keys, &positions).collect();
        assert!(lines.len() > 1);
        for line in &lines {
            let bytes = "get\r\n".len() + line.iter().map(|&p| 1 + keys[p].len()).sum::<usize>();
            assert!(bytes <= MAX_GET_LINE, "{bytes}");
        }
        assert_eq!(lines.concat(), positions);
        let short: Vec<&[usize]> = get_lines(&keys, &positions[..3]).collect();
        assert_eq!(short, vec![&positions[..3]]);
        assert_eq!(get_lines(&keys, &[]).count(), 0);
    }

    #[test]
    fn owned_keys_and_items_read_back_by_position() {
        let mut keys = KeyList::with_capacity(2);
        keys.push("a");
        keys.push("");
        keys.push("ccc");
        assert_eq!(
            (keys.get(0), keys.get(1), keys.get(2), keys.get(3)),
            ("a", "", "ccc", "")
        );
        let failed: std::result::Result<(), ()> = keys.push_with(|text| {
            text.push_str("half");
            Err(())
        });
        assert!(failed.is_err());
        assert_eq!(
            keys.len(),
            3,
            "a key that failed to be made leaves nothing behind"
        );
        let mut items = ItemList::with_capacity(2);
        items.push("k1", 16, b"one");
        items.push("k2", 0, b"");
        assert_eq!(items.item(0), ("k1", 16, &b"one"[..]));
        assert_eq!(items.item(1), ("k2", 0, &b""[..]));
        assert_eq!(Items::count(&items), 2);
    }
}
