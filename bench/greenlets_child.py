"""The gevent rows' child process (see :mod:`bench.greenlets`): monkey-patched first thing, as
gunicorn's gevent worker is, then one backend's ``get`` and ``get_many`` run by greenlets.

``python bench/greenlets_child.py --backend NAME --location JSON (--estimate SECONDS |
--iterations JSON | --paired JSON)`` prints one JSON line: with ``--estimate``, each workload's
seconds per operation after a warm-up; with ``--iterations`` (operations per workload), a sample
per workload; with ``--paired`` (``{"rounds": N, "share": SECONDS}``, ours only), ``get_many``
and ``get_many_blocking`` in turn, a share of about ``SECONDS`` each, ``N`` rounds: their
samples, in order (see ``bench/paired.py``). Run as a script, not with ``-m``: nothing may be
imported before the patching.

The greenlets are a crew that lives as long as the child: a measurement hands each of them its
share of the operations and waits for all to report back. Spawning 50 greenlets per
measurement and joining them cost 10-50 µs a greenlet here (two runs), which at the 4-6 calls
each gets of a 200-300-call sample added up to 11% to a row, and the most to the row with the
fewest calls per greenlet (gevent ``get_many`` had 6, its blocking reference 33).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 (after monkey-patching, on purpose)
import gc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from gevent.queue import Queue  # noqa: E402

# The repository's root instead of this script's folder: the benchmark is the package `bench`.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.backends import BACKENDS, OURS  # noqa: E402
from bench.greenlets import GREENLETS  # noqa: E402
from bench.workloads import BATCH, VALUE_100, batch_keys  # noqa: E402

#: Each workload runs at least this long before it is timed, in every child (a fresh process:
#: its first thousand calls cost more than the steady state a long-lived worker is in).
WARM_UP = 0.25


def _workloads(cache: Any, blocking: Any) -> dict[str, Callable[[int], None]]:
    """Each workload's body: ``n`` operations of one greenlet. With ``blocking`` (our backend
    with ``OPTIONS["gevent"] = False``), also ``get_many_blocking``: the same ``get_many``
    blocking the hub, so each greenlet's calls run one after another, as a thread's would: the
    reference the gevent ``get_many`` is held to, in the same process."""
    keys = batch_keys()  # the blocking get_many row's keys
    failed = cache.set_many(dict.fromkeys(keys, VALUE_100))
    if failed or cache.get(keys[0]) != VALUE_100 or len(cache.get_many(keys)) != BATCH:
        raise RuntimeError("the gevent rows' data did not read back")
    get, get_many = cache.get, cache.get_many
    hit = keys[0]

    def gets(n: int) -> None:
        for _ in range(n):
            if get(hit) is None:
                raise RuntimeError("get missed under gevent")

    def many(n: int) -> None:
        for _ in range(n):
            if len(get_many(keys)) != BATCH:
                raise RuntimeError("get_many missed under gevent")

    bodies = {"get": gets, "get_many": many}
    if blocking is not None:
        blocking_get_many = blocking.get_many

        def many_blocking(n: int) -> None:
            for _ in range(n):
                if len(blocking_get_many(keys)) != BATCH:
                    raise RuntimeError("the blocking get_many missed")

        bodies["get_many_blocking"] = many_blocking
    return bodies


class Crew:
    """``GREENLETS`` greenlets started once, each running the jobs it is handed: a body and
    its count of operations."""

    def __init__(self) -> None:
        self._jobs: Queue[tuple[Callable[[int], None], int]] = Queue()
        self._done: Queue[BaseException | None] = Queue()
        self._greenlets = [gevent.spawn(self._work) for _ in range(GREENLETS)]

    def _work(self) -> None:
        while True:
            body, n = self._jobs.get()
            try:
                body(n)
            except BaseException as exc:  # handed to the measurement, which raises it
                self._done.put(exc)
            else:
                self._done.put(None)

    def timed(self, body: Callable[[int], None], n: int) -> dict[str, float]:
        """``n`` operations shared by the greenlets (at least one each), all handed out
        together."""
        per_greenlet = max(1, n // GREENLETS)
        gc.collect()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in self._greenlets:
            self._jobs.put((body, per_greenlet))
        failures = [self._done.get() for _ in self._greenlets]
        wall1, cpu1 = time.perf_counter(), time.process_time()
        for failure in failures:
            if failure is not None:
                raise failure
        return {"wall": wall1 - wall0, "cpu": cpu1 - cpu0, "ops": per_greenlet * GREENLETS}


def _per_op(crew: Crew, body: Callable[[int], None], seconds: float) -> float:
    """Seconds per operation of ``body``, from the first sample (its count doubling from one
    call a greenlet) that lasts ``seconds``."""
    n = GREENLETS
    while (sample := crew.timed(body, n))["wall"] < seconds:
        n *= 2
    return sample["wall"] / sample["ops"]


def _paired(
    crew: Crew, workloads: dict[str, Callable[[int], None]], rounds: int, share: float
) -> dict[str, list[dict[str, float]]]:
    """``get_many`` and ``get_many_blocking`` in turn (the order swapped each round), a share of
    about ``share`` seconds each, ``rounds`` rounds; each one's samples in order."""
    names = ["get_many", "get_many_blocking"]
    calls = {}
    for name in names:
        per_op = _per_op(crew, workloads[name], share / 4)
        calls[name] = max(1, round(share / per_op / GREENLETS)) * GREENLETS
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for turn in range(rounds):
        for name in names if turn % 2 == 0 else names[::-1]:
            samples[name].append(crew.timed(workloads[name], calls[name]))
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True, choices=[b.name for b in BACKENDS])
    parser.add_argument("--location", required=True, help="LOCATION as JSON")
    parser.add_argument("--estimate", type=float, help="seconds of the calibration runs")
    parser.add_argument("--iterations", help="operations per workload, as JSON")
    parser.add_argument("--paired", help='{"rounds": N, "share": SECONDS}, as JSON (ours only)')
    args = parser.parse_args()
    backend = next(b for b in BACKENDS if b.name == args.backend)

    import django
    from django.conf import settings
    from django.core.cache import caches

    location = json.loads(args.location)
    aliases = {"default": backend.settings(location)}
    if backend.name == OURS.name:
        blocking = backend.settings(location)
        aliases["blocking"] = {**blocking, "OPTIONS": {**blocking["OPTIONS"], "gevent": False}}
    settings.configure(CACHES=aliases)
    django.setup()
    workloads = _workloads(caches["default"], caches["blocking"] if "blocking" in aliases else None)
    crew = Crew()
    for body in workloads.values():
        # Connections (one per greenlet), discovery, then the steady state.
        n = GREENLETS * 4
        while crew.timed(body, n)["wall"] < WARM_UP:
            n *= 2
    if args.estimate is not None:
        estimate = args.estimate
        print(json.dumps({name: _per_op(crew, body, estimate) for name, body in workloads.items()}))
        return 0
    if args.paired is not None:
        print(json.dumps(_paired(crew, workloads, **json.loads(args.paired))))
        return 0
    iterations = json.loads(args.iterations)
    print(json.dumps({name: crew.timed(workloads[name], n) for name, n in iterations.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
