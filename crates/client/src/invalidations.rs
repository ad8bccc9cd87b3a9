//! Invalidations that could not reach a node (a `delete` or a write that failed, timed out, or
//! went to a gutter while the node could not serve), remembered per node and bounded, until
//! they are replayed (`replay`). While any wait, the node serves no reads: its keys go to
//! the gutter (`gutter`).

use crate::sync::lock;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// One node's invalidations waiting to be delivered.
#[derive(Debug, Default)]
pub(crate) struct Invalidations {
    /// Whether any wait (or an overflow's flush): read by every routing, lock-free.
    pending: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    keys: HashSet<String>,
    /// Keys were dropped past the bound since the last delivery.
    overflowed: bool,
    /// A replay thread runs for the node.
    replaying: bool,
}

impl Invalidations {
    /// Whether invalidations wait to be delivered: the node must not serve reads.
    #[inline]
    pub(crate) fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// How many wait now.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().keys.len()
    }

    /// Remembers `keys` (at most `bound` in all); the node serves no reads until they are
    /// delivered ([`Invalidations::delivered`]).
    pub(crate) fn remember<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
        bound: usize,
    ) -> Remembered {
        let mut state = self.lock();
        let outcome = remember(&mut state, keys, bound);
        if !state.keys.is_empty() || state.overflowed {
            self.pending.store(true, Ordering::Release);
        }
        outcome
    }

    /// What waits to be delivered: the keys, and whether some were dropped past the bound.
    pub(crate) fn waiting_now(&self) -> (Vec<String>, bool) {
        let state = self.lock();
        (state.keys.iter().cloned().collect(), state.overflowed)
    }

    /// `keys` were delivered (and with `overflowed`, the overflow dealt with); whether nothing
    /// else waits, in which case the node serves reads again and its replayer stops.
    pub(crate) fn delivered(&self, keys: &[String], overflowed: bool) -> bool {
        let mut state = self.lock();
        for key in keys {
            state.keys.remove(key);
        }
        if overflowed {
            state.overflowed = false;
        }
        let done = state.keys.is_empty() && !state.overflowed;
        if done {
            state.replaying = false;
            self.pending.store(false, Ordering::Release);
        }
        done
    }

    /// The replayer stopped without delivering (it could not start, or the node left).
    pub(crate) fn replayer_stopped(&self) {
        self.lock().replaying = false;
    }
}

/// What an [`Invalidations::remember`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Remembered {
    /// Keys not kept: past the bound.
    pub(crate) dropped: u64,
    /// The bound was exceeded now, for the first time since the last delivery.
    pub(crate) overflowed_now: bool,
    /// No replayer ran for the node: one must start.
    pub(crate) start: bool,
}

/// Adds `keys` to `state`, within `bound`.
fn remember<'k>(
    state: &mut State,
    keys: impl IntoIterator<Item = &'k str>,
    bound: usize,
) -> Remembered {
    let mut outcome = Remembered::default();
    for key in keys {
        if state.keys.contains(key) {
            continue;
        }
        if state.keys.len() >= bound {
            outcome.dropped += 1;
            if !state.overflowed {
                state.overflowed = true;
                outcome.overflowed_now = true;
            }
            continue;
        }
        state.keys.insert(key.to_owned());
    }
    if !state.replaying && (!state.keys.is_empty() || state.overflowed) {
        state.replaying = true;
        outcome.start = true;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_once_within_the_bound_and_overflow_is_reported_once() {
        let mut state = State::default();
        let first = remember(&mut state, ["a", "b", "a"], 3);
        assert_eq!(
            first,
            Remembered {
                dropped: 0,
                overflowed_now: false,
                start: true
            }
        );
        let second = remember(&mut state, ["c", "d", "e"], 3);
        assert_eq!(
            second,
            Remembered {
                dropped: 2,
                overflowed_now: true,
                start: false
            },
            "a replay already runs"
        );
        let third = remember(&mut state, ["f", "a"], 3);
        assert_eq!(third.dropped, 1);
        assert!(!third.overflowed_now, "reported once per episode");
        assert_eq!(state.keys.len(), 3);
    }
}
