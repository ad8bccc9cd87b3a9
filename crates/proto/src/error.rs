//! What a reply can be instead of the expected answer.

use thiserror::Error;

/// A reply that is not the answer the request expects.
///
/// The first three are the server speaking the protocol correctly about a failure; the last two
/// mean the byte stream cannot be trusted any more, and the connection must be dropped.
/// More kinds may be added, so a match on it needs a wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// `ERROR`: the server does not know the command.
    #[error("the server does not know the command (ERROR)")]
    UnknownCommand,
    /// `CLIENT_ERROR <message>`: the request was malformed or refused.
    #[error("CLIENT_ERROR {0}")]
    Client(String),
    /// `SERVER_ERROR <message>`: the server failed to carry out the request.
    #[error("SERVER_ERROR {0}")]
    Server(String),
    /// Bytes that are not a reply to this request.
    #[error("malformed reply: {0}")]
    Malformed(String),
    /// A value header declares more bytes than the configured cap.
    #[error("the server declared a {declared}-byte value, over the {limit}-byte limit")]
    ValueTooLarge {
        /// The length the header declared.
        declared: u64,
        /// The cap in force: the caller's, or [`crate::MAX_VALUE_LEN_LIMIT`] if that is lower.
        limit: usize,
    },
}

impl ReplyError {
    pub(crate) fn malformed(what: &str, line: &[u8]) -> Self {
        const SHOWN: usize = 64;
        let shown = &line[..line.len().min(SHOWN)];
        let ellipsis = if line.len() > SHOWN { "..." } else { "" };
        ReplyError::Malformed(format!(
            "{what}: {:?}{ellipsis}",
            String::from_utf8_lossy(shown)
        ))
    }
}
