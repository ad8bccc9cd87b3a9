//! Keeps native threads out of the interpreter once it exits: a thread that takes the GIL
//! after finalization has begun is ended by Python with `pthread_exit`, whose forced unwind
//! through Rust frames aborts the whole process.
//!
//! Every entry from a thread of ours goes through [`attach`] (or holds an [`Inside`] pass while
//! a library enters for it). The `atexit` hook closes the door and then waits, without the
//! GIL, for the threads already past it to leave, so none is still on its way in when
//! finalization begins.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

static RUNNING: AtomicBool = AtomicBool::new(true);
/// Threads past the door: they saw `RUNNING` and may be entering the interpreter.
static INSIDE: AtomicUsize = AtomicUsize::new(0);
/// How long exit waits for them. A pass is held only while a result is handed over, an event
/// delivered or a record logged; a receiver that runs longer than this is not waited for.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// False once Python has started to exit.
pub fn interpreter_running() -> bool {
    RUNNING.load(Ordering::SeqCst)
}

thread_local! {
    /// The passes this thread holds: after a fork, the child's only thread holds only its own.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// A thread's pass into the interpreter, given back on drop (by the thread that took it: it
/// is counted per thread too, hence not `Send`).
pub struct Inside(PhantomData<*const ()>);

impl Drop for Inside {
    fn drop(&mut self) {
        HELD.set(HELD.get().saturating_sub(1));
        INSIDE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A pass, unless Python is exiting. The count is raised before `RUNNING` is read and exit
/// lowers `RUNNING` before it reads the count (both sequentially consistent), so either this
/// thread sees the door closed or exit sees this thread inside and waits for it.
pub fn enter() -> Option<Inside> {
    INSIDE.fetch_add(1, Ordering::SeqCst);
    HELD.set(HELD.get() + 1);
    let pass = Inside(PhantomData);
    interpreter_running().then_some(pass)
}

/// Runs `f` with the GIL, from a native thread, unless Python is exiting (then `None`).
pub fn attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    let _pass = enter()?;
    Some(Python::attach(f))
}

/// In a forked child: only the passes of the thread that forked are still held. Another thread
/// of the parent's may have held one (a signal receiver the fork did not wait for, a record
/// being logged); it does not exist here, and without this the child's exit would wait for it
/// until `EXIT_WAIT`.
pub fn forked_child() {
    INSIDE.store(HELD.get(), Ordering::SeqCst);
}

#[pyfunction]
fn mark_exiting(py: Python<'_>) {
    RUNNING.store(false, Ordering::SeqCst);
    // The threads inside may be waiting for the GIL this hook holds.
    py.detach(|| {
        let started = Instant::now();
        while INSIDE.load(Ordering::SeqCst) > 0 && started.elapsed() < EXIT_WAIT {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// Registers the `atexit` hook that marks the interpreter as exiting.
pub fn install(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let hook = wrap_pyfunction!(mark_exiting, module)?;
    module
        .py()
        .import("atexit")?
        .call_method1("register", (hook,))?;
    Ok(())
}
