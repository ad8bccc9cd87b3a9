//! The properties every reply parser must keep, checked on arbitrary bytes: one dispatch from a
//! fuzz target's name to the parser it drives, shared by the cargo-fuzz targets in `fuzz/` and
//! the test that replays their corpus. Not part of the supported API.

use std::fmt::Debug;

use crate::{
    parse_cluster_config, parse_delete, parse_incr_decr, parse_meta, parse_meta_noop, parse_ok,
    parse_retrieval, parse_stats, parse_store, parse_touch, parse_version, with_error_replies,
    Parse, ReplyError, RetrievalItem, MAX_LINE_LEN, MAX_VALUE_LEN_LIMIT,
};

/// The cap `parse_retrieval` gets in [`Target::RetrievalSmall`]: small enough for the fuzzer to
/// reach the too-large path with short inputs.
pub const SMALL_MAX_VALUE_LEN: usize = 64;

/// One fuzz target: a parser, and for the reply parsers also the same parser wrapped in
/// [`with_error_replies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `parse_retrieval` with a cap of [`SMALL_MAX_VALUE_LEN`].
    RetrievalSmall,
    /// `parse_retrieval` with no cap of the caller's (`usize::MAX`): only the hard limit holds.
    RetrievalHuge,
    /// `parse_store`.
    Store,
    /// `parse_delete`.
    Delete,
    /// `parse_incr_decr`.
    IncrDecr,
    /// `parse_touch`.
    Touch,
    /// `parse_ok`.
    Ok,
    /// `parse_version`.
    Version,
    /// `parse_stats`.
    Stats,
    /// `parse_cluster_config`.
    ClusterConfig,
    /// `parse_meta` (the meta commands' replies) with a cap of [`SMALL_MAX_VALUE_LEN`].
    Meta,
    /// `parse_meta_noop` (the probe for meta support).
    MetaNoop,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 12] = [
        Target::RetrievalSmall,
        Target::RetrievalHuge,
        Target::Store,
        Target::Delete,
        Target::IncrDecr,
        Target::Touch,
        Target::Ok,
        Target::Version,
        Target::Stats,
        Target::ClusterConfig,
        Target::Meta,
        Target::MetaNoop,
    ];

    /// The cargo-fuzz target's name, which is also its corpus directory's.
    pub fn name(self) -> &'static str {
        match self {
            Target::RetrievalSmall => "parse_retrieval_small",
            Target::RetrievalHuge => "parse_retrieval_huge",
            Target::Store => "parse_store",
            Target::Delete => "parse_delete",
            Target::IncrDecr => "parse_incr_decr",
            Target::Touch => "parse_touch",
            Target::Ok => "parse_ok",
            Target::Version => "parse_version",
            Target::Stats => "parse_stats",
            Target::ClusterConfig => "parse_cluster_config",
            Target::Meta => "parse_meta",
            Target::MetaNoop => "parse_meta_noop",
        }
    }

    /// The target with this name.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|target| target.name() == name)
    }
}

/// A value of `get` reply owned rather than borrowed, so that outcomes can be compared.
type OwnedItem = Option<(Vec<u8>, u32, Option<u64>, Vec<u8>)>;

fn owned_retrieval(buf: &[u8], max_value_len: usize) -> Result<Parse<OwnedItem>, ReplyError> {
    Ok(match parse_retrieval(buf, max_value_len)? {
        Parse::Incomplete(needed) => Parse::Incomplete(needed),
        Parse::Complete(RetrievalItem::End, used) => Parse::Complete(None, used),
        Parse::Complete(RetrievalItem::Value(v), used) => Parse::Complete(
            Some((v.key.to_vec(), v.flags, v.cas, v.data.to_vec())),
            used,
        ),
    })
}

/// A meta reply owned rather than borrowed.
type OwnedMeta = (crate::MetaStatus, crate::MetaFlags, Option<Vec<u8>>);

fn owned_meta(buf: &[u8]) -> Result<Parse<OwnedMeta>, ReplyError> {
    Ok(match parse_meta(buf, SMALL_MAX_VALUE_LEN)? {
        Parse::Incomplete(needed) => Parse::Incomplete(needed),
        Parse::Complete(reply, used) => Parse::Complete(
            (reply.status, reply.flags, reply.data.map(<[u8]>::to_vec)),
            used,
        ),
    })
}

/// Checks every property of `target`'s parser on `data`; the error describes the first that
/// does not hold.
pub fn check(target: Target, data: &[u8]) -> Result<(), String> {
    // The longest a retrieval item can be: a header line, the largest value, its CRLF.
    let item_bound = |cap: usize| MAX_LINE_LEN + cap.min(MAX_VALUE_LEN_LIMIT) + 2;
    match target {
        Target::RetrievalSmall => check_reply(data, item_bound(SMALL_MAX_VALUE_LEN), |b| {
            owned_retrieval(b, SMALL_MAX_VALUE_LEN)
        }),
        Target::RetrievalHuge => check_reply(data, item_bound(usize::MAX), |b| {
            owned_retrieval(b, usize::MAX)
        }),
        Target::Store => check_reply(data, 0, parse_store),
        Target::Delete => check_reply(data, 0, parse_delete),
        Target::IncrDecr => check_reply(data, 0, parse_incr_decr),
        Target::Touch => check_reply(data, 0, parse_touch),
        Target::Ok => check_reply(data, 0, parse_ok),
        Target::Version => check_reply(data, 0, parse_version),
        Target::Stats => check_reply(data, 0, parse_stats),
        Target::ClusterConfig => check_parser(data, 0, parse_cluster_config),
        Target::Meta => check_reply(data, item_bound(SMALL_MAX_VALUE_LEN), owned_meta),
        // Its error lines are answers, not errors (but SERVER_ERROR), so it is checked alone.
        Target::MetaNoop => check_parser(data, 0, parse_meta_noop),
    }
}

/// [`check_parser`] on `parse` alone and wrapped in [`with_error_replies`], and the wrapper's
/// promise: it changes nothing but an error line that is the reply's first line, which becomes
/// a complete reply of that line.
fn check_reply<T: Clone + PartialEq + Debug>(
    buf: &[u8],
    max_needed: usize,
    parse: impl Fn(&[u8]) -> Result<Parse<T>, ReplyError>,
) -> Result<(), String> {
    check_parser(buf, max_needed, &parse)?;
    let wrapped = |b: &[u8]| with_error_replies(b, &parse);
    check_parser(buf, max_needed, wrapped)?;
    let bare = parse(buf);
    let expected = match &bare {
        Ok(Parse::Complete(reply, used)) => Ok(Parse::Complete(Ok(reply.clone()), *used)),
        Ok(Parse::Incomplete(needed)) => Ok(Parse::Incomplete(*needed)),
        Err(stream @ (ReplyError::Malformed(_) | ReplyError::ValueTooLarge { .. })) => {
            Err(stream.clone())
        }
        // A server's error line is only ever reported from the reply's first line.
        Err(server) => {
            let first_line = memchr::memchr(b'\n', buf).map_or(0, |end| end + 1);
            Ok(Parse::Complete(Err(server.clone()), first_line))
        }
    };
    let got = wrapped(buf);
    if got != expected {
        return Err(format!(
            "{}: alone {bare:?}, wrapped {got:?}, expected {expected:?}",
            shown(buf)
        ));
    }
    Ok(())
}

/// The properties of one parser on `buf`:
/// - the same bytes give the same outcome;
/// - `Incomplete(n)` asks for more than `buf` holds, and no more than `max_needed` (or one
///   byte more than `buf`, whichever is larger): the peer cannot make the caller reserve more;
/// - `Complete(_, used)` uses at least one byte and no more than `buf` holds;
/// - the reply is framed by its own bytes: `buf[..used]` alone gives the same outcome, and
///   each shorter prefix is incomplete, asking for more than it holds and at most `used`.
fn check_parser<T: PartialEq + Debug>(
    buf: &[u8],
    max_needed: usize,
    parse: impl Fn(&[u8]) -> Result<Parse<T>, ReplyError>,
) -> Result<(), String> {
    let outcome = parse(buf);
    let again = parse(buf);
    if again != outcome {
        return Err(format!(
            "{}: not deterministic: {outcome:?}, then {again:?}",
            shown(buf)
        ));
    }
    match &outcome {
        Ok(Parse::Incomplete(needed)) => {
            if *needed <= buf.len() || *needed > max_needed.max(buf.len() + 1) {
                return Err(format!(
                    "{} ({} bytes): asks for {needed} (bound {max_needed})",
                    shown(buf),
                    buf.len()
                ));
            }
        }
        Ok(Parse::Complete(_, used)) => {
            let used = *used;
            if used == 0 || used > buf.len() {
                return Err(format!(
                    "{} ({} bytes): complete using {used}",
                    shown(buf),
                    buf.len()
                ));
            }
            let alone = parse(&buf[..used]);
            if alone != outcome {
                return Err(format!(
                    "{}: gives {outcome:?}, its first {used} bytes alone {alone:?}",
                    shown(buf)
                ));
            }
            for cut in prefix_lengths(buf, used) {
                let prefix = parse(&buf[..cut]);
                if !matches!(prefix, Ok(Parse::Incomplete(n)) if n > cut && n <= used) {
                    return Err(format!(
                        "{}: complete with {used} bytes, its first {cut} give {prefix:?}",
                        shown(buf)
                    ));
                }
            }
        }
        Err(_) => {}
    }
    Ok(())
}

/// `buf` as a byte-string literal, cut short if long, for messages.
fn shown(buf: &[u8]) -> String {
    const SHOWN: usize = 200;
    let more = if buf.len() > SHOWN { "..." } else { "" };
    format!("b\"{}\"{more}", buf[..buf.len().min(SHOWN)].escape_ascii())
}

/// The strict prefix lengths of a `used`-byte reply at the start of `buf` to check: all of them
/// for short replies; for long ones an even sample, the last, and both sides of the first line
/// ends (where framing mistakes live), so that a check stays linear in the input.
fn prefix_lengths(buf: &[u8], used: usize) -> Vec<usize> {
    const ALL_BELOW: usize = 128;
    const SAMPLES: usize = 64;
    const LINE_ENDS: usize = 32;
    if used <= ALL_BELOW {
        return (0..used).collect();
    }
    let mut cuts: Vec<usize> = (0..used).step_by(used / SAMPLES).collect();
    for end in memchr::memchr_iter(b'\n', &buf[..used]).take(LINE_ENDS) {
        cuts.extend([end, end + 1].into_iter().filter(|cut| *cut < used));
    }
    cuts.push(used - 1);
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for target in Target::ALL {
            assert_eq!(Target::from_name(target.name()), Some(target));
        }
        assert_eq!(Target::from_name("parse_nothing"), None);
    }

    #[test]
    fn a_framing_error_is_a_violation() {
        // The bug the fuzzer found: an error line further in taken as the whole reply.
        let wrong = |b: &[u8]| -> Result<Parse<()>, ReplyError> {
            match b.iter().position(|&c| c == b'\n') {
                Some(end) if b.len() > end + 1 => Ok(Parse::Complete((), end + 1)),
                _ => Ok(Parse::Incomplete(b.len() + 1)),
            }
        };
        assert!(check_parser(b"STAT \r\nERROR\r\n", 0, wrong).is_err());
        assert!(check_parser(b"STAT \r\nERROR\r\n", 0, parse_stats).is_ok());
    }

    #[test]
    fn real_replies_hold() {
        for target in Target::ALL {
            for reply in [
                &b"VALUE k 0 3\r\nabc\r\nEND\r\n"[..],
                b"STAT pid 1\r\nEND\r\n",
                b"STORED\r\n",
                b"SERVER_ERROR out of memory\r\n",
                b"CONFIG cluster 0 25\r\n1\nhost|10.0.0.1|11211\n\r\nEND\r\n",
            ] {
                assert_eq!(check(target, reply), Ok(()), "{}", target.name());
            }
        }
    }
}
