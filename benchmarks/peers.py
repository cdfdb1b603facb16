"""The peers' settings of the off-policy benchmark: Stable-Baselines3's defaults, RL-Zoo's tuned values,
and their field-by-field mapping onto our configs.

:class:`HParams` is one neutral hyperparameter record (RL-Zoo's values over SB3's defaults, in SB3's
names); :func:`field_mapping` maps it field by field onto our config (raising on any field it leaves
unmapped); :func:`ours_config` and :func:`sb3_kwargs` are derived from it. Used by
:mod:`benchmarks.off_policy`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from benchmarks.common import TORCH_THREADS

# ---- hyperparameters ---------------------------------------------------------------------------
#: SB3 2.x constructor defaults (and MlpPolicy's), written out so that the mapping covers every field
#: that shapes training, not only those RL-Zoo sets. ``net_arch``/``activation_fn``/``optimizer_class``
#: are ``policy_kwargs``; ``n_envs`` is RL-Zoo's; ``noise_type``/``noise_std`` are RL-Zoo's action noise.
SB3_DEFAULTS: dict[str, dict[str, Any]] = {
    "dqn": dict(
        learning_rate=1e-4,
        buffer_size=1_000_000,
        learning_starts=100,
        batch_size=32,
        tau=1.0,
        gamma=0.99,
        train_freq=4,
        gradient_steps=1,
        n_steps=1,
        target_update_interval=10_000,
        exploration_fraction=0.1,
        exploration_initial_eps=1.0,
        exploration_final_eps=0.05,
        max_grad_norm=10.0,
        net_arch=(64, 64),
        activation_fn="ReLU",
        optimizer_class="Adam",
        n_envs=1,
    ),
    "sac": dict(
        learning_rate=3e-4,
        buffer_size=1_000_000,
        learning_starts=100,
        batch_size=256,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        n_steps=1,
        ent_coef="auto",
        target_update_interval=1,
        target_entropy="auto",
        use_sde=False,
        net_arch=(256, 256),
        activation_fn="ReLU",
        optimizer_class="Adam",
        n_envs=1,
    ),
    "td3": dict(
        learning_rate=1e-3,
        buffer_size=1_000_000,
        learning_starts=100,
        batch_size=256,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        n_steps=1,
        noise_type=None,
        noise_std=0.0,
        policy_delay=2,
        target_policy_noise=0.2,
        target_noise_clip=0.5,
        net_arch=(400, 300),
        activation_fn="ReLU",
        optimizer_class="Adam",
        n_envs=1,
    ),
}


@dataclass(frozen=True)
class HParams:
    """One benchmark configuration: RL-Zoo's values (``zoo``) over SB3's defaults, in SB3's names."""

    algo: str  # "dqn" | "sac" | "td3"
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
        unknown = set(self.zoo) - set(SB3_DEFAULTS[self.algo])
        if unknown:
            raise ValueError(f"{self.key}: no SB3 field {sorted(unknown)}")
        return {**SB3_DEFAULTS[self.algo], **self.zoo}

    def source(self, name: str) -> str:
        return "zoo" if name in self.zoo else "SB3 default"


def zoo_configs() -> list[HParams]:
    """RL-Zoo's values (``hyperparams/dqn.yml``, ``sac.yml``, ``td3.yml`` of DLR-RM/rl-baselines3-zoo)."""
    return [
        HParams(
            "dqn",
            "CartPole-v1",
            50_000,
            50_000,
            zoo=dict(
                learning_rate=2.3e-3,
                batch_size=64,
                buffer_size=100_000,
                learning_starts=1000,
                gamma=0.99,
                target_update_interval=10,
                train_freq=256,
                gradient_steps=128,
                exploration_fraction=0.16,
                exploration_final_eps=0.04,
                net_arch=(256, 256),
            ),
            zoo_note="zoo 'Almost Tuned'",
        ),
        HParams("sac", "Pendulum-v1", 20_000, 10_000, zoo=dict(learning_rate=1e-3), zoo_note="zoo; SB3 SAC defaults"),
        HParams(
            "td3",
            "Pendulum-v1",
            20_000,
            15_000,
            zoo=dict(
                gamma=0.98,
                buffer_size=200_000,
                learning_starts=10_000,
                noise_type="normal",
                noise_std=0.1,
                gradient_steps=1,
                train_freq=1,
                learning_rate=1e-3,
                net_arch=(400, 300),
            ),
            zoo_note="zoo (train_freq 1 / gradient_steps 1: one gradient step per env step)",
        ),
    ]


@dataclass(frozen=True)
class MapRow:
    """One SB3 field (or a fixed SB3 behaviour, named in parentheses) and the config fields of ours it sets."""

    sb3: str
    value: Any
    ours: Mapping[str, Any]
    note: str = ""


def dqn_target_interval(
    target_update_interval: int, train_freq: int, gradient_steps: int, n_envs: int
) -> tuple[int, str]:
    """SB3's DQN copies φ' ← φ every ``target_update_interval // n_envs`` vector env steps (in ``_on_step``),
    ours every ``target_update_interval`` gradient steps. The online net changes only in the training
    phases (``gradient_steps`` steps after every ``train_freq`` env steps), so when SB3's interval is at
    most ``train_freq`` its target, throughout each training phase, is the online net as the previous phase
    left it: ours with a copy every ``gradient_steps`` gradient steps, exactly."""
    every = max(target_update_interval // n_envs, 1)
    if every <= train_freq:
        return gradient_steps, (
            f"SB3 copies every {every} env steps, i.e. at least once per collection phase of "
            f"{train_freq} steps, while the online net is frozen; so every training phase runs "
            f"against the net the previous phase left: a hard copy every {gradient_steps} "
            "gradient steps (exact)"
        )
    phases = max(1, round(every / train_freq))
    return phases * gradient_steps, (
        f"SB3 copies every {every} env steps ≈ every {phases} training phases (approximate: phase-aligned)"
    )


def field_mapping(hp: HParams) -> list[MapRow]:
    """Every SB3/RL-Zoo field of ``hp`` and the fields of our config it sets; raises if one is unmapped."""
    p = hp.params
    same = lambda name, ours=None, note="": MapRow(name, p[name], {ours or name: p[name]}, note)  # noqa: E731
    rows = [
        same("learning_rate", "lr"),
        same("buffer_size"),
        same("learning_starts"),
        same("batch_size"),
        same("tau"),
        same("gamma"),
        same("train_freq", note="env steps between training phases (n_envs=1)"),
        same("gradient_steps"),
        same("n_steps", "n_step"),
        same("n_envs"),
        MapRow(
            "net_arch",
            list(p["net_arch"]),
            {"hidden_sizes": tuple(p["net_arch"])},
            "every MLP (Q-net; actor and each critic)",
        ),
        MapRow("activation_fn", p["activation_fn"], {"activation": p["activation_fn"].lower()}),
    ]
    if hp.algo == "dqn":
        interval, note = dqn_target_interval(
            p["target_update_interval"], p["train_freq"], p["gradient_steps"], p["n_envs"]
        )
        rows += [
            MapRow("target_update_interval", p["target_update_interval"], {"target_update_interval": interval}, note),
            same("exploration_fraction", note="ε decays linearly over this fraction of the run, both sides"),
            same("exploration_initial_eps"),
            same("exploration_final_eps"),
            same("max_grad_norm"),
            MapRow("optimizer_class", p["optimizer_class"], {"optimizer": "adam"}, "torch Adam (eps 1e-8) both"),
            MapRow("(fixed) loss", "smooth_l1_loss", {"loss": "huber", "huber_delta": 1.0}),
            MapRow(
                "(fixed) vanilla DQN",
                "ε-greedy; max_a Q_φ' target; uniform replay",
                {"exploration": "epsilon", "double_q": False, "dueling": False, "prioritized": False},
            ),
        ]
    elif hp.algo == "sac":
        ent = p["ent_coef"]
        init = float(ent.split("_", 1)[1]) if isinstance(ent, str) and ent.startswith("auto_") else 1.0
        rows += [
            MapRow(
                "ent_coef",
                ent,
                {"ent_coef": "auto" if str(ent).startswith("auto") else float(ent), "init_ent_coef": init},
                "SB3 'auto' starts α at 1.0, tuned by Adam on log α",
            ),
            same("target_entropy", note="'auto' = −|A|"),
            same("target_update_interval"),
            MapRow("use_sde", p["use_sde"], {}, "ours has no gSDE; off on both sides"),
            MapRow(
                "optimizer_class",
                p["optimizer_class"],
                {},
                "ours: fused torch Adam (same update) for actor, critics and log α",
            ),
            MapRow("(fixed) critics", "2 Q-nets, min for target and actor", {"n_critics": 2}),
            MapRow("(fixed) log σ clamp", "[-20, 2]", {"log_std_min": -20.0, "log_std_max": 2.0}),
            MapRow("(fixed) gradient clipping", "none", {"max_grad_norm": None}),
        ]
    elif hp.algo == "td3":
        noise = {"normal": "gaussian", "ornstein-uhlenbeck": "ou", None: "gaussian"}[p["noise_type"]]
        rows += [
            MapRow(
                "noise_type",
                p["noise_type"],
                {"exploration_noise": noise},
                "SB3 NormalActionNoise, added to the action scaled to [-1, 1], then clipped; ours the same",
            ),
            MapRow("noise_std", p["noise_std"], {"noise_std": p["noise_std"]}, "σ in units of the half-width, both"),
            same("policy_delay"),
            same("target_policy_noise", "target_noise"),
            same("target_noise_clip"),
            MapRow(
                "optimizer_class",
                p["optimizer_class"],
                {"actor_lr": None},
                "one learning rate for actor and critics; ours: fused torch Adam (same update)",
            ),
            MapRow("(fixed) critics", "2 Q-nets; actor ascends Q_1", {"n_critics": 2}),
            MapRow("(fixed) target update", "Polyak τ after every delayed actor step", {"target_update_interval": 1}),
            MapRow("(fixed) gradient clipping", "none", {"max_grad_norm": None}),
        ]
    else:
        raise ValueError(f"unknown algo {hp.algo!r}")
    unmapped = set(p) - {r.sb3 for r in rows}
    if unmapped:
        raise ValueError(f"{hp.key}: SB3 fields without a mapping: {sorted(unmapped)}")
    return rows


def ours_config(hp: HParams, seed: int) -> dict[str, Any]:
    """Our DQNConfig / SACConfig / TD3Config fields, from :func:`field_mapping`."""
    cfg: dict[str, Any] = dict(seed=seed, device="cpu", torch_threads=TORCH_THREADS)
    for row in field_mapping(hp):
        cfg.update(row.ours)
    return cfg


def sb3_kwargs(hp: HParams) -> dict[str, Any]:
    """SB3 constructor arguments (the action noise and ``policy_kwargs`` built as RL-Zoo builds them)."""
    p = hp.params
    kw = {
        k: v
        for k, v in p.items()
        if k not in ("net_arch", "activation_fn", "optimizer_class", "n_envs", "noise_type", "noise_std")
    }
    kw["policy_kwargs"] = dict(
        net_arch=list(p["net_arch"]),
        activation_fn=getattr(torch.nn, p["activation_fn"]),
        optimizer_class=getattr(torch.optim, p["optimizer_class"]),
    )
    if hp.algo == "td3" and p["noise_type"] is not None:
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
        out.append(f"**{hp.algo.upper()} {hp.env_id}** ({budget}zoo budget {hp.n_timesteps:,}; {hp.zoo_note})\n")
        out.append("| SB3 field | value | from | our field = value | note |\n|---|---|---|---|---|")
        for r in field_mapping(hp):
            src = "SB3 (fixed)" if r.sb3.startswith("(") else hp.source(r.sb3)
            ours = ", ".join(f"`{k}={v}`" for k, v in r.ours.items()) or "–"
            out.append(f"| `{r.sb3}` | {r.value} | {src} | {ours} | {r.note} |")
        out.append("")
    return "\n".join(out)


def print_mapping(configs: Sequence[HParams]) -> None:
    for hp in configs:
        print(f"\n{hp.algo.upper()} {hp.env_id}: SB3 field = value [from] -> our field = value")
        for r in field_mapping(hp):
            src = "fixed" if r.sb3.startswith("(") else hp.source(r.sb3)
            ours = ", ".join(f"{k}={v}" for k, v in r.ours.items()) or "(no counterpart)"
            print(f"  {r.sb3:<26} = {str(r.value):<28} [{src:<11}] -> {ours}")
