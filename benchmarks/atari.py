"""Our DQN / PPO / A2C on Atari from pixels side by side with Stable-Baselines3's, at RL-Zoo's settings.

``python -m benchmarks.atari [--algos dqn ppo a2c] [--envs ALE/Pong-v5 ...] --steps N [--seeds K]``

Both sides take RL-Zoo's ``atari`` entry of each algorithm (the core's presets,
``core_rl/presets/rl_zoo/<algo>.yml``, mapped field by field onto our config by
:mod:`core_rl.presets.zoo_mapping`; SB3 gets the entry itself) on the same ALE game with sticky actions
(v5, p = 0.25), each through its own standard preprocessing:

- ours: :mod:`core_rl.common.atari` (no-op reset, frame skip 4 with max-pool, 84×84 grayscale by pixel
  area, episodic life, clipped training rewards, 4 stacked ``uint8`` frames) and the Nature CNN, which
  the policy and value share (``share_encoder``, as SB3's ``CnnPolicy``);
- SB3: ``make_atari_env`` (its ``AtariWrapper``: the same steps with OpenCV's ``INTER_AREA`` resize; the
  raw ALE env made with ``frameskip=1`` so that frames are skipped once) and ``VecFrameStack(4)``.

Measured per run: wall and process CPU time of ``learn`` alone, env steps (agent steps; one is 4 ALE
frames) per second and per CPU-second, the **true game score** (whole games, unclipped) of the last 100
training games — ours from ``info["game_score"]``, SB3 from the ``Monitor`` it puts under the Atari
wrappers — and, with ``--eval-games G``, the mean score of G games of the trained policy (greedy for
DQN, sampled for PPO/A2C, as RL-Zoo evaluates them). The two sides alternate run by run; a run's results
go to a JSON file under ``.deeprl/benchmarks/`` as soon as it ends, so a long benchmark runs in pieces
(``--impls``, ``--seeds-from``) merged by ``--results FILE ...``; a run itself checkpoints every
``--checkpoint-every`` steps (both sides; replay buffers included), and the same command after a stop
continues it from there, so that a run longer than one sitting (a Pong score takes millions of steps) finishes; the report goes to
``docs/benchmarks/atari.md`` and MLflow (experiment ``benchmark-atari``).

Budgets: RL-Zoo trains 1e7 steps; ``--steps`` sets ours and SB3's alike. ``--learning-starts`` (DQN)
lowers RL-Zoo's 1e5 warm-up steps on both sides so that a short run measures the training phase's speed;
the report says so.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    IMPLS,
    REPO,
    SUMMARY_METRICS,
    TORCH_THREADS,
    Resume,
    RunResult,
    add_mode_and_checkpoint_arguments,
    add_run_arguments,
    benchmark_run,
    close_interrupted,
    command_line,
    config_drift,
    config_drift_markdown,
    fmt,
    jsonable,
    load_results,
    machine_note,
    ours_learn,
    parse_run_arguments,
    recorded_config,
    resume_for,
    row_metrics,
    run_main,
    run_stamp,
    sb3_learn,
    sb3_resumed,
    seed_range,
    summarize_by_mode,
    timed_result,
)
from core_rl.common.schedules import parse_schedule
from core_rl.presets import Preset, find_preset

ALGOS = ("dqn", "ppo", "a2c")
ENVS = ("ALE/Pong-v5", "ALE/Breakout-v5")
DEFAULT_DOC = REPO / "docs" / "benchmarks" / "atari.md"
#: RL-Zoo keys that configure the env or the policy class, not an SB3 constructor argument
_ZOO_ONLY = ("n_envs", "n_timesteps", "policy", "env_wrapper", "frame_stack", "normalize")
_POLICY_KWARGS = ("net_arch", "activation_fn", "ortho_init", "log_std_init", "optimizer_class", "optimizer_kwargs")


@dataclass(frozen=True)
class AtariConfig:
    """One (algorithm, game) pair at RL-Zoo's ``atari`` entry, with the run's overrides."""

    algo: str
    env_id: str
    preset: Preset
    learning_starts: int | None = None  # DQN: replaces RL-Zoo's 1e5 on both sides

    @property
    def key(self) -> str:
        return f"{self.algo}/{self.env_id}"

    @property
    def params(self) -> dict[str, Any]:
        """RL-Zoo's entry over SB3's defaults (SB3's names), with the overrides."""
        params = dict(self.preset.params)
        if self.learning_starts is not None:
            params["learning_starts"] = self.learning_starts
        return params


def configs(
    algos: Sequence[str] = ALGOS, envs: Sequence[str] = ENVS, learning_starts: int | None = None
) -> list[AtariConfig]:
    out = []
    for algo in algos:
        for env_id in envs:
            preset = find_preset(algo, env_id)
            if preset is None or preset.zoo_key != "atari":
                raise ValueError(f"no RL-Zoo atari preset of {algo} for {env_id}")
            out.append(AtariConfig(algo, env_id, preset, learning_starts if algo == "dqn" else None))
    return out


def ours_config(cfg: AtariConfig, seed: int) -> dict[str, Any]:
    """Our config: the preset's mapped fields, the overrides, one torch thread on the CPU."""
    config = dict(cfg.preset.config)
    if cfg.learning_starts is not None:
        config["learning_starts"] = cfg.learning_starts
    return dict(config, seed=seed, device="cpu", torch_threads=TORCH_THREADS)


def _sb3_value(name: str, value: Any) -> Any:
    """RL-Zoo's ``lin_<x>`` schedules as SB3's callables of progress_remaining (1 → 0)."""
    parsed = parse_schedule(value, name) if isinstance(value, str) else None
    if parsed is None:
        return value
    start = parsed[0]
    return lambda progress_remaining: progress_remaining * start


def sb3_kwargs(cfg: AtariConfig) -> dict[str, Any]:
    """SB3 constructor arguments of RL-Zoo's entry (``CnnPolicy``'s own defaults where Zoo sets none:
    no hidden layer after the NatureCNN, features shared by the actor and the critic)."""
    p = cfg.params
    kw = {k: _sb3_value(k, v) for k, v in p.items() if k not in _ZOO_ONLY + _POLICY_KWARGS}
    policy_kwargs: dict[str, Any] = {}
    if p.get("net_arch"):
        policy_kwargs["net_arch"] = list(p["net_arch"])
    if p.get("optimizer_class") == "RMSpropTFLike":
        from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

        policy_kwargs.update(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(p.get("optimizer_kwargs") or {}))
    if policy_kwargs:
        kw["policy_kwargs"] = policy_kwargs
    return kw


def sb3_env(cfg: AtariConfig, n_envs: int, seed: int) -> Any:
    """SB3's Atari pipeline as RL-Zoo builds it: ``make_atari_env`` (Monitor, then AtariWrapper) and 4 frames."""
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from core_rl.common.atari import register_ale

    register_ale()
    venv = make_atari_env(cfg.env_id, n_envs=n_envs, seed=seed, env_kwargs=dict(frameskip=1))
    return VecFrameStack(venv, n_stack=int(cfg.params.get("frame_stack", 4)))


# ---- one run ---------------------------------------------------------------------------------------
#: our config overrides per ``--ours-modes`` value (the table's *mode* column); SB3 always runs float32
OUR_MODES: dict[str, dict[str, Any]] = {"fp32": {}, "bf16": {"encoder_dtype": "bfloat16"}}


@dataclass
class AtariRunResult(RunResult):
    grad_steps: int = 0
    mode: str = "fp32"  # our side's OUR_MODES entry ("fp32" for SB3 and for results saved before modes)


def run_config(cfg: AtariConfig, impl: str, seed: int, mode: str = "fp32") -> dict[str, Any]:
    """The settings one run trains with today: our config in ``mode``, or RL-Zoo's entry as SB3 runs it."""
    return {**ours_config(cfg, seed), **OUR_MODES[mode]} if impl == "ours" else dict(cfg.params)


def _train_ours(
    cfg: AtariConfig, steps: int, seed: int, eval_games: int, resume: Resume | None = None, mode: str = "fp32"
) -> AtariRunResult:
    from core_rl.registry import get_algo

    config = run_config(cfg, "ours", seed, mode)
    agent, build_s, wall, cpu, curve = ours_learn(
        get_algo(cfg.algo).cls, cfg.env_id, config, steps, lambda n: None, resume
    )
    t_eval = time.perf_counter()
    scores = (
        agent.evaluate(eval_games, deterministic=cfg.algo == "dqn", seed=100_000 + seed)["returns"]
        if eval_games
        else []
    )
    recent = list(agent.episode_returns)[-100:]
    result = _result(
        cfg, "ours", seed, agent.num_timesteps, wall, cpu, scores, recent, agent.episodes_done, build_s, t_eval, curve
    )
    result.mode = mode
    result.config = recorded_config(config)
    return result


def _train_sb3(
    cfg: AtariConfig, steps: int, seed: int, eval_games: int, resume: Resume | None = None, mode: str = "fp32"
) -> AtariRunResult:
    from stable_baselines3 import A2C, DQN, PPO
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(TORCH_THREADS)
    t_build = time.perf_counter()
    cls = {"dqn": DQN, "ppo": PPO, "a2c": A2C}[cfg.algo]
    env = sb3_env(cfg, int(cfg.params["n_envs"]), seed)  # a resumed model's env is made from the run's seed again
    model, saved = sb3_resumed(cls, env, resume)
    if model is None:
        model = cls("CnnPolicy", env, seed=seed, device="cpu", verbose=0, **sb3_kwargs(cfg))
    build_s = time.perf_counter() - t_build
    earlier = int((saved or {}).get("episodes", 0))  # games of the earlier sittings (their Monitors are gone)

    def games() -> int:
        return earlier + sum(len(rewards) for rewards in env.env_method("get_episode_rewards"))  # each env's Monitor

    curve, wall, cpu, _ = sb3_learn(
        model, steps, lambda n: None, resume=resume, saved=saved, extra=lambda: {"episodes": games()}
    )
    recent = [float(e["r"]) for e in model.ep_info_buffer]  # the Monitor under the wrappers: whole games
    episodes = games()
    t_eval = time.perf_counter()
    scores: list[float] = []
    if eval_games:
        scores, _ = evaluate_policy(
            model,
            sb3_env(cfg, 1, 100_000 + seed),
            n_eval_episodes=eval_games,
            deterministic=cfg.algo == "dqn",
            return_episode_rewards=True,
        )
    result = _result(cfg, "sb3", seed, model.num_timesteps, wall, cpu, scores, recent, episodes, build_s, t_eval, curve)
    result.config = recorded_config(run_config(cfg, "sb3", seed))
    return result


def _result(
    cfg: AtariConfig,
    impl: str,
    seed: int,
    done: int,
    wall: float,
    cpu: float,
    scores: Sequence[float],
    recent: Sequence[float],
    episodes: int,
    build_s: float,
    t_eval: float,
    curve: list[tuple[int, float]],
) -> AtariRunResult:
    p = cfg.params
    grad_steps = 0
    if cfg.algo == "dqn":
        learning = max(0, done - int(p["learning_starts"]))
        grad_steps = learning // int(p["train_freq"]) * int(p["gradient_steps"])
    else:
        batch = int(p["n_envs"]) * int(p["n_steps"])
        per_rollout = int(p.get("n_epochs", 1)) * math.ceil(batch / int(p.get("batch_size", batch)))
        grad_steps = done // batch * per_rollout
    return timed_result(
        AtariRunResult,
        algo=cfg.algo,
        env_id=cfg.env_id,
        impl=impl,
        seed=seed,
        steps=done,
        wall_s=wall,
        cpu_s=cpu,
        eval_returns=scores,
        train_return_last100=float(np.mean(recent)) if len(recent) else float("nan"),
        episodes=int(episodes),
        build_s=build_s,
        eval_s=time.perf_counter() - t_eval,
        curve=curve,
        grad_steps=grad_steps,
    )


def run_one(
    cfg: AtariConfig,
    impl: str,
    steps: int,
    seed: int,
    eval_games: int = 0,
    resume: Resume | None = None,
    mode: str = "fp32",
) -> AtariRunResult:
    """One run of ``impl`` (ours in ``mode``, :data:`OUR_MODES`); with ``resume`` it checkpoints itself and
    continues an earlier sitting's checkpoint."""
    train: Callable[..., AtariRunResult] = _train_ours if impl == "ours" else _train_sb3
    return train(cfg, steps, seed, eval_games, resume, mode)


# ---- report ----------------------------------------------------------------------------------------
def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| algo | game | mode (ours) | env steps | seeds | score last-100 training games ours | SB3 | eval score ours | SB3 | "
        "CPU s ours | CPU s SB3 | env-steps per CPU-s ours | SB3 | speed ours/SB3 (CPU) | speed ours/SB3 (wall) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['algo'].upper()} | {r['env_id']} | {r.get('mode', 'fp32')} | {r['steps']:,} | {r['seeds']} | "
            f"{fmt(r['train_return_last100_ours'])} | {fmt(r['train_return_last100_sb3'])} | "
            f"{fmt(r['eval_return_ours'])} | {fmt(r['eval_return_sb3'])} | {fmt(r['cpu_s_ours'])} | "
            f"{fmt(r['cpu_s_sb3'])} | {fmt(r['cpu_steps_per_s_ours'])} | {fmt(r['cpu_steps_per_s_sb3'])} | "
            f"{fmt(r['cpu_speed_ratio'], 2)}× | {fmt(r['speed_ratio'], 2)}× |"
        )
    return "\n".join(lines)


def report_markdown(
    rows: Sequence[dict[str, Any]], cfgs: Sequence[AtariConfig], meta: dict[str, Any], drift: Sequence[str] = ()
) -> str:
    m = meta["machine"]
    bf16_note = {True: " (with AVX512-BF16/AMX)", False: " (no bf16 instructions)"}.get(m.get("cpu_bf16"), "")
    overrides = [
        f"DQN `learning_starts` {c.learning_starts:,} on both sides (RL-Zoo: {int(c.preset.params['learning_starts']):,})"
        for c in cfgs
        if c.learning_starts is not None
    ]
    commands = "\n".join(f"- `{c}`" for c in meta.get("commands", [meta["command"]]))
    settings = "\n".join(
        f"- {c.algo.upper()} {c.env_id}: our config {json.dumps(ours_config(c, 0), default=str)}; "
        f"SB3 `CnnPolicy` with {json.dumps({k: str(v) for k, v in c.params.items() if k not in _ZOO_ONLY})}"
        for c in cfgs
    )
    return f"""# Atari from pixels: our DQN / PPO / A2C vs Stable-Baselines3

Generated by `benchmarks/atari.py` on {meta["date"]}.

**Commands:**
{commands}
{f"{chr(10)}Merged into this report by `{meta['merged_by']}`.{chr(10)}" if meta.get("merged_by") else ""}
**Machine:** {m.get("cpu")}{bf16_note}, load average at start {m.get("loadavg_start")}, at end {m.get("loadavg")}; Python
{m["python"]}, torch {m["torch"]} (CPU, one thread per run), both implementations in the same process, one
after the other. Compare by the CPU-time columns: wall times on this shared 2-core machine include waiting.
{"**Budget overrides:** " + "; ".join(overrides) + "." if overrides else ""}

{markdown_table(rows)}

- *score*: the true game score (whole games, unclipped rewards); "last-100 training games" averages the
  last (up to) 100 games played while training (with exploration); *eval score*: games of the trained
  policy (`--eval-games`; greedy for DQN, sampled for PPO/A2C), "–" where none ran.
- *env steps*: agent steps (4 ALE frames each); *speed*: env steps per CPU-second (per wall second), ours/SB3.
- *mode (ours)*: `fp32` is our default config; `bf16` the same with `encoder_dtype="bfloat16"` (`--ours-modes`):
  the Nature CNN under `torch.autocast(bfloat16)`, its features, heads, targets, losses and optimizer state
  float32 (`core_rl/common/networks.py`, `ObsEncoder`). A speed mode for CPUs with AVX512-BF16/AMX (see the
  machine's CPU above); both modes of a row are compared with the same SB3 runs (float32).

Settings (RL-Zoo's `atari` entries, `core_rl/presets/rl_zoo/*.yml`):
{settings}
{config_drift_markdown(drift)}"""


# ---- command line ----------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.atari",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    p.add_argument("--envs", nargs="+", default=["ALE/Pong-v5"], choices=ENVS, metavar="ENV")
    p.add_argument("--steps", type=int, default=None, help="env (agent) steps per run (required unless --results)")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--eval-games", type=int, default=0, help="games of the trained policy per run (default 0)")
    p.add_argument("--learning-starts", type=int, default=None, help="DQN: replaces RL-Zoo's 1e5 on both sides")
    add_mode_and_checkpoint_arguments(p, OUR_MODES, "bf16: encoder_dtype=bfloat16, the CNN in bf16")
    add_run_arguments(p, DEFAULT_DOC, seeds=1, eval_episodes=False)  # --seeds, --steps-scale, MLflow, outputs
    args = parse_run_arguments(p, argv)
    if args.results is None and (args.steps is None or args.steps < 1):
        p.error("--steps must be a positive number of env steps")
    if args.eval_games < 0:
        p.error("--eval-games must be ≥ 0")
    if args.learning_starts is not None and args.learning_starts < 0:
        p.error("--learning-starts must be ≥ 0")
    if args.steps is not None:
        args.steps = max(1, round(args.steps * args.steps_scale))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(TORCH_THREADS)
    out_dir = (args.out_dir or REPO / ".deeprl" / "benchmarks").resolve()
    stamp = run_stamp()
    command = command_line("benchmarks.atari", argv)
    if args.results:
        metas = [json.loads(Path(f).read_text())["meta"] for f in args.results]
        results, meta = load_results(args.results, AtariRunResult)
        meta["commands"] = [c for m in metas for c in m.get("commands", [m["command"]])]
        meta["merged_by"] = command
        starts = {m.get("learning_starts") for m in metas} - {None}
        if len(starts) > 1:
            print(
                f"the pieces ran with different --learning-starts {sorted(starts)}: merge them apart", file=sys.stderr
            )
            return 2
        keys = sorted({(r.algo, r.env_id) for r in results})
        cfgs = [c for c in configs(ALGOS, ENVS, next(iter(starts)) if starts else None) if (c.algo, c.env_id) in keys]
    else:
        cfgs = configs(args.algos, args.envs, args.learning_starts)
        machine = machine_note()
        machine["loadavg_start"] = machine["loadavg"]
        meta = dict(
            command=command,
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            machine=machine,
            steps=args.steps,
            learning_starts=args.learning_starts,
        )
        results = []
        json_path = out_dir / f"atari-{stamp}.json"
        out_dir.mkdir(parents=True, exist_ok=True)
        status = "FAILED"
        try:
            for cfg in cfgs:
                for seed in seed_range(args):
                    order = args.impls if seed % 2 == 0 else list(reversed(args.impls))
                    runs = [
                        (impl, mode) for impl in order for mode in (args.ours_modes if impl == "ours" else ["fp32"])
                    ]
                    for impl, mode in runs:
                        print(f"{cfg.key} {impl} {mode} seed {seed}: {args.steps:,} steps ...", flush=True)
                        resume = resume_for(
                            out_dir,
                            args.checkpoint_every,
                            "atari",
                            cfg.algo,
                            cfg.env_id,
                            impl,
                            mode,
                            f"s{seed}",
                            args.steps,
                            f"ls{cfg.learning_starts}",
                        )
                        r = run_one(cfg, impl, args.steps, seed, args.eval_games, resume, mode)
                        results.append(r)
                        print(
                            f"  {r.cpu_s:.1f} CPU s, {r.cpu_steps_per_s:.1f} steps per CPU-s, "
                            f"last-100 score {r.train_return_last100:.2f} ({r.episodes} games)",
                            flush=True,
                        )
                        meta["machine"]["loadavg"] = machine_note()["loadavg"]
                        json_path.write_text(json.dumps(jsonable(results, meta), indent=1))
                        if resume is not None:  # the run's result is saved: its checkpoint is not needed any more
                            resume.clear()
            status = "FINISHED"
        finally:
            close_interrupted("atari", stamp, out_dir, results, meta, status)
        print(f"results: {json_path}")
    rows = summarize_by_mode(results, [(c.algo, c.env_id) for c in cfgs], list(OUR_MODES), SUMMARY_METRICS)
    print(markdown_table(rows))
    if not args.no_doc:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        cfg_of = {(c.algo, c.env_id): c for c in cfgs}
        drift = config_drift(results, lambda r: run_config(cfg_of[r.algo, r.env_id], r.impl, r.seed, r.mode))
        args.doc.write_text(report_markdown(rows, cfgs, meta, drift))
        print(f"report: {args.doc}")
    with benchmark_run(
        not args.no_mlflow,
        args.tracking_uri,
        "benchmark-atari",
        f"atari-{stamp}",
        params=dict(command=command[:500]),
        tags={"benchmark": "atari"},
    ) as mlflow_log:
        if mlflow_log is not None:
            for r in results:
                mlflow_log.log_child(
                    f"{r.algo}-{r.env_id}-{r.impl}{'' if r.mode == 'fp32' else '-' + r.mode}-s{r.seed}",
                    tags={"impl": r.impl, "algo": r.algo, "env_id": r.env_id, "mode": r.mode},
                    params=dict(seed=r.seed, steps=r.steps),
                    summary={m: getattr(r, m) for m in SUMMARY_METRICS if math.isfinite(getattr(r, m))},
                    step=r.steps,
                    curves={"game_score": r.curve},
                )
            mlflow_log.close(
                row_metrics(rows, ("cpu_speed_ratio", "speed_ratio"), key=("algo", "env_id", "mode")),
                [args.doc] if not args.no_doc else [],
            )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
