//! One TCP connection to a node: connect with deadlines, write requests, read whole replies.
//!
//! A connection is only ever used for one request/reply exchange at a time. Any error leaves
//! its byte stream in an unknown state, so callers drop it rather than pool it again.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use elasticache_proto::Parse;
use socket2::{SockRef, TcpKeepalive};

use crate::address::NodeAddress;
use crate::config::ClientConfig;
use crate::error::{Error, NameNotResolved, Result};
use crate::stream::Stream;
use crate::tls::Tls;

const INITIAL_BUFFER: usize = 16 * 1024;
/// Read at least this much room at a time once the buffer grows for a large value.
const MIN_READ: usize = 8 * 1024;

/// How far a socket timeout may be from the time left before it is set again: a system call
/// per read would cost more than a timeout firing this much early or late.
const TIMEOUT_SLACK: Duration = Duration::from_millis(2);

/// Which of the socket's timeouts.
#[derive(Debug, Clone, Copy)]
enum Direction {
    Read = 0,
    Write = 1,
}

/// The earlier of two optional deadlines (`None` is no deadline).
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The time left before `deadline`: `None` without a deadline, `Some(None)` once it passed.
fn remaining(deadline: Option<Instant>) -> Option<Option<Duration>> {
    deadline.map(|deadline| {
        Some(deadline.saturating_duration_since(Instant::now())).filter(|left| !left.is_zero())
    })
}

/// The addresses of `host`, by `deadline`. The system resolver cannot be given a deadline, so a
/// name (not an IP literal) is resolved on a short-lived thread that is left to finish alone
/// if the deadline passes first.
fn resolve(host: &str, port: u16, deadline: Option<Instant>) -> io::Result<Vec<SocketAddr>> {
    resolve_with(host, port, deadline, |name, port| {
        (name.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect)
    })
}

/// [`resolve`] with the system resolver given as `lookup` (tests give one that hangs).
fn resolve_with(
    host: &str,
    port: u16,
    deadline: Option<Instant>,
    lookup: impl FnOnce(String, u16) -> io::Result<Vec<SocketAddr>> + Send + 'static,
) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let Some(deadline) = deadline else {
        return lookup(host.to_owned(), port);
    };
    let (sender, receiver) = mpsc::channel();
    let name = host.to_owned();
    thread::Builder::new()
        .name("elasticache-dns".to_owned())
        .spawn(move || {
            // The caller may have given up: nobody to tell.
            let _ = sender.send(lookup(name, port));
        })?;
    let left = deadline.saturating_duration_since(Instant::now());
    match receiver.recv_timeout(left) {
        Ok(resolved) => resolved,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("resolving {host} took longer than the deadline"),
        )),
    }
}

/// How much room (unconsumed bytes plus free space) the buffer should have when `pending`
/// bytes have arrived, the reply needs `needed` in all, and the buffer is `len` long.
///
/// The buffer grows only once the data has nearly filled it, and then at most doubles:
/// `needed` is the peer's word (a value header declaring 1 GiB must cost nothing until the data
/// comes), so the buffer stays under twice what has arrived plus two reads' worth, while
/// doubling keeps a large value to a few reallocations whatever the size of each read.
fn room_for(pending: usize, needed: usize, len: usize) -> usize {
    let one_read = pending.saturating_add(MIN_READ);
    if needed <= len {
        // The whole reply fits: room for it, and for reading ahead as far as the buffer goes.
        needed.max(one_read).min(len)
    } else if one_read <= len {
        // Room for another read without growing.
        one_read
    } else if needed > one_read {
        // Nearly full, and the reply is known to be longer: towards it, at most doubling.
        needed.min(len.saturating_mul(2))
    } else {
        // Nearly full, and `needed` only a lower bound (one more byte): double.
        len.saturating_mul(2)
    }
}

/// A connect to `address` that ran out of time, naming the limit that ran out: the connect's
/// own or the operation's, whichever is shorter.
fn connect_timed_out(address: &NodeAddress, config: &ClientConfig) -> Error {
    Error::Timeout {
        node: address.name.clone(),
        timeout: match (config.connect_timeout, config.timeout) {
            (Some(connect), Some(operation)) => connect.min(operation),
            (connect, operation) => connect.or(operation).unwrap_or_default(),
        },
    }
}

/// A connected socket (plain or TLS) and its read buffer.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    node: String,
    timeout: Option<Duration>,
    /// The read and write timeouts the socket has now (see [`Connection::bound_by`]).
    socket_timeouts: [Option<Duration>; 2],
    // Bytes [start, filled) of `buffer` are received and not yet consumed. The whole Vec stays
    // initialised so reads need no zeroing.
    buffer: Vec<u8>,
    start: usize,
    filled: usize,
    /// Whether the socket is in non-blocking mode now: event-loop drivers want it so, the
    /// blocking driver not. Switched only when the next user wants the other mode.
    nonblocking: bool,
    pub(crate) idle_since: Instant,
}

impl Connection {
    /// Connects to `address` over TLS when `tls` is given. `connect_timeout` bounds the whole
    /// connect (name resolution, every resolved address in turn, the TLS handshake), and so
    /// does the operation's `deadline` when it comes first.
    pub fn connect(
        address: &NodeAddress,
        config: &ClientConfig,
        tls: Option<&Tls>,
        deadline: Option<Instant>,
    ) -> Result<Self> {
        let node = address.name.clone();
        let connect_deadline = earliest(
            deadline,
            config.connect_timeout.map(|limit| Instant::now() + limit),
        );
        let timed_out = || connect_timed_out(address, config);
        let connect_error = |source: io::Error| Error::Connect {
            node: node.clone(),
            source,
        };
        let candidates = match resolve(&address.host, address.port, connect_deadline) {
            Ok(candidates) => candidates,
            Err(error) if error.kind() == io::ErrorKind::TimedOut => return Err(timed_out()),
            Err(error) => return Err(connect_error(NameNotResolved::wrap(error))),
        };
        let mut last_error = NameNotResolved::wrap(io::Error::new(
            io::ErrorKind::NotFound,
            "the name resolved to no address",
        ));
        for candidate in candidates {
            let attempt = match remaining(connect_deadline) {
                Some(Some(left)) => TcpStream::connect_timeout(&candidate, left),
                Some(None) => return Err(timed_out()),
                None => TcpStream::connect(candidate),
            };
            match attempt {
                Ok(stream) => {
                    return Self::configure(stream, address, config, tls, connect_deadline)
                }
                Err(error) => last_error = error,
            }
        }
        if matches!(
            last_error.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ) {
            return Err(timed_out());
        }
        Err(connect_error(last_error))
    }

    fn configure(
        tcp: TcpStream,
        address: &NodeAddress,
        config: &ClientConfig,
        tls: Option<&Tls>,
        connect_deadline: Option<Instant>,
    ) -> Result<Self> {
        // The TLS handshake is part of the connect: bounded by what is left of it.
        let handshake_timeout = match (tls, remaining(connect_deadline)) {
            (Some(_), Some(Some(left))) => Some(left),
            (Some(_), Some(None)) => return Err(connect_timed_out(address, config)),
            _ => config.timeout,
        };
        let set_up = |tcp: &TcpStream| -> io::Result<()> {
            tcp.set_nodelay(config.no_delay)?;
            tcp.set_read_timeout(handshake_timeout)?;
            tcp.set_write_timeout(handshake_timeout)?;
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
            socket_timeouts: [handshake_timeout; 2],
            buffer: vec![0; INITIAL_BUFFER],
            start: 0,
            filled: 0,
            nonblocking: false,
            idle_since: Instant::now(),
        })
    }

    /// Whether a connection that sat idle in the pool still looks usable: the peer has not
    /// closed or reset it. A node killed and restarted leaves every pooled connection dead, and
    /// the first request on each would otherwise fail and count against the node.
    pub(crate) fn looks_alive(&self) -> bool {
        let tcp = self.stream.tcp();
        if !self.nonblocking && tcp.set_nonblocking(true).is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        let alive = match tcp.peek(&mut probe) {
            Err(error) => error.kind() == io::ErrorKind::WouldBlock,
            Ok(0) => false,
            // Bytes on an idle plaintext connection answer nothing we asked: out of step. Over
            // TLS they may be a session ticket sent after the handshake, which is harmless.
            Ok(_) => matches!(self.stream, Stream::Tls(_)),
        };
        (self.nonblocking || tcp.set_nonblocking(false).is_ok()) && alive
    }

    /// Makes the socket's own timeout for `direction` end no later than `deadline` (give or
    /// take [`TIMEOUT_SLACK`]), so that `timeout` bounds the whole operation, not each read: a
    /// node that trickles its reply a byte at a time cannot stretch it. The common case, a
    /// fresh operation on a socket already set to the full `timeout`, makes no system call.
    fn bound_by(&mut self, deadline: Option<Instant>, direction: Direction) -> Result<()> {
        let wanted = match remaining(deadline) {
            // No deadline: the socket waits as configured.
            None => self.timeout,
            // Overdue: the caller reads only what has arrived, without waiting.
            Some(None) => return Ok(()),
            Some(Some(left)) => Some(left),
        };
        let index = direction as usize;
        let close_enough = match (self.socket_timeouts[index], wanted) {
            (None, None) => true,
            (Some(set), Some(left)) => set <= left + TIMEOUT_SLACK && set + TIMEOUT_SLACK >= left,
            _ => false,
        };
        if close_enough {
            return Ok(());
        }
        let tcp = self.stream.tcp();
        let applied = match direction {
            Direction::Read => tcp.set_read_timeout(wanted),
            Direction::Write => tcp.set_write_timeout(wanted),
        };
        applied.map_err(|e| Error::from_io(&self.node, e, self.timeout))?;
        self.socket_timeouts[index] = wanted;
        Ok(())
    }

    /// Whether this connection's TLS handshake resumed an earlier session.
    pub fn resumed_tls_session(&self) -> bool {
        self.stream.resumed()
    }

    /// Writes a whole request, by `deadline`.
    pub fn send(&mut self, request: &[u8], deadline: Option<Instant>) -> Result<()> {
        self.bound_by(deadline, Direction::Write)?;
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
            connection.bound_by(deadline, Direction::Read)?;
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
        let blocking = !self.nonblocking;
        if overdue {
            // Nothing waiting is reported as WouldBlock, which is a timeout.
            self.use_nonblocking(true)?;
        }
        let received = self.receive();
        let restored = if overdue {
            self.use_nonblocking(!blocking)
        } else {
            Ok(())
        };
        received?;
        restored
    }

    /// Makes room at the end of the buffer for the next read towards `needed` unconsumed
    /// bytes, growing it with the data received (see [`room_for`]).
    fn make_room(&mut self, needed: usize) {
        let pending = self.filled - self.start;
        let wanted = room_for(pending, needed, self.buffer.len());
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

    /// Switches the socket between blocking reads and writes (bounded by the socket's
    /// timeouts) and ones that return at once with what could be done. A system call only when
    /// the mode changes.
    pub(crate) fn use_nonblocking(&mut self, nonblocking: bool) -> Result<()> {
        if self.nonblocking != nonblocking {
            self.stream
                .tcp()
                .set_nonblocking(nonblocking)
                .map_err(|e| Error::from_io(&self.node, e, self.timeout))?;
            self.nonblocking = nonblocking;
        }
        Ok(())
    }

    /// On a non-blocking socket: writes what the socket takes of `data` now; how many bytes
    /// (0 when it takes nothing). Over TLS the bytes may still wait in the session: see
    /// [`Connection::flush_available`].
    pub(crate) fn write_available(&mut self, data: &[u8]) -> Result<usize> {
        loop {
            match self.stream.write(data) {
                // A socket that takes no byte of a non-empty write without saying it would
                // block is not going anywhere.
                Ok(0) if !data.is_empty() => {
                    return Err(Error::Closed {
                        node: self.node.clone(),
                    })
                }
                Ok(written) => return Ok(written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(Error::from_io(&self.node, e, self.timeout)),
            }
        }
    }

    /// On a non-blocking socket: pushes out what is written but held back (TLS records);
    /// whether everything is on its way.
    pub(crate) fn flush_available(&mut self) -> Result<bool> {
        loop {
            match self.stream.flush() {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(Error::from_io(&self.node, e, self.timeout)),
            }
        }
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

    /// The read buffer's size, for tests of how it grows.
    #[cfg(test)]
    pub(crate) fn buffer_len(&self) -> usize {
        self.buffer.len()
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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    use elasticache_proto::{parse_retrieval, ReplyError, RetrievalItem, MAX_VALUE_LEN_LIMIT};

    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(200);

    /// A peer on a loopback port that answers the first request with `reply` and keeps the
    /// connection open until the returned sender is dropped; and a connection to it.
    fn peer_sending(reply: Vec<u8>) -> (Connection, mpsc::Sender<()>, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (release, released) = mpsc::channel::<()>();
        let peer = thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = [0u8; 64];
            let _ = socket.read(&mut request);
            socket.write_all(&reply).unwrap();
            // Neither more data nor a close: the client must give up on its own.
            let _ = released.recv();
        });
        let tcp = TcpStream::connect(address).unwrap();
        tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
        let connection = Connection {
            stream: Stream::Plain(tcp),
            node: address.to_string(),
            timeout: Some(TIMEOUT),
            socket_timeouts: [Some(TIMEOUT), None],
            buffer: vec![0; INITIAL_BUFFER],
            start: 0,
            filled: 0,
            nonblocking: false,
            idle_since: Instant::now(),
        };
        (connection, release, peer)
    }

    /// Reads one `get` item, its data copied out.
    fn read_value(connection: &mut Connection, max_value_len: usize) -> Result<Vec<u8>> {
        connection.send(b"get k\r\n", None)?;
        connection.read(None, |buf| {
            Ok(match parse_retrieval(buf, max_value_len)? {
                Parse::Incomplete(needed) => Parse::Incomplete(needed),
                Parse::Complete(RetrievalItem::Value(value), used) => {
                    Parse::Complete(value.data.to_vec(), used)
                }
                Parse::Complete(RetrievalItem::End, used) => Parse::Complete(Vec::new(), used),
            })
        })
    }

    /// The most a buffer may hold once `received` bytes have arrived.
    fn bound(received: usize) -> usize {
        INITIAL_BUFFER.max(2 * (received + MIN_READ))
    }

    #[test]
    fn a_huge_declared_length_costs_nothing_until_the_data_comes() {
        let header = format!("VALUE k 0 {MAX_VALUE_LEN_LIMIT}\r\n").into_bytes();
        for data in [0, 100_000] {
            let mut reply = header.clone();
            reply.resize(header.len() + data, b'x');
            let (mut connection, release, peer) = peer_sending(reply.clone());
            let outcome = read_value(&mut connection, usize::MAX);
            assert!(
                matches!(outcome, Err(Error::Timeout { .. })),
                "{data} bytes: {outcome:?}"
            );
            assert!(
                connection.buffer_len() <= bound(reply.len()),
                "{data} bytes of data grew the buffer to {}",
                connection.buffer_len()
            );
            drop(release);
            peer.join().unwrap();
        }
    }

    #[test]
    fn a_length_over_the_hard_limit_is_refused_at_once() {
        let (mut connection, release, peer) =
            peer_sending(b"VALUE k 0 18446744073709551614\r\n".to_vec());
        let outcome = read_value(&mut connection, usize::MAX);
        assert!(
            matches!(
                outcome,
                Err(Error::Protocol {
                    source: ReplyError::ValueTooLarge { .. },
                    ..
                })
            ),
            "{outcome:?}"
        );
        assert_eq!(connection.buffer_len(), INITIAL_BUFFER);
        drop(release);
        peer.join().unwrap();
    }

    #[test]
    fn a_large_value_reads_whole_and_the_buffer_shrinks_after() {
        let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let mut reply = format!("VALUE k 0 {}\r\n", data.len()).into_bytes();
        reply.extend_from_slice(&data);
        reply.extend_from_slice(b"\r\n");
        let (mut connection, release, peer) = peer_sending(reply.clone());
        assert_eq!(read_value(&mut connection, 2 * data.len()).unwrap(), data);
        assert!(connection.buffer_len() >= data.len());
        assert!(connection.buffer_len() <= bound(reply.len()));
        connection.trim_buffer();
        assert_eq!(connection.buffer_len(), INITIAL_BUFFER);
        drop(release);
        peer.join().unwrap();
    }

    /// Reads a `total`-byte reply `chunk` bytes at a time through `room_for`, its length
    /// known from the start (`exact`, as after a value header) or not (one more byte needed at
    /// every step, as for `stats`); the number of times the buffer grew.
    fn growths(total: usize, chunk: usize, exact: bool) -> usize {
        let (mut len, mut pending, mut grew) = (INITIAL_BUFFER, 0, 0);
        while pending < total {
            let needed = if exact { total } else { pending + 1 };
            let wanted = room_for(pending, needed, len);
            if len < wanted {
                len = wanted;
                grew += 1;
            }
            assert!(len > pending, "no room for a read");
            assert!(len <= bound(pending), "{len} bytes for {pending} received");
            pending += chunk.min(len - pending).min(total - pending);
        }
        grew
    }

    #[test]
    fn the_buffer_doubles_with_the_data_whatever_the_read_size() {
        const MIB: usize = 1024 * 1024;
        for chunk in [1, 1000, 16 * 1024, 64 * 1024, usize::MAX] {
            for exact in [true, false] {
                assert_eq!(growths(100, chunk, exact), 0);
                assert_eq!(growths(MIB + 100, chunk, exact), 7, "{chunk}-byte reads");
            }
            // 16 KiB doubled six times; one more when the length is not known.
            assert_eq!(growths(MIB, chunk, true), 6, "{chunk}-byte reads");
            assert!(growths(MIB, chunk, false) <= 7, "{chunk}-byte reads");
        }
        assert_eq!(growths(MAX_VALUE_LEN_LIMIT + 64, 256 * 1024, true), 17);
    }

    #[test]
    fn name_resolution_ends_at_the_deadline_however_long_the_resolver_takes() {
        let (_never, hangs) = mpsc::channel::<()>();
        let resolver = move |_: String, _: u16| {
            // A resolver that never answers (its name server is gone).
            let _ = hangs.recv();
            Ok(Vec::new())
        };
        let deadline = Instant::now() + Duration::from_millis(50);
        let error = resolve_with("cache.example", 11211, Some(deadline), resolver).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
    }

    #[test]
    fn ip_literals_and_answers_in_time_resolve() {
        let literal = resolve_with("::1", 5, None, |_, _| panic!("an IP needs no resolver"));
        assert_eq!(
            literal.unwrap(),
            vec![SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 5))]
        );
        let answer = SocketAddr::from(([10, 0, 0, 5], 11211));
        let deadline = Instant::now() + Duration::from_secs(30);
        let resolved = resolve_with("cache.example", 11211, Some(deadline), move |name, port| {
            assert_eq!((name.as_str(), port), ("cache.example", 11211));
            Ok(vec![answer])
        });
        assert_eq!(resolved.unwrap(), vec![answer]);
    }

    #[test]
    fn an_unresolvable_name_is_told_from_a_refused_connect() {
        let config = ClientConfig::default();
        // `.invalid` never resolves (RFC 6761).
        let unresolvable = NodeAddress::new("no-such-node.invalid", 11211);
        let error = Connection::connect(&unresolvable, &config, None, None).unwrap_err();
        assert!(error.is_name_not_resolved(), "{error:?}");
        // A closed port: refused, which is not a name failure.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let error = Connection::connect(&NodeAddress::new("127.0.0.1", port), &config, None, None)
            .unwrap_err();
        assert!(!error.is_name_not_resolved(), "{error:?}");
        assert!(
            matches!(&error, Error::Connect { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused),
            "{error:?}"
        );
    }
}
