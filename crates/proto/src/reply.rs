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

/// The most bytes a whole `stats` reply may take.
const MAX_STATS_LEN: usize = 1024 * 1024;

/// The outcome of looking at a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse<T> {
    /// More bytes are needed: the buffer must hold at least this many before the reply can
    /// complete (a lower bound; exact once a value header has been read).
    Incomplete(usize),
    /// A whole reply, and how many bytes at the start of the buffer it used.
    Complete(T, usize),
}

/// One item of a `get`/`gets` reply: a value, or the `END` that closes the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrievalItem<'a> {
    Value(Value<'a>),
    End,
}

/// A value as the server sent it, borrowed from the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value<'a> {
    pub key: &'a [u8],
    pub flags: u32,
    pub cas: Option<u64>,
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreReply {
    Stored,
    NotStored,
    Exists,
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReply {
    Deleted,
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrDecrReply {
    Value(u64),
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchReply {
    Touched,
    NotFound,
}

/// The first CRLF-terminated line of `buf` (without its CRLF) and the bytes it spans.
fn next_line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ReplyError> {
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

/// The error a line reports, if it is one of the protocol's error lines.
fn error_line(line: &[u8]) -> Option<ReplyError> {
    let message = |rest: &[u8]| String::from_utf8_lossy(rest.trim_ascii()).into_owned();
    if line == b"ERROR" || line.starts_with(b"ERROR ") {
        Some(ReplyError::UnknownCommand)
    } else if let Some(rest) = line.strip_prefix(b"CLIENT_ERROR") {
        Some(ReplyError::Client(message(rest)))
    } else {
        line.strip_prefix(b"SERVER_ERROR")
            .map(|rest| ReplyError::Server(message(rest)))
    }
}

/// A decimal number without sign, as the protocol writes them; `None` on anything else.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
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
/// [`RetrievalItem::End`]. A declared length over `max_value_len` is an error before any of the
/// data is awaited, so the caller never reserves room for it.
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
    let data_len = usize::try_from(declared)
        .ok()
        .filter(|len| *len <= max_value_len)
        .ok_or(ReplyError::ValueTooLarge {
            declared,
            limit: max_value_len,
        })?;
    let data_end = header_len + data_len;
    let total = data_end + 2;
    if buf.len() < total {
        return Ok(Parse::Incomplete(total));
    }
    if &buf[data_end..total] != b"\r\n" {
        return Err(ReplyError::malformed(
            "value data not followed by CRLF",
            &buf[data_end..total],
        ));
    }
    let data = &buf[header_len..data_end];
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

/// Runs `parse` but takes an error line the server sent in place of the reply (`SERVER_ERROR`,
/// `CLIENT_ERROR`, `ERROR`) as a complete reply of its own, with the bytes it used.
///
/// Pipelined requests need this: memcached keeps the stream in step after such an error, so the
/// replies to the following requests can still be read.
pub fn with_error_replies<T>(
    buf: &[u8],
    parse: impl FnOnce(&[u8]) -> Result<Parse<T>, ReplyError>,
) -> Result<Parse<Result<T, ReplyError>>, ReplyError> {
    match parse(buf) {
        Ok(Parse::Complete(reply, used)) => Ok(Parse::Complete(Ok(reply), used)),
        Ok(Parse::Incomplete(needed)) => Ok(Parse::Incomplete(needed)),
        Err(stream @ (ReplyError::Malformed(_) | ReplyError::ValueTooLarge { .. })) => Err(stream),
        Err(server) => match next_line(buf)? {
            Some((_, used)) => Ok(Parse::Complete(Err(server), used)),
            None => Err(ReplyError::Malformed(
                "error reply without a line".to_owned(),
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
        offset += used;
        if line == b"END" {
            return Ok(Parse::Complete(stats, offset));
        }
        if let Some(error) = error_line(line) {
            return Err(error);
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
