//! Commands sent to every node of the membership (`flush_all`, `stats`, `version`), each node's
//! result apart.

use std::sync::Arc;

use elasticache_proto as proto;

use crate::cluster::Routes;
use crate::engine::{Command, Cursor, Failed, Fallback, Reading, Share, Step};
use crate::error::{Error, Result};
use crate::metrics::CommandName;
use crate::single::ParseResult;
use crate::topology::Node;
use crate::values::Stats;

/// One request to every node (`flush_all`, `stats`, `version`); the output is each node's
/// result, in node order. Fails only when there is no node to ask.
#[derive(Debug)]
pub struct EveryNode<T> {
    name: CommandName,
    /// Only this node (by name), when set.
    only: Option<String>,
    request: Vec<u8>,
    parse: fn(&[u8]) -> ParseResult<T>,
    results: Vec<(String, Option<Result<T>>)>,
}

impl<T> EveryNode<T> {
    fn new(name: CommandName, request: Vec<u8>, parse: fn(&[u8]) -> ParseResult<T>) -> Self {
        EveryNode {
            name,
            only: None,
            request,
            parse,
            results: Vec::new(),
        }
    }
}

impl<T> EveryNode<T> {
    /// The same command for the node named `node` alone.
    pub(crate) fn only(mut self, node: &str) -> Self {
        self.only = Some(node.to_owned());
        self
    }
}

impl EveryNode<()> {
    pub(crate) fn flush_all() -> Self {
        let mut request = Vec::new();
        proto::encode_flush_all(&mut request, None, false);
        EveryNode::new(CommandName::FlushAll, request, proto::parse_ok)
    }
}

impl EveryNode<Stats> {
    pub(crate) fn stats(group: Option<&str>) -> Self {
        let mut request = Vec::new();
        proto::encode_stats(&mut request, group);
        EveryNode::new(CommandName::Stats, request, proto::parse_stats)
    }
}

impl EveryNode<String> {
    pub(crate) fn versions() -> Self {
        let mut request = Vec::new();
        proto::encode_version(&mut request);
        EveryNode::new(CommandName::Version, request, proto::parse_version)
    }
}

impl<T> Command for EveryNode<T> {
    type Output = Vec<(String, Result<T>)>;

    fn name(&self) -> CommandName {
        self.name
    }

    fn validate(&self) -> Result<()> {
        Ok(())
    }

    fn shares(&mut self, routes: Routes<'_>) -> Result<Vec<Share>> {
        let only = self.only.as_deref();
        let nodes: Vec<&Arc<Node>> = routes
            .nodes()
            .iter()
            .filter(|node| only.is_none_or(|name| node.address.name == name))
            .collect();
        self.results = nodes
            .iter()
            .map(|node| (node.address.name.clone(), None))
            .collect();
        Ok(nodes
            .into_iter()
            .enumerate()
            .map(|(index, node)| Share {
                node: Arc::clone(node),
                positions: vec![index],
            })
            .collect())
    }

    fn all_positions(&self) -> Vec<usize> {
        (0..self.results.len()).collect()
    }

    fn size(&self, _: usize) -> usize {
        self.request.len()
    }

    fn encode(&mut self, out: &mut Vec<u8>, _: &[usize]) {
        out.extend_from_slice(&self.request);
    }

    fn read(
        &mut self,
        _: &str,
        positions: &[usize],
        _: &mut Cursor,
        buf: &[u8],
        _: &mut Vec<u8>,
    ) -> ParseResult<Reading> {
        Ok((self.parse)(buf)?.map(|reply| {
            if let Some(slot) = positions.first().and_then(|&i| self.results.get_mut(i)) {
                slot.1 = Some(Ok(reply));
            }
            Step::Done(())
        }))
    }

    fn fallback(&self) -> Fallback<Self::Output> {
        // Each node's failure is in its result; only "no node to ask" fails the whole.
        Fallback::Strict
    }

    fn writes_all(&self) -> bool {
        self.name == CommandName::FlushAll
    }

    fn finish(mut self, failed: Vec<Failed>) -> Result<Self::Output> {
        for (positions, error) in failed {
            match positions.first().and_then(|&i| self.results.get_mut(i)) {
                Some(slot) => slot.1 = Some(Err(error)),
                // No node to ask.
                None => return Err(error),
            }
        }
        Ok(self
            .results
            .into_iter()
            .map(|(node, result)| (node.clone(), result.unwrap_or(Err(Error::Closed { node }))))
            .collect())
    }
}
