"""The interpreter's exit with native threads of ours still at work: it must end cleanly,
never abort."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
from pathlib import Path

from django_elasticache_rs.local import LocalNode

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_a_process_exits_cleanly_while_native_workers_finish(memcached: LocalNode) -> None:
    """Native workers hand results over as the interpreter exits: none may enter it once it is
    being finalized (Python ends such a thread with a forced unwind, which aborts the process:
    it did, in about 1 run in 17, before the exit hook waited for them). Many short processes,
    since each exit is one chance at the race."""
    script = REPO_ROOT / "tests" / "support" / "exit_after_async.py"

    def one_run(_: int) -> tuple[int, str, str]:
        done = subprocess.run(
            [sys.executable, str(script), memcached.address],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.returncode, done.stdout, done.stderr

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(one_run, range(60)))
    failed = [(code, err[-500:]) for code, out, err in runs if code != 0 or out != "done\n"]
    assert not failed, f"{len(failed)} of {len(runs)} runs ended badly: {failed[:3]}"
