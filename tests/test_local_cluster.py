"""The local ElastiCache-compatible cluster: the configuration endpoint's framing (byte for byte,
against the shared discovery vectors), legacy mode, membership changes, every fault, endpoint
down/up, the CLI and its control interface, and the pytest plugin."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from django_elasticache_rs.local import (
    BACKEND,
    FAULTS,
    ClusterConfig,
    ConfigEndpoint,
    LocalCluster,
    LocalNode,
    config_frame,
    legacy_frame,
)
from django_elasticache_rs.local.control import execute
from django_elasticache_rs.local.server import MAX_LINE
from django_elasticache_rs.pytest_plugin import ClusterFactory

VECTORS = {
    case["name"]: case
    for case in json.loads(
        (
            Path(__file__).resolve().parent.parent / "testdata" / "discovery-responses.json"
        ).read_text()
    )["cases"]
}
CONFIG_GET = b"config get cluster\r\n"
LEGACY_GET = b"get AmazonElastiCache:cluster\r\n"
END = b"\r\nEND\r\n"
TIMEOUT = 5.0  # bound on every wait that should succeed


# -- helpers ----------------------------------------------------------------------------------


def _connect(address: str, timeout: float = TIMEOUT) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def _read_reply(reader: BinaryIO) -> bytes:
    """One reply: a whole CONFIG/VALUE frame as declared, or one line."""
    header = reader.readline()
    if header.startswith((b"CONFIG ", b"VALUE ")):
        length = int(header.split()[-1])
        return header + reader.read(length + len(END))
    return header


def _ask(address: str, request: bytes) -> bytes:
    with _connect(address) as conn, conn.makefile("rb") as reader:
        conn.sendall(request)
        return _read_reply(reader)


def _read_until_closed(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(4096):
        data += chunk
    return data


def _body(version: int, ports: list[int]) -> bytes:
    return f"{version}\n{' '.join(f'localhost|127.0.0.1|{p}' for p in ports)}\n".encode()


def _ports(cluster: LocalCluster) -> list[int]:
    return [node.port for node in cluster.nodes]


def _memcached_roundtrip(address: str) -> bytes:
    with _connect(address) as conn, conn.makefile("rb") as reader:
        conn.sendall(b"set k 0 0 5\r\nhello\r\nget k\r\n")
        return reader.readline() + reader.readline() + reader.readline() + reader.readline()


def _refuses(address: str) -> bool:
    try:
        _connect(address, timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False


# -- framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["two-nodes", "one-node", "empty-ip-field", "ipv6", "legacy-get-frame"]
)
def test_frames_are_byte_exact(name: str) -> None:
    case = VECTORS[name]
    members = tuple((host, ip, port) for host, ip, port in case["expect"]["nodes"])
    endpoint = ConfigEndpoint(config=ClusterConfig(case["expect"]["version"], members))
    endpoint.start()
    try:
        reply = _ask(endpoint.address, case["request"].encode() + b"\r\n")
    finally:
        endpoint.stop()
    assert reply == bytes.fromhex(case["raw_hex"])


def test_empty_membership_frame_matches_the_no_nodes_vector() -> None:
    assert config_frame(ClusterConfig(9).body()) == bytes.fromhex(VECTORS["no-nodes"]["raw_hex"])


def test_cluster_lists_its_nodes_as_localhost_and_loopback_ip(
    elasticache_cluster: LocalCluster,
) -> None:
    body = _body(1, _ports(elasticache_cluster))
    assert elasticache_cluster.version == 1
    assert _ask(elasticache_cluster.configuration_endpoint, CONFIG_GET) == config_frame(body)
    assert _ask(elasticache_cluster.configuration_endpoint, LEGACY_GET) == legacy_frame(body)
    assert config_frame(body).startswith(b"CONFIG cluster 0 %d\r\n" % len(body))


def test_many_requests_per_connection_pipelined_or_not(elasticache_cluster: LocalCluster) -> None:
    body = _body(1, _ports(elasticache_cluster))
    with _connect(elasticache_cluster.configuration_endpoint) as conn:
        reader = conn.makefile("rb")
        conn.sendall(CONFIG_GET + b"stats\r\n" + LEGACY_GET)  # one packet, three requests
        assert _read_reply(reader) == config_frame(body)
        assert _read_reply(reader) == b"ERROR\r\n"
        assert _read_reply(reader) == legacy_frame(body)
        for request in (b"version\r\n", b"config get cluster extra\r\n", b"get other\r\n"):
            conn.sendall(request)
            assert _read_reply(reader) == b"ERROR\r\n"
        conn.sendall(b"config get cluster\n")  # a bare LF ends a line too
        assert _read_reply(reader) == config_frame(body)
        reader.close()
    assert elasticache_cluster.discovery_requests == 3
    assert elasticache_cluster.endpoint.connections_accepted == 1


def test_a_line_too_long_closes_the_connection(elasticache_cluster: LocalCluster) -> None:
    with _connect(elasticache_cluster.configuration_endpoint) as conn:
        conn.sendall(b"x" * (MAX_LINE + 4096))
        assert _read_until_closed(conn) == b""


def test_legacy_mode_answers_only_the_legacy_get(
    elasticache_cluster_factory: ClusterFactory,
) -> None:
    cluster = elasticache_cluster_factory(nodes=1, legacy=True)
    assert cluster.legacy
    body = _body(1, _ports(cluster))
    with _connect(cluster.configuration_endpoint) as conn, conn.makefile("rb") as reader:
        conn.sendall(CONFIG_GET)
        assert _read_reply(reader) == b"ERROR\r\n"
        conn.sendall(LEGACY_GET)
        assert _read_reply(reader) == legacy_frame(body)
    assert cluster.discovery_requests == 2  # a client falling back makes two round trips


def test_caches_setting_points_at_the_configuration_endpoint(
    elasticache_cluster: LocalCluster,
) -> None:
    endpoint = elasticache_cluster.configuration_endpoint
    assert endpoint == f"127.0.0.1:{elasticache_cluster.endpoint.port}"
    assert elasticache_cluster.caches_setting("other", discovery_interval=5, timeout=0.5) == {
        "other": {
            "BACKEND": BACKEND,
            "LOCATION": endpoint,
            "OPTIONS": {"discovery_interval": 5, "timeout": 0.5},
        }
    }
    assert elasticache_cluster.caches_setting()["default"]["OPTIONS"] == {}
    static = elasticache_cluster.static_caches_setting()["default"]
    assert static["LOCATION"] == elasticache_cluster.addresses


# -- membership -------------------------------------------------------------------------------


def test_add_node_bumps_the_version_and_the_new_node_serves(
    elasticache_cluster: LocalCluster,
) -> None:
    node = elasticache_cluster.add_node()
    assert elasticache_cluster.version == 2
    assert elasticache_cluster.nodes[-1] is node
    assert len(elasticache_cluster.addresses) == 4
    assert _memcached_roundtrip(node.address) == b"STORED\r\nVALUE k 0 5\r\nhello\r\nEND\r\n"
    expected = config_frame(_body(2, _ports(elasticache_cluster)))
    assert _ask(elasticache_cluster.configuration_endpoint, CONFIG_GET) == expected


def test_remove_node_bumps_the_version_and_stops_the_process(
    elasticache_cluster: LocalCluster,
) -> None:
    first, middle, last = elasticache_cluster.nodes
    assert elasticache_cluster.remove_node() == last.address
    assert elasticache_cluster.version == 2
    assert _refuses(last.address)
    assert last.pid is None
    assert elasticache_cluster.remove_node(f"localhost:{middle.port}") == middle.address
    assert elasticache_cluster.version == 3
    assert _refuses(middle.address)
    assert elasticache_cluster.nodes == [first]
    assert _ask(elasticache_cluster.configuration_endpoint, CONFIG_GET) == config_frame(
        _body(3, [first.port])
    )
    with pytest.raises(ValueError, match="last node"):
        elasticache_cluster.remove_node()
    with pytest.raises(ValueError, match=r"no node 127\.0\.0\.1:1"):
        elasticache_cluster.remove_node("127.0.0.1:1")
    assert elasticache_cluster.version == 3


def test_has_key_tells_which_node_holds_a_key(elasticache_cluster: LocalCluster) -> None:
    first, second, _ = elasticache_cluster.nodes
    assert _memcached_roundtrip(first.address).startswith(b"STORED")  # stores "k"
    assert first.has_key("k")
    assert not second.has_key("k")
    with pytest.raises(ValueError, match="not a memcached key"):
        first.has_key("two words")


def test_concurrent_membership_changes_each_get_their_own_version(
    elasticache_cluster: LocalCluster,
) -> None:
    added: list[LocalNode] = []
    threads = [
        threading.Thread(target=lambda: added.append(elasticache_cluster.add_node()))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 4)
    assert len(added) == 4
    assert len({node.port for node in added}) == 4
    assert elasticache_cluster.version == 5
    assert len(elasticache_cluster.nodes) == 7
    removers = [threading.Thread(target=elasticache_cluster.remove_node) for _ in range(4)]
    for thread in removers:
        thread.start()
    for thread in removers:
        thread.join(TIMEOUT * 4)
    assert elasticache_cluster.version == 9
    assert len(elasticache_cluster.nodes) == 3


def test_a_stopped_cluster_refuses_changes_and_restarts_with_a_higher_version() -> None:
    cluster = LocalCluster(nodes=1)
    with pytest.raises(RuntimeError, match="not been started"):
        _ = cluster.configuration_endpoint
    with cluster:
        endpoint = cluster.configuration_endpoint
    with pytest.raises(RuntimeError, match="not running"):
        cluster.add_node()
    assert cluster.nodes == []
    assert _refuses(endpoint)
    with cluster:
        assert cluster.version == 2
        assert cluster.configuration_endpoint == endpoint
        assert _ask(endpoint, CONFIG_GET) == config_frame(_body(2, _ports(cluster)))


def test_endpoint_answers_on_ipv6_loopback_too(elasticache_cluster: LocalCluster) -> None:
    try:
        conn = socket.create_connection(("::1", elasticache_cluster.endpoint.port), timeout=TIMEOUT)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with conn, conn.makefile("rb") as reader:
        conn.sendall(CONFIG_GET)
        assert _read_reply(reader) == config_frame(_body(1, _ports(elasticache_cluster)))
    elasticache_cluster.stop_endpoint()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("::1", elasticache_cluster.endpoint.port), timeout=TIMEOUT)


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize("request_line", [CONFIG_GET, LEGACY_GET])
@pytest.mark.parametrize(
    ("fault", "reply"), [("garbage", b"\x00\xff\xfeHELLO\r\n"), ("error", b"ERROR\r\n")]
)
def test_replying_faults_keep_the_connection_open(
    elasticache_cluster: LocalCluster, fault: Any, reply: bytes, request_line: bytes
) -> None:
    elasticache_cluster.set_fault(fault)
    assert elasticache_cluster.fault == fault
    with _connect(elasticache_cluster.configuration_endpoint) as conn:
        conn.sendall(request_line)
        assert conn.recv(4096) == reply  # both are shorter than one segment
        elasticache_cluster.set_fault(None)  # applies from the next request on
        with conn.makefile("rb") as reader:
            conn.sendall(CONFIG_GET)
            assert _read_reply(reader) == config_frame(_body(1, _ports(elasticache_cluster)))


@pytest.mark.parametrize("request_line", [CONFIG_GET, LEGACY_GET])
def test_close_fault_closes_without_answering(
    elasticache_cluster: LocalCluster, request_line: bytes
) -> None:
    elasticache_cluster.set_fault("close")
    with _connect(elasticache_cluster.configuration_endpoint) as conn:
        conn.sendall(request_line)
        assert _read_until_closed(conn) == b""


@pytest.mark.parametrize(
    ("request_line", "prefix"),
    [(CONFIG_GET, b"CONFIG cluster"), (LEGACY_GET, b"VALUE AmazonElastiCache:cluster")],
)
def test_truncated_fault_sends_half_the_body_then_closes(
    elasticache_cluster: LocalCluster, request_line: bytes, prefix: bytes
) -> None:
    elasticache_cluster.set_fault("truncated")
    body = _body(1, _ports(elasticache_cluster))
    with _connect(elasticache_cluster.configuration_endpoint) as conn:
        conn.sendall(request_line)
        data = _read_until_closed(conn)
    assert data == prefix + b" 0 %d\r\n" % len(body) + body[: len(body) // 2]


@pytest.mark.parametrize(
    ("request_line", "frame"), [(CONFIG_GET, config_frame), (LEGACY_GET, legacy_frame)]
)
def test_no_nodes_fault_sends_a_valid_frame_with_no_member(
    elasticache_cluster: LocalCluster, request_line: bytes, frame: Any
) -> None:
    elasticache_cluster.add_node()
    elasticache_cluster.set_fault("no-nodes")
    reply = _ask(elasticache_cluster.configuration_endpoint, request_line)
    assert reply == frame(b"2\n\n")
    assert elasticache_cluster.version == 2
    assert len(elasticache_cluster.nodes) == 4  # only the answer is empty


def _connection_threads() -> set[threading.Thread]:
    """The live threads serving the configuration endpoint's connections."""
    return {thread for thread in threading.enumerate() if thread.name == "config-endpoint-conn"}


def _new_connection_thread(before: set[threading.Thread]) -> threading.Thread:
    """The one connection thread not in ``before``, once the endpoint has started it (it accepts
    on a thread of its own); fails after :data:`TIMEOUT`."""
    deadline = time.monotonic() + TIMEOUT
    while not (new := _connection_threads() - before):
        assert time.monotonic() < deadline, "the endpoint started no thread for the connection"
        time.sleep(0.005)  # polling interval
    [thread] = new
    return thread


@pytest.mark.timeout(60)  # only a guard against a hang; nothing here is timed
def test_hang_fault_never_answers_and_does_not_block_shutdown(
    elasticache_cluster: LocalCluster,
) -> None:
    elasticache_cluster.set_fault("hang")
    others = _connection_threads()
    with _connect(elasticache_cluster.configuration_endpoint, timeout=0.3) as conn:
        conn.sendall(CONFIG_GET)
        with pytest.raises(TimeoutError):
            conn.recv(4096)
        elasticache_cluster.set_fault(None)  # a hung connection stays hung
        conn.sendall(CONFIG_GET)
        with pytest.raises(TimeoutError):
            conn.recv(4096)
        [hung] = _connection_threads() - others
        elasticache_cluster.stop()
        # stop() ended the hung connection's thread rather than giving up waiting for it.
        assert not hung.is_alive()
        conn.settimeout(TIMEOUT)
        assert _read_until_closed(conn) == b""  # stop() closed the hung connection


def test_unknown_fault_is_rejected(elasticache_cluster: LocalCluster) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        elasticache_cluster.set_fault("slow")  # type: ignore[arg-type]
    assert set(FAULTS) == {"garbage", "error", "close", "hang", "truncated", "no-nodes"}


def test_discovery_requests_counts_every_discovery_request(
    elasticache_cluster: LocalCluster,
) -> None:
    endpoint = elasticache_cluster.configuration_endpoint
    _ask(endpoint, b"stats\r\n")
    assert elasticache_cluster.discovery_requests == 0
    _ask(endpoint, CONFIG_GET)
    _ask(endpoint, LEGACY_GET)
    elasticache_cluster.set_fault("close")
    with _connect(endpoint) as conn:
        conn.sendall(CONFIG_GET)
        _read_until_closed(conn)
    assert elasticache_cluster.discovery_requests == 3


# -- endpoint down / up -----------------------------------------------------------------------


def test_endpoint_stops_and_starts_again_on_the_same_port(
    elasticache_cluster: LocalCluster,
) -> None:
    endpoint = elasticache_cluster.configuration_endpoint
    body = _body(1, _ports(elasticache_cluster))
    with _connect(endpoint) as held:
        held.sendall(CONFIG_GET)
        with held.makefile("rb") as reader:
            assert _read_reply(reader) == config_frame(body)
        elasticache_cluster.stop_endpoint()
        assert not elasticache_cluster.endpoint_running
        assert _read_until_closed(held) == b""  # open connections are closed too
    assert _refuses(endpoint)
    assert _memcached_roundtrip(elasticache_cluster.addresses[0]).startswith(b"STORED")
    elasticache_cluster.start_endpoint()
    assert elasticache_cluster.endpoint_running
    assert elasticache_cluster.configuration_endpoint == endpoint
    assert _ask(endpoint, CONFIG_GET) == config_frame(body)


# -- control protocol -------------------------------------------------------------------------


def test_control_commands(elasticache_cluster: LocalCluster) -> None:
    cluster = elasticache_cluster
    assert execute(cluster, "help")[-1] == "OK"
    added = execute(cluster, "add")
    assert added == [f"added {cluster.addresses[-1]}", "version 2", "OK"]
    assert execute(cluster, "FAULT error") == ["fault error", "OK"]
    assert execute(cluster, "status") == [
        "version 2",
        f"endpoint {cluster.configuration_endpoint} up",
        "mode config",
        "tls off",
        "fault error",
        "discovery_requests 0",
        "nodes " + " ".join(cluster.addresses),
        *(f"node {address} up" for address in cluster.addresses),
        "OK",
    ]
    assert execute(cluster, "fault none") == ["fault none", "OK"]
    assert cluster.fault is None
    removed = cluster.addresses[0]
    assert execute(cluster, f"remove {removed}") == [f"removed {removed}", "version 3", "OK"]
    assert execute(cluster, "endpoint stop") == ["endpoint down", "OK"]
    assert execute(cluster, "endpoint start") == ["endpoint up", "OK"]
    assert execute(cluster, "remove 127.0.0.1:1") == ["ERROR no node 127.0.0.1:1"]
    assert execute(cluster, "fault slow")[0].startswith("ERROR unknown fault 'slow'")
    assert execute(cluster, "remove a b") == ["ERROR usage: remove [host:port]"]
    assert execute(cluster, "endpoint") == ["ERROR usage: endpoint stop|start"]
    assert execute(cluster, "frob") == ["ERROR unknown command 'frob' (try help)"]


# -- CLI --------------------------------------------------------------------------------------


class _Cli:
    """``python -m django_elasticache_rs.local`` as a subprocess."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django_elasticache_rs.local", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
        self._pending = b""

    def readline(self, timeout: float = TIMEOUT * 2) -> str:
        """The next line of stdout (read unbuffered, so that select() sees what is pending)."""
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            ready, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "the CLI printed no whole line in time"
            chunk = os.read(stdout.fileno(), 4096)
            assert chunk, "the CLI closed its stdout"
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode() + "\n"

    def finish(self, timeout: float = TIMEOUT * 2) -> tuple[int, str]:
        """Waits for the exit; returns the exit status and stderr."""
        _, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, stderr.decode()

    def stop(self) -> None:
        """Ends the CLI if a test left it running: SIGTERM, then SIGKILL if it does not exit in
        time, and then its memcached processes, which a SIGKILL leaves behind."""
        if self.process.poll() is not None:
            return
        children = _memcached_children(self.process.pid)
        self.process.terminate()
        try:
            self.process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cli_factory() -> Iterator[type[_Cli]]:
    started: list[_Cli] = []

    class Tracked(_Cli):
        def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
            super().__init__(*args, env=env)
            started.append(self)

    yield Tracked
    for cli in started:
        cli.stop()


def _control(address: str, *commands: str) -> list[list[str]]:
    """Sends each command over one connection; returns each reply's lines."""
    replies = []
    with _connect(address) as conn, conn.makefile("rwb") as stream:
        for command in commands:
            stream.write(command.encode() + b"\n")
            stream.flush()
            reply: list[str] = []
            while not reply or not (reply[-1] == "OK" or reply[-1].startswith("ERROR")):
                line = stream.readline()
                assert line, "the control connection closed"
                reply.append(line.decode().rstrip("\n"))
            replies.append(reply)
    return replies


PGREP = shutil.which("pgrep")
needs_pgrep = pytest.mark.skipif(PGREP is None, reason="pgrep is not installed")


def _memcached_children(pid: int) -> set[int]:
    """The memcached processes whose parent is ``pid`` (none known without pgrep)."""
    if PGREP is None:
        return set()
    found = subprocess.run(
        [PGREP, "-P", str(pid), "-x", "memcached"], capture_output=True, text=True, check=False
    )
    return {int(pid) for pid in found.stdout.split()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_pgrep
def test_cli_json_control_and_clean_sigterm(cli_factory: type[_Cli]) -> None:
    cli = cli_factory("--nodes", "2", "--json")
    summary = json.loads(cli.readline())
    endpoint = summary["configuration_endpoint"]
    assert summary["CACHES"] == {
        "default": {"BACKEND": BACKEND, "LOCATION": endpoint, "OPTIONS": {"discovery_interval": 5}}
    }
    assert summary["version"] == 1 and len(summary["nodes"]) == 2
    assert summary["pid"] == cli.process.pid
    add, status = _control(summary["control"], "add", "status")
    assert add[1:] == ["version 2", "OK"]
    new_node = add[0].removeprefix("added ")
    assert f"nodes {' '.join([*summary['nodes'], new_node])}" in status
    assert "version 2" in status and "fault none" in status
    assert _memcached_roundtrip(new_node).startswith(b"STORED")
    ports = [int(address.rsplit(":", 1)[1]) for address in [*summary["nodes"], new_node]]
    members = b" ".join(b"localhost|127.0.0.1|%d" % port for port in ports)
    assert _ask(endpoint, CONFIG_GET) == config_frame(b"2\n" + members + b"\n")
    children = _memcached_children(cli.process.pid)
    assert len(children) == 3
    cli.process.send_signal(signal.SIGTERM)
    status_code, stderr = cli.finish()
    assert status_code == 0, stderr
    assert not [pid for pid in children if _alive(pid)]
    assert _refuses(endpoint)


def _printed(text: str, label: str) -> str:
    """The address printed after ``label`` at the start of a line."""
    found = re.search(rf"^  {label} +(127\.0\.0\.1:\d+)$", text, re.MULTILINE)
    assert found, f"no {label} in {text!r}"
    return found.group(1)


@needs_pgrep
def test_cli_prints_human_readable_settings_and_stops_on_sigint(cli_factory: type[_Cli]) -> None:
    cli = cli_factory("--nodes", "1", "--legacy", "--discovery-interval", "2.5")
    lines = []
    while not (line := cli.readline()).startswith("Ctrl-C"):
        lines.append(line)
    text = "".join(lines)
    assert "legacy mode" in text
    endpoint = _printed(text, "configuration endpoint")
    control = _printed(text, "control")
    assert f'"LOCATION": "{endpoint}"' in text and '"discovery_interval": 2.5' in text
    assert _ask(endpoint, CONFIG_GET) == b"ERROR\r\n"
    assert _ask(endpoint, LEGACY_GET).startswith(b"VALUE AmazonElastiCache:cluster 0 ")
    [status] = _control(control, "status")
    assert "mode legacy" in status and "discovery_requests 2" in status
    children = _memcached_children(cli.process.pid)
    cli.process.send_signal(signal.SIGINT)
    assert cli.finish()[0] == 0
    assert not [pid for pid in children if _alive(pid)]


def _ctl(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m django_elasticache_rs.local ctl ...``, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "django_elasticache_rs.local", "ctl", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 6,
        check=False,
    )


def test_ctl_client_drives_a_running_cluster_without_nc(cli_factory: type[_Cli]) -> None:
    cli = cli_factory("--nodes", "1", "--json")
    summary = json.loads(cli.readline())
    port = summary["control"].rsplit(":", 1)[1]
    added = _ctl(port, "add")
    assert added.returncode == 0, added.stderr
    new_node, version = added.stdout.splitlines()
    assert new_node.startswith("added 127.0.0.1:") and version == "version 2"
    new_node = new_node.removeprefix("added ")
    assert _memcached_roundtrip(new_node).startswith(b"STORED")
    status = _ctl(summary["control"], "status")  # host:port works as well as a port
    assert status.returncode == 0, status.stderr
    assert f"nodes {summary['nodes'][0]} {new_node}" in status.stdout.splitlines()
    assert "OK" not in status.stdout.splitlines()
    # Several words make one command; an ERROR reply is the exit status 1 and its reason.
    assert _ctl(port, "fault", "garbage").stdout == "fault garbage\n"
    refused = _ctl(port, "remove", "127.0.0.1:1")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == "error: no node 127.0.0.1:1\n"
    cli.process.send_signal(signal.SIGTERM)
    assert cli.finish()[0] == 0
    gone = _ctl(port, "status")
    assert gone.returncode == 1 and gone.stderr.startswith(f"error: control port {port}: ")


def test_ctl_client_refuses_a_bad_address_or_no_command() -> None:
    for args in (("notaport", "status"), ("70000", "status"), ("1234",)):
        done = _ctl(*args)
        assert done.returncode == 2 and "usage:" in done.stderr, args


def test_cli_without_memcached_says_how_to_install_it(
    cli_factory: type[_Cli], tmp_path: Path
) -> None:
    cli = cli_factory(env={**os.environ, "PATH": str(tmp_path)})
    status_code, stderr = cli.finish()
    assert status_code == 1
    assert "memcached is not installed" in stderr and "apt-get install memcached" in stderr


def test_cli_with_a_busy_port_fails_cleanly(cli_factory: type[_Cli]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        cli = cli_factory("--nodes", "1", "--port", str(busy.getsockname()[1]))
        status_code, stderr = cli.finish()
    assert status_code == 1
    assert stderr.startswith("error: ") and "in use" in stderr


# -- pytest plugin ----------------------------------------------------------------------------


def test_elasticache_cluster_fixture_is_a_running_three_node_cluster(
    elasticache_cluster: LocalCluster,
) -> None:
    assert len(elasticache_cluster.nodes) == 3
    assert elasticache_cluster.endpoint_running
    for address in elasticache_cluster.addresses:
        assert _memcached_roundtrip(address).startswith(b"STORED")


def test_factory_starts_independent_clusters(elasticache_cluster_factory: ClusterFactory) -> None:
    one = elasticache_cluster_factory(nodes=1)
    two = elasticache_cluster_factory(nodes=2, legacy=True)
    assert (len(one.nodes), one.legacy) == (1, False)
    assert (len(two.nodes), two.legacy) == (2, True)
    assert one.configuration_endpoint != two.configuration_endpoint


INNER_TEST = """
import os

def test_cluster(elasticache_cluster):
    assert len(elasticache_cluster.nodes) == 3
    _record(elasticache_cluster)

def test_factory(elasticache_cluster_factory):
    cluster = elasticache_cluster_factory(nodes=1, legacy=True)
    assert cluster.legacy
    _record(cluster)

def _record(cluster):
    with open(os.environ["PIDS_FILE"], "a") as pids:
        pids.writelines(f"{node.pid}\\n" for node in cluster.nodes)
"""
PLUGIN = "django_elasticache_rs.pytest_plugin"
# The entry point is named after the module: a conftest listing the module in pytest_plugins
# then finds it registered already, instead of registering it twice (which pytest rejects).
ENTRY_POINTS = f"[pytest11]\n{PLUGIN} = {PLUGIN}\n"
CONFTEST_PLUGINS = f"pytest_plugins = [{PLUGIN!r}]\n"
CONFTEST_IMPORT = (
    "from django_elasticache_rs.pytest_plugin import (  # noqa: F401\n"
    "    elasticache_cluster, elasticache_cluster_factory,\n)\n"
)


def _run_pytest(project: Path, site: Path, env: dict[str, str], *options: str) -> str:
    """Runs a fresh pytest session in ``project`` with ``site`` on the path; returns its output
    after checking it passed."""
    env = {k: v for k, v in env.items() if not k.startswith(("PYTEST_", "DJANGO_"))}
    env["PYTHONPATH"] = str(site)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:django"]
    result = subprocess.run(
        [*command, *options],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


def _inner_project(tmp_path: Path, *, entry_point: bool, conftest: str) -> tuple[Path, Path]:
    """A project with two tests using the fixtures, and (if ``entry_point``) a site directory
    holding a distribution that registers the plugin as the package's pyproject.toml would."""
    site = tmp_path / "site"
    if entry_point:
        dist_info = site / "elasticache_plugin_probe-0.dist-info"
        dist_info.mkdir(parents=True)
        (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: probe\nVersion: 0\n")
        (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "conftest.py").write_text(conftest)
    (project / "test_inner.py").write_text(INNER_TEST)
    return project, site


@pytest.mark.parametrize(
    ("entry_point", "conftest", "options"),
    [
        pytest.param(True, "", [], id="entry-point"),
        pytest.param(True, CONFTEST_IMPORT, [], id="entry-point-and-conftest-import"),
        pytest.param(True, CONFTEST_PLUGINS, [], id="entry-point-and-pytest_plugins"),
        pytest.param(False, CONFTEST_IMPORT, [], id="conftest-import"),
        pytest.param(False, CONFTEST_PLUGINS, [], id="pytest_plugins"),
        pytest.param(False, "", ["-p", PLUGIN], id="-p"),
    ],
)
def test_plugin_in_a_fresh_pytest_session(
    tmp_path: Path, entry_point: bool, conftest: str, options: list[str]
) -> None:
    project, site = _inner_project(tmp_path, entry_point=entry_point, conftest=conftest)
    pids_file = tmp_path / "pids"
    output = _run_pytest(project, site, {**os.environ, "PIDS_FILE": str(pids_file)}, *options)
    assert output.startswith("exit 0\n") and "2 passed" in output, output
    pids = [int(line) for line in pids_file.read_text().split()]
    assert len(pids) == 4
    assert not [pid for pid in pids if _alive(pid)]  # every cluster was stopped after its test


def test_plugin_entry_point_can_be_disabled(tmp_path: Path) -> None:
    project, site = _inner_project(tmp_path, entry_point=True, conftest="")
    output = _run_pytest(project, site, dict(os.environ), "-p", f"no:{PLUGIN}")
    assert "fixture 'elasticache_cluster' not found" in output, output


def _states(control: str) -> dict[str, str]:
    """Each node's liveness, as ``ctl status`` prints it."""
    status = _ctl(control, "status")
    assert status.returncode == 0, status.stderr
    return {
        parts[1]: parts[2]
        for parts in (line.split() for line in status.stdout.splitlines())
        if parts[0] == "node"
    }


def _answers(address: str) -> bool:
    """Whether the node answers a request within a second."""
    try:
        with _connect(address, timeout=1.0) as conn, conn.makefile("rb") as reader:
            conn.sendall(b"version\r\n")
            return reader.readline().startswith(b"VERSION ")
    except OSError:
        return False


def test_ctl_fault_drills_kill_freeze_thaw_restart(cli_factory: type[_Cli]) -> None:
    cli = cli_factory("--nodes", "2", "--json")
    summary = json.loads(cli.readline())
    control = summary["control"].rsplit(":", 1)[1]
    victim, other = summary["nodes"]
    assert _states(control) == {victim: "up", other: "up"}
    assert _memcached_roundtrip(victim).startswith(b"STORED")

    frozen = _ctl(control, "freeze", victim)
    assert (frozen.returncode, frozen.stdout) == (0, f"frozen {victim}\n")
    assert _states(control) == {victim: "frozen", other: "up"}
    assert not _answers(victim) and not _refuses(victim)  # accepts, answers nothing
    assert _ctl(control, "thaw", victim).stdout == f"thawed {victim}\n"
    assert _answers(victim)

    assert _ctl(control, "kill", victim).stdout == f"killed {victim}\n"
    assert _states(control) == {victim: "killed", other: "up"}
    assert _refuses(victim)
    # Still a member, as a failed ElastiCache node is.
    assert f"nodes {victim} {other}" in _ctl(control, "status").stdout

    assert _ctl(control, "restart", victim).stdout == f"restarted {victim}\n"
    assert _states(control) == {victim: "up", other: "up"}
    # A new process on the same port: empty.
    with _connect(victim) as conn, conn.makefile("rb") as reader:
        conn.sendall(b"get k\r\n")
        assert reader.readline() == b"END\r\n"

    wrong = _ctl(control, "kill")
    assert wrong.returncode == 1 and "usage: kill <host:port>" in wrong.stderr
    unknown = _ctl(control, "freeze", "127.0.0.1:1")
    assert unknown.returncode == 1 and "no node 127.0.0.1:1" in unknown.stderr


def test_a_given_port_keeps_the_location_across_restarts(cli_factory: type[_Cli]) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    for _ in range(2):
        cli = cli_factory("--nodes", "1", "--port", str(port), "--json")
        summary = json.loads(cli.readline())
        assert summary["configuration_endpoint"].endswith(f":{port}")
        assert summary["CACHES"]["default"]["LOCATION"] == summary["configuration_endpoint"]
        cli.process.send_signal(signal.SIGTERM)
        assert cli.finish()[0] == 0
