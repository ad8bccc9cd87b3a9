//! A key's time to live, read with `mg <key> t` (a single-key plan, `single`): only on nodes
//! that speak meta commands, as the classic protocol does not tell it.

use elasticache_proto::{self as proto, MetaCommand, MetaFlag, MetaStatus};

use crate::engine::Step;
use crate::error::Error;
use crate::metrics::CommandName;
use crate::single::{unexpected, One, ParseResult, Plan};

/// How long a key has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key is not in the cache.
    Missing,
    /// The key never expires.
    Forever,
    /// Seconds left.
    Seconds(u64),
}

/// `mg <key> t`: only with meta commands (the classic protocol does not tell a TTL).
#[derive(Debug)]
pub struct TtlPlan;

impl Plan for TtlPlan {
    type Output = Ttl;

    fn name(&self) -> CommandName {
        CommandName::Get
    }

    fn uses_meta(&self) -> bool {
        true
    }

    fn refuses(&self, meta: bool) -> Option<Error> {
        (!meta).then_some(Error::MetaUnsupported {
            what: "reading a key's TTL",
        })
    }

    fn start(&mut self, key: &str, _: bool, out: &mut Vec<u8>) {
        proto::encode_meta(
            out,
            MetaCommand::Get,
            key.as_bytes(),
            &[MetaFlag::ReturnTtl],
            b"",
        );
    }

    fn read(
        &mut self,
        _: &str,
        _: &str,
        _: bool,
        buf: &[u8],
        _: &mut Vec<u8>,
    ) -> ParseResult<Step<Ttl>> {
        proto::parse_meta(buf, 0)?.try_map(|reply| {
            Ok(Step::Done(match (reply.status, reply.flags.ttl) {
                (MetaStatus::Miss, _) => Ttl::Missing,
                (MetaStatus::Done, Some(-1)) => Ttl::Forever,
                (MetaStatus::Done, Some(seconds)) => {
                    Ttl::Seconds(u64::try_from(seconds).unwrap_or_default())
                }
                (status, _) => return Err(unexpected("mg t", &status)),
            }))
        })
    }

    fn fallback(&self) -> Ttl {
        Ttl::Missing
    }
}

/// The TTL read of `key`.
pub(crate) fn ttl(key: String) -> One<TtlPlan> {
    One::new(key, TtlPlan)
}
