"""A small threaded TCP server on the loopback interface, shared by the configuration endpoint
and the control interface: one thread per connection, and a stop that never waits on a client (it
shuts every open connection down, which wakes any thread blocked reading it).

It listens on ``127.0.0.1:<port>`` and, when the machine has IPv6 loopback and the same port is
free there, on ``[::1]:<port>`` too (so ``localhost`` works whichever address it resolves to).

It can be stopped and started again on the same port, to make a service unreachable for a while.

With an ``ssl.SSLContext`` it serves TLS: each accepted connection is wrapped and its handshake
done on the connection's own thread (bounded by :data:`HANDSHAKE_TIMEOUT`), so a client that
never handshakes holds up no one else; the handler gets the TLS socket. A connection the server
ends gets a TLS ``close_notify`` first, as memcached sends one.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import threading
from collections.abc import Callable, Iterator

__all__ = ["HANDSHAKE_TIMEOUT", "MAX_LINE", "ThreadedServer", "read_lines"]

MAX_LINE = 8192
"""Longest request line accepted; a client sending a longer one is disconnected."""

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a TLS client has to complete its handshake before it is disconnected."""

Handler = Callable[[socket.socket], None]


class ThreadedServer:
    """Accepts connections on ``127.0.0.1:<port>`` (``port=0``: a free one, kept for restarts),
    and on ``[::1]:<port>`` if it can, and runs ``handler(conn)`` for each on its own thread; the
    connection is closed afterwards. ``tls``: serve TLS with that server context."""

    def __init__(
        self,
        handler: Handler,
        *,
        port: int = 0,
        name: str = "server",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._handler = handler
        self._port = port
        self._name = name
        self._tls = tls
        self._lock = threading.Lock()
        self._listeners: list[socket.socket] = []
        self._waker: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._accepted = 0

    @property
    def port(self) -> int:
        """The port listened on (0 until the first start)."""
        return self._port

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The server context when it serves TLS, else ``None``."""
        with self._lock:
            return self._tls

    def use_tls(self, context: ssl.SSLContext | None) -> None:
        """Serves TLS with ``context`` (``None``: plain TCP) from the next connection on."""
        with self._lock:
            self._tls = context

    @property
    def running(self) -> bool:
        """Whether it is listening."""
        return bool(self._listeners)

    @property
    def connections_accepted(self) -> int:
        """Connections accepted since the server was created."""
        with self._lock:
            return self._accepted

    def start(self) -> None:
        """Listens (again, on the same port after a stop); raises ``OSError`` if it cannot."""
        with self._lock:
            if self._listeners:
                return
            listener = socket.create_server(("127.0.0.1", self._port))  # SO_REUSEADDR on POSIX
            self._port = listener.getsockname()[1]
            listeners = [listener, *_ipv6_loopback(self._port)]
            for each in listeners:
                each.setblocking(False)
            wake_read, self._waker = socket.socketpair()
            self._listeners = listeners
            self._acceptor = threading.Thread(
                target=self._accept_loop,
                args=(listeners, wake_read),
                name=f"{self._name}-accept",
                daemon=True,
            )
            self._acceptor.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stops listening and closes every open connection; waits at most about ``timeout``
        seconds for the connection threads to finish."""
        with self._lock:
            listeners, waker, acceptor = self._listeners, self._waker, self._acceptor
            self._listeners, self._waker, self._acceptor = [], None, None
        if not listeners or waker is None or acceptor is None:
            return
        waker.close()  # the acceptor sees its end readable (EOF) and returns
        acceptor.join(timeout)
        for listener in listeners:
            listener.close()
        with self._lock:
            for conn in self._connections:
                _shutdown(conn)
            threads = list(self._connections.values())
        for thread in threads:
            thread.join(timeout)

    def _accept_loop(self, listeners: list[socket.socket], wake_read: socket.socket) -> None:
        with selectors.DefaultSelector() as selector, wake_read:
            selector.register(wake_read, selectors.EVENT_READ, None)
            for listener in listeners:
                selector.register(listener, selectors.EVENT_READ, listener)
            while True:
                ready: list[socket.socket | None] = [key.data for key, _ in selector.select()]
                if None in ready:  # the waker: stop() was called
                    return
                for ready_listener in ready:
                    if ready_listener is not None:
                        self._accept(ready_listener)

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # the client gave up already (or the listener is being closed)
        self._adopt(conn)

    def _adopt(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        with self._lock:
            if not self._listeners:  # stopping: refuse late arrivals
                conn.close()
                return
            thread = threading.Thread(
                target=self._serve, args=(conn, self._tls), name=f"{self._name}-conn", daemon=True
            )
            self._connections[conn] = thread
            self._accepted += 1
            thread.start()

    def _serve(self, conn: socket.socket, tls: ssl.SSLContext | None) -> None:
        try:
            if tls is not None:
                conn = self._wrap(conn, tls)
                _handshake(conn)
            self._handler(conn)
            _close_notify(conn)
        except OSError:
            pass  # the client went away, failed its handshake, or stop() shut the connection
        finally:
            with self._lock:
                del self._connections[conn]
            conn.close()

    def _wrap(self, conn: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket:
        """``conn`` wrapped in TLS, handshake not done yet. Wrapping detaches ``conn``: the TLS
        socket (same file descriptor) replaces it among the connections stop() shuts down."""
        with self._lock:
            secure = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            self._connections[secure] = self._connections.pop(conn)
        return secure


def _handshake(conn: ssl.SSLSocket) -> None:
    """The server side of the TLS handshake; raises ``OSError`` if it fails or the client takes
    longer than :data:`HANDSHAKE_TIMEOUT`."""
    conn.settimeout(HANDSHAKE_TIMEOUT)
    conn.do_handshake()
    conn.settimeout(None)


def _ipv6_loopback(port: int) -> list[socket.socket]:
    """A listener on ``[::1]:<port>``, or none if the machine has no IPv6 loopback or the port
    is taken there."""
    if not socket.has_ipv6:
        return []
    try:
        return [socket.create_server(("::1", port), family=socket.AF_INET6)]
    except OSError:
        return []


def _shutdown(conn: socket.socket) -> None:
    # The plain socket's shutdown, for a TLS socket too: SSLSocket.shutdown() would also drop
    # the TLS state under the connection thread's feet.
    try:
        socket.socket.shutdown(conn, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the client


def _close_notify(conn: socket.socket) -> None:
    """Sends a TLS socket's ``close_notify`` without waiting for the client's (as memcached
    does); nothing for a plain socket."""
    if not isinstance(conn, ssl.SSLSocket):
        return
    conn.settimeout(0.0)
    try:
        conn.unwrap()
    except (OSError, ValueError):
        pass  # the client's close_notify has not come (or it is gone): no matter


def read_lines(conn: socket.socket) -> Iterator[bytes]:
    """The lines a client sends, without their ``\\r\\n`` or ``\\n``, until it closes the
    connection or sends a line longer than :data:`MAX_LINE`."""
    buffer = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.removesuffix(b"\r")
        if len(buffer) > MAX_LINE:
            return
