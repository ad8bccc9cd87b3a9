//! Key placement identical to pymemcache's `HashClient`: rendezvous hashing over murmur3.
//!
//! Each node scores `murmur3_32(node_name + "-" + key)`; the highest score wins and a tie goes
//! to the greater node name. pymemcache feeds murmur3 the low 8 bits of each code point rather
//! than UTF-8, and so does this module, so a mixed fleet agrees on every key.

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

/// The rendezvous ring over a set of node names, with each name's hash prefix precomputed.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    // (hasher primed with "name-", name), in the order the nodes were given.
    nodes: Vec<(Murmur3, String)>,
}

impl Ring {
    /// Builds the ring for these node names (`"host:port"`).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let nodes = names
            .into_iter()
            .map(|name| {
                let mut prefix = Murmur3::default();
                prefix.write_str(name);
                prefix.push(b'-');
                (prefix, name.to_owned())
            })
            .collect();
        Ring { nodes }
    }

    /// How many nodes the ring holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the ring holds no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The index (in construction order) of the node that owns `key`, or `None` on an empty ring.
    pub fn node_for(&self, key: &str) -> Option<usize> {
        if self.nodes.len() == 1 {
            return Some(0);
        }
        let mut winner: Option<(u32, usize)> = None;
        for (index, (prefix, name)) in self.nodes.iter().enumerate() {
            let mut hasher = *prefix;
            hasher.write_str(key);
            let score = hasher.finish();
            winner = match winner {
                Some((best, best_index))
                    if best > score || (best == score && self.nodes[best_index].1 >= *name) =>
                {
                    Some((best, best_index))
                }
                _ => Some((score, index)),
            };
        }
        winner.map(|(_, index)| index)
    }
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
    }
}
