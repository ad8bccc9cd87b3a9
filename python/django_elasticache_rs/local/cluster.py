"""A local ElastiCache-compatible cluster: real memcached nodes behind a configuration endpoint
that serves their membership, which changes while it runs (:meth:`LocalCluster.add_node`,
:meth:`LocalCluster.remove_node`), and whose nodes can be made to fail for drills
(:meth:`LocalCluster.kill_node`, :meth:`~LocalCluster.freeze_node`,
:meth:`~LocalCluster.thaw_node`, :meth:`~LocalCluster.restart_node`).

In TLS mode (``tls=True``, like ElastiCache in-transit encryption) the nodes and the endpoint
serve TLS only, with certificates the cluster makes at start (a private CA, a server certificate
naming ``localhost``) in a temporary directory it removes at stop.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

from django_elasticache_rs.local.certs import Certificates, make_certificates
from django_elasticache_rs.local.endpoint import ClusterConfig, ConfigEndpoint, Fault
from django_elasticache_rs.local.node import LocalNode

__all__ = ["BACKEND", "HOSTNAME", "CachesSetting", "LocalCluster", "local_cluster"]

CachesSetting = dict[str, dict[str, object]]
"""A Django ``CACHES`` setting: alias -> that cache's configuration."""

BACKEND = "django_elasticache_rs.backend.ElastiCache"
HOSTNAME = "localhost"
"""The hostname the endpoint lists for every node (the IP field is ``127.0.0.1``), and the one
name the TLS certificates are valid for."""


class LocalCluster:
    """``nodes`` memcached processes on random 127.0.0.1 ports and a configuration endpoint
    listing them (``endpoint_port=0``: a random port). The config version starts at 1 and goes
    up by one with each membership change. Thread-safe.

    ``tls``: nodes and endpoint serve TLS only (needs the ``cryptography`` package);
    ``require_client_cert``: and the nodes accept only clients presenting the cluster's client
    certificate. See :attr:`certificates`, :meth:`ssl_context`, :meth:`tls_options`."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        memory_mb: int = 64,
        legacy: bool = False,
        endpoint_port: int = 0,
        tls: bool = False,
        require_client_cert: bool = False,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster has at least one node")
        if require_client_cert and not tls:
            raise ValueError("require_client_cert needs tls=True")
        self._initial_nodes = nodes
        self._memory_mb = memory_mb
        self._tls = tls
        self._require_client_cert = require_client_cert
        self._certificates: Certificates | None = None  # while running in TLS mode
        self._endpoint = ConfigEndpoint(port=endpoint_port, legacy=legacy)
        self._changes = threading.RLock()  # one start/stop/add/remove at a time
        self._state = threading.Lock()  # guards the two fields below, held briefly
        self._nodes: tuple[LocalNode, ...] = ()
        self._version = 0
        self._running = False

    # -- what it is -------------------------------------------------------------------------

    @property
    def nodes(self) -> list[LocalNode]:
        """The member nodes, in the order the endpoint lists them."""
        with self._state:
            return list(self._nodes)

    @property
    def addresses(self) -> list[str]:
        """The members' ``"127.0.0.1:<port>"``."""
        return [node.address for node in self.nodes]

    @property
    def version(self) -> int:
        """The config version the endpoint serves (0 before the first start)."""
        with self._state:
            return self._version

    @property
    def endpoint(self) -> ConfigEndpoint:
        """The configuration endpoint itself."""
        return self._endpoint

    @property
    def configuration_endpoint(self) -> str:
        """The ``LOCATION`` for Django: ``"127.0.0.1:<port>"``, or in TLS mode
        ``"localhost:<port>"`` (the name its certificate is valid for)."""
        if self._endpoint.port == 0:
            raise RuntimeError("the cluster has not been started")
        if self._tls:
            return f"{HOSTNAME}:{self._endpoint.port}"
        return self._endpoint.address

    @property
    def tls(self) -> bool:
        """Whether the nodes and the endpoint serve TLS."""
        return self._tls

    @property
    def require_client_cert(self) -> bool:
        """Whether the nodes require a client certificate."""
        return self._require_client_cert

    @property
    def certificates(self) -> Certificates:
        """The certificate files of a running TLS cluster (removed when it stops)."""
        if not self._tls:
            raise RuntimeError("the cluster is not in TLS mode")
        certificates = self._certificates
        if certificates is None:
            raise RuntimeError("the cluster is not running")
        return certificates

    def ssl_context(self) -> ssl.SSLContext:
        """A client context for this TLS cluster: trusts its CA only, verifies hostnames, and
        presents the client certificate when the nodes require one (for ``tls_context``)."""
        return self.certificates.client_context(client_cert=self._require_client_cert)

    def tls_options(self) -> dict[str, object]:
        """The backend ``OPTIONS`` that make a client trust this cluster: ``tls_ca_file`` (and
        ``tls_cert_file``/``tls_key_file`` when client certificates are required); ``{}`` when
        not in TLS mode."""
        if not self._tls:
            return {}
        certificates = self.certificates
        options: dict[str, object] = {"tls_ca_file": str(certificates.ca_cert)}
        if self._require_client_cert:
            options["tls_cert_file"] = str(certificates.client_cert)
            options["tls_key_file"] = str(certificates.client_key)
        return options

    @property
    def legacy(self) -> bool:
        """Whether the endpoint answers only the legacy ``get AmazonElastiCache:cluster``."""
        return self._endpoint.legacy

    @property
    def fault(self) -> Fault | None:
        """The endpoint's current misbehaviour, if any."""
        return self._endpoint.fault

    @property
    def discovery_requests(self) -> int:
        """Discovery requests the endpoint has received."""
        return self._endpoint.discovery_requests

    @property
    def endpoint_running(self) -> bool:
        """Whether the endpoint accepts connections."""
        return self._endpoint.running

    def caches_setting(self, alias: str = "default", **options: object) -> CachesSetting:
        """The ``CACHES`` setting for this cluster: the configuration endpoint as ``LOCATION``
        (Auto Discovery), ``options`` as ``OPTIONS``, over :meth:`tls_options` in TLS mode."""
        location = self.configuration_endpoint
        merged = {**self.tls_options(), **options}
        return {alias: {"BACKEND": BACKEND, "LOCATION": location, "OPTIONS": merged}}

    def static_caches_setting(self, alias: str = "default", **options: object) -> CachesSetting:
        """The ``CACHES`` setting listing the current nodes instead (no discovery); in TLS mode
        as ``"localhost:<port>"``, with :meth:`tls_options`."""
        locations = self.addresses
        if self._tls:
            locations = [f"{HOSTNAME}:{node.port}" for node in self.nodes]
        merged = {**self.tls_options(), **options}
        return {alias: {"BACKEND": BACKEND, "LOCATION": locations, "OPTIONS": merged}}

    # -- membership -------------------------------------------------------------------------

    def add_node(self) -> LocalNode:
        """Starts a new memcached node and adds it (last) to the membership: version + 1."""
        with self._changes:
            self._require_running()
            node = self._new_node()
            with self._state:
                self._publish((*self._nodes, node))
            return node

    def remove_node(self, address: str | None = None) -> str:
        """Removes the node at ``address`` (``"127.0.0.1:<port>"`` or ``"localhost:<port>"``;
        ``None``: the last one) from the membership, version + 1, then stops its process.
        Returns the removed node's ``"127.0.0.1:<port>"``. Raises ``ValueError`` for an unknown
        address or the last remaining node."""
        with self._changes:
            self._require_running()
            with self._state:
                node = self._find(address)
                if len(self._nodes) == 1:
                    raise ValueError("cannot remove the last node (use the no-nodes fault)")
                self._publish(tuple(n for n in self._nodes if n is not node))
            node.stop()
            return node.address

    # -- fault drills: a node fails but stays a member, as on ElastiCache -------------------

    def kill_node(self, address: str) -> str:
        """Kills the node's process (SIGKILL) as a crash would; it stays in the membership.
        Returns its ``"127.0.0.1:<port>"``."""
        return self._drill(address, LocalNode.kill)

    def freeze_node(self, address: str) -> str:
        """Stops the node's process (SIGSTOP): it accepts connections and answers nothing."""
        return self._drill(address, LocalNode.freeze)

    def thaw_node(self, address: str) -> str:
        """Resumes a frozen node (SIGCONT)."""
        return self._drill(address, LocalNode.thaw)

    def restart_node(self, address: str) -> str:
        """Starts a new, empty memcached on the node's port (killing it first if it runs), as
        a node that rebooted; the membership does not change."""
        return self._drill(address, LocalNode.restart)

    def node_states(self) -> list[tuple[str, str]]:
        """Each member's ``"127.0.0.1:<port>"`` and its state: ``up``, ``frozen`` or
        ``killed``."""
        with self._state:
            nodes = self._nodes
        return [(node.address, node.state) for node in nodes]

    def _drill(self, address: str, action: Callable[[LocalNode], object]) -> str:
        with self._changes:
            self._require_running()
            with self._state:
                node = self._find(address)
            action(node)
            return node.address

    def _find(self, address: str | None) -> LocalNode:
        if address is None:
            return self._nodes[-1]
        host, _, port = address.rpartition(":")
        for node in self._nodes:
            if host in ("127.0.0.1", HOSTNAME) and port == str(node.port):
                return node
        raise ValueError(f"no node {address}")

    def _publish(self, nodes: tuple[LocalNode, ...]) -> None:
        # Called with self._state held.
        self._nodes = nodes
        self._version += 1
        members = tuple((HOSTNAME, "127.0.0.1", node.port) for node in nodes)
        self._endpoint.publish(ClusterConfig(self._version, members))

    def _require_running(self) -> None:
        if not self._running:
            raise RuntimeError("the cluster is not running")

    def _new_node(self) -> LocalNode:
        """Starts a node: with the cluster's certificates in TLS mode."""
        node = LocalNode(
            memory_mb=self._memory_mb,
            tls=self._certificates,
            require_client_cert=self._require_client_cert,
        )
        return node.start()

    # -- the endpoint -----------------------------------------------------------------------

    def set_fault(self, fault: Fault | None) -> None:
        """Makes the endpoint misbehave (see :data:`~django_elasticache_rs.local.Fault`), or
        behave again with ``None``."""
        self._endpoint.set_fault(fault)

    def stop_endpoint(self) -> None:
        """Makes the endpoint unreachable: stops listening and closes its connections."""
        self._endpoint.stop()

    def start_endpoint(self) -> None:
        """Makes the endpoint reachable again, on the same port."""
        self._endpoint.start()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Starts the nodes and the endpoint; on failure stops what it started and raises."""
        with self._changes:
            if self._running:
                return self
            nodes: list[LocalNode] = []
            try:
                self._make_certificates()
                for _ in range(self._initial_nodes):
                    nodes.append(self._new_node())
                with self._state:
                    self._publish(tuple(nodes))
                self._endpoint.start()
            except BaseException:
                self._endpoint.stop()
                for node in nodes:
                    node.stop()
                with self._state:
                    self._nodes = ()
                self._remove_certificates()
                raise
            self._running = True
            return self

    def stop(self) -> None:
        """Stops the endpoint and every node; the cluster can be started again (new nodes, a
        higher version)."""
        with self._changes:
            self._running = False
            self._endpoint.stop()
            with self._state:
                nodes, self._nodes = self._nodes, ()
            for node in nodes:
                node.stop()
            self._remove_certificates()

    def _make_certificates(self) -> None:
        """In TLS mode: new certificates in a new temporary directory, served by the endpoint
        from then on."""
        if not self._tls:
            return
        directory = tempfile.mkdtemp(prefix="elasticache-local-tls-")
        try:
            self._certificates = make_certificates(directory, hostnames=(HOSTNAME,))
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        self._endpoint.use_tls(self._certificates.server_context())

    def _remove_certificates(self) -> None:
        """Deletes the certificate directory, if any."""
        certificates, self._certificates = self._certificates, None
        if certificates is not None:
            shutil.rmtree(certificates.directory, ignore_errors=True)

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
def local_cluster(
    nodes: int = 3, *, legacy: bool = False, tls: bool = False, require_client_cert: bool = False
) -> Iterator[LocalCluster]:
    """A running local cluster for the duration of a ``with`` block."""
    with LocalCluster(
        nodes, legacy=legacy, tls=tls, require_client_cert=require_client_cert
    ) as cluster:
        yield cluster
