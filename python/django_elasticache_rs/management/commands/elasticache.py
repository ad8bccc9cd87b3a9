"""``manage.py elasticache``: every cache using the backend, as the cluster and the client see
it: the endpoint, mode and configuration version, and per node its address, hostname, state,
a measured round trip and memcached's own ``stats``. ``--json`` for scripts, ``--watch N`` to
follow a scale event live."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_elasticache_rs.status import BACKEND, backend_aliases, duration, report, size

#: The shortest ``--watch`` interval (seconds): each report asks every node for its ``stats``,
#: and an interval of 0 would do so in a loop.
MIN_WATCH = 1.0


def text(entry: dict[str, Any]) -> str:
    """A report as the terminal shows it."""
    where = f"via {entry['endpoint']}" if entry["endpoint"] else ""
    version = entry.get("config_version")
    head = f'cache "{entry["alias"]}": {entry["mode"]} {where}'.rstrip()
    if version is not None:
        head += f", configuration version {version}"
    lines = [head + f", {len(entry['nodes'])} nodes"]
    events = entry.get("cluster_events")
    if events:
        lines.append(
            f"  warm-up: {events['warmup_reads']:,} misses read from previous owners "
            f"({events['warmup_hits']:,} found, {events['warmup_copies']:,} copied); "
            f"migration: {events['migration_reads']:,} read through "
            f"({events['migration_hits']:,} found, {events['migration_copies']:,} copied); "
            f"{events['detour_deletes']:,} deleted there on writes "
            f"({events['detour_delete_failures']:,} could not be)"
        )
    if entry.get("error"):
        lines.append(f"  no node to ask: {entry['error']}")
        return "\n".join(lines)
    columns = ("node", "hostname", "state", "rtt", "version", "uptime", "items", "memory")
    rows: list[tuple[str, ...]] = [(*columns, "evictions", "hit ratio", "connections")]
    for node in entry["nodes"]:
        if node.get("version") is None:
            rows.append(
                (
                    node["address"],
                    node["hostname"],
                    node["state"],
                    "-",
                    f"no answer: {node['error']}",
                )
            )
            continue
        rtt = node["round_trip"]
        ratio = node["hit_ratio"]
        rows.append(
            (
                node["address"],
                node["hostname"],
                node["state"],
                f"{rtt * 1000:.2f} ms" if rtt is not None else "-",
                node["version"],
                duration(node["uptime"]),
                f"{node['curr_items']:,}" if node["curr_items"] is not None else "-",
                f"{size(node['bytes'])} / {size(node['limit_maxbytes'])}",
                f"{node['evictions']:,}" if node["evictions"] is not None else "-",
                f"{ratio:.1%}" if ratio is not None else "-",
                str(node["curr_connections"] if node["curr_connections"] is not None else "-"),
            )
        )
    # A short row's last cell (a node's "no answer") runs on: it sets no column's width.
    full = len(rows[0])
    widths = [
        max(len(row[i]) for row in rows if i < len(row) - 1 or len(row) == full)
        for i in range(full)
    ]
    for row in rows:
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Shows every cache using django-elasticache-rs: endpoint, mode, configuration "
        "version, and per node its state, round trip and memcached's stats."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
        parser.add_argument(
            "--watch",
            type=float,
            metavar="SECONDS",
            help="redraw every SECONDS seconds, at least 1 (to follow a scale event); Ctrl-C stops",
        )
        parser.add_argument(
            "--count",
            type=int,
            metavar="N",
            help="with --watch: stop after N reports (at least 1)",
        )
        parser.add_argument("aliases", nargs="*", help="only these caches (default: all)")

    def handle(self, *args: Any, **options: Any) -> None:
        # Checked here rather than by argparse types: call_command's keyword options skip them.
        watch: float | None = options["watch"]
        if watch is not None and not (math.isfinite(watch) and watch >= MIN_WATCH):
            raise CommandError(
                f"--watch must be at least {MIN_WATCH:g} second (each report asks every node "
                f"for its stats), not {watch:g}"
            )
        count: int | None = options["count"]
        if count is not None and count < 1:
            raise CommandError(f"--count must be at least 1, not {count}")
        ours = backend_aliases()
        for alias in options["aliases"]:
            if alias not in ours:
                raise CommandError(_not_ours(alias, ours))
        aliases = options["aliases"] or ours
        if not aliases:
            self.stderr.write("No cache uses django_elasticache_rs.backend.ElastiCache.")
            return
        shown = 0
        while True:
            entries = [report(alias, caches[alias]) for alias in aliases]  # type: ignore[arg-type]
            if options["json"]:
                self.stdout.write(json.dumps(entries, indent=None if watch else 2))
            else:
                if watch is not None and self.stdout.isatty():
                    self.stdout.write("\033[2J\033[H", ending="")  # clear, then redraw
                self.stdout.write("\n\n".join(text(entry) for entry in entries))
            shown += 1
            if watch is None or (count is not None and shown >= count):
                return
            time.sleep(watch)  # the redraw interval the operator asked for


def _not_ours(alias: str, ours: list[str]) -> str:
    """Why ``alias`` cannot be reported on (``repr``: whatever was typed, shown as typed)."""
    if alias not in settings.CACHES:
        why = f"No cache {alias!r} in CACHES"
    else:
        why = f"Cache {alias!r} does not use {BACKEND}"
    return why + (f" (those that do: {', '.join(ours)})" if ours else "")
