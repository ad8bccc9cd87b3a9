"""The control interface of ``python -m django_elasticache_rs.local``: a line protocol on a
127.0.0.1 TCP port (the server, and :func:`ask`, its client), usable with
``python -m django_elasticache_rs.local ctl PORT COMMAND``, ``nc``/``telnet`` or a few lines of
any language.

Send one command per line; each reply is zero or more lines of information followed by a last
line that is either ``OK`` or ``ERROR <reason>``. Several commands per connection are fine;
empty lines are ignored; commands are case-insensitive.

``help``
    lists the commands.
``status``
    ``version <n>``, ``endpoint <host:port> up|down``, ``mode config|legacy``, ``tls on|off``,
    ``fault <name>|none``, ``discovery_requests <n>``, ``nodes <host:port> ...``, then a line
    ``node <host:port> up|frozen|killed`` per node, then ``OK``.
``add``
    starts a new memcached node and adds it: ``added <host:port>``, ``version <n>``, ``OK``.
``remove [<host:port>]``
    removes that node (default: the last one) and stops it: ``removed <host:port>``,
    ``version <n>``, ``OK``. The last remaining node cannot be removed.
``kill <host:port>``
    kills the node's memcached (SIGKILL), as a crash: it stays in the membership;
    ``killed <host:port>``, ``OK``.
``freeze <host:port>`` / ``thaw <host:port>``
    stops (SIGSTOP) / resumes (SIGCONT) the node's memcached: frozen, it accepts connections and
    answers nothing, like a hung node; ``frozen <host:port>`` / ``thawed <host:port>``, ``OK``.
``restart <host:port>``
    a new, empty memcached on the node's port (killed first if it runs), as a reboot:
    ``restarted <host:port>``, ``OK``.
``fault none|garbage|error|close|hang|truncated|no-nodes``
    makes the configuration endpoint misbehave on discovery requests (``none``: stop
    misbehaving): ``fault <name>``, ``OK``.
``endpoint stop|start``
    makes the configuration endpoint unreachable / reachable again on the same port:
    ``endpoint down|up``, ``OK``.
``quit``
    ``OK``, then the connection is closed.

Example::

    $ python -m django_elasticache_rs.local ctl <control port> add
    added 127.0.0.1:40123
    version 2
    $ printf 'add\\nstatus\\n' | nc -q1 127.0.0.1 <control port>
    added 127.0.0.1:40124
    version 3
    OK
    version 3
    ...
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from django_elasticache_rs.local.cluster import LocalCluster
from django_elasticache_rs.local.endpoint import parse_fault
from django_elasticache_rs.local.server import ThreadedServer, read_lines

__all__ = ["HELP", "ControlError", "ControlServer", "ask", "execute"]

Command = Callable[[LocalCluster, list[str]], list[str]]
"""A control command: the cluster and its arguments -> its reply's information lines."""

HELP = [
    "help                 this list",
    "status               version, endpoint, mode, tls, fault, discovery_requests, nodes",
    "add                  start a new node and add it (version + 1)",
    "remove [host:port]   remove a node, the last one by default, and stop it (version + 1)",
    "kill <host:port>     kill a node's memcached (SIGKILL); it stays a member",
    "freeze <host:port>   stop a node's memcached (SIGSTOP): it answers nothing",
    "thaw <host:port>     resume a frozen node (SIGCONT)",
    "restart <host:port>  a new, empty memcached on the node's port",
    "fault <name>         none|garbage|error|close|hang|truncated|no-nodes",
    "endpoint stop|start  make the configuration endpoint unreachable / reachable again",
    "quit                 close this connection",
]


def _help(cluster: LocalCluster, args: list[str]) -> list[str]:
    return list(HELP)


def _status(cluster: LocalCluster, args: list[str]) -> list[str]:
    state = "up" if cluster.endpoint_running else "down"
    return [
        f"version {cluster.version}",
        f"endpoint {cluster.endpoint.address} {state}",
        f"mode {'legacy' if cluster.legacy else 'config'}",
        f"tls {'on' if cluster.tls else 'off'}",
        f"fault {cluster.fault or 'none'}",
        f"discovery_requests {cluster.discovery_requests}",
        " ".join(["nodes", *cluster.addresses]),
        *(f"node {address} {state}" for address, state in cluster.node_states()),
    ]


def _drill(verb: str, done: str, act: Callable[[LocalCluster, str], str]) -> Command:
    """A fault-drill command: ``<verb> <host:port>``, answering ``<done> <host:port>``."""

    def command(cluster: LocalCluster, args: list[str]) -> list[str]:
        if len(args) != 1:
            raise ValueError(f"usage: {verb} <host:port>")
        return [f"{done} {act(cluster, args[0])}"]

    return command


def _add(cluster: LocalCluster, args: list[str]) -> list[str]:
    node = cluster.add_node()
    return [f"added {node.address}", f"version {cluster.version}"]


def _remove(cluster: LocalCluster, args: list[str]) -> list[str]:
    if len(args) > 1:
        raise ValueError("usage: remove [host:port]")
    removed = cluster.remove_node(args[0] if args else None)
    return [f"removed {removed}", f"version {cluster.version}"]


def _fault(cluster: LocalCluster, args: list[str]) -> list[str]:
    if len(args) != 1:
        raise ValueError("usage: fault none|garbage|error|close|hang|truncated|no-nodes")
    fault = parse_fault(args[0])
    cluster.set_fault(fault)
    return [f"fault {fault or 'none'}"]


def _endpoint(cluster: LocalCluster, args: list[str]) -> list[str]:
    if args == ["stop"]:
        cluster.stop_endpoint()
    elif args == ["start"]:
        cluster.start_endpoint()
    else:
        raise ValueError("usage: endpoint stop|start")
    return [f"endpoint {'up' if cluster.endpoint_running else 'down'}"]


_COMMANDS: dict[str, Command] = {
    "kill": _drill("kill", "killed", LocalCluster.kill_node),
    "freeze": _drill("freeze", "frozen", LocalCluster.freeze_node),
    "thaw": _drill("thaw", "thawed", LocalCluster.thaw_node),
    "restart": _drill("restart", "restarted", LocalCluster.restart_node),
    "help": _help,
    "status": _status,
    "add": _add,
    "remove": _remove,
    "fault": _fault,
    "endpoint": _endpoint,
}


def execute(cluster: LocalCluster, line: str) -> list[str]:
    """Runs one command line against ``cluster``; returns the reply lines, the last being
    ``OK`` or ``ERROR <reason>``."""
    words = line.split()
    if not words:
        return ["ERROR empty command (try help)"]
    command = _COMMANDS.get(words[0].lower())
    if command is None:
        return [f"ERROR unknown command {words[0]!r} (try help)"]
    try:
        return [*command(cluster, words[1:]), "OK"]
    except Exception as error:  # reported to the client, which asked for it
        reason = " ".join(str(error).split()) or type(error).__name__
        return [f"ERROR {reason}"]


class ControlError(RuntimeError):
    """The control port answered ``ERROR <reason>`` (the reason is the message)."""


#: How long :func:`ask` waits for a reply: ``add`` starts a memcached process first.
ASK_TIMEOUT = 30.0


def ask(address: str, command: str, *, timeout: float = ASK_TIMEOUT) -> list[str]:
    """Sends one ``command`` to the control port at ``address`` (``"host:port"``, or a port on
    127.0.0.1) and returns its reply's information lines (without the final ``OK``).

    Raises :class:`ControlError` if the reply is ``ERROR <reason>``, ``OSError`` if the port
    cannot be reached, closes early or does not answer within ``timeout`` seconds."""
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a port or host:port: {address!r}")
    if "\n" in command or "\r" in command:
        raise ValueError("one command, without line breaks")
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout) as conn:
        conn.sendall(command.encode() + b"\nquit\n")
        reply: list[str] = []
        for raw in read_lines(conn):
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if line == "OK":
                return reply
            if line.startswith("ERROR"):
                raise ControlError(line.removeprefix("ERROR").strip())
            reply.append(line)
    raise ConnectionError(f"the control port at {address} closed before answering {command!r}")


class ControlServer:
    """Serves the control protocol for ``cluster`` on ``127.0.0.1:<port>`` (0: a free port)."""

    def __init__(self, cluster: LocalCluster, *, port: int = 0) -> None:
        self._cluster = cluster
        self._server = ThreadedServer(self._serve, port=port, name="control")

    @property
    def address(self) -> str:
        """``"127.0.0.1:<port>"``."""
        return f"127.0.0.1:{self._server.port}"

    def start(self) -> None:
        """Listens; raises ``OSError`` if it cannot."""
        self._server.start()

    def stop(self) -> None:
        """Stops listening and closes the open connections."""
        self._server.stop()

    def _serve(self, conn: socket.socket) -> None:
        for raw in read_lines(conn):
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            if line.lower() == "quit":
                conn.sendall(b"OK\n")
                return
            reply = execute(self._cluster, line)
            conn.sendall("".join(f"{part}\n" for part in reply).encode())
