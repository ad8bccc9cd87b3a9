//! The multi-key commands (`get`, `set` and `delete` of many keys) and the key and item lists
//! they take. Keys are grouped by the node each is routed to, and every node's request is
//! written before any reply is read (`engine`), so a batch costs one round trip however many
//! nodes it touches. Under `ignore_exc` a failed node's keys are left out (`Fallback::PerNode`).

use std::sync::Arc;

use elasticache_proto::{
    self as proto, DeleteReply, Parse, Retrieval, RetrievalItem, Store, StoreReply,
};

use crate::cluster::Routes;
use crate::engine::{
    part, split_by_size, Coalescing, Command, Cursor, Failed, Fallback, Reading, Share, Step,
};
use crate::error::{check_key, Result};
use crate::gutter::cap_exptime;
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

/// Refuses a batch with a key memcached cannot take.
fn check_keys(keys: &impl Keys) -> Result<()> {
    (0..keys.count()).try_for_each(|p| check_key(keys.key(p)))
}

/// Groups a batch's positions by the node each key is routed to; with `on_gutter`, the TTL a
/// gutter gives the positions it serves is kept there (`None` for the others).
fn batch_shares(
    routes: Routes<'_>,
    keys: &impl Keys,
    mut on_gutter: Option<&mut Vec<Option<u32>>>,
) -> Vec<Share> {
    let count = keys.count();
    let nodes = routes.nodes();
    let capacity = count * 2 / nodes.len().max(1) + 1;
    let mut shares: Vec<Share> = nodes
        .iter()
        .map(|node| Share {
            node: Arc::clone(node),
            positions: Vec::with_capacity(capacity),
        })
        .collect();
    if let Some(ttls) = on_gutter.as_deref_mut() {
        ttls.clear();
    }
    for position in 0..count {
        let Some(route) = routes.place(keys.key(position)) else {
            continue;
        };
        if let Some(ttl) = route.gutter_ttl {
            if let Some(ttls) = on_gutter.as_deref_mut() {
                ttls.resize(count, None);
                if let Some(slot) = ttls.get_mut(position) {
                    *slot = Some(ttl);
                }
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
#[derive(Debug)]
pub struct GetMany<K> {
    keys: K,
    max_value_len: usize,
    values: BatchValues,
}

impl<K: Keys> GetMany<K> {
    /// The batch's keys.
    pub(crate) fn keys(&self) -> &K {
        &self.keys
    }

    /// Whether the key at `position` was found.
    pub(crate) fn found(&self, position: usize) -> bool {
        self.values.has(position)
    }

    /// The largest value accepted.
    pub(crate) fn max_value_len(&self) -> usize {
        self.max_value_len
    }

    pub(crate) fn new(keys: K, max_value_len: usize) -> Self {
        let count = keys.count();
        GetMany {
            keys,
            max_value_len,
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
        check_keys(&self.keys)
    }

    fn shares(&mut self, routes: Routes<'_>) -> Result<Vec<Share>> {
        Ok(batch_shares(routes, &self.keys, None))
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
            return Ok(Parse::Complete(Step::Done(()), 0));
        };
        loop {
            match proto::parse_retrieval(buf.get(used..).unwrap_or_default(), self.max_value_len)? {
                Parse::Incomplete(needed) if used == 0 => return Ok(Parse::Incomplete(needed)),
                Parse::Incomplete(_) => return Ok(Parse::Complete(Step::More, used)),
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
                        self.values.keep(position, value.flags, value.data);
                    }
                    cursor.next += offset + 1;
                    used += length;
                }
            }
        }
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

    fn take_shared(&mut self, position: usize, item: Option<Item>) {
        if let Some(item) = item {
            self.values.keep(position, item.flags, &item.data);
        }
    }

    fn finish(mut self, failed: Vec<Failed>) -> Result<BatchValues> {
        self.values.forget(positions(failed));
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
    /// Per position, the TTL of the gutter serving it, if one does (empty when none does).
    gutter_ttls: Vec<Option<u32>>,
}

impl<I: Items> SetMany<I> {
    /// The batch's items.
    pub(crate) fn items(&self) -> &I {
        &self.items
    }

    pub(crate) fn new(items: I, exptime: i64, max_value_len: usize) -> Self {
        SetMany {
            items,
            exptime,
            limit: max_value_len,
            not_stored: Vec::new(),
            gutter_ttls: Vec::new(),
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
        check_keys(&ItemKeys(&self.items))
    }

    fn shares(&mut self, routes: Routes<'_>) -> Result<Vec<Share>> {
        Ok(batch_shares(
            routes,
            &ItemKeys(&self.items),
            Some(&mut self.gutter_ttls),
        ))
    }

    fn invalidates(&self) -> bool {
        true
    }

    fn key(&self, position: usize) -> Option<&str> {
        Some(self.items.item(position).0)
    }

    fn all_positions(&self) -> Vec<usize> {
        (0..self.items.count()).collect()
    }

    fn size(&self, position: usize) -> usize {
        let (key, _, data) = self.items.item(position);
        // Its lease's delete too (`end_lease`).
        2 * key.len() + data.len() + 80
    }

    fn encode(&mut self, out: &mut Vec<u8>, positions: &[usize]) {
        out.reserve(positions.iter().map(|&p| self.size(p)).sum::<usize>());
        for &p in positions {
            let (key, flags, data) = self.items.item(p);
            end_lease(key, out);
            let exptime = match self.gutter_ttls.get(p).copied().flatten() {
                Some(ttl) => cap_exptime(self.exptime, ttl),
                None => self.exptime,
            };
            if self.oversized(p) {
                proto::encode_delete(out, key.as_bytes(), false);
            } else {
                proto::encode_store(out, Store::Set, key.as_bytes(), flags, exptime, data, false);
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
        Ok(Parse::Complete(Step::Done(()), used))
    }

    fn fallback(&self) -> Fallback<Vec<usize>> {
        Fallback::PerNode
    }

    fn written_key(&self, position: usize) -> Option<&str> {
        Some(self.items.item(position).0)
    }

    fn finish(mut self, failed: Vec<Failed>) -> Result<Vec<usize>> {
        self.not_stored.extend(positions(failed));
        self.not_stored.sort_unstable();
        Ok(self.not_stored)
    }
}

/// `Incomplete` when nothing was used yet, else the progress so far.
fn incomplete(used: usize, needed: usize) -> Parse<Reading> {
    if used == 0 {
        Parse::Incomplete(needed)
    } else {
        Parse::Complete(Step::More, used)
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
        Ok(batch_shares(routes, &self.keys, None))
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

    fn written_key(&self, position: usize) -> Option<&str> {
        Some(self.keys.key(position))
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
