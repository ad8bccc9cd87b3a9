//! Which keys are hot: a sampled, bounded top-k per node of the keys read most often (reads
//! per second) and of the largest values read.
//!
//! One read in `sample` is looked at (a thread-local draw: no shared counter on the hot path),
//! and only then is the node's table locked. The table of the most read keys is a
//! space-saving summary of [`CAPACITY`] entries: a key not in a full table takes the place of
//! the least counted one and inherits its count, so memory is bounded and every key read more
//! often than `1 / CAPACITY` of the samples is in it. Counts decay by half every [`WINDOW`],
//! so the rates follow the traffic of the last minutes rather than of the process's life.
//! The largest values are kept the same way, by size.
//!
//! Keys are kept as the cache saw them (made, with their prefix and version); they may carry
//! personal data, so nothing here is exported unless asked for.

use crate::sync::lock;
use std::cell::Cell;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept per node, in each table.
pub const CAPACITY: usize = 64;

/// How often counts are halved.
const WINDOW: Duration = Duration::from_secs(60);

thread_local! {
    /// A xorshift state per thread, seeded from the thread's address space.
    static DRAW: Cell<u64> = Cell::new({
        let seed = &DRAW as *const _ as u64;
        seed | 1
    });
}

/// Whether this read is one of the `1 in every` looked at.
#[inline]
fn sampled(every: u32) -> bool {
    match every {
        0 => false,
        1 => true,
        every => DRAW.with(|draw| {
            let mut x = draw.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            draw.set(x);
            x % u64::from(every) == 0
        }),
    }
}

#[derive(Debug, Default)]
struct Table {
    /// Most read keys: (key, sampled reads).
    reads: Vec<(Box<str>, u64)>,
    /// Largest values: (key, bytes).
    sizes: Vec<(Box<str>, usize)>,
    /// Since when the counts run (moved forward as they decay).
    since: Option<Instant>,
}

/// A node's sampled top-k tables.
#[derive(Debug, Default)]
pub(crate) struct HotKeys {
    table: Mutex<Table>,
}

/// A hot key of a node, as read.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HotKey {
    /// The key, as sent (with its prefix and version).
    pub key: String,
    /// Reads per second, estimated from the samples (joined reads included).
    pub reads_per_second: f64,
}

/// One of the largest values read from a node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LargeValue {
    /// The key, as sent.
    pub key: String,
    /// The value's size in bytes, as stored (after compression).
    pub bytes: usize,
}

impl HotKeys {
    /// A read of `key` that found `bytes`, recorded if it is one of the `1 in every` looked at
    /// (`bytes` is asked for then only).
    pub(crate) fn sample(&self, every: u32, key: &str, bytes: impl FnOnce() -> Option<usize>) {
        if sampled(every) {
            self.record(key, bytes());
        }
    }

    /// A sampled read of `key` that found `bytes` (`None`: a miss or a failure).
    pub(crate) fn record(&self, key: &str, bytes: Option<usize>) {
        let mut table = lock(&self.table);
        let now = Instant::now();
        let since = *table.since.get_or_insert(now);
        let elapsed = now.saturating_duration_since(since);
        if elapsed > WINDOW {
            // Halve the counts and the time they cover: the rate stays, old traffic fades.
            for (_, count) in &mut table.reads {
                *count /= 2;
            }
            table.reads.retain(|(_, count)| *count > 0);
            table.since = Some(now.checked_sub(elapsed / 2).unwrap_or(since));
        }
        let full = table.reads.len() >= CAPACITY;
        if let Some((_, count)) = table.reads.iter_mut().find(|(k, _)| &**k == key) {
            *count = count.saturating_add(1);
        } else if !full {
            table.reads.push((key.into(), 1));
        } else if let Some(least) = table.reads.iter_mut().min_by_key(|(_, count)| *count) {
            // Space-saving: the newcomer takes the least counted place, and its count.
            least.0 = key.into();
            least.1 = least.1.saturating_add(1);
        }
        if let Some(bytes) = bytes {
            let full = table.sizes.len() >= CAPACITY;
            if let Some((_, size)) = table.sizes.iter_mut().find(|(k, _)| &**k == key) {
                *size = bytes;
            } else if !full {
                table.sizes.push((key.into(), bytes));
            } else if let Some(smallest) = table
                .sizes
                .iter_mut()
                .min_by_key(|(_, size)| *size)
                .filter(|(_, size)| *size < bytes)
            {
                *smallest = (key.into(), bytes);
            }
        }
    }

    /// The `n` most read keys, most read first; `every` is the sampling rate they were
    /// recorded with.
    pub(crate) fn hottest(&self, n: usize, every: u32) -> Vec<HotKey> {
        let table = lock(&self.table);
        let seconds = table
            .since
            .map(|since| since.elapsed().as_secs_f64())
            .unwrap_or_default()
            .max(1.0);
        let mut reads: Vec<&(Box<str>, u64)> = table.reads.iter().collect();
        reads.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        reads
            .into_iter()
            .take(n)
            .map(|(key, count)| {
                // Counts stay far below 2**53.
                #[allow(clippy::cast_precision_loss)]
                let sampled = *count as f64;
                HotKey {
                    key: key.to_string(),
                    reads_per_second: sampled * f64::from(every.max(1)) / seconds,
                }
            })
            .collect()
    }

    /// The `n` largest values read, largest first.
    pub(crate) fn largest(&self, n: usize) -> Vec<LargeValue> {
        let table = lock(&self.table);
        let mut sizes: Vec<&(Box<str>, usize)> = table.sizes.iter().collect();
        sizes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        sizes
            .into_iter()
            .take(n)
            .map(|(key, bytes)| LargeValue {
                key: key.to_string(),
                bytes: *bytes,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_read_keys_stay_in_a_full_table() {
        let hot = HotKeys::default();
        // Two hot keys among many more cold ones than the table holds.
        for round in 0..200 {
            hot.record("a", Some(10));
            hot.record("b", Some(5_000));
            if round % 2 == 0 {
                hot.record("a", None);
            }
            for cold in 0..5 {
                hot.record(&format!("cold-{round}-{cold}"), Some(1));
            }
        }
        let top: Vec<String> = hot.hottest(2, 1).into_iter().map(|k| k.key).collect();
        assert_eq!(top, ["a", "b"]);
        assert_eq!(hot.largest(1)[0].key, "b");
        assert_eq!(hot.largest(1)[0].bytes, 5_000);
        assert!(lock(&hot.table).reads.len() <= CAPACITY);
    }

    #[test]
    fn sampling_one_in_every_takes_about_that_share() {
        assert!(sampled(1));
        assert!(!sampled(0));
        let taken = (0..100_000).filter(|_| sampled(100)).count();
        assert!((500..2_000).contains(&taken), "{taken}");
    }
}
