"""Local memcached nodes for development, demos and tests: real ``memcached`` processes on
random 127.0.0.1 ports, started and stopped by the caller.

``python -m django_elasticache_rs.local --nodes 3`` starts a cluster, prints the ``CACHES``
entry to use, and stops everything on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

__all__ = ["LocalCluster", "LocalNode", "MemcachedNotInstalled"]

_INSTALL_HINT = (
    "memcached is not installed: on Debian/Ubuntu run `sudo apt-get install memcached`, "
    "on macOS `brew install memcached`"
)


class MemcachedNotInstalled(RuntimeError):
    """No ``memcached`` executable on PATH."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LocalNode:
    """One memcached process on 127.0.0.1 at a free port."""

    def __init__(self, *, memory_mb: int = 64, extra_args: tuple[str, ...] = ()) -> None:
        self.memory_mb = memory_mb
        self.extra_args = extra_args
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> LocalNode:
        executable = shutil.which("memcached")
        if executable is None:
            raise MemcachedNotInstalled(_INSTALL_HINT)
        # A port picked free can be taken before memcached binds it: try another.
        for _ in range(20):
            self.port = _free_port()
            args = [executable, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
            args += ["-t", "1", "-m", str(self.memory_mb), *self.extra_args]
            if os.geteuid() == 0:
                args += ["-u", "root"]  # memcached refuses to run as root without it
            process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if self._wait_until_serving(process, timeout):
                self._process = process
                return self
            _terminate(process)
        raise RuntimeError("could not start memcached on a free port")

    def _wait_until_serving(self, process: subprocess.Popen[bytes], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                stats = self._stats(0.5)
            except OSError:
                time.sleep(0.01)  # polling a process that is still starting
                continue
            # Only our own process reports our pid: another may have won the port.
            return stats.get("pid") == str(process.pid)
        return False

    def flush_all(self) -> None:
        """Empties the node."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5.0) as conn:
            conn.sendall(b"flush_all\r\n")
            if conn.recv(64) != b"OK\r\n":
                raise ConnectionError("memcached did not confirm flush_all")

    def stats(self) -> dict[str, str]:
        """The node's ``stats``, read over a fresh connection."""
        return self._stats(5.0)

    def _stats(self, timeout: float) -> dict[str, str]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
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
        if self._process is not None:
            _terminate(self._process)
            self._process = None

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _terminate(process: subprocess.Popen[bytes]) -> None:
    # memcached keeps nothing worth a graceful stop, and only acts on SIGTERM at its next
    # once-a-second clock tick: kill it.
    if process.poll() is None:
        process.kill()
    process.wait()
    if process.stderr is not None:
        process.stderr.close()


class LocalCluster:
    """Several local memcached nodes, started together and stopped together."""

    def __init__(self, nodes: int = 3, *, memory_mb: int = 64) -> None:
        self.nodes = [LocalNode(memory_mb=memory_mb) for _ in range(nodes)]

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    def caches_setting(self, alias: str = "default") -> dict[str, dict[str, object]]:
        """The ``CACHES`` entry for this cluster."""
        return {
            alias: {
                "BACKEND": "django_elasticache_rs.backend.ElastiCache",
                "LOCATION": self.addresses,
            }
        }

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def local_cluster(nodes: int = 3) -> Iterator[LocalCluster]:
    """A running local cluster for the duration of a ``with`` block."""
    with LocalCluster(nodes) as cluster:
        yield cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m django_elasticache_rs.local",
        description="Run local memcached nodes for development until interrupted.",
    )
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    args = parser.parse_args(argv)
    try:
        cluster = LocalCluster(args.nodes).start()
    except MemcachedNotInstalled as error:
        print(error, file=sys.stderr)
        return 1
    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        print("Local cluster running. Use this in your settings:\n")
        print("CACHES = " + json.dumps(cluster.caches_setting(), indent=4))
        print("\nCtrl-C stops it.", flush=True)
        while not stop:
            signal.pause()
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
