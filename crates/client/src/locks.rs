//! What locks are made of: acquire (`add` of the owner's token) and delete-if-owner (the check
//! and the delete one step, by CAS), as strict single-key plans (`single`): a lock never takes
//! "the cache could not be asked" for "someone else holds it".

use elasticache_proto::{
    self as proto, MetaCommand, MetaFlag, MetaStatus, Parse, Retrieval, RetrievalItem, Store,
    StoreReply,
};

use crate::engine::Step;
use crate::metrics::CommandName;
use crate::single::{stray_value, unexpected, One, ParseResult, Plan};

/// Stores `token` under a key that holds nothing (`add`): a lock's acquire. Run strictly
/// ([`One::strict`]): "not stored" must mean that someone else holds the key, never that
/// the cache could not be asked.
#[derive(Debug)]
pub struct AcquirePlan {
    token: Vec<u8>,
    exptime: i64,
}

impl Plan for AcquirePlan {
    type Output = bool;

    fn writes(&self) -> bool {
        true
    }

    fn name(&self) -> CommandName {
        CommandName::Add
    }

    fn start(&mut self, key: &str, _: bool, out: &mut Vec<u8>) {
        let (exptime, token) = (self.exptime, &self.token);
        proto::encode_store(out, Store::Add, key.as_bytes(), 0, exptime, token, false);
    }

    fn read(
        &mut self,
        _: &str,
        _: &str,
        _: bool,
        buf: &[u8],
        _: &mut Vec<u8>,
    ) -> ParseResult<Step<bool>> {
        Ok(proto::parse_store(buf)?.map(|reply| Step::Done(reply == StoreReply::Stored)))
    }

    fn fallback(&self) -> bool {
        false
    }
}

/// Deletes a key only while it holds `token` (a lock released by its owner alone):
/// `mg <key> v c` then `md <key> C<cas>`; without meta commands `gets` then a `cas` that stores
/// an already expired item. Either way nobody else's value is deleted: the CAS token makes
/// the check and the delete one step.
#[derive(Debug)]
pub struct DeleteIfPlan {
    /// The key acted on: the command's own, or a lease key (which the command's key routes).
    target: Vec<u8>,
    token: Vec<u8>,
    max_value_len: usize,
    /// The CAS token of a matching value, once read (classic `gets`).
    cas: Option<u64>,
    deleting: bool,
}

impl DeleteIfPlan {
    pub(crate) fn new(target: Vec<u8>, token: Vec<u8>, max_value_len: usize) -> Self {
        DeleteIfPlan {
            target,
            token,
            max_value_len,
            cas: None,
            deleting: false,
        }
    }

    /// Writes the first request: the target's value and CAS token.
    pub(crate) fn begin(&mut self, meta: bool, out: &mut Vec<u8>) {
        self.cas = None;
        self.deleting = false;
        let key = self.target.as_slice();
        if meta {
            let flags = [MetaFlag::Value, MetaFlag::ReturnCas];
            proto::encode_meta(out, MetaCommand::Get, key, &flags, b"");
        } else {
            proto::encode_retrieval(out, Retrieval::Gets, [key]);
        }
    }
}

impl Plan for DeleteIfPlan {
    type Output = bool;

    fn writes(&self) -> bool {
        true
    }

    fn name(&self) -> CommandName {
        CommandName::Delete
    }

    fn uses_meta(&self) -> bool {
        true
    }

    fn start(&mut self, _: &str, meta: bool, out: &mut Vec<u8>) {
        self.begin(meta, out);
    }

    fn read(
        &mut self,
        _: &str,
        _: &str,
        meta: bool,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> ParseResult<Step<bool>> {
        let key = self.target.as_slice();
        if self.deleting {
            return Ok(if meta {
                proto::parse_meta(buf, 0)?.map(|reply| Step::Done(reply.status == MetaStatus::Done))
            } else {
                proto::parse_store(buf)?.map(|reply| Step::Done(reply == StoreReply::Stored))
            });
        }
        if meta {
            let (reply, used) = match proto::parse_meta(buf, self.max_value_len)? {
                Parse::Incomplete(needed) => return Ok(Parse::Incomplete(needed)),
                Parse::Complete(reply, used) => (reply, used),
            };
            return Ok(match (reply.status, reply.data, reply.flags.cas) {
                (MetaStatus::Value, Some(data), Some(cas)) if data == self.token.as_slice() => {
                    let flags = [MetaFlag::CompareCas(cas)];
                    proto::encode_meta(out, MetaCommand::Delete, key, &flags, b"");
                    self.deleting = true;
                    Parse::Complete(Step::Send, used)
                }
                (MetaStatus::Value | MetaStatus::Miss, _, _) => {
                    Parse::Complete(Step::Done(false), used)
                }
                (status, _, _) => return Err(unexpected("mg v c", &status)),
            });
        }
        Ok(match proto::parse_retrieval(buf, self.max_value_len)? {
            Parse::Incomplete(needed) => Parse::Incomplete(needed),
            Parse::Complete(RetrievalItem::Value(value), used) => {
                if value.key != key || self.cas.is_some() {
                    return Err(stray_value());
                }
                if value.data == self.token.as_slice() {
                    self.cas = value.cas;
                }
                Parse::Complete(Step::More, used)
            }
            Parse::Complete(RetrievalItem::End, used) => match self.cas {
                Some(cas) => {
                    // Stored already expired: the item is gone at once, for every reader.
                    proto::encode_store(out, Store::Cas(cas), key, 0, -1, b"", false);
                    self.deleting = true;
                    Parse::Complete(Step::Send, used)
                }
                None => Parse::Complete(Step::Done(false), used),
            },
        })
    }

    fn fallback(&self) -> bool {
        false
    }
}

/// A lock's acquire: `token` stored under `key` if it holds nothing.
pub(crate) fn acquire(key: String, token: Vec<u8>, exptime: i64) -> One<AcquirePlan> {
    One::strict(key, AcquirePlan { token, exptime })
}

/// Deletes `key` only while it holds `token`.
pub(crate) fn delete_if(key: String, token: Vec<u8>, max_value_len: usize) -> One<DeleteIfPlan> {
    let plan = DeleteIfPlan::new(key.as_bytes().to_vec(), token, max_value_len);
    One::strict(key, plan)
}
