//! Whether the interpreter is still running: native threads must not enter it once its
//! `atexit` stage has begun (it is being finalized, and entering it would abort the thread).

use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;

static RUNNING: AtomicBool = AtomicBool::new(true);

/// False once Python has started to exit.
pub fn interpreter_running() -> bool {
    RUNNING.load(Ordering::Acquire)
}

#[pyfunction]
fn mark_exiting() {
    RUNNING.store(false, Ordering::Release);
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
