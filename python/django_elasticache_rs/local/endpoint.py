"""An ElastiCache configuration endpoint: answers the Auto Discovery requests with the current
membership, framed exactly as ElastiCache frames it, and misbehaves on demand for tests.

Requests (one per line, several per connection):

* ``config get cluster`` -> ``CONFIG cluster 0 <len>\\r\\n<body>\\r\\nEND\\r\\n``
* ``get AmazonElastiCache:cluster`` (engines before 1.4.14) ->
  ``VALUE AmazonElastiCache:cluster 0 <len>\\r\\n<body>\\r\\nEND\\r\\n``
* anything else -> ``ERROR\\r\\n``

where ``<body>`` is ``<version>\\n<host>|<ip>|<port> <host>|<ip>|<port>...\\n`` and ``<len>`` its
length in bytes. In legacy mode ``config get cluster`` is an unknown command (``ERROR``), as on
the old engines.

With ``tls=`` (a server ``ssl.SSLContext``) it serves the same over TLS only, like an ElastiCache
cluster with in-transit encryption; every fault behaves the same inside the TLS session.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Literal, get_args

from django_elasticache_rs.local.server import ThreadedServer, read_lines

__all__ = [
    "FAULTS",
    "ClusterConfig",
    "ConfigEndpoint",
    "Fault",
    "Member",
    "config_frame",
    "legacy_frame",
    "parse_fault",
]

Fault = Literal["garbage", "error", "close", "hang", "truncated", "no-nodes"]
"""How the endpoint misbehaves on discovery requests (``None``: it does not):

* ``garbage``: answers ``\\x00\\xff\\xfeHELLO\\r\\n``
* ``error``: answers ``ERROR\\r\\n``
* ``close``: closes the connection without answering
* ``hang``: reads the request and never answers (nor anything after it on that connection)
* ``truncated``: sends the frame's header and half its body, then closes the connection
* ``no-nodes``: a well-formed frame with the current version and no member
"""

FAULTS: tuple[Fault, ...] = get_args(Fault)

Member = tuple[str, str, int]
"""One node as the endpoint lists it: ``(hostname, ip, port)``."""

Command = Literal["config", "legacy"]

GARBAGE = b"\x00\xff\xfeHELLO\r\n"
ERROR = b"ERROR\r\n"
_END = b"\r\nEND\r\n"
_PREFIXES: dict[Command, bytes] = {
    "config": b"CONFIG cluster",
    "legacy": b"VALUE AmazonElastiCache:cluster",
}


@dataclass(frozen=True)
class ClusterConfig:
    """One published membership: its version and its members, in order."""

    version: int
    members: tuple[Member, ...] = ()

    def body(self) -> bytes:
        """``<version>\\n<host>|<ip>|<port> ...\\n``: what both frames carry."""
        nodes = " ".join(f"{host}|{ip}|{port}" for host, ip, port in self.members)
        return f"{self.version}\n{nodes}\n".encode()


def _header(command: Command, body: bytes) -> bytes:
    return _PREFIXES[command] + b" 0 %d\r\n" % len(body)


def config_frame(body: bytes) -> bytes:
    """The reply to ``config get cluster``."""
    return _header("config", body) + body + _END


def legacy_frame(body: bytes) -> bytes:
    """The reply to ``get AmazonElastiCache:cluster``."""
    return _header("legacy", body) + body + _END


def parse_fault(text: str) -> Fault | None:
    """``"none"`` -> ``None``; a fault's name -> that fault; anything else raises ``ValueError``."""
    if text == "none":
        return None
    for fault in FAULTS:
        if fault == text:
            return fault
    raise ValueError(f"unknown fault {text!r} (one of: none, {', '.join(FAULTS)})")


def _command(line: bytes) -> Command | None:
    tokens = line.split()
    if tokens == [b"config", b"get", b"cluster"]:
        return "config"
    if tokens == [b"get", b"AmazonElastiCache:cluster"]:
        return "legacy"
    return None


def _reply(command: Command, config: ClusterConfig, fault: Fault | None) -> tuple[bytes, bool]:
    """What to send for a discovery request, and whether the connection stays open after it
    (for every fault except ``hang``, which sends nothing, ever)."""
    if fault == "garbage":
        return GARBAGE, True
    if fault == "error":
        return ERROR, True
    if fault == "close":
        return b"", False
    if fault == "no-nodes":
        config = ClusterConfig(config.version)
    body = config.body()
    if fault == "truncated":
        return _header(command, body) + body[: len(body) // 2], False
    return _header(command, body) + body + _END, True


class ConfigEndpoint:
    """The configuration endpoint on ``127.0.0.1:<port>`` (``port=0``: a free port, kept when
    it is stopped and started again); over TLS with ``tls`` (a server context, e.g.
    :meth:`Certificates.server_context() <django_elasticache_rs.local.certs.Certificates>`).
    Thread-safe: membership and fault can change at any time, and apply from the next request
    on."""

    def __init__(
        self,
        *,
        port: int = 0,
        legacy: bool = False,
        config: ClusterConfig | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._legacy = legacy
        self._lock = threading.Lock()
        self._config = config if config is not None else ClusterConfig(0)
        self._fault: Fault | None = None
        self._discovery_requests = 0
        self._server = ThreadedServer(self._serve, port=port, name="config-endpoint", tls=tls)

    @property
    def port(self) -> int:
        """The port (0 until first started)."""
        return self._server.port

    @property
    def address(self) -> str:
        """``"127.0.0.1:<port>"``."""
        return f"127.0.0.1:{self.port}"

    @property
    def legacy(self) -> bool:
        """Whether it answers only ``get AmazonElastiCache:cluster`` (engines before 1.4.14)."""
        return self._legacy

    @property
    def running(self) -> bool:
        """Whether it accepts connections."""
        return self._server.running

    @property
    def tls(self) -> bool:
        """Whether it serves TLS."""
        return self._server.tls is not None

    @property
    def config(self) -> ClusterConfig:
        """The membership it serves."""
        with self._lock:
            return self._config

    @property
    def fault(self) -> Fault | None:
        """The current misbehaviour, if any."""
        with self._lock:
            return self._fault

    @property
    def discovery_requests(self) -> int:
        """Discovery requests received (either command, whatever was answered, faults included)."""
        with self._lock:
            return self._discovery_requests

    @property
    def connections_accepted(self) -> int:
        """Connections accepted so far (clients that reuse connections open few)."""
        return self._server.connections_accepted

    def publish(self, config: ClusterConfig) -> None:
        """Serves ``config`` from the next request on."""
        with self._lock:
            self._config = config

    def set_fault(self, fault: Fault | None) -> None:
        """Misbehaves as ``fault`` says from the next request on (``None``: behaves again)."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} (one of: {', '.join(FAULTS)})")
        with self._lock:
            self._fault = fault

    def use_tls(self, context: ssl.SSLContext | None) -> None:
        """Serves TLS with ``context`` (``None``: plain TCP) from the next connection on."""
        self._server.use_tls(context)

    def start(self) -> None:
        """Listens; on the same port as before if it was started already."""
        self._server.start()

    def stop(self) -> None:
        """Stops listening and closes every open connection (clients see it go away)."""
        self._server.stop()

    def _serve(self, conn: socket.socket) -> None:
        for line in read_lines(conn):
            command = _command(line)
            if command is None:
                conn.sendall(ERROR)
                continue
            config, fault = self._note_request()
            if command == "config" and self._legacy:
                conn.sendall(ERROR)
                continue
            if fault == "hang":
                _discard_until_closed(conn)
                return
            reply, keep_open = _reply(command, config, fault)
            conn.sendall(reply)
            if not keep_open:
                return

    def _note_request(self) -> tuple[ClusterConfig, Fault | None]:
        with self._lock:
            self._discovery_requests += 1
            return self._config, self._fault


def _discard_until_closed(conn: socket.socket) -> None:
    # Returns when the client closes the connection, or when the server's stop() shuts it down.
    while conn.recv(4096):
        pass
