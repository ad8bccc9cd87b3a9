"""Freezing a memcached process for a test (SIGSTOP), as a node that stops answering does."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

# The longest a process may take to stop (then the test fails, it does not hang).
BOUND = 30


def freeze(pid: int) -> None:
    """Stops the process and waits (bounded) until it is stopped: ``kill`` returns before a
    process running on another CPU stops, and it may answer one more request meanwhile."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + BOUND
    # The state follows the command name, which is in parentheses and may contain spaces.
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, f"process {pid} never stopped"
        time.sleep(0.001)  # polling interval, not synchronisation


def thaw(pid: int) -> None:
    """Lets a frozen process go on."""
    os.kill(pid, signal.SIGCONT)
