"""Reference rows, measured interleaved with the backends and pinned like them. They tell where a
backend's time goes: what a round trip costs with no client to speak of (raw sockets from
Python: ``sendall`` the request, ``recv`` until ``END``, no parsing, no key making, no
decoding), what the clients under two of the backends cost without Django's cache layer,
what asyncio's hop to a thread pool costs with no work in it, and the least an awaited call
can cost (the blocking call plus one bare turn of the loop).
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass

from django.core.cache import caches

from bench.backends import OURS, PYLIBMC
from bench.measure import async_runner, loop_runner
from bench.workloads import BATCH, VALUE_100, BenchmarkError, Prepared, batch_keys
from django_elasticache_rs._native import Client
from django_elasticache_rs.local import LocalCluster

_VALUE = VALUE_100.encode()


@dataclass(frozen=True)
class Probe:
    """One reference row."""

    name: str
    title: str
    prepare: Callable[[LocalCluster], Prepared]
    compare: tuple[str, str] | None = None
    """The (workload, backend) cell it explains."""
    nodes: int = 3


class _Node:
    """One kept-open connection to a memcached node."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.conn = socket.create_connection((host, int(port)))
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def store(self, key: bytes) -> None:
        self.conn.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(_VALUE), _VALUE))
        if self.conn.recv(64) != b"STORED\r\n":
            raise BenchmarkError("memcached did not store a raw key")

    def read(self) -> bytes:
        """One reply, up to and including ``END``."""
        reply = self.conn.recv(65536)
        while not reply.endswith(b"END\r\n"):
            reply += self.conn.recv(65536)
        return reply


def _expected(key: bytes) -> bytes:
    return b"VALUE %s 0 %d\r\n%s\r\n" % (key, len(_VALUE), _VALUE)


def raw_socket(cluster: LocalCluster) -> Prepared:
    """``get`` of one key over one kept-open socket."""
    node = _Node(cluster.addresses[0])
    key = b"raw:hit"
    node.store(key)
    request, expected = b"get %s\r\n" % key, _expected(key) + b"END\r\n"
    sendall, read = node.conn.sendall, node.read

    def verify() -> None:
        sendall(request)
        if read() != expected:
            raise BenchmarkError("the raw get did not return the value")

    verify()

    def body(n: int) -> None:
        for _ in range(n):
            sendall(request)
            read()

    return Prepared(loop_runner(body), verify)


def raw_round_robin(cluster: LocalCluster) -> Prepared:
    """``get`` of 100 keys in turn, each on a node drawn at random (fixed seed), one socket per
    node: the servers' side of the 3- and 10-node rows."""
    nodes = [_Node(address) for address in cluster.addresses]
    draw = random.Random(0)
    plan: list[tuple[_Node, bytes, bytes]] = []
    for i in range(BATCH):
        node, key = nodes[draw.randrange(len(nodes))], b"raw:spread:%d" % i
        node.store(key)
        plan.append((node, b"get %s\r\n" % key, _expected(key) + b"END\r\n"))

    def verify() -> None:
        for node, request, expected in plan:
            node.conn.sendall(request)
            if node.read() != expected:
                raise BenchmarkError("the raw get did not return the value")

    verify()

    def body(n: int) -> None:
        for i in range(n):
            node, request, _ = plan[i % BATCH]
            node.conn.sendall(request)
            node.read()

    return Prepared(loop_runner(body), verify)


def raw_multi_get(cluster: LocalCluster) -> Prepared:
    """100 keys spread over the nodes, one ``get k1 k2 ...`` per node: all requests sent, then
    all replies read (what a one-round-trip ``get_many`` costs the servers and the kernel)."""
    nodes = [_Node(address) for address in cluster.addresses]
    draw = random.Random(1)
    keys: dict[_Node, list[bytes]] = {node: [] for node in nodes}
    for i in range(BATCH):
        node, key = nodes[draw.randrange(len(nodes))], b"raw:many:%d" % i
        node.store(key)
        keys[node].append(key)
    requests = [(node, b"get %s\r\n" % b" ".join(ks)) for node, ks in keys.items() if ks]

    def get_many() -> int:
        for node, request in requests:
            node.conn.sendall(request)
        return sum(node.read().count(b"VALUE ") for node, _ in requests)

    def verify() -> None:
        if get_many() != BATCH:
            raise BenchmarkError("the raw multi-get did not find every key")

    verify()

    def body(n: int) -> None:
        for _ in range(n):
            get_many()

    return Prepared(loop_runner(body), verify)


def _native_get(client: Client, prefix: str, version: int, counting: bool) -> Prepared:
    """``client.get`` of the present key ``hit``, called directly; checks whether it counts."""

    def verify() -> None:
        if client.get("hit", None, prefix, version) != VALUE_100:
            raise BenchmarkError("the native client's get did not return the value")
        node = client.node_for("hit", prefix, version)
        counted = sum(client.metrics()["nodes"][node]["requests"].values())
        if bool(counted) != counting:
            raise BenchmarkError("the native client's counters are not as configured")

    verify()
    get = client.get

    def body(n: int) -> None:
        for _ in range(n):
            get("hit", None, prefix, version)

    return Prepared(loop_runner(body), verify)


def native_client(cluster: LocalCluster) -> Prepared:
    """Our native client's ``get`` (key made in Rust), called directly: the backend minus
    Django's ``BaseCache`` layer and our Python method around it."""
    cache = caches[OURS.alias(3)]
    cache.set("hit", VALUE_100)
    client = cache.client  # type: ignore[attr-defined]
    return _native_get(client, cache.key_prefix, cache.version, counting=True)


def native_client_without_counters(cluster: LocalCluster) -> Prepared:
    """The same ``get`` on a native client built with ``counters=False`` for the same nodes:
    next to the row above, what the counters behind ``cache.metrics()`` cost per get."""
    cache = caches[OURS.alias(3)]
    cache.set("hit", VALUE_100)
    client = Client(cache.servers, discovery="off", counters=False)  # type: ignore[attr-defined]
    return _native_get(client, cache.key_prefix, cache.version, counting=False)


def pylibmc_client(cluster: LocalCluster) -> Prepared:
    """The ``pylibmc.Client`` under Django's ``PyLibMCCache``, its ``get`` called directly with
    the finished key."""
    cache = caches[PYLIBMC.alias(3)]
    cache.set("hit", VALUE_100)
    client = cache._cache  # type: ignore[attr-defined]
    key = cache.make_key("hit")

    def verify() -> None:
        if client.get(key) != VALUE_100:
            raise BenchmarkError("pylibmc's get did not return the value")

    verify()
    get = client.get

    def body(n: int) -> None:
        for _ in range(n):
            get(key)

    return Prepared(loop_runner(body), verify)


def pylibmc_get_multi(cluster: LocalCluster) -> Prepared:
    """``pylibmc.Client.get_multi`` of 100 present keys on one node: a C client's (libmemcached's)
    one-round-trip batch, no Django layer, next to our ``get_many`` of 100 keys."""
    import pylibmc  # type: ignore[import-untyped]

    client = pylibmc.Client(cluster.addresses[:1], behaviors={"tcp_nodelay": True})
    keys = [f"ref:multi:{i}" for i in range(BATCH)]
    client.set_multi({key: VALUE_100 for key in keys})
    get_multi = client.get_multi

    def verify() -> None:
        if len(get_multi(keys)) != BATCH:
            raise BenchmarkError("pylibmc's get_multi did not find every key")

    verify()

    def body(n: int) -> None:
        for _ in range(n):
            get_multi(keys)

    return Prepared(loop_runner(body), verify)


def native_get_many_one_node(cluster: LocalCluster) -> Prepared:
    """Our native client's ``get_many`` of the same 100 keys on one node, called directly: the
    row to put next to pylibmc's ``get_multi`` above."""
    client = Client(cluster.addresses[:1], discovery="off")
    keys = [f"ref:multi:{i}" for i in range(BATCH)]
    client.set_many({key: VALUE_100 for key in keys}, 0, None, 1)
    get_many = client.get_many

    def verify() -> None:
        if len(get_many(keys, None, 1)) != BATCH:
            raise BenchmarkError("the native get_many did not find every key")

    verify()

    def body(n: int) -> None:
        for _ in range(n):
            get_many(keys, None, 1)

    return Prepared(loop_runner(body), verify)


def loop_turn_floor(cluster: LocalCluster) -> Prepared:
    """Our blocking ``get_many`` of 100 keys, then one bare turn of the event loop
    (``await asyncio.sleep(0)``), in a loop: the least an awaited call can cost over the
    blocking one, since a call that waits for a reply hands the loop at least one turn. The
    row to put next to ``aget_many``."""
    cache = caches[OURS.alias(len(cluster.addresses))]
    keys = batch_keys()  # the get_many and aget_many rows' keys, split as theirs are
    cache.set_many(dict.fromkeys(keys, VALUE_100))
    get_many = cache.get_many

    def verify() -> None:
        if len(get_many(keys)) != BATCH:
            raise BenchmarkError("get_many did not find every key")

    verify()

    async def many(n: int) -> None:
        for _ in range(n):
            get_many(keys)
            await asyncio.sleep(0)

    return Prepared(async_runner(many), verify)


#: Tasks reading the same key at once in the coalescing rows.
HOT_READERS = 200


def _hot_gather(cluster: LocalCluster, coalesce: bool) -> Prepared:
    """``HOT_READERS`` asyncio tasks awaiting ``get`` of the same key at once (a spike on a hot
    key), on a native client with ``coalesce_reads`` as given; per gather of all of them."""
    from django_elasticache_rs._futures import run

    client = Client(cluster.addresses, discovery="off", coalesce_reads=coalesce)
    client.set("hot", VALUE_100, 0, None, 1)
    start_get = client.start_get

    async def gather() -> list[object]:
        return await asyncio.gather(
            *(run(start_get("hot", None, None, 1)) for _ in range(HOT_READERS))
        )

    def verify() -> None:
        if asyncio.run(gather()) != [VALUE_100] * HOT_READERS:
            raise BenchmarkError("a coalesced read did not return the value")

    verify()

    async def many(n: int) -> None:
        for _ in range(n):
            await gather()

    return Prepared(async_runner(many), verify)


def hot_gather_coalesced(cluster: LocalCluster) -> Prepared:
    """The spike with identical reads sharing one request (the default)."""
    return _hot_gather(cluster, coalesce=True)


def hot_gather_alone(cluster: LocalCluster) -> Prepared:
    """The same spike with every read sending its own request (``coalesce_reads`` off)."""
    return _hot_gather(cluster, coalesce=False)


def executor_hop(cluster: LocalCluster) -> Prepared:
    """``await loop.run_in_executor(None, int)``: asyncio's round trip to its default thread
    pool with nothing to do there (our ``aget`` is ``get`` plus this hop)."""

    async def many(n: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            await loop.run_in_executor(None, int)

    def verify() -> None:
        asyncio.run(many(1))

    return Prepared(async_runner(many), verify)


PROBES: tuple[Probe, ...] = (
    Probe(
        "raw_socket",
        "raw memcached round trip (Python socket, same pinning)",
        raw_socket,
        ("get_hit", OURS.name),
    ),
    Probe(
        "native", "our native client `get`, no Django layer", native_client, ("get_hit", OURS.name)
    ),
    Probe(
        "native_no_counters",
        "our native client `get`, no Django layer, counters off",
        native_client_without_counters,
        ("get_hit", OURS.name),
    ),
    Probe(
        "pylibmc_client",
        "`pylibmc.Client.get`, no Django layer",
        pylibmc_client,
        ("get_hit", PYLIBMC.name),
    ),
    Probe(
        "raw_3_nodes",
        "raw round trips, 3 nodes, 100 keys in turn",
        raw_round_robin,
        ("get_3_nodes", OURS.name),
    ),
    Probe(
        "raw_10_nodes",
        "raw round trips, 10 nodes, 100 keys in turn",
        raw_round_robin,
        ("get_10_nodes", OURS.name),
        nodes=10,
    ),
    Probe(
        "raw_multi_get",
        "raw multi-get of 100 keys over 3 nodes (per call)",
        raw_multi_get,
        ("get_many", OURS.name),
    ),
    Probe(
        "pylibmc_get_multi",
        "`pylibmc.Client.get_multi` of 100 keys, 1 node (C client, per call)",
        pylibmc_get_multi,
        ("get_many", OURS.name),
        nodes=1,
    ),
    Probe(
        "native_get_many_1_node",
        "our native client `get_many` of 100 keys, 1 node, no Django layer (per call)",
        native_get_many_one_node,
        ("get_many", OURS.name),
        nodes=1,
    ),
    Probe(
        "loop_turn_floor",
        "our `get_many` of 100 keys plus one bare loop turn (`await asyncio.sleep(0)`), "
        "the floor of an awaited call (per call)",
        loop_turn_floor,
        ("aget_many", OURS.name),
    ),
    Probe(
        "hot_gather_coalesced",
        f"{HOT_READERS} tasks `aget` one key at once, coalesced (per gather)",
        hot_gather_coalesced,
        ("aget", OURS.name),
    ),
    Probe(
        "hot_gather_alone",
        f"{HOT_READERS} tasks `aget` one key at once, `coalesce_reads` off (per gather)",
        hot_gather_alone,
        ("aget", OURS.name),
    ),
    Probe(
        "executor_hop",
        "asyncio `run_in_executor` hop, no work (per await)",
        executor_hop,
        ("aget", OURS.name),
    ),
)
