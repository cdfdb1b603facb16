"""The two costs of going past one machine that docs/scaling.md's cost model needs, measured.

``python -m benchmarks.scaling --ray-address HOST:PORT [--worker-resource worker_node] --tracking-uri URI ...``

* :func:`ray_iteration_overhead` — the wall time of one PPO collection (CartPole-v1, 4 envs × 64
  steps) in this process and through W Ray workers on a cluster (pinned to nodes offering
  ``worker_resource``); the difference is Ray's per-iteration overhead (weights out, W remote calls,
  ``[T, k]`` batches back, the learner's exact recomputation). Medians over ``iterations``.
* :func:`metric_roundtrip` — the wall time of one ``MLflowTracker.log_metrics`` call (one
  ``log_batch`` request) with 1 and with 10 metrics (and 1 again, first on a fresh connection), against each tracking URI given (a server over
  HTTP, an embedded SQLite file): what every logged iteration pays. Medians over ``n`` calls.

Prints one JSON object. Nothing here starts a cluster or a server: point it at running ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any


def _median_ms(samples: list[float]) -> float:
    return round(1000.0 * statistics.median(samples), 3)


def _timed_collects(agent: Any, iterations: int) -> list[float]:
    agent.collect()  # warm-up: starts the workers, first weights
    out = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        agent.collect()
        out.append(time.perf_counter() - t0)
    return out


def ray_iteration_overhead(
    address: str, workers: tuple[int, ...] = (1, 2), iterations: int = 20, worker_resource: str | None = None
) -> dict[str, Any]:
    """Median collection wall time (ms) locally and with each W in ``workers`` on the cluster at ``address``."""
    from core_rl.distributed.on_policy import DistributedPPO
    from core_rl.trust_region.ppo import PPO

    cfg: dict[str, Any] = dict(seed=0, n_envs=4, n_steps=64, batch_size=256, n_epochs=1)
    local = PPO("CartPole-v1", cfg)
    out: dict[str, Any] = {"steps_per_iteration": 256, "local_ms": _median_ms(_timed_collects(local, iterations))}
    local.close()
    for w in workers:
        extra: dict[str, Any] = {"n_workers": w, "ray_address": address, "worker_cpus": 0.5}
        if worker_resource:
            extra["worker_resources"] = {worker_resource: 1}
        agent = DistributedPPO("CartPole-v1", {**cfg, **extra})
        try:
            out[f"ray_x{w}_ms"] = _median_ms(_timed_collects(agent, iterations))
        finally:
            agent.close()
        out[f"ray_x{w}_overhead_ms"] = round(out[f"ray_x{w}_ms"] - out["local_ms"], 3)
    return out


def metric_roundtrip(uri: str, n: int = 50) -> dict[str, float]:
    """Median ms of one ``log_metrics`` call with 1, 10, then 1 metrics again, in a fresh run at ``uri``."""
    import mlflow

    from core_rl.common.runs import get_experiment_id, setup_tracking
    from core_rl.common.tracking import MLflowTracker

    uri = setup_tracking(uri)
    client = mlflow.tracking.MlflowClient()
    run = client.create_run(get_experiment_id("scaling-benchmark", uri), run_name="metric round trip")
    tracker = MLflowTracker(run.info.run_id, client)
    out: dict[str, float] = {}
    try:
        # the first round also pays the connection's and the server's warm-up; the last one does not
        for label, width in (("first_1", 1), ("10", 10), ("1", 1)):
            samples = []
            for step in range(n):
                metrics = {f"{label}.m{i}": float(step) for i in range(width)}
                t0 = time.perf_counter()
                tracker.log_metrics(metrics, step)
                samples.append(time.perf_counter() - t0)
            out[f"log_metrics_{label}_ms"] = _median_ms(samples)
    finally:
        client.set_terminated(run.info.run_id, "FINISHED")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ray-address", default=None)
    p.add_argument("--worker-resource", default=None, help="custom resource pinning workers to their nodes")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--tracking-uri", nargs="*", default=[])
    p.add_argument("--calls", type=int, default=50)
    args = p.parse_args(argv)
    result: dict[str, Any] = {}
    if args.ray_address:
        result["ray"] = ray_iteration_overhead(
            args.ray_address, tuple(args.workers), args.iterations, args.worker_resource
        )
    for uri in args.tracking_uri:
        result[uri] = metric_roundtrip(uri, args.calls)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
