//! The warm-up window after a membership change (design section 17; mcrouter's WarmUpRoute):
//! the membership before the change, kept for `warmup_window` so that a miss on a key whose
//! owner changed can read its previous owner (`detour`), and when the window closes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::topology::Topology;

/// An open window: the membership before the change, until when it is read.
#[derive(Debug)]
struct Open {
    previous: Arc<Topology>,
    until: Instant,
}

/// The warm-up window of one cluster: none, or one open (a change during a window opens a new
/// one from the membership just replaced: the owner a key had last).
#[derive(Debug, Default)]
pub(crate) struct Window {
    open: ArcSwapOption<Open>,
}

/// What [`Window::previous`] found.
#[derive(Debug)]
pub(crate) enum Previous {
    /// No window is open.
    Closed,
    /// The window is open: the membership before the change.
    Open(Arc<Topology>),
    /// The window just closed (this caller saw it first: it reports it).
    JustClosed,
}

impl Window {
    /// Opens a window of `length` over `previous`, the membership being replaced; not for a
    /// first membership (no key had an owner) nor when warm-up is off (`length` zero).
    /// Whether it opened.
    pub(crate) fn open(&self, previous: &Arc<Topology>, length: Duration) -> bool {
        if length.is_zero() || previous.nodes().is_empty() {
            return false;
        }
        self.open.store(Some(Arc::new(Open {
            previous: Arc::clone(previous),
            until: Instant::now() + length,
        })));
        true
    }

    /// The membership a moved key's previous owner is found in, while the window is open.
    pub(crate) fn previous(&self) -> Previous {
        let guard = self.open.load();
        let Some(open) = guard.as_ref() else {
            return Previous::Closed;
        };
        if Instant::now() < open.until {
            return Previous::Open(Arc::clone(&open.previous));
        }
        // Closed: the first caller to take it away reports it.
        let taken = self.open.compare_and_swap(&*guard, None);
        match &*taken {
            Some(was) if Arc::ptr_eq(was, open) => Previous::JustClosed,
            _ => Previous::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::NodeAddress;
    use crate::config::ClientConfig;

    fn topology(names: &[&str]) -> Arc<Topology> {
        let nodes: Vec<NodeAddress> = names
            .iter()
            .map(|n| NodeAddress::parse(n))
            .collect::<crate::error::Result<_>>()
            .unwrap_or_default();
        Arc::new(Topology::new(&nodes, &ClientConfig::default(), None, None))
    }

    #[test]
    fn a_window_opens_over_a_membership_and_closes_once() {
        let window = Window::default();
        assert!(!window.open(&topology(&[]), Duration::from_secs(60)));
        assert!(!window.open(&topology(&["a:1"]), Duration::ZERO));
        assert!(matches!(window.previous(), Previous::Closed));
        assert!(window.open(&topology(&["a:1"]), Duration::from_secs(60)));
        assert!(matches!(window.previous(), Previous::Open(t) if t.nodes().len() == 1));
        assert!(window.open(&topology(&["a:1"]), Duration::from_nanos(1)));
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(window.previous(), Previous::JustClosed));
        assert!(matches!(window.previous(), Previous::Closed));
    }
}
