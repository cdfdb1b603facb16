"""The model choices shared by MPC/PETS and MBPO: one config section, one factory.

``model`` picks the dynamics model (:mod:`dynamics`, :mod:`ensemble`, :mod:`bnn`, :mod:`gp`);
``reward='known'`` keeps only p(s'|s, a) learned and takes r(s, a, s') from
:mod:`core_rl.model_based.env_models`.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from core_rl.common.config import AgentConfig
from core_rl.common.transitions import Transitions
from core_rl.model_based.bnn import BNNDynamics
from core_rl.model_based.dynamics import NeuralDynamics
from core_rl.model_based.ensemble import BootstrapEnsemble
from core_rl.model_based.gp import GPDynamics

ModelKind = Literal["deterministic", "gaussian", "ensemble", "bnn", "gp"]


class ModelConfig(AgentConfig):
    """How the dynamics model is built and fitted (shared by MPC/PETS and MBPO)."""

    model: ModelKind = Field(
        "ensemble", description="Dynamics model: deterministic/gaussian net, bootstrap ensemble, BNN or GP."
    )
    n_members: int = Field(5, ge=1, description="Ensemble members (BNN: weight samples per rollout).")
    probabilistic: bool = Field(True, description="Gaussian (NLL) rather than deterministic (MSE) members.")
    reward: Literal["learned", "known"] = Field("learned", description="Learn r̂(s,a) or use the env's known reward.")
    model_lr: float = Field(1e-3, gt=0.0)
    model_weight_decay: float = Field(5e-5, ge=0.0)
    model_batch_size: int = Field(256, ge=1)
    model_epochs: int = Field(50, ge=1, description="Max epochs per model fit (early stopping on holdout).")
    model_patience: int = Field(5, ge=1)
    holdout_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    gp_max_points: int = Field(400, ge=2, description="Newest transitions the GP keeps.")


def build_model(
    cfg: ModelConfig, obs_dim: int, act_dim: int, hidden_sizes: tuple[int, ...], activation: str
) -> torch.nn.Module:
    """The dynamics model the config names."""
    learn_reward = cfg.reward == "learned"
    common = dict(
        hidden_sizes=hidden_sizes, activation=activation, learn_reward=learn_reward, lr=cfg.model_lr, seed=cfg.seed
    )
    if cfg.model == "deterministic":
        return NeuralDynamics(obs_dim, act_dim, 1, probabilistic=False, weight_decay=cfg.model_weight_decay, **common)
    if cfg.model == "gaussian":
        return NeuralDynamics(obs_dim, act_dim, 1, probabilistic=True, weight_decay=cfg.model_weight_decay, **common)
    if cfg.model == "ensemble":
        return BootstrapEnsemble(
            obs_dim,
            act_dim,
            cfg.n_members,
            probabilistic=cfg.probabilistic,
            weight_decay=cfg.model_weight_decay,
            **common,
        )
    if cfg.model == "bnn":
        return BNNDynamics(obs_dim, act_dim, cfg.n_members, **common)
    return GPDynamics(obs_dim, act_dim, learn_reward=learn_reward, max_points=cfg.gp_max_points, seed=cfg.seed)


def fit_model(model: torch.nn.Module, cfg: ModelConfig, data: Transitions) -> dict[str, float]:
    if isinstance(model, GPDynamics):
        return model.fit(data)
    return model.fit(
        data,
        epochs=cfg.model_epochs,
        batch_size=cfg.model_batch_size,
        holdout_ratio=cfg.holdout_ratio,
        patience=cfg.model_patience,
    )
