//! Events an application may want to hear of (membership changes, nodes marked down and
//! answering again, failed discoveries), handed to an [`EventSink`] the caller provides.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Something that happened to the cluster, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The set of nodes changed (the first discovery included).
    MembershipChanged {
        /// Nodes now in the ring that were not (`host:port`).
        added: Vec<String>,
        /// Nodes no longer in the ring.
        removed: Vec<String>,
        /// The cluster configuration version, with discovery.
        version: Option<u64>,
    },
    /// A node was marked down after failures in a row.
    NodeDown {
        /// The node (`host:port`).
        node: String,
        /// The failures in a row that marked it down.
        failures: u32,
        /// How long it is left alone.
        retry_in: Duration,
    },
    /// A node marked down answered again.
    NodeUp {
        /// The node (`host:port`).
        node: String,
    },
    /// More invalidations of a node could not be delivered than `max_invalidations` keeps:
    /// the keys beyond may hold values deleted meanwhile.
    InvalidationsOverflowed {
        /// The node (`host:port`).
        node: String,
        /// How many are kept (and replayed).
        kept: usize,
        /// Whether the node is flushed before it serves reads again (`invalidation_overflow`).
        flush: bool,
    },
    /// A membership change opened a warm-up window: for `window`, a miss on a key whose owner
    /// changed reads its previous owner and copies what it finds (`warmup_window`).
    WarmupStarted {
        /// How long the window lasts.
        window: Duration,
    },
    /// The warm-up window closed: misses go to the keys' owners alone again.
    WarmupEnded,
    /// A discovery failed (the last good membership stays in use).
    DiscoveryFailed {
        /// The configuration endpoint.
        endpoint: String,
        /// Why.
        error: String,
    },
}

/// Where a client sends its [`Event`]s: called on the thread where the event happened, so it
/// must return quickly (hand the event over rather than act on it there).
#[derive(Clone)]
pub struct EventSink(Arc<dyn Fn(&Event) + Send + Sync>);

impl EventSink {
    /// A sink calling `send` with each event.
    pub fn new(send: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        EventSink(Arc::new(send))
    }

    pub(crate) fn send(&self, event: &Event) {
        (self.0)(event);
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventSink")
    }
}
