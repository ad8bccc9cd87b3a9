//! Down-node marking: a node that keeps failing is left alone for a while, failing fast.
//!
//! The ring never changes while a node is down: its keys may be served by a gutter meanwhile
//! (`gutter`, with short TTLs), and what could not be deleted on it is replayed before it
//! serves reads again (`invalidations`), so no value written elsewhere is read back stale.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::config::FailureLog;
use crate::failure_log::NodeLog;

/// A process-wide origin, so an instant fits in an atomic as nanoseconds since it.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn nanos_since_origin(at: Instant) -> u64 {
    u64::try_from(at.duration_since(origin()).as_nanos()).unwrap_or(u64::MAX)
}

/// Failure bookkeeping for one node, read lock-free on every operation.
#[derive(Debug, Default)]
pub struct Health {
    failures_in_a_row: AtomicU32,
    /// Nanoseconds since `origin()` until which the node is left alone; 0 means never.
    down_until: AtomicU64,
    /// Whether the failures in a row reached `retry_attempts` (not just a short pause).
    marked_down: AtomicBool,
    /// What has been logged about the node's failures; armed whenever `failures_in_a_row` is
    /// not 0, so a success reads one flag.
    pub(crate) log: NodeLog,
    /// The words of the last failure counted against the node (a timeout, a refused or reset
    /// connection...): why it is marked down, for the status page. Kept after a recovery.
    last_failure: Mutex<Option<String>>,
}

impl Health {
    /// The health of the node `name`, its failures logged as `settings` says.
    pub(crate) fn new(name: &str, settings: &FailureLog) -> Self {
        Health {
            log: NodeLog::new(name, settings),
            ..Health::default()
        }
    }

    /// How long the node is still to be left alone, if it is.
    pub fn down_for(&self) -> Option<Duration> {
        let until = self.down_until.load(Ordering::Relaxed);
        if until == 0 {
            return None;
        }
        let now = nanos_since_origin(Instant::now());
        (now < until).then(|| Duration::from_nanos(until - now))
    }

    /// Records a clean exchange: one atomic load unless the node was failing, then the
    /// failure count is cleared and the recovery logged. Whether the node had been marked
    /// down (it answers again).
    pub fn record_success(&self) -> bool {
        if !self.log.is_failing() {
            return false;
        }
        self.failures_in_a_row.store(0, Ordering::Relaxed);
        self.down_until.store(0, Ordering::Relaxed);
        self.log.success(Instant::now());
        self.marked_down.swap(false, Ordering::Relaxed)
    }

    /// The last failure counted against the node, in words (`None`: it never failed).
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keeps `failure` as the last failure (only failures pay for it).
    pub(crate) fn set_last_failure(&self, failure: String) {
        *self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(failure);
    }

    /// Failures in a row so far.
    pub(crate) fn failures_in_a_row(&self) -> u32 {
        self.failures_in_a_row.load(Ordering::Relaxed)
    }

    /// Records a failure; returns whether the node is now marked down for `dead_timeout`.
    pub fn record_failure(
        &self,
        retry_attempts: u32,
        retry_timeout: Duration,
        dead_timeout: Duration,
    ) -> bool {
        // Before counting: the next success must see the flag to clear the count.
        self.log.arm();
        let failures = self
            .failures_in_a_row
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let dead = failures >= retry_attempts.max(1);
        if dead {
            self.marked_down.store(true, Ordering::Relaxed);
        }
        let pause = if dead { dead_timeout } else { retry_timeout };
        if !pause.is_zero() {
            self.down_until.store(
                nanos_since_origin(Instant::now() + pause),
                Ordering::Relaxed,
            );
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_down_after_the_configured_failures_and_clears_on_success() {
        let health = Health::default();
        assert_eq!(health.down_for(), None);
        let second = Duration::from_secs(1);
        let minute = Duration::from_secs(60);
        assert!(!health.record_failure(2, second, minute));
        assert!(health.down_for().is_some_and(|d| d <= second));
        assert!(health.record_failure(2, second, minute));
        assert!(health.down_for().is_some_and(|d| d > second && d <= minute));
        assert!(
            health.record_success(),
            "it answers again after being marked down"
        );
        assert_eq!(health.down_for(), None);
        assert!(!health.record_failure(2, second, minute));
        assert!(
            !health.record_success(),
            "a short pause is not being marked down"
        );
    }

    #[test]
    fn the_last_failure_is_kept_in_words() {
        let health = Health::default();
        assert_eq!(health.last_failure(), None);
        health.set_last_failure("10.0.0.5:11211 did not answer within 1 s".to_owned());
        health.set_last_failure("cannot connect to 10.0.0.5:11211: refused".to_owned());
        assert_eq!(
            health.last_failure().as_deref(),
            Some("cannot connect to 10.0.0.5:11211: refused")
        );
    }

    #[test]
    fn zero_pauses_never_mark_down() {
        let health = Health::default();
        health.record_failure(1, Duration::ZERO, Duration::ZERO);
        assert_eq!(health.down_for(), None);
    }
}
