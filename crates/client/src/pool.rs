//! A bounded pool of connections to one node, shared by every thread of the process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::address::NodeAddress;
use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::sync::lock;
use crate::tls::Tls;

/// A connection idle for longer than this is checked before reuse (the peer may have closed
/// it: a restarted node, an idle timeout on the server).
const PROBE_AFTER_IDLE: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct PoolState {
    /// Idle connections, most recently used last.
    idle: Vec<Connection>,
    /// Connections that exist: idle, leased, or being opened.
    open: usize,
    /// Callers waiting for a connection to be returned: without any, returning one need not
    /// wake anybody (a wake-up is a system call).
    waiting: usize,
}

/// Connections to one node: at most `max_size` at once, reused most-recently-used first.
#[derive(Debug)]
pub struct Pool {
    state: Mutex<PoolState>,
    freed: Condvar,
    max_size: usize,
    idle_timeout: Option<Duration>,
    /// This node's TLS configuration: its own session cache, since a ticket from one node
    /// is useless to another, even when they share a hostname.
    tls: Option<Tls>,
    /// Connections opened, and how many of them resumed a TLS session.
    opened: AtomicU64,
    resumed: AtomicU64,
    /// Times a caller waited for a connection to be returned.
    waits: AtomicU64,
}

/// A connection taken from a pool. Its holder takes it out ([`Lease::into_connection`]) to
/// use it; dropping the lease instead closes the connection.
#[derive(Debug)]
pub struct Lease<'p> {
    pool: &'p Pool,
    connection: Option<Connection>,
}

impl Pool {
    pub fn new(config: &ClientConfig) -> Self {
        Pool {
            state: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
            max_size: config.max_pool_size.max(1),
            idle_timeout: config.pool_idle_timeout,
            tls: config.tls.as_ref().map(Tls::with_own_sessions),
            opened: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            waits: AtomicU64::new(0),
        }
    }

    // A panic while holding the lock cannot leave PoolState inconsistent in a way that matters
    // more than losing the pool, so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        lock(&self.state)
    }

    /// Takes an idle connection, or opens one if the pool has room, or waits for one to be
    /// returned until `deadline`. Connecting is bounded by `deadline` too.
    pub fn lease(
        &self,
        address: &NodeAddress,
        config: &ClientConfig,
        deadline: Option<Instant>,
    ) -> Result<Lease<'_>> {
        self.acquire(address, config, deadline, true)?
            .ok_or_else(|| Error::PoolExhausted {
                node: address.name.clone(),
                timeout: config.timeout.unwrap_or_default(),
            })
    }

    /// Like [`Pool::lease`] but never waits for a connection to be returned: `None` when
    /// every connection the pool may have is in use. A caller already holding connections of
    /// other pools uses this, so that it never waits while holding (two batches each holding
    /// what the other waits for would both stall until their deadline).
    pub(crate) fn lease_without_waiting(
        &self,
        address: &NodeAddress,
        config: &ClientConfig,
        deadline: Option<Instant>,
    ) -> Result<Option<Lease<'_>>> {
        self.acquire(address, config, deadline, false)
    }

    fn acquire(
        &self,
        address: &NodeAddress,
        config: &ClientConfig,
        deadline: Option<Instant>,
        wait: bool,
    ) -> Result<Option<Lease<'_>>> {
        let mut state = self.lock();
        loop {
            self.close_expired(&mut state);
            if let Some(connection) = state.idle.pop() {
                drop(state);
                if let Some(connection) = self.checked(connection) {
                    return Ok(Some(Lease {
                        pool: self,
                        connection: Some(connection),
                    }));
                }
                state = self.lock();
                continue;
            }
            if state.open < self.max_size {
                state.open += 1;
                drop(state);
                return match Connection::connect(address, config, self.tls.as_ref(), deadline) {
                    Ok(connection) => {
                        self.opened.fetch_add(1, Ordering::Relaxed);
                        if connection.resumed_tls_session() {
                            self.resumed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Some(Lease {
                            pool: self,
                            connection: Some(connection),
                        }))
                    }
                    Err(error) => {
                        self.discard();
                        Err(error)
                    }
                };
            }
            if !wait {
                return Ok(None);
            }
            let wait_for = match deadline {
                None => None,
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(None);
                    }
                    Some(deadline - now)
                }
            };
            state.waiting += 1;
            self.waits.fetch_add(1, Ordering::Relaxed);
            state = match wait_for {
                None => self
                    .freed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(wait_for) => {
                    self.freed
                        .wait_timeout(state, wait_for)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            state.waiting -= 1;
        }
    }

    /// `connection`, taken from the idle list, if it is still usable; otherwise it is closed.
    /// Only connections idle for a while are probed (three system calls): a busy pool's
    /// connections were just used, and a failure on one closes all the idle ones anyway.
    fn checked(&self, connection: Connection) -> Option<Connection> {
        if connection.idle_since.elapsed() < PROBE_AFTER_IDLE || connection.looks_alive() {
            return Some(connection);
        }
        drop(connection);
        self.discard();
        None
    }

    /// Whether every connection the pool may have is in use: none idle, and no room to open
    /// another (a caller would wait for one to be returned).
    pub(crate) fn is_full(&self) -> bool {
        let state = self.lock();
        state.idle.is_empty() && state.open >= self.max_size
    }

    /// Counts a wait for a connection to be returned that a caller makes its own way (an
    /// event driver that waits without a thread: `Operation::waits_for_pool`).
    pub(crate) fn count_wait(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
    }

    /// An idle connection if one is ready; never connects or waits. Give it back with
    /// [`Pool::put_back`] after a clean exchange, or [`Pool::discard`] it.
    pub(crate) fn take_idle(&self) -> Option<Connection> {
        loop {
            let mut state = self.lock();
            self.close_expired(&mut state);
            let connection = state.idle.pop()?;
            drop(state);
            if let Some(connection) = self.checked(connection) {
                return Some(connection);
            }
        }
    }

    /// Returns a connection for reuse: only after a complete, clean exchange.
    pub(crate) fn put_back(&self, mut connection: Connection) {
        if connection.has_unread_bytes() {
            // Stray bytes would be taken as the next request's reply: close instead.
            drop(connection);
            self.discard();
            return;
        }
        connection.trim_buffer();
        connection.idle_since = Instant::now();
        let mut state = self.lock();
        state.idle.push(connection);
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.freed.notify_one();
        }
    }

    /// Records that a connection taken from this pool was closed instead of returned.
    pub(crate) fn discard(&self) {
        let mut state = self.lock();
        state.open = state.open.saturating_sub(1);
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.freed.notify_one();
        }
    }

    fn close_expired(&self, state: &mut PoolState) {
        let Some(limit) = self.idle_timeout else {
            return;
        };
        // Idle connections are ordered by last use, so the expired ones are at the front.
        let expired = state
            .idle
            .iter()
            .take_while(|c| c.idle_since.elapsed() >= limit)
            .count();
        if expired > 0 {
            state.idle.drain(..expired);
            state.open = state.open.saturating_sub(expired);
        }
    }

    /// Connections opened so far, and how many of them resumed a TLS session.
    pub fn connections_opened(&self) -> (u64, u64) {
        (
            self.opened.load(Ordering::Relaxed),
            self.resumed.load(Ordering::Relaxed),
        )
    }

    /// Times a caller waited for a connection to be returned (every one was in use).
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Connections that exist right now, idle or in use.
    pub fn open_connections(&self) -> usize {
        self.lock().open
    }

    /// Closes every idle connection (leased ones close when their lease ends).
    pub fn close_idle(&self) {
        let mut state = self.lock();
        let closed = state.idle.len();
        state.idle.clear();
        state.open = state.open.saturating_sub(closed);
        drop(state);
        self.freed.notify_all();
    }
}

impl Lease<'_> {
    /// Takes the connection out of the lease: its holder gives it back with
    /// [`Pool::put_back`] after a clean exchange, or closes it and calls [`Pool::discard`].
    pub(crate) fn into_connection(mut self) -> Option<Connection> {
        self.connection.take()
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.connection.take().is_some() {
            self.pool.discard();
        }
    }
}
