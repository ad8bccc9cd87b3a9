//! The local tier (`ClientConfig::local_cache`): the values of the keys this process reads
//! most, kept in its own memory for at most `ttl`, so that a hot key's reads stop reaching
//! its node.
//!
//! A key is admitted once it was read `min_reads_per_second` times within one second (the
//! counts are of a hash of the key, in a table of bounded size that starts over each
//! second: two keys that collide are counted together, which only admits one a little
//! early). Only values are kept, never misses.
//!
//! Staleness is bounded by `ttl` from the moment the read that brought the value was sent:
//! a value another process writes is seen at most `ttl` after its write ended. This
//! process's own writes are seen at once: a write (any command that changes a key, or
//! `flush_all`) that ends removes the key's entry, and a read sent before a write ended never
//! puts what it read here (every write moves an epoch forward; a read admits only under the
//! epoch it started in). That is coarse, any write refusing the admissions of reads in
//! flight at the time, and cheap: the next read of a hot key admits it again.
//!
//! Memory is bounded by `max_keys` and `max_bytes` (the keys' and values' bytes, each value
//! copied out of the buffer it was read into); past either, the entries admitted first go
//! first. Entries expire in the order they were admitted (every one lives `ttl`), so one queue
//! serves both.
//!
//! A tier is its process's own: a forked child makes a fresh one (`Cluster::local_tier`), as it
//! makes fresh pools, rather than lock one a thread of its parent may have held at the fork.

use std::collections::hash_map::{DefaultHasher, Entry as Slot};
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::sync::lock;
use crate::values::Item;

/// How long the reads of a key are counted before the counts start over.
const WINDOW: Duration = Duration::from_secs(1);

/// The bytes an entry is counted for besides its key and value (its map and queue slots).
const ENTRY_OVERHEAD: usize = 64;

/// What the local tier keeps, and for how long (`ClientConfig::local_cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalCache {
    /// The longest a value is served from process memory, from when it was read.
    pub ttl: Duration,
    /// The most keys kept.
    pub max_keys: usize,
    /// The most bytes kept (keys, values and a fixed overhead per entry).
    pub max_bytes: usize,
    /// Reads within one second that make a key hot enough to keep (0 or 1: every key read).
    pub min_reads_per_second: u32,
}

impl Default for LocalCache {
    fn default() -> Self {
        LocalCache {
            ttl: Duration::from_secs(1),
            max_keys: 1000,
            max_bytes: 16 * 1024 * 1024,
            min_reads_per_second: 10,
        }
    }
}

/// What a read finds in the tier.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The key's value, served from process memory.
    Hit(Item),
    /// Not kept, and hot enough to be: the read's value is offered to [`LocalTier::admit`].
    Admit,
    /// Not kept, and not (yet) hot enough.
    Pass,
}

#[derive(Debug)]
struct Kept {
    item: Item,
    expires: Instant,
    /// Its admission, to tell it from a later one of the same key in the queue.
    admission: u64,
    bytes: usize,
}

#[derive(Debug)]
struct State {
    entries: HashMap<Arc<str>, Kept>,
    /// Admissions in order (so also in order of expiry): the key and its admission.
    order: VecDeque<(Arc<str>, u64)>,
    bytes: usize,
    admissions: u64,
    /// Reads per key hash in the current window.
    counts: HashMap<u64, u32>,
    window: Instant,
}

/// The tier: see the module's documentation.
#[derive(Debug)]
pub(crate) struct LocalTier {
    config: LocalCache,
    /// The process it was made in (`fork`): a child makes its own, and never locks one a
    /// thread of its parent may have held at the fork.
    generation: u64,
    state: Mutex<State>,
    /// Writes ended so far: a read admits only if none ended since it started.
    epoch: AtomicU64,
}

/// The tier's size, as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalTierSize {
    /// Keys kept.
    pub keys: usize,
    /// Bytes kept (as bounded by `max_bytes`).
    pub bytes: usize,
}

fn hash(key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

impl LocalTier {
    pub(crate) fn new(config: LocalCache) -> Self {
        LocalTier {
            config,
            generation: crate::fork::stamp(),
            state: Mutex::new(State {
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                admissions: 0,
                counts: HashMap::new(),
                window: Instant::now(),
            }),
            epoch: AtomicU64::new(0),
        }
    }

    /// Whether it was made in this process (not inherited through `fork()`).
    pub(crate) fn belongs_to_this_process(&self) -> bool {
        self.generation == crate::fork::current()
    }

    /// What it keeps, and for how long.
    pub(crate) fn config(&self) -> LocalCache {
        self.config
    }

    /// The epoch a read starts in, for [`LocalTier::admit`].
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The most keys counted per window: enough to find every key that could be kept.
    fn counted(&self) -> usize {
        self.config.max_keys.saturating_mul(8).max(1024)
    }

    /// A read of `key` at `now`: its value if kept and fresh; else whether it is hot enough
    /// to keep (the read is counted).
    pub(crate) fn lookup(&self, key: &str, now: Instant) -> Lookup {
        let mut state = lock(&self.state);
        if let Some(kept) = state.entries.get(key) {
            if kept.expires > now {
                return Lookup::Hit(kept.item.clone());
            }
            if let Some(kept) = state.entries.remove(key) {
                state.bytes = state.bytes.saturating_sub(kept.bytes);
            }
        }
        if self.config.min_reads_per_second <= 1 {
            return Lookup::Admit;
        }
        if now.saturating_duration_since(state.window) >= WINDOW {
            state.counts.clear();
            state.window = now;
        }
        let limit = self.counted();
        let full = state.counts.len() >= limit;
        let count = match state.counts.entry(hash(key)) {
            Slot::Occupied(mut slot) => {
                let count = slot.get_mut();
                *count = count.saturating_add(1);
                *count
            }
            // A full table counts only the keys it has: a key first read once it filled up
            // waits for the next window.
            Slot::Vacant(_) if full => return Lookup::Pass,
            Slot::Vacant(slot) => *slot.insert(1),
        };
        if count >= self.config.min_reads_per_second {
            Lookup::Admit
        } else {
            Lookup::Pass
        }
    }

    /// Keeps `item` as `key`'s value, read by a request sent at `sent` in `epoch`: not if a
    /// write ended since (the value may be older than it), nor if it would not fit.
    pub(crate) fn admit(&self, key: &str, item: &Item, sent: Instant, epoch: u64) {
        let bytes = key
            .len()
            .saturating_add(item.data.len())
            .saturating_add(ENTRY_OVERHEAD);
        if bytes > self.config.max_bytes || self.config.max_keys == 0 {
            return;
        }
        let Some(expires) = sent.checked_add(self.config.ttl) else {
            return;
        };
        let now = Instant::now();
        if expires <= now {
            return;
        }
        let mut state = lock(&self.state);
        // Under the lock, as writes move it: a write that ended after the check below removes
        // what is kept here.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        let key: Arc<str> = Arc::from(key);
        state.admissions = state.admissions.wrapping_add(1);
        let admission = state.admissions;
        let kept = Kept {
            // Its own copy: a small value read in a batch shares the batch's buffer, which
            // the tier must not keep alive.
            item: Item {
                flags: item.flags,
                data: Bytes::copy_from_slice(&item.data),
                cas: None,
            },
            expires,
            admission,
            bytes,
        };
        if let Some(old) = state.entries.insert(Arc::clone(&key), kept) {
            state.bytes = state.bytes.saturating_sub(old.bytes);
        }
        state.bytes = state.bytes.saturating_add(bytes);
        state.order.push_back((key, admission));
        Self::evict(&mut state, &self.config, now);
    }

    /// Drops the entries expired at `now`, then the oldest while over a bound; the queue's
    /// entries for keys dropped or kept again meanwhile go with them.
    fn evict(state: &mut State, config: &LocalCache, now: Instant) {
        while let Some((key, admission)) = state.order.front().cloned() {
            let current = state
                .entries
                .get(&key)
                .filter(|kept| kept.admission == admission);
            let over = state.entries.len() > config.max_keys || state.bytes > config.max_bytes;
            match current {
                // Stale in the queue (dropped, or admitted again later): only its slot goes.
                None => {}
                Some(kept) if kept.expires <= now || over => {
                    let bytes = kept.bytes;
                    state.entries.remove(&key);
                    state.bytes = state.bytes.saturating_sub(bytes);
                }
                Some(_) => break,
            }
            state.order.pop_front();
        }
        // Keys written and admitted again over and over leave stale slots behind the live
        // front: keep the queue within a bound of the entries it serves.
        if state.order.len() > state.entries.len().saturating_mul(2).saturating_add(64) {
            let State { entries, order, .. } = state;
            order.retain(|(key, admission)| {
                entries
                    .get(key)
                    .is_some_and(|kept| kept.admission == *admission)
            });
        }
    }

    /// A write of `keys` ended: their entries go, and reads in flight admit nothing. One
    /// lock for a batch's keys.
    pub(crate) fn forget<'k>(&self, keys: impl IntoIterator<Item = &'k str>) {
        let mut keys = keys.into_iter().peekable();
        // A read's exchange writes nothing: no lock, and admissions go on.
        if keys.peek().is_none() {
            return;
        }
        let mut state = lock(&self.state);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for key in keys {
            if let Some(kept) = state.entries.remove(key) {
                state.bytes = state.bytes.saturating_sub(kept.bytes);
            }
        }
    }

    /// A write of every key ended (`flush_all`): every entry goes.
    pub(crate) fn forget_all(&self) {
        let mut state = lock(&self.state);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        state.entries.clear();
        state.order.clear();
        state.bytes = 0;
    }

    /// What is kept now.
    pub(crate) fn size(&self) -> LocalTierSize {
        let state = lock(&self.state);
        LocalTierSize {
            keys: state.entries.len(),
            bytes: state.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(data: &'static [u8]) -> Item {
        Item {
            flags: 0,
            data: Bytes::from_static(data),
            cas: None,
        }
    }

    fn tier(min_reads_per_second: u32) -> LocalTier {
        LocalTier::new(LocalCache {
            ttl: Duration::from_secs(60),
            max_keys: 3,
            max_bytes: 1024,
            min_reads_per_second,
        })
    }

    fn hit(tier: &LocalTier, key: &str) -> Option<Bytes> {
        match tier.lookup(key, Instant::now()) {
            Lookup::Hit(item) => Some(item.data),
            _ => None,
        }
    }

    #[test]
    fn a_key_is_kept_once_read_often_enough() {
        let tier = tier(3);
        let now = Instant::now();
        assert!(matches!(tier.lookup("k", now), Lookup::Pass));
        assert!(matches!(tier.lookup("k", now), Lookup::Pass));
        assert!(matches!(tier.lookup("k", now), Lookup::Admit));
        tier.admit("k", &item(b"v"), now, tier.epoch());
        assert_eq!(hit(&tier, "k").as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn a_write_removes_the_key_and_refuses_reads_sent_before_it() {
        let tier = tier(0);
        let sent = Instant::now();
        let epoch = tier.epoch();
        tier.admit("k", &item(b"old"), sent, epoch);
        tier.forget(["k"]);
        assert_eq!(hit(&tier, "k"), None, "the write removed it");
        // A read sent before the write ended lands after it: what it read may be older.
        tier.admit("k", &item(b"old"), sent, epoch);
        assert_eq!(hit(&tier, "k"), None);
        tier.admit("k", &item(b"new"), Instant::now(), tier.epoch());
        assert_eq!(hit(&tier, "k").as_deref(), Some(&b"new"[..]));
        tier.forget_all();
        assert_eq!(hit(&tier, "k"), None);
        assert_eq!(tier.size(), LocalTierSize::default());
    }

    #[test]
    fn a_value_expires_ttl_after_its_read_was_sent() {
        let tier = LocalTier::new(LocalCache {
            ttl: Duration::from_secs(5),
            min_reads_per_second: 0,
            ..LocalCache::default()
        });
        let sent = Instant::now();
        tier.admit("k", &item(b"v"), sent, tier.epoch());
        let before = sent + Duration::from_secs(4);
        assert!(matches!(tier.lookup("k", before), Lookup::Hit(_)));
        let after = sent + Duration::from_secs(5);
        assert!(!matches!(tier.lookup("k", after), Lookup::Hit(_)));
        assert_eq!(tier.size().keys, 0, "an expired entry found is dropped");
        // A read sent longer than ttl ago brings nothing to keep.
        let long_ago = Instant::now().checked_sub(Duration::from_secs(6));
        if let Some(long_ago) = long_ago {
            tier.admit("k", &item(b"v"), long_ago, tier.epoch());
            assert_eq!(tier.size().keys, 0);
        }
    }

    #[test]
    fn keys_and_bytes_stay_within_their_bounds_the_first_admitted_going_first() {
        let tier = tier(0);
        let now = Instant::now();
        for key in ["a", "b", "c", "d"] {
            tier.admit(key, &item(b"v"), now, tier.epoch());
        }
        assert_eq!(tier.size().keys, 3);
        assert_eq!(hit(&tier, "a"), None, "the first admitted went first");
        assert!(hit(&tier, "d").is_some());
        // 1024 bytes: one value of 900 leaves room for nothing else.
        static BIG: [u8; 900] = [7; 900];
        tier.admit("big", &item(&BIG), now, tier.epoch());
        let size = tier.size();
        assert!(size.bytes <= 1024, "{size:?}");
        assert_eq!(size.keys, 1);
        assert!(hit(&tier, "big").is_some());
        // A value larger than the whole bound is never kept.
        static HUGE: [u8; 2048] = [7; 2048];
        tier.admit("huge", &item(&HUGE), now, tier.epoch());
        assert_eq!(hit(&tier, "huge"), None);
        assert!(hit(&tier, "big").is_some());
    }

    #[test]
    fn rewriting_one_key_over_and_over_keeps_the_queue_bounded() {
        let tier = tier(0);
        for _ in 0..10_000 {
            tier.admit("k", &item(b"v"), Instant::now(), tier.epoch());
            tier.forget(["k"]);
        }
        assert!(lock(&tier.state).order.len() <= 64 + 2);
    }
}
