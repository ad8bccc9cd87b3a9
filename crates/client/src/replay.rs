//! The replay of undelivered invalidations (`invalidations`): one thread per node that has
//! some, which probes the node about once a second ([`PROBE_INTERVAL`], whatever
//! `dead_timeout` says) by deleting the keys (and their `get_or_set` leases) there; once every
//! one is delivered, the node serves its keys again at once. Past `max_invalidations` keys,
//! the keys beyond are dropped, counted, and reported once (an event, one log line), and the
//! `invalidation_overflow` policy applies: by default the node is emptied (`flush_all`)
//! before it serves again. The threads are parked around `fork()` with the discovery
//! refreshers (`park_background_threads`), and the replays still needed start again on the
//! cluster's next operation.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use elasticache_proto as proto;

use crate::config::{ClientConfig, Overflow};
use crate::error::{Error, Result};
use crate::lease_keys::lease_key;
use crate::notify::Event;
use crate::topology::Node;

/// How often a node with invalidations waiting is probed (by replaying them).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Keys deleted per round trip of a replay.
const REPLAY_BATCH: usize = 256;

/// A replay thread of this process, for [`park`].
#[derive(Debug)]
struct Replayer {
    /// The fork generation of the process that started it.
    generation: u64,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Every replay thread started in this process (and, in a forked child, its parent's: those
/// threads do not exist here and are never joined).
static REPLAYERS: Mutex<Vec<Replayer>> = Mutex::new(Vec::new());

/// How many parkings are in force: no replay thread starts while any is.
static PARKED: AtomicUsize = AtomicUsize::new(0);

/// Counts the parkings ended: after one, each cluster starts the replays its nodes still
/// need ([`Replays::resume`]).
static UNPARKED: AtomicU64 = AtomicU64::new(0);

/// Stops this process's replay threads (joined: each finishes the probe it is in, bounded by
/// `timeout`) and starts none until [`unpark`]; what they had not delivered stays remembered.
/// Part of `park_background_threads`, around `fork()`.
pub(crate) fn park() {
    PARKED.fetch_add(1, Ordering::AcqRel);
    let generation = crate::fork::current();
    let running = std::mem::take(&mut *REPLAYERS.lock().unwrap_or_else(PoisonError::into_inner));
    let mut mine = Vec::new();
    for replayer in running {
        if replayer.generation == generation {
            replayer.stop.store(true, Ordering::Release);
            replayer.thread.thread().unpark();
            mine.push(replayer.thread);
        } else {
            // A parent's thread: it does not exist in this process.
            std::mem::forget(replayer);
        }
    }
    for thread in mine {
        if thread.join().is_err() {
            log::error!("a replay thread panicked");
        }
    }
}

/// Ends a [`park`]: the replays still needed start again on each cluster's next operation.
pub(crate) fn unpark() {
    PARKED.fetch_sub(1, Ordering::AcqRel);
    UNPARKED.fetch_add(1, Ordering::AcqRel);
}

/// The replays of one cluster: its settings (for the probes' connections) and counters.
#[derive(Debug)]
pub(crate) struct Replays {
    config: ClientConfig,
    /// The [`UNPARKED`] count this cluster last resumed its replays at.
    resumed: AtomicU64,
    replayed: AtomicU64,
    dropped: AtomicU64,
    overflows: AtomicU64,
    flushes: AtomicU64,
}

/// The replay counters, as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReplayCounts {
    pub(crate) replayed: u64,
    pub(crate) dropped: u64,
    pub(crate) overflows: u64,
    pub(crate) flushes: u64,
}

impl Replays {
    pub(crate) fn new(config: ClientConfig) -> Self {
        Replays {
            config,
            resumed: AtomicU64::new(UNPARKED.load(Ordering::Acquire)),
            replayed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        }
    }

    pub(crate) fn counts(&self) -> ReplayCounts {
        ReplayCounts {
            replayed: self.replayed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            overflows: self.overflows.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
        }
    }

    /// Remembers that `keys` may hold values on `node` that are no longer true; the node
    /// serves no reads until they are deleted there (a replay thread starts if none runs).
    pub(crate) fn remember<'k>(
        self: &Arc<Self>,
        node: &Arc<Node>,
        keys: impl IntoIterator<Item = &'k str>,
    ) {
        if self.config.max_invalidations == 0 {
            // Off: nothing is remembered, nothing replayed (stale reads after an outage
            // accepted).
            return;
        }
        let outcome = node
            .invalidations
            .remember(keys, self.config.max_invalidations);
        if outcome.dropped > 0 {
            self.dropped.fetch_add(outcome.dropped, Ordering::Relaxed);
        }
        if outcome.overflowed_now {
            self.overflowed(node);
        }
        if outcome.start {
            self.start(node);
        }
    }

    /// Starts `node`'s replay thread (its invalidations say none runs), unless threads are
    /// parked: then the first operation after the parking starts it ([`Replays::resume`]).
    fn start(self: &Arc<Self>, node: &Arc<Node>) {
        if PARKED.load(Ordering::Acquire) > 0 {
            node.invalidations.replayer_stopped();
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (replays, held, stopped) = (Arc::clone(self), Arc::clone(node), Arc::clone(&stop));
        let spawned = std::thread::Builder::new()
            .name("elasticache-replay".to_owned())
            .spawn(move || replays.run(&held, &stopped));
        match spawned {
            Ok(thread) => {
                let mut running = REPLAYERS.lock().unwrap_or_else(PoisonError::into_inner);
                running.retain(|replayer| !replayer.thread.is_finished());
                running.push(Replayer {
                    generation: crate::fork::current(),
                    stop,
                    thread,
                });
            }
            Err(error) => {
                // The next invalidation tries again; meanwhile the node stays in the gutter.
                log::error!("cannot start a thread to replay invalidations: {error}");
                node.invalidations.replayer_stopped();
            }
        }
    }

    /// After a parking of the background threads (`fork()`), starts the replays that `nodes`
    /// still need: one atomic load otherwise.
    pub(crate) fn resume(self: &Arc<Self>, nodes: &[Arc<Node>]) {
        let unparked = UNPARKED.load(Ordering::Acquire);
        // A load first: every operation routes through here, and a write to a counter the
        // whole process shares would bounce its cache line between cores each time.
        if self.resumed.load(Ordering::Acquire) == unparked
            || self.resumed.swap(unparked, Ordering::AcqRel) == unparked
        {
            return;
        }
        for node in nodes {
            if node.invalidations.pending() {
                self.remember(node, []);
            }
        }
    }

    /// Reports an overflow: once per episode (one log line, one event, counted).
    fn overflowed(&self, node: &Node) {
        self.overflows.fetch_add(1, Ordering::Relaxed);
        let name = &node.address.name;
        let (bound, policy) = (
            self.config.max_invalidations,
            self.config.invalidation_overflow,
        );
        let action = match policy {
            Overflow::Flush => "it will be flushed before it serves reads again",
            Overflow::Ignore => "keys beyond the bound may be read stale until they expire",
        };
        if let Some(level) = self.config.failure_log.level {
            log::log!(
                target: &self.config.failure_log.target,
                level,
                "{name}: more than {bound} invalidations could not be delivered \
                 (max_invalidations); {action}"
            );
        }
        if let Some(sink) = &self.config.events {
            sink.send(&Event::InvalidationsOverflowed {
                node: name.clone(),
                kept: bound,
                flush: policy == Overflow::Flush,
            });
        }
    }

    /// The replay thread of `node`: delivers its invalidations, probing about once a second
    /// until they are all delivered (or the node left the membership everywhere).
    fn run(&self, node: &Arc<Node>, stop: &AtomicBool) {
        loop {
            if stop.load(Ordering::Acquire) {
                // Parked (a fork): what is left stays remembered, and is replayed after it.
                node.invalidations.replayer_stopped();
                return;
            }
            if Arc::strong_count(node) <= 1 {
                // Nobody routes to it any more: what it holds is nobody's concern.
                node.invalidations.replayer_stopped();
                return;
            }
            let (keys, overflowed) = node.invalidations.waiting_now();
            let flush = overflowed && self.config.invalidation_overflow == Overflow::Flush;
            let started = Instant::now();
            match self.deliver(node, &keys, flush) {
                Ok(()) => {
                    let delivered = u64::try_from(keys.len()).unwrap_or(u64::MAX);
                    self.replayed.fetch_add(delivered, Ordering::Relaxed);
                    if flush {
                        self.flushes.fetch_add(1, Ordering::Relaxed);
                    }
                    if node.invalidations.delivered(&keys, overflowed) {
                        log::info!(
                            target: &self.config.failure_log.target,
                            "{}: {} undelivered invalidations replayed{}",
                            node.address.name,
                            keys.len(),
                            if flush { " (node flushed)" } else { "" }
                        );
                        // It answered: used again at once, whatever `dead_timeout` said.
                        node.record_answer(&self.config);
                        return;
                    }
                }
                Err(error) => {
                    log::debug!(
                        "{}: invalidations not replayed yet: {error}",
                        node.address.name
                    );
                    // Until the next probe, or until parked.
                    let next = started + PROBE_INTERVAL;
                    while !stop.load(Ordering::Acquire) {
                        let now = Instant::now();
                        if now >= next {
                            break;
                        }
                        std::thread::park_timeout(next - now);
                    }
                }
            }
        }
    }

    /// Deletes `keys` (and their leases) on `node`, or empties it with `flush`, on a connection
    /// of its pool whether or not it is marked down.
    fn deliver(&self, node: &Node, keys: &[String], flush: bool) -> Result<()> {
        let deadline = self.config.timeout.map(|t| Instant::now() + t);
        let mut connection = node
            .pool
            .lease(&node.address, &self.config, deadline)?
            .into_connection()
            .ok_or_else(|| Error::Closed {
                node: node.address.name.clone(),
            })?;
        let mut request = Vec::new();
        let outcome = (|| {
            if flush {
                proto::encode_flush_all(&mut request, None, false);
                connection.send(&request, deadline)?;
                return connection.read(deadline, proto::parse_ok);
            }
            for chunk in keys.chunks(REPLAY_BATCH) {
                request.clear();
                for key in chunk {
                    // The lease too: a computation in flight must not store over the delete.
                    proto::encode_delete(&mut request, &lease_key(key), true);
                    proto::encode_delete(&mut request, key.as_bytes(), false);
                }
                connection.send(&request, deadline)?;
                for _ in chunk {
                    let reply = connection.read(deadline, |buf| {
                        proto::with_error_replies(buf, proto::parse_delete)
                    })?;
                    reply.map_err(|error| Error::ServerFailure {
                        node: node.address.name.clone(),
                        message: error.to_string(),
                    })?;
                }
            }
            Ok(())
        })();
        match outcome {
            Ok(()) => node.pool.put_back(connection),
            Err(_) => {
                drop(connection);
                node.pool.discard();
            }
        }
        outcome
    }
}
