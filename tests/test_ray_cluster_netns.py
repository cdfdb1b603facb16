"""The real Ray cluster tests (:mod:`tests.test_ray_cluster`), run inside a network namespace of their own.

Ray's GCS server and raylets listen on every interface (``*:PORT`` in ``ss -ltn``) whatever
``--node-ip-address`` says, and this project starts servers on loopback only. So the cluster and the
learner run in a namespace made with ``unshare -n`` (``unshare -rn`` where only user namespaces are
allowed) whose one interface is ``lo``: there, every interface is loopback. Skipped, with one line,
where neither namespace can be made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _namespace_prefix() -> list[str] | None:
    """The ``unshare`` command that makes a private network namespace here, or None."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        probe = subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


def test_ray_cluster_tests_in_a_private_network_namespace():
    pytest.importorskip("ray", reason="ray is not installed (pip install 'deeprl-suite[distributed]')")
    prefix = _namespace_prefix()
    if prefix is None:
        pytest.skip("no private network namespace can be made here (unshare -n / -rn and ip are needed)")
    script = 'ip link set lo up && exec "$0" -m pytest -q -p no:cacheprovider -rs tests/test_ray_cluster.py'
    # a clean environment for the cluster: a local ``ray.init()`` earlier in this session leaves its
    # settings in os.environ (RAY_AUTH_MODE=token, RAY_CLIENT_MODE, PYTHONBREAKPOINT), which break a fresh cluster
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONBREAKPOINT"}
    env["DEEPRL_PRIVATE_NETNS"] = "1"
    out = subprocess.run(
        [*prefix, "sh", "-c", script, sys.executable], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500
    )
    tail = (out.stdout[-6000:] + "\n" + out.stderr[-3000:]).strip()
    assert out.returncode == 0, tail
    summary = out.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary and "failed" not in summary, tail
