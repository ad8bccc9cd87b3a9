//! Server addresses: parsing `host:port` and `[v6]:port`, and the name a node is hashed by.

use std::fmt;

use crate::error::{Error, Result};

/// memcached's default port, used when an address has none.
pub const DEFAULT_PORT: u16 = 11211;

/// Where a node is and what it is called.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddress {
    /// What to connect to: a DNS name, IPv4 or IPv6 address (without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// The name the ring hashes: `host:port` as pymemcache writes it (IPv6 without brackets).
    pub name: String,
    /// The hostname to verify a TLS certificate against when `host` is an IP (from discovery).
    pub tls_name: Option<String>,
}

impl NodeAddress {
    /// A node reached at `host:port` and named after it.
    pub fn new(host: &str, port: u16) -> Self {
        NodeAddress {
            host: host.to_owned(),
            port,
            name: format!("{host}:{port}"),
            tls_name: None,
        }
    }

    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port` (or a bare IPv6 address with no port).
    pub fn parse(address: &str) -> Result<Self> {
        let bad = |reason: &str| Error::BadAddress {
            address: address.to_owned(),
            reason: reason.to_owned(),
        };
        let address_trimmed = address.trim();
        if address_trimmed.is_empty() {
            return Err(bad("empty"));
        }
        let (host, port) = if let Some(rest) = address_trimmed.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("expected ':port'"))?,
                    ),
                ),
            }
        } else if address_trimmed.matches(':').count() > 1 {
            // A bare IPv6 address: the port cannot be told apart, so there is none.
            (address_trimmed, None)
        } else {
            match address_trimmed.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address_trimmed, None),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(bad("invalid host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        };
        Ok(NodeAddress::new(host, port))
    }
}

impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let parsed = |a: &str| NodeAddress::parse(a).map(|n| (n.host, n.port, n.name));
        assert_eq!(
            parsed("10.0.0.1:11212").ok(),
            Some(("10.0.0.1".into(), 11212, "10.0.0.1:11212".into()))
        );
        assert_eq!(
            parsed("localhost").ok(),
            Some(("localhost".into(), 11211, "localhost:11211".into()))
        );
        assert_eq!(
            parsed("[::1]:11300").ok(),
            Some(("::1".into(), 11300, "::1:11300".into()))
        );
        assert_eq!(
            parsed("[::1]").ok(),
            Some(("::1".into(), 11211, "::1:11211".into()))
        );
        assert_eq!(
            parsed(" my-cluster.abc123.cfg.use1.cache.amazonaws.com:11211 ").ok(),
            Some((
                "my-cluster.abc123.cfg.use1.cache.amazonaws.com".into(),
                11211,
                "my-cluster.abc123.cfg.use1.cache.amazonaws.com:11211".into()
            ))
        );
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "",
            ":11211",
            "host:",
            "host:0",
            "host:70000",
            "host:x",
            "[::1",
            "[::1]x",
            "a b:1",
        ] {
            assert!(NodeAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn displays_ipv6_in_brackets() {
        assert_eq!(NodeAddress::new("::1", 5).to_string(), "[::1]:5");
        assert_eq!(NodeAddress::new("h", 5).to_string(), "h:5");
    }
}
