"""Typed stubs of the native module (``crates/python``)."""

import asyncio
import contextvars
import os
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, Final, Literal, Protocol, TypedDict, final

__all__ = [
    "BLOCK",
    "DONE",
    "EPOLL",
    "LARGE_FLAG",
    "MAX_KEEPALIVE_SECONDS",
    "MAX_LEASE_SECONDS",
    "MAX_POOL_SIZE",
    "MAX_RETRY_ATTEMPTS",
    "MAX_SECONDS",
    "MAX_VALUE_LENGTH",
    "MIN_VALUE_LENGTH",
    "OPTIONS",
    "READ",
    "WAIT",
    "WRITE",
    "Client",
    "Operation",
    "Poller",
    "Undecodable",
    "__version__",
    "check_option",
    "murmur3_32",
    "train_zstd_dictionary",
]

__version__: str

# The bounds of the client's arguments (and so of OPTIONS).
#: Every duration, in seconds.
MAX_SECONDS: Final[float]
#: ``socket_keepalive``'s idle time, in seconds (from 1).
MAX_KEEPALIVE_SECONDS: Final[float]
MAX_POOL_SIZE: Final[int]
MAX_RETRY_ATTEMPTS: Final[int]
#: ``max_value_length``: from ``MIN_VALUE_LENGTH`` to this (the protocol's hard limit, 1 GiB).
MAX_VALUE_LENGTH: Final[int]
MIN_VALUE_LENGTH: Final[int]
#: The flag bit of a large value's index item (``large_values``).
LARGE_FLAG: Final[int]
#: A lease or early-recompute window, in seconds (memcached reads more as a Unix time).
MAX_LEASE_SECONDS: Final[int]

class _OptionSpec(TypedDict):
    """One option of the table (``crates/python/src/options.rs``)."""

    name: str
    #: "bool", "seconds", "whole", "choice", "keepalive", "log_level", "logger_name", "file",
    #: "server_name", "serde", "serializer", "secret", "secrets" or "ssl_context".
    kind: str
    #: The default under Django (``options.DEFAULTS``).
    default: Any
    #: The native ``Client``'s default (``discovery``: "off"; else ``default``).
    client_default: Any
    #: Whether ``Client`` takes it (else it is the Django backend's alone).
    native: bool
    #: Whether ``None`` is accepted.
    none: bool
    #: Bounds of "seconds", "whole" and "keepalive" (``None`` for the other kinds).
    low: float | None
    high: float | None
    #: "seconds": 0 means none (off); 0 is refused.
    zero_is_none: bool
    zero_refused: bool
    #: "choice": the values accepted.
    choices: tuple[Any, ...] | None
    #: What it accepts, in the words of the error messages.
    accepts: str
    #: What it means, in one line.
    meaning: str

#: Every option, once: what ``Client`` takes as keyword arguments (``native``) and what the
#: Django backend's ``OPTIONS`` accepts, with defaults and bounds.
OPTIONS: Final[tuple[_OptionSpec, ...]]

#: Each command of ``Client`` as declared (``crates/python/src/client.rs``): its name, Python
#: parameters, return type and doc lines, from which ``scripts/generate.py`` writes its
#: stubs below.
_COMMANDS: Final[tuple[tuple[str, list[str], str, list[str]], ...]]

def check_option(name: str, value: object) -> Any:
    """``value`` for the option ``name`` in its canonical form (a keepalive as seconds or
    ``None``, a log level as its name, a path as a ``str``), or ``TypeError``/``ValueError``
    as ``Client`` raises it, its ``option`` attribute naming the option; ``KeyError`` when no
    option has that name."""

class _KeepaliveOpts(Protocol):
    """pymemcache's ``KeepaliveOpts``: its idle time is taken."""

    @property
    def idle(self) -> float: ...

class _Serde(Protocol):
    """pymemcache's serde interface."""

    def serialize(self, key: str, value: Any) -> tuple[bytes | str, int]: ...
    def deserialize(self, key: str, value: bytes, flags: int) -> Any: ...

def murmur3_32(text: str) -> int:
    """murmur3 x86 32-bit (seed 0) as pymemcache computes it (low byte of each code point)."""

def train_zstd_dictionary(samples: list[bytes], size: int) -> bytes:
    """A zstd dictionary of at most ``size`` bytes trained on ``samples`` (the GIL released),
    for ``zstd_dictionary``; ``ValueError`` when zstd cannot train one (too few or too small
    samples)."""

#: ``Operation.advance()``: the result is ready.
DONE: Final = 0
#: ``Operation.advance()``: wait on ``wait_for()`` for at most ``timeout()`` seconds.
WAIT: Final = 1
#: ``Operation.advance()``: run ``prepare()`` off the event loop.
BLOCK: Final = 2
#: Whether a ``Poller`` made with ``epoll`` true is an epoll set (Linux), not the loop's readers.
EPOLL: Final[bool]
#: ``Operation.wait_for()``: wait for the socket to be readable.
READ: Final = 1
#: ``Operation.wait_for()``: wait for the socket to be writable (or readable).
WRITE: Final = 2

@final
class Client:
    """A memcached client shared by every thread of the process.

    Keys are ``str``. Methods that take ``prefix`` make the key ``f"{prefix}:{version}:{key}"``
    (``key`` converted with ``str()``); with ``prefix=None`` the key is used as given. Keys
    longer than 250 characters or bytes, holding control characters or spaces, or that UTF-8
    cannot encode (a lone surrogate), raise ``InvalidKeyError``. Values are stored in
    pymemcache's ``pickle_serde`` format (which pylibmc reads too), zlib-compressed (flag 8)
    when ``min_compress_len`` asks for it, unless ``serializer``, ``compressor`` or
    ``sign_values`` say otherwise.

    Failures raise ``CacheTimeoutError``, ``CacheConnectionError``, ``CacheServerError`` or
    ``CacheClientError`` (see ``django_elasticache_rs.exceptions``); with ``ignore_exc=True``
    all but invalid requests read as misses / not stored.
    """

    def __new__(
        cls,
        servers: list[str],
        *,
        connect_timeout: float | None = 1.0,
        timeout: float | None = 1.0,
        max_pool_size: int | None = 64,
        pool_idle_timeout: float = 0,
        retry_attempts: int = 2,
        retry_timeout: float = 1.0,
        dead_timeout: float = 60.0,
        warmup_window: float = 60.0,
        migrate_from: str | list[str] | tuple[str, ...] | dict[str, Any] | None = None,
        no_delay: bool = True,
        socket_keepalive: float | bool | _KeepaliveOpts | None = False,
        ignore_exc: bool = False,
        max_value_length: int | None = None,
        large_values: bool = False,
        max_large_value_length: int = 67108864,
        serde: _Serde | None = None,
        discovery: Literal["auto", "on", "off"] = "off",
        discovery_interval: float | None = 60.0,
        discovery_retry_delay: float = 0.0,
        use_vpc_ip_address: bool = True,
        tls: bool = False,
        tls_ca_certs: list[bytes] | tuple[bytes, ...] | None = None,
        tls_ca_file: str | os.PathLike[str] | None = None,
        tls_cert_file: str | os.PathLike[str] | None = None,
        tls_key_file: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
        tls_verify: bool = True,
        tls_check_hostname: bool = True,
        logger: str = "elasticache_client.failures",
        failure_log_level: str | int | None = "WARNING",
        counters: bool = True,
        coalesce_reads: bool = True,
        hot_keys_sample: int = 100,
        local_cache: dict[str, float] | None = None,
        on_event: Callable[[dict[str, Any]], object] | None = None,
        hashing: Literal["pymemcache", "pylibmc", "ketama"] = "pymemcache",
        min_compress_len: int = 0,
        compress_level: int = 6,
        gutter: bool = True,
        gutter_ttl: int = 10,
        max_invalidations: int = 10000,
        invalidation_overflow: Literal["flush", "ignore"] = "flush",
        serializer: str = "pickle",
        compressor: Literal["zlib", "zstd", "lz4"] = "zlib",
        zstd_dictionary: str | os.PathLike[str] | None = None,
        sign_values: bool = False,
        signing_key: str | bytes | None = None,
        signing_key_fallbacks: list[str | bytes] | tuple[str | bytes, ...] | None = None,
    ) -> Client:
        """With ``discovery`` "auto" or "on", ``servers`` is the one configuration endpoint:
        nodes are discovered on first use, then every ``discovery_interval`` seconds in the
        background (``None``: only while the ring is empty). "auto" uses an endpoint that is
        plain memcached as a single node; "on" refuses it.

        TLS is on when ``tls`` is true or any ``tls_*`` argument is given: trust anchors from
        ``tls_ca_certs`` (DER) and/or ``tls_ca_file`` (PEM), else the system's trust store;
        ``tls_cert_file``/``tls_key_file`` (PEM) for client certificates. Certificates are
        verified against each node's hostname (from discovery) or ``tls_server_name``;
        ``tls_check_hostname=False`` verifies the chain only, ``tls_verify=False`` nothing.

        The keyword arguments other than ``tls_ca_certs``, ``tls_verify``,
        ``tls_check_hostname`` and ``on_event`` are the options of ``OPTIONS`` marked
        ``native``, with their ``client_default`` (those listed here, which a test keeps equal
        to the table), and accept what the Django backend's ``OPTIONS`` accepts.

        Every argument is checked here, and nothing is contacted: a wrong type raises
        ``TypeError``, a value out of range ``ValueError``, naming the argument in its message
        and in its ``option`` attribute. Durations are seconds up to a day (86400);
        ``timeout`` and ``connect_timeout`` must be above 0 (``None`` is no deadline);
        ``socket_keepalive`` is 1 to 32767 s (``False``/``None``: off, ``True``: 60 s);
        ``max_pool_size`` 1 to 65535; ``retry_attempts`` 1 to 1000; ``max_value_length`` 1024
        to 1 GiB. ``servers`` must parse as ``host:port``, TLS files must be readable and
        hold what they should, ``tls_server_name`` must be a DNS name or IP address.

        Failures are logged to the Python logger ``logger`` at ``failure_log_level``
        (``"WARNING"``, ``"INFO"``, ``"ERROR"`` in any case or the ``logging`` constant;
        ``None``: not at all): the
        first failure of each kind per node, then at most one summary per node per minute,
        and one INFO record when the node answers again.

        ``counters=False`` keeps no counters (``metrics()`` then reads zeros). ``on_event`` is
        called with each event (a dict naming it in ``event``: ``membership_changed``,
        ``node_down``, ``node_up``, ``discovery_failed``, ``invalidations_overflowed``,
        ``warmup_started``, ``warmup_ended``, with their fields), in order, from a native worker
        thread.

        ``gutter`` (on unless ``False``): while a node is marked down, paused after a failure or
        holding undelivered invalidations, its keys are read and written on the next live node
        of their rendezvous order, writes there living at most ``gutter_ttl`` seconds (1 to
        2592000). Deletes and writes that could not reach a node are remembered, at most
        ``max_invalidations`` per node (0 to 1000000; 0: none), and replayed as deletes by a probe
        about once a second before the node serves reads again; past the bound
        ``invalidation_overflow`` "flush" empties the node first, "ignore" does not.

        For ``warmup_window`` seconds after a membership change (0: off), a miss on a key whose
        owner changed reads its previous owner and copies the value there with its remaining
        TTL; ``migrate_from`` (a ``LOCATION`` or a dict with ``LOCATION``, ``hashing`` and
        ``discovery``) names a cluster that misses read through from in the same way. Writes
        and deletes delete the key on those first, so neither serves a stale copy.

        ``hashing`` picks the key placement: pymemcache's ``HashClient`` (rendezvous over
        murmur3), or libmemcached's as pylibmc uses it, "pylibmc" (modula over one-at-a-time,
        nodes in the order given, or discovered) or "ketama" (its continuum).

        Values flagged zlib (bit 8) are always decompressed on read, to at most
        ``max_value_length`` bytes (64 MiB when it is not set; past it the value reads as a
        miss, logged). ``min_compress_len`` (0: off) compresses writes of at least that many
        bytes, as serialized, at zlib level ``compress_level`` (1 to 9), keeping the compressed
        form only when it is smaller; ``compressor`` "zstd" (level 3, with ``zstd_dictionary``
        if given) or "lz4" compresses them instead. Values of every compressor are read
        whatever ``compressor`` says, with the same bound.

        ``serializer`` is what values other than ``bytes``, ``str`` and ``int`` become:
        "pickle", "json" (orjson, else ``json``), "msgpack" (ormsgpack, else msgpack), or the
        dotted path of a class (made with no arguments) or object with ``dumps``/``loads``; a
        value it cannot encode raises ``TypeError`` or ``ValueError`` and nothing is stored.
        JSON and msgpack values are read whatever it says. ``serde`` replaces it for every
        value (both cannot be given).

        ``sign_values=True`` signs every value but counters with HMAC-SHA256 under a key
        derived from ``signing_key`` (required then); signatures are verified with it, then
        with each of ``signing_key_fallbacks``, whatever ``sign_values`` says, and with
        ``sign_values`` an unsigned value other than an integer reads as a miss (logged),
        never unpickled.

        With ``large_values``, a value longer than the chunk length (``max_value_length``, at
        most 1 MiB - 1 KiB, so that chunks fit memcached's default item size) is stored as
        chunks plus an index item (flag bit ``LARGE_FLAG``) holding a random generation, the
        chunk length, the total length, the value's own flags and a checksum; reads join the
        chunks, and a chunk missing reads as a miss (logged); ``touch`` touches the chunks with
        the index. ``max_large_value_length`` (1024 to 2**40; 64 MiB) bounds a whole value: a
        longer one raises ``ValueTooLargeError``.

        ``local_cache`` (a dict of any of ``ttl``, seconds above 0, 1 by default;
        ``max_keys``, 1000; ``max_bytes``, 16 MiB; ``min_reads_per_second``, 10; ``None``:
        off) keeps the values of the keys read that often within a second (``get``, the keys
        of ``get_many``, and ``get_or_lease``, whose kept value is a hit with nothing leased)
        in process memory, each served for at most ``ttl`` after the read
        that brought it was sent: a write or delete by this client (one that ended or failed),
        or ``flush_all``, removes it at once, and a read sent before a write ended keeps
        nothing. Misses are never kept; past ``max_keys`` or ``max_bytes`` the keys kept first
        go first."""
    @property
    def discovery_endpoint(self) -> str | None:
        """The configuration endpoint, when nodes are discovered."""
    @property
    def config_version(self) -> int | None:
        """The version of the discovered configuration in use."""
    @property
    def local_cache(self) -> dict[str, float] | None:
        """The local tier's settings in effect (``ttl``, ``max_keys``, ``max_bytes``,
        ``min_reads_per_second``), defaults filled in; ``None`` without one."""
    def refresh(self) -> None:
        """Asks the configuration endpoint now; the last good membership stays on failure."""
    def serialized(self, value: Any) -> bytes:
        """``value`` as the serializer makes it, before compression and signing (what a zstd
        dictionary is trained on)."""
    def connections_opened(self) -> list[tuple[str, int, int]]:
        """Per node: connections this process opened, and how many resumed a TLS session."""
    @property
    def servers(self) -> list[str]:
        """The nodes' names (``host:port``) as the ring hashes them."""
    def node_for(self, key: Any, prefix: str | None = None, version: Any = None) -> str:
        """The node that owns ``key``."""
    def open_connections(self) -> list[tuple[str, int]]:
        """Connections this process has open to each node."""
    # Each command's blocking method, then its operation for the asyncio and gevent drivers
    # (``_futures.run``, ``_green.run``): the same arguments, key errors raised at once, the
    # I/O left to the caller's scheduler.
    # Generated from the commands' declarations by scripts/generate.py: do not edit.
    def contains(self, key: Any, prefix: str | None = None, version: Any = None) -> bool:
        """Whether ``key`` is in the cache (its value is not decoded)."""
    def start_contains(self, key: Any, prefix: str | None = None, version: Any = None) -> Operation:
        """``contains`` as an ``Operation``."""
    def add(
        self, key: Any, value: Any, exptime: int = 0, prefix: str | None = None, version: Any = None
    ) -> bool:
        """Stores ``value`` only if ``key`` is not in the cache; returns whether it was stored."""
    def start_add(
        self, key: Any, value: Any, exptime: int = 0, prefix: str | None = None, version: Any = None
    ) -> Operation:
        """``add`` as an ``Operation``."""
    def delete(self, key: Any, prefix: str | None = None, version: Any = None) -> bool:
        """Deletes ``key``; returns whether it was there."""
    def start_delete(self, key: Any, prefix: str | None = None, version: Any = None) -> Operation:
        """``delete`` as an ``Operation``."""
    def discard(self, key: Any, prefix: str | None = None, version: Any = None) -> bool:
        """``delete`` of the key leaving its ``get_or_set`` lease alone (a ``delete`` ends it): a
        computation takes back its value so once it finds its own lease ended, which by then
        may be another caller's. Returns whether the key was there."""
    def start_discard(self, key: Any, prefix: str | None = None, version: Any = None) -> Operation:
        """``discard`` as an ``Operation``."""
    def delete_many(
        self, keys: Iterable[Any], prefix: str | None = None, version: Any = None
    ) -> int:
        """Deletes the keys in one round trip; returns how many were there."""
    def start_delete_many(
        self, keys: Iterable[Any], prefix: str | None = None, version: Any = None
    ) -> Operation:
        """``delete_many`` as an ``Operation``."""
    def incr(
        self, key: Any, delta: int = 1, prefix: str | None = None, version: Any = None
    ) -> int | None:
        """Adds ``delta`` (subtracts, when negative, stopping at 0: memcached counters are
        unsigned) to a counter; ``None`` when ``key`` is missing. A ``delta`` that is not an ``int``
        raises ``TypeError``; one of 2**64 or more in magnitude ``ValueError``."""
    def start_incr(
        self, key: Any, delta: int = 1, prefix: str | None = None, version: Any = None
    ) -> Operation:
        """``incr`` as an ``Operation``."""
    def touch(
        self, key: Any, exptime: int = 0, prefix: str | None = None, version: Any = None
    ) -> bool:
        """Sets a new expiry on ``key``; returns whether it was there."""
    def start_touch(
        self, key: Any, exptime: int = 0, prefix: str | None = None, version: Any = None
    ) -> Operation:
        """``touch`` as an ``Operation``."""
    def flush_all(self) -> None:
        """Empties every node."""
    def start_flush_all(self) -> Operation:
        """``flush_all`` as an ``Operation``."""
    def get_or_lease(
        self,
        key: Any,
        lease: int,
        early_recompute: int | None = None,
        default: Any = None,
        prefix: str | None = None,
        version: Any = None,
        *,
        token: bytes | None = None,
        undecodable: bool = False,
        take: Undecodable | None = None,
    ) -> tuple[Any, bool]:
        """Get-or-lease (stampede protection): ``(value, won)``, ``value`` being ``default`` on a
        miss (with ``undecodable``, an ``Undecodable`` for a value found that cannot be decoded)
        and ``won`` saying whether this caller computes the value: on a miss, one caller
        across every client wins the lease (for ``lease`` seconds, or until its owner's
        ``release_lease`` with the same ``token``, a fresh one when not given); on a hit with
        fewer than ``early_recompute`` seconds left, one caller wins an early recompute (on
        nodes with meta commands). With ``take`` (an ``Undecodable`` read before), the lease is
        asked for at once without reading the key; the winner's recheck takes that value
        for a miss."""
    def start_get_or_lease(
        self,
        key: Any,
        lease: int,
        early_recompute: int | None = None,
        default: Any = None,
        prefix: str | None = None,
        version: Any = None,
        *,
        token: bytes | None = None,
        undecodable: bool = False,
        take: Undecodable | None = None,
    ) -> Operation:
        """``get_or_lease`` as an ``Operation``."""
    def release_lease(
        self, key: Any, token: bytes, prefix: str | None = None, version: Any = None
    ) -> bool:
        """Ends the lease won with ``get_or_lease`` and ``token``, if it still holds that token;
        returns whether it did (not when the lease ran out and another caller holds it
        now)."""
    def start_release_lease(
        self, key: Any, token: bytes, prefix: str | None = None, version: Any = None
    ) -> Operation:
        """``release_lease`` as an ``Operation``."""
    def ttl(self, key: Any, prefix: str | None = None, version: Any = None) -> int | None:
        """The seconds ``key`` has left: ``None`` when it never expires, 0 when it is missing.
        Needs meta commands on the key's node (else ``CacheClientError``)."""
    def start_ttl(self, key: Any, prefix: str | None = None, version: Any = None) -> Operation:
        """``ttl`` as an ``Operation``."""
    def incr_or_create(
        self,
        key: Any,
        delta: int = 1,
        initial: int | None = None,
        exptime: int = 0,
        prefix: str | None = None,
        version: Any = None,
    ) -> int | None:
        """``incr`` that creates a missing counter holding ``initial`` (returned as is, the delta
        not applied), atomically across clients, expiring per ``exptime``; without ``initial``,
        ``None`` for a missing counter."""
    def start_incr_or_create(
        self,
        key: Any,
        delta: int = 1,
        initial: int | None = None,
        exptime: int = 0,
        prefix: str | None = None,
        version: Any = None,
    ) -> Operation:
        """``incr_or_create`` as an ``Operation``."""
    def acquire(
        self,
        key: Any,
        token: bytes,
        exptime: int = 0,
        prefix: str | None = None,
        version: Any = None,
    ) -> bool:
        """Stores the bytes ``token`` (as they are, flags 0) under ``key`` if it holds nothing;
        returns whether it did (a lock's acquire). A failure of the cache raises,
        ``ignore_exc`` or not."""
    def start_acquire(
        self,
        key: Any,
        token: bytes,
        exptime: int = 0,
        prefix: str | None = None,
        version: Any = None,
    ) -> Operation:
        """``acquire`` as an ``Operation``."""
    def delete_if(
        self, key: Any, token: bytes, prefix: str | None = None, version: Any = None
    ) -> bool:
        """Deletes ``key`` only while it holds exactly the bytes ``token`` (a lock released by its
        owner alone); returns whether it did. A failure of the cache raises, ``ignore_exc``
        or not."""
    def start_delete_if(
        self, key: Any, token: bytes, prefix: str | None = None, version: Any = None
    ) -> Operation:
        """``delete_if`` as an ``Operation``."""
    def get(
        self, key: Any, default: Any = None, prefix: str | None = None, version: Any = None
    ) -> Any:
        """The value of ``key``, or ``default`` when it is missing or unreadable."""
    def start_get(
        self, key: Any, default: Any = None, prefix: str | None = None, version: Any = None
    ) -> Operation:
        """``get`` as an ``Operation``."""
    def get_many(
        self, keys: Iterable[Any], prefix: str | None = None, version: Any = None
    ) -> dict[Any, Any]:
        """The values of the keys that are in the cache, as a dict keyed by the keys given."""
    def start_get_many(
        self, keys: Iterable[Any], prefix: str | None = None, version: Any = None
    ) -> Operation:
        """``get_many`` as an ``Operation``."""
    def set(
        self, key: Any, value: Any, exptime: int = 0, prefix: str | None = None, version: Any = None
    ) -> bool:
        """Stores ``value``; returns whether it was stored. ``exptime`` is memcached's: 0 = never
        expires, negative = already expired, over 30 days = a Unix time."""
    def start_set(
        self, key: Any, value: Any, exptime: int = 0, prefix: str | None = None, version: Any = None
    ) -> Operation:
        """``set`` as an ``Operation``."""
    def set_many(
        self,
        mapping: Mapping[Any, Any],
        exptime: int = 0,
        prefix: str | None = None,
        version: Any = None,
    ) -> list[Any]:
        """Stores every item of ``mapping`` in one round trip; returns the keys that were not
        stored."""
    def start_set_many(
        self,
        mapping: Mapping[Any, Any],
        exptime: int = 0,
        prefix: str | None = None,
        version: Any = None,
    ) -> Operation:
        """``set_many`` as an ``Operation``."""
    # End of the generated commands.
    def stats(self, group: str | None = None) -> list[tuple[str, list[tuple[str, str]]]]: ...
    def probe(self) -> list[dict[str, Any]]:
        """Each node asked in turn (for operators' tools): ``node``, ``hostname``,
        ``down_for``, ``round_trip`` (seconds or ``None``), ``stats`` (or ``None``), ``error``
        (or ``None``) and ``last_failure`` (the last failure counted against the node, in
        words, or ``None``). Raises only when there is no node to ask."""
    def metrics(self) -> dict[str, Any]:
        """What this process's client has done so far: per node of the current membership
        and per client (the README's "Observability" section describes each field)."""
    def hot_keys(self, n: int) -> list[tuple[str, str, float]]:
        """The ``n`` keys this process reads most, most read first: ``(node, key as sent,
        reads per second)``, sampled one read in ``hot_keys_sample``."""
    def largest_values(self, n: int) -> list[tuple[str, str, int]]:
        """The ``n`` largest values this process read, largest first: ``(node, key as sent,
        bytes)``, sampled as ``hot_keys``."""
    def close_idle(self) -> None:
        """Closes this process's idle pooled connections."""

@final
class Undecodable:
    """A value found that cannot be decoded (a pickle of a class renamed since, a corrupt or
    oversized compressed value), as ``get_or_lease(..., undecodable=True)`` gives it: pass it
    back as ``take=`` to ask for the lease at once; the winner's recheck then tells that value
    from a new one another caller stored meanwhile."""

    @property
    def large(self) -> bool:
        """Whether it is a large value's index (``large_values``): a get-or-lease does not
        read its chunks, a ``get`` does."""

@final
class Poller:
    """How one event loop's operations wait (an asyncio loop's, or a gevent hub's through
    ``_green``'s ``_HubLoop``): their sockets (an epoll set of ours the loop watches through
    ``fileno()`` with ``dispatch`` as its reader, or without ``epoll`` the loop's own readers)
    and their deadlines (one loop timer at the earliest)."""

    def __new__(cls, event_loop: Any, epoll: bool) -> Poller: ...
    def fileno(self) -> int | None:
        """The epoll set for the loop to watch; ``None`` without one."""
    def dispatch(self) -> None:
        """The loop's reader of the epoll set: resumes the tasks (or greenlets) whose sockets
        are ready."""
    def _expire(self, generation: int) -> None: ...

@final
class Operation:
    """A cache operation driven by the caller's scheduler (an asyncio loop, gevent's hub)."""

    def advance(self) -> int:
        """Writes and reads what the sockets allow: ``DONE``, ``WAIT`` or ``BLOCK``."""
    def wait_for(self) -> tuple[int, int] | None:
        """The socket to wait on next: ``(fd, READ)`` until readable, ``(fd, WRITE)`` until
        writable or readable; ``None`` when there is none."""
    def timeout(self) -> float | None:
        """Seconds until the deadline (0 once passed); ``None`` without a timeout."""
    def prepare(self) -> None:
        """The blocking part (connecting, the first discovery): off the event loop only."""
    def prepare_without_waiting(self) -> None:
        """``prepare()`` without waiting for a pooled connection to be given back (see
        ``waits_for_pool()``): off the event loop only."""
    def waits_for_pool(self) -> bool:
        """After ``advance()`` returned ``BLOCK``: whether all the operation needs is a pooled
        connection given back (every connection of its pools is in use), which a driver may
        wait for its own way, advancing again (past the deadline, ``advance()`` ends it as
        the pool exhausted)."""
    def prepare_later(self, future: asyncio.Future[Any], wait: bool = True) -> None:
        """Runs ``prepare()`` (``prepare_without_waiting()`` when ``wait`` is false) on a native
        worker thread, then completes ``future``."""
    def outcome(self) -> Any:
        """The result once ``advance()`` returned ``DONE``, or its exception. Ends it."""
    def close(self) -> None:
        """Ends the operation early: connections of unfinished exchanges are closed, and its
        socket and deadline are no longer watched."""
    # asyncio: the operation drives itself while a task awaits it on ``poller``'s loop. The
    # await's value is the operation's result (or its error is raised), or the operation
    # itself when it needs a connection made or given back (``advance()`` answered ``BLOCK``).
    def on(self, poller: Poller) -> None:
        """Drives the operation on ``poller``'s loop when awaited."""
    def __await__(self) -> Generator[Any, None, Any]: ...
    def __next__(self) -> Any: ...
    def step(self, resume: Callable[[Operation], object]) -> int:
        """A step of a greenlet's driver: ``DONE`` (``outcome()`` has the result), ``BLOCK``,
        or ``WAIT``: the socket and deadline are watched by the poller, which calls
        ``resume(operation)`` when the socket is ready or the deadline passed."""
    # asyncio's future protocol, spoken to the awaiting task (not for callers).
    _asyncio_future_blocking: bool
    def get_loop(self) -> asyncio.AbstractEventLoop: ...
    def add_done_callback(
        self, callback: Callable[[Operation], object], *, context: contextvars.Context | None = None
    ) -> None: ...
    def remove_done_callback(self, callback: Callable[[Operation], object]) -> int: ...
    def cancel(self, msg: Any = None) -> bool: ...
    def cancelled(self) -> bool: ...
    def done(self) -> bool: ...
    def result(self) -> None:
        """Nothing, or ``CancelledError`` once cancelled: the operation's own is ``outcome()``."""
    def exception(self) -> BaseException | None: ...
    def _wake(self) -> None: ...
    def _expired(self) -> None: ...
    def wait(self) -> Any:
        """The blocking driver: runs the operation (before any ``advance()``) to its end on
        this thread, the GIL released while it waits; returns its result or raises."""
