r"""The RL controller sampler: a policy over configurations trained online by policy gradient
on trial results (Zoph & Le, "Neural architecture search with reinforcement learning").

A configuration x = (x_1, …, x_P) is an action of a one-step episode whose reward is the
trial's result. The controller's policy is a product of one distribution head per parameter,

.. math::
    \pi_\theta(x) = \prod_{p} \pi_{\theta_p}(x_p),

a Gaussian over the logit :math:`z_p = \log\frac{u_p}{1-u_p}` of the parameter's unit-cube
coordinate u_p (log-scaled where the distribution is, cells for ints and stepped floats) and a
categorical over the choices of a categorical parameter. A parameter that a trial does not
suggest (conditional spaces) contributes no factor, so heads appear as the search space grows.

After each batch of m finished trials (Zoph & Le's m child models) the policy takes the
REINFORCE step of the notes (9/5), a one-step episode's return being the trial's reward,

.. math::
    \nabla_\theta J(\theta) \approx \frac1m\sum_{k=1}^m \nabla_\theta\log\pi_\theta(x_k)\,(R_k - b),

with the exponential moving-average baseline :math:`b \leftarrow \beta b + (1-\beta)\bar R`.
The reward :math:`R_k\in[0,1]` is the fraction of the study's finished trials that x_k beats
(failed trials 0, pruned ones ``pruned_utility``), so the signal is the same whatever the
objective's units. ``update="ppo"`` instead maximizes the clipped surrogate of the notes (9/19),
:math:`\min(\rho_k \hat A_k, \mathrm{clip}(\rho_k, 1-\epsilon, 1+\epsilon)\hat A_k)` with
:math:`\rho_k = \pi_{\theta'}(x_k)/\pi_\theta(x_k)`, for several epochs on each batch.

Stateless across workers: the policy is a deterministic function of the study's finished trials
(taken in trial-number order, batches of m), replayed from the stored trials by every worker; an
in-process cache only skips the replay of batches already seen. Running trials are not yet
rewarded and simply wait for their batch.
"""

from __future__ import annotations

import math
import os
import threading
import zlib
from typing import Any, Literal

import numpy as np
import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution, distribution_to_json
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from autotune.history import History, check_single_objective, quantile_utility, read_history
from autotune.space import ParamCodec
from core_rl.common.config import parse_config
from core_rl.common.distributions import Categorical, DiagGaussian

U_CLIP = 1e-3


class ControllerConfig(BaseModel):
    """Hyperparameters of the controller (validated at construction)."""

    model_config = ConfigDict(extra="forbid")

    update: Literal["reinforce", "ppo"] = Field("reinforce", description="REINFORCE step or PPO clipped epochs.")
    batch_size: int = Field(6, ge=1, description="Finished trials per policy update (Zoph & Le's m).")
    lr: float = Field(0.15, gt=0.0, description="Adam learning rate of the heads.")
    n_epochs: int = Field(4, ge=1, description="Gradient steps per batch (PPO epochs; REINFORCE uses 1).")
    clip_range: float = Field(0.2, gt=0.0, description="ε of PPO's clipped ratio.")
    baseline_decay: float = Field(0.5, ge=0.0, lt=1.0, description="β of the moving-average baseline.")
    ent_coef: float = Field(0.0, ge=0.0, description="Entropy bonus coefficient.")
    init_log_std: float = Field(0.5, description="Initial log σ of the logit Gaussians (σ≈1.65: near uniform).")
    min_log_std: float = Field(-4.0, description="Floor of log σ, so a head never collapses to a point.")
    pruned_utility: float = Field(0.1, ge=0.0, le=1.0, description="Reward of a pruned trial.")
    normalize_advantage: bool = True
    seed: int | None = None


def head_key(name: str, distribution: BaseDistribution) -> str:
    return f"{name}|{distribution_to_json(distribution)}"


class _Head(nn.Module):
    """One parameter's distribution: Gaussian over the unit coordinate's logit, or categorical."""

    def __init__(self, name: str, distribution: BaseDistribution, init_log_std: float):
        super().__init__()
        self.codec = ParamCodec(
            name, distribution, 0, len(distribution.choices) if isinstance(distribution, CategoricalDistribution) else 1
        )
        self.categorical = isinstance(distribution, CategoricalDistribution)
        if self.categorical:
            self.logits = nn.Parameter(torch.zeros(self.codec.width))
        else:
            self.mean = nn.Parameter(torch.zeros(1))
            self.log_std = nn.Parameter(torch.full((1,), float(init_log_std)))

    def encode(self, values: list[Any]) -> torch.Tensor:
        """Actions: category indices, or logits z of the unit coordinate."""
        if self.categorical:
            return torch.as_tensor(self.codec.encode(values).argmax(1))
        u = np.clip(self.codec.encode(values)[:, 0], U_CLIP, 1 - U_CLIP)
        return torch.as_tensor(np.log(u / (1 - u)), dtype=torch.float32).unsqueeze(-1)

    def dist(self, n: int, min_log_std: float) -> Categorical | DiagGaussian:
        if self.categorical:
            return Categorical(self.logits.expand(n, -1))
        return DiagGaussian(self.mean.expand(n, 1), self.log_std.clamp(min=min_log_std))


class ControllerPolicy(nn.Module):
    """π_θ(x) = Π_p π_θp(x_p), one head per (parameter, distribution) seen in the study."""

    def __init__(self, config: ControllerConfig):
        super().__init__()
        self.config = config
        self.heads = nn.ModuleDict()
        self.keys: dict[str, str] = {}  # head key -> ModuleDict-safe name

    def head(self, name: str, distribution: BaseDistribution, create: bool) -> _Head | None:
        key = head_key(name, distribution)
        safe = self.keys.get(key)
        if safe is not None:
            return self.heads[safe]  # type: ignore[return-value]
        if not create:
            return None
        safe = f"h{len(self.keys)}"
        self.keys[key] = safe
        self.heads[safe] = _Head(name, distribution, self.config.init_log_std)
        return self.heads[safe]  # type: ignore[return-value]

    def log_prob_and_entropy(self, trials: list[FrozenTrial]) -> tuple[torch.Tensor, torch.Tensor]:
        """log π_θ(x_k) of each trial's configuration and the summed entropy of its heads."""
        n = len(trials)
        log_prob = torch.zeros(n)
        entropy = torch.zeros(n)
        groups: dict[str, tuple[_Head, list[int], list[Any]]] = {}
        for k, t in enumerate(trials):
            for name, dist in t.distributions.items():
                if _single_valued(dist):
                    continue
                h = self.head(name, dist, create=True)
                assert h is not None
                g = groups.setdefault(head_key(name, dist), (h, [], []))
                g[1].append(k)
                g[2].append(t.params[name])
        for h, rows, values in groups.values():
            d = h.dist(len(rows), self.config.min_log_std)
            idx = torch.as_tensor(rows)
            log_prob = log_prob.index_add(0, idx, d.log_prob(h.encode(values)))
            entropy = entropy.index_add(0, idx, d.entropy())
        return log_prob, entropy


def _single_valued(dist: BaseDistribution) -> bool:
    return dist.single()


class _ReplayState:
    def __init__(self, config: ControllerConfig, torch_seed: int):
        self.policy = ControllerPolicy(config)
        self.optimizer: torch.optim.Adam | None = None
        self.baseline: float | None = None
        self.processed: tuple[int, ...] = ()
        self.n_updates = 0
        self.torch_seed = torch_seed


class RLSampler(BaseSampler):
    """Optuna sampler whose configurations come from a policy-gradient controller.

    ``optuna.create_study(sampler=RLSampler(seed=0))``; every parameter type, conditional and
    growing spaces, failed and pruned trials, and any number of workers sharing a storage.
    """

    def __init__(self, config: ControllerConfig | dict[str, Any] | None = None, **overrides: Any):
        self.config = parse_config(ControllerConfig, config, **overrides)
        self._seed = self.config.seed if self.config.seed is not None else int.from_bytes(os.urandom(4), "little")
        self._lock = threading.Lock()
        self._states: dict[tuple[int, int], _ReplayState] = {}
        self._trial_policy: dict[tuple[int, int], tuple[int, ControllerPolicy]] = {}

    def __str__(self) -> str:
        return f"RLSampler({self.config.update})"

    def __getstate__(self) -> dict[str, Any]:  # picklable (Ray ships samplers to its workers): caches stay behind
        return {"config": self.config, "_seed": self._seed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]
        self._seed = state["_seed"]

    def reseed_rng(self) -> None:
        self._seed = int.from_bytes(os.urandom(4), "little")

    # ---- relative sampling is not used: every head samples independently ---------------------
    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        check_single_objective(study, "RLSampler")
        if _single_valued(param_distribution):
            if isinstance(param_distribution, CategoricalDistribution):
                return param_distribution.choices[0]
            return param_distribution.low  # type: ignore[attr-defined]
        policy = self._policy_for_trial(study, trial)
        rng = np.random.default_rng([self._seed, trial.number, zlib.crc32(param_name.encode())])
        head = policy.head(param_name, param_distribution, create=False)
        cfg = self.config
        if isinstance(param_distribution, CategoricalDistribution):
            logits = (
                head.logits.detach().numpy().astype(np.float64)
                if head is not None
                else np.zeros(len(param_distribution.choices))
            )
            p = np.exp(logits - logits.max())
            return param_distribution.choices[int(rng.choice(len(p), p=p / p.sum()))]
        mean = float(head.mean.detach()) if head is not None else 0.0
        log_std = max(float(head.log_std.detach()), cfg.min_log_std) if head is not None else cfg.init_log_std
        z = mean + math.exp(log_std) * rng.standard_normal()
        u = 1.0 / (1.0 + math.exp(-z))
        return ParamCodec(param_name, param_distribution, 0, 1).decode(np.array([[u]]))[0]

    # ---- the policy, replayed from the stored trials ------------------------------------------
    @staticmethod
    def _key(study: Study) -> tuple[int, int]:
        return (id(study._storage), study._study_id)

    def _policy_for_trial(self, study: Study, trial: FrozenTrial) -> ControllerPolicy:
        key = self._key(study)
        with self._lock:
            cached = self._trial_policy.get(key)
            if cached is not None and cached[0] == trial.number:
                return cached[1]
            policy = self.policy(study, exclude=trial.number)
            self._trial_policy[key] = (trial.number, policy)
            return policy

    def policy(self, study: Study, exclude: int | None = None) -> ControllerPolicy:
        """The controller after every complete batch of the study's finished trials."""
        history = read_history(study, exclude=exclude)
        m = self.config.batch_size
        n_batches = len(history.finished) // m
        target = history.numbers[: n_batches * m]
        key = self._key(study)
        state = self._states.get(key)
        if state is None or target[: len(state.processed)] != state.processed:
            state = _ReplayState(self.config, self._seed)
            self._states[key] = state
        for b in range(len(state.processed) // m, n_batches):
            self._update(state, history, b * m, (b + 1) * m)
            state.processed = target[: (b + 1) * m]
        return state.policy

    def _update(self, state: _ReplayState, history: History, lo: int, hi: int) -> None:
        cfg = self.config
        trials = history.finished[lo:hi]
        utility = quantile_utility(history.scores[lo:hi], history.scores[:hi])
        pruned = np.array([s == TrialState.PRUNED for s in history.states[lo:hi]])
        utility[pruned] = cfg.pruned_utility
        reward = torch.as_tensor(utility, dtype=torch.float32)
        baseline = float(reward.mean()) if state.baseline is None else state.baseline
        advantage = reward - baseline
        if cfg.normalize_advantage and len(trials) > 1:
            advantage = advantage / (advantage.std() + 1e-8)
        policy = state.policy
        with torch.no_grad():
            old_log_prob, _ = policy.log_prob_and_entropy(trials)  # creates any new heads
        if state.optimizer is None:
            state.optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
        else:
            known = {id(p) for g in state.optimizer.param_groups for p in g["params"]}
            new = [p for p in policy.parameters() if id(p) not in known]
            if new:
                state.optimizer.add_param_group({"params": new})
        epochs = cfg.n_epochs if cfg.update == "ppo" else 1
        for _ in range(epochs):
            log_prob, entropy = policy.log_prob_and_entropy(trials)
            if cfg.update == "ppo":
                ratio = (log_prob - old_log_prob).exp()
                surrogate = torch.min(
                    ratio * advantage, ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range) * advantage
                )
            else:
                surrogate = log_prob * advantage
            loss = -surrogate.mean() - cfg.ent_coef * entropy.mean()
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.optimizer.step()
        state.baseline = cfg.baseline_decay * baseline + (1 - cfg.baseline_decay) * float(reward.mean())
        state.n_updates += 1
