"""The soak test's gevent workers (see :mod:`bench.soak`): a monkey-patched process of their own,
as gunicorn's gevent worker is, running greenlets with the soak's traffic against its cluster.

``python bench/soak_greenlets.py JSON`` (run by the soak, not by hand), where JSON gives the
configuration endpoint, the greenlets, the traffic's keys and seed, the backend's options and
the report interval. Prints the greenlets' tally and the process's figures (``Sample``) as
one JSON line every interval, runs until
its stdin is closed, then prints the last tally with ``"final": true``. Run as a script, not
with ``-m``: nothing may be imported before the patching.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 (after monkey-patching, on purpose)
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from gevent.fileobject import FileObjectPosix  # noqa: E402

# The repository's root instead of this script's folder: the soak is the package `bench`.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.soak import (  # noqa: E402
    LogTally,
    Sample,
    Tally,
    Traffic,
    _sum,
    capture_logs,
    configure_django,
    sync_worker,
)

#: Each greenlet's random stream, apart from the threads' and the tasks'.
FIRST_STREAM = 2000


def _tally_line(tally: Tally, logs: LogTally, final: bool) -> str:
    return json.dumps(
        {
            "ops": tally.ops,
            "errors": dict(tally.errors),
            "unexpected": dict(tally.unexpected),
            "wrong": tally.wrong,
            "examples": tally.examples[:5],
            "logs": dict(logs.counts),
            # This process's figures (memory, fds, objects), for the soak's leak check.
            "sample": dataclasses.asdict(Sample.take()),
            "final": final,
        }
    )


def main() -> int:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    # Counted and reported with the tally (to the soak's log file if it has one), as the soak's
    # own are: never to the terminal.
    logs = capture_logs(spec["log_file"])
    configure_django(spec["endpoint"], argparse.Namespace(**spec["options"]))
    from django_elasticache_rs.exceptions import CacheError

    traffic = Traffic(spec["keys"], spec["seed"])
    tallies = [Tally() for _ in range(spec["greenlets"])]
    # The threads' worker, run by greenlets (the patched Event is gevent's).
    stop = threading.Event()

    def report() -> None:
        while True:
            gevent.sleep(spec["interval"])
            print(_tally_line(_sum(tallies), logs, final=False), flush=True)

    greenlets = [
        gevent.spawn(sync_worker, FIRST_STREAM + i, traffic, tally, stop, (CacheError,))
        for i, tally in enumerate(tallies)
    ]
    reporter = gevent.spawn(report)
    # Until the soak closes the pipe (or is gone): read cooperatively, the greenlets run.
    FileObjectPosix(sys.stdin.fileno(), "rb", close=False).read()
    stop.set()
    gevent.joinall(greenlets)
    reporter.kill()
    print(_tally_line(_sum(tallies), logs, final=True), flush=True)
    logs.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
