//! Values over the item size (`large_values`): the last stage of a value's encoding, after
//! the serializer, the compressor and the signature. It takes the final `(flags, bytes)`
//! and stores them as chunks plus an index item under the value's own key; reading the
//! index, it joins the chunks back into those `(flags, bytes)`. No I/O here: the batch
//! commands (`batch`) send the chunks in a round of their own, before the index (writes) or
//! after it (reads).
//!
//! The index holds a random generation, which every chunk key contains: an overwrite writes
//! new chunks under new keys before it replaces the index, so a reader reads the whole old
//! value or the whole new one, never a mix, and the old chunks simply expire. A chunk that is
//! missing or of the wrong length, or a checksum that does not match, reads as a miss.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use elasticache_proto::MAX_KEY_LEN;

use crate::hash::Murmur3;

/// The flag bit of an index item (the only bit its flags have; the value's own flags are in
/// the index). pymemcache and pylibmc use the bits 1, 2, 4, 8 and 16; neither looks at this
/// one, so they read an index as the raw bytes of a small binary record (see
/// [`Index::encode`]), never as a pickle or a number.
pub const LARGE_FLAG: u32 = 1 << 24;

/// The largest chunk, whatever `max_value_len` allows: it fits memcached's default item
/// size (1 MiB, which counts the item's header and key too).
pub const MAX_CHUNK_LEN: usize = 1024 * 1024 - 1024;

/// The default bound on a whole large value (`max_large_value_len`).
pub const DEFAULT_MAX_LARGE_VALUE_LEN: usize = 64 * 1024 * 1024;

/// The start of every index item: a format name and version.
const MAGIC: &[u8; 5] = b"ECLV\x01";

/// An index item's length.
const INDEX_LEN: usize = MAGIC.len() + 8 + 4 + 8 + 4 + 4;

/// What a client with `large_values` on does with values over the item size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LargeValues {
    /// Values longer than this are chunked, in chunks of this length (the last one shorter).
    pub chunk_len: usize,
    /// The most a whole value may be: longer ones are refused (`Error::ValueTooLarge`)
    /// before anything is sent, and an index announcing one reads as a miss.
    pub max_len: usize,
}

impl LargeValues {
    /// Chunks of `max_value_len` (at most [`MAX_CHUNK_LEN`]), values of at most `max_len`.
    pub fn new(max_value_len: usize, max_len: usize) -> Self {
        LargeValues {
            chunk_len: max_value_len.clamp(1, MAX_CHUNK_LEN),
            max_len,
        }
    }

    /// Whether a value of `len` bytes is stored as chunks.
    pub fn chunks(&self, len: usize) -> bool {
        len > self.chunk_len
    }
}

/// A large value's index item, as stored under its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Index {
    /// Random, new on every write: the chunk keys contain it.
    pub generation: u64,
    /// The value's own flags (its format, for the layers above).
    pub flags: u32,
    /// The value's length.
    pub total: usize,
    /// Every chunk's length but the last one's.
    pub chunk_len: usize,
    /// Murmur3 of the whole value.
    pub checksum: u32,
}

impl Index {
    /// The index of `data` (a value with `flags`), cut in chunks of `chunk_len`, with a new
    /// generation.
    pub fn of(flags: u32, data: &[u8], chunk_len: usize) -> Self {
        Index {
            generation: new_generation(),
            flags,
            total: data.len(),
            chunk_len: chunk_len.max(1),
            checksum: checksum(data),
        }
    }

    /// How many chunks the value has.
    pub fn count(&self) -> usize {
        self.total.div_ceil(self.chunk_len.max(1))
    }

    /// The range of chunk `chunk` in the whole value.
    pub fn range(&self, chunk: usize) -> std::ops::Range<usize> {
        let start = chunk.saturating_mul(self.chunk_len).min(self.total);
        start..start.saturating_add(self.chunk_len).min(self.total)
    }

    /// The stored form: `ECLV`, a version byte (1), then little-endian: generation (u64),
    /// flags (u32), total length (u64), chunk length (u32), checksum (u32; murmur3 x86 32-bit,
    /// seed 0, of the whole value). 33 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&u64::try_from(self.total).unwrap_or(u64::MAX).to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(self.chunk_len)
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(&self.checksum.to_le_bytes());
        out
    }

    /// An index read back; `None` for anything that is not one this client can use.
    pub fn parse(data: &[u8]) -> Option<Self> {
        let rest = data.strip_prefix(MAGIC.as_slice())?;
        if rest.len() != INDEX_LEN - MAGIC.len() {
            return None;
        }
        let (generation, rest) = rest.split_first_chunk::<8>()?;
        let (flags, rest) = rest.split_first_chunk::<4>()?;
        let (total, rest) = rest.split_first_chunk::<8>()?;
        let (chunk_len, rest) = rest.split_first_chunk::<4>()?;
        let (checksum, _) = rest.split_first_chunk::<4>()?;
        let index = Index {
            generation: u64::from_le_bytes(*generation),
            flags: u32::from_le_bytes(*flags),
            total: usize::try_from(u64::from_le_bytes(*total)).ok()?,
            chunk_len: usize::try_from(u32::from_le_bytes(*chunk_len)).ok()?,
            checksum: u32::from_le_bytes(*checksum),
        };
        (index.chunk_len > 0).then_some(index)
    }
}

/// The key of chunk `chunk` of the value under `key` at `generation`: the key itself when
/// the result stays within memcached's 250 bytes, else a hash of it (the generation keeps
/// chunk keys apart either way). Keys are checked before they get here, so it has no space
/// or control character.
pub(crate) fn chunk_key(key: &str, generation: u64, chunk: usize) -> String {
    let suffix = format!(":large:{generation:016x}:{chunk}");
    if key.len() + suffix.len() <= MAX_KEY_LEN {
        return format!("{key}{suffix}");
    }
    let mut first = Murmur3::default();
    first.write(b"1:");
    first.write(key.as_bytes());
    let mut second = Murmur3::default();
    second.write(b"2:");
    second.write(key.as_bytes());
    format!("{:08x}{:08x}{suffix}", first.finish(), second.finish())
}

/// The checksum an index holds.
pub(crate) fn checksum(data: &[u8]) -> u32 {
    let mut hash = Murmur3::default();
    hash.write(data);
    hash.finish()
}

/// A generation no other write is likely to draw: the standard library's per-process random
/// keys, over a counter, the time and the process id (a forked child shares its parent's
/// keys, not its id).
fn new_generation() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A large value being read: its index, and its chunks as they come.
#[derive(Debug)]
pub(crate) struct Assembly {
    /// The position of its key in the batch.
    pub position: usize,
    pub index: Index,
    data: Vec<u8>,
    /// Per chunk: whether it came.
    got: Vec<bool>,
}

impl Assembly {
    /// A value of `index` to read for `position`, or `None` when the index is not one this
    /// reader can take: longer than `max_len`, or chunks longer than `max_value_len`
    /// (the reply parser would refuse them).
    pub fn new(
        position: usize,
        key: &str,
        index: Index,
        max_len: usize,
        max_value_len: usize,
    ) -> Option<Self> {
        if index.total > max_len || index.chunk_len > max_value_len {
            log::warn!(
                "the large value of {key:?} ({} bytes in chunks of {}) is over this client's \
                 limits ({max_len} bytes, chunks of {max_value_len}): read as a miss",
                index.total,
                index.chunk_len
            );
            return None;
        }
        Some(Assembly {
            position,
            index,
            data: vec![0; index.total],
            got: vec![false; index.count()],
        })
    }

    /// Takes chunk `chunk`'s bytes; `false` when they are not its length (a chunk of another
    /// write cannot be, as its key names the generation; this guards against anything else).
    pub fn take(&mut self, chunk: usize, bytes: &[u8]) -> bool {
        let range = self.index.range(chunk);
        match (self.data.get_mut(range), self.got.get_mut(chunk)) {
            (Some(slot), Some(got)) if slot.len() == bytes.len() => {
                slot.copy_from_slice(bytes);
                *got = true;
                true
            }
            _ => false,
        }
    }

    /// Whether chunk `chunk` came.
    pub fn has(&self, chunk: usize) -> bool {
        self.got.get(chunk).copied().unwrap_or(false)
    }

    /// The whole value's flags and bytes, when every chunk came and the checksum matches;
    /// otherwise `None`, logged: a miss.
    pub fn finish(self, key: &str) -> Option<(u32, Vec<u8>)> {
        let missing = self.got.iter().filter(|got| !**got).count();
        if missing > 0 {
            log::warn!(
                "the large value of {key:?} lacks {missing} of its {} chunks (evicted, expired \
                 or overwritten meanwhile): read as a miss",
                self.got.len()
            );
            return None;
        }
        if checksum(&self.data) != self.index.checksum {
            log::warn!("the large value of {key:?} does not match its checksum: read as a miss");
            return None;
        }
        Some((self.index.flags, self.data))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_index_reads_back_and_anything_else_is_refused() {
        let data = vec![7_u8; 2500];
        let index = Index::of(16, &data, 1000);
        let encoded = index.encode();
        assert_eq!(encoded.len(), INDEX_LEN);
        assert_eq!(Index::parse(&encoded), Some(index));
        assert_eq!(index.count(), 3);
        assert_eq!(
            (index.range(0), index.range(2), index.range(3)),
            (0..1000, 2000..2500, 2500..2500)
        );
        assert_eq!(Index::parse(&encoded[..INDEX_LEN - 1]), None);
        assert_eq!(Index::parse(b"pickled bytes"), None);
        let mut later = encoded.clone();
        later[4] = 2;
        assert_eq!(Index::parse(&later), None, "another version is not read");
        assert_ne!(Index::of(16, &data, 1000).generation, index.generation);
    }

    #[test]
    fn chunk_keys_stay_valid_memcached_keys() {
        let short = chunk_key("site:1:page", 0xab, 3);
        assert_eq!(short, "site:1:page:large:00000000000000ab:3");
        let long = "k".repeat(250);
        let hashed = chunk_key(&long, u64::MAX, 1_000_000);
        assert!(hashed.len() <= MAX_KEY_LEN, "{}", hashed.len());
        assert!(elasticache_proto::validate_key(hashed.as_bytes()).is_ok());
        assert_ne!(hashed, chunk_key(&"j".repeat(250), u64::MAX, 1_000_000));
    }

    #[test]
    fn a_value_joins_only_whole_and_unaltered() {
        let data: Vec<u8> = (0..2500_u32).map(|i| (i % 251) as u8).collect();
        let index = Index::of(1, &data, 1000);
        let whole = |skip: Option<usize>, alter: bool| {
            let mut assembly = Assembly::new(0, "k", index, 10_000, 1000).unwrap();
            for chunk in 0..index.count() {
                if Some(chunk) == skip {
                    continue;
                }
                let mut bytes = data[index.range(chunk)].to_vec();
                if alter && chunk == 1 {
                    bytes[0] ^= 1;
                }
                assert!(assembly.take(chunk, &bytes));
            }
            assembly.finish("k")
        };
        assert_eq!(whole(None, false), Some((1, data.clone())));
        assert_eq!(whole(Some(1), false), None);
        assert_eq!(whole(None, true), None);
        let mut assembly = Assembly::new(0, "k", index, 10_000, 1000).unwrap();
        assert!(!assembly.take(0, b"short"), "a chunk of the wrong length");
        assert!(Assembly::new(0, "k", index, 2499, 1000).is_none());
        assert!(Assembly::new(0, "k", index, 10_000, 999).is_none());
    }
}
