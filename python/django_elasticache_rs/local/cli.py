"""``python -m django_elasticache_rs.local``: runs a local ElastiCache-compatible cluster until
SIGINT/SIGTERM/SIGHUP, prints the ``CACHES`` entry to use and the control address (see
:mod:`django_elasticache_rs.local.control` for the control protocol), and stops everything it
started when it ends, whatever the reason.

``--tls`` serves everything over TLS (like ElastiCache in-transit encryption) with certificates
made at start for the name ``localhost``, and prints where the CA certificate is and how to
trust it; ``--require-client-cert`` (implies ``--tls``) makes the nodes require the printed
client certificate.

``python -m django_elasticache_rs.local ctl PORT COMMAND`` sends one command to a running
cluster's control port (``PORT``, or ``host:port``) and prints the reply, without ``nc``."""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
from types import FrameType, TracebackType

from django_elasticache_rs.local.cluster import LocalCluster
from django_elasticache_rs.local.control import HELP, ControlError, ControlServer, ask

__all__ = ["main"]

_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m django_elasticache_rs.local",
        description="Run a local ElastiCache-compatible cluster (memcached nodes behind a "
        "configuration endpoint) until interrupted.",
        epilog="`python -m django_elasticache_rs.local ctl PORT COMMAND` sends a command (add, "
        "remove, kill, freeze, thaw, restart, status, fault, endpoint, help) to a running "
        "cluster's control port.",
    )
    parser.add_argument("--nodes", type=int, default=3, help="nodes at start (default 3)")
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="configuration endpoint port (default: random); give one so that the printed "
        "LOCATION stays valid across restarts",
    )
    parser.add_argument(
        "--control-port", type=int, default=0, help="control interface port (default: random)"
    )
    parser.add_argument(
        "--legacy",
        action="store_true",
        help="answer only the legacy `get AmazonElastiCache:cluster` (engines before 1.4.14)",
    )
    parser.add_argument(
        "--discovery-interval",
        type=float,
        default=5.0,
        help="discovery_interval in the printed OPTIONS (default 5 seconds)",
    )
    parser.add_argument("--memory-mb", type=int, default=64, help="memory per node (default 64)")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve TLS only, like ElastiCache in-transit encryption (needs the cryptography "
        "package); certificates for `localhost` are made in a temporary directory",
    )
    parser.add_argument(
        "--require-client-cert",
        action="store_true",
        help="with TLS (implies --tls), the nodes accept only clients presenting the printed "
        "client certificate",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print only one line of JSON: CACHES, configuration_endpoint, control, nodes, "
        "version, legacy, tls, pid",
    )
    return parser


class _SignalWaiter:
    """From ``__enter__`` on, SIGINT/SIGTERM/SIGHUP no longer kill the process: :meth:`wait`
    returns at the first one (even one received before it was called), and any signal during
    clean-up is ignored. ``__exit__`` restores the previous handlers."""

    def __enter__(self) -> _SignalWaiter:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._write.fileno())
        self._previous = {signum: signal.signal(signum, _noted) for signum in _SIGNALS}
        return self

    def wait(self) -> int:
        """Blocks until a signal arrives; returns its number."""
        while True:
            select.select([self._read], [], [])
            try:
                data = self._read.recv(64)
            except BlockingIOError:
                continue
            if data:
                return data[0]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._read.close()
        self._write.close()


def _noted(signum: int, frame: FrameType | None) -> None:
    """Signal handler that does nothing: the wake-up fd has recorded the signal already."""


def _discovery_interval(args: argparse.Namespace) -> float | int:
    interval: float = args.discovery_interval
    return int(interval) if interval.is_integer() else interval


def _tls_summary(cluster: LocalCluster) -> dict[str, object] | None:
    """The certificate paths for ``--json`` (``None`` without TLS)."""
    if not cluster.tls:
        return None
    certificates = cluster.certificates
    return {
        "ca_file": str(certificates.ca_cert),
        "client_cert_file": str(certificates.client_cert),
        "client_key_file": str(certificates.client_key),
        "require_client_cert": cluster.require_client_cert,
        "server_hostname": certificates.server_hostname,
    }


def _announce(cluster: LocalCluster, control: ControlServer, args: argparse.Namespace) -> None:
    caches = cluster.caches_setting(discovery_interval=_discovery_interval(args))
    if args.json:
        summary = {
            "CACHES": caches,
            "configuration_endpoint": cluster.configuration_endpoint,
            "control": control.address,
            "nodes": cluster.addresses,
            "version": cluster.version,
            "legacy": cluster.legacy,
            "tls": _tls_summary(cluster),
            "pid": os.getpid(),
        }
        print(json.dumps(summary), flush=True)
        return
    port = control.address.rsplit(":", 1)[1]
    modes = [name for name, on in (("legacy mode", cluster.legacy), ("TLS", cluster.tls)) if on]
    mode = f" ({', '.join(modes)})" if modes else ""
    print(f"Local ElastiCache cluster{mode}: config version {cluster.version}")
    print(f"  configuration endpoint  {cluster.configuration_endpoint}")
    print(f"  nodes                   {' '.join(cluster.addresses)}")
    print(f"  control                 {control.address}")
    print(f"      try: python -m django_elasticache_rs.local ctl {port} status")
    if cluster.tls:
        _announce_tls(cluster)
    print("\nUse it in your settings:\n")
    print("CACHES = " + json.dumps(caches, indent=4))
    print("\nCtrl-C stops it.", flush=True)


def _announce_tls(cluster: LocalCluster) -> None:
    """Where the certificates are and how to trust the CA."""
    certificates = cluster.certificates
    ca = str(certificates.ca_cert)
    required = "required" if cluster.require_client_cert else "not required"
    print(f"  CA certificate          {ca}")
    print(f"  client certificate      {certificates.client_cert} ({required})")
    print(f"  client key              {certificates.client_key}")
    print(
        f"\nTLS only, with certificates for {certificates.server_hostname!r} (no IP address) "
        "signed by the CA above, deleted\nwhen this stops. The backend OPTIONS that trust it:\n"
    )
    print(f"    {json.dumps(cluster.tls_options())}")
    print("\nor through a tls_context:\n")
    print(f"    context = ssl.create_default_context(cafile={ca!r})")
    if cluster.require_client_cert:
        client = f"{str(certificates.client_cert)!r}, {str(certificates.client_key)!r}"
        print(f"    context.load_cert_chain({client})")
    host, port = cluster.configuration_endpoint.rsplit(":", 1)
    print("\nor try it from a shell (then type `config get cluster`):\n")
    print(
        f"    openssl s_client -quiet -connect 127.0.0.1:{port} -servername {host} "
        f"-verify_hostname {host} -verify_return_error -CAfile {ca}"
    )


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    for name in ("port", "control_port"):
        if not 0 <= getattr(args, name) <= 65535:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 65535")
    if args.discovery_interval < 0:
        parser.error("--discovery-interval must not be negative")


def _ctl_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m django_elasticache_rs.local ctl",
        description="Send one command to a running local cluster's control port and print the "
        "reply (exit status 1 if it answers ERROR or cannot be reached).",
        epilog="commands: " + "; ".join(" ".join(line.split()[:1]) for line in HELP),
    )
    parser.add_argument("address", metavar="PORT", help="the control port, or host:port")
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, help="the command and its arguments, e.g. add"
    )
    return parser


def _ctl(argv: list[str]) -> int:
    """``ctl PORT COMMAND...``: one command to the control port; 0 on ``OK``, else 1."""
    parser = _ctl_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.error("give a command (try help)")
    command = " ".join(args.command)
    try:
        reply = ask(args.address, command)
    except ValueError as error:
        parser.error(str(error))
    except ControlError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: control port {args.address}: {error}", file=sys.stderr)
        return 1
    for line in reply:
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (0, or 1 if the cluster could not start, or for
    ``ctl``, if the command failed)."""
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["ctl"]:
        return _ctl(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    with _SignalWaiter() as waiter:
        cluster = LocalCluster(
            args.nodes,
            memory_mb=args.memory_mb,
            legacy=args.legacy,
            endpoint_port=args.port,
            tls=args.tls or args.require_client_cert,
            require_client_cert=args.require_client_cert,
        )
        control = ControlServer(cluster, port=args.control_port)
        try:
            try:
                cluster.start()
                control.start()
            except (OSError, RuntimeError) as error:  # includes MemcachedNotInstalled
                print(f"error: {error}", file=sys.stderr)
                return 1
            _announce(cluster, control, args)
            waiter.wait()
        finally:
            control.stop()
            cluster.stop()
    return 0
