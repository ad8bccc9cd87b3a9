//! Parks the module's threads around `fork()` (registered with `os.register_at_fork`).
//!
//! A process that forks while it has threads leaves the child with whatever locks those
//! threads held (Python 3.12+ warns about it: "This process is multi-threaded, use of fork()
//! may lead to deadlocks in the child"). With gunicorn `--preload`, the master may have used
//! the cache and so have a discovery refresher and async workers. Before a fork they are
//! stopped and joined; after it, in the parent and in the child, they start again on demand.
//!
//! A fork never waits on user code: a worker delivering events stops between two of them and
//! leaves the rest queued for after the fork (in the parent; the child drops them), and one
//! inside a signal receiver is not waited for at all (see `completion::unawaited` for why the
//! child inherits no lock of ours from it). What is waited for is bounded: an async
//! operation's blocking step (by its timeouts), a discovery in progress.

use std::sync::{Mutex, PoisonError};

use elasticache_client::{park_background_threads, ParkedThreads};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{completion, shutdown};

/// The guard keeping refreshers parked between `before` and `after_in_*`.
static PARKED: Mutex<Option<ParkedThreads>> = Mutex::new(None);

/// `before`: stops and joins the async workers (each finishes the job it is running, except
/// one inside a signal receiver, left running) and the discovery refreshers (each finishes a
/// discovery in progress), without the GIL: a finishing job takes the GIL to deliver its
/// result, and a refresher to log.
#[pyfunction]
fn before_fork(py: Python<'_>) {
    let parked = py.detach(|| {
        let left_running = completion::park();
        let parked = park_background_threads();
        if left_running == 0 {
            // With a worker left running, the thread list keeps one of ours: nothing to wait
            // for (and Python 3.12+ rightly warns that the process is multi-threaded).
            wait_until_threads_are_gone();
        }
        parked
    });
    *PARKED.lock().unwrap_or_else(PoisonError::into_inner) = Some(parked);
}

/// Waits, briefly, until the threads joined above have left the kernel's list of this
/// process's threads.
///
/// A join returns when the thread's stack is released, a moment before the kernel stops
/// counting the thread, and Python 3.12+ counts the kernel's threads (`/proc/self/stat`) to
/// decide whether to warn. There is nothing to wait on for that moment but the list itself:
/// it is polled, for at most a tenth of a second. Linux only: `/proc` is where the list is.
fn wait_until_threads_are_gone() {
    if !cfg!(target_os = "linux") {
        return;
    }
    for _ in 0..1_000 {
        if !ours_listed() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

/// Whether a thread named like ours (`elasticache-*`) is still listed in `/proc/self/task`.
fn ours_listed() -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read(task.path().join("comm")).is_ok_and(|name| name.starts_with(b"elasticache-"))
    })
}

/// `after_in_parent`: lets workers and refreshers start again (on next use; jobs queued while
/// parked, events left undelivered included, get workers at once).
#[pyfunction]
fn after_fork_in_parent() {
    PARKED.lock().unwrap_or_else(PoisonError::into_inner).take();
    completion::resume(false);
}

/// `after_in_child`: the same, in a child whose pool is its own already (the parent's queued
/// jobs are not the child's to run), and whose only thread is the one that forked: passes
/// into the interpreter the parent's other threads held are not the child's to wait for.
#[pyfunction]
fn after_fork_in_child() {
    PARKED.lock().unwrap_or_else(PoisonError::into_inner).take();
    shutdown::forked_child();
    completion::resume(true);
}

/// Registers the hooks with `os.register_at_fork`, once (when the module is imported).
pub fn install(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    // Hooks run with the GIL held and in registration order; ours are registered once, at
    // import. (A fork from C that skips Python's hooks, as `subprocess` does before `exec`,
    // runs no Python in the child and needs none of this.)
    let hooks = PyDict::new(py);
    hooks.set_item("before", wrap_pyfunction!(before_fork, module)?)?;
    hooks.set_item(
        "after_in_parent",
        wrap_pyfunction!(after_fork_in_parent, module)?,
    )?;
    hooks.set_item(
        "after_in_child",
        wrap_pyfunction!(after_fork_in_child, module)?,
    )?;
    py.import("os")?
        .call_method("register_at_fork", (), Some(&hooks))?;
    Ok(())
}
