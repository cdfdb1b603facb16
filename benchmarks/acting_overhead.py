"""Where an on-policy step's CPU time goes, acting in NumPy or in torch (``numpy_acting``), side by side.

``python -m benchmarks.acting_overhead --algo ppo --env HalfCheetah-v5 --iterations 12`` builds the
on-policy benchmark's RL-Zoo config for the pair (:mod:`benchmarks.on_policy`), once with each acting
mode, and alternates their iterations (collect, estimate, update), timing each phase with process CPU
time; it prints microseconds per env step of each phase, the minimum over ``--repeats`` rounds (the
least-disturbed measurement on a shared machine). Nothing is logged: this is a profiler, not a result.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

PHASES = ("collect", "estimate", "update")


def _timed_agent(algo: str, env_id: str, numpy_acting: bool) -> tuple[Any, dict[str, float]]:
    import torch

    from benchmarks.on_policy import mujoco_configs, ours_config, zoo_configs
    from core_rl.actor_critic.actor_critic import A2C
    from core_rl.common.tracking import MemoryTracker
    from core_rl.trust_region.ppo import PPO

    torch.set_num_threads(1)
    configs = {(hp.algo, hp.env_id): hp for hp in zoo_configs() + mujoco_configs()}
    if (algo, env_id) not in configs:
        raise SystemExit(f"--env: the on-policy benchmark has no {algo} config for {env_id}; it has {sorted(configs)}")
    config = {**ours_config(configs[algo, env_id], 0), "numpy_acting": numpy_acting}
    agent = (PPO if algo == "ppo" else A2C)(env_id, config, tracker=MemoryTracker())
    spent = dict.fromkeys(PHASES, 0.0)
    for phase in PHASES:
        method = getattr(agent, phase)

        def timed(*args: Any, _method: Any = method, _phase: str = phase, **kwargs: Any) -> Any:
            t0 = time.process_time()
            out = _method(*args, **kwargs)
            spent[_phase] += time.process_time() - t0
            return out

        setattr(agent, phase, timed)
    return agent, spent


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.acting_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", choices=["ppo", "a2c"], default="ppo")
    p.add_argument("--env", default="HalfCheetah-v5", help="an env of the on-policy benchmark's configs")
    p.add_argument("--iterations", type=int, default=12, help="iterations (rollout + update) per round and mode")
    p.add_argument("--repeats", type=int, default=3, help="rounds; each phase reports its minimum")
    args = p.parse_args(argv)
    agents = {mode: _timed_agent(args.algo, args.env, mode) for mode in (True, False)}
    best: dict[bool, dict[str, float]] = {mode: dict.fromkeys(PHASES, float("inf")) for mode in agents}
    for agent, _ in agents.values():  # warm-up: the first update builds the fused step's flat buffers
        agent.learn(agent.n_envs * agent.config.n_steps)
    for _ in range(args.repeats):
        for mode, (agent, spent) in agents.items():
            for phase in PHASES:
                spent[phase] = 0.0
            steps0 = agent.num_timesteps
            agent.learn(args.iterations * agent.n_envs * agent.config.n_steps)
            steps = agent.num_timesteps - steps0
            for phase in PHASES:
                best[mode][phase] = min(best[mode][phase], spent[phase] / steps * 1e6)
    print(
        f"{args.algo} {args.env}: CPU µs per env step (minimum of {args.repeats} rounds of {args.iterations} iterations)"
    )
    print(f"{'acting':<8}" + "".join(f"{ph:>10}" for ph in PHASES) + f"{'total':>10}")
    for mode in agents:
        row = best[mode]
        name = "numpy" if mode else "torch"
        print(f"{name:<8}" + "".join(f"{row[ph]:>10.0f}" for ph in PHASES) + f"{sum(row.values()):>10.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
