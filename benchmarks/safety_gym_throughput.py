"""Env-steps per second of Safety-Gymnasium through :mod:`safety.safety_gymnasium`, spares on and off.

``python -m benchmarks.safety_gym_throughput [--task SafetyPointGoal1-v0] [--envs 4] [--workers N]
[--steps-per-env 2000] [--rollout 250] [--learner-s 0 0.5] [--json FILE]``

Random actions drive ``--envs`` envs for ``--steps-per-env`` steps each (Safety-Gymnasium's
1000-step episodes, so every env resets ``steps/1000`` times on top of its first reset). Every
``--rollout`` steps the parent stands for a learner busy for ``--learner-s`` seconds (it sleeps, so
the CPU is free for the children, as it is while an agent's update runs on another core).
Measured per configuration: wall time, CPU seconds of the parent and of every child (from
``/proc/<pid>/stat`` just before ``close``), env-steps per wall-second and per CPU-second. A
reference row steps one env in-process inside the Safety-Gymnasium venv (no pipe, no spare) for
the same steps and counts its CPU time. Results: the terminal and a JSON file (default
``.deeprl/benchmarks/safety_gym_throughput.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from safety.safety_gymnasium import SafetyGymnasiumVectorEnv, safety_gymnasium_available, safety_python

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / ".deeprl" / "benchmarks" / "safety_gym_throughput.json"
TICK = os.sysconf("SC_CLK_TCK")

IN_PROCESS = textwrap.dedent(
    """
    import sys, time, warnings
    import numpy as np
    warnings.filterwarnings("ignore")
    import safety_gymnasium
    task, steps = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(0)
    t0, w0 = time.process_time(), time.perf_counter()
    env = safety_gymnasium.make(task)
    env.reset(seed=0)
    for t in range(steps):
        o, r, c, te, tr, _ = env.step(rng.uniform(-1, 1, 2))
        if te or tr:
            env.reset()
    print(time.process_time() - t0, time.perf_counter() - w0)
    """
)


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def measure(task: str, envs: int, workers: int | None, steps: int, rollout: int, learner_s: float, spare: bool) -> dict:
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = time.perf_counter()
    env = SafetyGymnasiumVectorEnv(task, num_envs=envs, n_workers=workers, spare_envs=spare)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    learner_wall = 0.0
    for t in range(steps):
        env.step(rng.uniform(-1, 1, (envs, 2)))
        if learner_s and (t + 1) % rollout == 0:
            time.sleep(learner_s)
            learner_wall += learner_s
    children = sum(_cpu_of(p) for p in env.child_pids)
    wall = time.perf_counter() - w0
    env.close()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    parent = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    total = envs * steps
    return {
        "config": f"bridge, spares {'on' if spare else 'off'}, learner {learner_s:g} s / {rollout} steps",
        "spare": spare,
        "learner_s": learner_s,
        "env_steps": total,
        "wall_s": wall,
        "env_wall_s": wall - learner_wall,
        "cpu_parent_s": parent,
        "cpu_children_s": children,
        "steps_per_cpu_s": total / (parent + children),
        "steps_per_wall_s": total / wall,
        "steps_per_env_wall_s": total / max(wall - learner_wall, 1e-9),
    }


def in_process(task: str, steps: int) -> dict:
    out = subprocess.run(
        [str(safety_python()), "-I", "-c", IN_PROCESS, task, str(steps)], capture_output=True, text=True, check=True
    )
    cpu, wall = map(float, out.stdout.split())
    return {
        "config": "in-process, one env (Safety-Gymnasium venv)",
        "env_steps": steps,
        "wall_s": wall,
        "cpu_children_s": cpu,
        "cpu_parent_s": 0.0,
        "steps_per_cpu_s": steps / cpu,
        "steps_per_wall_s": steps / wall,
        "steps_per_env_wall_s": steps / wall,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="SafetyPointGoal1-v0")
    p.add_argument("--envs", type=int, default=4)
    p.add_argument("--workers", type=int, default=None, help="child processes (default: one per core)")
    p.add_argument("--steps-per-env", type=int, default=2000)
    p.add_argument("--rollout", type=int, default=250, help="steps between two learner pauses")
    p.add_argument("--learner-s", type=float, nargs="+", default=[0.0, 0.5], help="learner pause(s) to try")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    ok, why = safety_gymnasium_available()
    if not ok:
        print(why, file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = [in_process(args.task, args.steps_per_env)]
    for learner_s in args.learner_s:
        for spare in (False, True):
            rows.append(measure(args.task, args.envs, args.workers, args.steps_per_env, args.rollout, learner_s, spare))
    print(f"{args.task}: {args.envs} envs x {args.steps_per_env} steps, {os.cpu_count()} cores")
    print(f"{'configuration':58s} {'wall s':>7s} {'CPU s':>7s} {'steps/CPU-s':>11s} {'steps/s':>8s} {'env-only':>8s}")
    for r in rows:
        cpu = r["cpu_parent_s"] + r["cpu_children_s"]
        print(
            f"{r['config']:58s} {r['wall_s']:7.1f} {cpu:7.1f} {r['steps_per_cpu_s']:11.0f} "
            f"{r['steps_per_wall_s']:8.0f} {r['steps_per_env_wall_s']:8.0f}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
