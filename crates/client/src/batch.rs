//! Multi-key operations: keys grouped by node, every node's request written before any reply
//! is read, so a batch costs one round trip however many nodes it touches.

use std::time::Instant;

use bytes::Bytes;
use elasticache_proto::{
    self as proto, DeleteReply, Parse, Retrieval, RetrievalItem, Store, StoreReply,
};

use crate::client::{Client, Item};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::pool::Lease;
use crate::topology::Node;

/// The longest `get` command line sent: ElastiCache Serverless refuses longer ones.
const MAX_GET_LINE: usize = 16 * 1024;

/// Over TLS, the most request bytes written before their replies are read: one TLS record.
/// memcached's TLS (1.6) can stall on a pipeline that arrives as several records at once,
/// leaving decrypted requests unprocessed until more bytes come; one record at a time keeps
/// it moving, at the cost of a round trip per 16 KB.
/// (Headroom below 16 KB keeps a `get` exchange within one [`MAX_GET_LINE`] line.)
const MAX_TLS_EXCHANGE: usize = 16 * 1024 - 64;

/// Splits `positions` into runs whose `size`s, plus `overhead` per run, stay within `limit`
/// (an item larger than the limit runs alone).
fn split_by_size<'p>(
    positions: &'p [usize],
    overhead: usize,
    limit: usize,
    size: impl Fn(usize) -> usize + 'p,
) -> impl Iterator<Item = &'p [usize]> + 'p {
    let mut start = 0;
    std::iter::from_fn(move || {
        let rest = positions.get(start..).filter(|rest| !rest.is_empty())?;
        let mut length = overhead;
        let mut taken = 0;
        for &p in rest {
            let added = size(p);
            if length + added > limit && taken > 0 {
                break;
            }
            length += added;
            taken += 1;
        }
        start += taken;
        rest.get(..taken)
    })
}

/// Splits a node's keys into `get` lines of at most [`MAX_GET_LINE`] bytes each.
fn get_lines<'p>(keys: &'p [&str], positions: &'p [usize]) -> impl Iterator<Item = &'p [usize]> {
    const OVERHEAD: usize = "get".len() + "\r\n".len();
    split_by_size(positions, OVERHEAD, MAX_GET_LINE, |p| 1 + keys[p].len())
}

/// Values up to this size share one allocation per batch; larger ones get their own, so a
/// batch of large values never needs a second buffer as large as all of them.
const SHARED_VALUE_MAX: usize = 4 * 1024;

/// The most a batch reserves for its small values before it has seen them all.
const SHARED_RESERVE_MAX: usize = 1024 * 1024;

/// The values a `get_many` read, copied once out of the connection buffers, by position in
/// the batch's keys.
#[derive(Debug)]
pub struct BatchValues {
    /// The small values, back to back.
    shared: Vec<u8>,
    /// Per value read: its position, flags, and either its range in `shared` or its own
    /// buffer.
    kept: Vec<(usize, u32, Kept)>,
    /// Per position: the index of its value in `kept`, if one was read.
    index: Vec<Option<u32>>,
}

#[derive(Debug)]
enum Kept {
    Shared(std::ops::Range<usize>),
    Own(Vec<u8>),
}

impl BatchValues {
    fn new(count: usize) -> Self {
        BatchValues {
            shared: Vec::new(),
            kept: Vec::with_capacity(count),
            index: vec![None; count],
        }
    }

    fn keep(&mut self, position: usize, flags: u32, data: &[u8]) {
        let kept = if data.len() <= SHARED_VALUE_MAX {
            if self.shared.capacity() == 0 {
                // Values of one batch tend to be alike: room for as many more as there are
                // keys, within reason, instead of growing from nothing.
                self.shared
                    .reserve((data.len() * self.index.len()).min(SHARED_RESERVE_MAX));
            }
            let start = self.shared.len();
            self.shared.extend_from_slice(data);
            Kept::Shared(start..self.shared.len())
        } else {
            Kept::Own(data.to_vec())
        };
        if let (Some(slot), Ok(at)) = (self.index.get_mut(position), u32::try_from(self.kept.len()))
        {
            *slot = Some(at);
            self.kept.push((position, flags, kept));
        }
    }

    /// Forgets the values of `positions` (their node failed after sending some).
    fn forget(&mut self, positions: &[usize]) {
        for &position in positions {
            if let Some(slot) = self.index.get_mut(position) {
                *slot = None;
            }
        }
    }

    /// Hands `visit` the position, flags and bytes of each value read, in the order of the
    /// batch's keys. A large value's buffer is freed as soon as `visit` returns, so a caller
    /// converting values never holds two full copies of a large batch.
    pub fn try_for_each<E>(
        mut self,
        mut visit: impl FnMut(usize, u32, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        for (position, at) in self.index.iter().enumerate() {
            let Some(entry) = at.and_then(|at| self.kept.get_mut(usize::try_from(at).ok()?)) else {
                continue;
            };
            let (_, flags, kept) = entry;
            match kept {
                Kept::Shared(range) => {
                    if let Some(data) = self.shared.get(range.clone()) {
                        visit(position, *flags, data)?;
                    }
                }
                Kept::Own(data) => {
                    let data = std::mem::take(data);
                    visit(position, *flags, &data)?;
                }
            }
        }
        Ok(())
    }

    /// How many keys the batch had.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the batch had no keys.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The items, aligned with the batch's keys (`None` for a miss).
    fn into_items(self) -> Vec<Option<Item>> {
        let shared = Bytes::from(self.shared);
        let mut kept: Vec<Option<Item>> = self
            .kept
            .into_iter()
            .map(|(_, flags, kept)| {
                let data = match kept {
                    Kept::Shared(range) => shared.slice(range),
                    Kept::Own(data) => Bytes::from(data),
                };
                Some(Item {
                    flags,
                    data,
                    cas: None,
                })
            })
            .collect();
        self.index
            .iter()
            .map(|at| {
                let at = usize::try_from((*at)?).ok()?;
                kept.get_mut(at)?.take()
            })
            .collect()
    }
}

/// A node's share of a batch: the positions (in the caller's list) of its keys.
struct Share<'t> {
    node: &'t Node,
    positions: Vec<usize>,
}

impl Client {
    /// Runs a batch: `encode` writes a node's request for some of its keys, `read` reads the
    /// node's replies to them into the caller's results; `size` tells how many request bytes
    /// a key's item takes. Returns the shares that failed, with their error.
    ///
    /// Every node's request is written before any reply is read. Over TLS a node's request is
    /// sent in exchanges of at most [`MAX_TLS_EXCHANGE`] bytes, each one's replies read before
    /// the next is written.
    fn fan_out(
        &self,
        keys: &[&str],
        size: impl Fn(usize) -> usize,
        encode: impl Fn(&mut Vec<u8>, &[usize]),
        mut read: impl FnMut(&mut Connection, Option<Instant>, &[usize]) -> Result<()>,
    ) -> Result<Vec<(Vec<usize>, Error)>> {
        for key in keys {
            Self::validate(key)?;
        }
        let topology = match self.routing_topology() {
            Ok(topology) => topology,
            // No node to ask: every key fails alike (a miss under ignore_exc).
            Err(error) => return Ok(vec![((0..keys.len()).collect(), error)]),
        };
        let share_capacity = keys.len() * 2 / topology.nodes().len().max(1) + 1;
        let mut shares: Vec<Share<'_>> = topology
            .nodes()
            .iter()
            .map(|node| Share {
                node,
                positions: Vec::with_capacity(share_capacity),
            })
            .collect();
        for (position, key) in keys.iter().enumerate() {
            if let Some(index) = topology.node_index_for(key) {
                shares[index].positions.push(position);
            }
        }
        // A share's exchanges, as runs of its positions: all of them at once in plaintext.
        let exchange_limit = match self.config.tls {
            Some(_) => MAX_TLS_EXCHANGE,
            None => usize::MAX,
        };
        let deadline = self.deadline();
        let mut failed = Vec::new();
        let mut sent: Vec<(Share<'_>, Lease<'_>)> = Vec::with_capacity(shares.len());
        // Shares whose node had no free connection while this batch held others.
        let mut deferred: Vec<Share<'_>> = Vec::new();
        let mut request = Vec::new();
        for share in shares.into_iter().filter(|s| !s.positions.is_empty()) {
            // Holding connections to other nodes, never wait for one: another batch may hold
            // this node's connections while it waits for the ones held here.
            let leased = if sent.is_empty() {
                self.lease(share.node, deadline).map(Some)
            } else {
                self.lease_without_waiting(share.node, deadline)
            };
            let mut lease = match leased {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    deferred.push(share);
                    continue;
                }
                Err(error) => {
                    failed.push((share.positions, error));
                    continue;
                }
            };
            request.clear();
            if let Some(first) = split_by_size(&share.positions, 0, exchange_limit, &size).next() {
                request.reserve(first.iter().map(|&p| size(p)).sum::<usize>() + 64);
                encode(&mut request, first);
            }
            // `lease` counts its own failures towards marking the node down; a failed send is
            // counted here, so each failed share counts once.
            let written = match lease.connection() {
                Some(connection) => connection.send(&request, deadline),
                None => Err(Error::NoNodes),
            };
            match written {
                Ok(()) => sent.push((share, lease)),
                Err(error) => {
                    self.note_failure(share.node, &error);
                    failed.push((share.positions, error));
                }
            }
        }
        // The first run of every share in `sent` is on the wire: read them all, then send any
        // further runs (TLS) one exchange at a time.
        let mut finish = |share: Share<'_>, mut lease: Lease<'_>, first_sent: bool| {
            let result = match lease.connection() {
                Some(connection) => split_by_size(&share.positions, 0, exchange_limit, &size)
                    .enumerate()
                    .try_for_each(|(n, run)| {
                        if n > 0 || !first_sent {
                            request.clear();
                            encode(&mut request, run);
                            connection.send(&request, deadline)?;
                        }
                        read(connection, deadline, run)
                    }),
                None => Err(Error::NoNodes),
            };
            match result {
                Ok(()) => {
                    share.node.health.record_success();
                    lease.release();
                    None
                }
                Err(error) => {
                    self.note_failure(share.node, &error);
                    Some((share.positions, error))
                }
            }
        };
        for (share, lease) in sent {
            failed.extend(finish(share, lease, true));
        }
        // Holding nothing now, wait for the deferred nodes' connections, one node at a time.
        for share in deferred {
            match self.lease(share.node, deadline) {
                Ok(lease) => failed.extend(finish(share, lease, false)),
                Err(error) => failed.push((share.positions, error)),
            }
        }
        Ok(failed)
    }

    /// Fails with the first share's error unless `ignore_exc` lets the batch go on without it.
    fn settle(&self, failed: Vec<(Vec<usize>, Error)>) -> Result<Vec<usize>> {
        let mut positions = Vec::new();
        for (share, error) in failed {
            self.tolerate(Err(error), || ())?;
            positions.extend(share);
        }
        Ok(positions)
    }

    /// Reads many keys in one round trip; the result is aligned with `keys` (`None` = miss).
    pub fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Item>>> {
        self.get_many_values(keys).map(BatchValues::into_items)
    }

    /// Like [`Client::get_many`], the values kept in the batch's own buffers (no allocation
    /// per value): for callers that convert them right away.
    pub fn get_many_values(&self, keys: &[&str]) -> Result<BatchValues> {
        let mut values = BatchValues::new(keys.len());
        let max = self.config.max_value_len;
        let failed = self.fan_out(
            keys,
            |p| 1 + keys[p].len(),
            |request, positions| {
                for line in get_lines(keys, positions) {
                    proto::encode_retrieval(
                        request,
                        Retrieval::Get,
                        line.iter().map(|&p| keys[p].as_bytes()),
                    );
                }
            },
            |connection, deadline, positions| {
                for line in get_lines(keys, positions) {
                    // The server answers hits in request order, so walking the request once
                    // pairs each value with its key (duplicates included) and exposes any
                    // stray key: `next` is the first key not answered yet.
                    let mut next = 0;
                    // Each read takes every whole item in the buffer; `true` once at END.
                    while !connection.read(deadline, |buf| {
                        let mut used = 0;
                        loop {
                            match proto::parse_retrieval(&buf[used..], max)? {
                                Parse::Incomplete(needed) if used == 0 => {
                                    return Ok(Parse::Incomplete(needed));
                                }
                                Parse::Incomplete(_) => return Ok(Parse::Complete(false, used)),
                                Parse::Complete(RetrievalItem::End, length) => {
                                    return Ok(Parse::Complete(true, used + length));
                                }
                                Parse::Complete(RetrievalItem::Value(value), length) => {
                                    // Matched in the buffer, without copying the key.
                                    let offset = line[next..]
                                        .iter()
                                        .position(|&p| keys[p].as_bytes() == value.key)
                                        .ok_or_else(|| {
                                            proto::ReplyError::Malformed(
                                                "a value for a key not asked for".to_owned(),
                                            )
                                        })?;
                                    values.keep(line[next + offset], value.flags, value.data);
                                    next += offset + 1;
                                    used += length;
                                }
                            }
                        }
                    })? {}
                }
                Ok(())
            },
        );
        let failed = self.tolerate(failed, Vec::new)?;
        values.forget(&self.settle(failed)?);
        Ok(values)
    }

    /// Stores many values in one round trip; returns the positions that were not stored.
    ///
    /// A value over `max_value_len` is not sent: its key is deleted instead (in the same round
    /// trip), so an old value cannot outlive the failed write, and it is reported as not stored.
    /// memcached does the same for values over its own item limit.
    pub fn set_many(&self, items: &[(&str, u32, &[u8])], exptime: i64) -> Result<Vec<usize>> {
        let limit = self.config.max_value_len;
        let oversized = |p: usize| items[p].2.len() > limit;
        let keys: Vec<&str> = items.iter().map(|(key, _, _)| *key).collect();
        let mut not_stored = Vec::new();
        let failed = self.fan_out(
            &keys,
            |p| items[p].0.len() + items[p].2.len() + 48,
            |request, positions| {
                for &p in positions {
                    let (key, flags, data) = items[p];
                    if oversized(p) {
                        proto::encode_delete(request, key.as_bytes(), false);
                    } else {
                        proto::encode_store(
                            request,
                            Store::Set,
                            key.as_bytes(),
                            flags,
                            exptime,
                            data,
                            false,
                        );
                    }
                }
            },
            |connection, deadline, positions| {
                // Per-key refusals are the caller's to see (the key comes back as not stored),
                // so they are logged at debug only: at WARNING a batch writing values that are
                // too large would log once per key and per call.
                for &p in positions {
                    if oversized(p) {
                        let deleted = connection.read(deadline, |buf| {
                            proto::with_error_replies(buf, proto::parse_delete)
                        })?;
                        if let Err(error) = deleted {
                            log::debug!(
                                "{}: delete {:?} failed: {error}",
                                connection.node(),
                                keys[p]
                            );
                        }
                        log::debug!(
                            "set {:?} not sent: {} bytes, over the {limit}-byte limit",
                            keys[p],
                            items[p].2.len()
                        );
                        not_stored.push(p);
                        continue;
                    }
                    let reply = connection.read(deadline, |buf| {
                        proto::with_error_replies(buf, proto::parse_store)
                    })?;
                    match reply {
                        Ok(StoreReply::Stored) => {}
                        Ok(_) => not_stored.push(p),
                        Err(error) => {
                            log::debug!("{}: set {:?} failed: {error}", connection.node(), keys[p]);
                            not_stored.push(p);
                        }
                    }
                }
                Ok(())
            },
        );
        let failed = self.tolerate(failed, Vec::new)?;
        not_stored.extend(self.settle(failed)?);
        not_stored.sort_unstable();
        Ok(not_stored)
    }

    /// Deletes many keys in one round trip; returns how many were there.
    pub fn delete_many(&self, keys: &[&str]) -> Result<usize> {
        let mut deleted = 0;
        let failed = self.fan_out(
            keys,
            |p| keys[p].len() + 10,
            |request, positions| {
                for &p in positions {
                    proto::encode_delete(request, keys[p].as_bytes(), false);
                }
            },
            |connection, deadline, positions| {
                for _ in positions {
                    let reply = connection.read(deadline, |buf| {
                        proto::with_error_replies(buf, proto::parse_delete)
                    })?;
                    if reply == Ok(DeleteReply::Deleted) {
                        deleted += 1;
                    }
                }
                Ok(())
            },
        );
        let failed = self.tolerate(failed, Vec::new)?;
        self.settle(failed)?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_values_come_in_key_order_without_the_forgotten_ones() {
        let large = vec![b'x'; SHARED_VALUE_MAX + 1];
        let mut values = BatchValues::new(4);
        values.keep(2, 16, b"two");
        values.keep(0, 0, &large);
        values.keep(3, 2, b"3");
        values.forget(&[3]);
        let mut seen = Vec::new();
        values
            .try_for_each(|position, flags, data| {
                seen.push((position, flags, data.to_vec()));
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!(seen, vec![(0, 0, large), (2, 16, b"two".to_vec())]);
    }

    #[test]
    fn get_lines_stay_under_the_limit_and_keep_every_key_in_order() {
        let long: Vec<String> = (0..400).map(|i| format!("{i:0>200}")).collect();
        let keys: Vec<&str> = long.iter().map(String::as_str).collect();
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
}
