//! Test support: real memcached processes on random ports, and fake servers for faults.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use elasticache_client::{Client, ClientConfig};

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
            if let Some(node) = Self::try_start(free_port(), extra) {
                return node;
            }
        }
        panic!("could not start memcached");
    }

    fn try_start(port: u16, extra: &[&str]) -> Option<Memcached> {
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
                "-u",
                "root",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached must be installed (apt-get install memcached)");
        let mut node = Memcached { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Another test's server may have won the port: only ours reports our pid.
                return (node.try_stat("pid") == Some(u64::from(node.child.id()))).then_some(node);
            }
            if node.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            thread::yield_now();
        }
        None
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How a fake server treats each connection once it has read a request.
#[derive(Clone)]
pub enum Fault {
    /// Send these bytes, then keep the connection open.
    Reply(Vec<u8>),
    /// Send these bytes, then close.
    ReplyAndClose(Vec<u8>),
    /// Never answer (the connection stays open until the test ends).
    Silent,
}

/// A server on a free port that answers every request the same faulty way.
pub struct FakeServer {
    pub port: u16,
}

impl FakeServer {
    pub fn start(fault: Fault) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let fault = fault.clone();
                let mut request = [0u8; 4096];
                if stream.read(&mut request).unwrap_or(0) == 0 {
                    continue;
                }
                match fault {
                    Fault::Reply(bytes) => {
                        let _ = stream.write_all(&bytes);
                        held.push(stream);
                    }
                    Fault::ReplyAndClose(bytes) => {
                        let _ = stream.write_all(&bytes);
                    }
                    Fault::Silent => held.push(stream),
                }
            }
        });
        FakeServer { port }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
