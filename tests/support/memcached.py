"""A private, throwaway memcached server for tests.

``MemcachedProcess`` runs ``memcached -l 127.0.0.1 -p <port> -U 0 -t 1 -m 64`` on a free
port chosen when it starts, waits (bounded, no fixed sleeps) until *that* process answers
on the port, and stops it again.  It is safe to run many of them at once (parallel test
sessions, xdist workers): ports are picked by the kernel and a lost port race is retried
with a new port, and nothing is written under a fixed name.

Typical use::

    with MemcachedProcess() as server:
        client = pymemcache.Client(("127.0.0.1", server.port))
        ...
        assert server.stats()["curr_items"] == "1"

The binary is taken from ``$MEMCACHED_BIN``, else from ``PATH``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from types import TracebackType
from typing import IO

MEMCACHED_BIN_ENV = "MEMCACHED_BIN"
DEFAULT_HOST = "127.0.0.1"

# memcached's message when the port is taken between our probe and its bind(): the
# text differs between versions ("failed to listen on TCP port N: Address already in
# use" / "failed to listen on one of interface(s) 127.0.0.1: Address already in use").
_ADDRESS_IN_USE = "Address already in use"


class MemcachedError(RuntimeError):
    """memcached could not be found, started, or talked to."""


def find_memcached() -> str:
    """Return the memcached executable: ``$MEMCACHED_BIN`` or the one on ``PATH``."""
    explicit = os.environ.get(MEMCACHED_BIN_ENV)
    if explicit:
        return explicit
    found = shutil.which("memcached") or shutil.which("memcached", path="/usr/bin:/usr/sbin")
    if found is None:
        raise MemcachedError(
            "memcached binary not found: install it (e.g. `apt-get install memcached`) "
            f"or point ${MEMCACHED_BIN_ENV} at it"
        )
    return found


def free_port(host: str = DEFAULT_HOST) -> int:
    """Ask the kernel for a currently free TCP port on ``host``.

    The port is released before returning, so another process may grab it before the
    caller binds it; ``MemcachedProcess.start`` handles that race by retrying.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _is_complete_reply(buf: bytes) -> bool:
    if buf == b"END\r\n" or buf.endswith(b"\r\nEND\r\n"):
        return True
    # Error replies are a single line: ERROR, CLIENT_ERROR ..., SERVER_ERROR ...
    return b"ERROR" in buf.split(b"\r\n", 1)[0] and buf.endswith(b"\r\n")


def raw_command(host: str, port: int, command: bytes, *, timeout: float = 2.0) -> bytes:
    """Send one text-protocol command that is answered by ``... END`` and return the reply.

    Works for ``stats``, ``stats <group>``, ``get``/``gets``; raises ``MemcachedError`` on
    an error reply and ``OSError`` if the server cannot be reached.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(command)
        buf = b""
        while not _is_complete_reply(buf):
            chunk = sock.recv(65536)
            if not chunk:
                raise MemcachedError(f"connection closed by {host}:{port} after {buf!r}")
            buf += chunk
    if not (buf == b"END\r\n" or buf.endswith(b"\r\nEND\r\n")):
        raise MemcachedError(f"{command!r} failed: {buf.strip().decode(errors='replace')}")
    return buf


def read_stats(
    host: str, port: int, group: str | None = None, *, timeout: float = 2.0
) -> dict[str, str]:
    """Return ``stats`` (or ``stats <group>``, e.g. ``settings``) as ``{name: value}``.

    Values are the raw strings memcached sends (``"pid"`` -> ``"1234"``).
    """
    command = b"stats\r\n" if group is None else f"stats {group}\r\n".encode()
    reply = raw_command(host, port, command, timeout=timeout)
    stats: dict[str, str] = {}
    for line in reply.decode().split("\r\n"):
        if line.startswith("STAT "):
            _, name, value = line.split(" ", 2)
            stats[name] = value
    return stats


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGTERM the child if the test process dies without cleaning up."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class MemcachedProcess:
    """One memcached server process on a loopback port, owned by the test process.

    ``port=None`` (the default) picks a free port on every ``start()``; pass a port to
    restart a server on the port a stopped one used.  All waits are bounded:
    ``startup_timeout`` for start-up, ``stop(timeout=...)`` for shutdown.
    """

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        memory_mb: int = 64,
        threads: int = 1,
        extra_args: Sequence[str] = (),
        executable: str | None = None,
        startup_timeout: float = 10.0,
        max_port_attempts: int = 10,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = port
        self.memory_mb = memory_mb
        self.threads = threads
        self.extra_args = tuple(extra_args)
        self._executable = executable
        self.startup_timeout = startup_timeout
        self.max_port_attempts = max_port_attempts
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- properties -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (the last one used, once stopped)."""
        if self._port is None:
            raise MemcachedError("memcached has not been started yet")
        return self._port

    @property
    def address(self) -> str:
        """``"host:port"``, the form Django's ``LOCATION`` takes for a single node."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise MemcachedError("memcached is not running")
        return self._proc.pid

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- life cycle -------------------------------------------------------------------

    def argv(self, executable: str, port: int) -> list[str]:
        """The command line used to start the server on ``port``."""
        argv = [executable, "-l", self.host, "-p", str(port), "-U", "0"]
        argv += ["-t", str(self.threads), "-m", str(self.memory_mb)]
        if os.geteuid() == 0:
            # memcached refuses to run as root unless told which user to be.
            argv += ["-u", pwd.getpwuid(os.geteuid()).pw_name]
        return argv + list(self.extra_args)

    def start(self) -> MemcachedProcess:
        """Start the server and return once it answers; raise ``MemcachedError`` if not."""
        if self._proc is not None:
            raise MemcachedError(f"memcached already running on {self.address}")
        executable = self._executable or find_memcached()
        deadline = time.monotonic() + self.startup_timeout
        attempts = 1 if self._requested_port is not None else self.max_port_attempts
        failures: list[str] = []
        for _ in range(attempts):
            port = (
                self._requested_port if self._requested_port is not None else free_port(self.host)
            )
            failure = self._launch(executable, port, deadline)
            if failure is None:
                return self
            failures.append(failure)
            if _ADDRESS_IN_USE not in failure or time.monotonic() >= deadline:
                break
        raise MemcachedError("could not start memcached:\n  " + "\n  ".join(failures))

    def _launch(self, executable: str, port: int, deadline: float) -> str | None:
        """Run memcached on ``port``; return None once it serves, else why it failed."""
        argv = self.argv(executable, port)
        log = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as exc:
            log.close()
            return f"{' '.join(argv)}: {exc}"
        interval = 0.002
        while True:
            if self._answers_as(port, proc.pid, deadline):
                self._proc, self._log, self._port = proc, log, port
                return None
            if time.monotonic() >= deadline:
                _terminate(proc, timeout=5.0)
                output = _read_log(log)
                return (
                    f"{' '.join(argv)}: not answering after {self.startup_timeout}s"
                    f" (output: {output!r})"
                )
            # Wait on the process itself: returns at once if memcached exits (e.g. the
            # port was taken), otherwise acts as the back-off between connect attempts.
            try:
                returncode = proc.wait(timeout=interval)
            except subprocess.TimeoutExpired:
                interval = min(interval * 2, 0.1)
                continue
            output = _read_log(log)
            return f"{' '.join(argv)}: exited with status {returncode}: {output!r}"

    def _answers_as(self, port: int, pid: int, deadline: float) -> bool:
        """True if the server on ``port`` is up and is our process (checked by pid)."""
        # Short: loopback memcached answers in well under a millisecond, and whatever else
        # may hold the port (a lost race) must not stall us; a slow answer is just retried.
        timeout = max(0.05, min(0.25, deadline - time.monotonic()))
        try:
            stats = read_stats(self.host, port, timeout=timeout)
        except (OSError, MemcachedError):
            return False
        return stats.get("pid") == str(pid)

    def stop(self, *, graceful: bool = False, timeout: float = 5.0) -> None:
        """Stop the server and reap it; idempotent.

        By default with SIGKILL: a test server holds nothing worth a clean shutdown, and
        memcached acts on SIGTERM only at its once-a-second clock tick, so a graceful stop
        (``graceful=True``: SIGTERM, then SIGKILL after ``timeout``) takes up to a second.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            if graceful:
                _terminate(proc, timeout=timeout)
            elif proc.poll() is None:
                proc.kill()
                proc.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the server at once, as a crash would (for failure tests)."""
        self.stop(graceful=False)

    # -- talking to it ---------------------------------------------------------------

    def stats(self, group: str | None = None) -> dict[str, str]:
        """``stats`` (or ``stats <group>``) over a raw socket, as ``{name: value}``."""
        return read_stats(self.host, self.port, group)

    def flush_all(self) -> None:
        """Invalidate every item (``flush_all``)."""
        with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
            sock.sendall(b"flush_all\r\n")
            reply = sock.recv(64)
        if reply != b"OK\r\n":
            raise MemcachedError(f"flush_all failed: {reply!r}")

    def output(self) -> str:
        """What memcached has printed so far (empty unless started with ``-v``)."""
        return "" if self._log is None else _read_log(self._log)

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> MemcachedProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        where = self.address if self._port is not None else "no port"
        return f"<MemcachedProcess {where} {state}>"


def _terminate(proc: subprocess.Popen[bytes], *, timeout: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def _read_log(log: IO[bytes]) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace").strip()
