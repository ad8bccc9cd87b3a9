//! Auto Discovery: asking the configuration endpoint for the membership, applying it, and the
//! background refresher that keeps following it.
//!
//! At most one discovery runs at a time per process (on-demand ones and the refresher's take
//! the same lock), failed attempts are rate-limited with backoff, and a failure never empties
//! the ring: the last good membership stays in use. All of this state is per process, so a
//! forked child never waits on a lock its parent's threads held at fork time.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use elasticache_proto::{
    parse_cluster_config, ClusterConfig, CONFIG_GET_CLUSTER, LEGACY_GET_CLUSTER,
};

use crate::address::NodeAddress;
use crate::client::Client;
use crate::config::{ClientConfig, DiscoveryConfig, DiscoveryMode};
use crate::connection::Connection;
use crate::error::{Error, Result};

/// The least time between two failed discovery attempts.
const RETRY_FLOOR: Duration = Duration::from_secs(1);

/// What a configuration endpoint said.
#[derive(Debug)]
pub(crate) enum Found {
    Cluster(ClusterConfig),
    /// It answers like plain memcached: `ERROR` to `config get cluster`, no legacy key.
    NotElastiCache,
}

/// Asks `endpoint` for the cluster configuration, on a connection of its own (resolving the
/// endpoint's name anew: it is a CNAME that moves).
pub(crate) fn fetch(endpoint: &NodeAddress, config: &ClientConfig) -> Result<Found> {
    let deadline = config.timeout.map(|t| Instant::now() + t);
    let mut connection = Connection::connect(endpoint, config, config.tls.as_ref(), deadline)?;
    connection.send(CONFIG_GET_CLUSTER, deadline)?;
    let reply = match connection.read(deadline, parse_cluster_config) {
        Err(Error::UnknownCommand { .. }) => {
            // Engines before 1.4.14 keep the configuration under a key instead. A fresh
            // connection: the error reply leaves this one's stream in an unknown state.
            let mut connection =
                Connection::connect(endpoint, config, config.tls.as_ref(), deadline)?;
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

/// The node addresses of a configuration: by IP when asked to and known, else by hostname.
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

/// A stop signal the refresher sleeps on.
#[derive(Debug, Default)]
struct Stop {
    requested: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    fn request(&self) {
        *self
            .requested
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.notify_all();
    }

    /// Sleeps for `duration` unless stopped first; returns whether a stop was requested.
    fn sleep(&self, duration: Duration) -> bool {
        let requested = self
            .requested
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (requested, _) = self
            .wake
            .wait_timeout_while(requested, duration, |stop| !*stop)
            .unwrap_or_else(PoisonError::into_inner);
        *requested
    }
}

/// Why the last discovery failed, kept to answer callers while the endpoint is left alone.
#[derive(Debug, Clone)]
enum Failure {
    /// `discovery: on` and the endpoint is not ElastiCache's: a configuration error.
    NotElastiCache,
    Other(String),
}

#[derive(Debug, Default)]
struct Attempts {
    last_failure: Option<(Instant, Failure)>,
    failures_in_a_row: u32,
}

/// The discovery state of one process.
#[derive(Debug)]
struct ProcessState {
    pid: u32,
    /// Held for the whole of a discovery: single flight.
    attempts: Mutex<Attempts>,
    refresher: OnceLock<Arc<Stop>>,
}

impl ProcessState {
    fn new() -> Self {
        ProcessState {
            pid: std::process::id(),
            attempts: Mutex::default(),
            refresher: OnceLock::new(),
        }
    }
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
    fn process(&self, pid: u32) -> Arc<ProcessState> {
        let current = self.process.load_full();
        if current.pid == pid {
            return current;
        }
        let fresh = Arc::new(ProcessState::new());
        self.process.rcu(|p| {
            if p.pid == pid {
                Arc::clone(p)
            } else {
                Arc::clone(&fresh)
            }
        });
        self.process.load_full()
    }

    /// Whether this process still needs its refresher started (cheap: called on every operation).
    pub(crate) fn needs_refresher(&self, pid: u32) -> bool {
        if self.settings.interval.is_none() || self.is_static.load(Ordering::Relaxed) {
            return false;
        }
        let process = self.process.load();
        process.pid != pid || process.refresher.get().is_none()
    }

    /// Starts this process's background refresher, once.
    pub(crate) fn start_refresher(&self, client: Weak<Client>, pid: u32) {
        let Some(interval) = self.settings.interval else {
            return;
        };
        let process = self.process(pid);
        let mut started = false;
        process.refresher.get_or_init(|| {
            started = true;
            Arc::new(Stop::default())
        });
        if !started {
            return;
        }
        let Some(stop) = process.refresher.get().cloned() else {
            return;
        };
        let retry_delay = self.settings.retry_delay;
        let spawned = thread::Builder::new()
            .name("elasticache-discovery".to_owned())
            .spawn(move || refresh_forever(&client, &stop, interval, retry_delay));
        if let Err(error) = spawned {
            log::error!("cannot start the discovery thread ({error}); membership is only refreshed when the ring is empty");
        }
    }

    /// Stops this process's refresher (it exits at its next wake-up, at once).
    pub(crate) fn stop_refresher(&self) {
        if let Some(stop) = self.process.load().refresher.get() {
            stop.request();
        }
    }

    fn lock_attempts<'p>(&self, process: &'p ProcessState) -> MutexGuard<'p, Attempts> {
        process
            .attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Discovers now unless a discovery just failed (then fails fast with that reason), or
    /// `satisfied` says another thread has done the work while this one waited.
    pub(crate) fn discover(
        &self,
        client: &Client,
        pid: u32,
        satisfied: impl Fn() -> bool,
    ) -> Result<()> {
        let process = self.process(pid);
        let mut attempts = self.lock_attempts(&process);
        if satisfied() {
            return Ok(());
        }
        if let Some((at, failure)) = &attempts.last_failure {
            let pause = backoff(
                self.settings.retry_delay,
                self.settings.interval,
                attempts.failures_in_a_row,
            );
            if at.elapsed() < pause {
                let endpoint = self.endpoint.to_string();
                return Err(match failure {
                    Failure::NotElastiCache => Error::NotElastiCache { endpoint },
                    Failure::Other(reason) => Error::Discovery {
                        endpoint,
                        reason: reason.clone(),
                    },
                });
            }
        }
        let outcome = self.discover_once(client);
        match &outcome {
            Ok(()) => *attempts = Attempts::default(),
            Err(error) => {
                let failure = match error {
                    Error::NotElastiCache { .. } => Failure::NotElastiCache,
                    Error::Discovery { reason, .. } => Failure::Other(reason.clone()),
                    other => Failure::Other(other.to_string()),
                };
                attempts.failures_in_a_row = attempts.failures_in_a_row.saturating_add(1);
                attempts.last_failure = Some((Instant::now(), failure));
            }
        }
        outcome
    }

    fn discover_once(&self, client: &Client) -> Result<()> {
        let endpoint = self.endpoint.to_string();
        let found = fetch(&self.endpoint, &client.config).map_err(|error| Error::Discovery {
            endpoint: endpoint.clone(),
            reason: error.to_string(),
        })?;
        match found {
            Found::Cluster(config) => {
                self.apply(client, &config);
                Ok(())
            }
            // Once a membership has been discovered, ERROR is a fault of the endpoint, not a
            // sign that it is plain memcached: keep the last good membership.
            Found::NotElastiCache if client.topology().version().is_some() => {
                Err(Error::Discovery {
                    endpoint,
                    reason: "the endpoint answered ERROR to `config get cluster`".to_owned(),
                })
            }
            Found::NotElastiCache if self.settings.mode == DiscoveryMode::Auto => {
                if !self.is_static.swap(true, Ordering::Relaxed) {
                    log::warn!("{endpoint} is not an ElastiCache configuration endpoint (it answers ERROR to `config get cluster`): using it as a single memcached node");
                }
                self.stop_refresher();
                client.set_nodes(std::slice::from_ref(&self.endpoint), None);
                Ok(())
            }
            Found::NotElastiCache => Err(Error::NotElastiCache { endpoint }),
        }
    }

    /// Publishes a membership if it is new: a newer version or a different member list.
    fn apply(&self, client: &Client, config: &ClusterConfig) {
        let next = addresses(config, self.settings.use_vpc_ip_address);
        let current = client.topology();
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
        client.set_nodes(&next, Some(config.version));
    }
}

/// How long to leave the endpoint alone after `failures` failures in a row: the retry delay
/// (at least a second), doubled per further failure, never more than the interval.
fn backoff(retry_delay: Duration, interval: Option<Duration>, failures: u32) -> Duration {
    let base = retry_delay.max(RETRY_FLOOR);
    let doubled = base.saturating_mul(1 << failures.saturating_sub(1).min(6));
    match interval {
        Some(interval) => doubled.min(interval.max(base)),
        None => doubled,
    }
}

/// A duration scaled by a random factor in [0.9, 1.1), so processes started together do not
/// query the endpoint in lockstep.
fn jittered(interval: Duration) -> Duration {
    let random = RandomState::new().build_hasher().finish();
    let fraction = (random % 10_000) as f64 / 10_000.0;
    interval.mul_f64(0.9 + 0.2 * fraction)
}

/// The refresher's loop: discover every `interval` (jittered), back off after failures, and
/// exit once the client is dropped or a stop is requested.
fn refresh_forever(client: &Weak<Client>, stop: &Stop, interval: Duration, retry_delay: Duration) {
    let mut failures: u32 = 0;
    loop {
        let pause = if failures == 0 {
            jittered(interval)
        } else {
            jittered(backoff(retry_delay, Some(interval), failures))
        };
        if stop.sleep(pause) {
            return;
        }
        let Some(client) = client.upgrade() else {
            return;
        };
        match client.refresh_membership() {
            Ok(()) => {
                failures = 0;
                crate::report::refresh_succeeded(&client);
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                crate::report::refresh_failed(&client, &error);
            }
        }
    }
}
