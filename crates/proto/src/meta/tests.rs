//! Meta command tests: encodings, and every reply also fed split at every byte offset.

use super::*;
use crate::reply::DEFAULT_MAX_VALUE_LEN;

fn meta(buf: &[u8]) -> Result<Parse<MetaReply<'_>>, ReplyError> {
    parse_meta(buf, DEFAULT_MAX_VALUE_LEN)
}

/// Every strict prefix of `reply` is incomplete (asking for more than it holds), the whole is
/// complete using all its bytes; returns the status, flags and owned data.
fn at_every_split(reply: &[u8]) -> (MetaStatus, MetaFlags, Option<Vec<u8>>) {
    for cut in 0..reply.len() {
        match meta(&reply[..cut]) {
            Ok(Parse::Incomplete(needed)) => assert!(needed > cut, "cut {cut}: needs {needed}"),
            other => panic!("prefix of {cut} bytes of {reply:?} parsed as {other:?}"),
        }
    }
    match meta(reply) {
        Ok(Parse::Complete(r, used)) => {
            assert_eq!(used, reply.len());
            (r.status, r.flags, r.data.map(<[u8]>::to_vec))
        }
        other => panic!("{reply:?} parsed as {other:?}"),
    }
}

fn encoded(command: MetaCommand, key: &[u8], flags: &[MetaFlag], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_meta(&mut out, command, key, flags, data);
    out
}

#[test]
fn requests() {
    use MetaFlag::*;
    assert_eq!(
        encoded(
            MetaCommand::Get,
            b"k",
            &[Value, ReturnFlags, ReturnTtl, ReturnCas, Recache(5)],
            b""
        ),
        b"mg k v f t c R5\r\n"
    );
    assert_eq!(
        encoded(MetaCommand::Get, b"k:lease", &[Vivify(30)], b"ignored"),
        b"mg k:lease N30\r\n"
    );
    assert_eq!(
        encoded(
            MetaCommand::Set,
            b"k",
            &[ClientFlags(16), Ttl(-1), Mode(MetaMode::Add)],
            b"a\r\nb"
        ),
        b"ms k 4 F16 T-1 ME\r\na\r\nb\r\n"
    );
    assert_eq!(
        encoded(MetaCommand::Delete, b"k", &[CompareCas(99), Quiet], b""),
        b"md k C99 q\r\n"
    );
    assert_eq!(
        encoded(
            MetaCommand::Arithmetic,
            b"n",
            &[
                Vivify(0),
                Initial(10),
                Delta(3),
                Mode(MetaMode::Decrement),
                Value
            ],
            b""
        ),
        b"ma n N0 J10 D3 MD v\r\n"
    );
    assert_eq!(
        encoded(
            MetaCommand::Set,
            b"k",
            &[Mode(MetaMode::Set), Mode(MetaMode::Replace), Invalidate],
            b""
        ),
        b"ms k 0 MS MR I\r\n\r\n"
    );
    let mut noop = Vec::new();
    encode_meta_noop(&mut noop);
    assert_eq!(noop, b"mn\r\n");
    assert_eq!(
        encoded(
            MetaCommand::Arithmetic,
            b"n",
            &[Mode(MetaMode::Increment), Ttl(60)],
            b""
        ),
        b"ma n MI T60\r\n"
    );
}

#[test]
fn replies_at_every_split() {
    let (status, flags, data) = at_every_split(b"VA 3 f16 t29 c7\r\nabc\r\n");
    assert_eq!(status, MetaStatus::Value);
    assert_eq!(data.as_deref(), Some(&b"abc"[..]));
    assert_eq!(
        flags,
        MetaFlags {
            client_flags: Some(16),
            ttl: Some(29),
            cas: Some(7),
            ..MetaFlags::default()
        }
    );
    // Data that holds a reply's own markers is taken by its length.
    let (_, _, data) = at_every_split(b"VA 8 t-1\r\nHD\r\nEN\r\n\r\n");
    assert_eq!(data.as_deref(), Some(&b"HD\r\nEN\r\n"[..]));
    let (_, flags, _) = at_every_split(b"VA 0 f0 t-1 W\r\n\r\n");
    assert!(flags.won && !flags.win_sent && flags.ttl == Some(-1));
    let (status, flags, data) = at_every_split(b"HD W\r\n");
    assert_eq!((status, flags.won, data), (MetaStatus::Done, true, None));
    let (_, flags, _) = at_every_split(b"HD Z X\r\n");
    assert!(flags.win_sent && flags.stale && !flags.won);
    for (reply, status) in [
        (&b"HD\r\n"[..], MetaStatus::Done),
        (b"EN\r\n", MetaStatus::Miss),
        (b"NF\r\n", MetaStatus::NotFound),
        (b"NS\r\n", MetaStatus::NotStored),
        (b"EX\r\n", MetaStatus::Exists),
        (b"MN\r\n", MetaStatus::Noop),
        // Flags not asked for by this crate are read past.
        (b"HD kfoo Oabc s3\r\n", MetaStatus::Done),
        (b"HD \r\n", MetaStatus::Done),
    ] {
        assert_eq!(at_every_split(reply).0, status, "{reply:?}");
    }
    let (status, _, data) = at_every_split(b"VA 2\r\n42\r\n");
    assert_eq!(
        (status, data.as_deref()),
        (MetaStatus::Value, Some(&b"42"[..]))
    );
}

#[test]
fn error_lines_are_errors() {
    assert_eq!(meta(b"ERROR\r\n"), Err(ReplyError::UnknownCommand));
    assert_eq!(
        meta(b"CLIENT_ERROR bad command line format\r\n"),
        Err(ReplyError::Client("bad command line format".into()))
    );
    assert_eq!(
        meta(b"SERVER_ERROR out of memory\r\n"),
        Err(ReplyError::Server("out of memory".into()))
    );
}

#[test]
fn malformed_replies_are_refused() {
    for reply in [
        &b"OK\r\n"[..],
        b"VA\r\n",
        b"VA x\r\n",
        b"VA -1\r\n",
        b"VA 1 f-3\r\nx\r\n",
        b"VA 1 f4294967296\r\nx\r\n",
        b"VA 1 tx\r\nx\r\n",
        b"VA 1 c\r\nx\r\n",
        b"VA 1\r\nxyz\r\n",
        b"HD Wx\r\n",
        b"HD 1\r\n",
        b"HD f\x01\r\n",
        b"HDX\r\n",
        b"VALUE k 0 1\r\nx\r\n",
        b"EN\n",
    ] {
        assert!(
            matches!(meta(reply), Err(ReplyError::Malformed(_))),
            "{reply:?} -> {:?}",
            meta(reply)
        );
    }
}

#[test]
fn a_declared_length_over_the_cap_is_refused_before_its_data() {
    assert_eq!(
        parse_meta(b"VA 99999999999 f0\r\n", 1024),
        Err(ReplyError::ValueTooLarge {
            declared: 99_999_999_999,
            limit: 1024
        })
    );
    assert_eq!(
        parse_meta(b"VA 100 t5\r\nab", 1024),
        Ok(Parse::Incomplete(11 + 100 + 2))
    );
}

#[test]
fn the_noop_answer_says_whether_the_server_speaks_meta() {
    for (reply, speaks) in [
        (&b"MN\r\n"[..], true),
        (b"HD\r\n", true),
        (b"ERROR\r\n", false),
        (b"CLIENT_ERROR bad command line format\r\n", false),
        (b"OK\r\n", false),
        (b"EN\r\n", false),
    ] {
        for cut in 0..reply.len() {
            assert!(matches!(parse_meta_noop(&reply[..cut]), Ok(Parse::Incomplete(n)) if n > cut));
        }
        assert_eq!(
            parse_meta_noop(reply),
            Ok(Parse::Complete(speaks, reply.len()))
        );
    }
    assert_eq!(
        parse_meta_noop(b"SERVER_ERROR busy\r\n"),
        Err(ReplyError::Server("busy".into()))
    );
    assert!(matches!(
        parse_meta_noop(b"MN\n"),
        Err(ReplyError::Malformed(_))
    ));
}
