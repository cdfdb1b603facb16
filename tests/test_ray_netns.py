"""Every test that starts Ray (marked ``ray_local``), run inside a network namespace of its own.

See :mod:`tests.netns`: Ray's servers listen on every interface, so the local sessions
(:mod:`tests.test_distributed`, Ray Tune in :mod:`tests.test_autotune`) and the two-node cluster
(:mod:`tests.test_ray_cluster`) run where loopback is the only interface. Skipped, with one line,
where no namespace can be made (the tests then run in place, in the main session).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns import IN_PRIVATE_NETWORK, namespace_prefix

ROOT = Path(__file__).resolve().parents[1]
FILES = [
    "tests/test_distributed.py",
    "tests/test_autotune.py",
    "tests/test_ray_cluster.py",
    "tests/test_recsys_ray_data.py",
]
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("path", FILES)
def test_ray_tests_in_a_private_network_namespace(path):
    """One pytest process per file: a Ray session leaves settings in os.environ that break the next one."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'deeprl-suite[distributed]')")
    if IN_PRIVATE_NETWORK:
        pytest.skip("already inside the private network namespace")
    prefix = namespace_prefix()
    if prefix is None:
        pytest.skip("no private network namespace can be made here: the ray_local tests ran in place")
    script = 'ip link set lo up && exec "$0" -m pytest -q -p no:cacheprovider -rs -m ray_local "$1"'
    # a clean environment for Ray: a local ``ray.init()`` in this session leaves its settings in os.environ
    # (RAY_AUTH_MODE=token, RAY_CLIENT_MODE, PYTHONBREAKPOINT), which break a fresh cluster
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONBREAKPOINT"}
    env["DEEPRL_PRIVATE_NETNS"] = "1"
    out = subprocess.run(
        [*prefix, "sh", "-c", script, sys.executable, path],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    tail = (out.stdout[-6000:] + "\n" + out.stderr[-3000:]).strip()
    assert out.returncode == 0, tail
    summary = out.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary and "failed" not in summary, tail
