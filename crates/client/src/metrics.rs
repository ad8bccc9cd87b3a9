//! The client's counters: what it did, per node and per client, kept in atomics (no lock, no
//! allocation on the hot path) and read on demand as a [`Metrics`] snapshot.
//!
//! Counters are per process, like the pools: a forked child starts from zero. A node's
//! counters live as long as it is a member; a node removed from the cluster takes its
//! counters with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// Declares the commands counted once each: the [`CommandName`] variant and the name
/// [`NodeMetrics::requests`] uses, in [`COMMANDS`] at the variant's index.
macro_rules! command_names {
    ($($variant:ident => $name:literal,)+) => {
        /// The commands counted, by the names [`NodeMetrics::requests`] uses.
        pub const COMMANDS: [&str; [$($name),+].len()] = [$($name),+];

        /// A command, as counted: its index in [`COMMANDS`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum CommandName {
            $($variant,)+
        }
    };
}

command_names! {
    Get => "get",
    Gets => "gets",
    Set => "set",
    Add => "add",
    Replace => "replace",
    Append => "append",
    Prepend => "prepend",
    Delete => "delete",
    Incr => "incr",
    Decr => "decr",
    Touch => "touch",
    GetMany => "get_many",
    SetMany => "set_many",
    DeleteMany => "delete_many",
    FlushAll => "flush_all",
    Stats => "stats",
    Version => "version",
}

/// The kinds of error counted, by the names [`NodeMetrics::errors`] uses (those of
/// [`ErrorKind`]).
pub const ERROR_KINDS: [&str; 4] = ["client", "server", "timeout", "connection"];

fn error_index(error: &Error) -> usize {
    match error.kind() {
        ErrorKind::Client => 0,
        ErrorKind::Server => 1,
        ErrorKind::Timeout => 2,
        // Connection, and any kind added later.
        _ => 3,
    }
}

/// Upper bounds, in microseconds, of the latency histogram's buckets (a last one, without a
/// bound, takes the rest): from a fast loopback round trip to a full second.
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// A node's counters.
#[derive(Debug, Default)]
pub(crate) struct NodeCounters {
    requests: [AtomicU64; COMMANDS.len()],
    hits: AtomicU64,
    misses: AtomicU64,
    errors: [AtomicU64; ERROR_KINDS.len()],
    marked_down: AtomicU64,
    coalesced: AtomicU64,
    local_hits: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl NodeCounters {
    /// One exchange of `command` with the node.
    pub(crate) fn request(&self, command: CommandName) {
        if let Some(counter) = self.requests.get(command as usize) {
            add(counter, 1);
        }
    }

    /// Keys found and not found by a read.
    pub(crate) fn lookups(&self, hits: usize, misses: usize) {
        add(&self.hits, u64::try_from(hits).unwrap_or(u64::MAX));
        add(&self.misses, u64::try_from(misses).unwrap_or(u64::MAX));
    }

    /// A failed exchange (or one that could not start).
    pub(crate) fn error(&self, error: &Error) {
        if let Some(counter) = self.errors.get(error_index(error)) {
            add(counter, 1);
        }
    }

    /// A read joined another caller's identical read in flight (`flights`).
    pub(crate) fn coalesced(&self) {
        add(&self.coalesced, 1);
    }

    /// A read was served from the local tier instead of the node (`local_tier`).
    pub(crate) fn local_hit(&self) {
        add(&self.local_hits, 1);
    }

    /// The node was marked down.
    pub(crate) fn marked_down(&self) {
        add(&self.marked_down, 1);
    }

    /// How long an exchange took, from its lease to its end.
    pub(crate) fn latency(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        if let Some(counter) = self.latency.get(bucket) {
            add(counter, 1);
        }
        add(&self.latency_sum_us, us);
    }
}

/// The client's own counters.
#[derive(Debug, Default)]
pub(crate) struct ClientCounters {
    pub(crate) discoveries: AtomicU64,
    pub(crate) discovery_failures: AtomicU64,
    pub(crate) membership_changes: AtomicU64,
    pub(crate) ignored_failures: AtomicU64,
    pub(crate) gutter_reads: AtomicU64,
    pub(crate) gutter_writes: AtomicU64,
    pub(crate) warmup_reads: AtomicU64,
    pub(crate) warmup_hits: AtomicU64,
    pub(crate) warmup_copies: AtomicU64,
    pub(crate) migration_reads: AtomicU64,
    pub(crate) migration_hits: AtomicU64,
    pub(crate) migration_copies: AtomicU64,
    pub(crate) detour_deletes: AtomicU64,
    pub(crate) detour_delete_failures: AtomicU64,
}

impl ClientCounters {
    pub(crate) fn count(counter: &AtomicU64) {
        add(counter, 1);
    }

    pub(crate) fn count_many(counter: &AtomicU64, n: usize) {
        add(counter, u64::try_from(n).unwrap_or(u64::MAX));
    }
}

/// One node's counters, as read.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeMetrics {
    /// `host:port`, as the ring hashes it.
    pub node: String,
    /// Exchanges by command ([`COMMANDS`]): a batch counts once per node it touches.
    pub requests: Vec<(&'static str, u64)>,
    /// Keys read and found (a `get_many` of 10 keys finding 4 counts 4).
    pub hits: u64,
    /// Keys read and not found.
    pub misses: u64,
    /// Failures by kind ([`ERROR_KINDS`]): of exchanges, and of calls refused without one
    /// (the node marked down, no connection free in time).
    pub errors: Vec<(&'static str, u64)>,
    /// Times the node was marked down.
    pub marked_down: u64,
    /// Reads that joined another caller's identical read in flight instead of sending their
    /// own (`ClientConfig::coalesce_reads`).
    pub coalesced: u64,
    /// Reads of the node's keys served from the local tier instead (`ClientConfig::local_cache`).
    pub local_hits: u64,
    /// Connections opened to the node.
    pub connections_opened: u64,
    /// Times a caller waited for a pooled connection (every one was in use).
    pub pool_waits: u64,
    /// The latency histogram of exchanges: per bucket, its upper bound in microseconds
    /// (`None` for the last, unbounded one) and how many fell in it (not cumulative).
    pub latency_buckets: Vec<(Option<u64>, u64)>,
    /// The exchanges timed by the histogram, and their total time in microseconds.
    pub latency_count: u64,
    /// The sum of the exchanges' times, in microseconds.
    pub latency_sum_us: u64,
}

/// The client's counters, as read.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// Per node of the current membership, in ring order.
    pub nodes: Vec<NodeMetrics>,
    /// Discoveries run (successful or not).
    pub discoveries: u64,
    /// Discoveries that failed.
    pub discovery_failures: u64,
    /// Times the membership changed (nodes added or removed).
    pub membership_changes: u64,
    /// The cluster configuration version in use (discovery only).
    pub config_version: Option<u64>,
    /// Failures turned into a miss or "not stored" by `ignore_exc`.
    pub ignored_failures: u64,
    /// Keys read on a gutter while their owner could not serve them.
    pub gutter_reads: u64,
    /// Keys written or deleted on a gutter while their owner could not serve them.
    pub gutter_writes: u64,
    /// Undelivered invalidations replayed to their node once it answered.
    pub invalidations_replayed: u64,
    /// Undelivered invalidations not remembered: beyond `max_invalidations`.
    pub invalidations_dropped: u64,
    /// Times a node's undelivered invalidations exceeded `max_invalidations`.
    pub invalidation_overflows: u64,
    /// Nodes flushed before serving again after such an overflow (`invalidation_overflow`).
    pub invalidation_flushes: u64,
    /// Undelivered invalidations waiting now, over the current membership's nodes.
    pub invalidations_waiting: u64,
    /// Keys read from their previous owner after a miss, during a warm-up window.
    pub warmup_reads: u64,
    /// Of those, the keys found there.
    pub warmup_hits: u64,
    /// Of those, the keys copied to their new owner (with their remaining TTL).
    pub warmup_copies: u64,
    /// Keys read through from the cluster of `migrate_from` after a miss.
    pub migration_reads: u64,
    /// Of those, the keys found there.
    pub migration_hits: u64,
    /// Of those, the keys copied to this cluster (with their remaining TTL).
    pub migration_copies: u64,
    /// Keys deleted on a previous owner or the `migrate_from` cluster because they were
    /// written or deleted here (so no stale copy is read or copied back).
    pub detour_deletes: u64,
    /// Keys a write could not delete there (the node failed or was marked down, the deadline
    /// passed, the `migrate_from` membership was not known yet): not read through from there
    /// until a later write deletes them.
    pub detour_delete_failures: u64,
    /// Keys the local tier keeps now (`ClientConfig::local_cache`; 0 without one).
    pub local_keys: u64,
    /// Bytes the local tier keeps now, as bounded by its `max_bytes`.
    pub local_bytes: u64,
}

impl NodeCounters {
    pub(crate) fn read(&self, node: &str, connections_opened: u64, pool_waits: u64) -> NodeMetrics {
        let latency_buckets: Vec<(Option<u64>, u64)> = self
            .latency
            .iter()
            .enumerate()
            .map(|(i, count)| (LATENCY_BOUNDS_US.get(i).copied(), read(count)))
            .collect();
        NodeMetrics {
            node: node.to_owned(),
            requests: COMMANDS
                .iter()
                .zip(&self.requests)
                .map(|(name, count)| (*name, read(count)))
                .collect(),
            hits: read(&self.hits),
            misses: read(&self.misses),
            errors: ERROR_KINDS
                .iter()
                .zip(&self.errors)
                .map(|(name, count)| (*name, read(count)))
                .collect(),
            marked_down: read(&self.marked_down),
            coalesced: read(&self.coalesced),
            local_hits: read(&self.local_hits),
            connections_opened,
            pool_waits,
            latency_count: latency_buckets.iter().map(|(_, n)| n).sum(),
            latency_buckets,
            latency_sum_us: read(&self.latency_sum_us),
        }
    }
}

impl ClientCounters {
    pub(crate) fn read(&self, nodes: Vec<NodeMetrics>, config_version: Option<u64>) -> Metrics {
        Metrics {
            nodes,
            discoveries: read(&self.discoveries),
            discovery_failures: read(&self.discovery_failures),
            membership_changes: read(&self.membership_changes),
            config_version,
            ignored_failures: read(&self.ignored_failures),
            gutter_reads: read(&self.gutter_reads),
            gutter_writes: read(&self.gutter_writes),
            invalidations_replayed: 0,
            invalidations_dropped: 0,
            invalidation_overflows: 0,
            invalidation_flushes: 0,
            invalidations_waiting: 0,
            warmup_reads: read(&self.warmup_reads),
            warmup_hits: read(&self.warmup_hits),
            warmup_copies: read(&self.warmup_copies),
            migration_reads: read(&self.migration_reads),
            migration_hits: read(&self.migration_hits),
            migration_copies: read(&self.migration_copies),
            detour_deletes: read(&self.detour_deletes),
            detour_delete_failures: read(&self.detour_delete_failures),
            local_keys: 0,
            local_bytes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_their_buckets_and_add_up() {
        let counters = NodeCounters::default();
        for us in [10, 50, 51, 999_999, 1_000_001, 5_000_000] {
            counters.latency(Duration::from_micros(us));
        }
        let read = counters.read("n:1", 0, 0);
        let count = |bound: Option<u64>| {
            read.latency_buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, n)| *n)
        };
        assert_eq!(count(Some(50)), Some(2));
        assert_eq!(count(Some(100)), Some(1));
        assert_eq!(count(Some(1_000_000)), Some(1));
        assert_eq!(count(None), Some(2));
        assert_eq!(read.latency_count, 6);
        assert_eq!(
            read.latency_sum_us,
            10 + 50 + 51 + 999_999 + 1_000_001 + 5_000_000
        );
    }
}
