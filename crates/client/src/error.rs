//! The client's errors, each classified into a kind that tells a caller what to do about it.

use std::io;
use std::time::Duration;

use elasticache_proto::{KeyError, ReplyError};
use thiserror::Error;

use crate::report::Rounded;

/// What kind of failure an [`Error`] is; this drives retries, node marking and exception types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No answer in time. The connection is discarded; the node may be slow or gone.
    Timeout,
    /// The node could not be reached, reset the connection, or is marked down.
    Connection,
    /// The server answered with an error (`SERVER_ERROR`, `ERROR`), or sent bytes that are not
    /// the protocol.
    Server,
    /// The request itself is invalid (bad key, value too large, `CLIENT_ERROR`): retrying the
    /// same request cannot help.
    Client,
}

/// A failed cache operation.
#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: KeyError },

    #[error("the value is {size} bytes, over the {limit}-byte item limit")]
    ValueTooLarge { size: usize, limit: usize },

    #[error("{node} refused the {size}-byte value as larger than its item size limit (SERVER_ERROR {message})")]
    TooLargeForNode {
        node: String,
        size: usize,
        message: String,
    },

    #[error("{node} refused the request: {message}")]
    Refused { node: String, message: String },

    #[error("{node} failed the request: {message}")]
    ServerFailure { node: String, message: String },

    #[error("{node} sent a reply that is not the protocol: {source}")]
    Protocol { node: String, source: ReplyError },

    #[error("{node} did not answer within {}", Rounded(*.timeout))]
    Timeout { node: String, timeout: Duration },

    #[error("no free connection to {node} within {} (max_pool_size reached)", Rounded(*.timeout))]
    PoolExhausted { node: String, timeout: Duration },

    #[error("cannot connect to {node}: {source}")]
    Connect { node: String, source: io::Error },

    #[error("connection to {node} failed: {source}")]
    Io { node: String, source: io::Error },

    #[error("{node} closed the connection mid-reply")]
    Closed { node: String },

    #[error("{node} is marked down; next try in {}", Rounded(*.retry_in))]
    NodeDown { node: String, retry_in: Duration },

    #[error("the cluster has no nodes")]
    NoNodes,

    #[error("TLS with {node} failed: {reason}")]
    Tls { node: String, reason: String },

    #[error("invalid TLS configuration: {reason}")]
    TlsConfig { reason: String },

    #[error("{node} does not know the command (ERROR)")]
    UnknownCommand { node: String },

    /// Discovery failed; `source` is why (a timeout, a refused connection, a TLS
    /// configuration error...), and gives this error its kind. Shared: the same failure answers
    /// every caller until the endpoint is asked again.
    #[error("no cluster membership from the configuration endpoint {endpoint}: {source}")]
    Discovery {
        endpoint: String,
        source: std::sync::Arc<Error>,
    },

    #[error("{endpoint} is not an ElastiCache configuration endpoint (it does not answer `config get cluster`), and discovery is \"on\"")]
    NotElastiCache { endpoint: String },

    #[error("invalid server address {address:?}: {reason}")]
    BadAddress { address: String, reason: String },
}

impl Error {
    /// The kind of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidKey { .. }
            | Error::ValueTooLarge { .. }
            | Error::TooLargeForNode { .. }
            | Error::Refused { .. }
            | Error::BadAddress { .. }
            | Error::NotElastiCache { .. }
            | Error::TlsConfig { .. } => ErrorKind::Client,
            Error::ServerFailure { .. } | Error::Protocol { .. } | Error::UnknownCommand { .. } => {
                ErrorKind::Server
            }
            Error::Timeout { .. } | Error::PoolExhausted { .. } => ErrorKind::Timeout,
            Error::Connect { .. }
            | Error::Io { .. }
            | Error::Closed { .. }
            | Error::NodeDown { .. }
            | Error::NoNodes
            | Error::Tls { .. } => ErrorKind::Connection,
            Error::Discovery { source, .. } => source.kind(),
        }
    }

    /// Whether the value was too large to store: over the client's `max_value_len`, or refused
    /// by the node as over its item size limit. Either way nothing was stored, and the key's
    /// old value is deleted by a `set`.
    pub fn is_value_too_large(&self) -> bool {
        matches!(
            self,
            Error::ValueTooLarge { .. } | Error::TooLargeForNode { .. }
        )
    }

    /// Whether the node closed, reset or refused the connection: the node may have restarted
    /// (every connection pooled before is dead) or left the cluster.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Error::Connect { source, .. } | Error::Io { source, .. } => !matches!(
                source.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            Error::Closed { .. } => true,
            _ => false,
        }
    }

    /// Whether the failure says something about the node's health (and so counts towards
    /// marking it down), rather than about the request. Every failure of an exchange closes
    /// its connection, whatever this says: its stream can no longer be trusted.
    pub fn counts_against_node(&self) -> bool {
        match self {
            Error::Protocol { .. }
            | Error::Timeout { .. }
            | Error::Connect { .. }
            | Error::Io { .. }
            | Error::Closed { .. }
            | Error::Tls { .. } => true,
            Error::InvalidKey { .. }
            | Error::ValueTooLarge { .. }
            | Error::TooLargeForNode { .. }
            | Error::Refused { .. }
            | Error::ServerFailure { .. }
            | Error::PoolExhausted { .. }
            | Error::NodeDown { .. }
            | Error::NoNodes
            | Error::BadAddress { .. }
            | Error::UnknownCommand { .. }
            | Error::Discovery { .. }
            | Error::NotElastiCache { .. }
            | Error::TlsConfig { .. } => false,
        }
    }

    /// The error of a storage command that sent `size` bytes: memcached's refusal of a value
    /// over its item size limit is a value too large, not a failing server.
    pub(crate) fn for_store(self, size: usize) -> Self {
        match self {
            Error::ServerFailure { node, message } if message.contains("object too large") => {
                Error::TooLargeForNode {
                    node,
                    size,
                    message,
                }
            }
            other => other,
        }
    }

    /// Turns a reply error from `node` into the client's error.
    pub(crate) fn from_reply(node: &str, error: ReplyError) -> Self {
        let node = node.to_owned();
        match error {
            ReplyError::Client(message) => Error::Refused { node, message },
            ReplyError::Server(message) => Error::ServerFailure { node, message },
            ReplyError::UnknownCommand => Error::UnknownCommand { node },
            // Malformed, ValueTooLarge, and any kind added later: the stream is not trusted.
            source => Error::Protocol { node, source },
        }
    }

    /// Turns an I/O error on an established connection into the client's error.
    pub(crate) fn from_io(node: &str, source: io::Error, timeout: Option<Duration>) -> Self {
        let node = node.to_owned();
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout {
                node,
                timeout: timeout.unwrap_or_default(),
            },
            io::ErrorKind::UnexpectedEof => Error::Closed { node },
            _ => match tls_failure(&source) {
                Some(reason) => Error::Tls { node, reason },
                None => Error::Io { node, source },
            },
        }
    }
}

/// The rustls error inside an I/O error, described, if there is one.
fn tls_failure(error: &io::Error) -> Option<String> {
    let inner = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match inner {
        rustls::Error::InvalidCertificate(reason) => {
            format!("the server's certificate is not trusted: {reason:?}")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("the server does not speak TLS ({inner})")
        }
        other => other.to_string(),
    })
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
