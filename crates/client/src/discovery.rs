//! Auto Discovery: asking the configuration endpoint for the membership, applying it, and the
//! background refresher that keeps following it.
//!
//! At most one discovery runs at a time per process (on-demand ones and the refresher's are
//! one flight; callers that find one in the air wait for it, but never past their own
//! deadline). Failed attempts are rate-limited: with no membership at all, retried at a steady
//! pace of about once a second (the cache must come back soon after the endpoint does); with a
//! membership in use, with backoff up to the interval. A failure never empties the ring: the
//! last good membership stays in use. A connection refused or reset by a node wakes the
//! refresher early (at most once a second), so a node removed by a scale-in leaves the ring
//! within about a second. All of this state is per process (stamped with the fork generation,
//! `fork`), so a forked child never waits on a lock its parent's threads held at fork time, and
//! the refreshers of a process can be parked around `fork()` ([`park_background_threads`]).

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use elasticache_proto::{
    parse_cluster_config, ClusterConfig, CONFIG_GET_CLUSTER, LEGACY_GET_CLUSTER,
};

use crate::address::NodeAddress;
use crate::config::{ClientConfig, DiscoveryConfig, DiscoveryMode};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::sync::lock;
use crate::tls::Tls;
use crate::topology::Topology;

/// The least time between two failed discovery attempts.
const RETRY_FLOOR: Duration = Duration::from_secs(1);

/// The least time between two early discoveries asked for by failing nodes.
const NUDGE_FLOOR: Duration = Duration::from_secs(1);

/// What a configuration endpoint said.
#[derive(Debug)]
pub(crate) enum Found {
    Cluster(ClusterConfig),
    /// It answers like plain memcached: `ERROR` to `config get cluster`, no legacy key.
    NotElastiCache,
}

/// Asks `endpoint` for the cluster configuration, on a connection of its own (resolving the
/// endpoint's name anew: it is a CNAME that moves), over `tls` when given.
pub(crate) fn fetch(
    endpoint: &NodeAddress,
    config: &ClientConfig,
    tls: Option<&Tls>,
) -> Result<Found> {
    let deadline = config.timeout.map(|t| Instant::now() + t);
    let mut connection = Connection::connect(endpoint, config, tls, deadline)?;
    connection.send(CONFIG_GET_CLUSTER, deadline)?;
    let reply = match connection.read(deadline, parse_cluster_config) {
        Err(Error::UnknownCommand { .. }) => {
            // Engines before 1.4.14 keep the configuration under a key instead. A fresh
            // connection: the error reply leaves this one's stream in an unknown state.
            let mut connection = Connection::connect(endpoint, config, tls, deadline)?;
            connection.send(LEGACY_GET_CLUSTER, deadline)?;
            match connection.read(deadline, parse_cluster_config) {
                Err(Error::UnknownCommand { .. }) => None,
                other => other?,
            }
        }
        other => other?,
    };
    Ok(reply.map_or(Found::NotElastiCache, Found::Cluster))
}

/// The node addresses of a configuration: by IP when asked to and known, else by hostname; in
/// the reply's order, which libmemcached's modula placement (`Hashing::Pylibmc`) counts: it is
/// the order django-elasticache hands pylibmc and AWS's cluster client for libmemcached keeps.
pub(crate) fn addresses(config: &ClusterConfig, use_vpc_ip_address: bool) -> Vec<NodeAddress> {
    config
        .nodes
        .iter()
        .map(|node| {
            if use_vpc_ip_address && !node.ip.is_empty() {
                // Connect to the IP, verify TLS certificates against the hostname.
                NodeAddress {
                    tls_name: Some(node.hostname.clone()),
                    ..NodeAddress::new(&node.ip, node.port)
                }
            } else {
                NodeAddress::new(&node.hostname, node.port)
            }
        })
        .collect()
}

/// Why a refresher's sleep ended.
#[derive(Debug, PartialEq, Eq)]
enum Wake {
    Stop,
    /// A failing node asked for a discovery now.
    Nudge,
    Timeout,
}

#[derive(Debug, Default)]
struct Requests {
    stop: bool,
    nudge: bool,
}

/// What a refresher sleeps on: a stop request (client dropped, threads parked for a fork) or
/// a nudge to discover early.
#[derive(Debug, Default)]
struct Signal {
    requests: Mutex<Requests>,
    wake: Condvar,
    /// A copy of `requests.stop`, read without the lock on every operation.
    stopped: AtomicBool,
}

impl Signal {
    fn stop(&self) {
        lock(&self.requests).stop = true;
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_all();
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn nudge(&self) {
        lock(&self.requests).nudge = true;
        self.wake.notify_all();
    }

    /// Sleeps for `duration` unless stopped or nudged first.
    fn sleep(&self, duration: Duration) -> Wake {
        let requests = lock(&self.requests);
        let (mut requests, _) = self
            .wake
            .wait_timeout_while(requests, duration, |r| !r.stop && !r.nudge)
            .unwrap_or_else(PoisonError::into_inner);
        if requests.stop {
            Wake::Stop
        } else if std::mem::take(&mut requests.nudge) {
            Wake::Nudge
        } else {
            Wake::Timeout
        }
    }
}

/// A refresher thread of some process, registered so that it can be parked before `fork()`.
#[derive(Debug)]
struct Running {
    /// The fork generation of the process that started it.
    generation: u64,
    signal: Arc<Signal>,
    thread: JoinHandle<()>,
}

/// Every refresher started in this process (and, in a forked child, its parent's: those
/// threads do not exist here and are never joined).
static REFRESHERS: Mutex<Vec<Running>> = Mutex::new(Vec::new());

/// How many [`ParkedThreads`] guards are alive: no refresher starts while any is.
static PARKED: AtomicUsize = AtomicUsize::new(0);

/// Keeps this process's background threads parked until dropped (see
/// [`park_background_threads`]).
#[derive(Debug)]
#[must_use = "the background threads stay parked only while this guard lives"]
pub struct ParkedThreads {
    _private: (),
}

impl Drop for ParkedThreads {
    fn drop(&mut self) {
        PARKED.fetch_sub(1, Ordering::AcqRel);
        crate::replay::unpark();
    }
}

/// Stops every discovery refresher thread of this process, and every thread replaying
/// undelivered invalidations, joins them, and keeps new ones from starting until the returned
/// guard is dropped; then each client starts its refresher (and the replays still needed)
/// again on its next operation.
///
/// For programs that `fork()` after using a client (a pre-forking server, multiprocessing):
/// forking a process with threads leaves the child with locks those threads may have held.
/// Call this just before `fork()` and drop the guard after it, in the parent and in the child
/// (the child inherits a copy of the guard). A refresher in the middle of a discovery finishes
/// it first, so this takes at most `connect_timeout` + `timeout` (longer when they are `None`).
/// The Python package does this for you, through `os.register_at_fork`.
pub fn park_background_threads() -> ParkedThreads {
    PARKED.fetch_add(1, Ordering::AcqRel);
    let generation = crate::fork::current();
    let running = std::mem::take(&mut *lock(&REFRESHERS));
    let mut mine = Vec::new();
    for refresher in running {
        if refresher.generation == generation {
            refresher.signal.stop();
            mine.push(refresher.thread);
        } else {
            // A parent's thread: it does not exist in this process; its handle must not be
            // joined or detached.
            std::mem::forget(refresher);
        }
    }
    for thread in mine {
        if thread.join().is_err() {
            log::error!("a discovery thread panicked");
        }
    }
    crate::replay::park();
    ParkedThreads { _private: () }
}

/// A failed discovery, kept to answer callers until `retry_at`.
#[derive(Debug)]
struct Failed {
    retry_at: Instant,
    /// What went wrong, as the inner error (its kind is the discovery error's kind).
    error: Arc<Error>,
}

/// The single flight of discoveries in one process.
#[derive(Debug, Default)]
struct Flight {
    /// A discovery is in the air.
    running: bool,
    /// Discoveries finished so far: a waiter knows the one it waited for has landed.
    landed: u64,
    last_failure: Option<Failed>,
    failures_in_a_row: u32,
}

/// The discovery state of one process.
#[derive(Debug)]
struct ProcessState {
    /// The fork generation of the process it belongs to.
    generation: u64,
    flight: Mutex<Flight>,
    landed: Condvar,
    /// The current refresher; none yet, or a stopped one, means it is started on next use.
    refresher: ArcSwapOption<Signal>,
    /// When a failing node last woke the refresher.
    last_nudge: Mutex<Option<Instant>>,
    /// TLS with this process's own session cache (one inherited through `fork()` could hold
    /// a lock, or sessions, of the parent's).
    tls: OnceLock<Option<Tls>>,
}

impl ProcessState {
    fn new() -> Self {
        ProcessState {
            generation: crate::fork::stamp(),
            flight: Mutex::default(),
            landed: Condvar::new(),
            refresher: ArcSwapOption::empty(),
            last_nudge: Mutex::new(None),
            tls: OnceLock::new(),
        }
    }
}

/// What discovery needs of the cluster it feeds, and all it may do to it: read the membership
/// in use, hand it a new one ([`Membership::apply_membership`]), and report how a discovery
/// went. The cluster implements it; discovery never sees the client.
pub(crate) trait Membership: Send + Sync {
    /// The settings to reach the endpoint with (timeouts, TLS).
    fn config(&self) -> &ClientConfig;
    /// The membership in use.
    fn current(&self) -> Arc<Topology>;
    /// Publishes a new membership (nodes that stay keep their pools).
    fn apply_membership(&self, nodes: &[NodeAddress], version: Option<u64>);
    /// A discovery ended with `outcome` (counted; a failure is an event, a success the
    /// endpoint's recovery in the failure log).
    fn discovered(&self, outcome: &Result<()>);
    /// The refresher's discovery (see `Cluster::refresh_membership`).
    fn refresh(&self) -> Result<()>;
    /// Logs a failed background discovery by the failure policy.
    fn refresh_failed(&self, error: &Error);
}

/// A client's link to its configuration endpoint.
#[derive(Debug)]
pub(crate) struct Discovery {
    endpoint: NodeAddress,
    settings: DiscoveryConfig,
    /// Set once the endpoint turned out to be plain memcached (`mode: Auto`): it is the node.
    is_static: AtomicBool,
    process: ArcSwap<ProcessState>,
}

impl Discovery {
    pub(crate) fn new(endpoint: NodeAddress, settings: DiscoveryConfig) -> Self {
        Discovery {
            endpoint,
            settings,
            is_static: AtomicBool::new(false),
            process: ArcSwap::from_pointee(ProcessState::new()),
        }
    }

    pub(crate) fn endpoint(&self) -> &NodeAddress {
        &self.endpoint
    }

    /// This process's state; a forked child starts afresh.
    fn process(&self) -> Arc<ProcessState> {
        let generation = crate::fork::current();
        let current = self.process.load_full();
        if current.generation == generation {
            return current;
        }
        let fresh = Arc::new(ProcessState::new());
        self.process.rcu(|p| {
            if p.generation == generation {
                Arc::clone(p)
            } else {
                Arc::clone(&fresh)
            }
        });
        self.process.load_full()
    }

    /// Whether this process needs its refresher (re)started (cheap: called on every operation).
    pub(crate) fn needs_refresher(&self) -> bool {
        if self.settings.interval.is_none() || self.is_static.load(Ordering::Relaxed) {
            return false;
        }
        let process = self.process.load();
        process.generation != crate::fork::current()
            || process
                .refresher
                .load()
                .as_ref()
                .is_none_or(|signal| signal.stopped())
    }

    /// Starts this process's background refresher unless one runs (or threads are parked).
    pub(crate) fn start_refresher(&self, client: Weak<dyn Membership>) {
        let Some(interval) = self.settings.interval else {
            return;
        };
        let process = self.process();
        // Held while starting, so that a concurrent park either sees the new thread or keeps
        // it from starting.
        let mut registry = lock(&REFRESHERS);
        if PARKED.load(Ordering::Acquire) > 0 {
            return;
        }
        if let Some(current) = process.refresher.load().as_ref() {
            if !current.stopped() {
                return;
            }
        }
        // Threads of dropped clients have exited: let them go.
        registry.retain(|r| r.generation != process.generation || !r.thread.is_finished());
        let signal = Arc::new(Signal::default());
        let sleeper = Arc::clone(&signal);
        let state = Arc::clone(&process);
        let spawned = thread::Builder::new()
            .name("elasticache-discovery".to_owned())
            .spawn(move || refresh_forever(&client, &state, &sleeper, interval));
        match spawned {
            Ok(thread) => registry.push(Running {
                generation: process.generation,
                signal: Arc::clone(&signal),
                thread,
            }),
            // Not tried again on every operation: the signal stays, unstopped.
            Err(error) => log::error!("cannot start the discovery thread ({error}); membership is only refreshed when the ring is empty"),
        }
        process.refresher.store(Some(signal));
    }

    /// Stops this process's refresher (it exits at its next wake-up, at once).
    pub(crate) fn stop_refresher(&self) {
        if let Some(signal) = self.process.load().refresher.load().as_ref() {
            signal.stop();
        }
    }

    /// After a node refused, reset or closed a connection (as after a scale-in): wakes the
    /// refresher to discover now, at most once per [`NUDGE_FLOOR`]. Without a refresher
    /// (`interval: None`) nothing happens.
    pub(crate) fn nudge(&self) {
        let process = self.process.load();
        if process.generation != crate::fork::current() {
            return;
        }
        let Some(signal) = process.refresher.load_full() else {
            return;
        };
        {
            let mut last = lock(&process.last_nudge);
            if last.is_some_and(|at| at.elapsed() < NUDGE_FLOOR) {
                return;
            }
            *last = Some(Instant::now());
        }
        log::info!(
            "{}: a node refused or dropped a connection: asking for the membership early",
            self.endpoint
        );
        signal.nudge();
    }

    /// The error callers see for a failed discovery whose cause is `inner`.
    fn failed(&self, inner: Arc<Error>) -> Error {
        let endpoint = self.endpoint.to_string();
        match *inner {
            Error::NotElastiCache { .. } => Error::NotElastiCache { endpoint },
            _ => Error::Discovery {
                endpoint,
                source: inner,
            },
        }
    }

    /// How long to leave the endpoint alone after `failures` failures in a row: with no
    /// membership, a steady second or so (the cache is down until the endpoint answers, so
    /// it must be asked often, but one flight and jitter keep it from being hammered); with
    /// one, the retry delay doubled per failure up to the interval.
    fn retry_pause(&self, failures: u32, ring_empty: bool) -> Duration {
        let retry_delay = self.settings.retry_delay;
        jittered(if ring_empty {
            retry_delay.max(RETRY_FLOOR)
        } else {
            backoff(retry_delay, self.settings.interval, failures)
        })
    }

    /// Discovers now, unless `satisfied` says another thread has done the work, a discovery
    /// just failed (then fails fast with that failure), or one is in the air: then waits for
    /// it, but not past `deadline` (the caller's own: an operation's deadline covers the
    /// discovery it waits for), and reports its outcome.
    pub(crate) fn discover(
        &self,
        client: &(impl Membership + ?Sized),
        satisfied: impl Fn() -> bool,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let process = self.process();
        let mut flight = lock(&process.flight);
        if satisfied() {
            return Ok(());
        }
        if flight.running {
            let seen = flight.landed;
            let in_the_air = |f: &mut Flight| f.landed == seen;
            flight = match deadline {
                None => process
                    .landed
                    .wait_while(flight, in_the_air)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    process
                        .landed
                        .wait_timeout_while(flight, left, in_the_air)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            if flight.landed == seen {
                return Err(self.failed(Arc::new(Error::Timeout {
                    node: self.endpoint.to_string(),
                    timeout: client.config().timeout.unwrap_or_default(),
                })));
            }
            if satisfied() {
                return Ok(());
            }
            return match &flight.last_failure {
                Some(failed) => Err(self.failed(Arc::clone(&failed.error))),
                None => Ok(()),
            };
        }
        if let Some(failed) = &flight.last_failure {
            if Instant::now() < failed.retry_at {
                return Err(self.failed(Arc::clone(&failed.error)));
            }
        }
        flight.running = true;
        drop(flight);
        let outcome = self.discover_once(client, &process);
        let ring_empty = outcome.is_err() && client.current().nodes().is_empty();
        let mut flight = lock(&process.flight);
        flight.running = false;
        flight.landed = flight.landed.wrapping_add(1);
        let outcome = match outcome {
            Ok(()) => {
                flight.last_failure = None;
                flight.failures_in_a_row = 0;
                Ok(())
            }
            Err(error) => {
                flight.failures_in_a_row = flight.failures_in_a_row.saturating_add(1);
                let error = Arc::new(error);
                let now = Instant::now();
                let pause = self.retry_pause(flight.failures_in_a_row, ring_empty);
                flight.last_failure = Some(Failed {
                    retry_at: now.checked_add(pause).unwrap_or(now),
                    error: Arc::clone(&error),
                });
                Err(self.failed(error))
            }
        };
        drop(flight);
        process.landed.notify_all();
        client.discovered(&outcome);
        outcome
    }

    /// One discovery; a failure is the inner error, with its own kind.
    fn discover_once(
        &self,
        client: &(impl Membership + ?Sized),
        process: &ProcessState,
    ) -> Result<()> {
        let tls = process
            .tls
            .get_or_init(|| client.config().tls.as_ref().map(Tls::with_own_sessions));
        match fetch(&self.endpoint, client.config(), tls.as_ref())? {
            Found::Cluster(config) => {
                self.apply(client, &config);
                Ok(())
            }
            // Once a membership has been discovered, ERROR is a fault of the endpoint, not a
            // sign that it is plain memcached: keep the last good membership.
            Found::NotElastiCache if client.current().version().is_some() => {
                Err(Error::UnknownCommand {
                    node: self.endpoint.to_string(),
                })
            }
            Found::NotElastiCache if self.settings.mode == DiscoveryMode::Auto => {
                if !self.is_static.swap(true, Ordering::Relaxed) {
                    log::warn!("{} is not an ElastiCache configuration endpoint (it answers ERROR to `config get cluster`): using it as a single memcached node", self.endpoint);
                }
                self.stop_refresher();
                client.apply_membership(std::slice::from_ref(&self.endpoint), None);
                Ok(())
            }
            Found::NotElastiCache => Err(Error::NotElastiCache {
                endpoint: self.endpoint.to_string(),
            }),
        }
    }

    /// Publishes a membership if it is new: a newer version or a different member list.
    fn apply(&self, client: &(impl Membership + ?Sized), config: &ClusterConfig) {
        let next = addresses(config, self.settings.use_vpc_ip_address);
        let current = client.current();
        let before: HashSet<&NodeAddress> = current.nodes().iter().map(|n| &n.address).collect();
        let after: HashSet<&NodeAddress> = next.iter().collect();
        let newer = current.version().is_none_or(|v| config.version > v);
        if before == after && !newer {
            return;
        }
        if before != after {
            let mut added: Vec<&str> = after.difference(&before).map(|a| a.name.as_str()).collect();
            let mut removed: Vec<&str> =
                before.difference(&after).map(|a| a.name.as_str()).collect();
            added.sort_unstable();
            removed.sort_unstable();
            log::info!(
                "{}: cluster configuration version {}: {} nodes (added {:?}, removed {:?})",
                self.endpoint,
                config.version,
                next.len(),
                added,
                removed
            );
        }
        client.apply_membership(&next, Some(config.version));
    }
}

/// How long to leave the endpoint alone after `failures` failures in a row while a membership
/// is in use: the retry delay (at least a second), doubled per further failure, never more
/// than the interval.
fn backoff(retry_delay: Duration, interval: Option<Duration>, failures: u32) -> Duration {
    let base = retry_delay.max(RETRY_FLOOR);
    let doubled = base.saturating_mul(1 << failures.saturating_sub(1).min(6));
    match interval {
        Some(interval) => doubled.min(interval.max(base)),
        None => doubled,
    }
}

/// The longest pause the discovery code computes: longer settings mean the same in practice,
/// and scaling or adding them to an `Instant` could overflow.
const LONGEST_PAUSE: Duration = Duration::from_secs(24 * 60 * 60);

/// A duration (at most [`LONGEST_PAUSE`]) scaled by a random factor in [0.9, 1.1), so
/// processes started together do not query the endpoint in lockstep.
fn jittered(interval: Duration) -> Duration {
    let random = RandomState::new().build_hasher().finish();
    let fraction = (random % 10_000) as f64 / 10_000.0;
    interval.min(LONGEST_PAUSE).mul_f64(0.9 + 0.2 * fraction)
}

/// The refresher's loop: discover every `interval` (jittered) or at once when nudged; after a
/// failure, look again when the flight's pacing allows the next attempt (see
/// `Discovery::retry_pause`); exit once the client is dropped or a stop is requested.
fn refresh_forever(
    client: &Weak<dyn Membership>,
    process: &ProcessState,
    signal: &Signal,
    interval: Duration,
) {
    let mut pause = jittered(interval);
    loop {
        if signal.sleep(pause) == Wake::Stop {
            return;
        }
        let Some(client) = client.upgrade() else {
            return;
        };
        pause = match client.refresh() {
            Ok(()) => jittered(interval),
            Err(error) => {
                client.refresh_failed(&error);
                let retry_at = lock(&process.flight)
                    .last_failure
                    .as_ref()
                    .map(|failed| failed.retry_at);
                retry_at
                    .map(|at| at.saturating_duration_since(Instant::now()))
                    .filter(|pause| !pause.is_zero())
                    .unwrap_or(RETRY_FLOOR)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery(retry_delay: Duration) -> Discovery {
        Discovery::new(
            NodeAddress::new("endpoint", 11211),
            DiscoveryConfig {
                retry_delay,
                ..DiscoveryConfig::default()
            },
        )
    }

    #[test]
    fn with_no_membership_the_retry_pace_stays_at_the_floor_however_long_the_outage() {
        let discovery = discovery(Duration::ZERO);
        for failures in [1, 2, 5, 30, u32::MAX] {
            let pause = discovery.retry_pause(failures, true);
            assert!(
                pause >= RETRY_FLOOR.mul_f64(0.9) && pause < RETRY_FLOOR.mul_f64(1.1),
                "{failures} failures: {pause:?}"
            );
        }
    }

    #[test]
    fn with_a_membership_failures_back_off_up_to_the_interval() {
        let discovery = discovery(Duration::ZERO);
        assert!(discovery.retry_pause(4, false) >= RETRY_FLOOR.mul_f64(8.0 * 0.9));
        let interval = DiscoveryConfig::default().interval.unwrap_or_default();
        assert!(discovery.retry_pause(u32::MAX, false) < interval.mul_f64(1.1));
    }

    #[test]
    fn huge_settings_never_overflow() {
        let discovery = discovery(Duration::MAX);
        assert!(discovery.retry_pause(u32::MAX, true) <= LONGEST_PAUSE.mul_f64(1.1));
        assert!(discovery.retry_pause(u32::MAX, false) <= LONGEST_PAUSE.mul_f64(1.1));
        assert!(jittered(Duration::MAX) <= LONGEST_PAUSE.mul_f64(1.1));
    }

    #[test]
    fn a_longer_retry_delay_sets_the_steady_pace() {
        let pause = discovery(Duration::from_secs(3)).retry_pause(9, true);
        assert!(pause >= Duration::from_secs(3).mul_f64(0.9), "{pause:?}");
        assert!(pause < Duration::from_secs(3).mul_f64(1.1), "{pause:?}");
    }
}
