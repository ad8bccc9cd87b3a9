//! The `Operation` Python class: one cache operation driven by the caller's scheduler (an
//! asyncio event loop, or gevent's hub) instead of a blocking call.
//!
//! `Client.start_*` builds it; the driver calls `advance()` and, as it answers, waits on
//! `wait_for()` (a socket readable or writable) for at most `timeout()` seconds, or runs
//! `prepare()` off its loop (a connect or the first discovery, which have no non-blocking
//! form), until `advance()` says it is done; then `result()` gives the value or raises.
//! A driver that can wait for a pooled connection without a thread (gevent's) asks
//! `waits_for_pool()` first, and runs `prepare_without_waiting()` off its loop instead.
//! `close()` ends it early (a cancelled task): unfinished exchanges' connections are closed.
//! The drivers are `django_elasticache_rs._futures.run` (asyncio) and
//! `django_elasticache_rs._green.run` (gevent).
//!
//! For asyncio, the operation drives itself: given its loop's `Poller` (`on()`), a task awaits
//! it, and each step of the await advances it and, when it must wait, registers its socket
//! and deadline with the poller and suspends the task. It speaks asyncio's future protocol
//! (`_asyncio_future_blocking`, `add_done_callback`, `cancel`, `result`) so that the task waits
//! on it as on a future; but where a future's completion schedules the task for the loop's
//! next turn, a ready socket resumes the task there and then. The await ends with the
//! operation's outcome, or with the operation itself when it needs what only its driver does
//! (`advance()` answered 2).
//!
//! gevent's driver uses the same steps through `step(resume)`: the hub's poller watches the
//! socket and the deadline, and a ready socket (or the deadline) calls `resume`, a switch back
//! to the waiting greenlet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Instant;

use elasticache_client::{Client, Command, Interest, Operation, Progress, Result as ClientResult};
use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::{PyTraverseError, PyVisit};

use crate::completion;
use crate::poller::{Deadline, Poller};

/// `advance()`'s answers.
const DONE: u8 = 0;
const WAIT: u8 = 1;
const BLOCK: u8 = 2;

/// `wait_for()`'s interests.
const READ: u8 = 1;
const WRITE: u8 = 2;

/// An operation with what turns its output into the Python result.
pub trait Driven: Send {
    fn advance(&mut self, client: &Client) -> Progress;
    fn prepare(&mut self, client: &Client);
    fn prepare_without_waiting(&mut self, client: &Client);
    fn waits_for_pool(&mut self) -> bool;
    #[cfg(unix)]
    fn wait_for(&self) -> Option<(i32, u8)>;
    fn deadline(&self) -> Option<Instant>;
    fn finish(self: Box<Self>, py: Python<'_>, client: &Client) -> PyResult<Py<PyAny>>;
    /// Runs the operation (not advanced yet) to its end on this thread, without the GIL.
    fn run(self: Box<Self>, py: Python<'_>, client: &Client) -> PyResult<Py<PyAny>>;
}

/// An [`Operation`] and the conversion of its output: what a command's binding builds, then
/// hands to an event driver ([`Converted::start`]) or runs at once ([`Converted::run`]).
pub struct Converted<C: Command, F> {
    operation: Operation<C>,
    convert: F,
}

/// What turns an operation's output into its Python result.
pub trait Convert<T>:
    FnOnce(Python<'_>, &Client, ClientResult<T>) -> PyResult<Py<PyAny>> + Send + 'static
{
}

impl<T, F> Convert<T> for F where
    F: FnOnce(Python<'_>, &Client, ClientResult<T>) -> PyResult<Py<PyAny>> + Send + 'static
{
}

/// `operation` with `convert` making its Python result (the bound names the closure's
/// argument types, so that a command's binding writes it without them).
pub fn converted<C, F>(operation: Operation<C>, convert: F) -> Converted<C, F>
where
    C: Command + Send + 'static,
    C::Output: Send,
    F: Convert<C::Output>,
{
    Converted { operation, convert }
}

impl<C, F> Converted<C, F>
where
    C: Command + Send + 'static,
    C::Output: Send,
    F: Convert<C::Output>,
{
    /// The operation for an event driver (`start_*`).
    pub fn start(self, client: &Arc<Client>) -> PyOperation {
        PyOperation {
            shared: Arc::new(Shared {
                client: Arc::clone(client),
                state: Mutex::new(Some(Box::new(self))),
                abandoned: AtomicBool::new(false),
            }),
            awaiting: Mutex::new(Awaiting::default()),
            blocking: AtomicBool::new(false),
        }
    }

    /// The blocking call: runs the operation to its end on this thread, without the GIL
    /// while it waits, and converts its output.
    pub fn run(self, py: Python<'_>, client: &Client) -> PyResult<Py<PyAny>> {
        let Converted { operation, convert } = self;
        let outcome = py.detach(|| operation.run(client));
        convert(py, client, outcome)
    }
}

/// One of two [`Converted`] operations, as a command's binding picks it at run time (a value
/// that may be large goes through the core's large-value command, others through the plain
/// one): it starts and runs as either does.
pub enum Either<A, B> {
    /// The first (the plain command).
    Left(A),
    /// The second (the large-value command).
    Right(B),
}

impl<CA, FA, CB, FB> Either<Converted<CA, FA>, Converted<CB, FB>>
where
    CA: Command + Send + 'static,
    CA::Output: Send,
    FA: Convert<CA::Output>,
    CB: Command + Send + 'static,
    CB::Output: Send,
    FB: Convert<CB::Output>,
{
    /// The operation for an event driver (`start_*`).
    pub fn start(self, client: &Arc<Client>) -> PyOperation {
        match self {
            Either::Left(operation) => operation.start(client),
            Either::Right(operation) => operation.start(client),
        }
    }

    /// The blocking call (see [`Converted::run`]).
    pub fn run(self, py: Python<'_>, client: &Client) -> PyResult<Py<PyAny>> {
        match self {
            Either::Left(operation) => operation.run(py, client),
            Either::Right(operation) => operation.run(py, client),
        }
    }
}

impl<C, F> Driven for Converted<C, F>
where
    C: Command + Send + 'static,
    C::Output: Send,
    F: Convert<C::Output>,
{
    fn advance(&mut self, client: &Client) -> Progress {
        self.operation.advance(client)
    }

    fn prepare(&mut self, client: &Client) {
        self.operation.prepare(client);
    }

    fn prepare_without_waiting(&mut self, client: &Client) {
        self.operation.prepare_without_waiting(client);
    }

    fn waits_for_pool(&mut self) -> bool {
        self.operation.waits_for_pool()
    }

    #[cfg(unix)]
    fn wait_for(&self) -> Option<(i32, u8)> {
        self.operation.waits().next().map(|(fd, interest)| {
            let interest = match interest {
                Interest::Write => WRITE,
                _ => READ,
            };
            (fd, interest)
        })
    }

    fn deadline(&self) -> Option<Instant> {
        self.operation.deadline()
    }

    fn finish(self: Box<Self>, py: Python<'_>, client: &Client) -> PyResult<Py<PyAny>> {
        let Converted { operation, convert } = *self;
        // No I/O here: connections go back to their pools, the outcome is made.
        let outcome = operation.finish(client);
        convert(py, client, outcome)
    }

    fn run(self: Box<Self>, py: Python<'_>, client: &Client) -> PyResult<Py<PyAny>> {
        Converted::run(*self, py, client)
    }
}

/// What the Python object and a worker running `prepare` share.
struct Shared {
    client: Arc<Client>,
    /// `None` once finished or closed. Held by `prepare` for as long as it blocks.
    state: Mutex<Option<Box<dyn Driven>>>,
    /// Closed while `prepare` held the state: it drops the operation when it is done.
    abandoned: AtomicBool,
}

impl Shared {
    // A panic while holding the lock leaves at worst an operation that is dropped (its
    // connections closed): the lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Option<Box<dyn Driven>>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the blocking step (`wait`: waiting for a pooled connection too), holding the
    /// state; an operation closed meanwhile is dropped after it.
    fn prepare(&self, wait: bool) {
        let mut state = self.lock();
        if let Some(operation) = state.as_mut() {
            if wait {
                operation.prepare(&self.client);
            } else {
                operation.prepare_without_waiting(&self.client);
            }
        }
        if self.abandoned.load(Ordering::Acquire) {
            *state = None;
        }
    }
}

/// Where an awaiting task is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not waiting (or not yet told the task's callback).
    #[default]
    Idle,
    /// The task waits for its callback.
    Awaited,
    /// Woken: its callback ran.
    Woken,
    /// Its task was cancelled: its callback is scheduled.
    Cancelled,
}

/// An awaiting task's side of the operation (all of it used on the loop's thread).
#[derive(Default)]
struct Awaiting {
    poller: Option<Py<Poller>>,
    phase: Phase,
    /// What resumes the task, and the context to run it in.
    callback: Option<(Py<PyAny>, Option<Py<PyAny>>)>,
    /// A cancel's message, for the `CancelledError` the task gets.
    cancel_message: Option<Py<PyAny>>,
    /// The socket waited on now.
    fd: Option<i32>,
    /// The deadline the poller watches.
    deadline: Option<Deadline>,
}

/// A cache operation for an event loop or gevent's hub to drive.
#[pyclass(frozen, module = "django_elasticache_rs._native", name = "Operation")]
pub struct PyOperation {
    shared: Arc<Shared>,
    awaiting: Mutex<Awaiting>,
    /// asyncio's `_asyncio_future_blocking`: true when a step suspends the task.
    blocking: AtomicBool,
}

/// `asyncio.CancelledError`.
fn cancelled_error(py: Python<'_>, message: Option<&Py<PyAny>>) -> PyErr {
    static CANCELLED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let made = CANCELLED
        .import(py, "asyncio", "CancelledError")
        .and_then(|class| match message {
            Some(message) => class.call1((message,)),
            None => class.call0(),
        });
    match made {
        Ok(error) => PyErr::from_value(error),
        Err(error) => error,
    }
}

impl PyOperation {
    // Used on the loop's thread only, never across a call into Python: a poisoned lock
    // (no panic is expected) is used as it is.
    fn awaiting(&self) -> MutexGuard<'_, Awaiting> {
        self.awaiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resumes the awaiting task now, in the caller's turn of the loop. For the poller: never
    /// while a task runs. Not awaited (a deadline passed while the operation waited for a
    /// connection), it does nothing: the next `advance()` sees the deadline itself.
    fn wake(slf: &Bound<'_, Self>) -> PyResult<()> {
        let callback = {
            let mut awaiting = slf.get().awaiting();
            if awaiting.phase != Phase::Awaited {
                return Ok(());
            }
            awaiting.phase = Phase::Woken;
            awaiting.callback.take()
        };
        match callback {
            Some((callback, Some(context))) => {
                context
                    .bind(slf.py())
                    .call_method1("run", (callback, slf))?;
            }
            Some((callback, None)) => {
                callback.bind(slf.py()).call1((slf,))?;
            }
            None => {}
        }
        Ok(())
    }

    /// The socket wait the operation is in, if any, is over: the poller no longer watches the
    /// socket. Its poller, if it has one.
    fn end_socket_wait(&self, py: Python<'_>) -> PyResult<Option<Py<Poller>>> {
        let (poller, fd) = {
            let mut awaiting = self.awaiting();
            let poller = awaiting.poller.as_ref().map(|poller| poller.clone_ref(py));
            (poller, awaiting.fd.take())
        };
        if let (Some(poller), Some(fd)) = (&poller, fd) {
            poller.get().done(py, fd)?;
        }
        Ok(poller)
    }

    /// The task is resumed: the socket wait it was in (if any) is over. Its poller.
    fn resumed<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Poller>> {
        let py = slf.py();
        let this = slf.get();
        this.awaiting().phase = Phase::Idle;
        let poller = this.end_socket_wait(py)?.ok_or_else(|| {
            PyRuntimeError::new_err("an operation is awaited only after on(poller)")
        })?;
        Ok(poller.into_bound(py))
    }

    /// Has the poller watch the operation's deadline, if it has one and it is not watched.
    fn watch_deadline(slf: &Bound<'_, Self>, poller: &Bound<'_, Poller>) -> PyResult<()> {
        let this = slf.get();
        if this.awaiting().deadline.is_some() {
            return Ok(());
        }
        let Some(deadline) = this.shared.lock().as_ref().and_then(|op| op.deadline()) else {
            return Ok(());
        };
        let key = Poller::watch(poller, deadline, slf.as_any())?;
        this.awaiting().deadline = Some(key);
        Ok(())
    }

    /// The task is gone from the poller: its socket and deadline no longer watched.
    fn leave(&self, py: Python<'_>) -> PyResult<()> {
        let (poller, deadline) = {
            let mut awaiting = self.awaiting();
            let poller = awaiting.poller.as_ref().map(|poller| poller.clone_ref(py));
            (poller, awaiting.deadline.take())
        };
        if let (Some(poller), Some(deadline)) = (poller, deadline) {
            poller.get().unwatch(deadline);
        }
        self.end_socket_wait(py).map(drop)
    }

    /// Resumed from any socket wait, advances the operation until it ends (`DONE`), needs its
    /// driver (`BLOCK`), or must wait on a socket (`WAIT`: the socket and the deadline are
    /// watched by the poller, which wakes the operation through `_wake()`/`_expired()`).
    fn proceed(slf: &Bound<'_, Self>) -> PyResult<u8> {
        let py = slf.py();
        let this = slf.get();
        let poller = Self::resumed(slf)?;
        loop {
            match this.advance() {
                WAIT => {}
                progress => return Ok(progress),
            }
            let Some((fd, interest)) = this.wait_for() else {
                continue;
            };
            Self::watch_deadline(slf, &poller)?;
            poller.get().wait(py, fd, interest == WRITE, slf.as_any())?;
            this.awaiting().fd = Some(fd);
            return Ok(WAIT);
        }
    }
}

#[pymethods]
impl PyOperation {
    /// Drives the operation on `poller`'s loop when awaited (see the module's documentation).
    fn on(&self, poller: Py<Poller>) {
        self.awaiting().poller = Some(poller);
    }

    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// A step of the await: advances the operation until it ends (its outcome is the await's
    /// value, or its error is raised), needs its driver (the operation itself is the value),
    /// or must wait on a socket (its task suspended, watched by the poller).
    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        match Self::proceed(slf)? {
            DONE => {
                let outcome = slf.get().outcome(py)?;
                Err(PyStopIteration::new_err((outcome,)))
            }
            BLOCK => Err(PyStopIteration::new_err((slf.clone().unbind(),))),
            _ => {
                slf.get().blocking.store(true, Ordering::Relaxed);
                Ok(Some(slf.clone().into_any().unbind()))
            }
        }
    }

    /// A step of a greenlet's driver (gevent's): what a step of the await does, answering as
    /// `advance()` does. On 1, its socket and deadline are watched by the poller, and
    /// `resume(operation)` is what a ready socket or the deadline calls (a switch back to the
    /// greenlet, which then steps again); on 0, `outcome()` has its result.
    fn step(slf: &Bound<'_, Self>, resume: Py<PyAny>) -> PyResult<u8> {
        let progress = Self::proceed(slf)?;
        if progress == WAIT {
            slf.get().add_done_callback(resume, None);
        }
        Ok(progress)
    }

    #[getter(_asyncio_future_blocking)]
    fn asyncio_future_blocking(&self) -> bool {
        self.blocking.load(Ordering::Relaxed)
    }

    #[setter(_asyncio_future_blocking)]
    fn set_asyncio_future_blocking(&self, blocking: bool) {
        self.blocking.store(blocking, Ordering::Relaxed);
    }

    /// The future protocol: the loop the operation is driven on.
    fn get_loop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let poller = self
            .awaiting()
            .poller
            .as_ref()
            .map(|poller| poller.clone_ref(py));
        poller
            .ok_or_else(|| PyRuntimeError::new_err("the operation is not driven on a loop"))?
            .get()
            .event_loop(py)
    }

    /// The future protocol: what the awaiting task is resumed by.
    #[pyo3(signature = (callback, *, context = None))]
    fn add_done_callback(&self, callback: Py<PyAny>, context: Option<Py<PyAny>>) {
        let mut awaiting = self.awaiting();
        awaiting.phase = Phase::Awaited;
        awaiting.callback = Some((callback, context));
    }

    /// The future protocol.
    fn remove_done_callback(&self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> usize {
        let mut awaiting = self.awaiting();
        let found = awaiting
            .callback
            .as_ref()
            .is_some_and(|(registered, _)| registered.bind(py).eq(callback).unwrap_or(false));
        if found {
            awaiting.callback = None;
        }
        usize::from(found)
    }

    /// The future protocol, when the awaiting task is cancelled: it is resumed on the loop's
    /// next turn (a cancel comes from running code, maybe another task, which must not run
    /// this one), and gets `CancelledError`.
    #[pyo3(signature = (msg = None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let callback = {
            let mut awaiting = this.awaiting();
            if awaiting.phase != Phase::Awaited {
                return Ok(false);
            }
            awaiting.phase = Phase::Cancelled;
            awaiting.cancel_message = msg;
            awaiting.callback.take()
        };
        if let Some((callback, context)) = callback {
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("context", context)?;
            this.get_loop(py)?
                .call_method("call_soon", (callback, slf), Some(&kwargs))?;
        }
        Ok(true)
    }

    /// The future protocol.
    fn cancelled(&self) -> bool {
        self.awaiting().phase == Phase::Cancelled
    }

    /// The future protocol.
    fn done(&self) -> bool {
        matches!(self.awaiting().phase, Phase::Woken | Phase::Cancelled)
    }

    /// The future protocol: what the resumed task reads (nothing, or `CancelledError`). The
    /// operation's own result is `outcome()`.
    fn result(&self, py: Python<'_>) -> PyResult<()> {
        let awaiting = self.awaiting();
        if awaiting.phase == Phase::Cancelled {
            return Err(cancelled_error(py, awaiting.cancel_message.as_ref()));
        }
        Ok(())
    }

    /// The future protocol.
    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.result(py).map(|()| None)
    }

    /// Wakes the awaiting task: the poller's call when its socket is ready (or, where there
    /// is no epoll, a loop reader's callback).
    fn _wake(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::wake(slf)
    }

    /// Its deadline passed (the poller no longer watches it): woken, to end as a timeout.
    fn _expired(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.get().awaiting().deadline = None;
        Self::wake(slf)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Never held across a call into Python: a held lock is visited next time.
        if let Ok(awaiting) = self.awaiting.try_lock() {
            if let Some(poller) = &awaiting.poller {
                visit.call(poller)?;
            }
            if let Some((callback, context)) = &awaiting.callback {
                visit.call(callback)?;
                if let Some(context) = context {
                    visit.call(context)?;
                }
            }
            if let Some(message) = &awaiting.cancel_message {
                visit.call(message)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let awaiting = std::mem::take(&mut *self.awaiting());
        drop(awaiting);
    }

    /// Writes and reads what the sockets allow: 0 when the result is ready, 1 to wait on
    /// `wait_for()` for at most `timeout()` seconds, 2 to run `prepare()` off the loop.
    fn advance(&self) -> u8 {
        let shared = &*self.shared;
        match shared.lock().as_mut() {
            None => DONE,
            Some(operation) => match operation.advance(&shared.client) {
                Progress::Wait => WAIT,
                Progress::Block => BLOCK,
                _ => DONE,
            },
        }
    }

    /// The socket to wait on next: `(fd, READ)` until it is readable, `(fd, WRITE)` until it
    /// is writable or readable (a node may answer before it takes all of a request); `None`
    /// when there is none.
    ///
    /// One socket at a time: every request is on its way before any wait, so the operation
    /// lasts as long as its slowest node whichever socket it waits on first, and a single
    /// registration with the loop costs least.
    fn wait_for(&self) -> Option<(i32, u8)> {
        #[cfg(unix)]
        if let Some(operation) = self.shared.lock().as_ref() {
            return operation.wait_for();
        }
        None
    }

    /// Seconds until the operation's deadline (0 when it passed); `None` without a timeout.
    fn timeout(&self) -> Option<f64> {
        let deadline = self.shared.lock().as_ref()?.deadline()?;
        Some(
            deadline
                .saturating_duration_since(Instant::now())
                .as_secs_f64(),
        )
    }

    /// The blocking part (connecting, the first discovery), without the GIL: for a worker
    /// thread, never the event loop.
    fn prepare(&self, py: Python<'_>) {
        let shared = &*self.shared;
        py.detach(|| shared.prepare(true));
    }

    /// `prepare()` for a driver that waits for pooled connections its own way: discovers and
    /// connects, but never waits for a connection to be given back (see `waits_for_pool()`).
    /// Off the loop too: a connect blocks.
    fn prepare_without_waiting(&self, py: Python<'_>) {
        let shared = &*self.shared;
        py.detach(|| shared.prepare(false));
    }

    /// After `advance()` answered 2: whether all the operation needs is a pooled connection
    /// given back (every connection its pools may have is in use), rather than a connect or
    /// the first discovery. The driver may then wait its own way, without a thread, and
    /// advance again: past the deadline, `advance()` ends it as a blocking wait would.
    fn waits_for_pool(&self) -> bool {
        self.shared
            .lock()
            .as_mut()
            .is_some_and(|operation| operation.waits_for_pool())
    }

    /// Runs `prepare()` (with `wait` false, `prepare_without_waiting()`) on a native worker
    /// thread, then completes the asyncio `future` with `None` (on its loop's thread).
    #[pyo3(signature = (future, wait = true))]
    fn prepare_later(&self, future: Bound<'_, PyAny>, wait: bool) -> PyResult<()> {
        let shared = Arc::clone(&self.shared);
        completion::complete_later(future, move || shared.prepare(wait), |py, ()| Ok(py.None()))
    }

    /// The operation's result (after `advance()` returned 0), or its exception. Ends it.
    fn outcome(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let operation = self.shared.lock().take();
        match operation {
            Some(operation) => operation.finish(py, &self.shared.client),
            None => Err(PyRuntimeError::new_err(
                "the operation is already finished or closed",
            )),
        }
    }

    /// The blocking driver: runs the operation (before any `advance()`) to its end on the
    /// calling thread, the GIL released while it waits, and returns its result (or raises).
    fn wait(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let operation = self.shared.lock().take();
        match operation {
            Some(operation) => operation.run(py, &self.shared.client),
            None => Err(PyRuntimeError::new_err(
                "the operation is already finished or closed",
            )),
        }
    }

    /// Ends the operation without its result: connections of unfinished exchanges are
    /// closed, since a late reply would answer someone else's request. Its socket and
    /// deadline are no longer watched.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let left = self.leave(py);
        match self.shared.state.try_lock() {
            Ok(mut state) => *state = None,
            Err(TryLockError::Poisoned(poisoned)) => *poisoned.into_inner() = None,
            // `prepare` holds it, on a worker: it drops the operation when done.
            Err(TryLockError::WouldBlock) => self.shared.abandoned.store(true, Ordering::Release),
        }
        left
    }
}

impl std::fmt::Debug for PyOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let finished = self.shared.lock().is_none();
        f.debug_struct("Operation")
            .field("finished", &finished)
            .finish_non_exhaustive()
    }
}

/// The constants the Python drivers compare `advance()` and `wait_for()` with.
pub fn install(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("DONE", DONE)?;
    module.add("WAIT", WAIT)?;
    module.add("BLOCK", BLOCK)?;
    module.add("READ", READ)?;
    module.add("WRITE", WRITE)?;
    Ok(())
}
