//! Runs the blocking step of asyncio operations on native worker threads and completes their
//! futures.
//!
//! An async operation does its I/O on the event loop, except what has no non-blocking form (a
//! connect, with its name lookup and TLS handshake; the first discovery; waiting for a pooled
//! connection): that step (`Operation.prepare_later`) runs on a worker here instead of
//! Python's thread pool. The worker blocks without the GIL, then hands the outcome to the
//! future's event loop with `call_soon_threadsafe`. This skips the default executor's few
//! threads, its queue, its `concurrent.futures.Future` and the hand-offs between them.
//! Workers are per process: a forked child starts its own, and [`park`] stops them all
//! before `fork()` ([`resume`] lets them start again, on demand).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::shutdown;

/// Most worker threads per process; more operations than this in flight wait their turn.
const MAX_WORKERS: usize = 32;

pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The pool's accounting, all under one lock.
///
/// `idle` is changed only by the workers themselves: a worker counts itself idle just before
/// it waits for a job and uncounts itself as soon as it wakes, so the count can never drift
/// from the number of workers that will look at the queue again. A submitter never reserves
/// a worker; it queues its job, starts a worker when the queued jobs outnumber the idle
/// workers (up to [`MAX_WORKERS`]), and wakes one waiter per job. So every queued job has a
/// worker on its way to it, whichever worker ends up taking it.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Worker threads started and not yet exited.
    workers: usize,
    /// Workers waiting for a job (or woken and not yet back under the lock).
    idle: usize,
    /// Set from [`park`] to [`resume`] (around a fork): workers exit, none start.
    parking: bool,
    threads: Vec<JoinHandle<()>>,
}

struct Workers {
    pid: u32,
    queue: Mutex<Queue>,
    ready: Condvar,
}

static WORKERS: Mutex<Option<Arc<Workers>>> = Mutex::new(None);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process's workers (a forked child does not inherit its parent's threads).
fn workers() -> Arc<Workers> {
    let pid = std::process::id();
    let mut current = lock(&WORKERS);
    match current.as_ref() {
        Some(workers) if workers.pid == pid => Arc::clone(workers),
        _ => {
            if let Some(inherited) = current.take() {
                // The parent's threads do not exist here: their handles must never be joined
                // or detached, and their jobs belong to the parent.
                std::mem::forget(inherited);
            }
            let fresh = Arc::new(Workers {
                pid,
                queue: Mutex::new(Queue::default()),
                ready: Condvar::new(),
            });
            *current = Some(Arc::clone(&fresh));
            fresh
        }
    }
}

fn work(workers: &Workers) {
    let mut queue = lock(&workers.queue);
    loop {
        if queue.parking {
            // Queued jobs wait for `resume`: a fork must not wait for more than one job per
            // worker.
            queue.workers = queue.workers.saturating_sub(1);
            return;
        }
        if let Some(job) = queue.jobs.pop_front() {
            drop(queue);
            job();
            queue = lock(&workers.queue);
            continue;
        }
        queue.idle += 1;
        queue = workers
            .ready
            .wait(queue)
            .unwrap_or_else(PoisonError::into_inner);
        queue.idle = queue.idle.saturating_sub(1);
    }
}

/// Starts a worker; the caller holds the queue's lock.
fn spawn(workers: &Arc<Workers>, queue: &mut Queue) -> std::io::Result<()> {
    let runner = Arc::clone(workers);
    let thread = thread::Builder::new()
        .name("elasticache-async".to_owned())
        .spawn(move || work(&runner))?;
    queue.workers += 1;
    queue.threads.push(thread);
    Ok(())
}

/// Runs `job` on a worker thread: wakes an idle one, and starts a new one (up to
/// [`MAX_WORKERS`]) when the queued jobs outnumber the idle workers. While the workers are
/// parked for a fork, the job waits in the queue for [`resume`]. Fails only when no worker
/// exists and none can be started.
pub(crate) fn submit(job: Job) -> std::io::Result<()> {
    let workers = workers();
    let mut queue = lock(&workers.queue);
    queue.jobs.push_back(job);
    if !queue.parking && queue.jobs.len() > queue.idle && queue.workers < MAX_WORKERS {
        if let Err(error) = spawn(&workers, &mut queue) {
            // With another worker the job still runs, later; with none it never would.
            if queue.workers == 0 {
                queue.jobs.pop_back();
                return Err(error);
            }
            log::warn!("cannot start another async worker thread: {error}");
        }
    }
    drop(queue);
    workers.ready.notify_one();
    Ok(())
}

/// [`submit`] for the bindings: a failure is a Python `RuntimeError`.
fn submit_py(job: Job) -> PyResult<()> {
    submit(job).map_err(|error| {
        pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start a worker thread: {error}"))
    })
}

/// Stops this process's workers and joins them (before `fork()`): a worker in the middle of a
/// job finishes it (a job is bounded by the client's timeouts); queued jobs wait for
/// [`resume`]. Call it without the GIL: a finishing job takes the GIL to deliver its result.
pub fn park() {
    let workers = workers();
    let threads = {
        let mut queue = lock(&workers.queue);
        queue.parking = true;
        std::mem::take(&mut queue.threads)
    };
    workers.ready.notify_all();
    for thread in threads {
        if thread.join().is_err() {
            log::warn!("an async worker thread panicked");
        }
    }
}

/// Lets workers start again after a fork (in the parent: the jobs queued meanwhile get theirs
/// now; otherwise workers start on demand).
pub fn resume() {
    let workers = workers();
    let mut queue = lock(&workers.queue);
    queue.parking = false;
    while queue.jobs.len() > queue.idle && queue.workers < MAX_WORKERS {
        if let Err(error) = spawn(&workers, &mut queue) {
            log::warn!("cannot start an async worker thread after fork: {error}");
            break;
        }
    }
}

/// `django_elasticache_rs._resolve(future, value, error)`: sets the future's outcome unless it
/// was cancelled meanwhile.
fn resolver(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    RESOLVE.import(py, "django_elasticache_rs._futures", "resolve")
}

/// Runs `operation` off the GIL on a worker, then completes the asyncio `future` (on its own
/// loop's thread) with what `finish` makes of the result, with the GIL held.
pub fn complete_later<T: Send + 'static>(
    future: Bound<'_, PyAny>,
    operation: impl FnOnce() -> T + Send + 'static,
    finish: impl FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
) -> PyResult<()> {
    let future: Py<PyAny> = future.unbind();
    submit_py(Box::new(move || {
        let outcome = operation();
        let Some(_pass) = shutdown::enter() else {
            // Python is exiting: nobody awaits this any more, and it must not be entered.
            std::mem::forget((future, finish));
            return;
        };
        Python::attach(move |py| {
            let result = finish(py, outcome);
            deliver(py, future.into_bound(py), result);
        });
    }))
}

/// Hands `result` to `future` on the future's own loop (`call_soon_threadsafe`); Python
/// objects are released here, with the GIL held.
fn deliver(py: Python<'_>, future: Bound<'_, PyAny>, result: PyResult<Py<PyAny>>) {
    let (value, error) = match result {
        Ok(value) => (value, py.None()),
        Err(error) => (py.None(), error.into_value(py).into_any()),
    };
    let delivered = resolver(py).and_then(|resolve| {
        future
            .call_method0("get_loop")?
            .call_method1("call_soon_threadsafe", (resolve, &future, value, error))
            .map(drop)
    });
    if let Err(error) = delivered {
        // The loop is closed: nobody is waiting for this result any more.
        log::debug!("an async cache result could not be delivered: {error}");
    }
}

#[cfg(test)]
mod tests {
    //! The pool with plain Rust jobs (no Python), run by `cargo test --workspace`.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    /// Runs `count` jobs and waits for all of them.
    fn run_jobs(count: usize) {
        let (done, finished) = mpsc::channel();
        for _ in 0..count {
            let done = done.clone();
            submit(Box::new(move || {
                let _ = done.send(());
            }))
            .unwrap();
        }
        for _ in 0..count {
            finished.recv_timeout(BOUND).expect("a job never ran");
        }
    }

    /// Whether `MAX_WORKERS` jobs were ever running at the same time: each waits (bounded)
    /// until all of them have started.
    fn all_workers_run_at_once() -> bool {
        let started = Arc::new((Mutex::new(0_usize), Condvar::new()));
        let (done, finished) = mpsc::channel();
        for _ in 0..MAX_WORKERS {
            let (started, done) = (Arc::clone(&started), done.clone());
            submit(Box::new(move || {
                let (count, all_in) = &*started;
                let mut count = lock(count);
                *count += 1;
                all_in.notify_all();
                let (count, _) = all_in
                    .wait_timeout_while(count, BOUND, |count| *count < MAX_WORKERS)
                    .unwrap();
                let _ = done.send(*count >= MAX_WORKERS);
            }))
            .unwrap();
        }
        (0..MAX_WORKERS).all(|_| finished.recv_timeout(3 * BOUND).unwrap())
    }

    /// Waits until every worker is idle and counted so.
    fn settled() -> bool {
        let workers = workers();
        let deadline = Instant::now() + BOUND;
        loop {
            {
                let queue = lock(&workers.queue);
                if queue.jobs.is_empty() && queue.idle == queue.workers {
                    return true;
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(1)); // polling interval
        }
    }

    #[test]
    fn after_heavy_churn_the_idle_count_holds_and_every_worker_runs_at_once() {
        // Bursts of every size up to twice the bound: finishing workers race idle ones for
        // queued jobs in every order.
        for burst in 0..2_000 {
            run_jobs(1 + burst % (2 * MAX_WORKERS));
        }
        assert!(settled(), "the idle count drifted from the workers");
        assert!(all_workers_run_at_once());
        assert!(settled());

        // Parked (as before a fork), jobs wait; resumed, they run.
        park();
        assert_eq!(lock(&workers().queue).workers, 0);
        let (done, finished) = mpsc::channel();
        submit(Box::new(move || {
            let _ = done.send(());
        }))
        .unwrap();
        resume();
        finished
            .recv_timeout(BOUND)
            .expect("a job queued while parked never ran");
        assert!(all_workers_run_at_once());
    }
}
