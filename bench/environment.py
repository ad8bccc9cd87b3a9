"""What the report says about the machine and the software it ran on."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata

from bench import REPO_ROOT

DISTRIBUTIONS = ("django-elasticache-rs", "django-elastipymemcache", "pymemcache", "pylibmc")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _run(*command: str) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=10, check=False, cwd=REPO_ROOT
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def git_revision() -> str:
    """The checked-out commit, and whether the work tree has changes."""
    commit = _run("git", "rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    dirty = _run("git", "status", "--porcelain", "--untracked-files=no")
    return f"{commit} with uncommitted changes" if dirty else commit


def versions() -> dict[str, str]:
    """Python, Django, the libraries and memcached."""
    import django

    found = {
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "Django": django.get_version(),
    }
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    try:
        import pylibmc  # type: ignore[import-untyped]

        found["libmemcached (pylibmc)"] = str(pylibmc.libmemcached_version)
    except ImportError:
        pass
    found["memcached"] = _run("memcached", "-V").removeprefix("memcached ") or "unknown"
    return found


def command_line() -> str:
    """The command that started this run: ``scripts/bench.sh`` passes it in ``BENCH_COMMAND``."""
    return os.environ.get("BENCH_COMMAND") or shlex.join(["python", "-m", "bench", *sys.argv[1:]])


def native_build() -> str:
    """How the native module was built, when ``scripts/bench.sh`` built it."""
    return os.environ.get("BENCH_NATIVE_BUILD") or "as installed in the venv (profile not checked)"


def machine() -> dict[str, str]:
    """CPU model, cores, kernel."""
    return {
        "CPU": cpu_model(),
        "cores": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} available to the benchmark)",
        "kernel": f"{platform.system()} {platform.release()}",
    }


def _machine_busy() -> float:
    """Seconds of CPU the whole machine has spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    """CPU seconds of this process and of its children that have been waited for (memcached
    servers once stopped, the memory check's subprocesses)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class OtherLoad:
    """How busy the machine was with other work during the run: the machine's busy CPU time
    minus this process's and its reaped children's. Approximate: kernel time spent on the
    run's own loopback traffic in interrupt context is counted as other work."""

    def __init__(self) -> None:
        self._busy = _machine_busy()
        self._own = _own_cpu()
        self._load = os.getloadavg()[0]

    def describe(self, seconds: float) -> str:
        """One sentence for the report, once the run (and its servers) have stopped."""
        other = max(0.0, (_machine_busy() - self._busy) - (_own_cpu() - self._own))
        cpus = len(os.sched_getaffinity(0))
        return (
            f"CPU time used by other processes (and kernel work not charged to a process) "
            f"during the run: {other:,.1f} s, {other / (seconds * cpus):.1%} of the "
            f"{cpus} CPUs' time; 1-minute load average {self._load:.2f} at the start, "
            f"{os.getloadavg()[0]:.2f} at the end"
        )
