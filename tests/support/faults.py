"""A fake memcached that misbehaves on purpose: what no real server can be made to do."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


class FaultyServer:
    """Accepts connections on a free 127.0.0.1 port; answers each request with ``reply``
    (``None``: never answers), then closes the connection if ``close`` is set.

    ``before`` are good replies for a connection's first requests, in turn (a warm-up that
    pools the connection). With a ``gate``, the fault waits until the gate is set (at most
    5 s); ``requested`` is set when a request meets the fault."""

    def __init__(
        self,
        reply: bytes | None,
        *,
        close: bool = False,
        before: Sequence[bytes] = (),
        gate: threading.Event | None = None,
    ) -> None:
        self.reply = reply
        self.close = close
        self.before = list(before)
        self.gate = gate
        self.requested = threading.Event()
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        self._held.append(conn)
        conn.settimeout(5)
        served = 0
        try:
            while not self._stopped.is_set():
                if not conn.recv(65536):
                    return
                served += 1
                if served <= len(self.before):
                    conn.sendall(self.before[served - 1])
                    continue
                self.requested.set()
                if self.gate is not None:
                    self.gate.wait(timeout=5)
                if self.reply is None:
                    continue
                conn.sendall(self.reply)
                if self.close:
                    conn.close()
                    return
        except OSError:
            return

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        for conn in self._held:
            try:
                conn.close()
            except OSError:
                pass
        self._thread.join(timeout=5)


@contextmanager
def faulty_server(
    reply: bytes | None,
    *,
    close: bool = False,
    before: Sequence[bytes] = (),
    gate: threading.Event | None = None,
) -> Iterator[FaultyServer]:
    server = FaultyServer(reply, close=close, before=before, gate=gate)
    try:
        yield server
    finally:
        server.stop()
