//! Identical reads in flight on one node share one request: a caller whose key is already being
//! read there (by another thread, task or greenlet of this process) joins that read instead of
//! sending its own.
//!
//! Each node keeps a table of its reads in flight, by key. A read that leads a flight lands it
//! with its outcome (the value, a miss, or the failure), and every caller that joined it takes
//! a copy: a failure reaches each of them as their own, for each to apply `ignore_exc` to. A
//! leader that ends without an outcome (cancelled, dropped) lands it as abandoned, and each
//! joined caller then sends its own read: cancelling one caller never cancels another.
//!
//! Read-your-writes holds within the process: a write (any command that changes a key) that
//! ends takes the key's flight out of the table, so a read that starts after the write ended
//! never joins a request that may have been answered before it. Those that joined already
//! started before the write ended, and may see either value, as they would alone.
//!
//! Joined callers wait the way their driver waits: a blocking thread on a condition variable
//! (bounded by its own deadline), an event driver on a file descriptor of its own that turns
//! readable once the flight lands (a duplicate of the flight's socket pair: one wake-up write
//! for every joined caller, and each driver's registrations stay its own). A blocking caller
//! never joins a flight led by an event driver on its own thread: that leader could not run
//! while the thread waits.

use std::collections::HashMap;
use std::io::Write;
#[cfg(unix)]
use std::os::fd::{AsFd, OwnedFd};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::Instant;

use crate::error::Error;
use crate::sync::lock;
use crate::values::Item;

/// What a flight landed with.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The value read, or a miss.
    Read(Option<Item>),
    /// The read failed.
    Failed(Error),
    /// The leader ended without an outcome: each joined caller sends its own read.
    Abandoned,
}

impl Outcome {
    /// A joined caller's own copy.
    fn copy(&self) -> Outcome {
        match self {
            Outcome::Read(item) => Outcome::Read(item.clone()),
            Outcome::Failed(error) => Outcome::Failed(error.duplicate()),
            Outcome::Abandoned => Outcome::Abandoned,
        }
    }
}

/// Who asks to board a flight: how it would wait for one it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A blocking thread.
    Blocking,
    /// An event driver (asyncio's loop, gevent's hub) running on this thread.
    Event(ThreadId),
}

/// What boarding found.
#[derive(Debug)]
pub(crate) enum Boarding {
    /// The caller joined a read in flight: it waits for it to land.
    Joined(Arc<Flight>),
    /// The caller's read leads a new flight: it lands it when its exchange ends.
    Leads(Arc<Flight>),
    /// The caller reads alone.
    Alone,
}

/// What a joined event-driven caller finds when it looks at its flight.
#[derive(Debug)]
pub(crate) enum Look {
    /// Landed: the caller's copy of the outcome.
    Landed(Outcome),
    /// Still in flight: wait for `signal` to turn readable.
    Flying,
    /// No file descriptor could be made to wait on: the caller reads alone.
    Unwaitable,
}

#[derive(Debug, Default)]
struct State {
    outcome: Option<Outcome>,
    /// The socket pair that turns readable when the flight lands: made by the first joined
    /// event-driven caller.
    #[cfg(unix)]
    signal: Option<(UnixStream, UnixStream)>,
}

/// One read in flight that other callers may join.
#[derive(Debug)]
pub(crate) struct Flight {
    /// Shared with the table's entry: one allocation per flight.
    key: Arc<str>,
    /// An event-driven leader's thread.
    leader: Option<ThreadId>,
    state: Mutex<State>,
    landed: Condvar,
}

impl Flight {
    /// Whether `caller` may wait for this flight: not a blocking caller on the thread of the
    /// event driver that leads it.
    fn joinable_by(&self, caller: Caller) -> bool {
        match (caller, self.leader) {
            (Caller::Blocking, Some(leader)) => leader != std::thread::current().id(),
            _ => true,
        }
    }

    /// Blocking: waits for the flight to land, until `deadline`; `None` when it passed first.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Option<Outcome> {
        let mut state = lock(&self.state);
        loop {
            if let Some(outcome) = &state.outcome {
                return Some(outcome.copy());
            }
            state = match deadline {
                None => self
                    .landed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    self.landed
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// For an event driver: the outcome if the flight landed; else, when `signal` is empty, a
    /// file descriptor put there that turns readable once it lands.
    #[cfg(unix)]
    pub(crate) fn look(&self, signal: &mut Option<OwnedFd>) -> Look {
        let mut state = lock(&self.state);
        if let Some(outcome) = &state.outcome {
            return Look::Landed(outcome.copy());
        }
        if signal.is_some() {
            return Look::Flying;
        }
        if state.signal.is_none() {
            match UnixStream::pair().and_then(|(reader, writer)| {
                writer.set_nonblocking(true)?;
                Ok((reader, writer))
            }) {
                Ok(pair) => state.signal = Some(pair),
                Err(error) => {
                    log::debug!("no socket pair to wait for a shared read: {error}");
                    return Look::Unwaitable;
                }
            }
        }
        let duplicate = state
            .signal
            .as_ref()
            .map(|(reader, _)| reader.as_fd().try_clone_to_owned());
        match duplicate {
            Some(Ok(fd)) => {
                *signal = Some(fd);
                Look::Flying
            }
            Some(Err(error)) => {
                log::debug!("no file descriptor to wait for a shared read: {error}");
                Look::Unwaitable
            }
            None => Look::Unwaitable,
        }
    }

    /// Sets the outcome and wakes every joined caller.
    fn set(&self, outcome: Outcome) {
        let mut state = lock(&self.state);
        if state.outcome.is_some() {
            return;
        }
        state.outcome = Some(outcome);
        #[cfg(unix)]
        if let Some((_, writer)) = state.signal.as_mut() {
            // One byte, never read: the reader and its duplicates stay readable for good.
            if let Err(error) = writer.write(&[1]) {
                log::debug!("cannot wake the callers of a shared read: {error}");
            }
        }
        drop(state);
        self.landed.notify_all();
    }
}

/// A node's reads in flight, by key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    table: Mutex<HashMap<Arc<str>, Arc<Flight>>>,
    /// How many flights the table holds: an empty table is never locked.
    count: AtomicUsize,
}

impl Flights {
    /// Whether no read is in flight (then there is nothing to join or to forget).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// Joins the flight of `key` if there is one `caller` may join; otherwise, with `lead`,
    /// starts one that the caller's read leads.
    pub(crate) fn board(&self, key: &str, lead: bool, caller: Caller) -> Boarding {
        if !lead && self.is_empty() {
            return Boarding::Alone;
        }
        let mut table = lock(&self.table);
        if let Some(flight) = table.get(key) {
            return if flight.joinable_by(caller) {
                Boarding::Joined(Arc::clone(flight))
            } else {
                Boarding::Alone
            };
        }
        if !lead {
            return Boarding::Alone;
        }
        let key: Arc<str> = Arc::from(key);
        let flight = Arc::new(Flight {
            key: Arc::clone(&key),
            leader: match caller {
                Caller::Event(thread) => Some(thread),
                Caller::Blocking => None,
            },
            state: Mutex::new(State::default()),
            landed: Condvar::new(),
        });
        table.insert(key, Arc::clone(&flight));
        self.count.store(table.len(), Ordering::Release);
        Boarding::Leads(flight)
    }

    /// Lands `flight` (led by the caller) with `outcome`: it leaves the table, then every
    /// joined caller is woken.
    pub(crate) fn land(&self, flight: &Flight, outcome: Outcome) {
        self.remove(&flight.key, Some(flight));
        flight.set(outcome);
    }

    /// A write to `key` ended: a read that starts from now on must not join a flight sent
    /// before (it may have been answered before the write).
    #[inline]
    pub(crate) fn forget(&self, key: &str) {
        if !self.is_empty() {
            self.remove(key, None);
        }
    }

    /// Every key changed (`flush_all`): no flight in the table may be joined any more.
    pub(crate) fn forget_all(&self) {
        if !self.is_empty() {
            let mut table = lock(&self.table);
            table.clear();
            self.count.store(0, Ordering::Release);
        }
    }

    /// Takes `key`'s flight out of the table (only if it is `only`, when given).
    fn remove(&self, key: &str, only: Option<&Flight>) {
        let mut table = lock(&self.table);
        let ours = match (table.get(key), only) {
            (Some(found), Some(only)) => std::ptr::eq(Arc::as_ptr(found), only),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if ours {
            table.remove(key);
            self.count.store(table.len(), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn item(data: &'static [u8]) -> Item {
        Item {
            flags: 0,
            data: Bytes::from_static(data),
            cas: None,
        }
    }

    #[test]
    fn a_second_reader_joins_and_gets_the_leaders_value() {
        let flights = Flights::default();
        let Boarding::Leads(flight) = flights.board("k", true, Caller::Blocking) else {
            panic!("the first reader leads");
        };
        let Boarding::Joined(joined) = flights.board("k", true, Caller::Blocking) else {
            panic!("the second reader joins");
        };
        let waiter = std::thread::spawn(move || joined.wait(None));
        flights.land(&flight, Outcome::Read(Some(item(b"v"))));
        match waiter.join().unwrap() {
            Some(Outcome::Read(Some(found))) => assert_eq!(found.data, Bytes::from_static(b"v")),
            other => panic!("{other:?}"),
        }
        assert!(flights.is_empty(), "a landed flight leaves the table");
        assert!(matches!(
            flights.board("k", true, Caller::Blocking),
            Boarding::Leads(_)
        ));
    }

    #[test]
    fn a_write_ends_the_flights_that_later_readers_may_join() {
        let flights = Flights::default();
        let Boarding::Leads(first) = flights.board("k", true, Caller::Blocking) else {
            panic!("the first reader leads");
        };
        flights.forget("k");
        let Boarding::Leads(second) = flights.board("k", true, Caller::Blocking) else {
            panic!("after the write a reader leads a flight of its own");
        };
        // The first flight landing does not take the second out of the table.
        flights.land(&first, Outcome::Abandoned);
        assert!(matches!(
            flights.board("k", false, Caller::Blocking),
            Boarding::Joined(_)
        ));
        flights.land(&second, Outcome::Read(None));
        flights.forget_all();
        assert!(flights.is_empty());
    }

    #[test]
    fn a_blocking_caller_never_waits_for_its_own_threads_event_driver() {
        let flights = Flights::default();
        let me = std::thread::current().id();
        let Boarding::Leads(_flight) = flights.board("k", true, Caller::Event(me)) else {
            panic!("the first reader leads");
        };
        assert!(matches!(
            flights.board("k", true, Caller::Blocking),
            Boarding::Alone
        ));
        assert!(matches!(
            flights.board("k", true, Caller::Event(me)),
            Boarding::Joined(_)
        ));
    }

    #[test]
    fn a_joined_event_caller_is_woken_by_its_own_descriptor_and_a_wait_is_bounded() {
        let flights = Flights::default();
        let Boarding::Leads(flight) = flights.board("k", true, Caller::Blocking) else {
            panic!("the first reader leads");
        };
        let Boarding::Joined(joined) = flights.board("k", true, Caller::Blocking) else {
            panic!("joins");
        };
        assert!(joined
            .wait(Some(Instant::now() + Duration::from_millis(1)))
            .is_none());
        let (mut first, mut second) = (None, None);
        assert!(matches!(joined.look(&mut first), Look::Flying));
        assert!(matches!(joined.look(&mut second), Look::Flying));
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_ne!(
            std::os::fd::AsRawFd::as_raw_fd(&first),
            std::os::fd::AsRawFd::as_raw_fd(&second)
        );
        flights.land(&flight, Outcome::Failed(Error::NoNodes));
        // The shared socket turned readable: read through one duplicate (a caller's wake-up).
        let mut stream = UnixStream::from(second);
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut stream, &mut byte).unwrap(), 1);
        drop(first);
        assert!(matches!(
            joined.look(&mut None),
            Look::Landed(Outcome::Failed(Error::NoNodes))
        ));
    }
}
