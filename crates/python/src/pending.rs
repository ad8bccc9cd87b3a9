//! The `PendingGet` Python class: a `get` driven by the caller's asyncio event loop.
//!
//! `Client.get_start` sends the request on an idle pooled connection without blocking; the
//! loop then calls `on_readable` when the socket is readable (`loop.add_reader`) and
//! `on_timeout` when the operation's timeout passes, and `close` once it stops watching the
//! socket. A get that cannot start without blocking (no idle connection, no membership yet)
//! runs on a native worker instead (`run_on_worker`). `django_elasticache_rs._futures` holds
//! the Python side of this protocol.

use std::sync::Arc;

use elasticache_client::{Client, GetProgress, Item, PendingGet, Result as ClientResult};
use pyo3::prelude::*;

use crate::completion;
use crate::errors::IntoPyResult;
use crate::serde::decode_or;

/// A `get` in progress on an event loop.
#[derive(Debug)]
#[pyclass(module = "django_elasticache_rs._native", name = "PendingGet")]
pub struct PyPendingGet {
    client: Arc<Client>,
    /// `None` when the get must run on a worker.
    get: Option<PendingGet>,
    key: String,
    default: Option<Py<PyAny>>,
    serde: Option<Py<PyAny>>,
}

impl PyPendingGet {
    pub fn new(
        client: Arc<Client>,
        get: Option<PendingGet>,
        key: String,
        default: Option<Py<PyAny>>,
        serde: Option<Py<PyAny>>,
    ) -> Self {
        PyPendingGet {
            client,
            get,
            key,
            default,
            serde,
        }
    }

    /// Completes `future` with the outcome, unless it was cancelled meanwhile.
    fn deliver(
        &mut self,
        future: &Bound<'_, PyAny>,
        outcome: ClientResult<Option<Item>>,
    ) -> PyResult<()> {
        if future.call_method0("done")?.is_truthy()? {
            return Ok(());
        }
        let py = future.py();
        match outcome.py_result() {
            Ok(item) => {
                let serde = self.serde.as_ref().map(|s| s.bind(py));
                let value = decode_or(py, &self.key, item, serde, self.default.take());
                future.call_method1("set_result", (value,))?;
            }
            Err(error) => {
                future.call_method1("set_exception", (error.into_value(py),))?;
            }
        }
        Ok(())
    }
}

#[pymethods]
impl PyPendingGet {
    /// The socket to watch for readability; -1 when the get must run on a worker.
    fn fileno(&self) -> i64 {
        #[cfg(unix)]
        if let Some(fd) = self.get.as_ref().and_then(PendingGet::raw_fd) {
            return i64::from(fd);
        }
        -1
    }

    /// Seconds after which the loop must call `on_timeout`; `None` for no timeout.
    #[getter]
    fn timeout(&self) -> Option<f64> {
        self.client.config().timeout.map(|t| t.as_secs_f64())
    }

    /// Reads what has arrived; completes `future` once the reply is whole (or failed).
    fn on_readable(&mut self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(get) = self.get.as_mut() else {
            return Ok(());
        };
        if get.is_finished() {
            return Ok(());
        }
        match self.client.advance_get(get) {
            Ok(GetProgress::Done(item)) => self.deliver(future, Ok(item)),
            // Waiting (or progress this version does not know of): the loop calls again when
            // the socket is readable, and the timer bounds the wait.
            Ok(_) => Ok(()),
            Err(error) => self.deliver(future, Err(error)),
        }
    }

    /// The timeout passed without a whole reply: completes `future` as a blocking get's
    /// timeout would (an exception, or `default` under `ignore_exc`).
    fn on_timeout(&mut self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(get) = self.get.as_mut() else {
            return Ok(());
        };
        if get.is_finished() {
            return Ok(());
        }
        let outcome = self.client.expire_get(get);
        self.deliver(future, outcome)
    }

    /// Runs the whole get on a native worker thread and completes `future` from there.
    fn run_on_worker(&mut self, future: Bound<'_, PyAny>) -> PyResult<()> {
        let client = Arc::clone(&self.client);
        let key = std::mem::take(&mut self.key);
        let default = self.default.take();
        let serde = self.serde.take();
        let lookup = key.clone();
        completion::complete_later(
            future,
            move || client.get(&lookup),
            move |py, found| {
                let serde = serde.as_ref().map(|s| s.bind(py));
                Ok(decode_or(py, &key, found.py_result()?, serde, default).unbind())
            },
        )
    }

    /// Ends the exchange once the loop no longer watches the socket: the connection goes back
    /// to its pool after a clean reply and is closed otherwise.
    fn close(&mut self) {
        if let Some(get) = self.get.as_mut() {
            get.close();
        }
    }
}
