//! Key placement: one [`Ring`] per membership, with the placement of the library whose fleet
//! the cache must share ([`Hashing`]).
//!
//! - [`Hashing::Pymemcache`] (the default) is pymemcache's `HashClient`: each node scores
//!   `murmur3_32(node_name + "-" + key)`; the highest score wins and a tie goes to the greater
//!   node name. pymemcache feeds murmur3 the low 8 bits of each code point rather than UTF-8,
//!   and so does this module.
//! - [`Hashing::Pylibmc`] is libmemcached's default distribution, as pylibmc (and Django's
//!   `PyLibMCCache`) use it: the one-at-a-time hash of the key's UTF-8 bytes, modulo the number
//!   of servers, in the order they were listed.
//! - [`Hashing::Ketama`] is libmemcached's ketama continuum (pylibmc's `ketama` behavior): 100
//!   points per server, each the one-at-a-time hash of `"host-i"` (`"host:port-i"` when the
//!   port is not 11211); a key goes to the first point at or after its hash, wrapping round.
//!
//! libmemcached keeps a server listed twice as two servers (it counts in the modulus and gets
//! its own points); pymemcache keeps one. Each strategy does as its library does, and always
//! answers with the index of the node's first listing.

use std::collections::HashMap;

use crate::address::{NodeAddress, DEFAULT_PORT};

/// Which library's key placement a client follows, so that a fleet moving from it keeps its
/// cache warm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Hashing {
    /// pymemcache's `HashClient` (rendezvous over murmur3), as Django's `PyMemcacheCache`.
    #[default]
    Pymemcache,
    /// libmemcached's default (modula over one-at-a-time), as Django's `PyLibMCCache`.
    Pylibmc,
    /// libmemcached's ketama continuum, as pylibmc with `behaviors={"ketama": True}`.
    Ketama,
}

/// Murmur3 x86 32-bit, seed 0, fed incrementally so that a node's name can be hashed once and
/// each key only adds its own bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Murmur3 {
    state: u32,
    tail: u32,
    tail_len: u32,
    total_len: u32,
}

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

fn mix_block(state: u32, block: u32) -> u32 {
    let k = block.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (state ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

impl Murmur3 {
    /// Adds one byte.
    #[inline]
    pub fn push(&mut self, byte: u8) {
        self.tail |= u32::from(byte) << (8 * self.tail_len);
        self.tail_len += 1;
        self.total_len = self.total_len.wrapping_add(1);
        if self.tail_len == 4 {
            self.state = mix_block(self.state, self.tail);
            self.tail = 0;
            self.tail_len = 0;
        }
    }

    /// Adds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        // Complete a partial block byte by byte, then take whole blocks at once.
        while self.tail_len != 0 {
            let Some((&first, after)) = rest.split_first() else {
                return;
            };
            self.push(first);
            rest = after;
        }
        let blocks = rest.chunks_exact(4);
        let remainder = blocks.remainder();
        for block in blocks {
            if let &[a, b, c, d] = block {
                self.state = mix_block(self.state, u32::from_le_bytes([a, b, c, d]));
                self.total_len = self.total_len.wrapping_add(4);
            }
        }
        for &byte in remainder {
            self.push(byte);
        }
    }

    /// Adds a string the way pymemcache does: the low 8 bits of each code point.
    pub fn write_str(&mut self, text: &str) {
        if text.is_ascii() {
            self.write(text.as_bytes());
        } else {
            for c in text.chars() {
                // Truncation to the low byte is pymemcache's behaviour, which placement must match.
                self.push((u32::from(c) & 0xff) as u8);
            }
        }
    }

    /// The hash of everything added so far.
    pub fn finish(&self) -> u32 {
        let mut h = self.state;
        if self.tail_len > 0 {
            h ^= self.tail.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        }
        h ^= self.total_len;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

/// `murmur3_32` of a string as pymemcache computes it.
pub fn murmur3_32(text: &str) -> u32 {
    let mut hasher = Murmur3::default();
    hasher.write_str(text);
    hasher.finish()
}

/// libmemcached's default hash, "one-at-a-time" (Bob Jenkins), as its `hashkit_one_at_a_time`
/// computes it on x86-64 and other platforms where C's `char` is signed: each byte from 0x80
/// up is sign-extended before it is added. (Where `char` is unsigned, as on ARM64 Linux,
/// libmemcached hashes non-ASCII keys differently; see the README.)
pub fn one_at_a_time(bytes: &[u8]) -> u32 {
    let mut value: u32 = 0;
    for &byte in bytes {
        // The byte as libmemcached reads it: a signed char widened to 32 bits.
        value = value.wrapping_add(i32::from(byte as i8) as u32);
        value = value.wrapping_add(value << 10);
        value ^= value >> 6;
    }
    value = value.wrapping_add(value << 3);
    value ^= value >> 11;
    value.wrapping_add(value << 15)
}

/// Points each server gets on libmemcached's (unweighted) ketama continuum.
const KETAMA_POINTS: u32 = 100;

/// The ring of one membership: which node owns each key.
#[derive(Debug, Clone)]
pub struct Ring {
    placement: Placement,
    /// How many distinct nodes (by name) the ring places keys on.
    nodes: usize,
}

#[derive(Debug, Clone)]
enum Placement {
    /// (hasher primed with "name-", name) per node, in the order the nodes were given.
    Rendezvous(Vec<(Murmur3, String)>),
    /// The node of each listed server, duplicates included.
    Modula(Vec<usize>),
    /// The continuum: (point, node), sorted by point and then by listing.
    Ketama(Vec<(u32, usize)>),
}

impl Default for Ring {
    fn default() -> Self {
        Ring::new([])
    }
}

impl Ring {
    /// Builds pymemcache's rendezvous ring for these node names (`"host:port"`).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let nodes: Vec<(Murmur3, String)> = names
            .into_iter()
            .map(|name| {
                let mut prefix = Murmur3::default();
                prefix.write_str(name);
                prefix.push(b'-');
                (prefix, name.to_owned())
            })
            .collect();
        Ring {
            nodes: nodes.len(),
            placement: Placement::Rendezvous(nodes),
        }
    }

    /// Builds the ring `hashing` asks for over `addresses` in the order given. Indices answered
    /// by [`Ring::node_for`] count distinct names (`NodeAddress::name`) in order of first
    /// listing, as [`crate::Topology`] keeps its nodes.
    pub fn with_hashing(hashing: Hashing, addresses: &[NodeAddress]) -> Self {
        let mut first_listing: HashMap<&str, usize> = HashMap::new();
        let mut distinct: Vec<&NodeAddress> = Vec::new();
        // The node index of each listed address.
        let slots: Vec<usize> = addresses
            .iter()
            .map(|address| {
                *first_listing
                    .entry(address.name.as_str())
                    .or_insert_with(|| {
                        distinct.push(address);
                        distinct.len() - 1
                    })
            })
            .collect();
        let placement = match hashing {
            Hashing::Pymemcache => {
                return Ring::new(distinct.iter().map(|a| a.name.as_str()));
            }
            Hashing::Pylibmc => Placement::Modula(slots),
            Hashing::Ketama => {
                let mut points: Vec<(u32, usize, usize)> = Vec::new();
                for (listing, (address, &node)) in addresses.iter().zip(&slots).enumerate() {
                    for point in 0..KETAMA_POINTS {
                        let label = if address.port == DEFAULT_PORT {
                            format!("{}-{point}", address.host)
                        } else {
                            format!("{}:{}-{point}", address.host, address.port)
                        };
                        points.push((one_at_a_time(label.as_bytes()), listing, node));
                    }
                }
                // libmemcached sorts by point, then by the server's position in its list.
                points.sort_unstable_by_key(|&(point, listing, _)| (point, listing));
                Placement::Ketama(
                    points
                        .into_iter()
                        .map(|(point, _, node)| (point, node))
                        .collect(),
                )
            }
        };
        Ring {
            placement,
            nodes: distinct.len(),
        }
    }

    /// How many nodes the ring holds.
    pub fn len(&self) -> usize {
        self.nodes
    }

    /// Whether the ring holds no node.
    pub fn is_empty(&self) -> bool {
        self.nodes == 0
    }

    /// The index (in construction order, duplicates counted once) of the node that owns
    /// `key`, or `None` on an empty ring.
    pub fn node_for(&self, key: &str) -> Option<usize> {
        match self.nodes {
            0 => return None,
            1 => return Some(0),
            _ => {}
        }
        match &self.placement {
            Placement::Rendezvous(nodes) => rendezvous(nodes, key),
            Placement::Modula(slots) => {
                let count = u32::try_from(slots.len()).ok()?;
                let slot = one_at_a_time(key.as_bytes()).checked_rem(count)?;
                slots.get(usize::try_from(slot).ok()?).copied()
            }
            Placement::Ketama(points) => {
                let hash = one_at_a_time(key.as_bytes());
                let at = points.partition_point(|&(point, _)| point < hash);
                // Past the last point, the continuum wraps round to the first.
                points.get(at).or(points.first()).map(|&(_, node)| node)
            }
        }
    }
}

/// The rendezvous winner for `key`: the highest score, a tie to the greater name.
fn rendezvous(nodes: &[(Murmur3, String)], key: &str) -> Option<usize> {
    let mut winner: Option<(u32, usize)> = None;
    for (index, (prefix, name)) in nodes.iter().enumerate() {
        let mut hasher = *prefix;
        hasher.write_str(key);
        let score = hasher.finish();
        winner = match winner {
            Some((best, best_index))
                if best > score
                    || (best == score && nodes.get(best_index).is_some_and(|(_, b)| b >= name)) =>
            {
                Some((best, best_index))
            }
            _ => Some((score, index)),
        };
    }
    winner.map(|(_, index)| index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(murmur3_32(""), 0);
        assert_eq!(murmur3_32("a"), 1_009_084_850);
        assert_eq!(murmur3_32("hello"), 613_153_351);
        assert_eq!(murmur3_32("é"), 1_153_881_266);
    }

    #[test]
    fn writing_in_pieces_hashes_like_writing_at_once() {
        let text = b"10.0.0.1:11211-:1:some-longer-key";
        let mut whole = Murmur3::default();
        whole.write(text);
        for cut in 0..=text.len() {
            let mut pieces = Murmur3::default();
            pieces.write(&text[..cut]);
            pieces.write(&text[cut..]);
            assert_eq!(pieces.finish(), whole.finish(), "cut at {cut}");
        }
    }

    #[test]
    fn empty_and_single_node_rings() {
        assert_eq!(Ring::new([]).node_for("k"), None);
        assert_eq!(Ring::new(["a:1"]).node_for("k"), Some(0));
        for hashing in [Hashing::Pymemcache, Hashing::Pylibmc, Hashing::Ketama] {
            assert_eq!(Ring::with_hashing(hashing, &[]).node_for("k"), None);
            let one = [NodeAddress::new("a", 1)];
            assert_eq!(Ring::with_hashing(hashing, &one).node_for("k"), Some(0));
        }
    }

    #[test]
    fn one_at_a_time_known_values() {
        // libmemcached's own test fixtures (test/fixtures/hashes.hpp) for its first keys.
        assert_eq!(one_at_a_time(b""), 0);
        assert_eq!(one_at_a_time(b"apple"), 2_297_466_611);
        assert_eq!(one_at_a_time(b"beat"), 3_902_465_932);
        assert_eq!(one_at_a_time(b"carrot"), 469_785_835);
    }

    #[test]
    fn one_at_a_time_sign_extends_high_bytes() {
        // "é" in UTF-8 is c3 a9: each is added as 0xffffffc3, 0xffffffa9, not 0xc3, 0xa9.
        let mut expected: u32 = 0;
        for byte in [0xffff_ffc3_u32, 0xffff_ffa9] {
            expected = expected.wrapping_add(byte);
            expected = expected.wrapping_add(expected << 10);
            expected ^= expected >> 6;
        }
        expected = expected.wrapping_add(expected << 3);
        expected ^= expected >> 11;
        expected = expected.wrapping_add(expected << 15);
        assert_eq!(one_at_a_time("é".as_bytes()), expected);
    }

    #[test]
    fn a_duplicate_listing_counts_for_modula_only() {
        let a = NodeAddress::new("10.0.0.1", 11211);
        let b = NodeAddress::new("10.0.0.2", 11211);
        let twice = [a.clone(), b.clone(), a.clone()];
        let once = [a, b];
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        let places = |hashing: Hashing, addresses: &[NodeAddress]| -> Vec<Option<usize>> {
            let ring = Ring::with_hashing(hashing, addresses);
            assert_eq!(ring.len(), 2);
            keys.iter().map(|k| ring.node_for(k)).collect()
        };
        // libmemcached's modulus counts the second listing; its ketama points are the first
        // listing's, so they change nothing; pymemcache keeps one of each name.
        let modula = places(Hashing::Pylibmc, &twice);
        assert!(modula.iter().all(|p| matches!(p, Some(0 | 1))));
        assert_ne!(modula, places(Hashing::Pylibmc, &once));
        for hashing in [Hashing::Ketama, Hashing::Pymemcache] {
            assert_eq!(places(hashing, &twice), places(hashing, &once));
        }
    }
}
