//! The byte stream under a connection: plain TCP, or TLS over TCP.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use rustls::{ClientConnection, StreamOwned};

use crate::address::NodeAddress;
use crate::error::{Error, Result};
use crate::tls::{server_name, Tls};

/// A connected stream; TLS streams have completed their handshake.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// Wraps `tcp` in TLS and completes the handshake (bounded by the socket's timeouts), so a
    /// certificate that is not trusted fails the connect, not the first request.
    pub fn tls(tcp: TcpStream, tls: &Tls, address: &NodeAddress) -> Result<Stream> {
        let name = tls
            .server_name
            .as_deref()
            .or(address.tls_name.as_deref())
            .unwrap_or(&address.host);
        let mut session =
            ClientConnection::new(tls.config.clone(), server_name(name)?).map_err(|e| {
                Error::Tls {
                    node: address.name.clone(),
                    reason: e.to_string(),
                }
            })?;
        let mut tcp = tcp;
        while session.is_handshaking() {
            session
                .complete_io(&mut tcp)
                .map_err(|e| Error::from_io(&address.name, e, tcp.read_timeout().ok().flatten()))?;
        }
        Ok(Stream::Tls(Box::new(StreamOwned::new(session, tcp))))
    }

    /// Whether the TLS handshake resumed an earlier session (no certificate exchange).
    pub fn resumed(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(tls) => tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}
