//! The one I/O engine: every operation is a state machine over pooled connections, run by a
//! driver that waits the way its caller must.
//!
//! An [`Operation`] routes its keys to nodes, leases a connection per node, writes every
//! node's request, then parses the replies as they come, carrying its deadline throughout.
//! It knows nothing of how to wait: [`Operation::run`] is the blocking driver (the socket
//! waits, bounded by the deadline: a poll and a read in one system call), and
//! [`Operation::advance`] is the step event drivers call (asyncio's loop, gevent's hub) each
//! time a socket they watch is ready or the deadline passes. Both steps share everything
//! else: routing, leasing, encoding, parsing, the wrong-key checks, health accounting, the
//! discard of a connection after any error, and `ignore_exc`.
//!
//! What the operating system gives no non-blocking form of (a connect, with its name lookup
//! and TLS handshake; the first discovery; waiting for a pooled connection to come back) is
//! [`Progress::Block`]: an event driver runs [`Operation::prepare`] off its loop, then goes on.
//! A driver that can wait for a pooled connection its own way, without a thread (gevent's
//! hub), asks [`Operation::waits_for_pool`] and runs [`Operation::prepare_without_waiting`]
//! off its loop only to discover or connect.
//!
//! Reads a command declares shareable ([`Command::coalescing`]) board their node's flights
//! once routed (`flights`): a key already being read there joins that read and leaves its
//! share; a `get` that finds none leads a new flight, landed when its exchange ends. A joined
//! position waits the way its driver waits (a condition variable for [`Operation::run`], a
//! file descriptor among [`Operation::waits`] for an event driver). A write's exchange that
//! ends takes its keys' flights out of reach, so a later read never joins an older one.
//!
//! With a local tier (`local_tier`), those reads first look there: a key kept there is
//! served from process memory and leaves its share; one hot enough to be kept is offered
//! what its exchange read. A write's exchange that ends (or fails) removes its keys there too.

use std::cell::RefCell;
#[cfg(unix)]
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Instant;

use elasticache_proto::{Parse, ReplyError};

use crate::cluster::{Cluster, Routes};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::flights::{Boarding, Caller, Flight, Look, Outcome};
use crate::local_tier::{LocalTier, Lookup};
use crate::metrics::CommandName;
use crate::topology::{Node, Topology};
use crate::values::Item;

/// What a reader made of the bytes it was given: the one step of every command's state
/// machine (a command's, with `T = ()`; a single-key plan's, with its outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<T> {
    /// Some replies are read; more are due.
    More,
    /// The reader wrote a further request (into the buffer it was given) whose reply follows.
    Send,
    /// Every reply of the run is read (with the outcome, for a plan).
    Done(T),
}

impl<T> Step<T> {
    /// The same step with a `Done` outcome turned by `f`.
    #[inline]
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Step<U> {
        match self {
            Step::More => Step::More,
            Step::Send => Step::Send,
            Step::Done(output) => Step::Done(f(output)),
        }
    }
}

/// A command's step (see [`Step`]).
pub type Reading = Step<()>;

/// A reader's outcome when the reply at `used` is not whole: `Incomplete` when nothing was
/// used yet, else the progress so far.
pub(crate) fn incomplete(used: usize, needed: usize) -> Parse<Reading> {
    if used == 0 {
        Parse::Incomplete(needed)
    } else {
        Parse::Complete(Step::More, used)
    }
}

/// What a command's failure becomes under `ignore_exc`, as the command declares it; the
/// engine applies it.
#[derive(Debug)]
pub enum Fallback<T> {
    /// A failure is always the caller's to see (a lock must never take "the cache could not
    /// be asked" for "someone else holds it"; per-node results carry their own failures).
    Strict,
    /// The whole outcome becomes this value (a miss, "not stored", "not found").
    Whole(T),
    /// Each failed node's keys are left out (misses, not stored), the rest of the batch stands.
    PerNode,
}

/// Where a reader is in a run's replies; reset for each run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cursor {
    /// Replies (or items) read so far.
    pub item: usize,
    /// Request lines answered so far (multi-line `get` requests).
    pub line: usize,
    /// The first position of the current line not answered yet.
    pub next: usize,
}

/// A node's part of an operation: the positions (in the command's keys) it serves.
#[derive(Debug)]
pub struct Share {
    /// The node.
    pub node: Arc<Node>,
    /// Positions of the keys it owns (for commands sent to every node: the node's index).
    pub positions: Vec<usize>,
}

/// A failed share: its positions and why.
pub type Failed = (Vec<usize>, Error);

/// What an operation does: its requests, how its replies read, and what it returns. Commands
/// are the engine's only per-operation code; see `single`, `classic`, `batch` and `every_node`.
pub trait Command {
    /// What the operation returns.
    type Output;

    /// The command, as the counters name it.
    fn name(&self) -> CommandName;

    /// For a read: how many of `positions` (one node's keys, its exchange over) were found.
    fn hits(&self, _positions: &[usize]) -> Option<usize> {
        None
    }

    /// Checks the command's keys before anything is sent.
    fn validate(&self) -> Result<()>;

    /// Splits the command among the nodes its keys are routed to ([`Routes::route`]; a
    /// command never decides that itself); `Err` when no node can serve it.
    fn shares(&mut self, routes: Routes<'_>) -> Result<Vec<Share>>;

    /// Every position, for a failure that touches all of them (no node to ask).
    fn all_positions(&self) -> Vec<usize>;

    /// Whether the command changes or deletes what its keys hold (`set`, `delete`...): when
    /// it cannot reach a key's owner, or a gutter stands in for it, the key is remembered
    /// and deleted on the owner before it serves reads again (`invalidations`).
    fn invalidates(&self) -> bool {
        false
    }

    /// Whether the command stores or deletes anything (counted as a gutter write when a gutter
    /// serves it); every invalidating command does.
    fn writes(&self) -> bool {
        self.invalidates()
    }

    /// The key at `position`, for an invalidating command ([`Command::invalidates`]) and a
    /// writing one ([`Command::written_key`]).
    fn key(&self, _position: usize) -> Option<&str> {
        None
    }

    /// The request bytes one position's item takes, to split requests over TLS.
    fn size(&self, position: usize) -> usize;

    /// Writes the request for `positions` (a run of one share's positions).
    fn encode(&mut self, out: &mut Vec<u8>, positions: &[usize]);

    /// Reads replies to `positions` from the start of `buf`: `Complete(reading, used)` with
    /// `used > 0` unless the run is done, or `Incomplete` for more bytes.
    fn read(
        &mut self,
        node: &str,
        positions: &[usize],
        cursor: &mut Cursor,
        buf: &[u8],
        request: &mut Vec<u8>,
    ) -> std::result::Result<Parse<Reading>, ReplyError>;

    /// After an exchange failed with a failure `ignore_exc` covers: whether the command has a
    /// further request for the same positions, on a new connection (a failed set's cleanup
    /// `delete`), sent with a deadline of its own. Asked once per failure; the first failure
    /// stays the outcome.
    fn follow_up(&mut self) -> bool {
        false
    }

    /// What a failure becomes under `ignore_exc` (the engine applies it, not the command).
    fn fallback(&self) -> Fallback<Self::Output>;

    /// Once every share of a round answered or failed: the shares of the command's further
    /// round, if it has one; empty, the operation is over. One mechanism for every kind of
    /// further round: a large value's chunks, read or written before or after the keys that
    /// name them ([`Command::shares`] asked again with `routes`), and the rounds on the nodes
    /// a cluster event adds to a key's owner ([`Routes::detour`]: the read of a previous owner
    /// after a miss, the copy of what it held, a delete there before a write), which hold
    /// their nodes already and ignore `routes`.
    ///
    /// `routes` are built as for the first round (gutter, detours). A round's positions must
    /// not reuse an earlier round's, so that [`Command::finish`] can tell whose failures it
    /// is given; `failed` are the shares failed so far (those `ignore_exc` let the command go
    /// on without: no further round follows one it does not cover). Past the deadline, a
    /// round [`Command::aside`] is skipped (the command is asked for the next one, taking the
    /// skipped one as not answered); the first round that is not aside right after one that
    /// is gets a deadline of its own (a write's owners, after the deletes on its detours);
    /// any other round past the deadline fails as a timeout, unsent, and ends the operation.
    fn next_round(&mut self, _routes: Routes<'_>, _failed: &[Failed]) -> Result<Vec<Share>> {
        Ok(Vec::new())
    }

    /// Whether the round running is a detour ([`Command::next_round`]): its failures count
    /// against its nodes but are not the operation's, and past the deadline it is skipped. A
    /// round that is not one (the command's own, after a detour) gets a deadline of its own
    /// when the detour used up the operation's.
    fn aside(&self) -> bool {
        false
    }

    /// The operation is over: what its further rounds did is counted on `cluster`.
    fn settled(&self, _cluster: &Cluster) {}

    /// Whether the command's reads may share identical reads in flight (`flights`).
    fn coalescing(&self) -> Coalescing {
        Coalescing::Never
    }

    /// For a command that coalesces: the key read at `position` (`None`: not shared).
    fn shared_key(&self, _position: usize) -> Option<&str> {
        None
    }

    /// For a command that leads shared reads: what its exchange read at `position`, for the
    /// callers that joined it.
    fn shared_value(&self, _position: usize) -> Option<Item> {
        None
    }

    /// For a shared read: the size of the value read at `position` (`None`: a miss).
    fn read_size(&self, position: usize) -> Option<usize> {
        self.shared_value(position).map(|item| item.data.len())
    }

    /// What another caller's read of the same key read for `position` (a miss: `None`).
    fn take_shared(&mut self, _position: usize, _item: Option<Item>) {}

    /// For a read the local tier may serve (`local_tier`): the key read at `position`. By
    /// default, the key a read shares with identical reads in flight.
    fn local_key(&self, position: usize) -> Option<&str> {
        match self.coalescing() {
            Coalescing::Never => None,
            Coalescing::Joins | Coalescing::Leads => self.shared_key(position),
        }
    }

    /// The local tier's value of `position`'s key, served instead of reading it.
    fn take_local(&mut self, position: usize, item: Item) {
        self.take_shared(position, Some(item));
    }

    /// For the local tier: the value read at `position`, for it to keep (`None`: nothing to
    /// keep).
    fn local_value(&self, position: usize) -> Option<Item> {
        self.shared_value(position)
    }

    /// For a command that changes what is cached: the key it changes at `position` (by
    /// default its key there, when it [`Command::writes`]).
    fn written_key(&self, position: usize) -> Option<&str> {
        if self.writes() {
            self.key(position)
        } else {
            None
        }
    }

    /// Whether the command changes every key of the nodes it is sent to (`flush_all`).
    fn writes_all(&self) -> bool {
        false
    }

    /// The outcome, given the shares that failed (under [`Fallback::PerNode`], only those that
    /// `ignore_exc` let the batch go on without).
    fn finish(self, failed: Vec<Failed>) -> Result<Self::Output>;
}

/// How a command's reads share identical reads in flight in the process (`flights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Coalescing {
    /// Never (a read with a side effect, or not a read).
    Never,
    /// Its keys join reads in flight, but its requests are not joined by others (a batch:
    /// offering every key would cost more than it saves).
    Joins,
    /// Its keys join reads in flight, and its request is one others may join.
    Leads,
}

/// What an event driver must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The outcome is ready: [`Operation::finish`].
    Done,
    /// Wait until a socket of [`Operation::waits`] is ready or the deadline passes, then
    /// [`Operation::advance`] again.
    Wait,
    /// Call [`Operation::prepare`] off the event loop (it may block), then advance again.
    Block,
}

/// What a socket is waited on for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Interest {
    /// Readable: a reply is on its way.
    Read,
    /// Writable: a request is not all written.
    Write,
}

/// One node's exchange: its leased connection, the request being written and the run whose
/// replies are being read.
#[derive(Debug)]
struct Exchange {
    node: Arc<Node>,
    positions: Vec<usize>,
    /// Ends (in `positions`) of the runs sent one at a time (TLS); one run otherwise.
    runs: Vec<usize>,
    run: usize,
    /// `None` once given back or closed.
    connection: Option<Connection>,
    /// Whether any I/O was tried on the connection: until then it is as clean as the pool
    /// gave it, and goes back there if the operation ends early.
    touched: bool,
    /// When the connection was leased: the exchange's latency runs from here.
    started: Instant,
    request: Vec<u8>,
    written: usize,
    flushed: bool,
    cursor: Cursor,
}

/// An exchange's leased connection (it is there until the exchange ends).
fn leased<'c>(connection: &'c mut Option<Connection>, node: &Node) -> Result<&'c mut Connection> {
    connection.as_mut().ok_or_else(|| Error::Closed {
        node: node.address.name.clone(),
    })
}

impl Exchange {
    /// Starts the next request: the current run's.
    fn encode_run<C: Command>(&mut self, command: &mut C) {
        self.request.clear();
        let positions = run_positions(&self.positions, &self.runs, self.run);
        command.encode(&mut self.request, positions);
        self.written = 0;
        self.flushed = false;
        self.cursor = Cursor::default();
    }

    fn sending(&self) -> bool {
        self.written < self.request.len() || !self.flushed
    }

    /// What the reader asked for after reading: the next run, a further request, or the end.
    /// `true` when the exchange is over.
    fn after<C: Command>(&mut self, command: &mut C, reading: Reading) -> bool {
        match reading {
            Step::More => false,
            Step::Send => {
                self.written = 0;
                self.flushed = false;
                false
            }
            Step::Done(()) => {
                self.run += 1;
                if self.run >= self.runs.len() {
                    return true;
                }
                self.encode_run(command);
                false
            }
        }
    }

    /// Blocking: writes what is left of the request.
    fn send_blocking(&mut self, deadline: Option<Instant>) -> Result<()> {
        self.touched = true;
        let connection = leased(&mut self.connection, &self.node)?;
        connection.use_nonblocking(false)?;
        let rest = self.request.get(self.written..).unwrap_or_default();
        connection.send(rest, deadline)?;
        self.written = self.request.len();
        self.flushed = true;
        Ok(())
    }

    /// Blocking: runs the exchange to its end.
    fn complete_blocking<C: Command>(
        &mut self,
        command: &mut C,
        deadline: Option<Instant>,
    ) -> Result<()> {
        loop {
            if self.sending() {
                self.send_blocking(deadline)?;
            }
            let reading = {
                let Exchange {
                    node,
                    connection,
                    request,
                    cursor,
                    positions,
                    runs,
                    run,
                    ..
                } = self;
                let positions = run_positions(positions, runs, *run);
                let connection = leased(connection, node)?;
                let name = node.address.name.as_str();
                let mut cleared = false;
                connection.read(deadline, |buf| {
                    read_into(command, name, positions, cursor, buf, request, &mut cleared)
                })?
            };
            if self.after(command, reading) {
                return Ok(());
            }
        }
    }

    /// Non-blocking: writes and reads what the socket allows; `true` once the exchange is
    /// over.
    fn advance<C: Command>(&mut self, command: &mut C) -> Result<bool> {
        loop {
            self.touched = true;
            let connection = leased(&mut self.connection, &self.node)?;
            connection.use_nonblocking(true)?;
            while self.written < self.request.len() {
                let rest = self.request.get(self.written..).unwrap_or_default();
                match connection.write_available(rest)? {
                    0 => return Ok(false),
                    written => self.written += written,
                }
            }
            if !self.flushed {
                if !connection.flush_available()? {
                    return Ok(false);
                }
                self.flushed = true;
            }
            let reading = {
                let name = self.node.address.name.as_str();
                let positions = run_positions(&self.positions, &self.runs, self.run);
                let (cursor, request) = (&mut self.cursor, &mut self.request);
                let mut cleared = false;
                connection.read_available(|buf| {
                    read_into(command, name, positions, cursor, buf, request, &mut cleared)
                })?
            };
            match reading {
                None => return Ok(false),
                Some(reading) => {
                    if self.after(command, reading) {
                        return Ok(true);
                    }
                }
            }
        }
    }

    fn interest(&self) -> Interest {
        if self.sending() {
            Interest::Write
        } else {
            Interest::Read
        }
    }
}

/// The range of part `index` of a buffer cut at `ends` (each part's end, in order): how runs,
/// and the keys and values of owned lists, are kept. Empty past the last part.
pub(crate) fn part(ends: &[usize], index: usize) -> std::ops::Range<usize> {
    let start = match index.checked_sub(1) {
        Some(previous) => ends.get(previous).copied().unwrap_or_default(),
        None => 0,
    };
    start..ends.get(index).copied().unwrap_or(start)
}

/// The positions of run `run` (see [`Exchange::runs`]).
fn run_positions<'p>(positions: &'p [usize], runs: &[usize], run: usize) -> &'p [usize] {
    positions.get(part(runs, run)).unwrap_or_default()
}

/// Calls the command's reader, giving it the request buffer cleared (once per read) for a
/// further request.
fn read_into<C: Command>(
    command: &mut C,
    node: &str,
    positions: &[usize],
    cursor: &mut Cursor,
    buf: &[u8],
    request: &mut Vec<u8>,
    cleared: &mut bool,
) -> std::result::Result<Parse<Reading>, ReplyError> {
    if !*cleared {
        // The request on the wire is written out: its buffer can take a further one.
        request.clear();
        *cleared = true;
    }
    command.read(node, positions, cursor, buf, request)
}

impl Drop for Exchange {
    fn drop(&mut self) {
        match self.connection.take() {
            // Never used (the operation ended before its turn): as clean as it came.
            Some(connection) if !self.touched => self.node.pool.put_back(connection),
            // Not given back after a clean end: the stream's state is unknown.
            Some(_) => self.node.pool.discard(),
            None => {}
        }
    }
}

/// A cache operation in progress: see the module's documentation. Its steps take the
/// [`Cluster`] it was made on; a `&Client` is one (it dereferences to its cluster).
#[derive(Debug)]
pub struct Operation<C: Command> {
    command: C,
    deadline: Option<Instant>,
    routed: bool,
    /// Shares without a connection yet, in node order.
    pending: Vec<Share>,
    running: Vec<Exchange>,
    failed: Vec<Failed>,
    /// Over TLS, the most request bytes written before their replies are read.
    exchange_limit: usize,
    /// Whether the nodes' counters are kept (`ClientConfig::counters`).
    counting: bool,
    /// Whether a wait for a pooled connection was counted ([`Operation::waits_for_pool`]).
    counted_pool_wait: bool,
    /// Whether its reads may share identical reads in flight (`ClientConfig::coalesce_reads`).
    coalesce: bool,
    /// The thread of the event driver that advances it (`None`: the blocking driver).
    driver: Option<ThreadId>,
    /// The flights its requests lead, until each lands.
    leading: Leading,
    /// Positions waiting for another caller's identical read.
    joined: Vec<Joined>,
    /// One read in this many is recorded in its node's hot-key tables (0: none).
    hot_keys_sample: u32,
    /// Whether a round after an aside one got a deadline of its own ([`Operation::next_round`]).
    renewed: bool,
    /// The reads whose values the local tier wants (`local_tier`).
    admitting: Option<Admitting>,
}

/// Positions whose keys are hot enough for the local tier to keep, waiting for their reads.
#[derive(Debug)]
struct Admitting {
    positions: Vec<usize>,
    /// When the reads were about to be sent, and the tier's epoch then: a value is kept
    /// `ttl` from then, and not at all if a write ended since.
    sent: Instant,
    epoch: u64,
}

/// A read in flight that this operation's request leads (`flights`).
#[derive(Debug)]
struct Lead {
    position: usize,
    node: Arc<Node>,
    flight: Arc<Flight>,
}

/// The flights an operation leads: any still in the air when it ends without landing them
/// (cancelled, dropped) land as abandoned, and their joined callers read on their own.
#[derive(Debug, Default)]
struct Leading(Vec<Lead>);

impl Drop for Leading {
    fn drop(&mut self) {
        for lead in self.0.drain(..) {
            lead.node.flights.land(&lead.flight, Outcome::Abandoned);
        }
    }
}

/// A position that joined another caller's read.
#[derive(Debug)]
struct Joined {
    position: usize,
    node: Arc<Node>,
    flight: Arc<Flight>,
    /// For an event driver: what turns readable when the flight lands.
    #[cfg(unix)]
    signal: Option<OwnedFd>,
}

/// How [`Operation::lease_pending`] may get connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leasing {
    /// Idle connections only (the non-blocking step).
    Idle,
    /// Idle ones, or connect where a pool has room; never wait for one to be returned.
    Connect,
    /// Also wait for one to be returned, when the operation holds no other.
    Wait,
}

/// Over TLS, the most request bytes written before their replies are read: one TLS record.
/// memcached's TLS (1.6) can stall on a pipeline that arrives as several records at once,
/// leaving decrypted requests unprocessed until more bytes come; one record at a time keeps
/// it moving, at the cost of a round trip per 16 KB.
/// (Headroom below 16 KB keeps a `get` exchange within one 16 KB `get` line.)
const MAX_TLS_EXCHANGE: usize = 16 * 1024 - 64;

impl<C: Command> Operation<C> {
    /// An operation on `cluster` doing `command`, its deadline `timeout` from now. Invalid
    /// keys fail here, before anything is sent.
    pub(crate) fn new(cluster: &Cluster, command: C) -> Result<Self> {
        command.validate()?;
        Ok(Operation {
            command,
            deadline: cluster.deadline(),
            routed: false,
            pending: Vec::new(),
            running: Vec::new(),
            failed: Vec::new(),
            exchange_limit: match cluster.config.tls {
                Some(_) => MAX_TLS_EXCHANGE,
                None => usize::MAX,
            },
            counting: cluster.config.counters,
            counted_pool_wait: false,
            coalesce: cluster.config.coalesce_reads,
            driver: None,
            leading: Leading::default(),
            joined: Vec::new(),
            hot_keys_sample: cluster.config.hot_keys_sample,
            renewed: false,
            admitting: None,
        })
    }

    /// The blocking driver: runs the operation (one not advanced by an event driver) to its
    /// end on the calling thread.
    pub fn run(mut self, cluster: &Cluster) -> Result<C::Output> {
        self.route(cluster, true);
        loop {
            self.run_pending(cluster);
            // Its own exchanges are over (their flights landed): now the reads it joined.
            if let Some(joined) = self.joined.pop() {
                match joined.flight.wait(self.deadline) {
                    Some(outcome) => self.take(joined, outcome),
                    None => {
                        let error = self.timeout(cluster, &joined.node);
                        self.failed.push((vec![joined.position], error));
                    }
                }
                continue;
            }
            // Every position has its answer: a further round, if the command has one.
            if !self.next_round(cluster) {
                break;
            }
        }
        self.finish(cluster)
    }

    /// The blocking driver's exchanges: every pending share sent, then its replies read.
    fn run_pending(&mut self, cluster: &Cluster) {
        while !self.pending.is_empty() {
            self.lease_pending(cluster, Leasing::Wait);
            // Every request first, so the nodes work at once; then each node's replies.
            let mut sent = Vec::with_capacity(self.running.len());
            for mut exchange in std::mem::take(&mut self.running) {
                match exchange.send_blocking(self.deadline) {
                    Ok(()) => sent.push(exchange),
                    Err(error) => self.settle(cluster, exchange, Err(error)),
                }
            }
            for mut exchange in sent {
                let outcome = exchange.complete_blocking(&mut self.command, self.deadline);
                self.settle(cluster, exchange, outcome);
            }
        }
    }

    /// One non-blocking step of an event driver: writes and reads what the sockets allow.
    /// Past the deadline, whatever is unfinished fails as a timeout.
    pub fn advance(&mut self, cluster: &Cluster) -> Progress {
        if !self.routed {
            if self.driver.is_none() {
                // Reads that join this one's wait on this thread's loop (or hub).
                self.driver = Some(std::thread::current().id());
            }
            if !self.route(cluster, false) {
                return Progress::Block;
            }
        }
        self.lease_pending(cluster, Leasing::Idle);
        let mut index = 0;
        while let Some(exchange) = self.running.get_mut(index) {
            match exchange.advance(&mut self.command) {
                Ok(false) => index += 1,
                outcome => {
                    let exchange = self.running.remove(index);
                    self.settle(cluster, exchange, outcome.map(drop));
                }
            }
        }
        if !self.joined.is_empty() {
            self.look_at_joined();
        }
        let answered = self.running.is_empty() && self.pending.is_empty() && self.joined.is_empty();
        if answered && self.next_round(cluster) {
            // A further round (a cluster event's detour): its exchanges start at once.
            return self.advance(cluster);
        }
        if self.overdue() {
            self.expire(cluster);
            if self.pending.is_empty() && self.next_round(cluster) {
                // The command's own round after a detour that used up the deadline, with a
                // deadline of its own (`next_round`).
                return self.advance(cluster);
            }
            if !self.pending.is_empty() {
                // A follow-up (a failed set's cleanup), with its own deadline.
                return Progress::Block;
            }
            return Progress::Done;
        }
        if !self.running.is_empty() {
            Progress::Wait
        } else if !self.pending.is_empty() {
            // Shares with no idle connection wait until the running exchanges are over, so
            // that the blocking step holds nothing while it connects or waits for a
            // connection (a cold pool costs a batch one more round trip, once).
            Progress::Block
        } else if !self.joined.is_empty() {
            Progress::Wait
        } else {
            Progress::Done
        }
    }

    /// Takes the outcomes of the joined flights that landed; for the others, makes sure each
    /// has a file descriptor to wait on. A flight that cannot be waited on this way is left
    /// for this operation's own read.
    #[cfg(unix)]
    fn look_at_joined(&mut self) {
        let mut index = 0;
        while let Some(joined) = self.joined.get_mut(index) {
            match joined.flight.look(&mut joined.signal) {
                Look::Flying => index += 1,
                Look::Landed(outcome) => {
                    let joined = self.joined.swap_remove(index);
                    self.take(joined, outcome);
                }
                Look::Unwaitable => {
                    let joined = self.joined.swap_remove(index);
                    self.take(joined, Outcome::Abandoned);
                }
            }
        }
    }

    /// Without file descriptors to wait on: only flights that landed are taken.
    #[cfg(not(unix))]
    fn look_at_joined(&mut self) {
        let joined = std::mem::take(&mut self.joined);
        for joined in joined {
            self.take(joined, Outcome::Abandoned);
        }
    }

    /// A joined read's outcome, as this operation's own: a value or a miss, or a failure
    /// (for `ignore_exc` to apply to as it would to its own); an abandoned flight is read
    /// again, by this operation alone.
    fn take(&mut self, joined: Joined, outcome: Outcome) {
        match outcome {
            Outcome::Read(item) => {
                if let Some(key) = self.command.shared_key(joined.position) {
                    let size = || item.as_ref().map(|item| item.data.len());
                    joined.node.hot_keys.sample(self.hot_keys_sample, key, size);
                }
                self.command.take_shared(joined.position, item);
            }
            Outcome::Failed(error) => self.failed.push((vec![joined.position], error)),
            Outcome::Abandoned => self.pending.push(Share {
                node: joined.node,
                positions: vec![joined.position],
            }),
        }
    }

    /// The timeout error of a share of `node`.
    fn timeout(&self, cluster: &Cluster, node: &Node) -> Error {
        Error::Timeout {
            node: node.address.name.clone(),
            timeout: cluster.config.timeout.unwrap_or_default(),
        }
    }

    /// Boards the shared reads of the routed shares: a position whose key the local tier
    /// keeps is served from it, and one whose key is being read on the same node already
    /// joins that read (either leaves its share); one that is not may lead a new flight.
    fn board(&mut self, cluster: &Cluster) {
        if let Some(tier) = cluster.local_tier() {
            self.serve_locally(&tier);
        }
        let lead = match self.command.coalescing() {
            Coalescing::Never => return,
            Coalescing::Joins => false,
            Coalescing::Leads => true,
        };
        if !self.coalesce {
            return;
        }
        let caller = match self.driver {
            Some(thread) => Caller::Event(thread),
            None => Caller::Blocking,
        };
        let Operation {
            command,
            pending,
            leading,
            joined,
            counting,
            ..
        } = self;
        for share in pending.iter_mut() {
            let node = &share.node;
            if !lead && node.flights.is_empty() {
                continue;
            }
            share.positions.retain(|&position| {
                let Some(key) = command.shared_key(position) else {
                    return true;
                };
                match node.flights.board(key, lead, caller) {
                    Boarding::Alone => true,
                    Boarding::Leads(flight) => {
                        leading.0.push(Lead {
                            position,
                            node: Arc::clone(node),
                            flight,
                        });
                        true
                    }
                    Boarding::Joined(flight) => {
                        if *counting {
                            node.counters.coalesced();
                        }
                        joined.push(Joined {
                            position,
                            node: Arc::clone(node),
                            flight,
                            #[cfg(unix)]
                            signal: None,
                        });
                        false
                    }
                }
            });
        }
        pending.retain(|share| !share.positions.is_empty());
    }

    /// Serves the routed positions whose keys the local tier keeps (they leave their shares),
    /// and notes those it wants the values of once read.
    fn serve_locally(&mut self, tier: &LocalTier) {
        // Read once, and only by a command with keys the tier may serve (not by a write).
        let mut now = None;
        let mut admitting = Vec::new();
        let Operation {
            command,
            pending,
            counting,
            hot_keys_sample,
            ..
        } = self;
        for share in pending.iter_mut() {
            let node = &share.node;
            share.positions.retain(|&position| {
                let Some(key) = command.local_key(position) else {
                    return true;
                };
                match tier.lookup(key, *now.get_or_insert_with(Instant::now)) {
                    Lookup::Hit(item) => {
                        if *counting {
                            node.counters.local_hit();
                        }
                        // Still a read of the key, for the hot-key tables.
                        let size = || Some(item.data.len());
                        node.hot_keys.sample(*hot_keys_sample, key, size);
                        command.take_local(position, item);
                        false
                    }
                    Lookup::Admit => {
                        admitting.push(position);
                        true
                    }
                    Lookup::Pass => true,
                }
            });
        }
        pending.retain(|share| !share.positions.is_empty());
        if let (false, Some(sent)) = (admitting.is_empty(), now) {
            self.admitting = Some(Admitting {
                positions: admitting,
                sent,
                epoch: tier.epoch(),
            });
        }
    }

    /// Offers the local tier the values read at `positions` (an exchange that ended well)
    /// that it asked for.
    fn admit_locally(&mut self, cluster: &Cluster, positions: &[usize]) {
        let (Some(admitting), Some(tier)) = (&mut self.admitting, cluster.local_tier()) else {
            return;
        };
        let command = &self.command;
        admitting.positions.retain(|position| {
            if !positions.contains(position) {
                return true;
            }
            if let (Some(key), Some(item)) =
                (command.local_key(*position), command.local_value(*position))
            {
                tier.admit(key, &item, admitting.sent, admitting.epoch);
            }
            false
        });
    }

    /// Lands the flights led at `positions` with what the exchange read, or its failure.
    fn land(&mut self, positions: &[usize], error: Option<&Error>) {
        let mut index = 0;
        while let Some(lead) = self.leading.0.get(index) {
            if !positions.contains(&lead.position) {
                index += 1;
                continue;
            }
            let lead = self.leading.0.swap_remove(index);
            let outcome = match error {
                Some(error) => Outcome::Failed(error.duplicate()),
                None => Outcome::Read(self.command.shared_value(lead.position)),
            };
            lead.node.flights.land(&lead.flight, outcome);
        }
    }

    /// Records the sampled reads of an exchange that ended well in its node's hot-key tables.
    fn sample_reads(&self, node: &Node, positions: &[usize]) {
        if self.hot_keys_sample == 0 || self.command.coalescing() == Coalescing::Never {
            return;
        }
        for &position in positions {
            if let Some(key) = self.command.shared_key(position) {
                let size = || self.command.read_size(position);
                node.hot_keys.sample(self.hot_keys_sample, key, size);
            }
        }
    }

    /// A write's exchange ended (well or not: it may have been applied): reads that start
    /// from now on must not join a read sent before it, nor be served what the local tier
    /// kept of the key.
    fn forget_written(&self, cluster: &Cluster, node: &Node, positions: &[usize]) {
        // A read changes nothing (a `get`'s own flight is still in the table here: the
        // emptiness test alone would not spare it the walk).
        if !self.command.writes() && !self.command.writes_all() {
            return;
        }
        let tier = cluster.local_tier();
        if node.flights.is_empty() && tier.is_none() {
            return;
        }
        if self.command.writes_all() {
            node.flights.forget_all();
            if let Some(tier) = tier {
                tier.forget_all();
            }
            return;
        }
        let written = || {
            positions
                .iter()
                .filter_map(|&position| self.command.written_key(position))
        };
        for key in written() {
            node.flights.forget(key);
        }
        if let Some(tier) = tier {
            tier.forget(written());
        }
    }

    /// The blocking part an event driver runs off its loop after [`Progress::Block`]: the
    /// first discovery, or connections for the shares that have none (connecting, or waiting
    /// for one to come back when the operation holds no other).
    pub fn prepare(&mut self, cluster: &Cluster) {
        if !self.routed {
            self.route(cluster, true);
        }
        self.lease_pending(cluster, Leasing::Wait);
    }

    /// [`Operation::prepare`] for a driver that waits for pooled connections its own way: the
    /// first discovery, and connections where a pool has room, but never a wait for one to be
    /// returned (a share whose pool has every connection in use stays pending: see
    /// [`Operation::waits_for_pool`]).
    pub fn prepare_without_waiting(&mut self, cluster: &Cluster) {
        if !self.routed {
            self.route(cluster, true);
        }
        self.lease_pending(cluster, Leasing::Connect);
    }

    /// After [`Progress::Block`]: whether all that is left before the exchanges can start is a
    /// wait for a pooled connection to be returned (every connection the pending shares' pools
    /// may have is in use), rather than a discovery or a connect. A driver that can wait
    /// without a thread then waits its own way (a connection is given back at the end of an
    /// exchange) and advances again; past the deadline, [`Operation::advance`] ends the
    /// pending shares as [`Error::PoolExhausted`], as a blocking wait ends.
    ///
    /// The first time it says so, the wait is counted in those pools' waits, as a blocking
    /// wait is.
    pub fn waits_for_pool(&mut self) -> bool {
        if !self.routed || !self.running.is_empty() || self.pending.is_empty() {
            return false;
        }
        let waits = self.pending.iter().all(|share| share.node.pool.is_full());
        if waits && !self.counted_pool_wait {
            self.counted_pool_wait = true;
            for share in &self.pending {
                share.node.pool.count_wait();
            }
        }
        waits
    }

    /// Starts the command's next round, if it has one ([`Command::next_round`]), routed as the
    /// first was: never after a failure `ignore_exc` does not cover; past the deadline, aside
    /// rounds are skipped, the first round after an aside one gets a deadline of its own (as a
    /// follow-up does: the operation stays bounded), and any other round fails as a timeout,
    /// unsent. `false` when the operation is over.
    fn next_round(&mut self, cluster: &Cluster) -> bool {
        if !self.routed
            || self
                .failed
                .iter()
                .any(|(_, error)| !cluster.tolerates(error))
        {
            return false;
        }
        // The first round routed the operation (discovering if need be): the further ones
        // take the membership as it is now, without blocking.
        let topology = cluster.topology();
        loop {
            let after_aside = self.command.aside();
            let failed = std::mem::take(&mut self.failed);
            let routed = self.routed_round(cluster, &topology, false, |command, routes| {
                command.next_round(routes, &failed)
            });
            self.failed = failed;
            let shares = match routed {
                Ok(shares) => shares,
                Err(error) => {
                    if !self.command.aside() {
                        self.failed.push((self.command.all_positions(), error));
                    }
                    return false;
                }
            };
            if shares.is_empty() {
                return false;
            }
            if self.overdue() {
                if self.command.aside() {
                    continue;
                }
                if after_aside && !self.renewed {
                    self.renewed = true;
                    self.deadline = cluster.deadline();
                } else {
                    self.pending = shares;
                    self.expire(cluster);
                    return false;
                }
            }
            self.pending = shares;
            return true;
        }
    }

    /// Whether the operation has its outcome (every share answered or failed).
    pub fn is_done(&self) -> bool {
        self.routed && self.pending.is_empty() && self.running.is_empty() && self.joined.is_empty()
    }

    /// The sockets to wait on, and for what.
    #[cfg(unix)]
    pub fn waits(&self) -> impl Iterator<Item = (std::os::fd::RawFd, Interest)> + '_ {
        let exchanges = self.running.iter().filter_map(|exchange| {
            let fd = exchange.connection.as_ref()?.raw_fd();
            Some((fd, exchange.interest()))
        });
        // Then the reads it joined: each readable once its flight lands.
        let joined = self.joined.iter().filter_map(|joined| {
            let fd = joined.signal.as_ref()?.as_raw_fd();
            Some((fd, Interest::Read))
        });
        exchanges.chain(joined)
    }

    /// When the operation times out, if it does.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn overdue(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Fails whatever is unfinished as a timeout (the deadline passed).
    fn expire(&mut self, cluster: &Cluster) {
        let timeout = cluster.config.timeout.unwrap_or_default();
        // Shares never sent; a follow-up queued by a settle below stays pending.
        let unsent = std::mem::take(&mut self.pending);
        for exchange in std::mem::take(&mut self.running) {
            let error = Error::Timeout {
                node: exchange.node.address.name.clone(),
                timeout,
            };
            self.settle(cluster, exchange, Err(error));
        }
        for share in unsent {
            // Never sent: nothing is known of the node, so nothing counts against its health.
            // With every connection of its pool in use, it waited for one (a driver waiting
            // its own way, `waits_for_pool`): the error a blocking wait ends with.
            let node = share.node.address.name.clone();
            let error = if share.node.pool.is_full() {
                Error::PoolExhausted { node, timeout }
            } else {
                Error::Timeout { node, timeout }
            };
            self.fail(cluster, &share.node, share.positions, error);
        }
        // Joined reads whose flights are still in the air: this caller's own deadline passed.
        for joined in std::mem::take(&mut self.joined) {
            let error = self.timeout(cluster, &joined.node);
            self.failed.push((vec![joined.position], error));
        }
        self.routed = true;
    }

    /// The outcome, once [`Operation::advance`] returned [`Progress::Done`] (or at once:
    /// whatever is unfinished then fails as a timeout).
    pub fn finish(mut self, cluster: &Cluster) -> Result<C::Output> {
        if !self.is_done() {
            self.expire(cluster);
            // No I/O here: a follow-up queued just now is not sent.
            self.pending.clear();
        }
        let failed = std::mem::take(&mut self.failed);
        self.command.settled(cluster);
        let Operation { command, .. } = self;
        match command.fallback() {
            Fallback::Strict => command.finish(failed),
            Fallback::Whole(fallback) => cluster.tolerate(command.finish(failed), || fallback),
            Fallback::PerNode => {
                // The first failure `ignore_exc` does not cover is the outcome; those before it
                // were ignored (counted and logged) all the same.
                let mut failed = failed;
                let refused = failed
                    .iter()
                    .position(|(_, error)| !cluster.tolerates(error));
                let ignored = refused.unwrap_or(failed.len());
                for (_, error) in failed.get(..ignored).unwrap_or_default() {
                    cluster.ignored(error);
                }
                match refused {
                    Some(at) => Err(failed.swap_remove(at).1),
                    None => command.finish(failed),
                }
            }
        }
    }

    /// Routes the command; `false` when that needs a discovery and `blocking` is not allowed.
    fn route(&mut self, cluster: &Cluster, blocking: bool) -> bool {
        let topology = if blocking {
            cluster.routing_topology()
        } else {
            let topology = cluster.topology();
            if cluster.needs_discovery(&topology) {
                return false;
            }
            Ok(topology)
        };
        self.routed = true;
        let routed = topology.and_then(|topology| {
            self.routed_round(cluster, &topology, blocking, |command, routes| {
                command.shares(routes)
            })
        });
        match routed {
            Ok(shares) => {
                self.pending = shares;
                self.board(cluster);
            }
            Err(error) => self.failed.push((self.command.all_positions(), error)),
        }
        true
    }

    /// One round of the command, split by `round` on the routes of `topology` (the gutter,
    /// the detours: discovered first when `blocking` allows); what the gutter took in the
    /// owners' stead is accounted for ([`Cluster::diverted`]).
    fn routed_round(
        &mut self,
        cluster: &Cluster,
        topology: &Topology,
        blocking: bool,
        round: impl FnOnce(&mut C, Routes<'_>) -> Result<Vec<Share>>,
    ) -> Result<Vec<Share>> {
        let detours = cluster.detours(blocking);
        let diverted = RefCell::new(Vec::new());
        let routes = cluster.routes(topology, &diverted, &detours);
        let shares = round(&mut self.command, routes);
        let (writes, invalidates) = (self.command.writes(), self.command.invalidates());
        cluster.diverted(topology, writes, invalidates, diverted.into_inner());
        shares
    }

    /// Leases connections for the pending shares and starts their exchanges.
    ///
    /// Holding connections to other nodes, it never waits for one: another operation may hold
    /// this node's connections while it waits for the ones held here. `leasing` says what
    /// else it may do besides taking idle connections.
    fn lease_pending(&mut self, cluster: &Cluster, leasing: Leasing) {
        let mut index = 0;
        while index < self.pending.len() {
            let node = Arc::clone(&self.pending[index].node);
            let leased = if leasing == Leasing::Idle {
                Cluster::check_up(&node).map(|()| node.pool.take_idle())
            } else if leasing == Leasing::Wait && self.running.is_empty() {
                cluster
                    .lease(&node, self.deadline)
                    .map(|lease| lease.into_connection())
            } else {
                cluster
                    .lease_without_waiting(&node, self.deadline)
                    .map(|lease| lease.and_then(|lease| lease.into_connection()))
            };
            match leased {
                Ok(None) => index += 1,
                Ok(Some(connection)) => {
                    let share = self.pending.remove(index);
                    self.start(share, connection);
                }
                Err(error) => {
                    let share = self.pending.remove(index);
                    self.fail(cluster, &share.node, share.positions, error);
                }
            }
        }
    }

    /// Records a share that failed, in the node's counters too. What it changed or deleted
    /// is remembered against the node, for replay ([`Command::invalidates`]). A further
    /// round's failure is not the operation's (see [`Command::next_round`]).
    fn fail(&mut self, cluster: &Cluster, node: &Arc<Node>, positions: Vec<usize>, error: Error) {
        if self.counting {
            node.counters.error(&error);
        }
        if self.command.aside() {
            log::debug!(
                "{}: a cluster event's detour failed: {error}",
                node.address.name
            );
            return;
        }
        if !self.leading.0.is_empty() {
            self.land(&positions, Some(&error));
        }
        // A write that was not sent, or not answered, may still change the key (a replayed
        // delete, a late reply): forgotten as one that ended well.
        self.forget_written(cluster, node, &positions);
        if self.command.invalidates() {
            let command = &self.command;
            cluster.undelivered(node, positions.iter().filter_map(|&p| command.key(p)));
        }
        self.failed.push((positions, error));
    }

    /// Starts `share`'s exchange on `connection`: its first run's request is encoded.
    fn start(&mut self, share: Share, connection: Connection) {
        if self.counting {
            share.node.counters.request(self.command.name());
        }
        let command = &mut self.command;
        let mut runs = Vec::with_capacity(1);
        if self.exchange_limit == usize::MAX {
            runs.push(share.positions.len());
        } else {
            let mut end = 0;
            let sizes = &*command;
            for run in split_by_size(&share.positions, self.exchange_limit, |p| sizes.size(p)) {
                end += run.len();
                runs.push(end);
            }
        }
        let mut exchange = Exchange {
            node: share.node,
            positions: share.positions,
            runs,
            run: 0,
            connection: Some(connection),
            touched: false,
            started: Instant::now(),
            request: Vec::new(),
            written: 0,
            flushed: false,
            cursor: Cursor::default(),
        };
        exchange.encode_run(command);
        self.running.push(exchange);
    }

    /// Ends an exchange: its connection goes back to the pool after a clean end, and is
    /// closed after any error (counted against the node by the failure policy).
    fn settle(&mut self, cluster: &Cluster, mut exchange: Exchange, outcome: Result<()>) {
        if self.counting {
            exchange.node.counters.latency(exchange.started.elapsed());
        }
        match outcome {
            Ok(()) => {
                // (A failed one's keys are forgotten by `fail`.)
                self.forget_written(cluster, &exchange.node, &exchange.positions);
                if !self.leading.0.is_empty() {
                    self.land(&exchange.positions, None);
                }
                if self.admitting.is_some() {
                    self.admit_locally(cluster, &exchange.positions);
                }
                self.sample_reads(&exchange.node, &exchange.positions);
                cluster.note_success(&exchange.node);
                if let Some(connection) = exchange.connection.take() {
                    exchange.node.pool.put_back(connection);
                }
                if self.counting {
                    if let Some(hits) = self.command.hits(&exchange.positions) {
                        let misses = exchange.positions.len().saturating_sub(hits);
                        exchange.node.counters.lookups(hits, misses);
                    }
                }
            }
            Err(error) => {
                cluster.note_failure(&exchange.node, &error);
                let positions = std::mem::take(&mut exchange.positions);
                let node = Arc::clone(&exchange.node);
                // A failure `ignore_exc` turns into a fallback may still call for a further
                // request on a new connection (a failed set's cleanup), in the same operation.
                // Failures the caller sees need none: nothing was claimed stored. The follow-up
                // gets a deadline of its own, as the backend's second request did, so a set
                // that timed out still deletes the old value (a command asks for one at most,
                // so the operation stays bounded, by twice `timeout`).
                if !self.command.aside() && cluster.tolerates(&error) && self.command.follow_up() {
                    self.pending.push(Share {
                        node: Arc::clone(&node),
                        positions: positions.clone(),
                    });
                    self.deadline = cluster.deadline();
                }
                self.fail(cluster, &node, positions, error);
            }
        }
    }
}

/// Splits `positions` into runs whose `size`s stay within `limit` (an item larger than the
/// limit runs alone).
pub(crate) fn split_by_size<'p>(
    positions: &'p [usize],
    limit: usize,
    size: impl Fn(usize) -> usize + 'p,
) -> impl Iterator<Item = &'p [usize]> + 'p {
    let mut start = 0;
    std::iter::from_fn(move || {
        let rest = positions.get(start..).filter(|rest| !rest.is_empty())?;
        let mut length = 0usize;
        let mut taken = 0;
        for &p in rest {
            let added = size(p);
            if length.saturating_add(added) > limit && taken > 0 {
                break;
            }
            length = length.saturating_add(added);
            taken += 1;
        }
        start += taken;
        rest.get(..taken)
    })
}
