"""A local ElastiCache-compatible cluster: real memcached nodes behind a configuration endpoint
that serves their membership, which changes while it runs (:meth:`LocalCluster.add_node`,
:meth:`LocalCluster.remove_node`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from django_elasticache_rs.local.endpoint import ClusterConfig, ConfigEndpoint, Fault
from django_elasticache_rs.local.node import LocalNode

__all__ = ["BACKEND", "HOSTNAME", "CachesSetting", "LocalCluster", "local_cluster"]

CachesSetting = dict[str, dict[str, object]]
"""A Django ``CACHES`` setting: alias -> that cache's configuration."""

BACKEND = "django_elasticache_rs.backend.ElastiCache"
HOSTNAME = "localhost"
"""The hostname the endpoint lists for every node (the IP field is ``127.0.0.1``)."""


class LocalCluster:
    """``nodes`` memcached processes on random 127.0.0.1 ports and a configuration endpoint
    listing them (``endpoint_port=0``: a random port). The config version starts at 1 and goes
    up by one with each membership change. Thread-safe."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        memory_mb: int = 64,
        legacy: bool = False,
        endpoint_port: int = 0,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster has at least one node")
        self._initial_nodes = nodes
        self._memory_mb = memory_mb
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
        """``"127.0.0.1:<port>"``: the ``LOCATION`` for Django."""
        if self._endpoint.port == 0:
            raise RuntimeError("the cluster has not been started")
        return self._endpoint.address

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
        (Auto Discovery), ``options`` as ``OPTIONS``."""
        location = self.configuration_endpoint
        return {alias: {"BACKEND": BACKEND, "LOCATION": location, "OPTIONS": options}}

    def static_caches_setting(self, alias: str = "default", **options: object) -> CachesSetting:
        """The ``CACHES`` setting listing the current nodes instead (no discovery)."""
        return {alias: {"BACKEND": BACKEND, "LOCATION": self.addresses, "OPTIONS": options}}

    # -- membership -------------------------------------------------------------------------

    def add_node(self) -> LocalNode:
        """Starts a new memcached node and adds it (last) to the membership: version + 1."""
        with self._changes:
            self._require_running()
            node = LocalNode(memory_mb=self._memory_mb).start()
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
                for _ in range(self._initial_nodes):
                    nodes.append(LocalNode(memory_mb=self._memory_mb).start())
                with self._state:
                    self._publish(tuple(nodes))
                self._endpoint.start()
            except BaseException:
                self._endpoint.stop()
                for node in nodes:
                    node.stop()
                with self._state:
                    self._nodes = ()
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
def local_cluster(nodes: int = 3, *, legacy: bool = False) -> Iterator[LocalCluster]:
    """A running local cluster for the duration of a ``with`` block."""
    with LocalCluster(nodes, legacy=legacy) as cluster:
        yield cluster
