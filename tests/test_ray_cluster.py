"""Distributed agents on a real two-node Ray cluster (``ray start --head`` + ``ray start --address``,
see :mod:`tests.ray_cluster`), the learner connecting with ``ray.init(address=...)`` and its workers
pinned to the second node by a custom resource (``worker_resources``).

* ``distributed_ppo`` and ``apex_dqn`` give the numbers of the local run there too;
* the worker node killed mid-training: the learner says so in one line, the run ends KILLED with a
  checkpoint, and once a node is back ``deeprl train --resume`` finishes it.

Skipped without Ray. The cluster takes ~20 s to start on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core_rl.distributed.apex import ApeXDQN
from core_rl.distributed.on_policy import DistributedPPO
from core_rl.trust_region.ppo import PPO
from tests.seeding import seed as shifted

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'deeprl-suite[distributed]')")

ROOT = Path(__file__).resolve().parents[1]
ON_NODE = {"worker_cpus": 0.5, "worker_resources": {"worker_node": 1}}  # two workers fit on the 1-CPU node
# a real cluster: ~20 s to start, ~2 min in all on a shared 2-core machine; Ray listens on every
# interface, so it runs inside a private network namespace (tests/netns.py)
pytestmark = [pytest.mark.slow, pytest.mark.ray_local]


def same_params(a, b) -> bool:
    import torch

    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.fixture(scope="module")
def cluster():
    from tests.ray_cluster import RAY_ENV, RayCluster

    saved = {k: os.environ.get(k) for k in [*RAY_ENV, "RAY_ADDRESS"]}
    os.environ.update(RAY_ENV)
    os.environ.pop("RAY_ADDRESS", None)
    c = RayCluster()
    try:
        c.start_head()
        deadline = time.monotonic() + 60
        while True:  # the head's GCS answers
            try:
                ray.init(address=c.address, log_to_driver=False)
                break
            except Exception:
                if time.monotonic() > deadline or c.nodes[0].poll() is not None:
                    raise
                time.sleep(0.5)
        c.worker_node = c.add_node({"worker_node": 2})
        c.wait_for("worker_node", 2)
        (c.worker_node_id,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "worker_node" in n["Resources"]]
        yield c
    finally:
        ray.shutdown()
        c.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_distributed_ppo_on_the_second_node_matches_the_local_run(cluster):
    cfg = dict(seed=shifted(3), n_envs=4, n_steps=64, batch_size=64, n_epochs=2)
    local = PPO("CartPole-v1", cfg).learn(1024)
    dist = DistributedPPO("CartPole-v1", {**cfg, **ON_NODE, "n_workers": 2, "ray_address": cluster.address})
    dist.learn(1024)
    try:
        assert dist._workers.node_ids() == [cluster.worker_node_id] * 2  # placed on the second node
        assert ray.get_runtime_context().get_node_id() != cluster.worker_node_id  # the learner is not
        assert list(dist.episode_returns) == list(local.episode_returns) and len(local.episode_returns) > 20
        assert same_params(dist.policy, local.policy) and same_params(dist.value, local.value)
    finally:
        dist.close()


def test_apex_on_the_second_node_matches_in_process_actors(cluster):
    cfg = dict(seed=shifted(0), n_workers=2, actor_steps=16, learning_starts=64, batch_size=32)
    local = ApeXDQN("CartPole-v1", {**cfg, "backend": "local"}).learn(640)
    remote = ApeXDQN("CartPole-v1", {**cfg, **ON_NODE, "ray_address": cluster.address}).learn(640)
    try:
        assert remote._actors.node_ids() == [cluster.worker_node_id] * 2
        assert remote.gradient_updates == local.gradient_updates > 0
        assert list(remote.episode_returns) == list(local.episode_returns)
        assert same_params(remote.q_net, local.q_net)
    finally:
        remote.close()


def test_a_killed_worker_node_ends_the_run_killed_with_a_checkpoint_to_resume(cluster, tmp_path):
    """Last in the module: it kills the worker node (and starts a new one for the resume)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = ["n_workers=2", "n_envs=4", "n_steps=64", "batch_size=64", "n_epochs=2", "worker_cpus=0.5"]
    sets += ['worker_resources={"worker_node": 1}', f"ray_address={cluster.address}"]
    cmd = [sys.executable, "-m", "pipelines", "train", "--algo", "distributed_ppo", "--env", "CartPole-v1"]
    cmd += ["--steps", "1000000", "--seed", "0", "--no-model", "--tracking-uri", uri, "--set", *sets]
    env = {**cluster.env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    mlflow.set_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient()
    deadline = time.monotonic() + 120
    run = None
    while run is None or "episode_return" not in run.data.metrics:  # a few iterations done on the node
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline, "no iteration logged in 120 s"
        time.sleep(0.5)
        runs = (
            mlflow.search_runs(experiment_names=["deeprl"], output_format="list")
            if tmp_path.joinpath("mlflow.db").exists()
            else []
        )
        run = runs[0] if runs else None
    cluster.kill_node(cluster.worker_node)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == 75, err[-3000:]  # EX_TEMPFAIL: try again when the cluster has room
    said = [line for line in err.splitlines() if "loss of worker" in line]
    assert said == [
        f"run {run.info.run_id} stopped by the loss of workers 0, 1 of 2 (node died) and "
        f"marked KILLED with what it logged; resume with: deeprl train --algo distributed_ppo --resume "
        f"{run.info.run_id} --tracking-uri {uri}"
    ], err[-3000:]
    assert "Traceback" not in err
    killed = client.get_run(run.info.run_id)
    assert killed.info.status == "KILLED"
    done = max(m.step for m in client.get_metric_history(run.info.run_id, "episode_return"))
    ckpt = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="checkpoint", dst_path=str(tmp_path)
    )
    agent = DistributedPPO.load(Path(ckpt) / "agent.pt")
    assert agent.num_timesteps == done  # the checkpoint is the last complete (and logged) iteration

    # a node is back: the same command line resumes the run on it and finishes it
    cluster.worker_node = cluster.add_node({"worker_node": 2})
    cluster.wait_for("worker_node", 2)
    resume = [sys.executable, "-m", "pipelines", "train", "--algo", "distributed_ppo", "--resume", run.info.run_id]
    resume += ["--steps", str(done + 512), "--no-model", "--tracking-uri", uri, "--json"]
    out = subprocess.run(resume, cwd=tmp_path, env=env, capture_output=True, timeout=180)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    assert json.loads(out.stdout.decode().strip().splitlines()[-1])["steps"] == done + 512
    finished = client.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "episode_return")]
    assert steps == sorted(set(steps)) and steps[-1] == done + 512  # no step logged twice
