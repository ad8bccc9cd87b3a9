//! The key space of `get_or_set`'s leases: each key's lease key, on the key's own node. Below
//! the commands, as deletes and replays end a key's lease along with the key (a computation
//! in flight must not store over a delete: `stampede`, `invalidations`).

use elasticache_proto::{self as proto, MAX_KEY_LEN};

use crate::hash::Murmur3;

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

/// Ends `key`'s `get_or_set` lease ahead of a write or delete of the key, in the same request
/// (`noreply`: no reply to read): a computation in flight then finds its lease gone and does
/// not store its value over the write or delete (see `stampede`).
pub(crate) fn end_lease(key: &str, out: &mut Vec<u8>) {
    proto::encode_delete(out, &lease_key(key), true);
}
