//! One TCP connection to a node: connect with deadlines, write requests, read whole replies.
//!
//! A connection is only ever used for one request/reply exchange at a time. Any error leaves
//! its byte stream in an unknown state, so callers drop it rather than pool it again.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use elasticache_proto::Parse;
use socket2::{SockRef, TcpKeepalive};

use crate::address::NodeAddress;
use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::stream::Stream;
use crate::tls::Tls;

const INITIAL_BUFFER: usize = 16 * 1024;
/// Read at least this much room at a time once the buffer grows for a large value.
const MIN_READ: usize = 8 * 1024;

/// A connected socket (plain or TLS) and its read buffer.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    node: String,
    timeout: Option<Duration>,
    // Bytes [start, filled) of `buffer` are received and not yet consumed. The whole Vec stays
    // initialised so reads need no zeroing.
    buffer: Vec<u8>,
    start: usize,
    filled: usize,
    pub(crate) idle_since: Instant,
}

impl Connection {
    /// Connects to `address`, trying each resolved address within `connect_timeout`, over TLS
    /// when `tls` is given.
    pub fn connect(
        address: &NodeAddress,
        config: &ClientConfig,
        tls: Option<&Tls>,
    ) -> Result<Self> {
        let node = address.name.clone();
        let connect_error = |source: io::Error| Error::Connect {
            node: node.clone(),
            source,
        };
        let candidates = (address.host.as_str(), address.port)
            .to_socket_addrs()
            .map_err(connect_error)?;
        let mut last_error =
            io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
        for candidate in candidates {
            let attempt = match config.connect_timeout {
                Some(limit) => TcpStream::connect_timeout(&candidate, limit),
                None => TcpStream::connect(candidate),
            };
            match attempt {
                Ok(stream) => return Self::configure(stream, address, config, tls),
                Err(error) => last_error = error,
            }
        }
        if matches!(
            last_error.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ) {
            return Err(Error::Timeout {
                node: node.clone(),
                timeout: config.connect_timeout.unwrap_or_default(),
            });
        }
        Err(connect_error(last_error))
    }

    fn configure(
        tcp: TcpStream,
        address: &NodeAddress,
        config: &ClientConfig,
        tls: Option<&Tls>,
    ) -> Result<Self> {
        let set_up = |tcp: &TcpStream| -> io::Result<()> {
            tcp.set_nodelay(config.no_delay)?;
            tcp.set_read_timeout(config.timeout)?;
            tcp.set_write_timeout(config.timeout)?;
            if let Some(idle) = config.socket_keepalive {
                SockRef::from(tcp).set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
            }
            Ok(())
        };
        set_up(&tcp).map_err(|source| Error::Connect {
            node: address.name.clone(),
            source,
        })?;
        let stream = match tls {
            Some(tls) => Stream::tls(tcp, tls, address)?,
            None => Stream::Plain(tcp),
        };
        Ok(Connection {
            stream,
            node: address.name.clone(),
            timeout: config.timeout,
            buffer: vec![0; INITIAL_BUFFER],
            start: 0,
            filled: 0,
            idle_since: Instant::now(),
        })
    }

    /// Whether this connection's TLS handshake resumed an earlier session.
    pub fn resumed_tls_session(&self) -> bool {
        self.stream.resumed()
    }

    /// The node's name, for errors.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Writes a whole request.
    pub fn send(&mut self, request: &[u8]) -> Result<()> {
        // TLS may hold encrypted bytes back until flushed.
        self.stream
            .write_all(request)
            .and_then(|()| self.stream.flush())
            .map_err(|e| Error::from_io(&self.node, e, self.timeout))
    }

    /// Reads until `parse` finds a whole reply in the buffer, consumes it and returns it.
    ///
    /// `parse` sees the unconsumed bytes and must not keep borrows of them; a reply made of
    /// several items can be read an item (or every whole item there is) per call. The
    /// operation's `deadline` bounds the total time, on top of the per-read socket timeout.
    pub fn read<T>(
        &mut self,
        deadline: Option<Instant>,
        parse: impl FnMut(&[u8]) -> Result<Parse<T>, elasticache_proto::ReplyError>,
    ) -> Result<T> {
        let reply = self.read_while(parse, |connection, needed| {
            connection.fill(needed, deadline).map(|()| true)
        })?;
        // `fill` either reads more or fails, so the loop only ends with a reply.
        reply.ok_or_else(|| Error::Closed {
            node: self.node.clone(),
        })
    }

    /// Like [`Connection::read`] on a non-blocking socket: parses what has arrived, reading
    /// until the socket has nothing more, and returns `None` if the reply is not whole yet.
    pub(crate) fn read_available<T>(
        &mut self,
        parse: impl FnMut(&[u8]) -> Result<Parse<T>, elasticache_proto::ReplyError>,
    ) -> Result<Option<T>> {
        self.read_while(parse, |connection, needed| {
            connection.make_room(needed);
            connection.receive_available()
        })
    }

    /// Parses the unconsumed bytes until a reply is whole, asking `more` for bytes (room for
    /// `needed` unconsumed ones) whenever it is not; `None` when `more` had nothing.
    fn read_while<T>(
        &mut self,
        mut parse: impl FnMut(&[u8]) -> Result<Parse<T>, elasticache_proto::ReplyError>,
        mut more: impl FnMut(&mut Self, usize) -> Result<bool>,
    ) -> Result<Option<T>> {
        loop {
            let outcome = parse(&self.buffer[self.start..self.filled])
                .map_err(|e| Error::from_reply(&self.node, e))?;
            match outcome {
                Parse::Complete(reply, used) => {
                    self.consume(used);
                    return Ok(Some(reply));
                }
                Parse::Incomplete(needed) => {
                    if !more(self, needed)? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Marks `used` bytes as consumed.
    fn consume(&mut self, used: usize) {
        self.start += used;
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
        }
    }

    /// Reads at least once more, with room for `needed` unconsumed bytes.
    ///
    /// Past the deadline only bytes that have already arrived are taken (without waiting): a
    /// batch reads its nodes one after another, and one slow node must not turn the replies
    /// the others have already sent into timeouts.
    fn fill(&mut self, needed: usize, deadline: Option<Instant>) -> Result<()> {
        let overdue = deadline.is_some_and(|deadline| Instant::now() >= deadline);
        self.make_room(needed);
        if overdue {
            // Nothing waiting is reported as WouldBlock, which is a timeout.
            self.set_nonblocking(true)?;
        }
        let received = self.receive();
        let restored = if overdue {
            self.set_nonblocking(false)
        } else {
            Ok(())
        };
        received?;
        restored
    }

    /// Makes room at the end of the buffer for `needed` unconsumed bytes, and a read's worth.
    fn make_room(&mut self, needed: usize) {
        let pending = self.filled - self.start;
        let wanted = needed.max(pending + MIN_READ);
        if self.buffer.len() - self.start < wanted {
            // Move the unconsumed bytes to the front, then grow only if that is not enough.
            self.buffer.copy_within(self.start..self.filled, 0);
            self.start = 0;
            self.filled = pending;
            if self.buffer.len() < wanted {
                self.buffer.resize(wanted, 0);
            }
        }
    }

    /// Switches the socket between blocking reads (with the I/O timeout) and reads that return
    /// at once with what has arrived.
    pub(crate) fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        self.stream
            .tcp()
            .set_nonblocking(nonblocking)
            .map_err(|e| Error::from_io(&self.node, e, self.timeout))
    }

    /// The socket's file descriptor, for an event loop to watch.
    #[cfg(unix)]
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.stream.tcp().as_raw_fd()
    }

    /// One read into the free end of the buffer.
    fn receive(&mut self) -> Result<()> {
        if self.receive_available()? {
            Ok(())
        } else {
            // A blocking socket reports its read timeout as WouldBlock too.
            Err(Error::Timeout {
                node: self.node.clone(),
                timeout: self.timeout.unwrap_or_default(),
            })
        }
    }

    /// One read into the free end of the buffer; `false` when nothing had arrived.
    fn receive_available(&mut self) -> Result<bool> {
        loop {
            match self.stream.read(&mut self.buffer[self.filled..]) {
                Ok(0) => {
                    return Err(Error::Closed {
                        node: self.node.clone(),
                    })
                }
                Ok(received) => {
                    self.filled += received;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(Error::from_io(&self.node, e, self.timeout)),
            }
        }
    }

    /// Whether bytes nobody asked for are waiting: a reply left over from an abandoned
    /// request would otherwise be read as the answer to the next one.
    pub fn has_unread_bytes(&self) -> bool {
        self.filled > self.start
    }

    /// Shrinks a buffer that grew for a large value back to its usual size.
    pub fn trim_buffer(&mut self) {
        if self.buffer.len() > 4 * INITIAL_BUFFER && self.start == self.filled {
            self.buffer = vec![0; INITIAL_BUFFER];
            self.start = 0;
            self.filled = 0;
        }
    }
}
