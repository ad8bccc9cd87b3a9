"""Persistent worker threads for the multi-threaded workload.

The threads live for the whole run, as a web server's do: Django's per-thread cache objects
(and the connections and discovery each alternative keeps per thread) are made once, in the
warm-up, not inside a measurement.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from bench.measure import Sample

Job = Callable[[int, int], None]
"""``job(n, index)``: ``n`` operations in worker ``index``."""

_Task = tuple[Job, int, threading.Barrier, threading.Barrier]


class WorkerPool:
    """``size`` daemon threads that run the same job together, timed from the moment all of them
    are ready to the moment the last one finishes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._queues: list[queue.SimpleQueue[_Task | None]] = []
        self._errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        for index in range(size):
            tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
            thread = threading.Thread(
                target=self._work, args=(index, tasks), name=f"bench-worker-{index}", daemon=True
            )
            thread.start()
            self._queues.append(tasks)
            self._threads.append(thread)

    def _work(self, index: int, tasks: queue.SimpleQueue[_Task | None]) -> None:
        while (task := tasks.get()) is not None:
            job, n, start, done = task
            start.wait()
            try:
                job(n, index)
            except BaseException as exc:
                self._errors.append(exc)
            finally:
                done.wait()

    def run(self, job: Job, per_thread: int) -> Sample:
        """Runs ``job(per_thread, index)`` in every worker at once."""
        start = threading.Barrier(self.size + 1)
        done = threading.Barrier(self.size + 1)
        for tasks in self._queues:
            tasks.put((job, per_thread, start, done))
        start.wait()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        done.wait()
        wall1, cpu1 = time.perf_counter(), time.process_time()
        if self._errors:
            error = self._errors[0]
            self._errors.clear()
            raise error
        return Sample(wall1 - wall0, cpu1 - cpu0, per_thread * self.size)

    def close(self) -> None:
        """Stops the workers."""
        for tasks in self._queues:
            tasks.put(None)
        for thread in self._threads:
            thread.join(timeout=5.0)
