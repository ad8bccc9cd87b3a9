//! Reply parser tests: every reply is also fed split at every byte offset.

use super::*;

/// Asserts that every strict prefix of `reply` is incomplete and the whole is complete, using
/// exactly all its bytes. Returns the parsed whole.
fn at_every_split<T: std::fmt::Debug>(
    reply: &[u8],
    parse: impl Fn(&[u8]) -> Result<Parse<T>, ReplyError>,
) -> T {
    for cut in 0..reply.len() {
        match parse(&reply[..cut]) {
            Ok(Parse::Incomplete(needed)) => assert!(needed > cut, "cut {cut}: needs {needed}"),
            other => panic!("prefix of {cut} bytes of {reply:?} parsed as {other:?}"),
        }
    }
    match parse(reply) {
        Ok(Parse::Complete(value, used)) => {
            assert_eq!(used, reply.len());
            value
        }
        other => panic!("{reply:?} parsed as {other:?}"),
    }
}

fn retrieval(buf: &[u8]) -> Result<Parse<RetrievalItem<'_>>, ReplyError> {
    parse_retrieval(buf, DEFAULT_MAX_VALUE_LEN)
}

/// Parses a whole get reply into owned (key, flags, cas, data) items, feeding it in pieces of
/// `chunk` bytes the way a socket would deliver it.
type OwnedValue = (Vec<u8>, u32, Option<u64>, Vec<u8>);

fn read_all_values(reply: &[u8], chunk: usize) -> Vec<OwnedValue> {
    let mut buffer = Vec::new();
    let mut fed = 0;
    let mut values = Vec::new();
    loop {
        match retrieval(&buffer).expect("valid reply") {
            Parse::Complete(RetrievalItem::End, used) => {
                assert_eq!(used, buffer.len());
                assert_eq!(fed, reply.len());
                return values;
            }
            Parse::Complete(RetrievalItem::Value(v), used) => {
                values.push((v.key.to_vec(), v.flags, v.cas, v.data.to_vec()));
                buffer.drain(..used);
            }
            Parse::Incomplete(_) => {
                assert!(fed < reply.len(), "incomplete after all input");
                let next = (fed + chunk).min(reply.len());
                buffer.extend_from_slice(&reply[fed..next]);
                fed = next;
            }
        }
    }
}

#[test]
fn value_whose_data_contains_end_marker() {
    let reply = b"VALUE k 16 13\r\nx\r\nEND\r\nEND\r\n\r\nEND\r\n";
    let item = at_every_split(&reply[..reply.len() - 5], |b| {
        retrieval(b).map(|p| match p {
            Parse::Complete(RetrievalItem::Value(v), n) => {
                Parse::Complete((v.key.to_vec(), v.flags, v.data.to_vec()), n)
            }
            Parse::Complete(RetrievalItem::End, n) => Parse::Complete((vec![], 0, vec![]), n),
            Parse::Incomplete(n) => Parse::Incomplete(n),
        })
    });
    assert_eq!(item, (b"k".to_vec(), 16, b"x\r\nEND\r\nEND\r\n".to_vec()));
    for chunk in 1..reply.len() {
        let values = read_all_values(reply, chunk);
        assert_eq!(
            values,
            vec![(b"k".to_vec(), 16, None, b"x\r\nEND\r\nEND\r\n".to_vec())]
        );
    }
}

#[test]
fn multi_value_reply_with_cas_and_empty_value() {
    let reply = b"VALUE a 0 3 7\r\nabc\r\nVALUE b 4294967295 0 8\r\n\r\nEND\r\n";
    for chunk in 1..=reply.len() {
        assert_eq!(
            read_all_values(reply, chunk),
            vec![
                (b"a".to_vec(), 0, Some(7), b"abc".to_vec()),
                (b"b".to_vec(), u32::MAX, Some(8), vec![]),
            ]
        );
    }
}

#[test]
fn incomplete_value_reports_the_exact_length_needed() {
    assert_eq!(
        retrieval(b"VALUE k 0 100\r\nab"),
        Ok(Parse::Incomplete(15 + 100 + 2))
    );
}

#[test]
fn declared_length_over_cap_is_refused_before_the_data_arrives() {
    assert_eq!(
        parse_retrieval(b"VALUE k 0 99999999999\r\n", 1024),
        Err(ReplyError::ValueTooLarge {
            declared: 99_999_999_999,
            limit: 1024
        })
    );
    assert!(matches!(
        retrieval(b"VALUE k 0 999999999999999999999999\r\n"),
        Err(ReplyError::Malformed(_))
    ));
}

#[test]
fn malformed_value_headers() {
    for reply in [
        &b"VALUE k 0\r\n"[..],
        b"VALUE k x 1\r\nx\r\n",
        b"VALUE k 0 -1\r\n",
        b"VALUE k 4294967296 1\r\nx\r\n",
        b"VALUE k 0 1 2 3\r\nx\r\n",
        b"VALUE  0 1\r\nx\r\n",
        b"VALUE k 0 1\r\nxyz\r\n",
        b"VALUES k 0 1\r\nx\r\n",
        b"HELLO\r\n",
        b"\x00\xff\xfeHELLO\r\n",
        b"END\n",
    ] {
        assert!(
            matches!(retrieval(reply), Err(ReplyError::Malformed(_))),
            "{reply:?} -> {:?}",
            retrieval(reply)
        );
    }
}

#[test]
fn a_line_that_never_ends_is_refused_once_over_the_limit() {
    let endless = vec![b'x'; MAX_LINE_LEN];
    assert!(matches!(retrieval(&endless), Err(ReplyError::Malformed(_))));
    assert!(matches!(
        retrieval(&endless[..MAX_LINE_LEN - 1]),
        Ok(Parse::Incomplete(_))
    ));
}

#[test]
fn error_lines_are_recognised_by_every_parser() {
    let cases: [(&[u8], ReplyError); 4] = [
        (b"ERROR\r\n", ReplyError::UnknownCommand),
        (
            b"CLIENT_ERROR bad data chunk\r\n",
            ReplyError::Client("bad data chunk".into()),
        ),
        (
            b"SERVER_ERROR object too large for cache\r\n",
            ReplyError::Server("object too large for cache".into()),
        ),
        (b"SERVER_ERROR\r\n", ReplyError::Server(String::new())),
    ];
    for (line, expected) in cases {
        assert_eq!(retrieval(line).err(), Some(expected.clone()));
        assert_eq!(parse_store(line).err(), Some(expected.clone()));
        assert_eq!(parse_delete(line).err(), Some(expected.clone()));
        assert_eq!(parse_incr_decr(line).err(), Some(expected.clone()));
        assert_eq!(parse_touch(line).err(), Some(expected.clone()));
        assert_eq!(parse_ok(line).err(), Some(expected.clone()));
        assert_eq!(parse_version(line).err(), Some(expected.clone()));
        assert_eq!(parse_stats(line).err(), Some(expected));
    }
}

#[test]
fn one_line_replies_at_every_split() {
    assert_eq!(
        at_every_split(b"STORED\r\n", parse_store),
        StoreReply::Stored
    );
    assert_eq!(
        at_every_split(b"NOT_STORED\r\n", parse_store),
        StoreReply::NotStored
    );
    assert_eq!(
        at_every_split(b"EXISTS\r\n", parse_store),
        StoreReply::Exists
    );
    assert_eq!(
        at_every_split(b"NOT_FOUND\r\n", parse_store),
        StoreReply::NotFound
    );
    assert_eq!(
        at_every_split(b"DELETED\r\n", parse_delete),
        DeleteReply::Deleted
    );
    assert_eq!(
        at_every_split(b"NOT_FOUND\r\n", parse_delete),
        DeleteReply::NotFound
    );
    assert_eq!(
        at_every_split(b"18446744073709551615\r\n", parse_incr_decr),
        IncrDecrReply::Value(u64::MAX)
    );
    assert_eq!(
        at_every_split(b"9  \r\n", parse_incr_decr),
        IncrDecrReply::Value(9)
    );
    assert_eq!(
        at_every_split(b"NOT_FOUND\r\n", parse_incr_decr),
        IncrDecrReply::NotFound
    );
    assert_eq!(
        at_every_split(b"TOUCHED\r\n", parse_touch),
        TouchReply::Touched
    );
    assert_eq!(
        at_every_split(b"NOT_FOUND\r\n", parse_touch),
        TouchReply::NotFound
    );
    at_every_split(b"OK\r\n", parse_ok);
    assert_eq!(
        at_every_split(b"VERSION 1.6.18\r\n", parse_version),
        "1.6.18"
    );
}

#[test]
fn unexpected_one_line_replies_are_malformed() {
    assert!(matches!(
        parse_store(b"DELETED\r\n"),
        Err(ReplyError::Malformed(_))
    ));
    assert!(matches!(
        parse_delete(b"STORED\r\n"),
        Err(ReplyError::Malformed(_))
    ));
    assert!(matches!(
        parse_incr_decr(b"-1\r\n"),
        Err(ReplyError::Malformed(_))
    ));
    assert!(matches!(
        parse_incr_decr(b"18446744073709551616\r\n"),
        Err(ReplyError::Malformed(_))
    ));
    assert!(matches!(
        parse_ok(b"OKAY\r\n"),
        Err(ReplyError::Malformed(_))
    ));
}

#[test]
fn stats_at_every_split() {
    let stats = at_every_split(
        b"STAT pid 42\r\nSTAT version 1.6.18\r\nSTAT empty\r\nEND\r\n",
        parse_stats,
    );
    assert_eq!(
        stats,
        vec![
            ("pid".to_owned(), "42".to_owned()),
            ("version".to_owned(), "1.6.18".to_owned()),
            ("empty".to_owned(), String::new()),
        ]
    );
}

/// Arbitrary bytes never panic a parser, and a complete parse never claims more than it got.
#[test]
fn random_input_never_panics_or_overreads() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet: &[u8] = b"VALUE END STORED 0123456789\r\n\x00\xff-kSTAT ERROR";
    for _ in 0..20_000 {
        let len = (next() % 48) as usize;
        let input: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let claims = [
            consumed(retrieval(&input)),
            consumed(parse_store(&input)),
            consumed(parse_delete(&input)),
            consumed(parse_incr_decr(&input)),
            consumed(parse_touch(&input)),
            consumed(parse_ok(&input)),
            consumed(parse_version(&input)),
            consumed(parse_stats(&input)),
        ];
        for used in claims.into_iter().flatten() {
            assert!(used <= input.len() && used > 0);
        }
    }
}

fn consumed<T>(result: Result<Parse<T>, ReplyError>) -> Option<usize> {
    match result {
        Ok(Parse::Complete(_, used)) => Some(used),
        _ => None,
    }
}

#[test]
fn error_replies_in_a_pipeline_keep_the_stream_in_step() {
    let replies = b"STORED\r\nSERVER_ERROR object too large for cache\r\nNOT_STORED\r\n";
    let mut offset = 0;
    let mut seen = Vec::new();
    while offset < replies.len() {
        match with_error_replies(&replies[offset..], parse_store) {
            Ok(Parse::Complete(reply, used)) => {
                seen.push(reply);
                offset += used;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            Ok(StoreReply::Stored),
            Err(ReplyError::Server("object too large for cache".into())),
            Ok(StoreReply::NotStored)
        ]
    );
    assert!(with_error_replies(b"GARBAGE\r\n", parse_store).is_err());
    assert_eq!(
        with_error_replies(b"STOR", parse_store),
        Ok(Parse::Incomplete(5))
    );
}

#[test]
fn a_declared_length_near_the_top_of_u64_is_refused_not_wrapped() {
    // It used to wrap `header_len + data_len` and slice backwards (a panic).
    let header = b"VALUE k 0 18446744073709551614\r\n";
    for cap in [usize::MAX, MAX_VALUE_LEN_LIMIT, DEFAULT_MAX_VALUE_LEN] {
        for cut in 0..header.len() {
            assert!(matches!(
                parse_retrieval(&header[..cut], cap),
                Ok(Parse::Incomplete(_))
            ));
        }
        assert_eq!(
            parse_retrieval(header, cap),
            Err(ReplyError::ValueTooLarge {
                declared: u64::MAX - 1,
                limit: cap.min(MAX_VALUE_LEN_LIMIT),
            })
        );
    }
}

#[test]
fn the_hard_limit_holds_whatever_cap_the_caller_gives() {
    assert_eq!(MAX_VALUE_LEN_LIMIT, 1_073_741_824);
    let at_limit = format!("VALUE k 0 {MAX_VALUE_LEN_LIMIT}\r\n");
    assert_eq!(
        parse_retrieval(at_limit.as_bytes(), usize::MAX),
        Ok(Parse::Incomplete(at_limit.len() + MAX_VALUE_LEN_LIMIT + 2))
    );
    let over = format!("VALUE k 0 {}\r\n", MAX_VALUE_LEN_LIMIT + 1);
    assert_eq!(
        parse_retrieval(over.as_bytes(), usize::MAX),
        Err(ReplyError::ValueTooLarge {
            declared: 1_073_741_825,
            limit: MAX_VALUE_LEN_LIMIT,
        })
    );
    // A smaller cap of the caller's still applies.
    assert_eq!(
        parse_retrieval(b"VALUE k 0 11\r\n", 10),
        Err(ReplyError::ValueTooLarge {
            declared: 11,
            limit: 10
        })
    );
}

/// Asserts that every strict prefix of `reply` is incomplete and the whole is `outcome`.
fn every_prefix_incomplete_then<T: std::fmt::Debug + PartialEq>(
    reply: &[u8],
    parse: impl Fn(&[u8]) -> Result<Parse<T>, ReplyError>,
    outcome: Result<Parse<T>, ReplyError>,
) {
    for cut in 0..reply.len() {
        match parse(&reply[..cut]) {
            Ok(Parse::Incomplete(needed)) => assert!(needed > cut, "cut {cut}: needs {needed}"),
            other => panic!("prefix of {cut} bytes of {reply:?} parsed as {other:?}"),
        }
    }
    assert_eq!(parse(reply), outcome, "{reply:?}");
}

#[test]
fn an_error_line_inside_a_stats_reply_is_out_of_step() {
    // The fuzzer's find: the wrapper took the first line (`STAT `) as the error reply.
    for reply in [
        &b"STAT \r\nERROR\r\n"[..],
        b"STAT pid 1\r\nSERVER_ERROR out of memory\r\n",
        b"STAT pid 1\r\nSTAT uptime 2\r\nCLIENT_ERROR bad\r\n",
    ] {
        for cut in 0..reply.len() {
            assert!(matches!(
                with_error_replies(&reply[..cut], parse_stats),
                Ok(Parse::Incomplete(n)) if n > cut
            ));
            assert!(matches!(
                parse_stats(&reply[..cut]),
                Ok(Parse::Incomplete(n)) if n > cut
            ));
        }
        assert!(
            matches!(
                with_error_replies(reply, parse_stats),
                Err(ReplyError::Malformed(_))
            ),
            "{reply:?}"
        );
        assert!(
            matches!(parse_stats(reply), Err(ReplyError::Malformed(_))),
            "{reply:?}"
        );
    }
}

/// A retrieval item's extent alone, for helpers whose result cannot borrow the buffer.
fn retrieval_used(buf: &[u8]) -> Result<Parse<()>, ReplyError> {
    Ok(match retrieval(buf)? {
        Parse::Incomplete(needed) => Parse::Incomplete(needed),
        Parse::Complete(_, used) => Parse::Complete((), used),
    })
}

/// What `with_error_replies` gives for an error line of `len` bytes first in the buffer.
fn whole<T>(error: &ReplyError, len: usize) -> Result<Parse<Result<T, ReplyError>>, ReplyError> {
    Ok(Parse::Complete(Err(error.clone()), len))
}

#[test]
fn an_error_line_first_is_the_whole_reply_for_every_wrapped_parser() {
    let cases: [(&[u8], ReplyError); 4] = [
        (b"ERROR\r\n", ReplyError::UnknownCommand),
        (b"ERROR unknown command\r\n", ReplyError::UnknownCommand),
        (b"CLIENT_ERROR bad\r\n", ReplyError::Client("bad".into())),
        (b"SERVER_ERROR busy\r\n", ReplyError::Server("busy".into())),
    ];
    for (line, error) in cases {
        // Whatever follows the error line belongs to the next reply.
        let mut buf = line.to_vec();
        buf.extend_from_slice(b"STAT pid 1\r\nEND\r\n");
        let n = line.len();
        every_prefix_incomplete_then(
            line,
            |b| with_error_replies(b, retrieval_used),
            whole(&error, n),
        );
        every_prefix_incomplete_then(
            line,
            |b| with_error_replies(b, parse_store),
            whole(&error, n),
        );
        every_prefix_incomplete_then(
            line,
            |b| with_error_replies(b, parse_delete),
            whole(&error, n),
        );
        every_prefix_incomplete_then(
            line,
            |b| with_error_replies(b, parse_incr_decr),
            whole(&error, n),
        );
        every_prefix_incomplete_then(
            line,
            |b| with_error_replies(b, parse_touch),
            whole(&error, n),
        );
        every_prefix_incomplete_then(line, |b| with_error_replies(b, parse_ok), whole(&error, n));
        every_prefix_incomplete_then(
            line,
            |b| with_error_replies(b, parse_version),
            whole(&error, n),
        );
        every_prefix_incomplete_then(
            line,
            |b| with_error_replies(b, parse_stats),
            whole(&error, n),
        );
        assert_eq!(with_error_replies(&buf, parse_stats), whole(&error, n));
        assert_eq!(
            with_error_replies(&buf[line.len()..], parse_stats),
            Ok(Parse::Complete(
                Ok(vec![("pid".to_owned(), "1".to_owned())]),
                buf.len() - line.len()
            ))
        );
    }
}

#[test]
fn error_words_must_stand_alone() {
    for line in [
        &b"ERRORS\r\n"[..],
        b"SERVER_ERRORx\r\n",
        b"CLIENT_ERROR_X\r\n",
    ] {
        assert!(matches!(parse_store(line), Err(ReplyError::Malformed(_))));
        assert!(matches!(
            with_error_replies(line, parse_store),
            Err(ReplyError::Malformed(_))
        ));
    }
}
