"""``manage.py elasticache``: every cache using the backend, as the cluster and the client see
it: the endpoint, mode and configuration version, and per node its address, hostname, state,
a measured round trip and memcached's own ``stats``. ``--json`` for scripts, ``--watch N`` to
follow a scale event live. ``--train-zstd-dictionary FILE`` trains a zstd dictionary (for
``OPTIONS["zstd_dictionary"]``) on the values of the keys given.

A health check too: after the report it exits with

* 0: every node of every cache reported on answered;
* 1: a usage error (an unknown alias, a bad ``--watch``), as any Django command;
* 2: a node is down (marked down, or did not answer the probe);
* 3: a cache has no membership (no node to ask: the configuration endpoint never answered).

(The worst of the last report, with ``--watch`` and ``--count``.) Its own probes' failures are
in the report, so they are not logged as well (no "cache failure ignored" lines)."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_elasticache_rs import hot_key_reports
from django_elasticache_rs._native import train_zstd_dictionary
from django_elasticache_rs.status import BACKEND, backend_aliases, duration, report, size

#: ``--dictionary-size``'s default: zstd's own (``zstd --train``'s ``--maxdict``).
DICTIONARY_SIZE = 112_640

#: Fewest values a dictionary is trained on: zstd needs several per kilobyte of dictionary
#: to find what they share, and refuses (or makes a useless one) with fewer.
MIN_SAMPLES = 10
#: Exit statuses (see the module's docstring).
HEALTHY, NODE_DOWN, NO_MEMBERSHIP = 0, 2, 3

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
                    f"no answer: {node['reason']}",
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
    events = entry.get("cluster_events")
    if events:
        lines.append(
            f"  this process: gutter {events['gutter_reads']:,} reads, "
            f"{events['gutter_writes']:,} writes; invalidations "
            f"{events['invalidations_replayed']:,} replayed, "
            f"{events['invalidations_dropped']:,} dropped, "
            f"{events['invalidations_waiting']:,} waiting"
        )
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
        parser.add_argument(
            "--train-zstd-dictionary",
            metavar="FILE",
            help="train a zstd dictionary (for OPTIONS['zstd_dictionary']) on the values of the "
            "keys read from --keys (one per line; '-' for stdin) in the one cache named, and "
            "write it to FILE",
        )
        parser.add_argument(
            "--keys",
            metavar="FILE",
            help="with --train-zstd-dictionary: the keys whose values are the sample (the keys "
            "your code passes to cache.get, one per line)",
        )
        parser.add_argument(
            "--dictionary-size",
            type=int,
            default=DICTIONARY_SIZE,
            metavar="BYTES",
            help=f"with --train-zstd-dictionary: its largest size (default {DICTIONARY_SIZE})",
        )
        parser.add_argument(
            "--hot-keys",
            type=int,
            nargs="?",
            const=10,
            metavar="N",
            help="the N (default 10) hottest keys and largest values of the workers that report "
            "them (OPTIONS['hot_keys_report']), instead of the nodes",
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
        if options["train_zstd_dictionary"]:
            self._train(options, ours)
            return
        if options["hot_keys"] is not None:
            self._hot_keys(options, options["aliases"] or ours)
            return
        aliases = options["aliases"] or ours
        if not aliases:
            self.stderr.write("No cache uses django_elasticache_rs.backend.ElastiCache.")
            return
        shown = 0
        while True:
            with _quiet_failure_logs(aliases):
                entries = [report(alias, caches[alias]) for alias in aliases]  # type: ignore[arg-type]
            at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            if options["json"]:
                if watch is not None:
                    for entry in entries:
                        entry["time"] = at
                self.stdout.write(json.dumps(entries, indent=None if watch else 2))
            else:
                if watch is not None:
                    if self.stdout.isatty():
                        self.stdout.write("\033[2J\033[H", ending="")  # clear, then redraw
                    self.stdout.write(f"--- {at} ---")
                self.stdout.write("\n\n".join(text(entry) for entry in entries))
            shown += 1
            if watch is None or (count is not None and shown >= count):
                break
            time.sleep(watch)  # the redraw interval the operator asked for
        status, why = health(entries)
        if status != HEALTHY:
            raise CommandError(why, returncode=status)

    def _hot_keys(self, options: dict[str, Any], aliases: list[str]) -> None:
        """``--hot-keys``: the reports the workers wrote into each cache's cluster, merged (a
        key's rates summed over the workers that reported it)."""
        n: int = options["hot_keys"]
        if not 1 <= n <= hot_key_reports.TOP * 10:
            raise CommandError(f"--hot-keys must be 1 to {hot_key_reports.TOP * 10}, not {n}")
        entries = []
        for alias in aliases:
            cache: Any = caches[alias]
            merged = hot_key_reports.merge(hot_key_reports.read(cache.handle), n)
            entries.append({"alias": alias, **merged})
        if options["json"]:
            self.stdout.write(json.dumps(entries, indent=2))
            return
        self.stdout.write("\n\n".join(hot_keys_text(entry) for entry in entries))

    def _train(self, options: dict[str, Any], ours: list[str]) -> None:
        """``--train-zstd-dictionary``: the sample is the values of the keys given, read
        through the cache and serialized as its serializer writes them (a dictionary is
        trained on what zstd will be given); memcached cannot list its keys (ElastiCache
        Serverless has no ``lru_crawler``), so they are named."""
        aliases = options["aliases"] or ours
        if len(aliases) != 1:
            raise CommandError(
                "--train-zstd-dictionary needs one cache alias "
                f"(those using the backend: {', '.join(ours) or 'none'})"
            )
        size: int = options["dictionary_size"]
        if not 256 <= size <= 16 << 20:
            raise CommandError(f"--dictionary-size must be 256 to 16777216 bytes, not {size}")
        if not options["keys"]:
            raise CommandError("--train-zstd-dictionary needs --keys FILE (one key per line)")
        if options["keys"] == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(options["keys"], encoding="utf-8") as file:
                lines = file.read().splitlines()
        keys = [line.strip() for line in lines if line.strip()]
        cache: Any = caches[aliases[0]]
        found = cache.get_many(keys)
        samples = [cache.client.serialized(value) for value in found.values()]
        if len(samples) < MIN_SAMPLES:
            raise CommandError(
                f"only {len(samples)} of the {len(keys)} keys given hold a value: a dictionary "
                f"needs at least {MIN_SAMPLES} samples (more is better: hundreds)"
            )
        try:
            dictionary = train_zstd_dictionary(samples, size)
        except ValueError as error:
            raise CommandError(str(error)) from error
        with open(options["train_zstd_dictionary"], "wb") as file:
            file.write(dictionary)
        self.stdout.write(
            f"wrote a {len(dictionary):,}-byte zstd dictionary trained on {len(samples)} values "
            f"({sum(map(len, samples)):,} bytes) to {options['train_zstd_dictionary']}"
        )


def hot_keys_text(entry: dict[str, Any]) -> str:
    """A cache's merged hot-key reports as the terminal shows them."""
    head = f'cache "{entry["alias"]}": '
    if not entry["workers"]:
        return head + (
            "no worker reports its hot keys (set OPTIONS['hot_keys_report'] to a number of "
            "seconds, and keep hot_keys_sample above 0)"
        )
    workers, hosts = entry["workers"], entry["hosts"]
    lines = [
        head + f"hot keys reported by {workers} worker{'s' * (workers != 1)} on {hosts} "
        f"host{'s' * (hosts != 1)} (each a sample of its reads; rates summed)"
    ]

    def table(rows: list[tuple[str, ...]], numbers: int) -> None:
        """Its first ``numbers`` columns right-aligned."""
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = [c.rjust(widths[i]) if i < numbers else c for i, c in enumerate(row)]
            lines.append("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip())

    def key(item: dict[str, Any]) -> str:
        # Shown escaped: a key is the application's, and may hold anything a terminal acts on.
        shown = json.dumps(item["key"])[1:-1]
        return shown if item["version"] in (None, 1) else f"{shown} (version {item['version']})"

    hot: list[tuple[str, ...]] = [("reads/s", "workers", "node", "key")]
    for item in entry["hot_keys"]:
        rate = f"{item['reads_per_second']:,.1f}"
        hot.append((rate, str(item["workers"]), item["node"], key(item)))
    table(hot, 2)
    if entry["largest_values"]:
        lines.append("  largest values:")
        largest: list[tuple[str, ...]] = [("size", "node", "key")]
        for item in entry["largest_values"]:
            largest.append((size(item["bytes"]), item["node"], key(item)))
        table(largest, 1)
    return "\n".join(lines)


def health(entries: list[dict[str, Any]]) -> tuple[int, str]:
    """The exit status of a report and why: the worst of its caches."""
    empty = [entry["alias"] for entry in entries if not entry["nodes"]]
    if empty:
        return NO_MEMBERSHIP, f"no membership: {', '.join(empty)}"
    down = [
        f"{entry['alias']} {node['address']}"
        for entry in entries
        for node in entry["nodes"]
        if node["state"] != "up"
    ]
    if down:
        return NODE_DOWN, f"{len(down)} node{'s' if len(down) > 1 else ''} down: {', '.join(down)}"
    return HEALTHY, ""


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _quiet_failure_logs(aliases: list[str]) -> Iterator[None]:
    """The failure loggers of ``aliases``' clients (their ``logger`` option) silenced while the
    report probes the nodes: each failure is in the report already. The command runs in a
    process of its own, so no other caller's failure goes unlogged."""
    drop = _DropAll()
    loggers = {
        logging.getLogger(str(dict(caches[alias]._settings.native).get("logger")))  # type: ignore[attr-defined]
        for alias in aliases
    }
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def _not_ours(alias: str, ours: list[str]) -> str:
    """Why ``alias`` cannot be reported on (``repr``: whatever was typed, shown as typed)."""
    if alias not in settings.CACHES:
        why = f"No cache {alias!r} in CACHES"
    else:
        why = f"Cache {alias!r} does not use {BACKEND}"
    return why + (f" (those that do: {', '.join(ours)})" if ours else "")
