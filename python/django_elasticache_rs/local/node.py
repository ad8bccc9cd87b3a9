"""One real ``memcached`` process on a random 127.0.0.1 port, started and stopped by the caller;
in TLS mode (``tls=``) it serves TLS only, and the node's own helpers (``stats()``,
``flush_all()``, ``has_key()``) speak TLS to it too."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from types import TracebackType

from django_elasticache_rs.local.certs import Certificates

__all__ = ["INSTALL_HINT", "LocalNode", "MemcachedNotInstalled", "stop_process"]

INSTALL_HINT = (
    "memcached is not installed: on Debian/Ubuntu run `sudo apt-get install memcached`, "
    "on macOS `brew install memcached`"
)


class MemcachedNotInstalled(RuntimeError):
    """No ``memcached`` executable on PATH."""


#: The longest a process may take to stop once signalled (then :func:`stop_process` raises).
STOP_BOUND = 30.0


def stop_process(pid: int) -> None:
    """Stops process ``pid`` (SIGSTOP) and, where ``/proc`` tells, returns once it is stopped:
    ``kill`` returns before a process running on another CPU stops, and a node could answer one
    more request meanwhile, which a drill of a hung node must not allow."""
    os.kill(pid, signal.SIGSTOP)
    stat = f"/proc/{pid}/stat"
    if not os.path.exists(stat):
        return
    deadline = time.monotonic() + STOP_BOUND
    # The state follows the command name, which is in parentheses and may contain spaces.
    while open(stat, encoding="ascii", errors="replace").read().rsplit(")", 1)[1].split()[0] != "T":
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} did not stop within {STOP_BOUND:g} s")
        time.sleep(0.001)  # polling interval


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LocalNode:
    """One memcached process on 127.0.0.1 at a free port.

    ``tls``: serve TLS only, with ``tls.server_cert``; ``require_client_cert``: and accept only
    clients presenting a certificate signed by ``tls.ca_cert``. The node's helpers connect to
    ``127.0.0.1`` and verify the certificate against ``tls.server_hostname``, unless
    ``verify_certificate`` is false (a node serving a deliberately bad certificate, for tests
    of clients that must refuse it)."""

    def __init__(
        self,
        *,
        memory_mb: int = 64,
        extra_args: tuple[str, ...] = (),
        tls: Certificates | None = None,
        require_client_cert: bool = False,
        verify_certificate: bool = True,
    ) -> None:
        if require_client_cert and tls is None:
            raise ValueError("require_client_cert needs tls certificates")
        self.memory_mb = memory_mb
        self.extra_args = extra_args
        self.tls = tls
        self.require_client_cert = require_client_cert
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._frozen = False
        self._context = tls.client_context(client_cert=require_client_cert) if tls else None
        if self._context is not None and not verify_certificate:
            self._context.check_hostname = False
            self._context.verify_mode = ssl.CERT_NONE

    @property
    def address(self) -> str:
        """``"127.0.0.1:<port>"``."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The memcached process id while it runs, else ``None``."""
        return self._process.pid if self._process is not None else None

    @property
    def state(self) -> str:
        """``"up"`` (running), ``"frozen"`` (stopped by :meth:`freeze`: it accepts connections
        but answers nothing) or ``"killed"`` (not running)."""
        if self._process is None or self._process.poll() is not None:
            return "killed"
        return "frozen" if self._frozen else "up"

    def kill(self) -> None:
        """Kills the process (SIGKILL) as a crash would; the port stays the node's, for
        :meth:`restart`. Does nothing if it is not running."""
        self.stop()

    def freeze(self) -> None:
        """Stops the process (SIGSTOP), returning once it is stopped: connections are accepted
        by the kernel but nothing is answered, as with a hung node. :meth:`thaw` resumes it."""
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError(f"node {self.address} is not running")
        stop_process(self._process.pid)
        self._frozen = True

    def thaw(self) -> None:
        """Resumes a frozen process (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self._frozen = False

    def restart(self, timeout: float = 10.0) -> LocalNode:
        """Kills the process if it runs (frozen or not) and starts a new, empty memcached on the
        same port, as a node that rebooted."""
        port = self.port
        self.stop()
        return self.start(timeout, port=port)

    def _signal(self, signum: int) -> None:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError(f"node {self.address} is not running")
        os.kill(self._process.pid, signum)

    def start(self, timeout: float = 10.0, *, port: int | None = None) -> LocalNode:
        """Starts memcached and returns once it serves (raises after ``timeout`` seconds), on
        ``port`` if given (it must come free within ``timeout``), else on a free port."""
        executable = shutil.which("memcached")
        if executable is None:
            raise MemcachedNotInstalled(INSTALL_HINT)
        # A port picked free can be taken before memcached binds it: try another (or, for a
        # given port, the same one again while attempts and time are left).
        failure = ""
        deadline = time.monotonic() + timeout
        for _ in range(20):
            if port is not None and time.monotonic() > deadline:
                break
            self.port = port if port is not None else _free_port()
            args = [executable, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
            args += ["-t", "1", "-m", str(self.memory_mb), *self.tls_args(), *self.extra_args]
            if os.geteuid() == 0:
                args += ["-u", "root"]  # memcached refuses to run as root without it
            process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                serving = self._wait_until_serving(process, timeout)
            except BaseException:
                _terminate(process)
                raise
            if serving:
                self._process = process
                self._frozen = False
                return self
            failure = _terminate(process) or failure
            if port is not None:
                time.sleep(0.1)  # the given port is still held (by a dying process)
        raise RuntimeError(f"could not start memcached on a free port{failure}")

    def tls_args(self) -> list[str]:
        """memcached's TLS arguments: ``-Z -o ssl_chain_cert=...,ssl_key=...`` (and
        ``ssl_ca_cert=...,ssl_verify_mode=2`` when client certificates are required); none
        without TLS."""
        if self.tls is None:
            return []
        files = [self.tls.server_cert, self.tls.server_key, self.tls.ca_cert]
        if any("," in str(path) for path in files):
            raise ValueError(f"memcached cannot take a path with a comma: {self.tls.directory}")
        options = [f"ssl_chain_cert={self.tls.server_cert}", f"ssl_key={self.tls.server_key}"]
        if self.require_client_cert:
            options += [f"ssl_ca_cert={self.tls.ca_cert}", "ssl_verify_mode=2"]
        return ["-Z", "-o", ",".join(options)]

    def _wait_until_serving(self, process: subprocess.Popen[bytes], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                stats = self._stats(0.5)
            except ssl.SSLCertVerificationError as error:
                _raise_unless_lost_port(process, error)
                return False
            except OSError:
                time.sleep(0.01)  # polling a process that is still starting
                continue
            # Only our own process reports our pid: another may have won the port.
            return stats.get("pid") == str(process.pid)
        return False

    def _connect(self, timeout: float) -> socket.socket:
        """A connection to the node: over TLS (handshake done, certificate verified) in TLS
        mode."""
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self._context is None or self.tls is None:
            return conn
        try:
            return self._context.wrap_socket(conn, server_hostname=self.tls.server_hostname)
        except BaseException:
            conn.close()
            raise

    def flush_all(self) -> None:
        """Empties the node."""
        with self._connect(5.0) as conn:
            conn.sendall(b"flush_all\r\n")
            if conn.recv(64) != b"OK\r\n":
                raise ConnectionError("memcached did not confirm flush_all")

    def has_key(self, key: str) -> bool:
        """Whether this node holds ``key`` (the key as sent on the wire, e.g. ``":1:name"`` for
        Django's default key function), read over a fresh connection: to check where a client
        put a key."""
        raw = key.encode()
        if not raw or len(raw) > 250 or any(byte <= 32 or byte == 127 for byte in raw):
            raise ValueError(f"not a memcached key: {key!r}")
        with self._connect(5.0) as conn:
            conn.sendall(b"get %s\r\n" % raw)
            with conn.makefile("rb") as reply:
                first = reply.readline()
        if first == b"END\r\n":
            return False
        if first.startswith(b"VALUE %s " % raw):
            return True
        raise ConnectionError(f"unexpected reply from memcached: {first[:80]!r}")

    def stats(self) -> dict[str, str]:
        """The node's ``stats``, read over a fresh connection."""
        return self._stats(5.0)

    def _stats(self, timeout: float) -> dict[str, str]:
        with self._connect(timeout) as conn:
            conn.sendall(b"stats\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    raise ConnectionError("memcached closed the stats connection")
                reply += chunk
        stats = {}
        for line in reply.decode().splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0] == "STAT":
                stats[parts[1]] = parts[2]
        return stats

    def stop(self) -> None:
        """Kills the process and waits for it; does nothing if it is not running."""
        if self._process is not None:
            _terminate(self._process)
            self._process = None
        self._frozen = False

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _raise_unless_lost_port(
    process: subprocess.Popen[bytes], error: ssl.SSLCertVerificationError
) -> None:
    """The node's certificate did not verify: raises, unless the certificate was another
    process's, on a port our memcached then failed to bind (it exits at once when it does)."""
    try:
        process.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"memcached's TLS certificate does not verify: {error}") from error


def _terminate(process: subprocess.Popen[bytes]) -> str:
    """Kills ``process`` and waits for it; returns what it wrote to stderr (``": <text>"``, or
    ``""`` if nothing)."""
    # memcached keeps nothing worth a graceful stop, and only acts on SIGTERM at its next
    # once-a-second clock tick: kill it.
    if process.poll() is None:
        process.kill()
    process.wait()
    if process.stderr is None:
        return ""
    with process.stderr:
        text = process.stderr.read(4096).decode("utf-8", "replace").strip()
    return f": {text}" if text else ""
