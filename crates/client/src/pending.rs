//! A `get` driven by an event loop: sent without blocking, then advanced each time its socket
//! is readable, so asyncio callers read the cache without handing the call to a thread.
//!
//! Only a `get` that can start without waiting runs this way: one whose node has an idle
//! pooled connection. Anything that would block (connecting, a first discovery) is left to the
//! caller's blocking path.

use std::sync::Arc;

use elasticache_proto::{self as proto, Retrieval};

use crate::client::{accept_item, parse_item, Client, Item};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::topology::Node;

/// How a [`Client::start_get`] went.
#[derive(Debug)]
#[non_exhaustive]
pub enum GetStart {
    /// The reply was already there (or the failure was tolerated under `ignore_exc`).
    Done(Option<Item>),
    /// The request is sent; call [`Client::advance_get`] when the socket is readable.
    Pending(PendingGet),
    /// Starting would block (no idle connection to the node, or no membership yet): use
    /// [`Client::get`] off the event loop instead.
    WouldBlock,
}

/// How far a pending get has come.
#[derive(Debug)]
#[non_exhaustive]
pub enum GetProgress {
    /// The reply is not whole yet.
    Waiting,
    /// The reply is complete (or the failure was tolerated under `ignore_exc`).
    Done(Option<Item>),
}

/// A `get` whose request is sent and whose reply is read as it arrives.
///
/// Its connection stays out of the pool until [`PendingGet::close`] (or drop): the event
/// loop must stop watching the socket before anyone else may use it. It goes back after a
/// clean reply and is closed otherwise, since an unread reply would answer the next request.
#[derive(Debug)]
pub struct PendingGet {
    node: Arc<Node>,
    connection: Option<Connection>,
    key: String,
    found: Option<Item>,
    clean: bool,
    finished: bool,
}

impl PendingGet {
    /// The socket to watch for readability, while the exchange is open.
    #[cfg(unix)]
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.connection.as_ref().map(Connection::raw_fd)
    }

    /// Whether the outcome has been delivered (by [`Client::advance_get`] or
    /// [`Client::expire_get`]).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Ends the exchange: the connection returns to its pool after a clean reply and is
    /// closed otherwise.
    pub fn close(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.clean && connection.set_nonblocking(false).is_ok() {
            self.node.pool.put_back(connection);
        } else {
            drop(connection);
            self.node.pool.discard();
        }
    }
}

impl Drop for PendingGet {
    fn drop(&mut self) {
        self.close();
    }
}

impl Client {
    /// Starts a `get` of `key` without blocking on the network: the request is written to an
    /// idle pooled connection (a small write to an idle socket does not wait) and whatever
    /// reply has already arrived is read.
    pub fn start_get(&self, key: &str) -> Result<GetStart> {
        Self::validate(key)?;
        let topology = self.topology();
        let Some(index) = topology.node_index_for(key) else {
            return Ok(GetStart::WouldBlock);
        };
        let node = Arc::clone(&topology.nodes()[index]);
        if let Err(error) = Self::check_up(&node) {
            return self.tolerate(Err(error), || None).map(GetStart::Done);
        }
        let Some(connection) = node.pool.take_idle() else {
            return Ok(GetStart::WouldBlock);
        };
        let mut pending = PendingGet {
            node,
            connection: Some(connection),
            key: key.to_owned(),
            found: None,
            clean: false,
            finished: false,
        };
        let mut request = Vec::with_capacity(key.len() + 8);
        proto::encode_retrieval(&mut request, Retrieval::Get, [key.as_bytes()]);
        let sent = match pending.connection.as_mut() {
            Some(connection) => connection
                .send(&request, self.deadline())
                .and_then(|()| connection.set_nonblocking(true)),
            None => Err(Error::NoNodes),
        };
        if let Err(error) = sent {
            return self
                .finish_get(&mut pending, Err(error))
                .map(GetStart::Done);
        }
        Ok(match self.advance_get(&mut pending)? {
            GetProgress::Done(item) => {
                pending.close();
                GetStart::Done(item)
            }
            GetProgress::Waiting => GetStart::Pending(pending),
        })
    }

    /// Reads what has arrived for `pending`; call it when its socket is readable. Once it has
    /// returned `Done` (or an error) the outcome is delivered and later calls return
    /// `Done(None)`.
    pub fn advance_get(&self, pending: &mut PendingGet) -> Result<GetProgress> {
        if pending.finished {
            return Ok(GetProgress::Done(None));
        }
        let max = self.config.max_value_len;
        let outcome = match pending.connection.as_mut() {
            None => Err(Error::NoNodes),
            Some(connection) => loop {
                match connection.read_available(|buf| parse_item(buf, max)) {
                    Ok(None) => return Ok(GetProgress::Waiting),
                    Ok(Some(None)) => break Ok(pending.found.take()),
                    Ok(Some(Some((returned_key, item)))) => {
                        let node = connection.node();
                        if let Err(error) =
                            accept_item(node, &pending.key, &mut pending.found, &returned_key, item)
                        {
                            break Err(error);
                        }
                    }
                    Err(error) => break Err(error),
                }
            },
        };
        self.finish_get(pending, outcome).map(GetProgress::Done)
    }

    /// Gives up on `pending` because its deadline passed: a timeout, like a blocking `get`'s.
    pub fn expire_get(&self, pending: &mut PendingGet) -> Result<Option<Item>> {
        if pending.finished {
            return Ok(None);
        }
        let timeout = Error::Timeout {
            node: pending.node.address.name.clone(),
            timeout: self.config.timeout.unwrap_or_default(),
        };
        self.finish_get(pending, Err(timeout))
    }

    /// Records the outcome against the node's health, as a blocking exchange does.
    fn finish_get(
        &self,
        pending: &mut PendingGet,
        outcome: Result<Option<Item>>,
    ) -> Result<Option<Item>> {
        pending.finished = true;
        match &outcome {
            Ok(_) => {
                pending.clean = true;
                pending.node.health.record_success();
            }
            Err(error) => self.note_failure(&pending.node, error),
        }
        self.tolerate(outcome, || None)
    }
}
