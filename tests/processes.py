"""Helpers for tests that start real processes and check what a signal leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def wait_for_pid(pid_file: Path, proc: subprocess.Popen, timeout: float = 120.0) -> int:
    """The pid a child of ``proc`` writes to ``pid_file`` once it is up (``proc`` must still be running)."""
    deadline = time.monotonic() + timeout
    while not pid_file.exists() or not pid_file.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    return int(pid_file.read_text())


def gone(pid: int, wait_s: float = 5.0) -> bool:
    """Whether ``pid`` has exited within ``wait_s`` (it is killed if not, so that a failing test leaves nothing behind)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return False
