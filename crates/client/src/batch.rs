//! The multi-key commands (`get`, `set` and `delete` of many keys) and the key and item lists
//! they take. Keys are grouped by the node each is routed to, and every node's request is
//! written before any reply is read (`engine`), so a batch costs one round trip however many
//! nodes it touches. Under `ignore_exc` a failed node's keys are left out (`Fallback::PerNode`).

use std::sync::Arc;

use elasticache_proto::{
    self as proto, DeleteReply, Parse, Retrieval, RetrievalItem, Store, StoreReply, TouchReply,
};

use crate::cluster::Routes;
use crate::config::ClientConfig;
use crate::engine::{
    incomplete, part, split_by_size, Coalescing, Command, Cursor, Failed, Fallback, Reading, Share,
    Step,
};
use crate::error::{check_key, Error, Result};
use crate::gutter::cap_exptime;
use crate::large::{chunk_key, Assembly, Index, LargeValues, LARGE_FLAG};
use crate::lease_keys::end_lease;
use crate::metrics::CommandName;
use crate::single::{stray_value, ParseResult};
use crate::values::{BatchValues, Item};

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

/// The keys of a batch's items.
struct ItemKeys<'i, I>(&'i I);

impl<I: Items> Keys for ItemKeys<'_, I> {
    fn count(&self) -> usize {
        self.0.count()
    }

    fn key(&self, position: usize) -> &str {
        self.0.item(position).0
    }
}

/// A batch's keys followed by its large values' chunk keys: one space of positions for both
/// rounds (see [`Command::next_round`]).
struct WithChunks<'k, K> {
    keys: K,
    chunks: Option<&'k KeyList>,
}

/// Borrowed keys.
struct Borrowed<'k, K>(&'k K);

impl<K: Keys> Keys for Borrowed<'_, K> {
    fn count(&self) -> usize {
        self.0.count()
    }

    fn key(&self, position: usize) -> &str {
        self.0.key(position)
    }
}

impl<K: Keys> Keys for WithChunks<'_, K> {
    fn count(&self) -> usize {
        self.keys.count() + self.chunks.map_or(0, KeyList::len)
    }

    fn key(&self, position: usize) -> &str {
        match position.checked_sub(self.keys.count()) {
            None => self.keys.key(position),
            Some(chunk) => self.chunks.map_or("", |chunks| chunks.get(chunk)),
        }
    }
}

/// Refuses a batch with a key memcached cannot take.
fn check_keys(keys: &impl Keys) -> Result<()> {
    (0..keys.count()).try_for_each(|p| check_key(keys.key(p)))
}

/// Groups a batch's positions (all of them, in order) by the node each key is routed to.
fn batch_shares(routes: Routes<'_>, keys: &impl Keys) -> Vec<Share> {
    shares_of(routes, keys, 0..keys.count(), None)
}

/// Groups `positions` of a batch by the node each key is routed to ([`Routes::place`]); with
/// `on_gutter`, the TTL a gutter gives each position it serves is kept there, by position
/// (`None` for the others; positions of earlier rounds keep theirs).
fn shares_of(
    routes: Routes<'_>,
    keys: &impl Keys,
    positions: impl ExactSizeIterator<Item = usize>,
    mut on_gutter: Option<&mut Vec<Option<u32>>>,
) -> Vec<Share> {
    let count = positions.len();
    let nodes = routes.nodes();
    let capacity = count * 2 / nodes.len().max(1) + 1;
    let mut shares: Vec<Share> = nodes
        .iter()
        .map(|node| Share {
            node: Arc::clone(node),
            positions: Vec::with_capacity(capacity),
        })
        .collect();
    for position in positions {
        let Some(route) = routes.place(keys.key(position)) else {
            continue;
        };
        if let Some(ttls) = on_gutter.as_deref_mut() {
            if route.gutter_ttl.is_some() && ttls.len() <= position {
                ttls.resize(position + 1, None);
            }
            if let Some(slot) = ttls.get_mut(position) {
                *slot = route.gutter_ttl;
            }
        }
        if let Some(share) = shares.get_mut(route.node) {
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
    split_by_size(positions, MAX_GET_LINE - OVERHEAD, move |p| {
        1 + keys.key(p).len()
    })
}

/// The positions of the shares `ignore_exc` let the batch go on without.
fn positions(failed: Vec<Failed>) -> impl Iterator<Item = usize> {
    failed.into_iter().flat_map(|(positions, _)| positions)
}

/// `get` of many keys: the values in the batch's own buffers.
///
/// With `large_values` on, an index item found among the values names its chunks; the
/// chunks of every large value found are read in one more round (routed by their own keys,
/// all nodes at once), after the keys' round, and joined into the values. A chunk missing,
/// of the wrong length, or a value not matching its checksum reads as a miss (logged).
/// With it off, an index item reads as a miss.
#[derive(Debug)]
pub struct GetMany<K> {
    keys: K,
    /// As the counters name it (a single `get` of a possibly large value is a `get`).
    name: CommandName,
    max_value_len: usize,
    values: BatchValues,
    large: Option<LargeRead>,
}

/// The large values a `get_many` reads.
#[derive(Debug)]
struct LargeRead {
    limits: LargeValues,
    /// Indexes found in the keys' round, by position.
    found: Vec<(usize, Index)>,
    /// Whether the chunks' round is due or done.
    chunk_round: bool,
    assemblies: Vec<Assembly>,
    /// Chunk keys: chunk position `keys.count() + c` is `chunks.get(c)`.
    chunks: KeyList,
    /// Per chunk: its assembly and its number in it.
    owners: Vec<(usize, usize)>,
}

impl<K: Keys> GetMany<K> {
    /// The batch's keys.
    pub(crate) fn keys(&self) -> &K {
        &self.keys
    }

    /// Whether the key at `position` was found: a value, or a large value's index (its
    /// chunks are read, or were, in a round of their own).
    pub(crate) fn found(&self, position: usize) -> bool {
        self.values.has(position)
            || self.large.as_ref().is_some_and(|large| {
                large.found.iter().any(|(p, _)| *p == position)
                    || large.assemblies.iter().any(|a| a.position == position)
            })
    }

    /// The largest value accepted.
    pub(crate) fn max_value_len(&self) -> usize {
        self.max_value_len
    }

    pub(crate) fn new(keys: K, config: &ClientConfig) -> Self {
        let count = keys.count();
        GetMany {
            keys,
            name: CommandName::GetMany,
            max_value_len: config.max_value_len,
            values: BatchValues::new(count),
            large: config.large_values.map(|limits| LargeRead {
                limits,
                found: Vec::new(),
                chunk_round: false,
                assemblies: Vec::new(),
                chunks: KeyList::default(),
                owners: Vec::new(),
            }),
        }
    }

    /// The same read, counted as `name`.
    pub(crate) fn named(mut self, name: CommandName) -> Self {
        self.name = name;
        self
    }

    fn all_keys(&self) -> WithChunks<'_, Borrowed<'_, K>> {
        WithChunks {
            keys: Borrowed(&self.keys),
            chunks: self.large.as_ref().map(|large| &large.chunks),
        }
    }

    /// The positions of the current round.
    fn round(&self) -> std::ops::Range<usize> {
        let count = self.keys.count();
        match &self.large {
            Some(large) if large.chunk_round => count..count + large.chunks.len(),
            _ => 0..count,
        }
    }

    /// Whether chunk position `position` was read.
    fn chunk_came(&self, position: usize) -> bool {
        let (Some(large), Some(chunk)) = (&self.large, position.checked_sub(self.keys.count()))
        else {
            return false;
        };
        large
            .owners
            .get(chunk)
            .and_then(|&(at, number)| Some(large.assemblies.get(at)?.has(number)))
            .unwrap_or(false)
    }
}

impl<K: Keys> Command for GetMany<K> {
    type Output = BatchValues;

    fn name(&self) -> CommandName {
        self.name
    }

    fn hits(&self, positions: &[usize]) -> Option<usize> {
        let index_found = |p: usize| {
            self.large
                .as_ref()
                .is_some_and(|large| large.found.iter().any(|(q, _)| *q == p))
        };
        Some(
            positions
                .iter()
                .filter(|&&p| self.values.has(p) || self.chunk_came(p) || index_found(p))
                .count(),
        )
    }

    fn validate(&self) -> Result<()> {
        check_keys(&self.keys)
    }

    fn shares(&mut self, routes: Routes<'_>) -> Result<Vec<Share>> {
        Ok(shares_of(routes, &self.all_keys(), self.round(), None))
    }

    fn all_positions(&self) -> Vec<usize> {
        self.round().collect()
    }

    fn size(&self, position: usize) -> usize {
        1 + self.all_keys().key(position).len()
    }

    fn encode(&mut self, out: &mut Vec<u8>, positions: &[usize]) {
        let keys = &self.all_keys();
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
        let GetMany {
            keys,
            max_value_len,
            values,
            large,
            ..
        } = self;
        let count = keys.count();
        let (chunks, mut large) = match large.as_mut() {
            Some(LargeRead {
                chunks,
                found,
                assemblies,
                owners,
                ..
            }) => (Some(&*chunks), Some((found, assemblies, &*owners))),
            None => (None, None),
        };
        let keys = &WithChunks {
            keys: Borrowed(&*keys),
            chunks,
        };
        let mut used = 0;
        let mut lines = get_lines(keys, positions).skip(cursor.line);
        let Some(mut line) = lines.next() else {
            return Ok(Parse::Complete(Step::Done(()), 0));
        };
        loop {
            match proto::parse_retrieval(buf.get(used..).unwrap_or_default(), *max_value_len)? {
                Parse::Incomplete(needed) => return Ok(incomplete(used, needed)),
                Parse::Complete(RetrievalItem::End, length) => {
                    used += length;
                    cursor.line += 1;
                    cursor.next = 0;
                    match lines.next() {
                        Some(next) => line = next,
                        None => return Ok(Parse::Complete(Step::Done(()), used)),
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
                        match (position.checked_sub(count), large.as_mut()) {
                            (Some(chunk), Some((_, assemblies, owners))) => {
                                let taken = owners.get(chunk).and_then(|&(at, number)| {
                                    Some(assemblies.get_mut(at)?.take(number, value.data))
                                });
                                if taken != Some(true) {
                                    log::warn!(
                                        "chunk {:?} is not of the length its index says",
                                        keys.key(position)
                                    );
                                }
                            }
                            (Some(_), None) => {}
                            (None, large) if value.flags & LARGE_FLAG != 0 => {
                                let key = keys.key(position);
                                match (large, Index::parse(value.data)) {
                                    (Some((found, _, _)), Some(index)) => {
                                        found.push((position, index));
                                    }
                                    (Some(_), None) => log::warn!(
                                        "{key:?} has the large-value flag but no index this \
                                         client reads: read as a miss"
                                    ),
                                    (None, _) => log::debug!(
                                        "{key:?} holds a large value's index and large_values \
                                         is off: read as a miss"
                                    ),
                                }
                            }
                            (None, _) => values.keep(position, value.flags, value.data),
                        }
                    }
                    cursor.next += offset + 1;
                    used += length;
                }
            }
        }
    }

    fn next_round(&mut self, routes: Routes<'_>, _: &[Failed]) -> Result<Vec<Share>> {
        let Some(large) = self.large.as_mut() else {
            return Ok(Vec::new());
        };
        if large.chunk_round {
            return Ok(Vec::new());
        }
        large.chunk_round = true;
        for (position, index) in std::mem::take(&mut large.found) {
            let key = self.keys.key(position);
            let max_len = large.limits.max_len;
            let Some(assembly) = Assembly::new(position, key, index, max_len, self.max_value_len)
            else {
                continue;
            };
            let at = large.assemblies.len();
            for number in 0..index.count() {
                large.chunks.push(&chunk_key(key, index.generation, number));
                large.owners.push((at, number));
            }
            large.assemblies.push(assembly);
        }
        if large.chunks.is_empty() {
            return Ok(Vec::new());
        }
        self.shares(routes)
    }

    fn fallback(&self) -> Fallback<BatchValues> {
        Fallback::PerNode
    }

    fn coalescing(&self) -> Coalescing {
        Coalescing::Joins
    }

    fn shared_key(&self, position: usize) -> Option<&str> {
        Some(self.keys.key(position))
    }

    fn read_size(&self, position: usize) -> Option<usize> {
        self.values.size(position)
    }

    // A batch leads no flight; this is what the local tier is offered. A large value is
    // joined only once the operation ends: it is never offered.
    fn shared_value(&self, position: usize) -> Option<Item> {
        self.values.item(position)
    }

    fn take_shared(&mut self, position: usize, item: Option<Item>) {
        if let Some(item) = item {
            self.values.keep(position, item.flags, &item.data);
        }
    }

    fn finish(mut self, failed: Vec<Failed>) -> Result<BatchValues> {
        let count = self.keys.count();
        // A failed chunk's value lacks it, and reads as a miss when joined.
        self.values
            .forget(positions(failed).filter(|&position| position < count));
        if let Some(large) = self.large.take() {
            for assembly in large.assemblies {
                let position = assembly.position;
                if let Some((flags, data)) = assembly.finish(self.keys.key(position)) {
                    self.values.keep_owned(position, flags, data);
                }
            }
        }
        Ok(self.values)
    }
}

/// `set` (or `add`) of many items; the output is the positions not stored. A value over
/// `max_value_len` is not sent: its key is deleted instead (in the same round trip), so an old
/// value cannot outlive the failed write. memcached does the same for values over its own
/// item limit.
///
/// With `large_values` on, a value over the chunk length (and within the large-value bound)
/// is stored as chunks, all of them in a first round (routed by their own keys), then its
/// index, in the items' round: a reader that finds the new index finds its chunks. A value
/// whose chunks were not all stored is not stored either (a `set` deletes its key, as for a
/// value too large).
#[derive(Debug)]
pub struct SetMany<I> {
    items: I,
    exptime: i64,
    limit: usize,
    /// `Set`, or `Add` (a single `add`).
    command: Store,
    /// One store whose failure is the caller's error, not a position not stored.
    single: bool,
    /// A single store's own refusal (too large, refused by the node).
    refused: Option<Error>,
    not_stored: Vec<usize>,
    large: Option<LargeWrite>,
    /// Per position (chunks too), the TTL of the gutter serving it, if one does (empty when
    /// none does).
    gutter_ttls: Vec<Option<u32>>,
}

/// The large values a `set_many` writes.
#[derive(Debug)]
struct LargeWrite {
    /// Per item: its index (encoded), when it is stored as chunks.
    indexes: Vec<Option<Vec<u8>>>,
    /// Chunk keys: chunk position `items.count() + c` is `chunks.get(c)`.
    chunks: KeyList,
    /// Per chunk: its item and the range of its bytes in the item's value.
    owners: Vec<(usize, std::ops::Range<usize>)>,
    /// Per item: whether a chunk of it was not stored.
    broken: Vec<bool>,
    /// Whether the items' round is due or done (the chunks' round comes first).
    items_round: bool,
}

/// What the items' round does with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Stores the value (or its index).
    Store,
    /// Deletes the key: a `set` of a value too large, or whose chunks were not all stored.
    Delete,
    /// Nothing: an `add` of such a value.
    Skip,
}

impl<I: Items> SetMany<I> {
    /// The batch's items.
    pub(crate) fn items(&self) -> &I {
        &self.items
    }

    pub(crate) fn new(items: I, exptime: i64, config: &ClientConfig) -> Self {
        let count = items.count();
        let mut set = SetMany {
            items,
            exptime,
            limit: config.max_value_len,
            command: Store::Set,
            single: false,
            refused: None,
            not_stored: Vec::new(),
            large: None,
            gutter_ttls: Vec::new(),
        };
        if let Some(limits) = config.large_values {
            set.limit = limits.max_len;
            set.large = Some(set.chunked(limits, count));
        }
        set
    }

    /// One store (`set` or `add`) of a value that may be large: its failure is an error.
    pub(crate) fn single(items: I, command: Store, exptime: i64, config: &ClientConfig) -> Self {
        let mut set = SetMany::new(items, exptime, config);
        set.command = command;
        set.single = true;
        if let Some(size) = (0..set.items.count())
            .map(|p| set.items.item(p).2.len())
            .find(|&size| size > set.limit)
        {
            set.refused = Some(Error::ValueTooLarge {
                size,
                limit: set.limit,
            });
        }
        set
    }

    /// The chunks of the values over the chunk length.
    fn chunked(&self, limits: LargeValues, count: usize) -> LargeWrite {
        let mut large = LargeWrite {
            indexes: vec![None; count],
            chunks: KeyList::default(),
            owners: Vec::new(),
            broken: vec![false; count],
            items_round: false,
        };
        for position in 0..count {
            let (key, flags, data) = self.items.item(position);
            if !limits.chunks(data.len()) || data.len() > limits.max_len {
                continue;
            }
            let index = Index::of(flags, data, limits.chunk_len);
            for number in 0..index.count() {
                large.chunks.push(&chunk_key(key, index.generation, number));
                large.owners.push((position, index.range(number)));
            }
            if let Some(slot) = large.indexes.get_mut(position) {
                *slot = Some(index.encode());
            }
        }
        large.items_round = large.chunks.is_empty();
        large
    }

    fn oversized(&self, position: usize) -> bool {
        self.items.item(position).2.len() > self.limit
    }

    fn action(&self, position: usize) -> Action {
        let broken = self
            .large
            .as_ref()
            .is_some_and(|large| large.broken.get(position).copied().unwrap_or(false));
        match (self.oversized(position) || broken, self.command) {
            (false, _) => Action::Store,
            (true, Store::Set) => Action::Delete,
            (true, _) => Action::Skip,
        }
    }

    fn chunk_round(&self) -> bool {
        self.large.as_ref().is_some_and(|large| !large.items_round)
    }

    /// The positions of the current round.
    fn round(&self) -> Vec<usize> {
        let count = self.items.count();
        match &self.large {
            Some(large) if !large.items_round => (count..count + large.chunks.len()).collect(),
            _ => (0..count)
                .filter(|&p| self.action(p) != Action::Skip)
                .collect(),
        }
    }

    /// What chunk position `position` stores: its key, its item and its bytes.
    fn chunk(&self, position: usize) -> Option<(&str, usize, &[u8])> {
        let large = self.large.as_ref()?;
        let chunk = position.checked_sub(self.items.count())?;
        let (owner, range) = large.owners.get(chunk)?;
        let data = self.items.item(*owner).2.get(range.clone())?;
        Some((large.chunks.get(chunk), *owner, data))
    }

    /// The flags and bytes the items' round stores for `position`: its index, if it has one.
    fn stored(&self, position: usize) -> (&str, u32, &[u8]) {
        let (key, flags, data) = self.items.item(position);
        match self
            .large
            .as_ref()
            .and_then(|large| large.indexes.get(position)?.as_deref())
        {
            Some(index) => (key, LARGE_FLAG, index),
            None => (key, flags, data),
        }
    }

    /// Notes `position` as not stored (a single store: why, if the node said).
    fn not_stored(&mut self, position: usize, error: Option<Error>) {
        self.not_stored.push(position);
        if self.single && self.refused.is_none() {
            self.refused = error;
        }
    }
}

impl<I: Items> Command for SetMany<I> {
    type Output = Vec<usize>;

    fn name(&self) -> CommandName {
        match (self.single, self.command) {
            (true, Store::Add) => CommandName::Add,
            (true, _) => CommandName::Set,
            (false, _) => CommandName::SetMany,
        }
    }

    fn validate(&self) -> Result<()> {
        check_keys(&ItemKeys(&self.items))
    }

    fn shares(&mut self, routes: Routes<'_>) -> Result<Vec<Share>> {
        let round = self.round();
        let SetMany {
            items,
            large,
            gutter_ttls,
            ..
        } = self;
        let keys = WithChunks {
            keys: ItemKeys(&*items),
            chunks: large.as_ref().map(|large| &large.chunks),
        };
        Ok(shares_of(
            routes,
            &keys,
            round.into_iter(),
            Some(gutter_ttls),
        ))
    }

    // An `add` replaces nothing: what the key held, if anything, still holds. The chunks'
    // round invalidates nothing either: a chunk key is new (its generation), read only through
    // the index the items' round writes, so none is remembered for replay (a gutter taking a
    // large value's chunks would otherwise fill the node's bound with them).
    fn invalidates(&self) -> bool {
        self.command != Store::Add && !self.chunk_round()
    }

    fn writes(&self) -> bool {
        true
    }

    // A chunk's key is not remembered for replay: a chunk is read only through its item's
    // index, whose key (the items' round) is.
    fn key(&self, position: usize) -> Option<&str> {
        (position < self.items.count()).then(|| self.items.item(position).0)
    }

    fn all_positions(&self) -> Vec<usize> {
        self.round()
    }

    fn size(&self, position: usize) -> usize {
        match self.chunk(position) {
            Some((key, _, data)) => key.len() + data.len() + 48,
            None => {
                let (key, _, data) = self.stored(position);
                match self.action(position) {
                    // Its lease's delete too (`end_lease`).
                    Action::Delete => 2 * key.len() + 80,
                    _ => key.len() + data.len() + 48,
                }
            }
        }
    }

    fn encode(&mut self, out: &mut Vec<u8>, positions: &[usize]) {
        out.reserve(positions.iter().map(|&p| self.size(p)).sum::<usize>());
        for &p in positions {
            let exptime = match self.gutter_ttls.get(p).copied().flatten() {
                Some(ttl) => cap_exptime(self.exptime, ttl),
                None => self.exptime,
            };
            if let Some((key, _, data)) = self.chunk(p) {
                proto::encode_store(out, Store::Set, key.as_bytes(), 0, exptime, data, false);
                continue;
            }
            let (key, flags, data) = self.stored(p);
            // A write leaves the key's lease alone, a delete (a set's cleanup) ends it: see
            // `StorePlan::start`.
            if self.action(p) == Action::Delete {
                end_lease(key, out);
                proto::encode_delete(out, key.as_bytes(), false);
            } else {
                proto::encode_store(
                    out,
                    self.command,
                    key.as_bytes(),
                    flags,
                    exptime,
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
        let chunk_round = self.chunk_round();
        while let Some(&p) = positions.get(cursor.item) {
            let rest = buf.get(used..).unwrap_or_default();
            let length = if chunk_round {
                match proto::with_error_replies(rest, proto::parse_store)? {
                    Parse::Incomplete(needed) => return Ok(incomplete(used, needed)),
                    Parse::Complete(reply, length) => {
                        if reply != Ok(StoreReply::Stored) {
                            let (key, owner) = match self.chunk(p) {
                                Some((key, owner, _)) => (key.to_owned(), owner),
                                None => (String::new(), usize::MAX),
                            };
                            log::debug!("{node}: chunk {key:?} not stored: {reply:?}");
                            if let Some(broken) = self
                                .large
                                .as_mut()
                                .and_then(|large| large.broken.get_mut(owner))
                            {
                                *broken = true;
                            }
                            if let Err(error) = reply {
                                let size = self.items.item(owner).2.len();
                                let error = Error::from_reply(node, error).for_store(size);
                                if self.single && self.refused.is_none() {
                                    self.refused = Some(error);
                                }
                            }
                        }
                        length
                    }
                }
            } else if self.action(p) == Action::Delete {
                let key = self.items.item(p).0;
                match proto::with_error_replies(rest, proto::parse_delete)? {
                    Parse::Incomplete(needed) => return Ok(incomplete(used, needed)),
                    Parse::Complete(deleted, length) => {
                        if let Err(error) = deleted {
                            log::debug!("{node}: delete {key:?} failed: {error}");
                        }
                        log::debug!(
                            "set {key:?} not sent: over the {}-byte limit, or chunks not stored",
                            self.limit
                        );
                        self.not_stored(p, None);
                        length
                    }
                }
            } else {
                match proto::with_error_replies(rest, proto::parse_store)? {
                    Parse::Incomplete(needed) => return Ok(incomplete(used, needed)),
                    Parse::Complete(reply, length) => {
                        match reply {
                            Ok(StoreReply::Stored) => {}
                            Ok(_) => self.not_stored(p, None),
                            Err(error) => {
                                let key = self.items.item(p).0;
                                log::debug!("{node}: set {key:?} failed: {error}");
                                let size = self.stored(p).2.len();
                                let error = Error::from_reply(node, error).for_store(size);
                                self.not_stored(p, Some(error));
                            }
                        }
                        length
                    }
                }
            };
            used += length;
            cursor.item += 1;
        }
        Ok(Parse::Complete(Step::Done(()), used))
    }

    fn next_round(&mut self, routes: Routes<'_>, failed: &[Failed]) -> Result<Vec<Share>> {
        let count = self.items.count();
        let Some(large) = self.large.as_mut() else {
            return Ok(Vec::new());
        };
        if large.items_round {
            return Ok(Vec::new());
        }
        // Chunks whose node failed (under `ignore_exc`): their values are not stored.
        for (positions, _) in failed {
            for chunk in positions.iter().filter_map(|p| p.checked_sub(count)) {
                if let Some(broken) = large
                    .owners
                    .get(chunk)
                    .and_then(|(owner, _)| large.broken.get_mut(*owner))
                {
                    *broken = true;
                }
            }
        }
        large.items_round = true;
        self.shares(routes)
    }

    fn fallback(&self) -> Fallback<Vec<usize>> {
        if self.single {
            Fallback::Whole(vec![0])
        } else {
            Fallback::PerNode
        }
    }

    fn finish(mut self, failed: Vec<Failed>) -> Result<Vec<usize>> {
        let count = self.items.count();
        if self.single {
            if let Some((_, error)) = failed.into_iter().next() {
                let size = self.items.item(0).2.len();
                return Err(error.for_store(size));
            }
            if let Some(error) = self.refused.take() {
                return Err(error);
            }
        } else {
            let owners = self.large.as_ref().map(|large| &large.owners);
            let failed_items = positions(failed).filter_map(|p| match p.checked_sub(count) {
                None => Some(p),
                Some(chunk) => owners?.get(chunk).map(|(owner, _)| *owner),
            });
            let failed_items: Vec<usize> = failed_items.collect();
            self.not_stored.extend(failed_items);
        }
        let skipped: Vec<usize> = (0..count)
            .filter(|&p| self.action(p) == Action::Skip)
            .collect();
        self.not_stored.extend(skipped);
        self.not_stored.sort_unstable();
        self.not_stored.dedup();
        Ok(self.not_stored)
    }
}

/// `touch` of a key that may hold a large value (`large_values`): the key is read first; if it
/// holds an index, its chunks are touched with it, in a second round (all nodes at once), so
/// that they keep living as long as the index. The output is whether the key was touched.
#[derive(Debug)]
pub struct TouchLarge {
    /// Position 0 (the read) and the last position (its touch) are this key.
    key: String,
    exptime: i64,
    max_value_len: usize,
    /// The chunk keys of the index found: positions 1 to `chunks.len()`.
    chunks: KeyList,
    /// Whether the key was found (then the second round touches it and its chunks).
    found: bool,
    /// Whether the touch round is due or done.
    touch_round: bool,
    touched: bool,
}

impl TouchLarge {
    pub(crate) fn new(key: String, exptime: i64, config: &ClientConfig) -> Self {
        TouchLarge {
            key,
            exptime,
            max_value_len: config.max_value_len,
            chunks: KeyList::default(),
            found: false,
            touch_round: false,
            touched: false,
        }
    }

    fn last(&self) -> usize {
        self.chunks.len() + 1
    }

    fn key_at(&self, position: usize) -> &str {
        match position.checked_sub(1) {
            Some(chunk) if chunk < self.chunks.len() => self.chunks.get(chunk),
            _ => &self.key,
        }
    }
}

impl Command for TouchLarge {
    type Output = bool;

    fn name(&self) -> CommandName {
        CommandName::Touch
    }

    fn validate(&self) -> Result<()> {
        check_key(&self.key)
    }

    fn shares(&mut self, routes: Routes<'_>) -> Result<Vec<Share>> {
        let keys = TouchKeys(self);
        Ok(match self.touch_round {
            true => shares_of(routes, &keys, 1..self.last() + 1, None),
            false => shares_of(routes, &keys, 0..1, None),
        })
    }

    fn all_positions(&self) -> Vec<usize> {
        match self.touch_round {
            true => (1..self.last() + 1).collect(),
            false => vec![0],
        }
    }

    fn size(&self, position: usize) -> usize {
        self.key_at(position).len() + 32
    }

    fn encode(&mut self, out: &mut Vec<u8>, positions: &[usize]) {
        for &p in positions {
            let key = self.key_at(p).as_bytes();
            if p == 0 {
                proto::encode_retrieval(out, Retrieval::Get, [key]);
            } else {
                proto::encode_touch(out, key, self.exptime, false);
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
        let mut used = 0;
        while let Some(&p) = positions.get(cursor.item) {
            let rest = buf.get(used..).unwrap_or_default();
            if p == 0 {
                match proto::parse_retrieval(rest, self.max_value_len)? {
                    Parse::Incomplete(needed) => return Ok(incomplete(used, needed)),
                    Parse::Complete(RetrievalItem::End, length) => {
                        used += length;
                        cursor.item += 1;
                    }
                    Parse::Complete(RetrievalItem::Value(value), length) => {
                        if value.key != self.key.as_bytes() || self.found {
                            return Err(stray_value());
                        }
                        self.found = true;
                        if value.flags & LARGE_FLAG != 0 {
                            if let Some(index) = Index::parse(value.data) {
                                for number in 0..index.count() {
                                    let chunk = chunk_key(&self.key, index.generation, number);
                                    self.chunks.push(&chunk);
                                }
                            }
                        }
                        used += length;
                    }
                }
                continue;
            }
            match proto::with_error_replies(rest, proto::parse_touch)? {
                Parse::Incomplete(needed) => return Ok(incomplete(used, needed)),
                Parse::Complete(reply, length) => {
                    if p == self.last() {
                        self.touched = reply == Ok(TouchReply::Touched);
                    } else if reply != Ok(TouchReply::Touched) {
                        log::debug!("{node}: touch of chunk {:?}: {reply:?}", self.key_at(p));
                    }
                    used += length;
                    cursor.item += 1;
                }
            }
        }
        Ok(Parse::Complete(Step::Done(()), used))
    }

    fn next_round(&mut self, routes: Routes<'_>, _: &[Failed]) -> Result<Vec<Share>> {
        if self.touch_round || !self.found {
            return Ok(Vec::new());
        }
        self.touch_round = true;
        self.shares(routes)
    }

    fn fallback(&self) -> Fallback<bool> {
        Fallback::Whole(false)
    }

    fn finish(self, failed: Vec<Failed>) -> Result<bool> {
        match failed.into_iter().next() {
            Some((_, error)) => Err(error),
            None => Ok(self.touched),
        }
    }
}

/// The keys of a [`TouchLarge`], by position.
struct TouchKeys<'t>(&'t TouchLarge);

impl Keys for TouchKeys<'_> {
    fn count(&self) -> usize {
        self.0.last() + 1
    }

    fn key(&self, position: usize) -> &str {
        self.0.key_at(position)
    }
}

/// `delete` of many keys; the output is how many were there.
#[derive(Debug)]
pub struct DeleteMany<K> {
    keys: K,
    deleted: usize,
}

impl<K: Keys> DeleteMany<K> {
    /// The batch's keys.
    pub(crate) fn keys(&self) -> &K {
        &self.keys
    }

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
        check_keys(&self.keys)
    }

    fn shares(&mut self, routes: Routes<'_>) -> Result<Vec<Share>> {
        Ok(batch_shares(routes, &self.keys))
    }

    fn all_positions(&self) -> Vec<usize> {
        (0..self.keys.count()).collect()
    }

    fn invalidates(&self) -> bool {
        true
    }

    fn key(&self, position: usize) -> Option<&str> {
        Some(self.keys.key(position))
    }

    fn size(&self, position: usize) -> usize {
        // Its lease's delete too (`end_lease`).
        2 * self.keys.key(position).len() + 40
    }

    fn encode(&mut self, out: &mut Vec<u8>, positions: &[usize]) {
        for &p in positions {
            let key = self.keys.key(p);
            end_lease(key, out);
            proto::encode_delete(out, key.as_bytes(), false);
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
        Ok(Parse::Complete(Step::Done(()), used))
    }

    fn fallback(&self) -> Fallback<usize> {
        Fallback::PerNode
    }

    fn finish(self, _: Vec<Failed>) -> Result<usize> {
        Ok(self.deleted)
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
