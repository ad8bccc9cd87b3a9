"""CPU affinity of the benchmark process and of the memcached servers.

On a machine with few cores, a request from the client and the wake-up of a memcached thread on
another core cost more than the work itself; with the client and the servers on one CPU the
numbers measure the clients instead. Affinity is set on every thread of a process (each entry
of ``/proc/PID/task``): ``sched_setaffinity`` on a pid only moves that one thread, and the
client has threads of its own (the configuration endpoint, our discovery refresher, workers).
"""

from __future__ import annotations

import os

PIN_MAX_CPUS = 4
"""``--pin auto`` pins when the process may use at most this many CPUs."""


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Sets the affinity of every thread of process ``pid``."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, FileNotFoundError):
            pass  # a thread that just ended


class Pinning:
    """Moves the client and the servers between one CPU (pinned) and all CPUs (unpinned)."""

    def __init__(self, enabled: bool, cpu: int | None = None) -> None:
        self.all_cpus = set(os.sched_getaffinity(0))
        self.enabled = enabled
        self.cpu = max(self.all_cpus) if cpu is None else cpu
        if self.cpu not in self.all_cpus:
            raise ValueError(f"CPU {self.cpu} is not available to this process")
        self.server_pids: list[int] = []
        self._pinned: bool | None = None

    def apply(self, pinned: bool) -> None:
        """Pins (when enabled) or unpins the client and every server; does nothing if they
        already are."""
        pinned = pinned and self.enabled
        if pinned == self._pinned:
            return
        cpus = {self.cpu} if pinned else self.all_cpus
        set_affinity(os.getpid(), cpus)
        for pid in self.server_pids:
            set_affinity(pid, cpus)
        self._pinned = pinned

    def add_servers(self, pids: list[int]) -> None:
        """Servers started later: pinned (or not) like the others are now."""
        self.server_pids += pids
        if self._pinned:
            for pid in pids:
                set_affinity(pid, {self.cpu})

    def describe(self) -> str:
        """One sentence for the report."""
        if not self.enabled:
            return f"not pinned: client and servers may use all {len(self.all_cpus)} CPUs"
        return (
            f"single-threaded workloads: the client process (all its threads) and every "
            f"memcached server pinned to CPU {self.cpu}; the multi-threaded workload unpinned "
            f"(all {len(self.all_cpus)} CPUs)"
        )


def default_enabled() -> bool:
    """Whether ``--pin auto`` pins on this machine."""
    return len(os.sched_getaffinity(0)) <= PIN_MAX_CPUS
