"""The peers' settings of the off-policy benchmark: Stable-Baselines3's defaults, RL-Zoo's tuned values,
and their field-by-field mapping onto our configs.

:class:`HParams` is one neutral hyperparameter record (RL-Zoo's values over SB3's defaults, in SB3's
names), its values read from the core's presets (:mod:`core_rl.presets`); :func:`field_mapping` is the
core's mapping (:mod:`core_rl.presets.zoo_mapping`, the one ``deeprl train``'s presets use: it raises
on any field it leaves unmapped); :func:`ours_config` and :func:`sb3_kwargs` are derived from it.
Used by :mod:`benchmarks.off_policy`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from benchmarks.common import TORCH_THREADS
from core_rl.presets import get_preset, zoo_mapping

# ---- hyperparameters ---------------------------------------------------------------------------
#: SB3's defaults and the field-by-field mapping live in the core (one mapping, shared with the presets)
SB3_DEFAULTS = zoo_mapping.SB3_DEFAULTS
MapRow = zoo_mapping.MapRow


@dataclass(frozen=True)
class HParams:
    """One benchmark configuration: RL-Zoo's values (``zoo``) over SB3's defaults, in SB3's names."""

    algo: str  # "dqn" | "sac" | "td3" | "ddpg"
    env_id: str
    n_timesteps: int  # RL-Zoo's budget
    quick_timesteps: int  # the --quick budget
    zoo: Mapping[str, Any] = field(default_factory=dict)
    zoo_note: str = ""

    @property
    def key(self) -> str:
        return f"{self.algo}/{self.env_id}"

    @property
    def params(self) -> dict[str, Any]:
        """RL-Zoo's entry over SB3's defaults (:func:`core_rl.presets.zoo_mapping.zoo_params`)."""
        return zoo_mapping.zoo_params(self.algo, self.zoo)

    def source(self, name: str) -> str:
        return (
            "zoo"
            if name in self.zoo or name in zoo_mapping.parse_kwargs(self.zoo.get("policy_kwargs"))
            else "SB3 default"
        )


def _from_preset(algo: str, env_id: str, quick_timesteps: int, zoo_note: str) -> HParams:
    preset = get_preset(f"rl-zoo/{algo}/{env_id}")
    return HParams(algo, env_id, preset.n_timesteps, quick_timesteps, zoo=dict(preset.hyperparams), zoo_note=zoo_note)


def zoo_configs() -> list[HParams]:
    """RL-Zoo's values, read from the core's presets (``core_rl/presets/rl_zoo/{dqn,sac,td3,ddpg}.yml``)."""
    return [
        _from_preset("dqn", "CartPole-v1", 50_000, "zoo 'Almost Tuned'"),
        _from_preset("sac", "Pendulum-v1", 10_000, "zoo; SB3 SAC defaults"),
        _from_preset(
            "td3", "Pendulum-v1", 15_000, "zoo (train_freq 1 / gradient_steps 1: one gradient step per env step)"
        ),
        _from_preset("ddpg", "Pendulum-v1", 20_000, "zoo; SB3 DDPG = its TD3 with one critic, no delay or smoothing"),
        *mujoco_configs(),
    ]


#: the classic-control configurations a plain ``python -m benchmarks.off_policy`` runs
CLASSIC_ENVS = ("CartPole-v1", "Pendulum-v1")


def mujoco_configs() -> list[HParams]:
    """SAC, TD3 and DDPG on HalfCheetah-v5, Hopper-v5 and Walker2d-v5 (needs ``pip install
    'deeprl-suite[mujoco]'``): RL-Zoo's ``-v4`` entries (the closest version Zoo tunes; v5 has the same
    observation, action and reward), trained 1e6 steps by Zoo; ``--quick`` is issue 16's 300k-step budget."""
    return [
        _from_preset(
            algo,
            env_id,
            300_000,
            f"zoo {env_id.replace('-v5', '-v4')} (closest version), 300k of Zoo's 1e6 steps with --quick; "
            f"SB3 {algo.upper()} defaults",
        )
        for env_id in ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5")
        for algo in ("sac", "td3", "ddpg")
    ]


def field_mapping(hp: HParams) -> list[MapRow]:
    """Every SB3/RL-Zoo field of ``hp`` and the fields of our config it sets (the core's mapping)."""
    return zoo_mapping.field_mapping(hp.algo, hp.params)


def ours_config(hp: HParams, seed: int) -> dict[str, Any]:
    """Our DQNConfig / SACConfig / TD3Config fields, from :func:`field_mapping`."""
    return dict(seed=seed, device="cpu", torch_threads=TORCH_THREADS, **zoo_mapping.ours_config(hp.algo, hp.params))


#: RL-Zoo/SB3 record keys that are not SB3 constructor arguments (policy_kwargs, Zoo's own, the noise)
_NOT_KWARGS = ("net_arch", "activation_fn", "optimizer_class", "log_std_init", "n_envs", "n_timesteps", "policy")


def sb3_kwargs(hp: HParams) -> dict[str, Any]:
    """SB3 constructor arguments (the action noise and ``policy_kwargs`` built as RL-Zoo builds them)."""
    p = hp.params
    kw = {k: v for k, v in p.items() if k not in _NOT_KWARGS + ("noise_type", "noise_std")}
    kw["policy_kwargs"] = dict(
        net_arch=list(p["net_arch"]),
        activation_fn=getattr(torch.nn, p["activation_fn"]),
        optimizer_class=getattr(torch.optim, p["optimizer_class"]),
    )
    if hp.algo == "sac":
        kw["policy_kwargs"]["log_std_init"] = p["log_std_init"]
    if hp.algo in ("td3", "ddpg") and p["noise_type"] is not None:
        import gymnasium as gym
        from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

        env = gym.make(hp.env_id)
        n_actions = int(np.prod(env.action_space.shape))
        env.close()
        noise_cls = NormalActionNoise if p["noise_type"] == "normal" else OrnsteinUhlenbeckActionNoise
        kw["action_noise"] = noise_cls(mean=np.zeros(n_actions), sigma=p["noise_std"] * np.ones(n_actions))
    return kw


def sb3_config_record(hp: HParams) -> dict[str, Any]:
    """The SB3 side's configuration as loggable values (for MLflow)."""
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in hp.params.items()}


def mapping_markdown(configs: Sequence[HParams], steps_of: Mapping[str, int] | None = None) -> str:
    """The field-by-field mapping as markdown tables, one per configuration."""
    out = []
    for hp in configs:
        if steps_of is not None and hp.key not in steps_of:
            continue
        budget = f"{steps_of[hp.key]:,} steps; " if steps_of else ""
        heading = f"**{hp.algo.upper()} {hp.env_id}** ({budget}zoo budget {hp.n_timesteps:,}; {hp.zoo_note})"
        zoo_keys = {k for k in hp.params if hp.source(k) == "zoo"}
        out.append(zoo_mapping.mapping_markdown(heading, hp.algo, hp.params, zoo_keys))
    return "\n".join(out)


def print_mapping(configs: Sequence[HParams]) -> None:
    for hp in configs:
        print(f"\n{hp.algo.upper()} {hp.env_id}: SB3 field = value [from] -> our field = value")
        for r in field_mapping(hp):
            src = "fixed" if r.sb3.startswith("(") else hp.source(r.sb3)
            ours = ", ".join(f"{k}={v}" for k, v in r.ours.items()) or "(no counterpart)"
            print(f"  {r.sb3:<26} = {str(r.value):<28} [{src:<11}] -> {ours}")
