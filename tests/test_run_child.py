"""``core_rl.common.runs.run_child``: a process stopped by a signal takes its child process with it.

Every peer that runs in its own venv (OmniSafe, Open Bandit Pipeline, RecSim NG, Safety-Gymnasium's
in-process probe) and the phases of the throughput benchmarks run through it; before, a SIGTERM to the
parent alone left the child running as an orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.processes import gone, wait_for_pid

REPO = Path(__file__).resolve().parents[1]


def _start(tmp_path: Path, body: str, child_seconds: float, **popen: object) -> tuple[subprocess.Popen, int]:
    """Start a parent Python process running ``body`` (with ``CHILD``, the command of a child that writes
    its pid and sleeps ``child_seconds``); return it and the child's pid once the child is up."""
    pid_file = tmp_path / "child.pid"
    child = [
        sys.executable,
        "-c",
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep({child_seconds})",
    ]
    parent = f"import sys\nfrom core_rl.common.runs import run_child\nCHILD = {child!r}\n" + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", parent],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )
    return proc, wait_for_pid(pid_file, proc, timeout=60)


def test_sigterm_to_a_plain_parent_ends_it_as_before_and_takes_the_child_along(tmp_path: Path) -> None:
    proc, child = _start(tmp_path, "run_child(CHILD)\nprint('not reached')", child_seconds=120)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert gone(child), "the child outlived its parent"
    assert proc.returncode == -signal.SIGTERM  # the default handler ended it, as without run_child
    assert "not reached" not in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_inside_a_run_the_signal_reaches_the_runs_owner_after_the_child_is_gone(tmp_path: Path, sig: int) -> None:
    body = """
        from core_rl.common.errors import RunInterrupted
        from core_rl.common.runs import interrupt_signals
        try:
            with interrupt_signals():
                run_child(CHILD)
        except RunInterrupted as exc:
            print("owner saw", exc.signal_name, flush=True)
            sys.exit(exc.exit_code)
    """
    proc, child = _start(tmp_path, body, child_seconds=120)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert gone(child), "the child outlived its parent"
    assert out.strip() == f"owner saw {signal.Signals(sig).name}", err
    assert proc.returncode == 128 + sig


def test_a_signal_the_parent_ignores_stays_ignored_and_the_child_finishes(tmp_path: Path) -> None:
    """A job started by a shell with ``&`` ignores SIGINT: run_child does not start honouring it."""

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc, child = _start(
        tmp_path, "print('child exit', run_child(CHILD).returncode)", child_seconds=1.5, preexec_fn=ignore_sigint
    )
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "child exit 0"
