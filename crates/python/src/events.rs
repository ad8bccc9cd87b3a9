//! The client's events (`elasticache_client::Event`) handed to a Python callable as dicts, in
//! the order they happened, on a native worker thread: never on the thread, nor under the
//! locks, where they happened, and never on a request's path.
//!
//! A fork never waits for the callable (it runs the application's signal receivers, which may
//! sleep or block): delivery stops between two events when a fork is pending and is queued
//! again for after it, and a receiver running when the fork begins is left running (see
//! `completion::unawaited`). No lock of this module is held while the callable runs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use elasticache_client::{Event, EventSink};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::completion;
use crate::shutdown;

/// Events waiting for the callable, and whether a worker of this process is draining them.
#[derive(Default)]
struct Queue {
    events: VecDeque<Event>,
    draining: bool,
    /// The process the two fields above belong to. A child forked while events were queued
    /// inherits them, and `draining` set by a delivery job that was still queued when the
    /// workers parked for the fork: that job is the parent's (`completion` gives the child
    /// fresh workers), so without this the child would never start one and never deliver.
    pid: u32,
}

impl Queue {
    /// Queues `event` for process `pid`; true when the caller must start a delivery job.
    /// Events inherited from a parent process are dropped: they happened there, and the
    /// parent delivers them.
    fn push(&mut self, event: Event, pid: u32) -> bool {
        if self.pid != pid {
            self.events.clear();
            self.draining = false;
            self.pid = pid;
        }
        self.events.push_back(event);
        !std::mem::replace(&mut self.draining, true)
    }
}

/// The queue and what hands an event over: `deliver` returns false once Python is exiting.
struct Delivery<D> {
    deliver: D,
    queue: Mutex<Queue>,
}

impl<D: Fn(&Event) -> bool + Send + Sync + 'static> Delivery<D> {
    fn new(deliver: D) -> Arc<Self> {
        Arc::new(Delivery {
            deliver,
            queue: Mutex::new(Queue::default()),
        })
    }

    // A panic while holding the lock loses at most queued events: the lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `event`, and starts a delivery job unless one is on its way.
    fn push(self: &Arc<Self>, event: &Event) {
        let start = self.lock().push(event.clone(), std::process::id());
        if start {
            self.submit();
        }
    }

    /// Has a worker run [`Delivery::drain`] (the caller set `draining`).
    fn submit(self: &Arc<Self>) {
        let draining = Arc::clone(self);
        if let Err(error) = completion::submit(Box::new(move || draining.drain())) {
            log::warn!("cannot start a thread to deliver cache events: {error}");
            self.lock().draining = false;
        }
    }

    /// Hands every queued event over, one at a time and in order, until none is left (events
    /// queued meanwhile included), or until a fork is pending: then the rest stays queued and
    /// this job is queued again, to go on after the fork (in the parent: the child's pool
    /// drops the parent's jobs, and its queue the parent's events).
    fn drain(self: Arc<Self>) {
        loop {
            let event = {
                let mut queue = self.lock();
                if queue.pid != std::process::id() {
                    // Forked from inside a receiver, and this is the child: what is left
                    // happened in the parent, which delivers it.
                    queue.events.clear();
                    queue.draining = false;
                    return;
                }
                match queue.events.pop_front() {
                    Some(event) => event,
                    None => {
                        queue.draining = false;
                        return;
                    }
                }
            };
            // The queue's lock is released: a fork may leave this thread in the receivers.
            match completion::unawaited(|| (self.deliver)(&event)) {
                Some(true) => {}
                Some(false) => return, // Python is exiting
                None => {
                    // A fork is pending: the event goes back first in line (only this job
                    // takes events out, so the order holds) and the thread is given back.
                    self.lock().events.push_front(event);
                    self.submit();
                    return;
                }
            }
        }
    }
}

/// A sink that queues each event and has a native worker hand it to `callback`.
pub fn sink(callback: Py<PyAny>) -> EventSink {
    let delivery = Delivery::new(move |event: &Event| {
        shutdown::attach(|py| {
            let delivered =
                to_dict(py, event).and_then(|dict| callback.call1(py, (dict,)).map(drop));
            if let Err(error) = delivered {
                // The receivers' failure is theirs to see, not the cache's.
                error.write_unraisable(py, None);
            }
        })
        .is_some()
    });
    EventSink::new(move |event| delivery.push(event))
}

/// An event as the documented dict: `event` names it, the rest are its fields.
fn to_dict<'py>(py: Python<'py>, event: &Event) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    match event {
        Event::MembershipChanged {
            added,
            removed,
            version,
        } => {
            dict.set_item("event", "membership_changed")?;
            dict.set_item("added", added)?;
            dict.set_item("removed", removed)?;
            dict.set_item("version", version)?;
        }
        Event::NodeDown {
            node,
            failures,
            retry_in,
        } => {
            dict.set_item("event", "node_down")?;
            dict.set_item("node", node)?;
            dict.set_item("failures", failures)?;
            dict.set_item("retry_in", retry_in.as_secs_f64())?;
        }
        Event::NodeUp { node } => {
            dict.set_item("event", "node_up")?;
            dict.set_item("node", node)?;
        }
        Event::InvalidationsOverflowed { node, kept, flush } => {
            dict.set_item("event", "invalidations_overflowed")?;
            dict.set_item("node", node)?;
            dict.set_item("kept", kept)?;
            dict.set_item("flush", flush)?;
        }
        Event::WarmupStarted { window } => {
            dict.set_item("event", "warmup_started")?;
            dict.set_item("window", window.as_secs_f64())?;
        }
        Event::WarmupEnded => dict.set_item("event", "warmup_ended")?,
        Event::DiscoveryFailed { endpoint, error } => {
            dict.set_item("event", "discovery_failed")?;
            dict.set_item("endpoint", endpoint)?;
            dict.set_item("error", error)?;
        }
        // An event this version does not know: named only.
        _ => dict.set_item("event", "other")?,
    }
    Ok(dict)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;
    use crate::completion::tests::{exclusive, until_out_of_user_code, until_parking, BOUND};

    fn node_up(node: &str) -> Event {
        Event::NodeUp {
            node: node.to_owned(),
        }
    }

    /// A delivery recording the nodes of its `NodeUp` events, given three (`a:1`, `b:1`,
    /// `c:1`), whose receiver is blocked on the first one (until released) when it returns.
    #[allow(clippy::type_complexity)]
    fn blocked_on_the_first_of_three() -> (
        Arc<Delivery<impl Fn(&Event) -> bool + Send + Sync + 'static>>,
        Arc<Mutex<Vec<String>>>,
        mpsc::Sender<()>,
    ) {
        let (running, blocked) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let delivery = Delivery::new(move |event: &Event| {
            if let Event::NodeUp { node } = event {
                if node == "a:1" {
                    let _ = running.send(());
                    let _ = released.lock().unwrap().recv_timeout(BOUND);
                }
                record.lock().unwrap().push(node.clone());
            }
            true
        });
        delivery.push(&node_up("a:1"));
        blocked.recv_timeout(BOUND).expect("no delivery");
        delivery.push(&node_up("b:1"));
        delivery.push(&node_up("c:1"));
        (delivery, seen, release)
    }

    fn seen_until(seen: &Mutex<Vec<String>>, count: usize) -> Vec<String> {
        let deadline = Instant::now() + BOUND;
        while seen.lock().unwrap().len() < count && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1)); // polling interval
        }
        seen.lock().unwrap().clone()
    }

    #[test]
    fn a_fork_leaves_a_blocked_receiver_running_and_the_events_behind_it_follow_in_order() {
        let _turn = exclusive();
        let (_delivery, seen, release) = blocked_on_the_first_of_three();
        let (parked, left) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = parked.send(completion::park());
        });
        let left = left.recv_timeout(BOUND);
        // The fork happens here; then the parent goes on and the receiver returns.
        completion::resume(false);
        release.send(()).unwrap();
        assert_eq!(left, Ok(1), "the fork waited for the receiver");
        assert_eq!(seen_until(&seen, 3), ["a:1", "b:1", "c:1"]);
    }

    #[test]
    fn a_delivery_between_events_gives_its_thread_to_a_fork_and_goes_on_after_it() {
        let _turn = exclusive();
        let (delivery, seen, release) = blocked_on_the_first_of_three();
        // The worker comes back from the receiver and is stopped before its next event, out
        // of user code, where a fork finds it.
        let held = delivery.lock();
        release.send(()).unwrap();
        until_out_of_user_code();
        let (parked, left) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = parked.send(completion::park());
        });
        until_parking();
        drop(held);
        // The worker takes its next event, sees the fork and gives its thread back.
        assert_eq!(left.recv_timeout(BOUND), Ok(0));
        assert_eq!(*seen.lock().unwrap(), ["a:1"]);
        assert_eq!(delivery.lock().events.len(), 2);
        // After the fork, in the parent: the rest, in order.
        completion::resume(false);
        assert_eq!(seen_until(&seen, 3), ["a:1", "b:1", "c:1"]);
    }

    #[test]
    fn one_delivery_job_at_a_time_in_a_process() {
        let mut queue = Queue::default();
        assert!(queue.push(node_up("a:1"), 10));
        assert!(!queue.push(node_up("b:1"), 10));
        assert_eq!(queue.events.len(), 2);
    }

    #[test]
    fn a_forked_child_starts_its_own_delivery_and_drops_the_parents_events() {
        let mut queue = Queue::default();
        assert!(queue.push(node_up("a:1"), 10));
        // Forked while the parent's job was queued: the child's first event starts a job.
        assert!(queue.push(node_up("b:1"), 11));
        assert_eq!(queue.events.len(), 1);
        assert!(matches!(&queue.events[0], Event::NodeUp { node } if node == "b:1"));
        assert!(!queue.push(node_up("c:1"), 11));
    }
}
