//! The one framework of single-key commands: a [`One`] runs a [`Plan`] (the per-command part:
//! its requests, how their replies read, its fallback) on the node the key is routed to.
//! Classic commands (`classic`) and meta-protocol features (`stampede`, `ttl`, `counters`,
//! `locks`) are plans alike; `One` does the rest once: key validation, routing, request
//! sizing, hit counting, and the meta probe.
//!
//! A plan that uses meta commands gets the node probed once, with `mn`, by the first such
//! command sent to it: memcached 1.6 answers `MN`; servers without meta commands answer
//! `ERROR` (and early 1.6 betas, whose meta dialect differs, answer otherwise), and get the
//! plan's classic fallback. The answer is kept on the node (`meta_support`). The probe goes on
//! the same connection as the command, whose request follows once the probe is answered
//! ([`Step::Send`]): one operation, run by any driver.

use std::sync::Arc;

use elasticache_proto::{self as proto, MetaStatus, Parse, ReplyError};

use crate::cluster::{Route, Routes};
use crate::engine::{Coalescing, Command, Cursor, Failed, Fallback, Reading, Share, Step};
use crate::error::{check_key, Error, Result};
use crate::metrics::CommandName;
use crate::topology::Node;
use crate::values::Item;

pub(crate) type ParseResult<T> = std::result::Result<Parse<T>, ReplyError>;

/// The per-command part of a [`One`]: its requests (with and without meta commands) and how
/// their replies read, as one state machine of [`Step`]s.
pub trait Plan {
    /// What the command returns.
    type Output;

    /// The command, as the counters name it.
    fn name(&self) -> CommandName;

    /// Whether the plan uses meta commands at all (if not, the node is not probed for them).
    fn uses_meta(&self) -> bool {
        false
    }

    /// Why the plan cannot run on a node that does (`meta`) or does not speak meta commands.
    fn refuses(&self, _meta: bool) -> Option<Error> {
        None
    }

    /// Whether the plan changes or deletes what the key holds (see
    /// [`Command::invalidates`]).
    fn invalidates(&self) -> bool {
        false
    }

    /// The key is served by a gutter: what the plan stores there lives `ttl` seconds at most.
    fn on_gutter(&mut self, _ttl: u32) {}

    /// Whether the plan has anything to send (a value too large for anything but a `set`'s
    /// cleanup has not: its outcome is known).
    fn sends(&self) -> bool {
        true
    }

    /// The bytes of the first request, about (to split requests over TLS).
    fn size(&self, key: &str) -> usize {
        key.len() + 32
    }

    /// Writes the first request.
    fn start(&mut self, key: &str, meta: bool, out: &mut Vec<u8>);

    /// Reads a reply to the plan's current request (from `node`); on [`Step::Send`], the next
    /// request is in `out`.
    fn read(
        &mut self,
        node: &str,
        key: &str,
        meta: bool,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> ParseResult<Step<Self::Output>>;

    /// After the exchange failed (a failure `ignore_exc` covers): whether the plan has a
    /// further request to send on a new connection, written by [`Plan::start`].
    fn follow_up(&mut self) -> bool {
        false
    }

    /// Whether the outcome is a hit, for a read (counted per node).
    fn hit(_output: &Self::Output) -> Option<bool> {
        None
    }

    /// The outcome under `ignore_exc` when the command fails.
    fn fallback(&self) -> Self::Output;

    /// Whether identical reads in flight may share this one's request (a plain `get`).
    fn coalesces(&self) -> bool {
        false
    }

    /// For a plan that coalesces: its outcome as the callers that joined it take it.
    fn share(_output: &Self::Output) -> Option<Option<Item>> {
        None
    }

    /// For a plan that coalesces: its outcome made of another caller's read.
    fn shared(_read: Option<Item>) -> Option<Self::Output> {
        None
    }

    /// Whether the local tier may serve it (`local_tier`): by default, when it coalesces.
    fn reads_locally(&self) -> bool {
        self.coalesces()
    }

    /// Its outcome made of the local tier's value.
    fn from_local(item: Item) -> Option<Self::Output> {
        Self::shared(Some(item))
    }

    /// What the local tier may keep of its outcome.
    fn local_value(output: &Self::Output) -> Option<Item> {
        Self::share(output).flatten()
    }

    /// Whether the plan changes what is cached under its key: reads that start after it ends
    /// must not share one sent before (`flights`), and on a gutter it counts as a write
    /// ([`Command::writes`]). Every plan that invalidates does.
    fn writes(&self) -> bool {
        false
    }

    /// The outcome: what the exchange read (`done`), unless it failed (`failure`).
    fn finish(self, done: Option<Self::Output>, failure: Option<Error>) -> Result<Self::Output>
    where
        Self: Sized,
    {
        match (failure, done) {
            (Some(error), _) => Err(error),
            (None, Some(output)) => Ok(output),
            // Cannot happen: an exchange ends well only once the reply is read.
            (None, None) => Err(Error::NoNodes),
        }
    }
}

/// A single-key command: a [`Plan`] run on the key's node, with the node's meta support
/// probed first if the plan needs it and it is unknown.
#[derive(Debug)]
pub struct One<P: Plan> {
    key: String,
    plan: P,
    /// The node, kept only while its meta support is being probed.
    probed: Option<Arc<Node>>,
    /// The node's support as this command uses it; `None` while the probe is on the wire.
    meta: Option<bool>,
    /// What the exchange read, or why the plan could not run on the node (found out by the
    /// probe): one field, so a single-key command stays as small as the classic ones were.
    outcome: Option<Result<P::Output>>,
    /// Whether a failure is always the caller's to see, `ignore_exc` or not: a lock must never
    /// take "the cache could not be asked" for "someone else holds it".
    strict: bool,
}

impl<P: Plan> One<P> {
    /// `plan` for `key`.
    pub(crate) fn new(key: String, plan: P) -> Self {
        One {
            key,
            plan,
            probed: None,
            meta: None,
            outcome: None,
            strict: false,
        }
    }

    /// The key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The plan.
    pub(crate) fn plan(&self) -> &P {
        &self.plan
    }

    /// What the exchange read, once it read it.
    pub(crate) fn output(&self) -> Option<&P::Output> {
        self.outcome.as_ref()?.as_ref().ok()
    }

    /// The command with failures never turned into the plan's fallback by `ignore_exc`.
    pub(crate) fn strict(key: String, plan: P) -> Self {
        One {
            strict: true,
            ..One::new(key, plan)
        }
    }

    /// Reads the answer to `mn`, remembers it on the node, and sends the plan's first request.
    fn read_probe(&mut self, buf: &[u8], request: &mut Vec<u8>) -> ParseResult<Reading> {
        let (speaks_meta, used) = match proto::parse_meta_noop(buf)? {
            Parse::Incomplete(needed) => return Ok(Parse::Incomplete(needed)),
            Parse::Complete(speaks_meta, used) => (speaks_meta, used),
        };
        if let Some(node) = self.probed.take() {
            if node.meta.get() != Some(speaks_meta) {
                log::debug!(
                    "{}: meta commands {}",
                    node.address.name,
                    if speaks_meta {
                        "supported"
                    } else {
                        "not supported: classic fallback"
                    }
                );
            }
            node.meta.set(speaks_meta);
        }
        self.meta = Some(speaks_meta);
        if let Some(error) = self.plan.refuses(speaks_meta) {
            self.outcome = Some(Err(error));
            return Ok(Parse::Complete(Step::Done(()), used));
        }
        self.plan.start(&self.key, speaks_meta, request);
        Ok(Parse::Complete(Step::Send, used))
    }
}

impl<P: Plan> Command for One<P> {
    type Output = P::Output;

    #[inline]
    fn name(&self) -> CommandName {
        self.plan.name()
    }

    fn hits(&self, _: &[usize]) -> Option<usize> {
        let hit = P::hit(self.outcome.as_ref()?.as_ref().ok()?)?;
        Some(usize::from(hit))
    }

    fn validate(&self) -> Result<()> {
        check_key(&self.key)
    }

    fn shares(&mut self, routes: Routes<'_>) -> Result<Vec<Share>> {
        if !self.plan.sends() {
            return Ok(Vec::new());
        }
        // A strict command (a lock) is decided by the key's owner alone, never by a gutter.
        let route = if self.strict {
            routes.owner(&self.key).map(|node| Route {
                node,
                gutter_ttl: None,
            })
        } else {
            routes.place(&self.key)
        };
        let node = route
            .and_then(|route| routes.nodes().get(route.node))
            .ok_or(Error::NoNodes)?;
        if let Some(ttl) = route.and_then(|route| route.gutter_ttl) {
            self.plan.on_gutter(ttl);
        }
        self.meta = if self.plan.uses_meta() {
            node.meta.get()
        } else {
            Some(false)
        };
        match self.meta {
            Some(meta) => {
                if let Some(error) = self.plan.refuses(meta) {
                    return Err(error);
                }
            }
            None => self.probed = Some(Arc::clone(node)),
        }
        Ok(vec![Share {
            node: Arc::clone(node),
            positions: vec![0],
        }])
    }

    fn all_positions(&self) -> Vec<usize> {
        vec![0]
    }

    fn invalidates(&self) -> bool {
        self.plan.invalidates()
    }

    fn writes(&self) -> bool {
        self.plan.writes()
    }

    fn key(&self, _: usize) -> Option<&str> {
        Some(&self.key)
    }

    fn size(&self, _: usize) -> usize {
        self.plan.size(&self.key)
    }

    fn encode(&mut self, out: &mut Vec<u8>, _: &[usize]) {
        match self.meta {
            Some(meta) => {
                out.reserve(self.plan.size(&self.key));
                self.plan.start(&self.key, meta, out);
            }
            None => proto::encode_meta_noop(out),
        }
    }

    fn read(
        &mut self,
        node: &str,
        _: &[usize],
        _: &mut Cursor,
        buf: &[u8],
        request: &mut Vec<u8>,
    ) -> ParseResult<Reading> {
        let Some(meta) = self.meta else {
            return self.read_probe(buf, request);
        };
        let read = self.plan.read(node, &self.key, meta, buf, request)?;
        Ok(read.map(|step| step.map(|output| self.outcome = Some(Ok(output)))))
    }

    fn coalescing(&self) -> Coalescing {
        if self.plan.coalesces() {
            Coalescing::Leads
        } else {
            Coalescing::Never
        }
    }

    fn shared_key(&self, _: usize) -> Option<&str> {
        self.plan.coalesces().then_some(self.key.as_str())
    }

    fn shared_value(&self, _: usize) -> Option<Item> {
        P::share(self.outcome.as_ref()?.as_ref().ok()?)?
    }

    fn take_shared(&mut self, _: usize, item: Option<Item>) {
        if let Some(output) = P::shared(item) {
            self.outcome = Some(Ok(output));
        }
    }

    fn local_key(&self, _: usize) -> Option<&str> {
        self.plan.reads_locally().then_some(self.key.as_str())
    }

    fn take_local(&mut self, _: usize, item: Item) {
        if let Some(output) = P::from_local(item) {
            self.outcome = Some(Ok(output));
        }
    }

    fn local_value(&self, _: usize) -> Option<Item> {
        P::local_value(self.outcome.as_ref()?.as_ref().ok()?)
    }

    fn follow_up(&mut self) -> bool {
        // The probe's answer may be unknown; the follow-up goes without meta commands only
        // when the node's support is known (none of today's follow-ups uses them).
        self.meta.is_some() && self.plan.follow_up()
    }

    fn fallback(&self) -> Fallback<P::Output> {
        if self.strict {
            Fallback::Strict
        } else {
            Fallback::Whole(self.plan.fallback())
        }
    }

    fn finish(self, failed: Vec<Failed>) -> Result<P::Output> {
        let failure = || failed.into_iter().next().map(|(_, error)| error);
        match self.outcome {
            // The probe's refusal comes first: the exchange ended well, without the plan.
            Some(Err(refused)) => self.plan.finish(None, Some(refused)),
            Some(Ok(output)) => self.plan.finish(Some(output), failure()),
            None => self.plan.finish(None, failure()),
        }
    }
}

/// A value for a key not asked for (or a second value for one): the stream is out of step.
pub(crate) fn stray_value() -> ReplyError {
    ReplyError::Malformed("a value for a key not asked for".to_owned())
}

/// A meta reply that the request cannot have: the stream is not what it seems.
pub(crate) fn unexpected(command: &str, status: &MetaStatus) -> ReplyError {
    ReplyError::Malformed(format!("{status:?} is no reply to {command}"))
}
