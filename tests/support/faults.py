"""A fake memcached that misbehaves on purpose: what no real server can be made to do."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


class LoopbackServer:
    """A server on a free 127.0.0.1 port that serves each connection on a thread of its own
    with ``_answer`` (a subclass's) until ``stop()``. ``connections`` counts those accepted.

    Subclasses set their own attributes before calling ``__init__``: serving starts there."""

    def __init__(self) -> None:
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
            self._held.append(conn)
            threading.Thread(target=self._answer_until_closed, args=(conn,), daemon=True).start()

    def _answer_until_closed(self, conn: socket.socket) -> None:
        try:
            self._answer(conn)
        except OSError:
            return  # closed by the client, or by stop()

    def _answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        for conn in self._held:
            try:
                conn.close()
            except OSError:
                pass
        self._thread.join(timeout=5)


class FaultyServer(LoopbackServer):
    """Answers each request with ``reply`` (``None``: never answers), then closes the
    connection if ``close`` is set.

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
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        served = 0
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


#: The first words of memcached 1.6's meta commands.
_META_COMMANDS = (b"mn", b"mg", b"ms", b"md", b"ma", b"me")


class RelayProxy(LoopbackServer):
    """A real memcached behind a relay: each connection is relayed to ``upstream``
    (``host:port``), each request through ``_request`` and each reply through ``_reply``,
    which a subclass changes to misbehave as it must."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(self._upstream, timeout=5)
        upstream.settimeout(None)  # the relay waits for replies as long as the client does
        self._held.append(upstream)
        threading.Thread(target=self._relay_replies, args=(upstream, conn), daemon=True).start()
        while not self._stopped.is_set():
            request = conn.recv(65536)
            if not request:
                upstream.close()
                return
            self._request(request, conn, upstream)

    def _request(self, request: bytes, conn: socket.socket, upstream: socket.socket) -> None:
        """Handles one request from the client: relays it."""
        upstream.sendall(request)

    def _reply(self, reply: bytes, conn: socket.socket) -> None:
        """Handles bytes of a reply from upstream: relays them."""
        conn.sendall(reply)

    def _relay_replies(self, upstream: socket.socket, conn: socket.socket) -> None:
        try:
            while reply := upstream.recv(65536):
                self._reply(reply, conn)
        except OSError:
            return  # either side closed


class ClassicOnlyProxy(RelayProxy):
    """A memcached without meta commands (1.4/1.5, or an engine that refuses them), made of a
    real one: a request that is a meta command is answered ``ERROR`` here, as such a server
    answers it, and every other is relayed. ``meta_refused`` counts those answers.

    A client waits for each reply before it sends a meta command on a connection, so the
    relayed replies and the ``ERROR`` lines never cross."""

    def __init__(self, upstream: str) -> None:
        self.meta_refused = 0
        super().__init__(upstream)

    def _request(self, request: bytes, conn: socket.socket, upstream: socket.socket) -> None:
        if request[:2] in _META_COMMANDS and request[2:3] in (b" ", b"\r"):
            self.meta_refused += 1
            conn.sendall(b"ERROR\r\n")
        else:
            upstream.sendall(request)


class HoldingProxy(RelayProxy):
    """Relays each connection to a real memcached, but once a request containing ``marker``
    has gone upstream, holds every reply until ``proceed`` is set (at most ``hold`` seconds):
    a request the server has carried out, whose answer the client has not read yet."""

    def __init__(self, upstream: str, marker: bytes, hold: float = 30) -> None:
        self.marker = marker
        self.hold = hold
        self.sent = threading.Event()
        self.proceed = threading.Event()
        super().__init__(upstream)

    def _request(self, request: bytes, conn: socket.socket, upstream: socket.socket) -> None:
        if self.marker in request:
            self.sent.set()
        upstream.sendall(request)

    def _reply(self, reply: bytes, conn: socket.socket) -> None:
        if self.sent.is_set():
            self.proceed.wait(self.hold)
        conn.sendall(reply)


@contextmanager
def classic_only_proxy(upstream: str) -> Iterator[ClassicOnlyProxy]:
    proxy = ClassicOnlyProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.stop()
