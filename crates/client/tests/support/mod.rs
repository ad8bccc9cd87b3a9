//! Test support: real memcached processes on random ports, and fake servers for faults.
#![allow(dead_code)]

pub mod certs;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use elasticache_client::{Client, ClientConfig, Item, Operation, Progress, Result, TlsSettings};

/// A memcached process listening on 127.0.0.1 at a free port; killed on drop.
pub struct Memcached {
    child: Child,
    pub port: u16,
}

impl Memcached {
    pub fn start() -> Memcached {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Memcached {
        for _ in 0..20 {
            let mut node = Self::spawn(free_port(), extra);
            // Another test's server may have won the port: only ours reports our pid.
            if node.listening() && node.try_stat("pid") == Some(u64::from(node.child.id())) {
                return node;
            }
        }
        panic!("could not start memcached");
    }

    /// A memcached serving TLS with `args` (see `certs::memcached_tls_args`); `client` is the
    /// certificate to present when the server requires one.
    pub fn start_tls(args: &[String], client: Option<&certs::Leaf>) -> Memcached {
        let extra: Vec<&str> = args.iter().map(String::as_str).collect();
        for _ in 0..20 {
            let mut node = Self::spawn(free_port(), &extra);
            // Another test's server may have won the port: only ours reports our pid.
            if node.listening() && node.tls_pid(client) == Some(u64::from(node.child.id())) {
                return node;
            }
        }
        panic!("could not start memcached with TLS");
    }

    /// The server's pid, asked over TLS without verifying its certificate (this only checks
    /// which process holds the port).
    fn tls_pid(&self, client: Option<&certs::Leaf>) -> Option<u64> {
        let settings = {
            let mut custom = TlsSettings::default();
            custom.skip_verification = true;
            custom.client_cert_file = client.map(|leaf| leaf.cert.clone());
            custom.client_key_file = client.map(|leaf| leaf.key.clone());
            custom
        };
        let config = {
            let mut custom = ClientConfig::default();
            custom.tls = Some(settings.build().ok()?);
            custom
        };
        let client = Client::connect_to(&[self.address()], config).ok()?;
        let (_, stats) = client.stats(None).ok()?.into_iter().next()?;
        let pid = stats.ok()?.into_iter().find(|(name, _)| name == "pid")?.1;
        pid.parse().ok()
    }

    fn spawn(port: u16, extra: &[&str]) -> Memcached {
        let port_arg = port.to_string();
        let child = Command::new("memcached")
            // -u root is needed when tests run as root and ignored otherwise.
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port_arg,
                "-U",
                "0",
                "-t",
                "1",
                "-m",
                "64",
            ])
            .args(["-u", "root"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached must be installed (apt-get install memcached)");
        Memcached { child, port }
    }

    /// Waits until the port accepts connections; false if the process exits first.
    fn listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            thread::yield_now();
        }
        false
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server and starts a new, empty one on the same port, as a node restart does.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut node = Self::spawn(self.port, &[]);
            if node.listening() && node.try_stat("pid") == Some(u64::from(node.child.id())) {
                std::mem::swap(self, &mut node);
                return;
            }
            // The port is still being released (the old server's sockets): try again.
            assert!(
                Instant::now() < deadline,
                "could not restart memcached on its port"
            );
            thread::yield_now();
        }
    }

    /// Sends the process `signal` (`"STOP"`, `"CONT"`): a frozen node keeps its sockets open
    /// and answers nothing. `"STOP"` returns once the process is stopped: `kill` returns
    /// before a process running on another CPU stops, and it could answer one more request.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
        if signal == "STOP" {
            let give_up = Instant::now() + Duration::from_secs(30);
            while self.state() != Some('T') {
                assert!(Instant::now() < give_up, "memcached never stopped");
                thread::yield_now();
            }
        }
    }

    /// The process's state letter in `/proc` (`'T'`: stopped); `None` where there is none.
    fn state(&self) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // The state follows the command name, which is in parentheses and may hold spaces.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .next()?
            .chars()
            .next()
    }

    /// A client for this node alone.
    pub fn client(&self) -> Client {
        Client::connect_to(&[self.address()], ClientConfig::default()).unwrap()
    }

    /// One `stats` value, read over a fresh raw connection.
    pub fn stat(&self, name: &str) -> u64 {
        self.try_stat(name)
            .unwrap_or_else(|| panic!("cannot read stat {name}"))
    }

    fn try_stat(&self, name: &str) -> Option<u64> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.write_all(b"stats\r\n").ok()?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        while !reply.ends_with(b"END\r\n") {
            let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
            reply.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8(reply).ok()?;
        let prefix = format!("STAT {name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A key that `client` places on its node number `node`.
pub fn key_on(client: &Client, node: usize) -> String {
    let topology = client.topology();
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|key| topology.node_index_for(key) == Some(node))
        .unwrap()
}

/// A configuration for freezing a node (SIGSTOP) under a test: a call to it times out in
/// 200 ms with no retry, `ignore_exc` turns that into a miss, and a node marked down stays
/// down (600 s), so that only the replay of its invalidations brings it back.
pub fn freezing_config() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.timeout = Some(Duration::from_millis(200));
    config.retry_attempts = 1;
    config.dead_timeout = Duration::from_secs(600);
    config.ignore_exc = true;
    config
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How a fake server answers each request it reads on a connection.
///
/// A request is whatever one `read` returns: the client writes each request with one
/// `write_all`, which arrives whole on loopback.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Send these bytes, and keep serving the connection the same way.
    Reply(Vec<u8>),
    /// Send these bytes, then close.
    ReplyAndClose(Vec<u8>),
    /// Wait this long, then send these bytes: a reply that comes after the client gave up.
    ReplyAfter(Duration, Vec<u8>),
    /// Never answer (the connection stays open until the client closes it).
    Silent,
    /// Send these bytes one at a time, this long apart: each read gets something in time,
    /// the whole reply does not.
    Trickle(Duration, Vec<u8>),
    /// Answer the n-th request with the n-th reply; after the last, close the connection or
    /// (`then_close: false`) answer nothing more.
    InTurn {
        replies: Vec<Vec<u8>>,
        then_close: bool,
    },
}

#[derive(Debug, Default)]
struct Counts {
    accepted: usize,
    replies: usize,
}

/// What a fake server has done so far, for tests to wait on and assert about.
#[derive(Debug, Default)]
struct Seen {
    counts: Mutex<Counts>,
    changed: Condvar,
}

impl Seen {
    fn update(&self, change: impl FnOnce(&mut Counts)) {
        change(&mut self.counts.lock().unwrap());
        self.changed.notify_all();
    }
}

/// A server on a free port that answers requests in a faulty way, counting what it does.
pub struct FakeServer {
    pub port: u16,
    seen: Arc<Seen>,
}

impl FakeServer {
    /// Treats every connection with `fault`.
    pub fn start(fault: Fault) -> FakeServer {
        Self::start_each(vec![fault])
    }

    /// Treats the n-th connection with `faults[n]`, and every connection after the last fault
    /// with the last one.
    pub fn start_each(faults: Vec<Fault>) -> FakeServer {
        assert!(!faults.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let counter = Arc::clone(&seen);
        thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                counter.update(|c| c.accepted += 1);
                let fault = faults[n.min(faults.len() - 1)].clone();
                let counter = Arc::clone(&counter);
                thread::spawn(move || serve(stream, &fault, &counter));
            }
        });
        FakeServer { port, seen }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.seen.counts.lock().unwrap().accepted
    }

    /// Blocks until the server has sent `n` replies in all (panics after 10 s).
    pub fn wait_for_replies(&self, n: usize) {
        let guard = self.seen.counts.lock().unwrap();
        let (_guard, wait) = self
            .seen
            .changed
            .wait_timeout_while(guard, Duration::from_secs(10), |c| c.replies < n)
            .unwrap();
        assert!(!wait.timed_out(), "the fake server never sent {n} replies");
    }
}

/// Serves one connection until the client closes it or the fault closes it.
fn serve(mut stream: TcpStream, fault: &Fault, seen: &Seen) {
    let mut request = [0u8; 4096];
    let mut served = 0;
    while stream.read(&mut request).unwrap_or(0) > 0 {
        served += 1;
        let (reply, close) = match fault {
            Fault::InTurn {
                replies,
                then_close,
            } => match replies.get(served - 1) {
                Some(reply) => (reply, *then_close && served == replies.len()),
                None => continue,
            },
            Fault::Reply(bytes) => (bytes, false),
            Fault::ReplyAndClose(bytes) => (bytes, true),
            Fault::ReplyAfter(delay, bytes) => {
                thread::sleep(*delay); // the fault itself: a slow server
                (bytes, false)
            }
            Fault::Silent => continue,
            Fault::Trickle(pause, bytes) => {
                for byte in bytes {
                    thread::sleep(*pause); // the fault itself: a server that trickles
                    if stream.write_all(&[*byte]).is_err() {
                        return;
                    }
                }
                seen.update(|c| c.replies += 1);
                continue;
            }
        };
        let _ = stream.write_all(reply);
        seen.update(|c| c.replies += 1);
        if close {
            return;
        }
    }
}

/// How a fake configuration endpoint answers discovery requests.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// An ElastiCache endpoint listing these `host|ip|port` members.
    Cluster { version: u64, members: Vec<String> },
    /// An engine before 1.4.14: `ERROR` to `config get cluster`, the legacy key has the config.
    Legacy { version: u64, members: Vec<String> },
    /// What plain memcached answers: `ERROR`, and no legacy key (`END`).
    Plain,
    /// Bytes that are not the protocol.
    Garbage,
    /// Never answers.
    Silent,
}

/// A configuration endpoint whose answer can be changed while clients use it.
pub struct FakeEndpoint {
    pub port: u16,
    behaviour: Arc<Mutex<Endpoint>>,
    requests: Arc<Seen>,
}

impl FakeEndpoint {
    pub fn start(behaviour: Endpoint) -> FakeEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let behaviour = Arc::new(Mutex::new(behaviour));
        let requests = Arc::new(Seen::default());
        let (shared, counter) = (Arc::clone(&behaviour), Arc::clone(&requests));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (shared, counter) = (Arc::clone(&shared), Arc::clone(&counter));
                thread::spawn(move || answer_discovery(stream, &shared, &counter));
            }
        });
        FakeEndpoint {
            port,
            behaviour,
            requests,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn set(&self, behaviour: Endpoint) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// `config get cluster` requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.counts.lock().unwrap().accepted
    }

    /// Blocks until `n` requests have arrived (panics after 10 s).
    pub fn wait_for_requests(&self, n: usize) {
        let guard = self.requests.counts.lock().unwrap();
        let (_guard, wait) = self
            .requests
            .changed
            .wait_timeout_while(guard, Duration::from_secs(10), |c| c.accepted < n)
            .unwrap();
        assert!(!wait.timed_out(), "the endpoint never got {n} requests");
    }
}

/// The `host|ip|port` member entry of a local memcached node.
pub fn member(node: &Memcached) -> String {
    format!("localhost|127.0.0.1|{}", node.port)
}

fn config_frame(header: &str, version: u64, members: &[String]) -> Vec<u8> {
    let body = format!("{version}\n{}\n", members.join(" "));
    format!("{header} {}\r\n{body}\r\nEND\r\n", body.len()).into_bytes()
}

fn answer_discovery(mut stream: TcpStream, behaviour: &Mutex<Endpoint>, seen: &Seen) {
    let mut request = [0u8; 4096];
    loop {
        let n = stream.read(&mut request).unwrap_or(0);
        if n == 0 {
            return;
        }
        let asked_config = request[..n].starts_with(b"config get cluster");
        if asked_config {
            seen.update(|c| c.accepted += 1);
        }
        let behaviour = behaviour.lock().unwrap().clone();
        let reply = match (behaviour, asked_config) {
            (Endpoint::Cluster { version, members }, true) => {
                config_frame("CONFIG cluster 0", version, &members)
            }
            (Endpoint::Legacy { version, members }, false) => {
                config_frame("VALUE AmazonElastiCache:cluster 0", version, &members)
            }
            (Endpoint::Legacy { .. }, true) => b"ERROR\r\n".to_vec(),
            (Endpoint::Plain, true) => b"ERROR\r\n".to_vec(),
            (Endpoint::Plain, false) => b"END\r\n".to_vec(),
            (Endpoint::Garbage, _) => b"\x00\xff\xfeHELLO\r\n".to_vec(),
            (Endpoint::Silent, _) => continue,
            (Endpoint::Cluster { .. }, false) => b"ERROR\r\n".to_vec(),
        };
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

/// How long an event-loop get in a test waits for its reply before the test fails.
const EVENT_LOOP_BOUND: Duration = Duration::from_secs(5);

/// Advances `operation` until it is done, as an event loop would on each readable event (here
/// by asking again until the bound). A warm pool never needs the blocking step.
pub fn drive<C: elasticache_client::Command>(client: &Client, operation: &mut Operation<C>) {
    let give_up = Instant::now() + EVENT_LOOP_BOUND;
    loop {
        match operation.advance(client) {
            Progress::Done => return,
            Progress::Block => panic!("a warm pool must not block"),
            _ => {
                assert!(
                    Instant::now() < give_up,
                    "no reply within {EVENT_LOOP_BOUND:?}"
                );
                std::thread::yield_now();
            }
        }
    }
}

/// Starts a get and runs it to its outcome, whichever way it starts.
pub fn event_loop_get(client: &Client, key: &str) -> Result<Option<Item>> {
    let mut operation = client.start_get(key.to_owned())?;
    drive(client, &mut operation);
    operation.finish(client)
}

/// Waits (bounded) until `done` holds.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resumes a frozen server even when the test fails, so that it can be killed.
pub struct Thaw<'m>(pub &'m Memcached);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        self.0.signal("CONT");
    }
}
