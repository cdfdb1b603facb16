"""Our DQN, SAC, TD3 and DDPG side by side with Stable-Baselines3's, at RL-Zoo's hyperparameters.

``python -m benchmarks.off_policy [--quick] [--seeds N] [--algos ...] [--no-mlflow] [--mapping]``

Every (algo, env, seed) is trained twice in this one process, once by
:class:`core_rl.q_learning.dqn.DQN` / :class:`core_rl.continuous.sac.SAC` /
:class:`core_rl.continuous.td3.TD3` / :class:`core_rl.continuous.ddpg.DDPG` and once by SB3's ``DQN`` / ``SAC`` /
``TD3`` / ``DDPG``, from one neutral
hyperparameter record of :mod:`benchmarks.peers` (``HParams``: RL-Zoo's values with SB3's defaults
written out for what Zoo leaves unset, in SB3's names). ``field_mapping`` maps that record field by
field onto our config (printed at the start of a run, and in the report); ``ours_config`` and ``sb3_kwargs`` are
derived from it. Both train with ``torch.set_num_threads(1)`` on the CPU without any logger writing.

Configurations: DQN on CartPole-v1 (5e4 steps), SAC, TD3 and DDPG on Pendulum-v1 (2e4 steps each); with
``--envs HalfCheetah-v5 Hopper-v5 Walker2d-v5`` SAC, TD3 and DDPG on MuJoCo (``--quick``: 3e5 steps, issue 16's
budget; ``--steps-scale`` shortens it).

Measured for each run: wall time and process CPU time of ``learn`` alone (env construction and
evaluation excluded), env-steps/s and gradient-steps/s, the mean of the last 100 training episodes
(undiscounted), and the mean return of 20 evaluation episodes of the deterministic policy on fresh envs
seeded identically for both implementations. Ours and SB3 alternate run by run (and which goes first
alternates too); a short untimed warm-up of both precedes the timed runs of each configuration. The
table reports medians over seeds. Results go to the terminal, ``docs/benchmarks/off_policy.md``, a
JSON file under ``.deeprl/benchmarks/`` and MLflow (experiment ``benchmark-off-policy``: one parent run,
one child per (algo, env, impl, seed)). ``--results FILE ...`` re-renders the report from saved JSON
files (e.g. the pieces of a benchmark run in several shorter invocations) without training;
``--profile ours|sb3|both`` runs ``learn`` under cProfile instead.

``--ours-modes fp32 bf16``: our side trains once per mode, each mode its own row against the same SB3
runs: ``fp32`` is the default config; ``bf16`` sets ``matmul_dtype="bfloat16"`` (SAC, TD3 and DDPG: the
gradient steps with bf16 matmuls, float32 parameters, optimizer state and losses; see
:mod:`core_rl.continuous.critics`; the results' ``machine["bf16_matmuls"]`` says which of its two ways ran); ``sb3-init`` sets ``init="torch_default"`` (SB3's nn.Linear init
instead of our orthogonal one: since 2026-12-07 the mapping sets it for every algorithm, so the mode equals ``fp32``;
results saved before then ran SAC, TD3 and DDPG orthogonally in ``fp32``). SB3 always runs its float32 default.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    IMPLS,
    REPO,
    RETURN_TOLERANCE,
    SUMMARY_METRICS,
    TORCH_THREADS,
    BenchmarkMLflow,
    ProgressFn,
    Resume,
    RunResult,
    add_mode_and_checkpoint_arguments,
    add_run_arguments,
    benchmark_run,
    close_interrupted,
    command_line,
    config_drift,
    config_drift_markdown,
    evaluate_actions,
    fmt,
    jsonable,
    load_results,
    machine_note,
    mode_note,
    ours_learn,
    parse_run_arguments,
    peak_load,
    profile_learn,
    ranks_markdown,
    ranks_sentence,
    ratio,
    recorded_config,
    resume_for,
    row_metrics,
    run_main,
    run_stamp,
    sb3_learn,
    sb3_resumed,
    seed_range,
    summarize_by_mode,
    throttled,
    write_outputs,
)
from benchmarks.peers import (
    CLASSIC_ENVS,
    HParams,
    mapping_markdown,
    ours_config,
    print_mapping,
    sb3_config_record,
    sb3_kwargs,
    zoo_configs,
)

DEFAULT_DOC = REPO / "docs" / "benchmarks" / "off_policy.md"
EXPERIMENT = "benchmark-off-policy"
#: our config overrides per --ours-modes value (the table's *mode* column)
OUR_MODES: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"matmul_dtype": "bfloat16"},
    "sb3-init": {"init": "torch_default"},
}
#: the algorithms a mode applies to (fp32: all)
MODE_ALGOS: dict[str, tuple[str, ...]] = {
    "fp32": ("dqn", "sac", "td3", "ddpg"),
    "bf16": ("sac", "td3", "ddpg"),
    "sb3-init": ("sac", "td3", "ddpg"),
}
EVAL_SEED_BASE = 100_000  # eval env i of seed s is reset with 100_000 + 1_000·s + i (as in on_policy)


# ---- one training run --------------------------------------------------------------------------
@dataclass
class OffPolicyRunResult(RunResult):
    gradient_steps: int = 0
    grad_steps_per_s: float = float("nan")
    cpu_grad_steps_per_s: float = float("nan")
    mode: str = "fp32"  # our side's OUR_MODES entry ("fp32" for SB3 and for results saved before modes)


@dataclass
class Trained:
    steps: int
    train_return: float
    episodes: int
    gradient_steps: int
    act: Callable[[np.ndarray], np.ndarray]
    build_s: float
    wall_s: float
    cpu_s: float
    curve: list[tuple[int, float]]


PROGRESS_EVERY = 1000  # env steps between progress-bar updates / SB3 curve points
OUR_CLASSES = {
    "dqn": ("core_rl.q_learning.dqn", "DQN"),
    "sac": ("core_rl.continuous.sac", "SAC"),
    "td3": ("core_rl.continuous.td3", "TD3"),
    "ddpg": ("core_rl.continuous.ddpg", "DDPG"),
}


def _train_ours(
    hp: HParams, steps: int, seed: int, progress: ProgressFn, mode: str = "fp32", resume: Resume | None = None
) -> Trained:
    import importlib

    module, name = OUR_CLASSES[hp.algo]
    cls = getattr(importlib.import_module(module), name)
    config = {**ours_config(hp, seed), **OUR_MODES[mode]}
    agent, build_s, wall, cpu, curve = ours_learn(
        cls, hp.env_id, config, steps, throttled(progress, PROGRESS_EVERY), resume
    )
    return Trained(
        agent.num_timesteps,
        agent.mean_return,
        agent.episodes_done,
        agent.gradient_updates,
        lambda o: agent.predict(o, deterministic=True),
        build_s,
        wall,
        cpu,
        curve,
    )


def _train_sb3(
    hp: HParams, steps: int, seed: int, progress: ProgressFn, mode: str = "fp32", resume: Resume | None = None
) -> Trained:
    from stable_baselines3 import DDPG, DQN, SAC, TD3
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(TORCH_THREADS)
    t_build = time.perf_counter()
    venv = make_vec_env(hp.env_id, n_envs=hp.params["n_envs"], seed=seed)
    cls = {"dqn": DQN, "sac": SAC, "td3": TD3, "ddpg": DDPG}[hp.algo]
    model, saved = sb3_resumed(cls, venv, resume)
    if model is None:
        model = cls("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **sb3_kwargs(hp))
    build_s = time.perf_counter() - t_build
    earlier = int((saved or {}).get("episodes", 0))  # episodes of the earlier sittings (their Monitors are gone)

    def episodes_so_far() -> int:
        return earlier + sum(len(m.get_episode_rewards()) for m in venv.envs)  # DummyVecEnv of Monitor-wrapped envs

    curve, wall, cpu, train_ret = sb3_learn(
        model,
        steps,
        progress,
        every=PROGRESS_EVERY,
        resume=resume,
        saved=saved,
        extra=lambda: {"episodes": episodes_so_far()},
    )
    episodes = episodes_so_far()
    return Trained(
        int(model.num_timesteps),
        train_ret,
        episodes,
        int(model._n_updates),
        lambda o: model.predict(o, deterministic=True)[0],
        build_s,
        wall,
        cpu,
        curve,
    )


def run_one(
    hp: HParams,
    impl: str,
    steps: int,
    seed: int,
    eval_episodes: int,
    progress: ProgressFn = lambda n: None,
    mode: str = "fp32",
    resume: Resume | None = None,
) -> OffPolicyRunResult:
    """One timed run of ``impl`` and its evaluation; with ``resume`` it checkpoints itself and continues an
    earlier sitting's checkpoint (:class:`benchmarks.common.Resume`)."""
    t = (_train_ours if impl == "ours" else _train_sb3)(hp, steps, seed, progress, mode, resume)
    t_eval = time.perf_counter()
    returns = evaluate_actions(t.act, hp.env_id, eval_episodes, seed=EVAL_SEED_BASE + 1_000 * seed)
    eval_s = time.perf_counter() - t_eval
    return OffPolicyRunResult(
        algo=hp.algo,
        env_id=hp.env_id,
        impl=impl,
        seed=seed,
        steps=int(t.steps),
        wall_s=t.wall_s,
        cpu_s=t.cpu_s,
        steps_per_s=t.steps / t.wall_s,
        cpu_steps_per_s=t.steps / max(t.cpu_s, 1e-9),
        eval_return=float(np.mean(returns)),
        eval_std=float(np.std(returns)),
        train_return_last100=float(t.train_return),
        episodes=int(t.episodes),
        build_s=t.build_s,
        eval_s=eval_s,
        curve=t.curve[:: max(1, len(t.curve) // 300)],
        gradient_steps=int(t.gradient_steps),
        grad_steps_per_s=t.gradient_steps / t.wall_s,
        cpu_grad_steps_per_s=t.gradient_steps / max(t.cpu_s, 1e-9),
        mode=mode if impl == "ours" else "fp32",
        config=recorded_config(run_config(hp, impl, seed, mode)),
    )


def run_config(hp: HParams, impl: str, seed: int, mode: str = "fp32") -> dict[str, Any]:
    """The settings one run trains with today: our config in ``mode``, or the SB3 side's hyperparameters."""
    return {**ours_config(hp, seed), **OUR_MODES[mode]} if impl == "ours" else sb3_config_record(hp)


def warm_up(hp: HParams, impls: Sequence[str] = IMPLS, modes: Sequence[str] = ("fp32",)) -> None:
    """A short untimed run of each implementation with learning starting at once, so that neither timed
    run pays the one-off costs of this algorithm's code path (imports, lazy init, first allocations)."""
    p = hp.params
    starts = max(p["batch_size"], p["train_freq"])
    quick = HParams(hp.algo, hp.env_id, hp.n_timesteps, hp.quick_timesteps, zoo={**hp.zoo, "learning_starts": starts})
    for impl in impls:
        for mode in modes if impl == "ours" else ("fp32",):
            run_one(quick, impl, starts + max(2 * p["train_freq"], 64), seed=12345, eval_episodes=2, mode=mode)


# ---- aggregation and report --------------------------------------------------------------------
OFF_POLICY_METRICS = (*SUMMARY_METRICS, "gradient_steps", "grad_steps_per_s", "cpu_grad_steps_per_s")


def summarize_runs(results: Sequence[OffPolicyRunResult], configs: Sequence[HParams]) -> list[dict[str, Any]]:
    """One row per (algo, env, our mode) present, each against all SB3 runs of its (algo, env)."""
    keys = [(hp.algo, hp.env_id) for hp in configs]
    rows = summarize_by_mode(results, keys, list(OUR_MODES), OFF_POLICY_METRICS)
    for r in rows:
        r["label"] = f"{r['algo'].upper()} ({r['mode']})\n{r['env_id']}"
        r["speed_ok"] = bool(r["cpu_speed_ratio"] >= 2.0)  # the target is env-steps per CPU-second (issue 16)
        r["grad_speed_ratio"] = ratio(r["grad_steps_per_s_ours"], r["grad_steps_per_s_sb3"])
        r["cpu_grad_speed_ratio"] = ratio(r["cpu_grad_steps_per_s_ours"], r["cpu_grad_steps_per_s_sb3"])
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| algo | env | mode (ours) | env steps | grad steps ours / SB3 | seeds | eval return ours | eval return SB3 | Δ (ours−SB3)"
        " | last-100 train ours | last-100 train SB3 | wall s ours | wall s SB3 | CPU s ours | CPU s SB3"
        " | env-steps/s ours | env-steps/s SB3 | grad-steps/s ours | grad-steps/s SB3 | speed ours/SB3 (wall)"
        " | speed ours/SB3 (CPU) | return ≥ SB3 | P(ours higher), Mann–Whitney p | ≥ 2× speed (CPU) |"
    )
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["algo"].upper(),
                    r["env_id"],
                    r.get("mode", "fp32"),
                    f"{r['steps']:,}",
                    f"{fmt(r['gradient_steps_ours'], 0)} / {fmt(r['gradient_steps_sb3'], 0)}",
                    str(r["seeds"]),
                    fmt(r["eval_return_ours"]),
                    fmt(r["eval_return_sb3"]),
                    fmt(r["return_delta"]),
                    fmt(r["train_return_last100_ours"]),
                    fmt(r["train_return_last100_sb3"]),
                    fmt(r["wall_s_ours"]),
                    fmt(r["wall_s_sb3"]),
                    fmt(r["cpu_s_ours"]),
                    fmt(r["cpu_s_sb3"]),
                    fmt(r["steps_per_s_ours"], 0),
                    fmt(r["steps_per_s_sb3"], 0),
                    fmt(r["grad_steps_per_s_ours"], 0),
                    fmt(r["grad_steps_per_s_sb3"], 0),
                    fmt(r["speed_ratio"], 2) + "×",
                    fmt(r["cpu_speed_ratio"], 2) + "×",
                    "yes" if r["return_ok"] else "**no**",
                    ranks_markdown(r),
                    "yes" if r["speed_ok"] else "**no**",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    cols = [
        ("algo", 4),
        ("env", 12),
        ("mode", 4),
        ("steps", 7),
        ("ret ours", 9),
        ("ret SB3", 9),
        ("train ours", 10),
        ("train SB3", 9),
        ("wall ours", 9),
        ("wall SB3", 9),
        ("cpu ours", 8),
        ("cpu SB3", 8),
        ("sps ours", 8),
        ("sps SB3", 8),
        ("gps ours", 8),
        ("gps SB3", 8),
        ("speed", 7),
        ("cpu-spd", 7),
    ]
    print(" ".join(f"{c:>{w}}" for c, w in cols))
    for r in rows:
        vals = [
            r["algo"],
            r["env_id"],
            r.get("mode", "fp32"),
            f"{r['steps']}",
            fmt(r["eval_return_ours"]),
            fmt(r["eval_return_sb3"]),
            fmt(r["train_return_last100_ours"]),
            fmt(r["train_return_last100_sb3"]),
            fmt(r["wall_s_ours"]),
            fmt(r["wall_s_sb3"]),
            fmt(r["cpu_s_ours"]),
            fmt(r["cpu_s_sb3"]),
            fmt(r["steps_per_s_ours"], 0),
            fmt(r["steps_per_s_sb3"], 0),
            fmt(r["grad_steps_per_s_ours"], 0),
            fmt(r["grad_steps_per_s_sb3"], 0),
            fmt(r["speed_ratio"], 2) + "x",
            fmt(r["cpu_speed_ratio"], 2) + "x",
        ]
        print(" ".join(f"{v:>{w}}" for v, (_, w) in zip(vals, cols)))


#: how the bf16 rows computed (``machine["bf16_matmuls"]``, recorded since 2026-12-06; older results: autocast)
BF16_PATHS = {
    "onednn": "here as oneDNN's float32 matmuls in bf16 precision, activations float32 (a CPU with AVX512-BF16/AMX)",
    "autocast": "here under `torch.autocast(bfloat16)`, the hidden activations in bf16 too",
    "mixed": "the pieces of this report differ: some under `torch.autocast(bfloat16)`, some as oneDNN's bf16-precision "
    "float32 matmuls",
}


def report_markdown(
    rows: Sequence[dict[str, Any]],
    configs: Sequence[HParams],
    meta: dict[str, Any],
    drift: Sequence[str] = (),
    plot_name: str = "off_policy.png",
) -> str:
    steps_of = {f"{r['algo']}/{r['env_id']}": r["steps"] for r in rows}
    m = meta["machine"]
    verdict = [
        f"- {r['algo'].upper()} {r['env_id']} ({r.get('mode', 'fp32')}): speed {fmt(r['speed_ratio'], 2)}× SB3 by wall time, "
        f"{fmt(r['cpu_speed_ratio'], 2)}× by CPU time ({'meets' if r['speed_ok'] else 'misses'} the 2× "
        f"target); gradient steps/s {fmt(r['grad_speed_ratio'], 2)}× (CPU {fmt(r['cpu_grad_speed_ratio'], 2)}×); "
        f"eval return {fmt(r['eval_return_ours'])} vs {fmt(r['eval_return_sb3'])} "
        f"({'equal or better' if r['return_ok'] else 'worse by the median rule'}){ranks_sentence(r)}."
        for r in rows
    ]
    peak = peak_load(m)
    load_warning = (
        f"\n**This run shared the machine:** load average up to {peak:g} on {m['cores']} cores, so wall "
        "times include waiting for a core; compare implementations by the CPU-time ratio."
        if m.get("cores") and peak > m["cores"]
        else ""
    )
    if meta.get("pieces"):
        command = (
            "the benchmark ran in pieces (each command under the 10-minute limit per command on this "
            "machine):\n\n"
            + "\n".join(f"- `{c.split('  (')[0]}` ({c.split('  (')[1]}" for c in meta["pieces"])
            + f"\n\nmerged into this report with `{meta['rerendered']}`"
        )
    else:
        command = f"`{meta['command']}`" + (
            f" (report re-rendered from its saved results with `{meta['rerendered']}`)"
            if meta.get("rerendered")
            else ""
        )
    return f"""# Off-policy benchmark: our DQN / SAC / TD3 / DDPG vs Stable-Baselines3

Generated by `benchmarks/off_policy.py` on {meta["date"]} ({meta["mode"]}).

**Command:** {command}

**Machine:** {m["cpu"]}, {m["cores"]}-core CPU shared with other jobs (load average at start
{m.get("loadavg_start")}, at end {m["loadavg"]}{" (highest over the pieces)" if meta.get("pieces") else ""}); Python {m["python"]}, torch {m["torch"]} (CPU),
Stable-Baselines3 {m["sb3"]}, gymnasium {m["gymnasium"]}. Both implementations run in the same process
with `torch.set_num_threads({m["torch_threads"]})` (our `torch_threads=1`; SB3 via `torch.set_num_threads(1)`),
on the CPU, one after the other, alternating which goes first, after an untimed warm-up of both. Timings on a
shared 2-core machine are noisy: re-run on a quiet machine for publishable numbers (the CPU-time columns are
less sensitive to load).{load_warning}

Target of the project: **equal or better return at ≥ 2× SB3's env-steps per CPU-second.**

## Results (medians over seeds)

{markdown_table(rows)}

{chr(10).join(verdict)}

- *eval return*: mean return of {meta.get("eval_episodes", 20)} episodes with the deterministic policy after
  training (greedy Q for DQN, the mean action for SAC, TD3 and DDPG), on fresh envs reset with the same seeds for
  both implementations.
- *last-100 train*: mean undiscounted return of the last 100 training episodes (with exploration); a run of
  fewer than 100 episodes (Pendulum: 200 steps each) averages all of them, the random warm-up ones included.
- *wall s* / *CPU s*: wall time / process CPU time of `learn()` only (no env construction, no evaluation);
  *env-steps/s* = env steps / wall s; *grad-steps/s* = gradient steps (minibatch updates; for SAC, TD3, DDPG one
  critic update with its actor/α/target updates) / wall s; *speed (CPU)*: the env-steps/s ratio from CPU time.
- *return ≥ SB3*: ours ≥ SB3 − {RETURN_TOLERANCE:.0%}·|SB3| (seed-to-seed noise allowance). With one seed a
  "no" can be noise; use `--seeds 5` for a verdict.
- *P(ours higher), Mann–Whitney p*: the runs' eval returns as two independent samples (a seed does not pair two
  libraries' runs): the share of (ours, SB3) run pairs where ours is higher (ties half; 0.5 = no tendency) and the
  two-sided Mann–Whitney U p. With few runs of a noisy task the median rule's "no" can sit beside p ≈ 1 (no
  difference the runs can show); a p under 0.05 is a difference they do show.
- *mode (ours)*: `fp32` is our default config; `bf16` is the same config with `matmul_dtype="bfloat16"`
  (`--ours-modes`; SAC, TD3, DDPG): every gradient step with bf16 matmuls (inputs rounded to bf16, float32
  accumulation) while parameters, Adam's state, the networks' outputs, targets and losses stay float32
  (`core_rl/continuous/critics.py`); {BF16_PATHS.get(m.get("bf16_matmuls") or "autocast", "")}. Both modes of
  a row are compared with the same SB3 runs (float32).

## Hyperparameters (RL-Zoo values over SB3 defaults, mapped field by field)

Source: RL-Zoo `hyperparams/dqn.yml`, `sac.yml`, `td3.yml`, `ddpg.yml` (DLR-RM/rl-baselines3-zoo); *from* says whether
a value is Zoo's or SB3's default (written out, so that every field that shapes training is mapped).
`(fixed)` rows are SB3 behaviours that are not constructor arguments. Fields of ours not listed keep
their defaults, none of which changes the algorithm (e.g. `prioritized=False`).
TD3: Zoo's Pendulum entry trains one gradient step per env step (`train_freq: 1`, `gradient_steps: 1`;
older Zoo versions wrote the same ratio as `train_freq: [1, "episode"]`, `gradient_steps: -1`).

{mapping_markdown(configs, steps_of)}{config_drift_markdown(drift)}
Differences that remain at equal hyperparameters (none changes the algorithm):

- *initialisation*: none since 2026-12-07. Every network of ours is initialised as SB3's (the `(fixed) init` rows:
  `init=torch_default`, PyTorch's nn.Linear init, where our class default is orthogonal). DQN's row came first (with
  our orthogonal default the last-100 training return was lower than SB3's, issue 16); SAC's, TD3's and DDPG's on
  2026-12-07, after TD3 on HalfCheetah (300k steps) ended 1,029 and 1,373 higher with it at seeds 0 and 2 (on
  Pendulum, 3 seeds, it had changed neither side's return beyond seed noise). Results saved before that date ran
  our orthogonal init for SAC, TD3 and DDPG unless their mode reads `sb3-init`.
- *SAC actor head*: SB3 has separate linear heads for μ and log σ; ours one linear layer that outputs both.
- *first gradient step*: ours trains once `learning_starts` is reached **and** the buffer holds `batch_size`
  transitions; SB3 samples (with replacement) as soon as `num_timesteps > learning_starts`. Only SAC is affected
  (`learning_starts` 100 < `batch_size` 256): ours takes ~155 fewer gradient steps; the grad-steps/s columns
  account for it.
- *actor-loss backward*: SB3 back-propagates the actor loss through the critic's weights too (and then discards
  those gradients); ours detaches the critic's parameters there, which saves FLOPs and gives the same update.
- *twin critics*: ours evaluates the K critics as one batched matmul per layer (`QEnsemble`); SB3 one MLP each.

{"This run used shorter budgets than Zoo's where the env-steps column is below the zoo budget." if meta["mode"] != "full" else ""}

Where our time goes (cProfile / torch.profiler of `learn`, and what would fix it): `benchmarks/README.md`,
section *off_policy*; reproduce with `python -m benchmarks.off_policy --profile both`.

![bar plot]({plot_name})
"""


# ---- MLflow ------------------------------------------------------------------------------------
CHILD_METRICS = (
    "steps",
    "wall_s",
    "cpu_s",
    "steps_per_s",
    "cpu_steps_per_s",
    "gradient_steps",
    "grad_steps_per_s",
    "cpu_grad_steps_per_s",
    "eval_return",
    "eval_std",
    "train_return_last100",
    "episodes",
    "build_s",
    "eval_s",
)


def open_mlflow(
    args: argparse.Namespace, stamp: str, meta: Mapping[str, Any]
) -> AbstractContextManager[BenchmarkMLflow | None]:
    """The parent run of this invocation (``None`` with ``--no-mlflow``); its status is owned by the block."""
    return benchmark_run(
        not args.no_mlflow,
        args.tracking_uri,
        EXPERIMENT,
        f"off_policy-{stamp}",
        {
            "command": meta.get("rerendered") or meta["command"],
            "mode": meta["mode"],
            "seeds": meta["seeds"],
            "eval_episodes": meta["eval_episodes"],
            "torch_threads": TORCH_THREADS,
            "pieces": " | ".join(meta.get("pieces", [])) or "-",
            **{f"machine.{k}": v for k, v in meta["machine"].items()},
        },
        tags={"benchmark": "off_policy"},
    )


def log_run(mlog: BenchmarkMLflow, hp: HParams, res: OffPolicyRunResult) -> None:
    """One child run: the implementation's config, the summary metrics and the training curve."""
    config = res.config or run_config(hp, res.impl, res.seed, res.mode)  # saved before configs were: today's
    impl = f"{res.impl}-{res.mode}" if res.impl == "ours" and res.mode != "fp32" else res.impl
    mlog.log_child(
        f"{hp.algo}-{hp.env_id}-{impl}-s{res.seed}",
        {"algo": hp.algo, "env_id": hp.env_id, "impl": res.impl, "mode": res.mode, "seed": str(res.seed)},
        {
            "impl": res.impl,
            "algo": hp.algo,
            "env_id": hp.env_id,
            "seed": res.seed,
            "torch_threads": TORCH_THREADS,
            "config": config,
        },
        {k: getattr(res, k) for k in CHILD_METRICS},
        res.steps,
        {"train/episode_return": res.curve},
    )


# ---- CLI ---------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    algos = sorted({hp.algo for hp in zoo_configs()})
    envs = sorted({hp.env_id for hp in zoo_configs()})
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.off_policy",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="shorter budgets for SAC and TD3 (DQN 5e4 = Zoo's, SAC 1e4, TD3 1.5e4, DDPG 2e4 = Zoo's env steps)",
    )
    p.add_argument("--algos", nargs="+", default=algos, choices=algos, help="a subset of the configurations")
    p.add_argument(
        "--envs",
        nargs="+",
        default=list(CLASSIC_ENVS),
        choices=envs,
        metavar="ENV",
        help=f"env ids of the configurations to run, from {envs} (default: the classic-control ones; "
        "the MuJoCo ones need the [mujoco] extra)",
    )
    add_run_arguments(p, DEFAULT_DOC)
    p.add_argument(
        "--profile",
        choices=["ours", "sb3", "both"],
        default=None,
        help="cProfile learn() of the chosen implementation(s) instead of benchmarking (seed 0)",
    )
    p.add_argument(
        "--impls",
        nargs="+",
        default=list(IMPLS),
        choices=IMPLS,
        help="train only these implementations (to split a long run into pieces merged with --results)",
    )
    add_mode_and_checkpoint_arguments(p, OUR_MODES, "bf16: matmul_dtype=bfloat16; SAC, TD3, DDPG only")
    p.add_argument("--mapping", action="store_true", help="print the hyperparameter mapping and exit")
    return parse_run_arguments(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(TORCH_THREADS)
    configs = [hp for hp in zoo_configs() if hp.algo in args.algos and hp.env_id in args.envs]
    if not configs and not args.results:
        print("no configuration matches --algos/--envs (DQN runs on CartPole-v1 only)", file=sys.stderr)
        return 2
    if args.mapping:
        print_mapping(configs)
        return 0

    def steps_of(hp: HParams) -> int:
        """The budget, rounded up to whole training phases (both libraries finish the phase they start)."""
        base = hp.quick_timesteps if args.quick else hp.n_timesteps
        phase = hp.params["train_freq"] * hp.params["n_envs"]
        return max(1, math.ceil(base * args.steps_scale / phase)) * phase

    out_dir = (args.out_dir or REPO / ".deeprl" / "benchmarks").resolve()
    if args.profile:
        impls = IMPLS if args.profile == "both" else (args.profile,)
        for hp in configs:
            warm_up(hp, impls)
            for impl in impls:
                train = _train_ours if impl == "ours" else _train_sb3

                def run(hp: HParams = hp, train: Callable = train) -> tuple[int, float]:
                    t = train(hp, steps_of(hp), 0, lambda n: None)
                    return t.steps, t.wall_s

                profile_learn(f"{hp.key} {impl}", run, out_dir / "profiles" / f"{hp.algo}-{hp.env_id}-{impl}.prof")
        return 0

    command = command_line("benchmarks.off_policy", argv)
    stamp = run_stamp()
    partial = out_dir / f"off_policy-{stamp}-partial.json"  # every finished run, while the benchmark goes on
    if args.results:
        args.results = sorted(args.results, key=lambda f: json.loads(Path(f).read_text())["meta"].get("date", ""))
        results, meta = load_results(args.results, OffPolicyRunResult)
        keys = {(r.algo, r.env_id) for r in results}
        configs = [hp for hp in zoo_configs() if (hp.algo, hp.env_id) in keys]
        metas = [json.loads(Path(f).read_text())["meta"] for f in args.results]
        machine = dict(meta["machine"])  # every piece's CPU and the highest load (common.merged_machine)
        # the pieces that trained a bf16 row say how (results from before the key: autocast)
        paths = {m["machine"].get("bf16_matmuls", "autocast") for m in metas if "bf16" in m.get("ours_modes", [])}
        machine["bf16_matmuls"] = paths.pop() if len(paths) == 1 else ("mixed" if paths else None)
        meta = {
            **meta,
            "machine": machine,
            "rerendered": command,
            "pieces": [f"{m['command']}  ({m['date']})" for m in metas] if len(metas) > 1 else [],
        }
    else:
        print_mapping(configs)
        print()
        machine = machine_note()
        machine["loadavg_start"] = machine["loadavg"]
        meta = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command,
            "mode": mode_note(args),
            "seeds": args.seeds,
            "eval_episodes": args.eval_episodes,
            "impls": list(args.impls),
            "ours_modes": list(args.ours_modes),
            "machine": machine,
        }
        results = []

    # one parent run with every child, also for a benchmark run in pieces; FAILED/KILLED if the block ends early
    with open_mlflow(args, stamp, meta) as mlog:
        if args.results:
            if mlog is not None:
                by_key = {hp.key: hp for hp in configs}
                for res in results:
                    log_run(mlog, by_key[f"{res.algo}/{res.env_id}"], res)
        else:
            from tqdm.auto import tqdm

            plan = [(seed, i, hp) for seed in seed_range(args) for i, hp in enumerate(configs)]

            def modes_of(hp: HParams, impl: str) -> list[str]:
                return [m for m in args.ours_modes if hp.algo in MODE_ALGOS[m]] if impl == "ours" else ["fp32"]

            total = sum(len(modes_of(hp, impl)) * steps_of(hp) for _, _, hp in plan for impl in args.impls)
            status = "FAILED"
            warmed: set[str] = set()
            try:
                with tqdm(
                    total=total, unit="step", unit_scale=True, dynamic_ncols=True, desc="off-policy bench"
                ) as bar:
                    for seed, i, hp in plan:
                        if hp.key not in warmed:
                            bar.set_description(f"{hp.algo} {hp.env_id} warm-up")
                            warm_up(hp, args.impls, modes_of(hp, "ours"))
                            warmed.add(hp.key)
                        # alternate which implementation goes first, so drifting load hits both alike
                        order = IMPLS if (seed + i) % 2 == 0 else IMPLS[::-1]
                        runs = [(impl, mode) for impl in order if impl in args.impls for mode in modes_of(hp, impl)]
                        for impl, mode in runs:
                            bar.set_description(f"{hp.algo} {hp.env_id} {impl} {mode} s{seed}")
                            resume = resume_for(
                                out_dir,
                                args.checkpoint_every,
                                "off_policy",
                                hp.algo,
                                hp.env_id,
                                impl,
                                mode,
                                f"s{seed}",
                                steps_of(hp),
                            )
                            res = run_one(hp, impl, steps_of(hp), seed, args.eval_episodes, bar.update, mode, resume)
                            results.append(res)
                            if resume is not None:  # the finished run on disk at once, then its checkpoint goes
                                out_dir.mkdir(parents=True, exist_ok=True)
                                partial.write_text(json.dumps(jsonable(results, meta), indent=1))
                                resume.clear()
                            bar.write(
                                f"{hp.algo:>3} {hp.env_id:<12} {impl:<4} {mode} seed {seed}: {res.steps_per_s:7.0f} "
                                f"steps/s {res.grad_steps_per_s:6.0f} grad/s ({res.wall_s:6.1f}s wall, "
                                f"{res.cpu_s:6.1f}s cpu)  eval {res.eval_return:8.1f}  "
                                f"last-100 {res.train_return_last100:8.1f}"
                            )
                            if mlog is not None:
                                log_run(mlog, hp, res)
                status = "FINISHED"
            finally:
                close_interrupted("off_policy", stamp, out_dir, results, meta, status)

        rows = summarize_runs(results, configs)
        hp_of = {(hp.algo, hp.env_id): hp for hp in configs}
        drift = config_drift(results, lambda r: run_config(hp_of[r.algo, r.env_id], r.impl, r.seed, r.mode))
        print()
        print_table(rows)
        files = write_outputs(
            "off_policy",
            stamp,
            out_dir,
            rows,
            markdown_table(rows),
            jsonable(results, meta),
            None if args.no_doc else args.doc,
            lambda plot: report_markdown(rows, configs, meta, drift, plot),
            json_suffix="-merged" if args.results else "",
        )
        if not args.results:
            partial.unlink(missing_ok=True)  # the complete results are saved: the partial file goes
        if mlog is not None:
            mlog.close(
                row_metrics(
                    rows,
                    (
                        "speed_ratio",
                        "cpu_speed_ratio",
                        "grad_speed_ratio",
                        "cpu_grad_speed_ratio",
                        "return_delta",
                        "eval_return_ours",
                        "eval_return_sb3",
                    ),
                ),
                files,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
