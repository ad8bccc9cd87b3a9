"""``python -m bench.values``: what each value format costs, on a corpus of typical Django values.

For every serializer (pickle, JSON, msgpack) and compressor (none, zlib, zstd, zstd with a
trained dictionary, lz4), and for signed values: the bytes memcached stores for each value of
the corpus, the ElastiCache Serverless ECPUs a ``get`` of each costs (1 per KB transferred, at
least 1), and the time of a ``set`` and a ``get`` through the Django backend against one local
memcached. Prints the markdown table of docs/value-costs.md (``--out FILE`` writes it there).

The corpus is made here, deterministically: a queryset-like list of dicts (model rows, as
``list(qs.values())`` caches them), a settings-like dict, a rendered template fragment (a
``str``: serializers leave it alone, compressors do not), a JSON API payload (nested dicts and
lists), and a small session-like dict. Every value is one JSON and msgpack can encode (no
datetimes or tuples), so every serializer stores the same thing.

``bench/compression.py`` compares zlib across backends; this compares formats within ours.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django
from django.conf import settings

MIN_COMPRESS_LEN = 256
"""Values from this many bytes (as serialized) are compressed: below it, compression rarely
wins and the ECPU floor (1 per request) hides what it saves."""


def corpus(seed: int = 22) -> dict[str, Any]:
    """The typical values, by name (``seed``: other values of the same shapes)."""
    rng = random.Random(seed)
    first = ["Alice", "Bob", "Chloé", "David", "Emma", "Farid", "Grace", "Hugo", "Inès", "Jun"]
    last = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand"]
    rows = [
        {
            "id": 1000 + i,
            "username": f"{rng.choice(first).lower()}{i}",
            "first_name": rng.choice(first),
            "last_name": rng.choice(last),
            "email": f"user{i}@example.com",
            "is_active": rng.random() > 0.1,
            "is_staff": rng.random() > 0.9,
            "date_joined": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z",
            "last_login": None,
        }
        for i in range(50)
    ]
    config = {
        "site": {"name": "Example", "domain": "www.example.com", "language": "en-gb"},
        "features": {f"flag_{i}": rng.random() > 0.5 for i in range(30)},
        "limits": {"page_size": rng.choice([10, 25, 50]), "rate": f"{rng.randint(1, 9)}00/min"},
        "menu": [
            {"title": f"{rng.choice(last)} {i}", "url": f"/section/{rng.randint(1, 999)}/"}
            for i in range(12)
        ],
    }
    items = "".join(
        f'<li class="product" data-id="{i}"><a href="/products/{i}/">'
        f'<img src="/media/p/{i}.jpg" alt="{rng.choice(first)}\'s pick" loading="lazy">'
        f'<span class="name">Product {i}</span><span class="price">€{rng.randint(5, 500)}.'
        f"{rng.randint(0, 99):02d}</span></a></li>\n"
        for i in range(60)
    )
    fragment = f'<section class="catalogue">\n<ul class="products">\n{items}</ul>\n</section>\n'
    api = {
        "count": 120,
        "next": "https://api.example.com/v1/orders/?page=2",
        "previous": None,
        "results": [
            {
                "id": f"ord_{rng.getrandbits(40):010x}",
                "status": rng.choice(["paid", "shipped", "refunded", "pending"]),
                "total": {"amount": rng.randint(100, 99_999), "currency": "EUR"},
                "customer": {"id": rng.randint(1, 10_000), "country": rng.choice(["FR", "DE"])},
                "lines": [
                    {"sku": f"SKU-{rng.randint(1, 999):03d}", "qty": rng.randint(1, 4)}
                    for _ in range(rng.randint(1, 5))
                ],
            }
            for _ in range(40)
        ],
    }
    session = {"_auth_user_id": "1042", "_auth_user_backend": "django.contrib.auth.backends"}
    return {
        "queryset (50 rows)": rows,
        "settings dict": config,
        "template fragment": fragment,
        "API payload": api,
        "session": session,
    }


def siblings(count: int) -> list[Any]:
    """Values of the corpus's shapes but other contents (other seeds): a dictionary's training
    set, as a sample of the keys an application caches would be."""
    out: list[Any] = []
    for seed in range(1000, 1000 + count):
        values = corpus(seed)
        values["session"] = {**values["session"], "_auth_user_id": str(seed)}
        out.extend(values.values())
    return out


FORMATS: list[tuple[str, dict[str, Any]]] = [
    ("pickle (default)", {}),
    ("pickle + zlib", {"min_compress_len": MIN_COMPRESS_LEN}),
    ("pickle + zstd", {"compressor": "zstd", "min_compress_len": MIN_COMPRESS_LEN}),
    ("pickle + zstd + dictionary", {"compressor": "zstd", "min_compress_len": 64, "dict": True}),
    ("pickle + lz4", {"compressor": "lz4", "min_compress_len": MIN_COMPRESS_LEN}),
    ("json", {"serializer": "json"}),
    ("json + zlib", {"serializer": "json", "min_compress_len": MIN_COMPRESS_LEN}),
    ("json + zstd", {"serializer": "json", "compressor": "zstd", "min_compress_len": 256}),
    ("json + lz4", {"serializer": "json", "compressor": "lz4", "min_compress_len": 256}),
    ("msgpack", {"serializer": "msgpack"}),
    ("msgpack + zstd", {"serializer": "msgpack", "compressor": "zstd", "min_compress_len": 256}),
    ("msgpack + lz4", {"serializer": "msgpack", "compressor": "lz4", "min_compress_len": 256}),
    ("pickle + zstd, signed", {"compressor": "zstd", "min_compress_len": 256, "sign": True}),
]


class _Raw:
    """A pymemcache serde that hands back the bytes as stored."""

    def serialize(self, key: str, value: Any) -> tuple[bytes, int]:
        raise NotImplementedError

    def deserialize(self, key: str, value: bytes, flags: int) -> bytes:
        return value


def _per_call_us(run: Callable[[], None], loops: int) -> tuple[float, float]:
    """Wall and CPU (this process) microseconds per call of ``loops`` calls of ``run``."""
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    for _ in range(loops):
        run()
    return (
        (time.perf_counter_ns() - wall) / loops / 1000,
        (time.process_time_ns() - cpu) / loops / 1000,
    )


def measure(address: str, loops: int, repeats: int, workdir: Path) -> list[dict[str, Any]]:
    """One row per format: stored bytes and get ECPUs per value, set and get µs per value
    (wall and CPU), the formats measured in turn within each repetition so that whatever else
    the machine does falls on all of them alike."""
    from pymemcache.client.base import Client as PymemcacheNode

    from django_elasticache_rs._native import train_zstd_dictionary
    from django_elasticache_rs.backend import ElastiCache

    values = corpus()
    host, port = address.rsplit(":", 1)
    node = PymemcacheNode((host, int(port)), serde=_Raw())
    rows = []
    runs: list[tuple[Callable[[], None], Callable[[], None]]] = []
    for name, options in FORMATS:
        options = dict(options)
        sign = options.pop("sign", False)
        if options.pop("dict", False):
            # Trained on values of the corpus's shapes (not the corpus itself), as pickled.
            trainer = ElastiCache(address, {"OPTIONS": {"discovery": "off"}})
            samples = [trainer.client.serialized(v) for v in siblings(40)]
            path = workdir / "corpus.zstd-dict"
            path.write_bytes(train_zstd_dictionary(samples, 16 * 1024))
            options["zstd_dictionary"] = str(path)
        cache = ElastiCache(
            address, {"OPTIONS": {"discovery": "off", "sign_values": sign, **options}}
        )
        prefix = f"bench{len(rows)}:"
        pairs = [(prefix + label.replace(" ", "_"), value) for label, value in values.items()]
        stored: dict[str, int] = {}
        for (key, value), label in zip(pairs, values, strict=True):
            cache.set(key, value)
            assert cache.get(key) == value, (name, label)
            stored[label] = len(node.get(cache.make_key(key)))

        def set_all(cache: Any = cache, pairs: Any = pairs) -> None:
            for key, value in pairs:
                cache.set(key, value)

        def get_all(cache: Any = cache, keys: Any = tuple(k for k, _ in pairs)) -> None:
            for key in keys:
                cache.get(key)

        runs.append((set_all, get_all))
        rows.append(
            {
                "format": name,
                "stored": stored,
                "ecpus": {label: max(1.0, size / 1024) for label, size in stored.items()},
                "samples": {"set": [], "get": []},
            }
        )
    node.close()
    for set_all, get_all in runs:  # warm
        set_all()
        get_all()
    for _ in range(repeats):
        for row, (set_all, get_all) in zip(rows, runs, strict=True):
            row["samples"]["set"].append(_per_call_us(set_all, loops))
            row["samples"]["get"].append(_per_call_us(get_all, loops))
    count = len(values)
    for row in rows:
        for op in ("set", "get"):
            samples = row["samples"].pop(op)
            row[f"{op}_us"] = statistics.median(s[0] for s in samples) / count
            row[f"{op}_cpu_us"] = statistics.median(s[1] for s in samples) / count
    return rows


def render(rows: list[dict[str, Any]], loops: int, repeats: int) -> str:
    labels = list(rows[0]["stored"])
    base = rows[0]
    base_total = sum(base["stored"].values())
    base_ecpus = sum(base["ecpus"].values())
    head = (
        "| format | "
        + " | ".join(f"{label} (B)" for label in labels)
        + " | total B | vs default | ECPUs per 5 gets | set µs | set CPU µs | get µs"
        + " | get CPU µs |"
    )
    lines = [head, "| --- |" + " ---: |" * (len(labels) + 7)]
    for row in rows:
        total = sum(row["stored"].values())
        ecpus = sum(row["ecpus"].values())
        lines.append(
            f"| {row['format']} | "
            + " | ".join(f"{row['stored'][label]:,}" for label in labels)
            + f" | {total:,} | {total / base_total:.0%} | {ecpus:.1f} ({ecpus / base_ecpus:.0%})"
            f" | {row['set_us']:.1f} | {row['set_cpu_us']:.1f} | {row['get_us']:.1f}"
            f" | {row['get_cpu_us']:.1f} |"
        )
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"`python -m bench.values` — {when}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; µs are per value (wall, and CPU of the client process), the "
        f"median of {repeats} runs of {loops} rounds over the corpus, the formats in turn, "
        f"through the Django backend to one local memcached.\n\n" + "\n".join(lines) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=300, help="rounds over the corpus per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    arguments = parser.parse_args(argv)
    if not settings.configured:
        settings.configure(SECRET_KEY="bench-values", USE_TZ=True)
        django.setup()
    from django_elasticache_rs.local import LocalNode

    with LocalNode() as node, tempfile.TemporaryDirectory() as workdir:
        rows = measure(node.address, arguments.loops, arguments.repeats, Path(workdir))
    table = render(rows, arguments.loops, arguments.repeats)
    print(table)
    if arguments.out:
        arguments.out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
