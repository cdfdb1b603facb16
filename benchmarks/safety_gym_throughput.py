"""Env-steps per second of Safety-Gymnasium through :mod:`safety.safety_gymnasium`, spares on and off.

``python -m benchmarks.safety_gym_throughput [--task SafetyPointGoal1-v0] [--envs 2] [--workers N]
[--steps-per-env 3000] [--rollout 250] [--learner-s 0 0.4] [--fast-reset on off] [--json FILE]``

``--fast-reset`` picks the children's reset: ``on`` (default) the light compile copied into the
previous model, ``off`` Safety-Gymnasium's full rebuild (``safety/_safety_gym_server.py``).

Random actions drive ``--envs`` envs for ``--steps-per-env`` steps each (Safety-Gymnasium's
1000-step episodes, so every env starts ``steps/1000`` new episodes after its first). Every
``--rollout`` steps the parent stands for a learner busy for ``--learner-s`` seconds (it sleeps, so
the CPU is free for the children, as it is while an agent's update runs on another core).
Measured per configuration, CPU being the parent's (``getrusage``) plus every child's
(``/proc/<pid>/stat``):

* totals from construction to the last step: wall and CPU seconds, env-steps per CPU-second and
  per wall-second, and the *stall*: the wall time of the steps in which episodes ended (where a
  reset is paid unless a spare is ready);
* the steady state after the first episode (start-up excluded: an env's first reset costs twice a
  later one and spares add one per slot), which is what a long training run sees: env-steps per
  CPU-second, per wall-second, and per wall-second less the learner's pauses.

A reference row steps one env in-process inside the Safety-Gymnasium venv (no pipe, no spare) for
the same steps. Results: the terminal and a JSON file (default
``.deeprl/benchmarks/safety_gym_throughput.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core_rl.common.runs import run_child
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


def _cpu_now(pids: Sequence[int]) -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime + sum(_cpu_of(p) for p in pids)


def measure(
    task: str,
    envs: int,
    workers: int | None,
    steps: int,
    rollout: int,
    learner_s: float,
    spare: bool,
    fast_reset: bool = True,
) -> dict:
    """One configuration: totals from construction to the last step, and the steady state after the
    first episode (start-up -- the children's first, slower resets -- excluded)."""
    cpu0, w0 = _cpu_now([]), time.perf_counter()
    env = SafetyGymnasiumVectorEnv(task, num_envs=envs, n_workers=workers, spare_envs=spare, fast_reset=fast_reset)
    pids = env.child_pids
    env.reset(seed=0)
    episode = env.max_episode_steps or 1000
    rng = np.random.default_rng(0)
    learner = stall = 0.0
    steady: tuple[float, float, float] | None = None  # (cpu, wall, learner) when the first episode ended
    for t in range(steps):
        s0 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, (envs, 2)))
        if (terminated | truncated).any():
            stall += time.perf_counter() - s0  # the steps that start new episodes
        if t + 1 == episode:
            steady = (_cpu_now(pids), time.perf_counter(), learner)
        if learner_s and (t + 1) % rollout == 0:
            time.sleep(learner_s)
            learner += learner_s
    cpu1, w1 = _cpu_now(pids), time.perf_counter()
    env.close()
    total = envs * steps
    row: dict[str, Any] = {
        "config": f"fast reset {'on ' if fast_reset else 'off'}, spares {'on ' if spare else 'off'}, "
        f"learner {learner_s:g} s",
        "spare": spare,
        "fast_reset": fast_reset,
        "learner_s": learner_s,
        "env_steps": total,
        "wall_s": w1 - w0,
        "cpu_s": cpu1 - cpu0,
        "steps_per_cpu_s": total / (cpu1 - cpu0),
        "steps_per_wall_s": total / (w1 - w0),
        "stall_s": stall,
    }
    if steady is not None and steps > episode:
        n = envs * (steps - episode)
        row.update(
            steady_steps_per_cpu_s=n / (cpu1 - steady[0]),
            steady_steps_per_wall_s=n / (w1 - steady[1]),
            steady_steps_per_env_wall_s=n / (w1 - steady[1] - (learner - steady[2])),
        )
    return row


def in_process(task: str, steps: int) -> dict:
    out = run_child(
        [str(safety_python()), "-I", "-c", IN_PROCESS, task, str(steps)], capture_output=True, text=True, check=True
    )
    cpu, wall = map(float, out.stdout.split())
    return {
        "config": "in-process, one env (Safety-Gymnasium venv)",
        "env_steps": steps,
        "wall_s": wall,
        "cpu_s": cpu,
        "steps_per_cpu_s": steps / cpu,
        "steps_per_wall_s": steps / wall,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="SafetyPointGoal1-v0")
    p.add_argument("--envs", type=int, default=2)
    p.add_argument("--workers", type=int, default=None, help="child processes (default: one per core)")
    p.add_argument("--steps-per-env", type=int, default=3000)
    p.add_argument("--rollout", type=int, default=250, help="steps between two learner pauses")
    p.add_argument("--learner-s", type=float, nargs="+", default=[0.0, 0.4], help="learner pause(s) to try")
    p.add_argument("--fast-reset", nargs="+", choices=("on", "off"), default=["on"], help="children's reset(s) to try")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    ok, why = safety_gymnasium_available()
    if not ok:
        print(why, file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = [in_process(args.task, args.steps_per_env)]
    for fast in args.fast_reset:
        for learner_s in args.learner_s:
            for spare in (False, True):
                rows.append(
                    measure(
                        args.task,
                        args.envs,
                        args.workers,
                        args.steps_per_env,
                        args.rollout,
                        learner_s,
                        spare,
                        fast == "on",
                    )
                )
    print(f"{args.task}: {args.envs} envs x {args.steps_per_env} steps, {os.cpu_count()} cores")
    head = (
        "configuration",
        "wall s",
        "CPU s",
        "steps/CPU-s",
        "steps/s",
        "stall s",
        "steady/CPU-s",
        "steady/s",
        "env-only/s",
    )
    print(f"{head[0]:44s}" + "".join(f"{h:>13s}" for h in head[1:]))
    for r in rows:
        cells = [r["wall_s"], r["cpu_s"], r["steps_per_cpu_s"], r["steps_per_wall_s"], r.get("stall_s")]
        cells += [
            r.get(k) for k in ("steady_steps_per_cpu_s", "steady_steps_per_wall_s", "steady_steps_per_env_wall_s")
        ]
        print(f"{r['config']:44s}" + "".join(f"{'-':>13s}" if c is None else f"{c:13.1f}" for c in cells))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
