//! The classic single-key commands as plans of the one single-key framework (`single`):
//! `get`/`gets`, the storage commands (with the failed-set cleanup), and the one-line
//! commands `delete`, `incr`/`decr` and `touch`. No I/O here: see `engine`.

use std::borrow::Cow;

use bytes::Bytes;
use elasticache_proto::{
    self as proto, Counter, Parse, ReplyError, Retrieval, RetrievalItem, Store, StoreReply,
};

use crate::engine::Step;
use crate::error::{Error, Result};
use crate::lease_keys::end_lease;
use crate::metrics::CommandName;
use crate::single::{stray_value, One, ParseResult, Plan};
use crate::values::Item;

/// `get`/`gets` of one key.
#[derive(Debug)]
pub struct RetrievePlan {
    kind: Retrieval,
    max_value_len: usize,
    found: Option<Item>,
}

impl RetrievePlan {
    /// The largest value accepted.
    pub(crate) fn max_value_len(&self) -> usize {
        self.max_value_len
    }
}

impl Plan for RetrievePlan {
    type Output = Option<Item>;

    #[inline]
    fn name(&self) -> CommandName {
        match self.kind {
            Retrieval::Gets => CommandName::Gets,
            _ => CommandName::Get,
        }
    }

    fn size(&self, key: &str) -> usize {
        key.len() + 8
    }

    #[inline]
    fn start(&mut self, key: &str, _: bool, out: &mut Vec<u8>) {
        proto::encode_retrieval(out, self.kind, [key.as_bytes()]);
    }

    fn read(
        &mut self,
        _: &str,
        key: &str,
        _: bool,
        buf: &[u8],
        _: &mut Vec<u8>,
    ) -> ParseResult<Step<Option<Item>>> {
        Ok(match proto::parse_retrieval(buf, self.max_value_len)? {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(RetrievalItem::End, used) => {
                Parse::Complete(Step::Done(self.found.take()), used)
            }
            Parse::Complete(RetrievalItem::Value(value), used) => {
                if value.key != key.as_bytes() || self.found.is_some() {
                    return Err(stray_value());
                }
                self.found = Some(Item {
                    flags: value.flags,
                    data: Bytes::copy_from_slice(value.data),
                    cas: value.cas,
                });
                Parse::Complete(Step::More, used)
            }
        })
    }

    fn hit(output: &Option<Item>) -> Option<bool> {
        Some(output.is_some())
    }

    fn fallback(&self) -> Option<Item> {
        None
    }

    fn coalesces(&self) -> bool {
        // A `gets` caller wants a CAS token of its own read.
        self.kind == Retrieval::Get
    }

    fn share(output: &Option<Item>) -> Option<Option<Item>> {
        Some(output.clone())
    }

    fn shared(read: Option<Item>) -> Option<Option<Item>> {
        Some(read)
    }
}

/// `get` (or `gets`) of `key`.
pub(crate) fn get(key: String, kind: Retrieval, max_value_len: usize) -> One<RetrievePlan> {
    let plan = RetrievePlan {
        kind,
        max_value_len,
        found: None,
    };
    One::new(key, plan)
}

/// A storage command of one key.
///
/// A `set` that fails deletes the key in the same operation: the old value must not be read
/// back as if the new one had been stored. After a reply (not stored, a server error, a value
/// too large for the node) or a value too large for the client, the `delete` goes on the same
/// connection; after an exchange that failed under `ignore_exc` (the set's fate unknown), on a
/// new one, with a deadline of its own (as the backend's second request had). This is the only
/// place that cleanup is done; the layers above never send a delete of their own after a
/// failed set.
#[derive(Debug)]
pub struct StorePlan<'v> {
    command: Store,
    flags: u32,
    data: Cow<'v, [u8]>,
    exptime: i64,
    /// The store's own failure (a value too large for the client has it from the start).
    failure: Option<Error>,
    /// The store's reply, once read, while its cleanup is on the wire.
    reply: Option<StoreReply>,
    /// Whether the request on the wire is the cleanup `delete`.
    cleanup: bool,
}

impl StorePlan<'_> {
    /// Asks for the cleanup `delete` after the set failed (a `set` only: the other storage
    /// commands replace nothing when they fail).
    fn clean_up(&mut self, key: &str, out: &mut Vec<u8>) -> Step<StoreReply> {
        if self.command != Store::Set {
            return Step::Done(self.reply.unwrap_or(StoreReply::NotStored));
        }
        self.cleanup = true;
        proto::encode_delete(out, key.as_bytes(), false);
        Step::Send
    }
}

impl Plan for StorePlan<'_> {
    type Output = StoreReply;

    fn writes(&self) -> bool {
        true
    }

    #[inline]
    fn name(&self) -> CommandName {
        match self.command {
            // A cleanup sent on its own connection (`follow_up`) is a request of its own.
            _ if self.cleanup => CommandName::Delete,
            Store::Add => CommandName::Add,
            Store::Replace => CommandName::Replace,
            Store::Append => CommandName::Append,
            Store::Prepend => CommandName::Prepend,
            _ => CommandName::Set,
        }
    }

    fn invalidates(&self) -> bool {
        // An `add` replaces nothing: what the key held, if anything, still holds.
        self.command != Store::Add
    }

    fn on_gutter(&mut self, ttl: u32) {
        self.exptime = crate::gutter::cap_exptime(self.exptime, ttl);
    }

    fn sends(&self) -> bool {
        // A value too large is not sent; only a set has a cleanup to send instead.
        self.failure.is_none() || self.command == Store::Set
    }

    fn size(&self, key: &str) -> usize {
        // A cleanup is its lease's delete and its own (`start`).
        2 * key.len() + self.data.len() + 80
    }

    #[inline]
    fn start(&mut self, key: &str, _: bool, out: &mut Vec<u8>) {
        // A store leaves the key's `get_or_set` lease alone: the computation in flight stores
        // with `add`, which a value written meanwhile beats. A delete ends it (here, a set's
        // cleanup; `Line::Delete`): one request more per delete, none per write.
        if self.failure.is_some() || self.cleanup {
            self.cleanup = true;
            end_lease(key, out);
            proto::encode_delete(out, key.as_bytes(), false);
            return;
        }
        proto::encode_store(
            out,
            self.command,
            key.as_bytes(),
            self.flags,
            self.exptime,
            &self.data,
            false,
        );
    }

    fn read(
        &mut self,
        node: &str,
        key: &str,
        _: bool,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> ParseResult<Step<StoreReply>> {
        if self.cleanup {
            let reply = self.reply.unwrap_or(StoreReply::NotStored);
            return Ok(
                proto::with_error_replies(buf, proto::parse_delete)?.map(|deleted| {
                    if let Err(error) = deleted {
                        // Best effort: the set already failed, and that is what is reported.
                        log::debug!("{node}: delete {key:?} after a failed set: {error}");
                    }
                    Step::Done(reply)
                }),
            );
        }
        Ok(match proto::with_error_replies(buf, proto::parse_store)? {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(Ok(StoreReply::Stored), used) => {
                Parse::Complete(Step::Done(StoreReply::Stored), used)
            }
            Parse::Complete(Ok(reply), used) => {
                self.reply = Some(reply);
                Parse::Complete(self.clean_up(key, out), used)
            }
            // A server error is a whole reply line: the stream stays in step.
            Parse::Complete(Err(ReplyError::Server(message)), used) => {
                let error = Error::ServerFailure {
                    node: node.to_owned(),
                    message,
                };
                self.failure = Some(error.for_store(self.data.len()));
                Parse::Complete(self.clean_up(key, out), used)
            }
            Parse::Complete(Err(error), _) => return Err(error),
        })
    }

    fn follow_up(&mut self) -> bool {
        // The set's exchange failed (a connection lost, a timeout): whether the old value is
        // still there is unknown, so the cleanup goes on a new connection, once.
        if self.command != Store::Set || self.cleanup {
            return false;
        }
        self.cleanup = true;
        true
    }

    fn fallback(&self) -> StoreReply {
        StoreReply::NotStored
    }

    fn finish(self, done: Option<StoreReply>, failure: Option<Error>) -> Result<StoreReply> {
        match (self.failure, failure, done) {
            // The set's own failure is what is reported, whatever its cleanup met.
            (Some(error), _, _) => Err(error),
            (None, Some(error), _) => Err(error.for_store(self.data.len())),
            (None, None, Some(reply)) => Ok(reply),
            // Cannot happen: an exchange ends well only once the reply is read.
            (None, None, None) => Err(Error::NoNodes),
        }
    }
}

/// A storage command of `key`; a value over `max_value_len` fails before anything is sent
/// (a `set` still deletes the key).
pub(crate) fn store<'v>(
    command: Store,
    key: String,
    flags: u32,
    data: Cow<'v, [u8]>,
    exptime: i64,
    max_value_len: usize,
) -> One<StorePlan<'v>> {
    let failure = (data.len() > max_value_len).then(|| Error::ValueTooLarge {
        size: data.len(),
        limit: max_value_len,
    });
    let plan = StorePlan {
        command,
        flags,
        data,
        exptime,
        failure,
        reply: None,
        cleanup: false,
    };
    One::new(key, plan)
}

/// A one-line command of one key: `delete`, `incr`/`decr`, `touch`, built in place by its
/// entry in the client's `commands!` table (the request, the reply's parser, the fallback).
#[derive(Debug)]
pub struct LinePlan<T> {
    pub(crate) line: Line,
    pub(crate) parse: fn(&[u8]) -> ParseResult<T>,
    /// The reply under `ignore_exc` when the node fails.
    pub(crate) fallback: T,
}

/// Which one-line command.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Line {
    Delete,
    /// A delete that leaves the key's lease alone (`discard`).
    Discard,
    Counter(Counter, u64),
    Touch(i64),
}

impl<T: Copy> Plan for LinePlan<T> {
    type Output = T;

    fn writes(&self) -> bool {
        true
    }

    fn name(&self) -> CommandName {
        match self.line {
            Line::Delete | Line::Discard => CommandName::Delete,
            Line::Counter(Counter::Decr, _) => CommandName::Decr,
            Line::Counter(_, _) => CommandName::Incr,
            Line::Touch(_) => CommandName::Touch,
        }
    }

    fn invalidates(&self) -> bool {
        matches!(self.line, Line::Delete | Line::Discard)
    }

    fn start(&mut self, key: &str, _: bool, out: &mut Vec<u8>) {
        if matches!(self.line, Line::Delete) {
            end_lease(key, out);
        }
        let key = key.as_bytes();
        match self.line {
            Line::Delete | Line::Discard => proto::encode_delete(out, key, false),
            Line::Counter(op, delta) => proto::encode_incr_decr(out, op, key, delta, false),
            Line::Touch(exptime) => proto::encode_touch(out, key, exptime, false),
        }
    }

    fn read(
        &mut self,
        _: &str,
        _: &str,
        _: bool,
        buf: &[u8],
        _: &mut Vec<u8>,
    ) -> ParseResult<Step<T>> {
        Ok((self.parse)(buf)?.map(Step::Done))
    }

    fn fallback(&self) -> T {
        self.fallback
    }
}
