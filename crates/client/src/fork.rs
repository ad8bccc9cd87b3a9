//! The fork generation: a process-wide counter that tells state built by this process from
//! state inherited through `fork()`, without a `getpid()` system call on every operation.
//!
//! Per-process state (a topology and its pools, discovery's flight and refresher) is stamped
//! with the generation it was built in. On Unix a `pthread_atfork` child handler, registered
//! before the first stamp is taken, bumps the counter in every child, so a stamp that differs
//! from [`current`] means "inherited: build afresh, never touch the parent's sockets". The
//! handler runs for every `fork()` that goes through libc: a Rust program's own, Python's
//! `os.fork` (and so `multiprocessing`'s fork start method and gunicorn's workers).
//!
//! Along one line of descent the generation only grows, so a stamp taken in any ancestor never
//! equals the current one; a process id could (an ancestor's id may be reused after it exits).
//! Siblings share a value, but no process ever sees a sibling's state.
//!
//! Elsewhere (no `pthread_atfork`), or should registering the handler fail, the process id
//! stands in for the generation.

#[cfg(unix)]
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bumped in the child by the `pthread_atfork` handler; read with one plain load.
#[cfg(unix)]
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Set, once and for good, if the handler could not be registered: then nothing bumps
/// [`GENERATION`] and the process id is the generation. Set before any stamp is taken, so
/// stamps are all of one kind.
#[cfg(unix)]
static BY_PID: AtomicBool = AtomicBool::new(false);

/// The generation of the calling process: cheap enough for every operation.
#[inline]
pub(crate) fn current() -> u64 {
    #[cfg(unix)]
    {
        // Relaxed: the only writer is the child handler, which runs in the child's single
        // thread before `fork()` returns there, so every later read in the child sees it.
        // `BY_PID` was settled before the stamp being compared with was taken.
        if BY_PID.load(Ordering::Relaxed) {
            return u64::from(std::process::id());
        }
        GENERATION.load(Ordering::Relaxed)
    }
    #[cfg(not(unix))]
    {
        u64::from(std::process::id())
    }
}

/// The generation to stamp new per-process state with. Registers the child handler first
/// (once per process), so that any `fork()` after this stamp was taken changes [`current`]
/// in the child.
pub(crate) fn stamp() -> u64 {
    #[cfg(unix)]
    {
        static REGISTER: std::sync::Once = std::sync::Once::new();
        REGISTER.call_once(register);
    }
    current()
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn register() {
    /// The child handler: runs in the child, alone, right after the fork. An atomic add is
    /// async-signal-safe, as code here must be.
    extern "C" fn forked() {
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: registers a handler with no `prepare` or `parent` part; `forked` is a plain
    // function of this library that touches only an atomic (glibc drops a library's handlers
    // if it is unloaded). A handler cannot be unregistered, hence `Once`.
    let failed = unsafe { libc::pthread_atfork(None, None, Some(forked)) };
    if failed != 0 {
        // Only ENOMEM is possible: fall back to a `getpid()` per operation rather than let a
        // child use its parent's sockets.
        log::warn!("pthread_atfork failed ({failed}): fork safety falls back to the process id");
        BY_PID.store(true, Ordering::Relaxed);
    }
}
