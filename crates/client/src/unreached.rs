//! The keys whose other copy (on a previous owner, or in the `migrate_from` cluster) a write or
//! delete could not delete: that node failed, was marked down, the deadline passed, or the
//! other cluster's membership was not known yet. Such a copy may be stale, so a miss never
//! reads it through ([`Unreached::blocks`]) until a later write deletes it there. Bounded: past
//! [`MAX_UNREACHED`] keys, no key is read through any more (said once in the log).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// The most keys remembered; past it every read-through stops.
pub(crate) const MAX_UNREACHED: usize = 65_536;

/// See the module's documentation.
#[derive(Debug, Default)]
pub(crate) struct Unreached {
    keys: Mutex<HashSet<String>>,
    /// How many keys are remembered: read without the lock on every detour.
    count: AtomicUsize,
    overflowed: AtomicBool,
}

impl Unreached {
    /// Remembers `key`; `true` when that overflowed the bound just now.
    pub(crate) fn note(&self, key: &str) -> bool {
        if self.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if keys.len() >= MAX_UNREACHED {
            keys.clear();
            self.count.store(0, Ordering::Relaxed);
            return !self.overflowed.swap(true, Ordering::Relaxed);
        }
        keys.insert(key.to_owned());
        self.count.store(keys.len(), Ordering::Relaxed);
        false
    }

    /// Forgets `key`: its other copy was deleted.
    pub(crate) fn reached(&self, key: &str) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.remove(key);
        self.count.store(keys.len(), Ordering::Relaxed);
    }

    /// Whether a miss on `key` must not be read through: its other copy may be stale.
    pub(crate) fn blocks(&self, key: &str) -> bool {
        if self.overflowed.load(Ordering::Relaxed) {
            return true;
        }
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.contains(key)
    }

    /// Forgets everything: a new membership has new previous owners.
    pub(crate) fn clear(&self) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.clear();
        self.count.store(0, Ordering::Relaxed);
        self.overflowed.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_blocks_until_reached_and_the_bound_blocks_all() {
        let unreached = Unreached::default();
        assert!(!unreached.blocks("a"));
        assert!(!unreached.note("a"));
        assert!(unreached.blocks("a") && !unreached.blocks("b"));
        unreached.reached("a");
        assert!(!unreached.blocks("a"));
        for i in 0..MAX_UNREACHED {
            assert!(!unreached.note(&i.to_string()));
        }
        assert!(unreached.note("one too many"));
        assert!(unreached.blocks("anything"));
        assert!(!unreached.note("again"), "said once");
        unreached.clear();
        assert!(!unreached.blocks("anything"));
    }
}
