r"""Exploration bonuses (notes 10/17–10/19), added to the reward of *any* agent by one vector-env wrapper.

**Optimism** ("give a reward for infrequently chosen actions"): with a visit count N(s),

.. math:: r^+(s, a, s') = r(s, a, s') + \beta\, \frac{1}{\sqrt{N(s')}} ,

a UCB-style bonus that makes rarely visited states look better than they are known to be.

* :class:`ExactCounter`: N(s) exactly, for Discrete observation spaces (a table, ``index_add_``).
* :class:`SimHashCounter`: for continuous or high-dimensional states, count a hash
  :math:`\phi(s) = \mathrm{sgn}(A\,g(s)) \in \{-1, 1\}^k`, :math:`A_{ij} \sim \mathcal N(0, 1)`
  (Tang et al. 2017): nearby states share a code, far ones rarely do, so :math:`N(\phi(s))` is a
  pseudo-count. The k bits index a table of :math:`2^k` counters (no Python loop, no dict).
* :class:`DensityCounter`: a pseudo-count from a density model (Bellemare et al. 2016): with
  :math:`\rho_n(s)` the model's probability of s before and :math:`\rho'_n(s)` after one more update
  on s, :math:`\hat N(s) = \rho_n(s)\,(1-\rho'_n(s)) / (\rho'_n(s) - \rho_n(s))`. The model here is a
  product of per-dimension categorical histograms over a discretization of a Box space with
  add-one smoothing, for which the update and ρ' are exact and vectorized.

**Information gain** (10/19): prefer transitions the agent knows least about. The required
approximation is the *disagreement* of a learned bootstrap dynamics ensemble
(:class:`core_rl.model_based.ensemble.BootstrapEnsemble`): members trained on resamples of the
observed transitions agree where data pin the dynamics down and disagree elsewhere, so

.. math:: r^+(s, a, s') = r + \beta\, \sum_d \mathrm{Var}_m\big[\hat f_{\phi_m}(s, a)_d\big]

(:class:`DisagreementBonus`, refitted every ``fit_every`` steps on every transition seen). Its
expected value is a proxy for the information gain :math:`\mathbb E[D_{KL}(p(\phi|D \cup \{(s,a,s')\})\,\|\,p(\phi|D))]`
of VIME, which it does not compute.

:class:`ExplorationBonusWrapper` applies any bonus to a SAME_STEP vector env: the agent sees
:math:`r + r^+` and never knows; ``info["extrinsic_reward"]`` keeps r.

*Optimism needs optimistic values.* A bonus is only collected by going somewhere, so with value
estimates initialized near 0 the never-visited states look *worse* than familiar ones, whose
bonuses keep accumulating (:math:`\approx \beta/((1-\gamma)\sqrt N)`): on a chain the agent circles near
the start. Shifting the bonus down, :math:`r + \beta(N^{-1/2} - c)` (``bonus_shift=c``, 1 makes familiar
states cost up to β per step), is optimistic initialization in disguise (Sutton & Barto: adding a
constant to every reward is equivalent to starting the values at :math:`c\beta/(1-\gamma)`), and
restores directed exploration; the shift changes no preference among policies of equal length.
:class:`BonusMixin` and
:class:`BonusConfig` make any agent class use it (``bonus_dqn``, ``bonus_ppo``).
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv, VectorWrapper
from pydantic import BaseModel, Field
from torch import nn

from core_rl.common.envs import final_next_obs
from core_rl.common.errors import ConfigError, SpaceError
from core_rl.common.networks import ObsEncoder


# ---- counters ------------------------------------------------------------------------------------
class Counter(nn.Module):
    """N(s) over batches of raw observations: ``update`` then ``counts``."""

    def update(self, obs: torch.Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def counts(self, obs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ExactCounter(Counter):
    """Exact visit counts of a Discrete observation space."""

    def __init__(self, space: gym.spaces.Discrete):
        super().__init__()
        if not isinstance(space, gym.spaces.Discrete):
            raise SpaceError(f"exact counts need a Discrete observation space, got {space}; use bonus='simhash'")
        self.start = int(space.start)
        self.register_buffer("table", torch.zeros(int(space.n), dtype=torch.float64))

    def _index(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.long().reshape(-1) - self.start

    def update(self, obs: torch.Tensor) -> None:
        idx = self._index(obs)
        self.table.index_add_(0, idx, torch.ones(idx.shape[0], dtype=self.table.dtype))

    def counts(self, obs: torch.Tensor) -> torch.Tensor:
        return self.table[self._index(obs)]


class SimHashCounter(Counter):
    """Counts of the SimHash code φ(s) = sgn(A g(s)), g the flattened (one-hot) observation."""

    def __init__(self, space: gym.Space, bits: int = 16, seed: int = 0, center: np.ndarray | None = None):
        super().__init__()
        if not 1 <= bits <= 24:
            raise ConfigError(f"simhash_bits must be in [1, 24] (a table of 2^bits counters), got {bits}")
        self.encoder = ObsEncoder(space)
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(self.encoder.dim, bits, generator=gen))
        if (
            center is None
            and isinstance(space, gym.spaces.Box)
            and np.all(np.isfinite(space.low))
            and np.all(np.isfinite(space.high))
        ):
            center = (space.low + space.high) / 2  # hash around the box's centre, not the origin
        c = (
            torch.zeros(self.encoder.dim)
            if center is None
            else torch.as_tensor(center, dtype=torch.float32).reshape(-1)
        )
        self.register_buffer("center", c)
        self.register_buffer("powers", 2 ** torch.arange(bits, dtype=torch.long))
        self.register_buffer("table", torch.zeros(2**bits, dtype=torch.float64))

    def code(self, obs: torch.Tensor) -> torch.Tensor:
        """The k-bit code of each observation as an integer in [0, 2^k)."""
        g = self.encoder(obs) - self.center
        bits = (g @ self.projection) > 0
        return (bits.long() * self.powers).sum(-1)

    def update(self, obs: torch.Tensor) -> None:
        code = self.code(obs)
        self.table.index_add_(0, code, torch.ones(code.shape[0], dtype=self.table.dtype))

    def counts(self, obs: torch.Tensor) -> torch.Tensor:
        return self.table[self.code(obs)]


class DensityCounter(Counter):
    r"""Pseudo-counts :math:`\hat N = \rho(1-\rho')/(\rho'-\rho)` of a factorized histogram density.

    Each of the D dimensions of a bounded Box is cut into ``bins`` cells; the model is
    :math:`\rho(s) = \prod_d (c_d[b_d(s)] + 1)/(n + B)` (add-one smoothed counts c, n updates, B bins).
    """

    def __init__(self, space: gym.Space, bins: int = 16):
        super().__init__()
        if not isinstance(space, gym.spaces.Box) or not (
            np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))
        ):
            raise SpaceError(f"the density pseudo-count needs a bounded Box observation space, got {space}")
        self.bins = int(bins)
        self.register_buffer("low", torch.as_tensor(space.low, dtype=torch.float32).reshape(-1))
        self.register_buffer("high", torch.as_tensor(space.high, dtype=torch.float32).reshape(-1))
        dim = self.low.shape[0]
        self.register_buffer("cells", torch.zeros(dim, self.bins, dtype=torch.float64))
        self.register_buffer("n", torch.zeros((), dtype=torch.float64))

    def _bin(self, obs: torch.Tensor) -> torch.Tensor:
        x = (obs.reshape(obs.shape[0], -1).float() - self.low) / (self.high - self.low).clamp_min(1e-12)
        return (x * self.bins).long().clamp_(0, self.bins - 1)  # [B, D]

    def _log_rho(self, b: torch.Tensor, extra: float) -> torch.Tensor:
        """log ρ(s) after ``extra`` additional updates on s itself."""
        c = self.cells.gather(1, b.T).T + extra  # [B, D]
        return (torch.log(c + 1.0) - torch.log(self.n + extra + self.bins)).sum(-1)

    def update(self, obs: torch.Tensor) -> None:
        b = self._bin(obs)
        d = torch.arange(b.shape[1]).expand_as(b)
        self.cells.index_put_(
            (d.reshape(-1), b.reshape(-1)), torch.ones(b.numel(), dtype=self.cells.dtype), accumulate=True
        )
        self.n += b.shape[0]

    def counts(self, obs: torch.Tensor) -> torch.Tensor:
        b = self._bin(obs)
        rho, rho_next = self._log_rho(b, 0.0).exp(), self._log_rho(b, 1.0).exp()
        return rho * (1 - rho_next) / (rho_next - rho).clamp_min(1e-300)


# ---- bonuses -------------------------------------------------------------------------------------
class Bonus(nn.Module):
    """r⁺ for a batch of transitions; ``observe`` first records them, ``bonus`` then scores them."""

    def bonus(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def reset_obs(self, obs: torch.Tensor) -> None:
        """Observations an episode starts from (counted by the count bonuses)."""


class CountBonus(Bonus):
    r""":math:`\beta / \sqrt{N(s')}`, N counted *including* this visit (so the bonus is at most β)."""

    def __init__(self, counter: Counter, beta: float):
        super().__init__()
        self.counter, self.beta = counter, float(beta)

    def reset_obs(self, obs: torch.Tensor) -> None:
        self.counter.update(obs)

    def bonus(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        self.counter.update(next_obs)
        return count_bonus(self.counter.counts(next_obs), self.beta)


class DisagreementBonus(Bonus):
    r""":math:`\beta\,\sum_d \mathrm{Var}_m[\hat f_{\phi_m}(s,a)_d]` of a bootstrap dynamics ensemble.

    The ensemble predicts the next observation's features (one-hot for Discrete spaces) from
    (s, a); it is refitted every ``fit_every`` transitions on all of them (up to ``capacity``,
    oldest dropped), for at most ``fit_steps`` gradient steps. Each transition is scored before
    the model sees it. The bonus is clipped to ``[0, clip·β]``.
    """

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        beta: float,
        n_members: int = 5,
        hidden_sizes: tuple[int, ...] = (64, 64),
        fit_every: int = 200,
        fit_steps: int = 200,
        capacity: int = 50_000,
        clip: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        from core_rl.model_based.ensemble import BootstrapEnsemble

        self.obs_encoder = ObsEncoder(obs_space)
        if isinstance(action_space, gym.spaces.Discrete):
            self.n_actions, act_dim = int(action_space.n), int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box):
            self.n_actions, act_dim = 0, int(np.prod(action_space.shape))
        else:
            raise SpaceError(f"the disagreement bonus needs a Discrete or Box action space, got {action_space}")
        self.beta, self.clip = float(beta), float(clip)
        self.fit_every, self.fit_steps, self.capacity = int(fit_every), int(fit_steps), int(capacity)
        with torch.random.fork_rng():  # the agent's global RNG stream is not touched
            torch.manual_seed(seed)
            self.model = BootstrapEnsemble(
                self.obs_encoder.dim,
                act_dim,
                n_members=n_members,
                probabilistic=False,
                learn_reward=False,
                hidden_sizes=hidden_sizes,
                activation="relu",
                seed=seed,
            )
        d = self.obs_encoder.dim
        self.register_buffer("data_x", torch.zeros(self.capacity, d))
        self.register_buffer("data_a", torch.zeros(self.capacity, act_dim))
        self.register_buffer("data_y", torch.zeros(self.capacity, d))
        self.size, self.pos, self.since_fit = 0, 0, 0

    def _features(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.obs_encoder(obs)
        if self.n_actions:
            a = nn.functional.one_hot(actions.long().reshape(-1), self.n_actions).float()
        else:
            a = actions.reshape(actions.shape[0], -1).float()
        return x, a

    def bonus(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        from core_rl.common.transitions import Transitions

        x, a = self._features(obs, actions)
        y = self.obs_encoder(next_obs)
        score = self.model.disagreement(x, a, normalized=True).double()
        n = x.shape[0]
        idx = (self.pos + torch.arange(n)) % self.capacity
        self.data_x[idx], self.data_a[idx], self.data_y[idx] = x, a, y
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.since_fit += n
        if self.since_fit >= self.fit_every:
            self.since_fit = 0
            with torch.random.fork_rng(), torch.enable_grad():
                data = Transitions(
                    self.data_x[: self.size],
                    self.data_a[: self.size],
                    torch.zeros(self.size),
                    self.data_y[: self.size],
                    torch.zeros(self.size),
                )
                self.model.fit(data, epochs=1_000, batch_size=64, holdout_ratio=0.0, max_steps=self.fit_steps)
        return (self.beta * score).clamp(0.0, self.clip * self.beta)


# ---- config fields and the wrapper ------------------------------------------------------------------
BonusKind = Literal["none", "count", "simhash", "density", "disagreement"]


class BonusConfig(BaseModel):
    """Fields any agent config can mix in (``class MyConfig(PPOConfig, BonusConfig)``)."""

    bonus: BonusKind = Field(
        "count",
        description="Exploration bonus: exact count, SimHash count, "
        "density pseudo-count, ensemble disagreement, or none.",
    )
    bonus_beta: float = Field(0.1, ge=0.0, description="β of r + β·bonus.")
    bonus_shift: float = Field(
        0.0,
        ge=0.0,
        description="Subtract β·shift from every bonus: familiar states cost, "
        "so zero-initialized values are optimistic about never-visited ones.",
    )
    simhash_bits: int = Field(16, ge=1, le=24, description="k of the SimHash code (table of 2^k counts).")
    density_bins: int = Field(16, ge=2, description="Histogram bins per dimension of the density model.")
    disagreement_members: int = Field(5, ge=2, description="Members of the dynamics ensemble.")
    disagreement_hidden: tuple[int, ...] = Field((64, 64), description="Hidden sizes of the ensemble members.")
    disagreement_fit_every: int = Field(200, ge=1, description="Env steps between ensemble refits.")
    disagreement_fit_steps: int = Field(200, ge=1, description="Gradient steps per refit.")


def make_bonus(cfg: BonusConfig, obs_space: gym.Space, action_space: gym.Space, seed: int = 0) -> Bonus | None:
    """The bonus a :class:`BonusConfig` asks for (None for ``bonus='none'``)."""
    if cfg.bonus == "none":
        return None
    if cfg.bonus == "count":
        return CountBonus(ExactCounter(obs_space), cfg.bonus_beta)
    if cfg.bonus == "simhash":
        return CountBonus(SimHashCounter(obs_space, cfg.simhash_bits, seed=seed), cfg.bonus_beta)
    if cfg.bonus == "density":
        return CountBonus(DensityCounter(obs_space, cfg.density_bins), cfg.bonus_beta)
    return DisagreementBonus(
        obs_space,
        action_space,
        cfg.bonus_beta,
        cfg.disagreement_members,
        cfg.disagreement_hidden,
        cfg.disagreement_fit_every,
        cfg.disagreement_fit_steps,
        seed=seed,
    )


class ExplorationBonusWrapper(VectorWrapper):
    """Adds ``bonus`` to the rewards of a SAME_STEP vector env.

    The bonus of a transition that ends an episode is computed on the true final observation
    (``info["final_obs"]``), not on the reset observation that SAME_STEP returns in its place.
    ``info["extrinsic_reward"]`` and ``info["exploration_bonus"]`` carry the two parts;
    ``extrinsic_returns`` lists the undiscounted extrinsic return of every finished episode.
    """

    def __init__(self, env: VectorEnv, bonus: Bonus, offset: float = 0.0):
        super().__init__(env)
        self.bonus, self.offset = bonus, float(offset)
        self._last_obs: np.ndarray | None = None
        self._ext_return = np.zeros(self.num_envs)
        self.extrinsic_returns: list[float] = []

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.bonus.reset_obs(torch.as_tensor(np.asarray(obs)))
        self._last_obs = np.asarray(obs)
        self._ext_return[:] = 0.0
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        dones = np.asarray(terminated) | np.asarray(truncated)
        real_next = final_next_obs(np.asarray(obs), dones, info)
        with torch.no_grad():
            prev = torch.as_tensor(self._last_obs)
            r_plus = self.bonus.bonus(prev, torch.as_tensor(np.asarray(actions)), torch.as_tensor(real_next))
            if dones.any():  # the fresh episodes' first observations
                self.bonus.reset_obs(torch.as_tensor(np.asarray(obs)[dones]))
        r_plus_np = r_plus.cpu().numpy().astype(np.float64) - self.offset
        info = {**info, "extrinsic_reward": np.asarray(rewards), "exploration_bonus": r_plus_np}
        self._ext_return += rewards
        for i in np.flatnonzero(dones):
            self.extrinsic_returns.append(float(self._ext_return[i]))
        self._ext_return[dones] = 0.0
        self._last_obs = np.asarray(obs)
        return obs, np.asarray(rewards) + r_plus_np.astype(np.asarray(rewards).dtype), terminated, truncated, info


class BonusMixin:
    """Put before an agent class: trains on r + β·bonus (its config must mix in :class:`BonusConfig`).

    The bonus module becomes the agent's ``bonus`` attribute, so checkpoints keep its counts.
    Evaluation envs are not wrapped: ``evaluate`` reports extrinsic returns.
    """

    config: Any

    def _wrap_env(self, env: VectorEnv, training: bool) -> VectorEnv:
        env = super()._wrap_env(env, training)  # type: ignore[misc]
        if not training:
            return env
        bonus = make_bonus(self.config, env.single_observation_space, env.single_action_space, seed=self.config.seed)
        if bonus is None:
            return env
        self.bonus = bonus
        return ExplorationBonusWrapper(env, bonus, offset=self.config.bonus_beta * self.config.bonus_shift)

    @property
    def extrinsic_returns(self) -> list[float]:
        """Extrinsic returns of the finished training episodes (empty without a bonus)."""
        env = getattr(self, "env", None)
        return list(env.extrinsic_returns) if isinstance(env, ExplorationBonusWrapper) else []


def count_bonus(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """β/√N, the optimism bonus of a count tensor (N < 1 treated as 1)."""
    return beta / counts.clamp_min(1.0).sqrt()


__all__ = [
    "Counter",
    "ExactCounter",
    "SimHashCounter",
    "DensityCounter",
    "Bonus",
    "CountBonus",
    "DisagreementBonus",
    "BonusConfig",
    "BonusKind",
    "make_bonus",
    "ExplorationBonusWrapper",
    "BonusMixin",
    "count_bonus",
]
