//! ElastiCache Auto Discovery: the request and the cluster configuration reply.
//!
//! The reply is `CONFIG cluster 0 <bytes>\r\n<version>\n<host>|<ip>|<port> ...\n\r\nEND\r\n`, or
//! for engines before 1.4.14 the same body in a `VALUE AmazonElastiCache:cluster` frame. The
//! body is framed by its `\r\nEND\r\n` terminator (it never contains CRLF) rather than by the
//! declared length, which some documentation examples get wrong; the declared length still
//! bounds what is buffered, so a hostile peer cannot make the client allocate without limit.

use memchr::memmem;

use crate::error::ReplyError;
use crate::reply::{next_line_for_discovery, parse_decimal, Parse};

/// The discovery request of engines 1.4.14 and later.
pub const CONFIG_GET_CLUSTER: &[u8] = b"config get cluster\r\n";
/// The discovery request of older engines.
pub const LEGACY_GET_CLUSTER: &[u8] = b"get AmazonElastiCache:cluster\r\n";
/// The largest configuration body accepted (a 500-node cluster needs about 50 KB).
pub const MAX_CONFIG_LEN: usize = 256 * 1024;

const TERMINATOR: &[u8] = b"\r\nEND\r\n";

/// One member of the cluster as the configuration endpoint lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterNode {
    /// The node's DNS name.
    pub hostname: String,
    /// Its private IP address (IPv4 or IPv6), empty while not yet known.
    pub ip: String,
    /// The port memcached listens on.
    pub port: u16,
}

/// The cluster's membership and its version (bumped by ElastiCache on every change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The configuration's version: a change means the membership changed.
    pub version: u64,
    /// The cluster's nodes, in the order the endpoint lists them (never empty).
    pub nodes: Vec<ClusterNode>,
}

/// Parses a reply to [`CONFIG_GET_CLUSTER`] or [`LEGACY_GET_CLUSTER`].
///
/// `Complete(None, _)` is a bare `END`: the legacy key does not exist, as on plain memcached.
/// Error lines (`ERROR` from plain memcached or ElastiCache Serverless, `CLIENT_ERROR`,
/// `SERVER_ERROR`) are recognised from the first line, without waiting for more.
pub fn parse_cluster_config(buf: &[u8]) -> Result<Parse<Option<ClusterConfig>>, ReplyError> {
    let Some((line, header_len)) = next_line_for_discovery(buf)? else {
        return Ok(Parse::Incomplete(buf.len() + 1));
    };
    if line == b"END" {
        return Ok(Parse::Complete(None, header_len));
    }
    let declared = parse_header(line)?;
    if declared > MAX_CONFIG_LEN as u64 {
        return Err(ReplyError::ValueTooLarge {
            declared,
            limit: MAX_CONFIG_LEN,
        });
    }
    // The body ends at the terminator; allow it to run a little past a wrong declared length.
    let window_end = buf
        .len()
        .min(header_len + MAX_CONFIG_LEN + TERMINATOR.len());
    let rest = &buf[header_len..window_end];
    let Some(body_len) = memmem::find(rest, TERMINATOR) else {
        if rest.len() >= MAX_CONFIG_LEN + TERMINATOR.len() {
            return Err(ReplyError::Malformed(
                "configuration body without END".to_owned(),
            ));
        }
        return Ok(Parse::Incomplete(buf.len() + 1));
    };
    let config = parse_body(&rest[..body_len])?;
    Ok(Parse::Complete(
        Some(config),
        header_len + body_len + TERMINATOR.len(),
    ))
}

/// The declared body length of a `CONFIG cluster 0 <n>` or `VALUE <key> <flags> <n>` line.
fn parse_header(line: &[u8]) -> Result<u64, ReplyError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| ReplyError::malformed("not a configuration reply", line))?;
    let fields: Vec<&str> = text.split(' ').collect();
    let length = match fields.as_slice() {
        ["CONFIG", "cluster", _flags, length] => length,
        ["VALUE", "AmazonElastiCache:cluster", _flags, length] => length,
        _ => return Err(ReplyError::malformed("not a configuration reply", line)),
    };
    parse_decimal(length.as_bytes())
        .ok_or_else(|| ReplyError::malformed("bad configuration length", line))
}

/// The version line and the `host|ip|port` entries of a configuration body.
fn parse_body(body: &[u8]) -> Result<ClusterConfig, ReplyError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ReplyError::malformed("configuration is not text", body))?;
    let (version_line, members) = text.split_once('\n').unwrap_or((text, ""));
    let version = version_line.trim().parse::<u64>().map_err(|_| {
        ReplyError::malformed(
            "configuration version is not a number",
            version_line.as_bytes(),
        )
    })?;
    let nodes = members
        .split_ascii_whitespace()
        .map(parse_node)
        .collect::<Result<Vec<_>, _>>()?;
    if nodes.is_empty() {
        return Err(ReplyError::Malformed(
            "the configuration lists no node".to_owned(),
        ));
    }
    Ok(ClusterConfig { version, nodes })
}

/// One `host|ip|port` entry.
fn parse_node(token: &str) -> Result<ClusterNode, ReplyError> {
    let bad = || ReplyError::malformed("bad node entry (expected host|ip|port)", token.as_bytes());
    let mut fields = token.split('|');
    let (Some(hostname), Some(ip), Some(port), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(bad());
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(bad)?;
    if hostname.is_empty() && ip.is_empty() {
        return Err(bad());
    }
    Ok(ClusterNode {
        hostname: hostname.to_owned(),
        ip: ip.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(hostname: &str, ip: &str, port: u16) -> ClusterNode {
        ClusterNode {
            hostname: hostname.into(),
            ip: ip.into(),
            port,
        }
    }

    #[test]
    fn parses_at_every_split() {
        let reply = b"CONFIG cluster 0 53\r\n1\nc.abc.0001.use1.cache.amazonaws.com|10.0.0.5|11211\n\r\nEND\r\n";
        for cut in 0..reply.len() {
            assert!(
                matches!(
                    parse_cluster_config(&reply[..cut]),
                    Ok(Parse::Incomplete(_))
                ),
                "cut {cut}"
            );
        }
        let expected = ClusterConfig {
            version: 1,
            nodes: vec![node(
                "c.abc.0001.use1.cache.amazonaws.com",
                "10.0.0.5",
                11211,
            )],
        };
        assert_eq!(
            parse_cluster_config(reply),
            Ok(Parse::Complete(Some(expected), reply.len()))
        );
    }

    #[test]
    fn a_bare_end_means_no_configuration() {
        assert_eq!(
            parse_cluster_config(b"END\r\n"),
            Ok(Parse::Complete(None, 5))
        );
    }

    #[test]
    fn an_endless_body_is_refused() {
        let mut reply = b"CONFIG cluster 0 10\r\n1\n".to_vec();
        reply.resize(reply.len() + MAX_CONFIG_LEN + 16, b'x');
        assert!(matches!(
            parse_cluster_config(&reply),
            Err(ReplyError::Malformed(_))
        ));
    }
}
