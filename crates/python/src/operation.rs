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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Instant;

use elasticache_client::{Client, Command, Interest, Operation, Progress, Result as ClientResult};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::completion;

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

/// A cache operation for an event loop or gevent's hub to drive.
#[pyclass(frozen, module = "django_elasticache_rs._native", name = "Operation")]
pub struct PyOperation {
    shared: Arc<Shared>,
}

#[pymethods]
impl PyOperation {
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
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
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
    /// closed, since a late reply would answer someone else's request.
    fn close(&self) {
        match self.shared.state.try_lock() {
            Ok(mut state) => *state = None,
            Err(TryLockError::Poisoned(poisoned)) => *poisoned.into_inner() = None,
            // `prepare` holds it, on a worker: it drops the operation when done.
            Err(TryLockError::WouldBlock) => self.shared.abandoned.store(true, Ordering::Release),
        }
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
