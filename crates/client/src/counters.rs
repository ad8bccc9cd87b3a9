//! Counters created on a miss: `incr`/`decr`, then `add` of an initial value, atomically
//! across clients (a single-key plan, `single`).

use elasticache_proto::{self as proto, Counter, IncrDecrReply, Store, StoreReply};

use crate::engine::Step;
use crate::metrics::CommandName;
use crate::single::{One, ParseResult, Plan};

/// A counter's initial value, as the value path encodes it (so `get` reads it as it reads a
/// number written by `set`).
#[derive(Debug, Clone)]
pub struct Initial {
    /// The number.
    pub value: u64,
    /// The flags to store it with.
    pub flags: u32,
    /// Its bytes.
    pub data: Vec<u8>,
    /// Its expiry.
    pub exptime: i64,
}

/// `incr`/`decr`, and on a miss (with an initial value) `add` of the initial value, then on
/// losing that race `incr`/`decr` again. `ma` with `N` would create the counter in one request
/// but with client flags 0, which every reader takes for bytes: the `add` stores the counter
/// as `set` would.
///
/// The counter may vanish between a lost `add` and the count after it (deleted, evicted or
/// expired by then): the `add` is tried again, up to [`CounterPlan::MAX_ADDS`] times in all, so
/// the initial value is honoured rather than the counter reported missing.
#[derive(Debug)]
pub struct CounterPlan {
    op: Counter,
    delta: u64,
    initial: Option<Initial>,
    /// Whether the request on the wire is the `add` (else a count).
    adding: bool,
    /// The `add`s sent so far.
    adds: u8,
}

impl CounterPlan {
    /// The most `add`s one call sends: each lost one means another client created the counter
    /// and it vanished again before this one's count, which a live counter does not do.
    pub const MAX_ADDS: u8 = 3;

    fn count(&mut self, key: &str, out: &mut Vec<u8>) {
        self.adding = false;
        proto::encode_incr_decr(out, self.op, key.as_bytes(), self.delta, false);
    }
}

impl Plan for CounterPlan {
    type Output = Option<u64>;

    fn writes(&self) -> bool {
        true
    }

    fn name(&self) -> CommandName {
        match self.op {
            Counter::Decr => CommandName::Decr,
            _ => CommandName::Incr,
        }
    }

    fn start(&mut self, key: &str, _: bool, out: &mut Vec<u8>) {
        self.adds = 0;
        self.count(key, out);
    }

    fn read(
        &mut self,
        _: &str,
        key: &str,
        _: bool,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> ParseResult<Step<Option<u64>>> {
        if self.adding {
            return Ok(proto::parse_store(buf)?.map(|reply| match reply {
                StoreReply::Stored => Step::Done(self.initial.as_ref().map(|i| i.value)),
                _ => {
                    // Another caller created it meanwhile: count on theirs.
                    self.count(key, out);
                    Step::Send
                }
            }));
        }
        Ok(proto::parse_incr_decr(buf)?.map(|reply| match reply {
            IncrDecrReply::Value(value) => Step::Done(Some(value)),
            IncrDecrReply::NotFound => match &self.initial {
                Some(initial) if self.adds < Self::MAX_ADDS => {
                    proto::encode_store(
                        out,
                        Store::Add,
                        key.as_bytes(),
                        initial.flags,
                        initial.exptime,
                        &initial.data,
                        false,
                    );
                    self.adding = true;
                    self.adds += 1;
                    Step::Send
                }
                _ => Step::Done(None),
            },
        }))
    }

    fn fallback(&self) -> Option<u64> {
        None
    }
}

/// The count of `key` by `delta`, creating it with `initial` on a miss.
pub(crate) fn count(
    key: String,
    op: Counter,
    delta: u64,
    initial: Option<Initial>,
) -> One<CounterPlan> {
    let plan = CounterPlan {
        op,
        delta,
        initial,
        adding: false,
        adds: 0,
    };
    One::new(key, plan)
}
