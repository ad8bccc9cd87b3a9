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
//! before `fork()` ([`resume`] lets them start again, on demand), except a worker running
//! user code ([`unawaited`]: an event's receivers), which a fork never waits for.
//!
//! What a child inherits from such a worker: nothing of ours locked. The worker holds no lock
//! of ours while in user code (the job's own, the pool's, the event queue's are all released
//! first), the GIL is CPython's to hand over at `fork()`, and once back from user code the
//! worker takes no lock while a fork is under way ([`Returning`]).

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

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
    /// Workers inside [`unawaited`] user code: [`park`] does not join them.
    unawaited: Vec<ThreadId>,
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
            drop(queue);
            // Back from user code a fork did not wait for (if it was): from here on this
            // thread takes none of our locks, and a fork no longer needs to wait for it.
            Returning::done();
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
/// [`resume`]. A worker inside [`unawaited`] user code is not waited for: it is left running
/// (the child is forked without it), and its handle kept for a later `park`. Returns how many
/// were left running.
///
/// Call it without the GIL: a finishing job takes the GIL to deliver its result.
pub fn park() -> usize {
    let workers = workers();
    let (threads, left) = {
        let mut queue = lock(&workers.queue);
        queue.parking = true;
        let (left, threads): (Vec<_>, Vec<_>) = std::mem::take(&mut queue.threads)
            .into_iter()
            .partition(|thread| queue.unawaited.contains(&thread.thread().id()));
        let count = left.len();
        queue.threads = left;
        (threads, count)
    };
    workers.ready.notify_all();
    for thread in threads {
        if thread.join().is_err() {
            log::warn!("an async worker thread panicked");
        }
    }
    Returning::fork_begins();
    left
}

/// Lets workers start again after a fork (in the parent: the jobs queued meanwhile get theirs
/// now; otherwise workers start on demand). `in_child`: called in the forked child.
pub fn resume(in_child: bool) {
    Returning::fork_ends(in_child);
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

/// Runs `user_code` (code that may block for as long as it likes: an event's receivers) on
/// this worker, unless the workers are parking for a fork: then it returns `None` at once,
/// and the caller gives its thread back, queueing what is left with [`submit`] (it runs after
/// [`resume`]). A fork that begins while `user_code` runs does not wait for it.
///
/// Only for jobs run by this pool's workers; the caller must hold none of our locks.
pub(crate) fn unawaited<R>(user_code: impl FnOnce() -> R) -> Option<R> {
    let workers = workers();
    let id = thread::current().id();
    {
        // Checked and marked under the pool's lock, as `park` reads both: either this worker
        // sees the fork coming and stays out of user code, or `park` sees it marked.
        let mut queue = lock(&workers.queue);
        if queue.parking {
            return None;
        }
        queue.unawaited.push(id);
    }
    // Out of our code: a fork under way need not wait for this thread.
    Returning::done();
    let outcome = user_code();
    // Back: a fork begun meanwhile (which did not wait) is waited out before the lock below.
    Returning::back();
    let mut queue = lock(&workers.queue);
    if let Some(index) = queue.unawaited.iter().position(|marked| *marked == id) {
        queue.unawaited.swap_remove(index);
    }
    Some(outcome)
}

/// The workers a fork did not wait for, on their way back from user code.
///
/// A worker left running by [`park`] may come back from user code while the parent forks. If
/// it then took a lock of ours (the pool's, the event queue's) at the moment of `fork()`, the
/// child would inherit that lock held by a thread it does not have, and hang on it. So a
/// worker back from user code counts itself in [`RETURNING`] before it takes any lock, and
/// until it exits or is in user code again; a fork sets [`FORKING`] and then waits for that
/// count to reach zero (those workers only tidy up and exit: the pool is parking). A worker
/// that finds [`FORKING`] set uncounts itself and waits, holding nothing, until the fork is
/// over. Each side writes its atomic before reading the other's (all sequentially
/// consistent), so at least one of them sees the other: the worker waits, or the fork does.
struct Returning;

/// Set from [`park`] (after the workers are joined) to [`resume`]: a fork is under way.
static FORKING: AtomicBool = AtomicBool::new(false);
/// Workers back from user code and not yet gone or back in user code.
static RETURNING: AtomicUsize = AtomicUsize::new(0);
/// How often a fork and a returning worker look at each other's atomic: the other side's wait
/// is short (a worker's tidying up; a `fork()`), and nothing else could wake them without a
/// lock, which is what this avoids.
const RETURNING_POLL: Duration = Duration::from_micros(100);

/// Whether this thread is counted in [`RETURNING`]; a thread that ends counted (it should
/// not: workers uncount themselves as they exit) is uncounted then, or forks would wait for
/// it forever.
struct Counted(Cell<bool>);

impl Counted {
    fn get(&self) -> bool {
        self.0.get()
    }

    fn set(&self, counted: bool) {
        self.0.set(counted);
    }

    fn replace(&self, counted: bool) -> bool {
        self.0.replace(counted)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.get() {
            RETURNING.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

thread_local! {
    static COUNTED: Counted = const { Counted(Cell::new(false)) };
}

impl Returning {
    /// This thread is back from user code: waits out a fork under way, then counts itself.
    fn back() {
        if COUNTED.with(Counted::get) {
            return;
        }
        loop {
            RETURNING.fetch_add(1, Ordering::SeqCst);
            if !FORKING.load(Ordering::SeqCst) {
                COUNTED.with(|counted| counted.set(true));
                return;
            }
            RETURNING.fetch_sub(1, Ordering::SeqCst);
            while FORKING.load(Ordering::SeqCst) {
                thread::sleep(RETURNING_POLL);
            }
        }
    }

    /// This thread is in user code again, or leaving: a fork need not wait for it.
    fn done() {
        if COUNTED.with(|counted| counted.replace(false)) {
            RETURNING.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A fork begins (every other worker is joined): waits for the returning ones to be gone.
    fn fork_begins() {
        FORKING.store(true, Ordering::SeqCst);
        while RETURNING.load(Ordering::SeqCst) > 0 {
            thread::sleep(RETURNING_POLL);
        }
    }

    /// The fork is over. In the child none of the parent's other threads exists: a count one
    /// of them held for a moment (before it saw the fork and uncounted itself) is dropped.
    fn fork_ends(in_child: bool) {
        if in_child {
            RETURNING.store(0, Ordering::SeqCst);
        }
        FORKING.store(false, Ordering::SeqCst);
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
pub(crate) mod tests {
    //! The pool with plain Rust jobs (no Python), run by `cargo test --workspace`.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    pub(crate) const BOUND: Duration = Duration::from_secs(10);

    /// The pool is the process's: tests that park it or count its workers take turns.
    pub(crate) fn exclusive() -> MutexGuard<'static, ()> {
        static TURN: Mutex<()> = Mutex::new(());
        lock(&TURN)
    }

    /// Waits (bounded) until the pool is parking (a fork has begun).
    pub(crate) fn until_parking() {
        until("the fork", |queue| queue.parking);
    }

    /// Waits (bounded) until no worker is in user code.
    pub(crate) fn until_out_of_user_code() {
        until("the receiver's return", |queue| queue.unawaited.is_empty());
    }

    /// Waits (bounded) until `condition` holds of the pool's accounting.
    fn until(what: &str, condition: impl Fn(&Queue) -> bool) {
        let workers = workers();
        let deadline = Instant::now() + BOUND;
        while !condition(&lock(&workers.queue)) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(1)); // polling interval
        }
    }

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
        let _turn = exclusive();
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
        resume(false);
        finished
            .recv_timeout(BOUND)
            .expect("a job queued while parked never ran");
        assert!(all_workers_run_at_once());
    }

    #[test]
    fn a_fork_does_not_wait_for_a_worker_in_user_code_and_none_enters_it_meanwhile() {
        let _turn = exclusive();
        let (entered, in_user_code) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let (back, came_back) = mpsc::channel();
        submit(Box::new(move || {
            let outcome = unawaited(|| {
                let _ = entered.send(());
                released.recv_timeout(BOUND).is_ok()
            });
            let _ = back.send(outcome);
        }))
        .unwrap();
        in_user_code.recv_timeout(BOUND).expect("the job never ran");

        // Parking returns with the worker still in user code, and leaves it running.
        let (parked, left) = mpsc::channel();
        thread::spawn(move || {
            let _ = parked.send(park());
        });
        let left = left.recv_timeout(BOUND);
        let blocked = unawaited(|| ());
        release.send(()).unwrap();
        assert_eq!(left, Ok(1), "the fork waited for user code");
        // Meanwhile no user code starts: a job must give its thread back instead.
        assert!(blocked.is_none());
        assert_eq!(lock(&workers().queue).threads.len(), 1);

        // After the fork, the worker is back and done, and the pool works as before.
        resume(false);
        assert_eq!(came_back.recv_timeout(BOUND), Ok(Some(true)));
        assert!(settled());
        let (ran, outcome) = mpsc::channel();
        submit(Box::new(move || {
            let _ = ran.send(unawaited(|| 7));
        }))
        .unwrap();
        assert_eq!(outcome.recv_timeout(BOUND), Ok(Some(7)));
        run_jobs(4);
    }
}
