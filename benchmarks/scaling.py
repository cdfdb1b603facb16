"""The two costs of going past one machine that docs/scaling.md's cost model needs, measured.

``python -m benchmarks.scaling --ray-address HOST:PORT [--worker-resource worker_node] --tracking-uri URI ...``

* :func:`ray_iteration_overhead` — the wall time of one PPO collection (CartPole-v1, 4 envs × 64
  steps) in this process and through W Ray workers on a cluster (pinned to nodes offering
  ``worker_resource``); the difference is Ray's per-iteration overhead (weights out, W remote calls,
  ``[T, k]`` batches back, the learner's exact recomputation). Medians over ``iterations``.
* :func:`metric_roundtrip` — the wall time of one ``MLflowTracker.log_metrics`` call (one
  ``log_batch`` request) with 1 and with 10 metrics (and 1 again, first on a fresh connection), against each tracking URI given (a server over
  HTTP, an embedded SQLite file): what every logged iteration pays. Medians over ``n`` calls.

* :func:`logs_at_scale` (``--logs-rows N``) — the paths for logs larger than a machine on a
  generated log of about N rows (NG twin, uniform logging, C=10, K=2) cut into parquet parts:
  ingestion and OPE (IPS, SNIPS, DR, DM of a Plackett–Luce policy) in this process and on Ray Data
  (rows per wall-second; the first Ray Data pass's start-up separately), and behaviour cloning with
  1 and 2 data-parallel workers (:mod:`recsys.data_parallel`, gloo on loopback) against one plain
  worker: rows per CPU-second (all ranks' CPU time), rows per wall-second, time in all-reduces.
* :func:`learners_at_scale` (``--learners topk_reinforce slateq --learners-rows N``) — the same plain /
  DDP×1 / DDP×2 comparison for the other learners that train data-parallel (top-K REINFORCE, offline
  SlateQ, CQL, BC) on a generated log of about N rows, without Ray:
  ``OMP_NUM_THREADS=1 python -m benchmarks.scaling --learners topk_reinforce slateq --learners-rows 20000``.
  Ray is the cluster at ``--ray-address`` or a local one (run it in a loopback-only namespace:
  ``unshare -n sh -c 'ip link set lo up && python -m benchmarks.scaling --logs-rows 50000'``).

Prints one JSON object. Nothing here starts a cluster or a server except the local Ray of
``--logs-rows`` without ``--ray-address``: point it at running ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
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


def _timed(fn: Any) -> tuple[Any, float, float]:
    """(result, wall s, this process's CPU s)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def _identity(x: Any) -> Any:
    return x


#: steps left out of the steady-state rates: a fresh process's first optimizer steps pay one-time lazy imports
SKIP_STEPS = 20


def _steady(clocks: list[list[tuple[float, float]]], batch: int) -> tuple[int, float, float]:
    """(rows, CPU s over all ranks, wall s of the slowest rank) from step ``SKIP_STEPS`` to the last."""
    steps = len(clocks[0]) - 1 - SKIP_STEPS
    cpu = sum(c[-1][0] - c[SKIP_STEPS][0] for c in clocks)
    wall = max(c[-1][1] - c[SKIP_STEPS][1] for c in clocks)
    return steps * batch, cpu, wall


def data_parallel_rates(job: Any, batch: int, workers: tuple[int, ...], prefix: str) -> dict[str, Any]:
    """``job`` (a :class:`recsys.log_learners.LearnerJob` logging every step) as one plain worker in
    this process and with each W in ``workers`` ranks (gloo on loopback) at the same global ``batch``
    (rows per step): steady-state rows per CPU-second (all ranks' CPU) and per wall-second, ms per step,
    all-reduce ms per step (wall, waiting for the other ranks included), the CPU spent in the
    collectives as a share of the fit's CPU (and their wall time over that CPU, the older measure),
    start-up, and the largest gap to the plain curve."""
    from recsys.data_parallel import run_data_parallel

    plain = job(None)
    rows_s, cpu_s, wall_s = _steady([plain["clocks"]], batch)
    out: dict[str, Any] = {
        f"{prefix}_plain": {"rows_per_cpu_s": round(rows_s / cpu_s), "rows_per_wall_s": round(rows_s / wall_s)}
    }
    for w in workers:
        ranks, total_wall, _ = _timed(lambda w=w: run_data_parallel(job, w))
        rows_s, cpu_s, wall_s = _steady([r.value["clocks"] for r in ranks], batch)
        steps = len(ranks[0].value["curve"])
        fit_cpu = sum(r.value["fit_cpu_s"] for r in ranks)
        out[f"{prefix}_ddp_x{w}"] = {
            "rows_per_cpu_s": round(rows_s / cpu_s),
            "rows_per_wall_s": round(rows_s / wall_s),
            "ms_per_step": round(1000 * wall_s / (steps - 1 - SKIP_STEPS), 3),
            "ms_allreduce_per_step": round(1000 * ranks[0].comm_seconds / max(steps, 1), 3),
            "allreduce_share_of_cpu": round(sum(r.comm_cpu_seconds for r in ranks) / max(fit_cpu, 1e-9), 3),
            "allreduce_wall_over_cpu": round(sum(r.comm_seconds for r in ranks) / max(fit_cpu, 1e-9), 3),
            "first_steps_s": round(max(r.value["fit_wall_s"] for r in ranks) - wall_s, 2),
            "start_and_imports_s": round(total_wall - max(r.value["fit_wall_s"] for r in ranks), 2),
            "max_curve_gap": max(abs(a - b) for a, b in zip(ranks[0].value["curve"], plain["curve"], strict=True)),
        }
    return out


@dataclass
class AllReduceJob:
    """``n`` all-reduces of ``floats`` float32 values and ``n`` of 4 float64 (a learner step's gradient
    and its counts/metrics), nothing else: the collectives' own cost, background threads included."""

    floats: int
    n: int = 300

    def __call__(self, group: Any) -> dict[str, float]:
        import torch

        grads, small = torch.ones(self.floats), torch.ones(4, dtype=torch.float64)
        for _ in range(20):  # warm-up: connections, first buffers
            group._all_reduce(grads)
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(self.n):
            group._all_reduce(grads)
            group._all_reduce(small)
        return {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0}


def allreduce_cost(floats: int, workers: tuple[int, ...] = (1, 2), n: int = 300) -> dict[str, Any]:
    """CPU and wall µs of one (gradient + small) all-reduce pair per rank, with W ranks doing nothing else."""
    from recsys.data_parallel import run_data_parallel

    out: dict[str, Any] = {"floats": floats}
    for w in workers:
        ranks = run_data_parallel(AllReduceJob(floats, n), w)
        out[f"x{w}"] = {
            "cpu_us_per_pair_per_rank": round(1e6 * sum(r.value["cpu_s"] for r in ranks) / (w * n), 1),
            "wall_us_per_pair": round(1e6 * max(r.value["wall_s"] for r in ranks) / n, 1),
        }
    return out


#: the learners' configs in the benchmark: their defaults (hidden 64-64; Top-K 256 slates per step and
#: clip 10, SlateQ/CQL 128 rows per step with a learned choice model), one epoch
LEARNER_BATCH = {"bc": 512, "topk_reinforce": 256, "slateq": 128, "cql": 128}


def learners_at_scale(
    folder: str,
    rows: int = 20_000,
    learners: tuple[str, ...] = ("topk_reinforce", "slateq"),
    workers: tuple[int, ...] = (1, 2),
    chunk_rows: int = 8192,
) -> dict[str, Any]:
    """Each learner in ``learners`` from a generated log of about ``rows`` rows (NG twin, uniform
    logging, C=10, K=2): one plain worker against 1..W data-parallel ranks (:func:`data_parallel_rates`)."""
    from pathlib import Path

    import torch

    from recsys.log_learners import LearnerJob, build_log_learner
    from recsys.logs import LogReader, generate_logs
    from recsys.policies import RandomPolicy
    from recsys.simulation import InterestEvolutionVectorEnv

    torch.set_num_threads(1)
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    horizon = 50
    env = InterestEvolutionVectorEnv(256, seed=0, num_candidates=10, horizon=horizon)
    log = root / "learners-log.parquet"
    generate_logs(env, RandomPolicy(10, 2, seed=0), log, sessions=max(1, rows // horizon))
    out: dict[str, Any] = {"rows": LogReader(log).num_rows, "row_group_rows": chunk_rows}
    for name in learners:
        batch = LEARNER_BATCH[name]
        job = LearnerJob(name, str(log), dict(seed=0, epochs=1, batch_size=batch), chunk_rows=chunk_rows)
        out.update(data_parallel_rates(job, batch, workers, prefix=name))
        out[f"{name}_step_cost"] = step_cost(name, str(log), batch, chunk_rows)
        learner, _ = build_log_learner(name, LogReader(log), {"seed": 0})
        params = sum(p.numel() for net in learner.networks().values() for p in net.parameters() if p.requires_grad)
        out[f"{name}_allreduce"] = allreduce_cost(params, workers)
    return out


def step_cost(name: str, log: str, batch: int, chunk_rows: int) -> dict[str, Any]:
    """One plain worker's steady-state CPU ms per step at global batches B/4, B/2, B, 2B: a least-squares
    line ``t_step = t_fixed + B·t_row`` splits the per-step cost that every rank pays in full (Python
    and op dispatch, the target's slate optimisation per call, the metrics) from the part a rank pays
    for its B/W rows — what data parallelism can divide."""
    from recsys.log_learners import LearnerJob

    sizes = [max(1, batch // 4), max(1, batch // 2), batch, 2 * batch]
    ms = []
    for b in sizes:
        run = LearnerJob(name, log, dict(seed=0, epochs=1, batch_size=b), chunk_rows=chunk_rows)(None)
        clocks = run["clocks"]
        skip = min(SKIP_STEPS, len(clocks) // 4)
        ms.append(1000 * (clocks[-1][0] - clocks[skip][0]) / max(len(clocks) - 1 - skip, 1))
    n = len(sizes)
    mb, mt = sum(sizes) / n, sum(ms) / n
    slope = sum((b - mb) * (t - mt) for b, t in zip(sizes, ms, strict=True)) / sum((b - mb) ** 2 for b in sizes)
    return {
        "batches": sizes,
        "cpu_ms_per_step": [round(t, 3) for t in ms],
        "fixed_ms": round(mt - slope * mb, 3),
        "us_per_row": round(1000 * slope, 3),
    }


def logs_at_scale(
    folder: str,
    rows: int = 50_000,
    workers: tuple[int, ...] = (1, 2),
    ray_address: str | None = None,
    chunk_rows: int = 8192,
    parts: int = 8,
    bc_batch: int = 512,
    repeats: int = 2,
) -> dict[str, Any]:
    """Ingestion and OPE local vs Ray Data, and behaviour cloning with 1..W data-parallel workers, on ~``rows`` rows."""
    from pathlib import Path

    import pyarrow.parquet as pq
    import torch

    from core_rl.distributed.ray_utils import init_ray
    from recsys.log_learners import LearnerJob
    from recsys.logs import generate_logs, ingest_logs, read_meta
    from recsys.ope import fit_reward_model
    from recsys.ope_partitioned import evaluate_log_files
    from recsys.policies import PlackettLucePolicy, RandomPolicy
    from recsys.policies.baselines import ScoreFn
    from recsys.simulation import InterestEvolutionVectorEnv

    torch.set_num_threads(1)
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    horizon = 50
    env = InterestEvolutionVectorEnv(256, seed=0, num_candidates=10, horizon=horizon)
    gen = generate_logs(env, RandomPolicy(10, 2, seed=0), root / "log.parquet", sessions=max(1, rows // horizon))
    table = pq.read_table(root / "log.parquet")
    export = root / "export"
    export.mkdir(exist_ok=True)
    step = -(-table.num_rows // parts)
    for i in range(parts):
        pq.write_table(table.slice(i * step, step), export / f"part-{i:03d}.parquet", row_group_size=chunk_rows)
    n = table.num_rows
    out: dict[str, Any] = {"rows": n, "parts": parts, "row_group_rows": chunk_rows}
    init_ray(ray_address)
    from recsys.ray_data import map_in_order

    # a first, tiny Ray Data pass pays the workers' start-up; then the fixed cost of a warm pass
    _, out["ray_first_pass_s"], _ = _timed(
        lambda: ingest_logs(export / "part-000.parquet", root / "warm.parquet", backend="ray", chunk_rows=chunk_rows)
    )
    passes = [_timed(lambda: list(map_in_order(_identity, list(range(parts)), ray_address)))[1] for _ in range(3)]
    out["ray_empty_pass_s"] = round(min(passes), 3)
    for backend in ("local", "ray"):
        for repeat in range(repeats):
            rep, wall, cpu = _timed(
                lambda b=backend: ingest_logs(export, root / f"clean-{b}.parquet", chunk_rows=chunk_rows, backend=b)
            )
            assert rep.rows_in == n
            if repeat == 0 or wall < out[f"ingest_{backend}_s"]:
                out[f"ingest_{backend}_s"] = round(wall, 3)
                out[f"ingest_{backend}_rows_per_s"] = round(n / wall)
                out[f"ingest_{backend}_driver_cpu_s"] = round(cpu, 3)
    # the driver's serial pass over the two key columns (order check), part of both backends
    from recsys.logs import first_out_of_order, open_source

    _, wall, _ = _timed(lambda: first_out_of_order(open_source(export, chunk_rows).batches(["session_id", "step"])))
    out["order_check_s"] = round(wall, 3)
    clean = root / "clean-local.parquet"
    meta = read_meta(clean)
    policy = PlackettLucePolicy(10, 2, ScoreFn(meta.user_dim, meta.doc_dim, (32,)))
    from recsys.logs import LogReader

    reward = fit_reward_model(LogReader(clean, chunk_rows=chunk_rows), meta.user_dim, meta.doc_dim, epochs=1)
    # OPE on the clean log cut into the same parts (row groups of chunk_rows rows)
    clean_parts = root / "clean-parts"
    clean_parts.mkdir(exist_ok=True)
    ctable = pq.read_table(clean)
    for i in range(parts):
        pq.write_table(ctable.slice(i * step, step), clean_parts / f"part-{i:03d}.parquet", row_group_size=chunk_rows)
    for backend in ("local", "ray"):
        for repeat in range(repeats):
            res, wall, cpu = _timed(
                lambda b=backend: evaluate_log_files(
                    policy,
                    str(clean_parts),
                    reward_model=reward,
                    estimators=("ips", "snips", "dr", "dm"),
                    n_bootstrap=0,
                    chunk_rows=chunk_rows,
                    backend=b,
                )
            )
            if repeat == 0 or wall < out[f"ope_{backend}_s"]:
                out[f"ope_{backend}_s"] = round(wall, 3)
                out[f"ope_{backend}_rows_per_s"] = round(n / wall)
                out[f"ope_{backend}_driver_cpu_s"] = round(cpu, 3)
            out[f"ope_{backend}_ips"] = res.estimates["ips"].value
    # behaviour cloning: one plain worker, then W ranks at the same global batch
    job = LearnerJob("bc", str(clean), dict(seed=0, epochs=1, batch_size=bc_batch), chunk_rows=chunk_rows)
    out.update(data_parallel_rates(job, bc_batch, workers, prefix="bc"))
    out["generated_sessions"] = gen.sessions
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ray-address", default=None)
    p.add_argument("--worker-resource", default=None, help="custom resource pinning workers to their nodes")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--tracking-uri", nargs="*", default=[])
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--logs-rows", type=int, default=0, help="measure the log paths on a log of about this many rows")
    p.add_argument("--logs-dir", default=None, help="where the generated log goes (default: a temporary folder)")
    p.add_argument(
        "--learners",
        nargs="+",
        default=["topk_reinforce", "slateq"],
        choices=sorted(LEARNER_BATCH),
        help="learners of --learners-rows",
    )
    p.add_argument(
        "--learners-rows",
        type=int,
        default=0,
        help="measure the learners plain / DDP x W on a generated log of about this many rows (no Ray)",
    )
    args = p.parse_args(argv)
    result: dict[str, Any] = {}
    if args.logs_rows:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="scaling-logs-") as tmp:
            result["logs"] = logs_at_scale(args.logs_dir or tmp, args.logs_rows, tuple(args.workers), args.ray_address)
    if args.learners_rows:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="scaling-learners-") as tmp:
            result["learners"] = learners_at_scale(
                args.logs_dir or tmp, args.learners_rows, tuple(args.learners), tuple(args.workers)
            )
    if args.ray_address and not args.logs_rows:
        result["ray"] = ray_iteration_overhead(
            args.ray_address, tuple(args.workers), args.iterations, args.worker_resource
        )
    for uri in args.tracking_uri:
        result[uri] = metric_roundtrip(uri, args.calls)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
