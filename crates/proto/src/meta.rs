//! memcached's meta commands (`mg`, `ms`, `md`, `ma`, `mn`, memcached 1.6): encoding, and the
//! incremental parsing of their one reply format.
//!
//! A meta request is a two-letter command, a key, (for `ms`) the data's length, and flags: one
//! letter each, some with a token (`N30`: vivify on a miss with a 30 s TTL). A reply is a
//! two-letter status, (for `VA`) the data's length, and the flags the request asked for (`t29`,
//! `c7`, `W`), then the data if any. Only the flags this crate's users need are typed; the
//! parser checks that every returned flag is well formed and that the numeric ones are numbers.

use crate::encode::put_num;
use crate::error::ReplyError;
use crate::reply::{data_block, next_line, parse_decimal, Parse};

/// The meta commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaCommand {
    /// `mg`: read an item (and change it: vivify, recache, touch).
    Get,
    /// `ms`: store an item (any mode: set, add, replace, append, prepend).
    Set,
    /// `md`: delete (or invalidate) an item.
    Delete,
    /// `ma`: arithmetic on a counter (creating it on a miss if asked).
    Arithmetic,
}

/// The storage mode of `ms` (flag `M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaMode {
    /// `E`: store only if the key holds no item (`add`).
    Add,
    /// `S`: store whatever is there (`set`, the default).
    Set,
    /// `R`: store only if the key holds an item (`replace`).
    Replace,
    /// `I`: `ma` increments (the default).
    Increment,
    /// `D`: `ma` decrements (stopping at 0).
    Decrement,
}

/// A request flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaFlag {
    /// `v`: return the value.
    Value,
    /// `f`: return the client flags.
    ReturnFlags,
    /// `t`: return the seconds left before expiry (`-1`: none).
    ReturnTtl,
    /// `c`: return the CAS token.
    ReturnCas,
    /// `q`: noreply semantics (the common replies are not sent).
    Quiet,
    /// `N<ttl>`: on a miss, create an empty item with this TTL and win (`W`) the right to
    /// fill it; later requests see `Z`. With `ma`: create the counter on a miss.
    Vivify(u32),
    /// `R<seconds>`: win (`W`) the right to recache when less than this TTL is left.
    Recache(u32),
    /// `T<exptime>`: the TTL to store (`ms`), or a new TTL (`mg`, `ma`).
    Ttl(i64),
    /// `F<flags>`: the client flags to store (`ms`).
    ClientFlags(u32),
    /// `C<cas>`: act only if the item's CAS token is this one.
    CompareCas(u64),
    /// `M<mode>`: the storage or arithmetic mode.
    Mode(MetaMode),
    /// `J<value>`: the counter's initial value when `ma` creates it.
    Initial(u64),
    /// `D<delta>`: what `ma` adds or subtracts.
    Delta(u64),
    /// `I`: `md` marks the item stale instead of deleting it.
    Invalidate,
}

/// Writes one flag, with the space before it.
fn put_flag(out: &mut Vec<u8>, flag: MetaFlag) {
    /// A flag's letter followed by its number.
    fn tagged(out: &mut Vec<u8>, letter: u8, n: impl std::fmt::Display) {
        out.push(letter);
        put_num(out, n);
    }
    out.push(b' ');
    match flag {
        MetaFlag::Value => out.push(b'v'),
        MetaFlag::ReturnFlags => out.push(b'f'),
        MetaFlag::ReturnTtl => out.push(b't'),
        MetaFlag::ReturnCas => out.push(b'c'),
        MetaFlag::Quiet => out.push(b'q'),
        MetaFlag::Invalidate => out.push(b'I'),
        MetaFlag::Vivify(ttl) => tagged(out, b'N', ttl),
        MetaFlag::Recache(ttl) => tagged(out, b'R', ttl),
        MetaFlag::Ttl(exptime) => tagged(out, b'T', exptime),
        MetaFlag::ClientFlags(flags) => tagged(out, b'F', flags),
        MetaFlag::CompareCas(cas) => tagged(out, b'C', cas),
        MetaFlag::Initial(value) => tagged(out, b'J', value),
        MetaFlag::Delta(delta) => tagged(out, b'D', delta),
        MetaFlag::Mode(mode) => {
            out.push(b'M');
            out.push(match mode {
                MetaMode::Add => b'E',
                MetaMode::Set => b'S',
                MetaMode::Replace => b'R',
                MetaMode::Increment => b'I',
                MetaMode::Decrement => b'D',
            });
        }
    }
}

/// `mg|md|ma <key> <flags>*`, or `ms <key> <datalen> <flags>*` followed by the data (`data` is
/// for `ms` only, and ignored by the others).
pub fn encode_meta(
    out: &mut Vec<u8>,
    command: MetaCommand,
    key: &[u8],
    flags: &[MetaFlag],
    data: &[u8],
) {
    out.reserve(key.len() + 8 + flags.len() * 12);
    out.extend_from_slice(match command {
        MetaCommand::Get => b"mg ",
        MetaCommand::Set => b"ms ",
        MetaCommand::Delete => b"md ",
        MetaCommand::Arithmetic => b"ma ",
    });
    out.extend_from_slice(key);
    if command == MetaCommand::Set {
        out.push(b' ');
        put_num(out, data.len());
    }
    for &flag in flags {
        put_flag(out, flag);
    }
    out.extend_from_slice(b"\r\n");
    if command == MetaCommand::Set {
        out.reserve(data.len() + 2);
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

/// `mn`: the meta no-op, answered `MN` by servers that speak the meta protocol (and `ERROR`
/// by those that do not): how a node's support is probed.
pub fn encode_meta_noop(out: &mut Vec<u8>) {
    out.extend_from_slice(b"mn\r\n");
}

/// Parses the answer to `mn`: whether the server speaks the meta protocol of memcached 1.6
/// (`MN`; `HD` is taken as the same). Any other line is a server without it: `ERROR` (1.4,
/// 1.5), `CLIENT_ERROR`, or the reply of an early 1.6 beta's dialect (`OK`, `EN`). Only
/// `SERVER_ERROR` (a server that failed to answer) is an error.
pub fn parse_meta_noop(buf: &[u8]) -> Result<Parse<bool>, ReplyError> {
    let Some((line, used)) = next_line(buf)? else {
        return Ok(Parse::Incomplete(buf.len() + 1));
    };
    match crate::reply::error_line(line) {
        Some(error @ ReplyError::Server(_)) => Err(error),
        _ => Ok(Parse::Complete(matches!(line, b"MN" | b"HD"), used)),
    }
}

/// A meta reply's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaStatus {
    /// `VA`: a value follows.
    Value,
    /// `HD`: success, no value (`mg` hit without `v`, stored, deleted, counted).
    Done,
    /// `EN`: `mg` found no item.
    Miss,
    /// `NF`: not found (`md`, `ma`, `ms` with a CAS).
    NotFound,
    /// `NS`: not stored (`ms` in add/replace mode, `ma` that could not create).
    NotStored,
    /// `EX`: the CAS token did not match.
    Exists,
    /// `MN`: the reply to `mn`.
    Noop,
}

/// The returned flags this crate knows, and whether the recache flags were set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaFlags {
    /// `f`: the item's client flags.
    pub client_flags: Option<u32>,
    /// `t`: seconds left before expiry; `-1` when the item never expires.
    pub ttl: Option<i64>,
    /// `c`: the CAS token.
    pub cas: Option<u64>,
    /// `W`: this client won the right to (re)compute the item.
    pub won: bool,
    /// `Z`: another client already won it.
    pub win_sent: bool,
    /// `X`: the item is stale (invalidated).
    pub stale: bool,
}

/// A meta reply, borrowed from the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaReply<'a> {
    /// What happened.
    pub status: MetaStatus,
    /// The flags returned.
    pub flags: MetaFlags,
    /// The data of a `VA` reply (a value, or `ma`'s number).
    pub data: Option<&'a [u8]>,
}

/// Reads the returned flags of a reply line, refusing any that is not a letter followed by
/// printable bytes, or a numeric flag that is not a number.
fn parse_flags<'a>(
    tokens: impl Iterator<Item = &'a [u8]>,
    line: &[u8],
) -> Result<MetaFlags, ReplyError> {
    let bad = || ReplyError::malformed("bad meta reply flag", line);
    let mut flags = MetaFlags::default();
    // Empty tokens (a doubled or trailing space) carry nothing: skipped.
    for token in tokens.filter(|t| !t.is_empty()) {
        let (&letter, rest) = token.split_first().ok_or_else(bad)?;
        if !letter.is_ascii_alphabetic() || !rest.iter().all(u8::is_ascii_graphic) {
            return Err(bad());
        }
        match letter {
            b'f' => {
                let value = parse_decimal(rest).and_then(|v| u32::try_from(v).ok());
                flags.client_flags = Some(value.ok_or_else(bad)?);
            }
            b't' => {
                let value = match rest {
                    b"-1" => Some(-1),
                    digits => parse_decimal(digits).and_then(|v| i64::try_from(v).ok()),
                };
                flags.ttl = Some(value.ok_or_else(bad)?);
            }
            b'c' => flags.cas = Some(parse_decimal(rest).ok_or_else(bad)?),
            b'W' if rest.is_empty() => flags.won = true,
            b'Z' if rest.is_empty() => flags.win_sent = true,
            b'X' if rest.is_empty() => flags.stale = true,
            b'W' | b'Z' | b'X' => return Err(bad()),
            // Flags this crate does not ask for (`k`, `O`, `s`...): well formed, not kept.
            _ => {}
        }
    }
    Ok(flags)
}

/// Parses one meta reply (to `mg`, `ms`, `md`, `ma` or `mn`). A `VA` reply's declared length
/// over `max_value_len` (or [`MAX_VALUE_LEN_LIMIT`]) is an error before its data is awaited.
/// Error lines (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`) are errors, as with the other parsers.
pub fn parse_meta(buf: &[u8], max_value_len: usize) -> Result<Parse<MetaReply<'_>>, ReplyError> {
    let Some((line, header_len)) = next_line(buf)? else {
        return Ok(Parse::Incomplete(buf.len() + 1));
    };
    if let Some(error) = crate::reply::error_line(line) {
        return Err(error);
    }
    let mut tokens = line.split(|&b| b == b' ');
    let code = tokens.next().unwrap_or_default();
    let status = match code {
        b"VA" => MetaStatus::Value,
        b"HD" => MetaStatus::Done,
        b"EN" => MetaStatus::Miss,
        b"NF" => MetaStatus::NotFound,
        b"NS" => MetaStatus::NotStored,
        b"EX" => MetaStatus::Exists,
        b"MN" => MetaStatus::Noop,
        _ => return Err(ReplyError::malformed("expected a meta reply", line)),
    };
    if status != MetaStatus::Value {
        let flags = parse_flags(tokens, line)?;
        return Ok(Parse::Complete(
            MetaReply {
                status,
                flags,
                data: None,
            },
            header_len,
        ));
    }
    let declared = tokens
        .next()
        .and_then(parse_decimal)
        .ok_or_else(|| ReplyError::malformed("bad VA line", line))?;
    let flags = parse_flags(tokens, line)?;
    let (data, total) = match data_block(buf, header_len, declared, max_value_len)? {
        Parse::Complete(data, total) => (data, total),
        Parse::Incomplete(needed) => return Ok(Parse::Incomplete(needed)),
    };
    Ok(Parse::Complete(
        MetaReply {
            status,
            flags,
            data: Some(data),
        },
        total,
    ))
}

#[cfg(test)]
mod tests;
