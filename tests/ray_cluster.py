"""A real Ray cluster for tests, started the way a user starts one: :class:`RayCluster`.

``ray start --head`` and each further node ``ray start --address=HEAD``, every node a separate
``ray start --block`` process in its own session, in a private temp dir, with its own free ports
(GCS, dashboard, agents, metrics), one CPU each. :meth:`RayCluster.kill_node` SIGKILLs every process
of one node's session (its raylet, agents and the workers it spawned: a machine lost), and
:meth:`RayCluster.stop` stops the whole cluster the same way after a SIGTERM. Never ``ray stop``: it
stops every Ray process of the machine's user, other people's clusters included.

The health checks are tightened (``RAY_health_check_*``: a dead node is declared in about a second
instead of half a minute) and token authentication is off (``RAY_AUTH_MODE=disabled``, Ray ≥ 2.5x's
default is on): the cluster is private to the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.postgres import free_port

RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "0",
}


def _ray_exe() -> str:
    import sys

    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else "ray"


def session_pids(sid: int) -> list[int]:
    """Every process of session ``sid`` (a node's ``ray start`` and all it spawned)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def _signal_session(sid: int, sig: int) -> None:
    for pid in session_pids(sid):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


class RayCluster:
    """A head node plus worker nodes on this machine (see the module docstring)."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths are limited
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []
        self.killed: set[int] = set()  # pids of nodes killed on purpose
        self.env = {**os.environ, **RAY_ENV}
        self.env.pop("RAY_ADDRESS", None)

    def _start(self, name: str, extra: list[str]) -> subprocess.Popen:
        cmd = [_ray_exe(), "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1"]
        cmd += ["--temp-dir", str(self.tmp), "--disable-usage-stats"]
        cmd += [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}"]
        cmd += [f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}", *extra]
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - the node writes it while it runs
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.nodes.append(proc)
        return proc

    def start_head(self) -> None:
        self._start(
            "head", ["--head", f"--port={self.port}", "--include-dashboard=false", f"--dashboard-port={free_port()}"]
        )

    def add_node(self, resources: dict[str, float]) -> subprocess.Popen:
        name = f"node{len(self.nodes)}"
        return self._start(name, [f"--address={self.address}", f"--resources={json.dumps(resources)}"])

    def wait_for(self, resource: str, amount: float, timeout: float = 90.0) -> None:
        """Until the cluster (seen from this process's Ray connection) offers ``amount`` of ``resource``."""
        import ray

        deadline = time.monotonic() + timeout
        while ray.cluster_resources().get(resource, 0.0) < amount:
            for i, node in enumerate(self.nodes):
                if node.pid not in self.killed and node.poll() is not None:
                    logs = "\n".join(p.read_text()[-1500:] for p in self.tmp.glob("*.log"))
                    raise AssertionError(f"ray node {i} exited with {node.returncode}:\n{logs}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {amount} '{resource}' in the cluster after {timeout:.0f} s")
            time.sleep(0.2)

    def kill_node(self, node: subprocess.Popen) -> None:
        """SIGKILL every process of ``node``: its machine is gone."""
        self.killed.add(node.pid)
        _signal_session(node.pid, signal.SIGKILL)
        node.wait(timeout=30)

    def stop(self) -> None:
        """Stop every node this cluster started (SIGTERM, then SIGKILL after 10 s) and delete its temp dir."""
        for node in reversed(self.nodes):
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(n.poll() is None for n in self.nodes):
            time.sleep(0.2)
        for node in self.nodes:
            _signal_session(node.pid, signal.SIGKILL)
            if node.poll() is None:
                node.wait(timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)
