//! The client's events (`elasticache_client::Event`) handed to a Python callable as dicts, in
//! the order they happened, on a native worker thread: never on the thread, nor under the
//! locks, where they happened, and never on a request's path.

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

struct Delivery {
    callback: Py<PyAny>,
    queue: Mutex<Queue>,
}

impl Delivery {
    // A panic while holding the lock loses at most queued events: the lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands every queued event to the callable, one at a time and in order, until none is
    /// left (events queued meanwhile included).
    fn drain(&self) {
        loop {
            let event = {
                let mut queue = self.lock();
                match queue.events.pop_front() {
                    Some(event) => event,
                    None => {
                        queue.draining = false;
                        return;
                    }
                }
            };
            let delivered = shutdown::attach(|py| {
                let delivered =
                    to_dict(py, &event).and_then(|dict| self.callback.call1(py, (dict,)).map(drop));
                if let Err(error) = delivered {
                    // The receivers' failure is theirs to see, not the cache's.
                    error.write_unraisable(py, None);
                }
            });
            if delivered.is_none() {
                return; // Python is exiting
            }
        }
    }
}

/// A sink that queues each event and has a native worker hand it to `callback`.
pub fn sink(callback: Py<PyAny>) -> EventSink {
    let delivery = Arc::new(Delivery {
        callback,
        queue: Mutex::new(Queue::default()),
    });
    EventSink::new(move |event| {
        let start = delivery.lock().push(event.clone(), std::process::id());
        if start {
            let draining = Arc::clone(&delivery);
            if let Err(error) = completion::submit(Box::new(move || draining.drain())) {
                log::warn!("cannot start a thread to deliver cache events: {error}");
                delivery.lock().draining = false;
            }
        }
    })
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
    use super::*;

    fn node_up(node: &str) -> Event {
        Event::NodeUp {
            node: node.to_owned(),
        }
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
