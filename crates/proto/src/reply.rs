//! Incremental reply parsing: check whether a whole reply is buffered, then parse it.
//!
//! Every parser takes the bytes received so far and returns [`Parse::Incomplete`] (read more,
//! the buffer is left as it is) or [`Parse::Complete`] with the number of bytes the reply used.
//! A value's data is taken by its declared length, so data that contains `\r\nEND\r\n` is read
//! correctly. Lines are bounded by [`MAX_LINE_LEN`] and values by the caller's cap, so a hostile
//! peer cannot make the caller buffer without limit.

use crate::error::ReplyError;

/// The longest reply line accepted. A `VALUE` header is at most about 300 bytes.
pub const MAX_LINE_LEN: usize = 8192;

/// The default cap on a value's declared length: memcached's 1 MiB item limit plus headroom for
/// servers started with a slightly larger `-I`.
pub const DEFAULT_MAX_VALUE_LEN: usize = 1024 * 1024 + 64 * 1024;

/// The hard upper bound on a value's declared length, whatever cap the caller asks for: 1 GiB,
/// memcached's own largest item size (`-I 1g`). A larger declared length is refused as
/// [`ReplyError::ValueTooLarge`] even when the caller's cap is higher.
pub const MAX_VALUE_LEN_LIMIT: usize = 1024 * 1024 * 1024;

/// The most bytes a whole `stats` reply may take.
const MAX_STATS_LEN: usize = 1024 * 1024;

/// The outcome of looking at a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse<T> {
    /// More bytes are needed: the buffer must hold at least this many before the reply can
    /// complete (always more than it holds now; a lower bound, exact once a value header has
    /// been read).
    Incomplete(usize),
    /// A whole reply, and how many bytes at the start of the buffer it used (at least one, at
    /// most the buffer's length).
    Complete(T, usize),
}

impl<T> Parse<T> {
    /// The same outcome with a complete reply turned by `f` (what it used unchanged).
    #[inline]
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Parse<U> {
        match self {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(reply, used) => Parse::Complete(f(reply), used),
        }
    }

    /// [`Parse::map`] with an `f` that may refuse the reply.
    #[inline]
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Parse<U>, E> {
        Ok(match self {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(reply, used) => Parse::Complete(f(reply)?, used),
        })
    }
}

/// One item of a `get`/`gets` reply: a value, or the `END` that closes the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrievalItem<'a> {
    /// A `VALUE` line and its data.
    Value(Value<'a>),
    /// The `END` line: no more values follow.
    End,
}

/// A value as the server sent it, borrowed from the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value<'a> {
    /// The key the server sent the value for.
    pub key: &'a [u8],
    /// The client-defined flags stored with the value.
    pub flags: u32,
    /// The CAS token (`gets` only).
    pub cas: Option<u64>,
    /// The value's bytes, exactly as long as the header declared.
    pub data: &'a [u8],
}

/// The reply to a storage command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreReply {
    /// `STORED`: the value was stored.
    Stored,
    /// `NOT_STORED`: the condition of `add`, `replace`, `append` or `prepend` did not hold.
    NotStored,
    /// `EXISTS`: `cas` found the item changed since its token was read.
    Exists,
    /// `NOT_FOUND`: `cas` found no item.
    NotFound,
}

/// The reply to `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReply {
    /// `DELETED`: the item existed and is gone.
    Deleted,
    /// `NOT_FOUND`: there was no such item.
    NotFound,
}

/// The reply to `incr` or `decr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrDecrReply {
    /// The counter's new value.
    Value(u64),
    /// `NOT_FOUND`: there was no such item.
    NotFound,
}

/// The reply to `touch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchReply {
    /// `TOUCHED`: the item's expiry was updated.
    Touched,
    /// `NOT_FOUND`: there was no such item.
    NotFound,
}

/// The first CRLF-terminated line of `buf` (without its CRLF) and the bytes it spans.
pub(crate) fn next_line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ReplyError> {
    let window = &buf[..buf.len().min(MAX_LINE_LEN)];
    match memchr::memchr(b'\n', window) {
        Some(end) if end > 0 && buf[end - 1] == b'\r' => Ok(Some((&buf[..end - 1], end + 1))),
        Some(end) => Err(ReplyError::malformed("line not ended by CRLF", &buf[..end])),
        None if buf.len() >= MAX_LINE_LEN => Err(ReplyError::malformed(
            "reply line longer than the protocol allows",
            window,
        )),
        None => Ok(None),
    }
}

/// The first line of a discovery reply, with error lines already turned into errors.
pub(crate) fn next_line_for_discovery(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ReplyError> {
    match next_line(buf)? {
        Some((line, used)) => match error_line(line) {
            Some(error) => Err(error),
            None => Ok(Some((line, used))),
        },
        None => Ok(None),
    }
}

/// The error a line reports, if it is one of the protocol's error lines: the word alone or
/// followed by a space and a message.
pub(crate) fn error_line(line: &[u8]) -> Option<ReplyError> {
    let after = |word: &[u8]| {
        line.strip_prefix(word)
            .filter(|rest| rest.is_empty() || rest.starts_with(b" "))
            .map(|rest| String::from_utf8_lossy(rest.trim_ascii()).into_owned())
    };
    if after(b"ERROR").is_some() {
        Some(ReplyError::UnknownCommand)
    } else if let Some(message) = after(b"CLIENT_ERROR") {
        Some(ReplyError::Client(message))
    } else {
        after(b"SERVER_ERROR").map(ReplyError::Server)
    }
}

/// A decimal number without sign, as the protocol writes them; `None` on anything else.
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Parses the next item of a `get`/`gets` reply.
///
/// Call it repeatedly, dropping the consumed bytes each time, until it returns
/// [`RetrievalItem::End`]. A declared length over `max_value_len` (or over
/// [`MAX_VALUE_LEN_LIMIT`], whatever `max_value_len` says) is an error before any of the data
/// is awaited, so the caller never reserves room for it.
pub fn parse_retrieval(
    buf: &[u8],
    max_value_len: usize,
) -> Result<Parse<RetrievalItem<'_>>, ReplyError> {
    let Some((line, header_len)) = next_line(buf)? else {
        return Ok(Parse::Incomplete(buf.len() + 1));
    };
    if line == b"END" {
        return Ok(Parse::Complete(RetrievalItem::End, header_len));
    }
    if let Some(error) = error_line(line) {
        return Err(error);
    }
    let header = line
        .strip_prefix(b"VALUE ")
        .ok_or_else(|| ReplyError::malformed("expected VALUE or END", line))?;
    let bad_header = || ReplyError::malformed("bad VALUE line", line);
    let mut fields = header.split(|&b| b == b' ');
    let key = fields
        .next()
        .filter(|k| !k.is_empty())
        .ok_or_else(bad_header)?;
    let flags = fields
        .next()
        .and_then(parse_decimal)
        .and_then(|f| u32::try_from(f).ok())
        .ok_or_else(bad_header)?;
    let declared = fields
        .next()
        .and_then(parse_decimal)
        .ok_or_else(bad_header)?;
    let cas = match fields.next() {
        Some(token) => Some(parse_decimal(token).ok_or_else(bad_header)?),
        None => None,
    };
    if fields.next().is_some() {
        return Err(bad_header());
    }
    let (data, total) = match data_block(buf, header_len, declared, max_value_len)? {
        Parse::Complete(data, total) => (data, total),
        Parse::Incomplete(needed) => return Ok(Parse::Incomplete(needed)),
    };
    Ok(Parse::Complete(
        RetrievalItem::Value(Value {
            key,
            flags,
            cas,
            data,
        }),
        total,
    ))
}

/// The data block of a value whose header line ends at `header_len` and declares `declared`
/// bytes: the data and the length of header, data and CRLF. A length over `max_value_len` (or
/// [`MAX_VALUE_LEN_LIMIT`]) is refused before its data arrives, and data not followed by CRLF
/// is malformed. Shared by the text protocol's `VALUE` and the meta protocol's `VA`.
pub(crate) fn data_block(
    buf: &[u8],
    header_len: usize,
    declared: u64,
    max_value_len: usize,
) -> Result<Parse<&[u8]>, ReplyError> {
    let limit = max_value_len.min(MAX_VALUE_LEN_LIMIT);
    let too_large = ReplyError::ValueTooLarge { declared, limit };
    let data_len = usize::try_from(declared)
        .ok()
        .filter(|len| *len <= limit)
        .ok_or_else(|| too_large.clone())?;
    // The limit keeps these far from overflowing; checked all the same, since the length is
    // the peer's word.
    let data_end = header_len
        .checked_add(data_len)
        .ok_or_else(|| too_large.clone())?;
    let total = data_end.checked_add(2).ok_or(too_large)?;
    if buf.len() < total {
        return Ok(Parse::Incomplete(total));
    }
    if &buf[data_end..total] != b"\r\n" {
        return Err(ReplyError::malformed(
            "value data not followed by CRLF",
            &buf[data_end..total],
        ));
    }
    Ok(Parse::Complete(&buf[header_len..data_end], total))
}

/// Runs `parse` but takes an error line the server sent in place of the reply (`SERVER_ERROR`,
/// `CLIENT_ERROR`, `ERROR`) as a complete reply of its own, with the bytes it used.
///
/// Pipelined requests need this: memcached keeps the stream in step after such an error, so the
/// replies to the following requests can still be read. An error line is a reply only as the
/// reply's first line: one found inside a multi-line reply (after a `STAT` line, say) means the
/// stream is out of step, and is [`ReplyError::Malformed`].
pub fn with_error_replies<'a, T>(
    buf: &'a [u8],
    parse: impl FnOnce(&'a [u8]) -> Result<Parse<T>, ReplyError>,
) -> Result<Parse<Result<T, ReplyError>>, ReplyError> {
    match parse(buf) {
        Ok(Parse::Complete(reply, used)) => Ok(Parse::Complete(Ok(reply), used)),
        Ok(Parse::Incomplete(needed)) => Ok(Parse::Incomplete(needed)),
        Err(stream @ (ReplyError::Malformed(_) | ReplyError::ValueTooLarge { .. })) => Err(stream),
        // The first line is looked at only now, off the path of every good reply.
        Err(error) => match next_line(buf)? {
            Some((line, used)) if error_line(line).is_some() => {
                Ok(Parse::Complete(Err(error), used))
            }
            // The parser met an error line further in.
            _ => Err(ReplyError::Malformed(
                "an error line inside a multi-line reply: the stream is out of step".to_owned(),
            )),
        },
    }
}

/// Parses a one-line reply with `interpret`; `expected` names the replies it knows for errors.
fn parse_line_reply<'a, T>(
    buf: &'a [u8],
    expected: &str,
    interpret: impl FnOnce(&'a [u8]) -> Option<T>,
) -> Result<Parse<T>, ReplyError> {
    let Some((line, used)) = next_line(buf)? else {
        return Ok(Parse::Incomplete(buf.len() + 1));
    };
    if let Some(error) = error_line(line) {
        return Err(error);
    }
    match interpret(line) {
        Some(reply) => Ok(Parse::Complete(reply, used)),
        None => Err(ReplyError::malformed(&format!("expected {expected}"), line)),
    }
}

/// Parses the reply to `set`, `add`, `replace`, `append`, `prepend` or `cas`.
pub fn parse_store(buf: &[u8]) -> Result<Parse<StoreReply>, ReplyError> {
    parse_line_reply(
        buf,
        "STORED, NOT_STORED, EXISTS or NOT_FOUND",
        |line| match line {
            b"STORED" => Some(StoreReply::Stored),
            b"NOT_STORED" => Some(StoreReply::NotStored),
            b"EXISTS" => Some(StoreReply::Exists),
            b"NOT_FOUND" => Some(StoreReply::NotFound),
            _ => None,
        },
    )
}

/// Parses the reply to `delete`.
pub fn parse_delete(buf: &[u8]) -> Result<Parse<DeleteReply>, ReplyError> {
    parse_line_reply(buf, "DELETED or NOT_FOUND", |line| match line {
        b"DELETED" => Some(DeleteReply::Deleted),
        b"NOT_FOUND" => Some(DeleteReply::NotFound),
        _ => None,
    })
}

/// Parses the reply to `incr` or `decr`.
pub fn parse_incr_decr(buf: &[u8]) -> Result<Parse<IncrDecrReply>, ReplyError> {
    parse_line_reply(buf, "a number or NOT_FOUND", |line| match line {
        b"NOT_FOUND" => Some(IncrDecrReply::NotFound),
        // Some servers pad the new value with spaces when it got shorter.
        digits => parse_decimal(digits.trim_ascii_end()).map(IncrDecrReply::Value),
    })
}

/// Parses the reply to `touch`.
pub fn parse_touch(buf: &[u8]) -> Result<Parse<TouchReply>, ReplyError> {
    parse_line_reply(buf, "TOUCHED or NOT_FOUND", |line| match line {
        b"TOUCHED" => Some(TouchReply::Touched),
        b"NOT_FOUND" => Some(TouchReply::NotFound),
        _ => None,
    })
}

/// Parses an `OK` reply (to `flush_all`).
pub fn parse_ok(buf: &[u8]) -> Result<Parse<()>, ReplyError> {
    parse_line_reply(buf, "OK", |line| (line == b"OK").then_some(()))
}

/// Parses the reply to `version`.
pub fn parse_version(buf: &[u8]) -> Result<Parse<String>, ReplyError> {
    parse_line_reply(buf, "VERSION <version>", |line| {
        line.strip_prefix(b"VERSION ")
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// Parses the reply to `stats`: `STAT <name> <value>` lines closed by `END`.
///
/// An error line is the reply only as the first line; after a `STAT` line it means the stream
/// is out of step ([`ReplyError::Malformed`]).
pub fn parse_stats(buf: &[u8]) -> Result<Parse<Vec<(String, String)>>, ReplyError> {
    let mut stats = Vec::new();
    let mut offset = 0;
    loop {
        if offset > MAX_STATS_LEN {
            return Err(ReplyError::Malformed("stats reply over 1 MiB".to_owned()));
        }
        let Some((line, used)) = next_line(&buf[offset..])? else {
            return Ok(Parse::Incomplete(buf.len() + 1));
        };
        let first = offset == 0;
        offset += used;
        if line == b"END" {
            return Ok(Parse::Complete(stats, offset));
        }
        if let Some(error) = error_line(line) {
            return Err(if first {
                error
            } else {
                ReplyError::malformed("an error line inside a stats reply", line)
            });
        }
        let stat = line
            .strip_prefix(b"STAT ")
            .ok_or_else(|| ReplyError::malformed("expected STAT or END", line))?;
        let text = String::from_utf8_lossy(stat);
        let (name, value) = text.split_once(' ').unwrap_or((&text, ""));
        stats.push((name.to_owned(), value.to_owned()));
    }
}

#[cfg(test)]
mod tests;
