//! Request encoding: each function appends one complete command to the caller's buffer.
//!
//! Keys are written as given: the caller validates them first (`validate_key`), because a
//! client usually validates once and then encodes the same key into several buffers.

use std::io::Write;

/// `get` returns values; `gets` also returns their CAS tokens.
///
/// More commands may be added (`gat`, `gats`), so a match on it needs a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retrieval {
    /// `get`: values and their flags.
    Get,
    /// `gets`: values, flags and CAS tokens.
    Gets,
}

/// The storage commands, which share one wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Store whatever is there.
    Set,
    /// Store only if the key holds no item.
    Add,
    /// Store only if the key holds an item.
    Replace,
    /// Add the data after an existing item's.
    Append,
    /// Add the data before an existing item's.
    Prepend,
    /// Store only if the item's CAS token is still this one.
    Cas(u64),
}

/// The two counter commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Add the delta (wrapping at 2^64).
    Incr,
    /// Subtract the delta (stopping at 0).
    Decr,
}

fn noreply_suffix(noreply: bool) -> &'static [u8] {
    if noreply {
        b" noreply\r\n"
    } else {
        b"\r\n"
    }
}

// Writing to a Vec<u8> cannot fail, so the io::Result of write! carries no information.
pub(crate) fn put_num(out: &mut Vec<u8>, n: impl std::fmt::Display) {
    let _ = write!(out, "{n}");
}

/// `get <key>*` or `gets <key>*`: one command line for all keys.
pub fn encode_retrieval<'k>(
    out: &mut Vec<u8>,
    kind: Retrieval,
    keys: impl IntoIterator<Item = &'k [u8]>,
) {
    out.extend_from_slice(match kind {
        Retrieval::Get => b"get",
        Retrieval::Gets => b"gets",
    });
    for key in keys {
        out.push(b' ');
        out.extend_from_slice(key);
    }
    out.extend_from_slice(b"\r\n");
}

/// `<cmd> <key> <flags> <exptime> <bytes> [<cas>] [noreply]\r\n<data>\r\n`.
pub fn encode_store(
    out: &mut Vec<u8>,
    command: Store,
    key: &[u8],
    flags: u32,
    exptime: i64,
    data: &[u8],
    noreply: bool,
) {
    out.reserve(key.len() + data.len() + 64);
    out.extend_from_slice(match command {
        Store::Set => b"set ",
        Store::Add => b"add ",
        Store::Replace => b"replace ",
        Store::Append => b"append ",
        Store::Prepend => b"prepend ",
        Store::Cas(_) => b"cas ",
    });
    out.extend_from_slice(key);
    out.push(b' ');
    put_num(out, flags);
    out.push(b' ');
    put_num(out, exptime);
    out.push(b' ');
    put_num(out, data.len());
    if let Store::Cas(token) = command {
        out.push(b' ');
        put_num(out, token);
    }
    out.extend_from_slice(noreply_suffix(noreply));
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// `delete <key> [noreply]`.
pub fn encode_delete(out: &mut Vec<u8>, key: &[u8], noreply: bool) {
    out.extend_from_slice(b"delete ");
    out.extend_from_slice(key);
    out.extend_from_slice(noreply_suffix(noreply));
}

/// `incr|decr <key> <delta> [noreply]`.
pub fn encode_incr_decr(out: &mut Vec<u8>, op: Counter, key: &[u8], delta: u64, noreply: bool) {
    out.extend_from_slice(match op {
        Counter::Incr => b"incr ",
        Counter::Decr => b"decr ",
    });
    out.extend_from_slice(key);
    out.push(b' ');
    put_num(out, delta);
    out.extend_from_slice(noreply_suffix(noreply));
}

/// `touch <key> <exptime> [noreply]`.
pub fn encode_touch(out: &mut Vec<u8>, key: &[u8], exptime: i64, noreply: bool) {
    out.extend_from_slice(b"touch ");
    out.extend_from_slice(key);
    out.push(b' ');
    put_num(out, exptime);
    out.extend_from_slice(noreply_suffix(noreply));
}

/// `flush_all [delay] [noreply]`.
pub fn encode_flush_all(out: &mut Vec<u8>, delay: Option<u32>, noreply: bool) {
    out.extend_from_slice(b"flush_all");
    if let Some(delay) = delay {
        out.push(b' ');
        put_num(out, delay);
    }
    out.extend_from_slice(noreply_suffix(noreply));
}

/// `version`.
pub fn encode_version(out: &mut Vec<u8>) {
    out.extend_from_slice(b"version\r\n");
}

/// `stats [group]`, e.g. `stats` or `stats settings`.
pub fn encode_stats(out: &mut Vec<u8>, group: Option<&str>) {
    out.extend_from_slice(b"stats");
    if let Some(group) = group {
        out.push(b' ');
        out.extend_from_slice(group.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn retrieval_puts_every_key_on_one_line() {
        let keys: [&[u8]; 2] = [b"a", b"b"];
        assert_eq!(
            encoded(|o| encode_retrieval(o, Retrieval::Get, keys)),
            b"get a b\r\n"
        );
        assert_eq!(
            encoded(|o| encode_retrieval(o, Retrieval::Gets, [&b"k"[..]])),
            b"gets k\r\n"
        );
    }

    #[test]
    fn store_commands() {
        assert_eq!(
            encoded(|o| encode_store(o, Store::Set, b"k", 16, 0, b"v\r\nEND", false)),
            b"set k 16 0 6\r\nv\r\nEND\r\n"
        );
        assert_eq!(
            encoded(|o| encode_store(o, Store::Add, b"k", 0, -1, b"", true)),
            b"add k 0 -1 0 noreply\r\n\r\n"
        );
        assert_eq!(
            encoded(|o| encode_store(o, Store::Cas(99), b"k", 1, 30, b"x", false)),
            b"cas k 1 30 1 99\r\nx\r\n"
        );
        for (cmd, word) in [
            (Store::Replace, "replace"),
            (Store::Append, "append"),
            (Store::Prepend, "prepend"),
        ] {
            let line = encoded(|o| encode_store(o, cmd, b"k", 0, 0, b"x", false));
            assert_eq!(line, format!("{word} k 0 0 1\r\nx\r\n").as_bytes());
        }
    }

    #[test]
    fn other_commands() {
        assert_eq!(encoded(|o| encode_delete(o, b"k", false)), b"delete k\r\n");
        assert_eq!(
            encoded(|o| encode_delete(o, b"k", true)),
            b"delete k noreply\r\n"
        );
        assert_eq!(
            encoded(|o| encode_incr_decr(o, Counter::Incr, b"k", 5, false)),
            b"incr k 5\r\n"
        );
        assert_eq!(
            encoded(|o| encode_incr_decr(o, Counter::Decr, b"k", 1, true)),
            b"decr k 1 noreply\r\n"
        );
        assert_eq!(
            encoded(|o| encode_touch(o, b"k", 60, false)),
            b"touch k 60\r\n"
        );
        assert_eq!(
            encoded(|o| encode_flush_all(o, None, false)),
            b"flush_all\r\n"
        );
        assert_eq!(
            encoded(|o| encode_flush_all(o, Some(5), true)),
            b"flush_all 5 noreply\r\n"
        );
        assert_eq!(encoded(encode_version), b"version\r\n");
        assert_eq!(encoded(|o| encode_stats(o, None)), b"stats\r\n");
        assert_eq!(
            encoded(|o| encode_stats(o, Some("settings"))),
            b"stats settings\r\n"
        );
    }
}
