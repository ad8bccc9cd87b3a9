//! The `Poller` Python class: how one event loop's operations wait, an asyncio loop's or a
//! gevent hub's (through `django_elasticache_rs._green`'s `_HubLoop`, which gives the hub's
//! loop the few asyncio methods used here). Their sockets are in an epoll set of ours that the
//! loop watches through one reader for good (where there is no epoll, the loop's own readers,
//! per wait), and their deadlines are under one loop timer, set at the earliest. A ready socket
//! or a passed deadline wakes its operation, which resumes its task (or greenlet) there and
//! then (`operation`'s future protocol, or its `step`).
//!
//! What waits is an operation (`operation::PyOperation`), woken through its `_wake()` and
//! `_expired()` methods: this module does not know the operation's type, which knows it.
//!
//! Why not the loop's readers and a timer per call: a wait would cost two system calls and the
//! loop's bookkeeping to add and remove a reader, and a timer's heap push and cancel; here it
//! costs one `epoll_ctl` (re-arming a one-shot registration) and a map entry.

use std::collections::{BTreeMap, HashMap, HashSet};
#[cfg(unix)]
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyWeakrefReference;
use pyo3::{intern, PyTraverseError, PyVisit};

#[cfg(target_os = "linux")]
use crate::epoll::Epoll;

#[cfg(not(unix))]
type RawFd = i32;

/// Where a watched deadline is kept: when, and a sequence number (deadlines may be equal).
pub type Deadline = (Instant, u64);

/// The loop's timers are no finer than this (uvloop's are milliseconds): a timer set for less
/// could fire before its deadline, again and again.
const TIMER_FLOOR: Duration = Duration::from_millis(1);

#[derive(Default)]
struct State {
    /// The operation waiting on each socket.
    waiting: HashMap<RawFd, Py<PyAny>>,
    /// Sockets in the epoll set (armed or not): re-armed with a modify. A closed socket
    /// leaves the set by itself, and is added again when its number comes back.
    registered: HashSet<RawFd>,
    /// Without epoll: the sockets with a loop writer as well as a reader.
    writing: HashSet<RawFd>,
    deadlines: BTreeMap<Deadline, Py<PyAny>>,
    sequence: u64,
    /// When the loop timer set for the earliest deadline fires.
    timer: Option<Instant>,
    /// Which of the timers set is that one: another, set before it, does nothing when it
    /// fires. Not its handle: the handle holds the loop, which would then never be freed
    /// (the loop holds this poller).
    timer_generation: u64,
}

/// One event loop's waits (made by `django_elasticache_rs._futures`, or `_green` for a gevent
/// hub, at its first call there).
#[pyclass(frozen, module = "django_elasticache_rs._native", name = "Poller")]
pub struct Poller {
    /// The loop, weakly: the loop holds the poller (its reader, its timer).
    event_loop: Py<PyWeakrefReference>,
    #[cfg(target_os = "linux")]
    epoll: Option<Epoll>,
    state: Mutex<State>,
}

impl Poller {
    // A panic while holding the lock (none is expected) leaves maps that are still whole.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The loop, while it exists.
    pub fn event_loop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        use pyo3::types::PyWeakrefMethods;
        self.event_loop
            .bind(py)
            .upgrade()
            .ok_or_else(|| PyRuntimeError::new_err("the event loop is gone"))
    }

    /// Wakes `operation` once `fd` is readable (or, with `write`, writable too).
    pub fn wait(
        &self,
        py: Python<'_>,
        fd: RawFd,
        write: bool,
        operation: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        #[cfg(target_os = "linux")]
        if let Some(epoll) = &self.epoll {
            let mut state = self.state();
            let registered = state.registered.contains(&fd);
            let armed = match epoll.arm(fd, write, registered) {
                Err(error) if registered && error.kind() == std::io::ErrorKind::NotFound => {
                    epoll.arm(fd, write, false)
                }
                Err(error) if !registered && error.kind() == std::io::ErrorKind::AlreadyExists => {
                    epoll.arm(fd, write, true)
                }
                armed => armed,
            };
            if let Err(error) = armed {
                state.registered.remove(&fd);
                return Err(error.into());
            }
            state.registered.insert(fd);
            // An entry this replaces is stale (a socket is one operation's at a time); it is
            // released after the lock, since releasing a Python object may run Python code.
            let replaced = state.waiting.insert(fd, operation.clone().unbind());
            drop(state);
            drop(replaced);
            return Ok(());
        }
        let wake = operation.getattr("_wake")?;
        let event_loop = self.event_loop(py)?;
        event_loop.call_method1("add_reader", (fd, &wake))?;
        if write {
            event_loop.call_method1("add_writer", (fd, &wake))?;
            self.state().writing.insert(fd);
        }
        Ok(())
    }

    /// The wait on `fd` is over (woken, or abandoned).
    pub fn done(&self, py: Python<'_>, fd: RawFd) -> PyResult<()> {
        #[cfg(target_os = "linux")]
        if self.epoll.is_some() {
            // Disarmed already if it fired; if not, a late report finds nobody waiting.
            let operation = self.state().waiting.remove(&fd);
            drop(operation);
            return Ok(());
        }
        let writing = self.state().writing.remove(&fd);
        let event_loop = self.event_loop(py)?;
        event_loop.call_method1("remove_reader", (fd,))?;
        if writing {
            event_loop.call_method1("remove_writer", (fd,))?;
        }
        Ok(())
    }

    /// Wakes `operation` at `deadline` (unless [`Poller::unwatch`]ed before): the key to
    /// unwatch it with.
    pub fn watch(
        slf: &Bound<'_, Self>,
        deadline: Instant,
        operation: &Bound<'_, PyAny>,
    ) -> PyResult<Deadline> {
        let this = slf.get();
        let (key, earliest) = {
            let mut state = this.state();
            state.sequence = state.sequence.wrapping_add(1);
            let key = (deadline, state.sequence);
            state.deadlines.insert(key, operation.clone().unbind());
            let earliest = state.timer.is_none_or(|when| deadline < when);
            (key, earliest)
        };
        if earliest {
            Self::arm(slf, deadline)?;
        }
        Ok(key)
    }

    /// Stops watching a deadline. The timer stays: at worst it fires once for nothing, and is
    /// set again for the earliest left.
    pub fn unwatch(&self, key: Deadline) {
        let operation = self.state().deadlines.remove(&key);
        drop(operation);
    }

    /// Sets the loop timer for `deadline`, in place of any other (which, firing, does nothing).
    fn arm(slf: &Bound<'_, Self>, deadline: Instant) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let generation = {
            let mut state = this.state();
            state.timer_generation = state.timer_generation.wrapping_add(1);
            state.timer = Some(deadline);
            state.timer_generation
        };
        let delay = deadline
            .saturating_duration_since(Instant::now())
            .max(TIMER_FLOOR);
        this.event_loop(py)?.call_method1(
            "call_later",
            (delay.as_secs_f64(), slf.getattr("_expire")?, generation),
        )?;
        Ok(())
    }
}

/// Wakes each of `operations` by calling its method `wake` (`_wake`, or `_expired` at its
/// deadline); if one's task raises out of its step (a `KeyboardInterrupt`), the others are
/// woken on the loop's next turns, then it is raised.
fn wake_all(
    py: Python<'_>,
    poller: &Poller,
    operations: Vec<Py<PyAny>>,
    wake: &Bound<'_, pyo3::types::PyString>,
) -> PyResult<()> {
    let mut operations = operations.into_iter();
    while let Some(operation) = operations.next() {
        if let Err(error) = operation.bind(py).call_method0(wake) {
            if let Ok(event_loop) = poller.event_loop(py) {
                for rest in operations {
                    if let Ok(rest) = rest.bind(py).getattr(wake) {
                        // The loop is stopping: a task not woken ends at its deadline.
                        let _ = event_loop.call_method1("call_soon", (rest,));
                    }
                }
            }
            return Err(error);
        }
    }
    Ok(())
}

#[pymethods]
impl Poller {
    /// The waits of `event_loop`, in an epoll set of ours when `epoll` is true and there is
    /// one (the loop then watches `fileno()` with `dispatch` as its reader).
    #[new]
    #[allow(unused_variables)]
    fn new(event_loop: &Bound<'_, PyAny>, epoll: bool) -> PyResult<Self> {
        Ok(Self {
            event_loop: PyWeakrefReference::new(event_loop)?.unbind(),
            #[cfg(target_os = "linux")]
            epoll: if epoll { Some(Epoll::new()?) } else { None },
            state: Mutex::new(State::default()),
        })
    }

    /// The epoll set for the loop to watch (`None` without one: each wait is a loop reader).
    fn fileno(&self) -> Option<RawFd> {
        #[cfg(target_os = "linux")]
        if let Some(epoll) = &self.epoll {
            return Some(epoll.raw_fd());
        }
        None
    }

    /// The loop's reader of the epoll set: wakes the operations whose sockets are ready.
    fn dispatch(&self, py: Python<'_>) -> PyResult<()> {
        #[cfg(target_os = "linux")]
        if let Some(epoll) = &self.epoll {
            let ready = epoll.ready()?;
            let operations: Vec<_> = {
                let mut state = self.state();
                ready
                    .iter()
                    .filter_map(|fd| state.waiting.remove(fd))
                    .collect()
            };
            return wake_all(py, self, operations, intern!(py, "_wake"));
        }
        let _ = py;
        Ok(())
    }

    /// The timer: wakes the operations past their deadlines (each then ends as a timeout),
    /// and is set again for the earliest left. A timer replaced by an earlier one
    /// (`generation` is not the last set) does nothing.
    fn _expire(slf: &Bound<'_, Self>, generation: u64) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let now = Instant::now();
        let (late, next) = {
            let mut state = this.state();
            if generation != state.timer_generation {
                return Ok(());
            }
            state.timer = None;
            let left = state.deadlines.split_off(&(now, u64::MAX));
            let late = std::mem::replace(&mut state.deadlines, left);
            (late, state.deadlines.keys().next().map(|(when, _)| *when))
        };
        if let Some(next) = next {
            Self::arm(slf, next)?;
        }
        wake_all(
            py,
            this,
            late.into_values().collect(),
            intern!(py, "_expired"),
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        // Held only for a moment, never across a call into Python: a held lock is visited
        // next time.
        if let Ok(state) = self.state.try_lock() {
            for operation in state.waiting.values().chain(state.deadlines.values()) {
                visit.call(operation)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let state = std::mem::take(&mut *self.state());
        drop(state);
    }
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Poller")
            .field("waiting", &state.waiting.len())
            .field("deadlines", &state.deadlines.len())
            .finish_non_exhaustive()
    }
}

/// `EPOLL`: whether a poller made with `epoll` true is an epoll set (on Linux), rather than the
/// loop's readers per wait. The drivers read it here, not in `select`: gevent's patching takes
/// `select.epoll` away, and this module's set does not depend on it.
pub fn install(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("EPOLL", cfg!(target_os = "linux"))
}
