//! The client's errors, each classified into a kind that tells a caller what to do about it.

use std::fmt;
use std::io;
use std::time::Duration;

use elasticache_proto::{KeyError, ReplyError};
use thiserror::Error;

/// What kind of failure an [`enum@Error`] is; this drives retries, node marking and exception types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
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

/// The payload of an [`Error::Connect`]'s `io::Error` when the node's name did not resolve:
/// what tells a resolution failure from a refused or unreachable connect (the system
/// resolver's errors have no `io::ErrorKind` of their own). Shown as the resolver's words.
#[derive(Debug)]
pub struct NameNotResolved(pub io::Error);

impl fmt::Display for NameNotResolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for NameNotResolved {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl NameNotResolved {
    /// `error` (the resolver's) as an `io::Error` that carries this payload, of the same kind.
    pub fn wrap(error: io::Error) -> io::Error {
        io::Error::new(error.kind(), NameNotResolved(error))
    }
}

/// A failed cache operation.
///
/// Where a variant names a `node`, it is the node's `host:port` as the ring knows it (for
/// discovery, the configuration endpoint's). [`Error::kind`] classifies every variant;
/// [`Error::counts_against_node`] and [`Error::is_connection_lost`] say what it means for the
/// node. Every failure of an exchange closes its connection, whatever the variant.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The key cannot be sent to memcached; nothing was sent.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: KeyError,
    },

    /// The value is over the client's `max_value_len`; it was not sent.
    #[error("the value is {size} bytes, over the {limit}-byte item limit")]
    ValueTooLarge {
        /// The value's length in bytes.
        size: usize,
        /// The client's limit.
        limit: usize,
    },

    /// The node refused the value as over its item size limit (`-I`).
    #[error("{node} refused the {size}-byte value as larger than its item size limit (SERVER_ERROR {message})")]
    TooLargeForNode {
        /// The node.
        node: String,
        /// The value's length in bytes.
        size: usize,
        /// The server's words.
        message: String,
    },

    /// `CLIENT_ERROR`: the node refused the request as malformed.
    #[error("{node} refused the request: {message}")]
    Refused {
        /// The node.
        node: String,
        /// The server's words.
        message: String,
    },

    /// `SERVER_ERROR`: the node could not carry out the request.
    #[error("{node} failed the request: {message}")]
    ServerFailure {
        /// The node.
        node: String,
        /// The server's words.
        message: String,
    },

    /// The node sent bytes that are not a reply to the request.
    #[error("{node} sent a reply that is not the protocol: {source}")]
    Protocol {
        /// The node.
        node: String,
        /// What was wrong with the reply.
        source: ReplyError,
    },

    /// The operation's deadline (or the connect's) passed.
    #[error("{node} did not answer within {}", Rounded(*.timeout))]
    Timeout {
        /// The node.
        node: String,
        /// The limit that ran out.
        timeout: Duration,
    },

    /// Every connection the pool may have stayed in use until the deadline.
    #[error("no free connection to {node} within {} (max_pool_size reached)", Rounded(*.timeout))]
    PoolExhausted {
        /// The node.
        node: String,
        /// The limit that ran out.
        timeout: Duration,
    },

    /// No connection could be made (refused, unreachable, the name does not resolve).
    #[error("cannot connect to {node}: {source}")]
    Connect {
        /// The node.
        node: String,
        /// The operating system's error.
        source: io::Error,
    },

    /// An established connection failed (reset, broken pipe).
    #[error("connection to {node} failed: {source}")]
    Io {
        /// The node.
        node: String,
        /// The operating system's error.
        source: io::Error,
    },

    /// The node closed the connection before its reply was whole.
    #[error("{node} closed the connection mid-reply")]
    Closed {
        /// The node.
        node: String,
    },

    /// The node failed too often in a row and is left alone for now; nothing was sent.
    #[error("{node} is marked down; next try in {}", Rounded(*.retry_in))]
    NodeDown {
        /// The node.
        node: String,
        /// How long it is still left alone.
        retry_in: Duration,
    },

    /// There is no node to send the request to (no membership yet).
    #[error("the cluster has no nodes")]
    NoNodes,

    /// The TLS handshake or a TLS record failed (an untrusted certificate, a plaintext peer).
    #[error("TLS with {node} failed: {reason}")]
    Tls {
        /// The node.
        node: String,
        /// Why, in words.
        reason: String,
    },

    /// The TLS settings cannot be used (a file that cannot be read, a bad server name).
    #[error("invalid TLS configuration: {reason}")]
    TlsConfig {
        /// Why, in words.
        reason: String,
    },

    /// `ERROR`: the node does not know the command.
    #[error("{node} does not know the command (ERROR)")]
    UnknownCommand {
        /// The node.
        node: String,
    },

    /// Discovery failed; `source` is why (a timeout, a refused connection, a TLS
    /// configuration error...), and gives this error its kind. Shared: the same failure answers
    /// every caller until the endpoint is asked again.
    #[error("no cluster membership from the configuration endpoint {endpoint}: {source}")]
    Discovery {
        /// The configuration endpoint.
        endpoint: String,
        /// The failure of the last attempt.
        source: std::sync::Arc<Error>,
    },

    /// `discovery` is "on" and the endpoint is plain memcached (it answers `ERROR`).
    #[error("{endpoint} is not an ElastiCache configuration endpoint (it does not answer `config get cluster`), and discovery is \"on\"")]
    NotElastiCache {
        /// The configuration endpoint.
        endpoint: String,
    },

    /// The command needs memcached's meta commands (1.6), which the key's node does not
    /// support.
    #[error("{what} needs memcached's meta commands (memcached 1.6), which the key's node does not support")]
    MetaUnsupported {
        /// What was asked.
        what: &'static str,
    },

    /// A server address that cannot be parsed.
    #[error("invalid server address {address:?}: {reason}")]
    BadAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
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
            | Error::TlsConfig { .. }
            | Error::MetaUnsupported { .. } => ErrorKind::Client,
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

    /// Whether the failure is that the node's name did not resolve (to any address): a
    /// [`Error::Connect`] whose source carries [`NameNotResolved`], or a discovery failed so.
    pub fn is_name_not_resolved(&self) -> bool {
        match self {
            Error::Connect { source, .. } => source
                .get_ref()
                .is_some_and(|inner| inner.is::<NameNotResolved>()),
            Error::Discovery { source, .. } => source.is_name_not_resolved(),
            _ => false,
        }
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
            | Error::TlsConfig { .. }
            | Error::MetaUnsupported { .. } => false,
        }
    }

    /// An equal error, for each caller a shared read's failure reaches (`flights`). An I/O
    /// error is remade from its kind and message (the operating system's error is not
    /// cloneable); it is what the caller sees and what its kind is drawn from.
    pub(crate) fn duplicate(&self) -> Error {
        let io = |source: &io::Error| io::Error::new(source.kind(), source.to_string());
        match self {
            Error::InvalidKey { key, reason } => Error::InvalidKey {
                key: key.clone(),
                reason: reason.clone(),
            },
            Error::ValueTooLarge { size, limit } => Error::ValueTooLarge {
                size: *size,
                limit: *limit,
            },
            Error::TooLargeForNode {
                node,
                size,
                message,
            } => Error::TooLargeForNode {
                node: node.clone(),
                size: *size,
                message: message.clone(),
            },
            Error::Refused { node, message } => Error::Refused {
                node: node.clone(),
                message: message.clone(),
            },
            Error::ServerFailure { node, message } => Error::ServerFailure {
                node: node.clone(),
                message: message.clone(),
            },
            Error::Protocol { node, source } => Error::Protocol {
                node: node.clone(),
                source: source.clone(),
            },
            Error::Timeout { node, timeout } => Error::Timeout {
                node: node.clone(),
                timeout: *timeout,
            },
            Error::PoolExhausted { node, timeout } => Error::PoolExhausted {
                node: node.clone(),
                timeout: *timeout,
            },
            Error::Connect { node, source } => Error::Connect {
                node: node.clone(),
                source: io(source),
            },
            Error::Io { node, source } => Error::Io {
                node: node.clone(),
                source: io(source),
            },
            Error::Closed { node } => Error::Closed { node: node.clone() },
            Error::NodeDown { node, retry_in } => Error::NodeDown {
                node: node.clone(),
                retry_in: *retry_in,
            },
            Error::NoNodes => Error::NoNodes,
            Error::Tls { node, reason } => Error::Tls {
                node: node.clone(),
                reason: reason.clone(),
            },
            Error::TlsConfig { reason } => Error::TlsConfig {
                reason: reason.clone(),
            },
            Error::UnknownCommand { node } => Error::UnknownCommand { node: node.clone() },
            Error::Discovery { endpoint, source } => Error::Discovery {
                endpoint: endpoint.clone(),
                source: std::sync::Arc::clone(source),
            },
            Error::NotElastiCache { endpoint } => Error::NotElastiCache {
                endpoint: endpoint.clone(),
            },
            Error::MetaUnsupported { what } => Error::MetaUnsupported { what },
            Error::BadAddress { address, reason } => Error::BadAddress {
                address: address.clone(),
                reason: reason.clone(),
            },
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

/// A duration as messages show it: milliseconds below a second, else seconds to one decimal
/// ("250 ms", "1.0 s", "59.8 s").
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rounded(pub(crate) Duration);

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = (self.0.as_secs_f64() * 1000.0).round();
        if millis < 1000.0 {
            write!(f, "{millis:.0} ms")
        } else {
            write!(f, "{:.1} s", self.0.as_secs_f64())
        }
    }
}

/// Checks a key before anything is sent: an invalid one is the caller's error, never a node's.
pub(crate) fn check_key(key: &str) -> Result<()> {
    elasticache_proto::validate_key(key.as_bytes()).map_err(|reason| Error::InvalidKey {
        key: key.to_owned(),
        reason,
    })
}
