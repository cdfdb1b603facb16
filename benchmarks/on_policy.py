"""Our PPO and A2C side by side with Stable-Baselines3's, at RL-Zoo's tuned hyperparameters.

``python -m benchmarks.on_policy [--quick] [--seeds N] [--envs ...] [--algos ...] [--no-mlflow]``

Every (algo, env, seed) is trained twice in this one process, once by
:class:`core_rl.trust_region.ppo.PPO` / :class:`core_rl.actor_critic.actor_critic.A2C` and once by
SB3's ``PPO`` / ``A2C``, from one neutral hyperparameter record (:class:`HParams`, SB3's names and
RL-Zoo's values) mapped to both sides by :func:`sb3_model` and :func:`ours_config`. Both train with
``torch.set_num_threads(1)`` on the CPU, without loggers writing anything during training.

Measured for each run: wall time and process CPU time of ``learn`` alone (env construction and
evaluation excluded), env-steps/s, the mean of the last 100 training episodes (undiscounted, raw
rewards), and the mean return of 20 evaluation episodes of the deterministic policy on fresh envs
seeded identically for both implementations. Ours and SB3 alternate run by run (and which goes
first alternates too), so load on a shared machine hits both alike; the table reports medians
over seeds. Results go to the terminal, ``docs/benchmarks/on_policy.md``, a JSON file under
``.deeprl/benchmarks/`` and MLflow (one parent run, one child per (algo, env, impl, seed), the
table and a bar plot as artifacts). ``--results FILE ...`` re-renders the report from saved JSON
files (e.g. the pieces of a benchmark run in several shorter invocations) without training.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    IMPLS,
    REPO,
    RETURN_TOLERANCE,
    TORCH_THREADS,
    BenchmarkMLflow,
    ProgressFn,
    RunResult,
    add_run_arguments,
    benchmark_run,
    close_interrupted,
    command_line,
    config_drift,
    config_drift_markdown,
    evaluate_actions,
    load_results,
    machine_note,
    mode_note,
    ours_learn,
    parse_run_arguments,
    profile_learn,
    ranks_markdown,
    ranks_sentence,
    recorded_config,
    row_metrics,
    run_main,
    run_stamp,
    sb3_learn,
    seed_range,
    timed_result,
    write_outputs,
)
from benchmarks.common import fmt as _f
from benchmarks.common import jsonable as _jsonable
from benchmarks.common import summarize as _summarize
from core_rl.presets import find_preset, zoo_mapping

DEFAULT_DOC = REPO / "docs" / "benchmarks" / "on_policy.md"
EXPERIMENT = "benchmark-on-policy"


# ---- hyperparameters ---------------------------------------------------------------------------
@dataclass(frozen=True)
class HParams:
    """One benchmark configuration in SB3's vocabulary, with SB3's defaults for what Zoo leaves out.

    ``learning_rate``/``clip_range`` are initial values; ``*_schedule`` says whether they decay
    linearly to 0 over training (RL-Zoo's ``lin_<value>``).
    """

    algo: str  # "ppo" | "a2c"
    env_id: str
    n_timesteps: int  # RL-Zoo's budget
    quick_timesteps: int  # the --quick budget
    n_envs: int
    n_steps: int
    gamma: float
    gae_lambda: float
    learning_rate: float
    lr_schedule: str = "constant"
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_obs: bool = False
    normalize_reward: bool = False
    normalize_advantage: bool = True
    # PPO only
    batch_size: int = 64
    n_epochs: int = 10
    clip_range: float = 0.2
    clip_schedule: str = "constant"
    # A2C only (SB3: use_rms_prop=True, rms_prop_eps=1e-5, torch RMSprop alpha=0.99)
    rms_alpha: float = 0.99
    rms_eps: float = 1e-5
    # both: SB3's MlpPolicy (separate π and V MLPs, orthogonal init, log σ₀ = 0)
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0
    zoo_note: str = ""

    @property
    def key(self) -> str:
        return f"{self.algo}/{self.env_id}"


def zoo_configs() -> list[HParams]:
    """RL-Zoo's tuned values (hyperparams/ppo.yml and a2c.yml of DLR-RM/rl-baselines3-zoo).

    Zoo's ``normalize: true`` is ``VecNormalize(norm_obs=True, norm_reward=True, gamma=gamma)``.
    """
    return [
        HParams(
            "ppo",
            "CartPole-v1",
            100_000,
            100_000,
            n_envs=8,
            n_steps=32,
            batch_size=256,
            n_epochs=20,
            gae_lambda=0.8,
            gamma=0.98,
            learning_rate=1e-3,
            lr_schedule="linear",
            clip_range=0.2,
            clip_schedule="linear",
            ent_coef=0.0,
            zoo_note="zoo 'Tuned'",
        ),
        HParams(
            "a2c",
            "CartPole-v1",
            500_000,
            200_000,
            n_envs=8,
            n_steps=5,
            gamma=0.99,
            gae_lambda=1.0,
            learning_rate=7e-4,
            ent_coef=0.0,
            normalize_advantage=False,
            zoo_note="zoo; SB3 A2C defaults",
        ),
        HParams(
            "ppo",
            "Acrobot-v1",
            1_000_000,
            200_000,
            n_envs=16,
            n_steps=256,
            batch_size=64,
            n_epochs=4,
            gae_lambda=0.94,
            gamma=0.99,
            learning_rate=3e-4,
            ent_coef=0.0,
            normalize_obs=True,
            normalize_reward=True,
            zoo_note="zoo normalize: true",
        ),
        HParams(
            "a2c",
            "Acrobot-v1",
            500_000,
            200_000,
            n_envs=16,
            n_steps=5,
            gamma=0.99,
            gae_lambda=1.0,
            learning_rate=7e-4,
            ent_coef=0.0,
            normalize_obs=True,
            normalize_reward=True,
            normalize_advantage=False,
            zoo_note="zoo normalize: true; SB3 A2C defaults",
        ),
        HParams(
            "ppo",
            "Pendulum-v1",
            100_000,
            100_000,
            n_envs=4,
            n_steps=1024,
            batch_size=64,
            n_epochs=10,
            gae_lambda=0.95,
            gamma=0.9,
            learning_rate=1e-3,
            clip_range=0.2,
            ent_coef=0.0,
            normalize_obs=True,
            normalize_reward=True,
            zoo_note="zoo 'Tuned' with use_sde=False (zoo: True) and normalization added on both sides",
        ),
        *mujoco_configs(),
    ]


#: the classic-control envs a plain ``python -m benchmarks.on_policy`` runs
CLASSIC_ENVS = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1")


def mujoco_configs() -> list[HParams]:
    """PPO on Hopper-v5 and Walker2d-v5, PPO and A2C on HalfCheetah-v5 (needs ``pip install 'deeprl-suite[mujoco]'``):
    RL-Zoo's ``-v4`` entries (the closest version Zoo tunes) as the core's presets map them, 1e6 steps in
    Zoo, ``--quick`` = issue 16's 300k. Zoo sets ``ortho_init=False``; ours always initializes
    orthogonally, so both sides run with SB3's default ``ortho_init=True`` here (the one deviation, stated
    in the note)."""
    ortho = "with ortho_init=True on both sides (zoo: False)"
    return [
        _from_preset("ppo", "Hopper-v5", 300_000, f"zoo Hopper-v4 (closest version) {ortho}"),
        _from_preset("ppo", "Walker2d-v5", 300_000, f"zoo Walker2d-v4 (closest version) {ortho}"),
        _from_preset("ppo", "HalfCheetah-v5", 300_000, f"zoo HalfCheetah-v4 (closest version) {ortho}"),
        _from_preset(
            "a2c",
            "HalfCheetah-v5",
            300_000,
            "zoo HalfCheetah-v4 (closest version): normalize: true, SB3 A2C defaults otherwise",
        ),
    ]


def _from_preset(algo: str, env_id: str, quick_timesteps: int, zoo_note: str) -> HParams:
    """``HParams`` of the core's preset for ``algo`` on ``env_id``: its mapped config in this record's names."""
    preset = find_preset(algo, env_id)
    names = {f.name for f in fields(HParams)}
    values = {("learning_rate" if k == "lr" else k): v for k, v in preset.config.items()}
    kept = {k: v for k, v in values.items() if k in names}
    return HParams(algo, env_id, preset.n_timesteps, quick_timesteps, zoo_note=zoo_note, **kept)


def sb3_params(hp: HParams) -> dict[str, Any]:
    """``hp`` as an RL-Zoo/SB3 record (SB3's names, ``lin_`` schedules, Zoo's ``normalize``), over SB3's
    defaults (:func:`core_rl.presets.zoo_mapping.zoo_params`)."""
    lin = lambda value, kind: f"lin_{value}" if kind == "linear" else value  # noqa: E731
    record: dict[str, Any] = dict(
        learning_rate=lin(hp.learning_rate, hp.lr_schedule),
        n_envs=hp.n_envs,
        n_steps=hp.n_steps,
        gamma=hp.gamma,
        gae_lambda=hp.gae_lambda,
        ent_coef=hp.ent_coef,
        vf_coef=hp.vf_coef,
        max_grad_norm=hp.max_grad_norm,
        normalize_advantage=hp.normalize_advantage,
        normalize=dict(norm_obs=hp.normalize_obs, norm_reward=hp.normalize_reward),
        use_sde=False,
        policy_kwargs=dict(
            net_arch=dict(pi=list(hp.hidden_sizes), vf=list(hp.hidden_sizes)),
            activation_fn={"tanh": "Tanh", "relu": "ReLU"}[hp.activation],
            log_std_init=hp.log_std_init,
        ),
    )
    if hp.algo == "ppo":
        record.update(batch_size=hp.batch_size, n_epochs=hp.n_epochs, clip_range=lin(hp.clip_range, hp.clip_schedule))
    else:
        record.update(use_rms_prop=True, rms_prop_eps=hp.rms_eps)
    return zoo_mapping.zoo_params(hp.algo, record)


def ours_config(hp: HParams, seed: int) -> dict[str, Any]:
    """The same configuration as our PPOConfig / A2CConfig fields: the core's field-by-field mapping
    (:mod:`core_rl.presets.zoo_mapping`, shared with ``deeprl train``'s presets) of :func:`sb3_params`."""
    cfg = zoo_mapping.ours_config(hp.algo, sb3_params(hp))
    # fused_update is our default, written out so that the report says which update mode ran
    return dict(seed=seed, device="cpu", torch_threads=TORCH_THREADS, fused_update=True, numpy_acting=True, **cfg)


def _schedule(value: float, kind: str) -> float | Callable[[float], float]:
    # SB3 calls schedules with progress_remaining (1 → 0); Zoo's lin_<v> is progress_remaining·v
    return (lambda progress_remaining: progress_remaining * value) if kind == "linear" else value


def sb3_kwargs(hp: HParams) -> dict[str, Any]:
    """SB3 constructor arguments (schedules as callables, as RL-Zoo passes them)."""
    kw: dict[str, Any] = dict(
        learning_rate=_schedule(hp.learning_rate, hp.lr_schedule),
        n_steps=hp.n_steps,
        gamma=hp.gamma,
        gae_lambda=hp.gae_lambda,
        ent_coef=hp.ent_coef,
        vf_coef=hp.vf_coef,
        max_grad_norm=hp.max_grad_norm,
        normalize_advantage=hp.normalize_advantage,
        use_sde=False,
        policy_kwargs=dict(
            net_arch=dict(pi=list(hp.hidden_sizes), vf=list(hp.hidden_sizes)),
            activation_fn=torch.nn.Tanh if hp.activation == "tanh" else torch.nn.ReLU,
            ortho_init=True,
            log_std_init=hp.log_std_init,
        ),
    )
    if hp.algo == "ppo":
        kw.update(batch_size=hp.batch_size, n_epochs=hp.n_epochs, clip_range=_schedule(hp.clip_range, hp.clip_schedule))
    else:
        kw.update(use_rms_prop=True, rms_prop_eps=hp.rms_eps)
    return kw


# ---- one training run --------------------------------------------------------------------------
def _train_ours(
    hp: HParams, steps: int, seed: int, progress: ProgressFn
) -> tuple[Any, Callable, float, float, float, list]:
    from core_rl.actor_critic.actor_critic import A2C
    from core_rl.trust_region.ppo import PPO

    cls = PPO if hp.algo == "ppo" else A2C
    agent, build_s, wall, cpu, curve = ours_learn(cls, hp.env_id, ours_config(hp, seed), steps, progress)
    act = lambda o: agent.predict(o, deterministic=True)  # noqa: E731
    info = (agent.num_timesteps, agent.mean_return, agent.episodes_done)
    return info, act, build_s, wall, cpu, curve


def _train_sb3(
    hp: HParams, steps: int, seed: int, progress: ProgressFn
) -> tuple[Any, Callable, float, float, float, list]:
    from stable_baselines3 import A2C as SB3A2C
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(TORCH_THREADS)
    t_build = time.perf_counter()
    venv = make_vec_env(hp.env_id, n_envs=hp.n_envs, seed=seed)
    vecnorm = None
    if hp.normalize_obs or hp.normalize_reward:
        venv = vecnorm = VecNormalize(venv, norm_obs=hp.normalize_obs, norm_reward=hp.normalize_reward, gamma=hp.gamma)
    cls = SB3PPO if hp.algo == "ppo" else SB3A2C
    model = cls("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **sb3_kwargs(hp))
    build_s = time.perf_counter() - t_build
    curve, wall, cpu, train_ret = sb3_learn(model, steps, progress)
    monitors = (vecnorm.venv if vecnorm is not None else venv).envs  # DummyVecEnv of Monitor-wrapped envs
    episodes = sum(len(m.get_episode_rewards()) for m in monitors)

    def act(o: np.ndarray) -> np.ndarray:
        x = vecnorm.normalize_obs(o) if vecnorm is not None and hp.normalize_obs else o
        return model.predict(x, deterministic=True)[0]

    return (model.num_timesteps, train_ret, episodes), act, build_s, wall, cpu, curve


def run_one(
    hp: HParams, impl: str, steps: int, seed: int, eval_episodes: int, progress: ProgressFn = lambda n: None
) -> RunResult:
    train = _train_ours if impl == "ours" else _train_sb3
    (done, train_ret, episodes), act, build_s, wall, cpu, curve = train(hp, steps, seed, progress)
    t_eval = time.perf_counter()
    returns = evaluate_actions(act, hp.env_id, eval_episodes, seed=100_000 + 1_000 * seed)
    eval_s = time.perf_counter() - t_eval
    return timed_result(
        RunResult,
        algo=hp.algo,
        env_id=hp.env_id,
        impl=impl,
        seed=seed,
        steps=done,
        wall_s=wall,
        cpu_s=cpu,
        eval_returns=returns,
        train_return_last100=float(train_ret),
        episodes=int(episodes),
        build_s=build_s,
        eval_s=eval_s,
        curve=curve,
        config=recorded_config(run_config(hp, impl, seed)),
    )


def run_config(hp: HParams, impl: str, seed: int) -> dict[str, Any]:
    """The settings one run trains with today: our config, or the SB3 side's (:func:`sb3_config_record`)."""
    return ours_config(hp, seed) if impl == "ours" else sb3_config_record(hp)


def sb3_config_record(hp: HParams) -> dict[str, Any]:
    """The SB3 side's settings as JSON values: its constructor arguments (a linear schedule as RL-Zoo writes
    it, ``lin_<v>``; the policy's activation by name), the number of envs and the normalization."""
    kwargs = sb3_kwargs(hp)
    kwargs["learning_rate"] = f"lin_{hp.learning_rate}" if hp.lr_schedule == "linear" else hp.learning_rate
    if "clip_range" in kwargs:
        kwargs["clip_range"] = f"lin_{hp.clip_range}" if hp.clip_schedule == "linear" else hp.clip_range
    return {
        **recorded_config(kwargs),
        "n_envs": hp.n_envs,
        "normalize_obs": hp.normalize_obs,
        "normalize_reward": hp.normalize_reward,
    }


def warm_up(hp: HParams) -> None:
    """One short untimed run of each implementation, so that neither timed run pays the process's
    one-off costs (imports, torch's lazy initialisation, first-call allocations)."""
    for impl in IMPLS:
        run_one(hp, impl, hp.n_envs * hp.n_steps * 2, seed=12345, eval_episodes=2)


# ---- aggregation and report --------------------------------------------------------------------
def summarize(results: Sequence[RunResult], configs: Sequence[HParams]) -> list[dict[str, Any]]:
    return _summarize(results, [(hp.algo, hp.env_id) for hp in configs])


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| algo | env | steps | seeds | eval return ours | eval return SB3 | Δ (ours−SB3) | last-100 train ours"
        " | last-100 train SB3 | wall s ours | wall s SB3 | steps/s ours | steps/s SB3 | speed ours/SB3"
        " | CPU-time speed ours/SB3 | return ≥ SB3 | P(ours higher), Mann–Whitney p | ≥ 2× speed |"
    )
    sep = "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"
    lines = [head, sep]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["algo"].upper(),
                    r["env_id"],
                    f"{r['steps']:,}",
                    str(r["seeds"]),
                    _f(r["eval_return_ours"]),
                    _f(r["eval_return_sb3"]),
                    _f(r["return_delta"]),
                    _f(r["train_return_last100_ours"]),
                    _f(r["train_return_last100_sb3"]),
                    _f(r["wall_s_ours"]),
                    _f(r["wall_s_sb3"]),
                    _f(r["steps_per_s_ours"], 0),
                    _f(r["steps_per_s_sb3"], 0),
                    _f(r["speed_ratio"], 2) + "×",
                    _f(r["cpu_speed_ratio"], 2) + "×",
                    "yes" if r["return_ok"] else "**no**",
                    ranks_markdown(r),
                    "yes" if r["speed_ok"] else "**no**",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def hparams_markdown(configs: Sequence[HParams], steps_of: dict[str, int]) -> str:
    lines = ["| config | SB3 / RL-Zoo value | our field = value |", "|---|---|---|"]
    for hp in configs:
        if hp.key not in steps_of:
            continue
        sb3 = sb3_kwargs(hp)
        sb3_show = {k: v for k, v in sb3.items() if k != "policy_kwargs"}
        sb3_show["learning_rate"] = f"lin_{hp.learning_rate:g}" if hp.lr_schedule == "linear" else hp.learning_rate
        if "clip_range" in sb3_show:
            sb3_show["clip_range"] = f"lin_{hp.clip_range:g}" if hp.clip_schedule == "linear" else hp.clip_range
        sb3_show.update(
            n_envs=hp.n_envs,
            normalize=f"VecNormalize(norm_obs={hp.normalize_obs}, norm_reward={hp.normalize_reward}, gamma={hp.gamma})"
            if hp.normalize_obs or hp.normalize_reward
            else False,
            net_arch=f"pi={list(hp.hidden_sizes)}, vf={list(hp.hidden_sizes)}, "
            f"{sb3['policy_kwargs']['activation_fn'].__name__}, ortho_init",
        )
        ours = ours_config(hp, 0)
        ours.pop("seed")
        lines.append(
            f"| {hp.algo.upper()} {hp.env_id} ({steps_of[hp.key]:,} steps; zoo budget {hp.n_timesteps:,}; "
            f"{hp.zoo_note}) | "
            + ", ".join(f"{k}={v}" for k, v in sb3_show.items())
            + " | "
            + ", ".join(f"{k}={v}" for k, v in ours.items())
            + " |"
        )
    return "\n".join(lines)


def report_markdown(
    rows: Sequence[dict[str, Any]],
    configs: Sequence[HParams],
    meta: dict[str, Any],
    drift: Sequence[str] = (),
    plot_name: str = "on_policy.png",
) -> str:
    steps_of = {f"{r['algo']}/{r['env_id']}": r["steps"] for r in rows}
    m = meta["machine"]
    verdict = []
    for r in rows:
        verdict.append(
            f"- {r['algo'].upper()} {r['env_id']}: speed {_f(r['speed_ratio'], 2)}× SB3 by wall time, "
            f"{_f(r['cpu_speed_ratio'], 2)}× by CPU time "
            f"({'meets' if r['speed_ok'] else 'misses'} the 2× target), eval return "
            f"{_f(r['eval_return_ours'])} vs {_f(r['eval_return_sb3'])} "
            f"({'equal or better' if r['return_ok'] else 'worse by the median rule'}){ranks_sentence(r)}."
        )
    peak = max([*m.get("loadavg_start", []), *m.get("loadavg", [])] or [0.0])
    load_warning = (
        f"\n**This run shared the machine:** load average up to {peak:g} on {m['cores']} cores, so wall "
        "times include waiting for a core; compare implementations by the CPU-time ratio."
        if m.get("cores") and peak > m["cores"]
        else ""
    )
    acting = (
        " Its rollouts acted in NumPy (`numpy_acting=True`, `core_rl/common/numpy_acting.py`: the policy and value"
        " MLPs on views of the weights, the same distribution to float rounding, without torch's per-op overhead)."
        if meta.get("numpy_acting")
        else " Its rollouts acted in torch (these results predate `numpy_acting`)."
    )
    return f"""# On-policy benchmark: our PPO / A2C vs Stable-Baselines3

Generated by `benchmarks/on_policy.py` on {meta["date"]} ({meta["mode"]}).

**Command:** `{meta["command"]}`{f" (report re-rendered from its saved results with `{meta['rerendered']}`)" if meta.get("rerendered") else ""}

**Machine:** {m["cpu"]}, {m["cores"]}-core CPU shared with other jobs (load average at start
{m["loadavg_start"]}, at end {m["loadavg"]}); Python {m["python"]}, torch {m["torch"]} (CPU),
Stable-Baselines3 {m["sb3"]}, gymnasium {m["gymnasium"]}. Both implementations run in the same process
with `torch.set_num_threads({m["torch_threads"]})` (our `torch_threads=1`; SB3 via `torch.set_num_threads(1)`),
on the CPU, one after the other, alternating which goes first. Timings on a shared 2-core machine are
noisy: re-run on a quiet machine for publishable numbers (the CPU-time column is less sensitive to load).{load_warning}

Target of the project: **equal or better return at ≥ 2× SB3's env-steps per CPU-second** (the verdict
column reads the CPU-time ratio). Every row of ours ran its default update mode, `fused_update=True`: the
PPO/A2C gradients written out by the chain rule without autograd, Adam/RMSprop on flat buffers
(`core_rl/common/fused_actor_critic.py`; the same steps as autograd to float rounding).{acting}

## Results (medians over seeds)

{markdown_table(rows)}

{chr(10).join(verdict)}

- *eval return*: mean return of 20 episodes with the deterministic policy after training, on 20
  fresh envs reset with the same seeds for both implementations (obs normalized with the frozen
  training statistics where normalization is on).
- *last-100 train*: mean undiscounted (raw-reward) return of the last 100 training episodes.
- *wall s*: wall time of `learn()` only (no env construction, no evaluation); *steps/s* = env steps / wall s;
  *CPU-time speed*: the same ratio computed from process CPU time instead of wall time.
- *return ≥ SB3*: ours ≥ SB3 − {RETURN_TOLERANCE:.0%}·|SB3| (seed-to-seed noise allowance). With one seed a
  "no" can be noise; use `--seeds 5` for a verdict.
- *P(ours higher), Mann–Whitney p*: the runs' eval returns as two independent samples (a seed does not pair two
  libraries' runs): the share of (ours, SB3) run pairs where ours is higher (ties half; 0.5 = no tendency) and the
  two-sided Mann–Whitney U p. With few runs of a noisy task the median rule's "no" can sit beside p ≈ 1 (no
  difference the runs can show); a p under 0.05 is a difference they do show.

## Hyperparameters (RL-Zoo tuned values, mapped field by field)

{hparams_markdown(configs, steps_of)}{config_drift_markdown(drift)}

Source: RL-Zoo `hyperparams/ppo.yml` and `hyperparams/a2c.yml` (DLR-RM/rl-baselines3-zoo); SB3's
defaults fill what Zoo leaves out (PPO: batch_size 64, n_epochs 10, lr 3e-4, clip 0.2, vf_coef 0.5,
max_grad_norm 0.5; A2C: n_steps 5, lr 7e-4, gamma 0.99, gae_lambda 1.0, RMSprop(alpha 0.99, eps 1e-5),
normalize_advantage False). Zoo's `normalize: true` is SB3's `VecNormalize` on observations *and*
rewards with the algorithm's γ; ours is `normalize_obs` + `normalize_reward`. PPO Pendulum uses
`use_sde=False` on both sides (Zoo tunes it with gSDE) and adds normalization on both sides.
{"This run used shorter budgets than Zoo's where the steps column is below the zoo budget above." if meta["mode"] != "full" else ""}

![bar plot]({plot_name})
"""


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    cols = [
        ("algo", 4),
        ("env", 12),
        ("steps", 9),
        ("ret ours", 9),
        ("ret SB3", 9),
        ("Δret", 8),
        ("train ours", 10),
        ("train SB3", 9),
        ("wall ours", 9),
        ("wall SB3", 9),
        ("sps ours", 9),
        ("sps SB3", 9),
        ("speed", 7),
        ("cpu-spd", 7),
    ]
    print(" ".join(f"{c:>{w}}" for c, w in cols))
    for r in rows:
        vals = [
            r["algo"],
            r["env_id"],
            f"{r['steps']}",
            _f(r["eval_return_ours"]),
            _f(r["eval_return_sb3"]),
            _f(r["return_delta"]),
            _f(r["train_return_last100_ours"]),
            _f(r["train_return_last100_sb3"]),
            _f(r["wall_s_ours"]),
            _f(r["wall_s_sb3"]),
            _f(r["steps_per_s_ours"], 0),
            _f(r["steps_per_s_sb3"], 0),
            _f(r["speed_ratio"], 2) + "x",
            _f(r["cpu_speed_ratio"], 2) + "x",
        ]
        print(" ".join(f"{v:>{w}}" for v, (_, w) in zip(vals, cols)))


# ---- MLflow ------------------------------------------------------------------------------------
class MLflowLog(BenchmarkMLflow):
    """A parent run for the benchmark and one child per (algo, env, impl, seed)."""

    def child(self, hp: HParams, res: RunResult, config: dict[str, Any]) -> None:
        summary = {
            k: getattr(res, k)
            for k in (
                "steps",
                "wall_s",
                "cpu_s",
                "steps_per_s",
                "cpu_steps_per_s",
                "eval_return",
                "eval_std",
                "train_return_last100",
                "episodes",
                "build_s",
                "eval_s",
            )
        }
        self.log_child(
            f"{hp.algo}-{hp.env_id}-{res.impl}-s{res.seed}",
            {"algo": hp.algo, "env_id": hp.env_id, "impl": res.impl, "seed": str(res.seed)},
            {
                "impl": res.impl,
                "algo": hp.algo,
                "env_id": hp.env_id,
                "seed": res.seed,
                "torch_threads": TORCH_THREADS,
                "config": config,
            },
            summary,
            res.steps,
            {"train/episode_return": res.curve},
        )

    def finish(self, rows: Sequence[dict[str, Any]], files: Sequence[Path]) -> None:
        self.close(
            row_metrics(
                rows, ("speed_ratio", "cpu_speed_ratio", "return_delta", "eval_return_ours", "eval_return_sb3")
            ),
            files,
        )


# ---- profiling ---------------------------------------------------------------------------------
def profile_runs(
    configs: Sequence[HParams], steps_of: Callable[[HParams], int], impls: Sequence[str], out_dir: Path, top: int = 30
) -> None:
    """cProfile ``learn`` of each implementation; prints the top functions by own time and cumulative."""
    for hp in configs:
        for impl in impls:
            train = _train_ours if impl == "ours" else _train_sb3

            def run(hp: HParams = hp, train: Callable = train) -> tuple[int, float]:
                (done, *_), _, _, wall, _, _ = train(hp, steps_of(hp), 0, lambda n: None)
                return done, wall

            profile_learn(f"{hp.key} {impl}", run, out_dir / f"{hp.algo}-{hp.env_id}-{impl}.prof", top)


# ---- CLI ---------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    envs = sorted({hp.env_id for hp in zoo_configs()})
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.on_policy",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="shorter budgets (1e5-2e5 steps per config): one seed takes ~4 min of CPU "
        "(~11 min wall on 2 heavily shared cores)",
    )
    p.add_argument(
        "--envs",
        nargs="+",
        default=list(CLASSIC_ENVS),
        choices=envs,
        metavar="ENV",
        help=f"subset of {envs} (default: the classic-control ones; the MuJoCo ones need the [mujoco] extra)",
    )
    p.add_argument("--algos", nargs="+", default=["ppo", "a2c"], choices=["ppo", "a2c"])
    add_run_arguments(p, DEFAULT_DOC)
    p.add_argument(
        "--profile",
        choices=["ours", "sb3", "both"],
        default=None,
        help="cProfile learn() of the chosen implementation(s) instead of benchmarking (seed 0)",
    )
    return parse_run_arguments(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(TORCH_THREADS)
    configs = [hp for hp in zoo_configs() if hp.env_id in args.envs and hp.algo in args.algos]
    if not configs:
        print(
            "no configuration matches --envs/--algos (A2C on Pendulum is not part of this benchmark)", file=sys.stderr
        )
        return 2

    def steps_of(hp: HParams) -> int:
        """The budget, rounded up to whole rollouts (both libraries finish the rollout they start)."""
        base = hp.quick_timesteps if args.quick else hp.n_timesteps
        rollout = hp.n_envs * hp.n_steps
        return max(1, math.ceil(base * args.steps_scale / rollout)) * rollout

    out_dir = (args.out_dir or REPO / ".deeprl" / "benchmarks").resolve()
    if args.profile:
        impls = IMPLS if args.profile == "both" else (args.profile,)
        profile_runs(configs, steps_of, impls, out_dir / "profiles")
        return 0

    command = command_line("benchmarks.on_policy", argv)
    stamp = run_stamp()
    if args.results:
        results, meta = load_results(args.results)
        keys = {(r.algo, r.env_id) for r in results}
        configs = [hp for hp in zoo_configs() if (hp.algo, hp.env_id) in keys]
        meta = {**meta, "rerendered": command}
    else:
        machine = machine_note()
        machine["loadavg_start"] = machine["loadavg"]
        meta = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command,
            "mode": mode_note(args),
            "seeds": args.seeds,
            "eval_episodes": args.eval_episodes,
            "machine": machine,
            "numpy_acting": True,  # our rollouts' acting mode (results saved before it existed acted in torch)
        }
        results = []

    # a parent run for a training invocation (none when re-rendering); FAILED/KILLED if the block ends early
    with benchmark_run(
        not args.no_mlflow and not args.results,
        args.tracking_uri,
        EXPERIMENT,
        f"on_policy-{stamp}",
        {
            "command": command,
            "mode": meta.get("mode"),
            "seeds": args.seeds,
            "eval_episodes": args.eval_episodes,
            "torch_threads": TORCH_THREADS,
            **{f"machine.{k}": v for k, v in meta.get("machine", {}).items()},
        },
        tags={"benchmark": "on_policy"},
        cls=MLflowLog,
    ) as mlog:
        if not args.results:
            from tqdm.auto import tqdm

            warm_up(configs[0])
            plan = [(seed, i, hp) for seed in seed_range(args) for i, hp in enumerate(configs)]
            total = sum(2 * steps_of(hp) for _, _, hp in plan)
            status = "FAILED"
            try:
                with tqdm(total=total, unit="step", unit_scale=True, dynamic_ncols=True, desc="on-policy bench") as bar:
                    for seed, i, hp in plan:
                        # alternate which implementation goes first, so drifting load hits both alike
                        order = IMPLS if (seed + i) % 2 == 0 else IMPLS[::-1]
                        for impl in order:
                            bar.set_description(f"{hp.algo} {hp.env_id} {impl} s{seed}")
                            res = run_one(hp, impl, steps_of(hp), seed, args.eval_episodes, bar.update)
                            results.append(res)
                            bar.write(
                                f"{hp.algo:>3} {hp.env_id:<12} {impl:<4} seed {seed}: {res.steps_per_s:8.0f} "
                                f"steps/s ({res.wall_s:6.1f}s wall, {res.cpu_s:6.1f}s cpu)  eval "
                                f"{res.eval_return:8.1f}  last-100 {res.train_return_last100:8.1f}"
                            )
                            if mlog is not None:
                                mlog.child(hp, res, res.config)
                status = "FINISHED"
            finally:
                close_interrupted("on_policy", stamp, out_dir, results, meta, status)

        rows = summarize(results, configs)
        hp_of = {(hp.algo, hp.env_id): hp for hp in configs}
        drift = config_drift(results, lambda r: run_config(hp_of[r.algo, r.env_id], r.impl, r.seed))
        print()
        print_table(rows)
        files = write_outputs(
            "on_policy",
            stamp,
            out_dir,
            rows,
            markdown_table(rows),
            None if args.results else _jsonable(results, meta),
            None if args.no_doc else args.doc,
            lambda plot: report_markdown(rows, configs, meta, drift, plot),
        )
        if mlog is not None:
            mlog.finish(rows, files)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
