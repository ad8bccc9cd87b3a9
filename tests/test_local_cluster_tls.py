"""The local cluster's TLS mode (like ElastiCache in-transit encryption), checked with Python's
``ssl`` module as the client: the certificates and their test variants, memcached nodes serving
TLS only (with and without client certificates), the configuration endpoint over TLS with every
fault, the cluster's settings, the CLI's ``--tls``, and clean-up."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from django_elasticache_rs.local import (
    BACKEND,
    Certificates,
    ConfigEndpoint,
    CryptographyNotInstalled,
    LocalCluster,
    LocalNode,
    config_frame,
    legacy_frame,
    make_certificates,
)
from django_elasticache_rs.local.control import execute
from django_elasticache_rs.local.endpoint import ClusterConfig
from django_elasticache_rs.pytest_plugin import ClusterFactory
from tests import test_local_cluster as plain_tests
from tests.test_local_cluster import (
    TIMEOUT,
    _alive,
    _body,
    _Cli,
    _connection_threads,
    _control,
    _memcached_children,
    _new_connection_thread,
    _ports,
    _read_reply,
    _read_until_closed,
    needs_pgrep,
)

x509 = pytest.importorskip("cryptography.x509")

CONFIG_GET = b"config get cluster\r\n"
LEGACY_GET = b"get AmazonElastiCache:cluster\r\n"

cli_factory = plain_tests.cli_factory  # the CLI fixture: subprocesses stopped after the test


# -- helpers ----------------------------------------------------------------------------------


def _tls_connect(
    port: int,
    context: ssl.SSLContext,
    *,
    hostname: str = "localhost",
    timeout: float = TIMEOUT,
) -> ssl.SSLSocket:
    """A TLS connection to ``127.0.0.1:<port>`` verified against ``hostname`` (handshake done)."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return context.wrap_socket(conn, server_hostname=hostname)
    except BaseException:
        conn.close()
        raise


def _tls_ask(port: int, context: ssl.SSLContext, request: bytes) -> bytes:
    """Sends ``request`` over a new TLS connection; returns the one reply."""
    with _tls_connect(port, context) as conn, conn.makefile("rb") as reader:
        conn.sendall(request)
        return _read_reply(reader)


def _plaintext_reply(port: int, request: bytes) -> bytes:
    """What a plaintext client gets for ``request``: the bytes received until the server closed
    or reset the connection (a server that keeps it open fails the test with a timeout)."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as conn:
        conn.sendall(request)
        try:
            while chunk := conn.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def _version_reply(port: int, context: ssl.SSLContext) -> bytes:
    """The reply to ``version`` over TLS."""
    with _tls_connect(port, context) as conn:
        conn.sendall(b"version\r\n")
        return conn.recv(4096)


def _assert_refused_without_client_cert(port: int, context: ssl.SSLContext) -> None:
    """Asserts the node refuses a TLS client presenting no certificate. In TLS 1.3 the client's
    handshake completes first; the server then sends its ``certificate_required`` alert and
    closes, and OpenSSL reports the alert, or only the close (``SSLEOFError``) or a reset when
    the close overtakes it: never a reply."""
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as refused:
        _version_reply(port, context)
    error = refused.value
    if isinstance(error, ssl.SSLError) and not isinstance(error, ssl.SSLEOFError):
        assert error.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED", error


def _trusting(certificates: Certificates) -> ssl.SSLContext:
    """A client context trusting only ``certificates``' CA, no client certificate."""
    return certificates.client_context()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A good set, shared by the module's tests."""
    return make_certificates(tmp_path_factory.mktemp("good"))


@pytest.fixture
def tls_cluster(elasticache_cluster_factory: ClusterFactory) -> LocalCluster:
    """A running 2-node cluster in TLS mode."""
    return elasticache_cluster_factory(nodes=2, tls=True)


@pytest.fixture
def tls_endpoint() -> Iterator[Callable[[Certificates], ConfigEndpoint]]:
    """Starts configuration endpoints serving TLS with the given certificates."""
    started: list[ConfigEndpoint] = []

    def start(certificates: Certificates) -> ConfigEndpoint:
        endpoint = ConfigEndpoint(
            config=ClusterConfig(1, (("localhost", "127.0.0.1", 11211),)),
            tls=certificates.server_context(),
        )
        started.append(endpoint)
        endpoint.start()
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


# -- certificates -----------------------------------------------------------------------------


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certificates_are_a_ca_a_localhost_server_and_a_client(certs: Certificates) -> None:
    ca = _load(certs.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    server = _load(certs.server_cert)
    assert server.issuer == ca.subject
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(names) == [x509.DNSName("localhost")]  # a hostname only: no IP address
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    client = _load(certs.client_cert)
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert certs.server_hostname == "localhost" and not certs.expired


def test_private_keys_are_readable_by_their_owner_only(certs: Certificates) -> None:
    for key in (certs.ca_key, certs.server_key, certs.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for cert in (certs.ca_cert, certs.server_cert, certs.client_cert):
        assert stat.S_IMODE(cert.stat().st_mode) == 0o644


def test_variants_differ_in_one_respect_only(certs: Certificates, tmp_path: Path) -> None:
    expired = make_certificates(tmp_path / "expired", ca=certs, expired=True)
    assert expired.ca_cert.read_bytes() == certs.ca_cert.read_bytes()
    assert (
        _load(expired.server_cert).not_valid_after_utc < _load(certs.ca_cert).not_valid_before_utc
    )
    other = make_certificates(tmp_path / "other")
    assert _load(other.ca_cert).public_key() != _load(certs.ca_cert).public_key()
    misnamed = make_certificates(tmp_path / "misnamed", ca=certs, hostnames=("other.example",))
    assert misnamed.server_hostname == "other.example"


@pytest.mark.parametrize(
    ("hostnames", "reason"),
    [
        ((), "needs at least one hostname"),
        (("127.0.0.1",), "'127.0.0.1' is an IP address"),
        (("::1",), "'::1' is an IP address"),
        (("",), "not a hostname: ''"),
        (("a b",), "not a hostname: 'a b'"),
    ],
)
def test_certificates_name_hostnames_only(
    tmp_path: Path, hostnames: tuple[str, ...], reason: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        make_certificates(tmp_path, hostnames=hostnames)


def test_without_cryptography_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)  # makes the import fail
    with pytest.raises(CryptographyNotInstalled, match=r"pip install cryptography") as caught:
        make_certificates(tmp_path)
    assert "django-elasticache-rs[local-tls]" in str(caught.value)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    cluster = LocalCluster(nodes=1, tls=True)
    with pytest.raises(CryptographyNotInstalled):
        cluster.start()
    assert cluster.nodes == [] and not cluster.endpoint_running
    assert list(temporary.iterdir()) == []  # the certificate directory was removed


# -- variants fail verification in Python's ssl -------------------------------------------------


def test_a_good_certificate_verifies(
    certs: Certificates, tls_endpoint: Callable[[Certificates], ConfigEndpoint]
) -> None:
    endpoint = tls_endpoint(certs)
    reply = _tls_ask(endpoint.port, _trusting(certs), CONFIG_GET)
    assert reply == config_frame(b"1\nlocalhost|127.0.0.1|11211\n")


def test_a_certificate_from_another_ca_fails_verification(
    certs: Certificates,
    tls_endpoint: Callable[[Certificates], ConfigEndpoint],
    tmp_path: Path,
) -> None:
    endpoint = tls_endpoint(make_certificates(tmp_path / "other"))
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _tls_connect(endpoint.port, _trusting(certs))


def test_an_expired_certificate_fails_verification(
    certs: Certificates,
    tls_endpoint: Callable[[Certificates], ConfigEndpoint],
    tmp_path: Path,
) -> None:
    endpoint = tls_endpoint(make_certificates(tmp_path / "expired", ca=certs, expired=True))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        _tls_connect(endpoint.port, _trusting(certs))


def test_a_certificate_for_another_hostname_fails_verification(
    certs: Certificates,
    tls_endpoint: Callable[[Certificates], ConfigEndpoint],
    tmp_path: Path,
) -> None:
    misnamed = make_certificates(tmp_path / "misnamed", ca=certs, hostnames=("other.example",))
    endpoint = tls_endpoint(misnamed)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _tls_connect(endpoint.port, _trusting(certs))
    _tls_connect(endpoint.port, _trusting(certs), hostname="other.example").close()


def test_the_certificate_does_not_name_the_ip_address(
    certs: Certificates, tls_endpoint: Callable[[Certificates], ConfigEndpoint]
) -> None:
    endpoint = tls_endpoint(certs)
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        _tls_connect(endpoint.port, _trusting(certs), hostname="127.0.0.1")


# -- nodes ------------------------------------------------------------------------------------


def test_a_tls_node_answers_over_tls_verified_against_localhost(certs: Certificates) -> None:
    with LocalNode(tls=certs) as node:
        assert node.tls_args() == [
            "-Z",
            "-o",
            f"ssl_chain_cert={certs.server_cert},ssl_key={certs.server_key}",
        ]
        assert _version_reply(node.port, _trusting(certs)).startswith(b"VERSION ")


def test_a_tls_node_refuses_plaintext(certs: Certificates) -> None:
    with LocalNode(tls=certs) as node:
        assert _plaintext_reply(node.port, b"version\r\n") == b""
        assert node.stats()["pid"] == str(node.pid)  # still serving TLS clients


def test_a_node_requiring_client_certs_refuses_a_client_without_one(
    certs: Certificates,
) -> None:
    with LocalNode(tls=certs, require_client_cert=True) as node:
        assert node.tls_args()[-1].endswith(f",ssl_ca_cert={certs.ca_cert},ssl_verify_mode=2")
        _assert_refused_without_client_cert(node.port, _trusting(certs))
        accepted = _version_reply(node.port, certs.client_context(client_cert=True))
        assert accepted.startswith(b"VERSION ")


def test_node_helpers_speak_tls(certs: Certificates) -> None:
    with LocalNode(tls=certs, require_client_cert=True) as node:
        with _tls_connect(node.port, certs.client_context(client_cert=True)) as conn:
            conn.sendall(b"set k 0 0 2\r\nhi\r\n")
            assert conn.recv(64) == b"STORED\r\n"
        assert node.has_key("k")
        assert int(node.stats()["curr_connections"]) >= 1
        node.flush_all()
        assert not node.has_key("k")


def test_a_node_whose_certificate_does_not_verify_fails_to_start(
    certs: Certificates, tmp_path: Path
) -> None:
    expired = make_certificates(tmp_path, ca=certs, expired=True)
    node = LocalNode(tls=expired)
    with pytest.raises(RuntimeError, match="certificate has expired"):
        node.start(timeout=TIMEOUT)
    assert node.pid is None


def test_require_client_cert_needs_tls() -> None:
    with pytest.raises(ValueError, match="needs tls"):
        LocalNode(require_client_cert=True)
    with pytest.raises(ValueError, match="needs tls"):
        LocalCluster(require_client_cert=True)


# -- the cluster ------------------------------------------------------------------------------


def test_the_endpoint_answers_discovery_over_tls(tls_cluster: LocalCluster) -> None:
    context = tls_cluster.ssl_context()
    body = _body(1, _ports(tls_cluster))
    port = tls_cluster.endpoint.port
    assert tls_cluster.endpoint.tls
    with _tls_connect(port, context) as conn, conn.makefile("rb") as reader:
        conn.sendall(CONFIG_GET + LEGACY_GET)
        assert _read_reply(reader) == config_frame(body)
        assert _read_reply(reader) == legacy_frame(body)
    assert _plaintext_reply(port, CONFIG_GET) == b""
    for node in tls_cluster.nodes:  # clients connect to 127.0.0.1 and verify "localhost"
        assert _tls_ask(node.port, context, b"version\r\n").startswith(b"VERSION ")


def test_caches_setting_names_localhost_and_trusts_the_ca(tls_cluster: LocalCluster) -> None:
    ca = str(tls_cluster.certificates.ca_cert)
    location = f"localhost:{tls_cluster.endpoint.port}"
    assert tls_cluster.configuration_endpoint == location
    assert tls_cluster.caches_setting(discovery_interval=1) == {
        "default": {
            "BACKEND": BACKEND,
            "LOCATION": location,
            "OPTIONS": {"tls_ca_file": ca, "discovery_interval": 1},
        }
    }
    overridden = tls_cluster.caches_setting(tls_ca_file="/mine.pem")["default"]["OPTIONS"]
    assert overridden == {"tls_ca_file": "/mine.pem"}  # the caller's options win
    static = tls_cluster.static_caches_setting()["default"]
    assert static["LOCATION"] == [f"localhost:{port}" for port in _ports(tls_cluster)]
    assert static["OPTIONS"] == {"tls_ca_file": ca}


def test_require_client_cert_cluster(elasticache_cluster_factory: ClusterFactory) -> None:
    cluster = elasticache_cluster_factory(nodes=1, tls=True, require_client_cert=True)
    certificates = cluster.certificates
    assert cluster.caches_setting()["default"]["OPTIONS"] == {
        "tls_ca_file": str(certificates.ca_cert),
        "tls_cert_file": str(certificates.client_cert),
        "tls_key_file": str(certificates.client_key),
    }
    port = cluster.nodes[0].port
    _assert_refused_without_client_cert(port, _trusting(certificates))
    assert _tls_ask(port, cluster.ssl_context(), b"version\r\n").startswith(b"VERSION ")
    # The endpoint does not ask for a client certificate (ElastiCache's does not either).
    assert _tls_ask(cluster.endpoint.port, _trusting(certificates), CONFIG_GET).startswith(
        b"CONFIG cluster 0 "
    )


def test_added_nodes_serve_tls_and_status_says_tls_on(tls_cluster: LocalCluster) -> None:
    node = tls_cluster.add_node()
    assert _tls_ask(node.port, tls_cluster.ssl_context(), b"version\r\n").startswith(b"VERSION ")
    assert _plaintext_reply(node.port, b"version\r\n") == b""
    assert "tls on" in execute(tls_cluster, "status")
    reply = _tls_ask(tls_cluster.endpoint.port, tls_cluster.ssl_context(), CONFIG_GET)
    assert reply == config_frame(_body(2, _ports(tls_cluster)))


def test_a_plain_cluster_has_no_certificates(elasticache_cluster: LocalCluster) -> None:
    assert not elasticache_cluster.tls and elasticache_cluster.tls_options() == {}
    with pytest.raises(RuntimeError, match="not in TLS mode"):
        _ = elasticache_cluster.certificates
    with pytest.raises(RuntimeError, match="not in TLS mode"):
        elasticache_cluster.ssl_context()


def test_stop_removes_the_certificates_and_the_processes() -> None:
    cluster = LocalCluster(nodes=2, tls=True)
    with cluster:
        directory = cluster.certificates.directory
        pids = [node.pid for node in cluster.nodes]
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert cluster.certificates.ca_cert.exists()
    assert not directory.exists()
    assert not [pid for pid in pids if pid is not None and _alive(pid)]
    with pytest.raises(RuntimeError, match="not running"):
        _ = cluster.certificates
    with cluster:  # a restart makes new certificates
        assert cluster.certificates.directory != directory
        assert _tls_ask(cluster.endpoint.port, cluster.ssl_context(), CONFIG_GET).startswith(
            b"CONFIG cluster 0 "
        )
    assert not cluster.endpoint_running


# -- the endpoint's faults over TLS -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reply"), [("garbage", b"\x00\xff\xfeHELLO\r\n"), ("error", b"ERROR\r\n")]
)
def test_replying_faults_over_tls(tls_cluster: LocalCluster, fault: str, reply: bytes) -> None:
    tls_cluster.set_fault(fault)  # type: ignore[arg-type]
    with _tls_connect(tls_cluster.endpoint.port, tls_cluster.ssl_context()) as conn:
        conn.sendall(CONFIG_GET)
        assert conn.recv(4096) == reply
        tls_cluster.set_fault(None)
        with conn.makefile("rb") as reader:
            conn.sendall(CONFIG_GET)
            assert _read_reply(reader) == config_frame(_body(1, _ports(tls_cluster)))


@pytest.mark.parametrize(("fault", "sent"), [("close", "nothing"), ("truncated", "half")])
def test_closing_faults_over_tls(tls_cluster: LocalCluster, fault: str, sent: str) -> None:
    tls_cluster.set_fault(fault)  # type: ignore[arg-type]
    body = _body(1, _ports(tls_cluster))
    expected = (
        b""
        if sent == "nothing"
        else b"CONFIG cluster 0 %d\r\n" % len(body) + body[: len(body) // 2]
    )
    with _tls_connect(tls_cluster.endpoint.port, tls_cluster.ssl_context()) as conn:
        conn.sendall(CONFIG_GET)
        assert _read_until_closed(conn) == expected  # a clean close_notify, not an error


def test_no_nodes_fault_over_tls(tls_cluster: LocalCluster) -> None:
    tls_cluster.set_fault("no-nodes")
    reply = _tls_ask(tls_cluster.endpoint.port, tls_cluster.ssl_context(), LEGACY_GET)
    assert reply == legacy_frame(b"1\n\n")


@pytest.mark.timeout(60)  # only a guard against a hang; nothing here is timed
def test_hang_fault_over_tls_and_stop_still_closes(tls_cluster: LocalCluster) -> None:
    tls_cluster.set_fault("hang")
    port = tls_cluster.endpoint.port
    others = _connection_threads()
    with _tls_connect(port, tls_cluster.ssl_context(), timeout=0.3) as conn:
        conn.sendall(CONFIG_GET)
        with pytest.raises(TimeoutError):
            conn.recv(4096)
        tls_cluster.set_fault(None)  # a hung connection stays hung
        conn.sendall(CONFIG_GET)
        with pytest.raises(TimeoutError):
            conn.recv(4096)
        [hung] = _connection_threads() - others
        tls_cluster.stop_endpoint()
        assert not hung.is_alive()  # ended by stop(), not waited out
        conn.settimeout(TIMEOUT)
        assert _read_until_closed(conn) == b""  # stop() closed the hung connection


@pytest.mark.timeout(60)  # only a guard against a hang; nothing here is timed
def test_a_client_that_never_handshakes_blocks_no_one(tls_cluster: LocalCluster) -> None:
    port = tls_cluster.endpoint.port
    others = _connection_threads()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as silent:
        handshaking = _new_connection_thread(others)
        reply = _tls_ask(port, tls_cluster.ssl_context(), CONFIG_GET)
        assert reply == config_frame(_body(1, _ports(tls_cluster)))
        assert handshaking.is_alive()
        tls_cluster.stop_endpoint()  # and stopping does not wait for it
        assert not handshaking.is_alive()  # ended by stop(), not waited out
        assert silent.recv(4096) == b""


# -- CLI and pytest plugin --------------------------------------------------------------------


@needs_pgrep
def test_cli_tls_json_and_clean_stop(cli_factory: type[_Cli]) -> None:
    cli = cli_factory("--nodes", "2", "--tls", "--json")
    summary = json.loads(cli.readline())
    tls = summary["tls"]
    ca = Path(tls["ca_file"])
    assert ca.is_file() and tls["require_client_cert"] is False
    assert tls["server_hostname"] == "localhost"
    endpoint = summary["configuration_endpoint"]
    port = int(endpoint.removeprefix("localhost:"))
    assert summary["CACHES"] == {
        "default": {
            "BACKEND": BACKEND,
            "LOCATION": endpoint,
            "OPTIONS": {"tls_ca_file": str(ca), "discovery_interval": 5},
        }
    }
    context = ssl.create_default_context(cafile=str(ca))  # as the output says to trust it
    node_ports = [int(address.rsplit(":", 1)[1]) for address in summary["nodes"]]
    assert _tls_ask(port, context, CONFIG_GET) == config_frame(_body(1, node_ports))
    for node_port in node_ports:
        assert _tls_ask(node_port, context, b"version\r\n").startswith(b"VERSION ")
    [status] = _control(summary["control"], "status")
    assert "tls on" in status
    children = _memcached_children(cli.process.pid)
    assert len(children) == 2
    cli.process.send_signal(signal.SIGTERM)
    status_code, stderr = cli.finish()
    assert status_code == 0, stderr
    assert not [pid for pid in children if _alive(pid)]
    assert not ca.parent.exists()


def test_cli_prints_how_to_trust_the_ca(cli_factory: type[_Cli]) -> None:
    cli = cli_factory("--nodes", "1", "--require-client-cert")
    lines = []
    while not (line := cli.readline()).startswith("Ctrl-C"):
        lines.append(line)
    text = "".join(lines)
    ca = text.split("CA certificate", 1)[1].split()[0]
    assert ca.endswith("/ca.pem") and Path(ca).is_file()
    assert f'"tls_ca_file": "{ca}"' in text and '"tls_cert_file": ' in text
    assert f"ssl.create_default_context(cafile={ca!r})" in text
    assert "(TLS)" in text and "(required)" in text
    cli.process.send_signal(signal.SIGINT)
    assert cli.finish()[0] == 0
    assert not Path(ca).exists()


def test_cli_tls_without_cryptography_says_what_to_install(
    cli_factory: type[_Cli],
    tmp_path: Path,
) -> None:
    shadow = tmp_path / "cryptography"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('hidden for the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    cli = cli_factory("--tls", env=env)
    status_code, stderr = cli.finish()
    assert status_code == 1
    assert stderr.startswith("error: ") and "pip install cryptography" in stderr


def test_factory_starts_tls_clusters(elasticache_cluster_factory: ClusterFactory) -> None:
    plain = elasticache_cluster_factory(nodes=1)
    secure = elasticache_cluster_factory(nodes=1, tls=True, require_client_cert=True)
    assert (plain.tls, secure.tls, secure.require_client_cert) == (False, True, True)
    assert secure.certificates.directory.is_dir()
