r"""Recurrent on-policy learning: the on-policy core with a memory (what RL² needs, notes 10/24–10/26).

A recurrent policy :math:`\pi_\theta(a_t | h_t)`, :math:`h_t = \mathrm{GRU}_\theta(h_{t-1}, x_t)` and value
:math:`V_\phi(h^V_t)` carry one hidden state per env. The hidden state is reset to 0 where an
(outer) episode starts and is *kept* otherwise, so a policy can remember across anything the env
does not mark as an episode end (RL² marks only trial ends).

:class:`RecurrentOnPolicyMixin` turns any :class:`~core_rl.common.on_policy.OnPolicyAgent` (PPO, A2C)
into its recurrent version without touching its update rule:

* the base class's ``collect`` steps the vector env; the mixin's rollout hooks (``_policy_step``,
  ``_bootstrap_values``, ...) thread the hidden states through it and record, for each rollout, the
  hidden states it started from;
* the batch's ``flat()`` is a :class:`SequenceFlatBatch`: its ``obs`` is a :class:`SequenceObs`
  (whole ``[T, B]`` sequences + episode starts + initial hidden states) that the recurrent
  policy/value unroll with backpropagation through time, and its ``minibatches`` are sets of whole
  env sequences. Every other field is the flat ``[valid steps]`` tensor the update expects, in the
  order the policy flattens its output, so PPO's clipped surrogate and A2C's loss run unchanged.
* evaluation/``predict`` keep their own hidden state, reset at the evaluation env's episode ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv, VectorWrapper
from torch import nn

from core_rl.common.buffers import RolloutBatch
from core_rl.common.distributions import Categorical, DiagGaussian
from core_rl.common.errors import ConfigError, SpaceError
from core_rl.common.networks import ObsEncoder, mlp
from core_rl.common.normalization import RewardScaler, RunningMeanStd


# ---- sequences -----------------------------------------------------------------------------------
@dataclass
class SequenceObs:
    """``[T, B, ...]`` observation sequences with the hidden states they start from.

    ``starts[t, b] = 1`` resets env b's hidden state before step t; ``valid`` selects the steps the
    flattened outputs keep (row-major over ``[T, B]``).
    """

    obs: torch.Tensor
    starts: torch.Tensor
    hidden_pi: torch.Tensor
    hidden_v: torch.Tensor
    valid: torch.Tensor

    @cached_property
    def valid_flat(self) -> torch.Tensor:
        return self.valid.reshape(-1).bool()

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, ...]`` → ``[valid steps, ...]``."""
        return x.reshape(-1, *x.shape[2:])[self.valid_flat]

    def columns(self, idx: torch.Tensor) -> "SequenceObs":
        return SequenceObs(
            self.obs[:, idx], self.starts[:, idx], self.hidden_pi[idx], self.hidden_v[idx], self.valid[:, idx]
        )


class SequenceFlatBatch:
    """The flat view PPO/A2C updates read, minibatched by whole env sequences."""

    def __init__(
        self,
        seq: SequenceObs,
        actions: torch.Tensor,
        log_probs: torch.Tensor,
        advantages: torch.Tensor | None,
        returns: torch.Tensor | None,
        values: torch.Tensor,
    ):
        self.obs = seq
        self._tb = {
            "actions": actions,
            "log_probs": log_probs,
            "advantages": advantages,
            "returns": returns,
            "values": values,
        }
        flat = {k: (seq.flatten(v) if v is not None else None) for k, v in self._tb.items()}
        self.actions, self.log_probs = flat["actions"], flat["log_probs"]
        self.advantages, self.returns, self.values = flat["advantages"], flat["returns"], flat["values"]

    def __len__(self) -> int:
        return int(self.obs.valid_flat.sum())

    def minibatches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator["SequenceFlatBatch"]:
        """Random sets of whole sequences holding about ``batch_size`` steps each (at least one)."""
        T, B = self.obs.valid.shape
        per = max(1, min(B, round(batch_size / max(T, 1))))
        perm = torch.randperm(B, generator=generator)
        for start in range(0, B, per):
            idx = perm[start : start + per]
            yield SequenceFlatBatch(
                self.obs.columns(idx), **{k: (v[:, idx] if v is not None else None) for k, v in self._tb.items()}
            )


@dataclass
class SequenceRolloutBatch(RolloutBatch):
    """A :class:`RolloutBatch` that remembers the hidden states its rollout started from."""

    hidden_pi0: torch.Tensor | None = None
    hidden_v0: torch.Tensor | None = None

    def flat(self) -> SequenceFlatBatch:  # type: ignore[override]
        seq = SequenceObs(self.obs, self.episode_starts, self.hidden_pi0, self.hidden_v0, self.valid)
        return SequenceFlatBatch(seq, self.actions, self.log_probs, self.advantages, self.returns, self.values)


# ---- networks ------------------------------------------------------------------------------------
class RecurrentNet(nn.Module):
    """x_t → GRU → MLP head; ``step`` for one time step of N envs, ``sequence`` for ``[T, B]`` with resets."""

    def __init__(
        self,
        obs_space: gym.Space,
        out_dim: int,
        hidden_size: int = 64,
        hidden_sizes: tuple[int, ...] = (64,),
        activation: str = "tanh",
        out_gain: float = 1.0,
    ):
        super().__init__()
        self.encoder = ObsEncoder(obs_space)
        self.hidden_size = int(hidden_size)
        self.gru = nn.GRU(self.encoder.dim, self.hidden_size)
        for name, p in self.gru.named_parameters():
            if "weight" in name:
                nn.init.orthogonal_(p)
            else:
                nn.init.zeros_(p)
        self.head = mlp(self.hidden_size, out_dim, hidden_sizes, activation, out_gain=out_gain)

    def step(self, obs: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step for ``[N, ...]`` observations from hidden ``[N, H]``: (output ``[N, out]``, new hidden)."""
        x = self.encoder(obs)[None]
        h_seq, h = self.gru(x, hidden[None].contiguous())
        return self.head(h_seq[0]), h[0]

    def sequence(self, seq: SequenceObs, hidden0: torch.Tensor) -> torch.Tensor:
        """Outputs ``[T, B, out]``, BPTT through the whole sequence; h ← 0 before steps with start = 1."""
        T, B = seq.starts.shape
        x = self.encoder(seq.obs.reshape(T * B, *seq.obs.shape[2:])).reshape(T, B, -1)
        keep = (1.0 - seq.starts.float()).unsqueeze(-1)  # [T, B, 1]
        h = (hidden0 * keep[0])[None].contiguous()
        if T == 1 or not bool(seq.starts[1:].any()):
            out, _ = self.gru(x, h)  # one fused call: no resets inside
        else:
            outs = []
            for t in range(T):  # a loop over time, not envs
                if t > 0:
                    h = h * keep[t][None]
                o, h = self.gru(x[t : t + 1], h)
                outs.append(o)
            out = torch.cat(outs, 0)
        return self.head(out)


class RecurrentStochasticPolicy(nn.Module):
    """π_θ(a_t | h_t): categorical (Discrete) or diagonal Gaussian with a state-independent log σ (Box)."""

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        hidden_size: int = 64,
        hidden_sizes: tuple[int, ...] = (64,),
        activation: str = "tanh",
        log_std_init: float = 0.0,
    ):
        super().__init__()
        if isinstance(action_space, gym.spaces.Discrete):
            self.discrete, out = True, int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box):
            self.discrete, out = False, int(np.prod(action_space.shape))
            self.log_std = nn.Parameter(torch.full((out,), float(log_std_init)))
        else:
            raise SpaceError(f"recurrent policies support Discrete or Box action spaces, got {action_space}")
        self.net = RecurrentNet(obs_space, out, hidden_size, hidden_sizes, activation, out_gain=0.01)
        self.hidden_size = self.net.hidden_size

    def _dist(self, out: torch.Tensor) -> Categorical | DiagGaussian:
        return Categorical(out) if self.discrete else DiagGaussian(out, self.log_std)

    def step(self, obs: torch.Tensor, hidden: torch.Tensor) -> tuple[Categorical | DiagGaussian, torch.Tensor]:
        out, h = self.net.step(obs, hidden)
        return self._dist(out), h

    def distribution(self, seq: SequenceObs) -> Categorical | DiagGaussian:
        """The distributions of every valid step of the sequences, flattened like :meth:`SequenceObs.flatten`."""
        return self._dist(seq.flatten(self.net.sequence(seq, seq.hidden_pi)))


class RecurrentValueFunction(nn.Module):
    """V_φ(h^V_t), with its own GRU."""

    def __init__(
        self,
        obs_space: gym.Space,
        hidden_size: int = 64,
        hidden_sizes: tuple[int, ...] = (64,),
        activation: str = "tanh",
    ):
        super().__init__()
        self.net = RecurrentNet(obs_space, 1, hidden_size, hidden_sizes, activation, out_gain=1.0)

    def step(self, obs: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, h = self.net.step(obs, hidden)
        return out.squeeze(-1), h

    def forward(self, seq: SequenceObs) -> torch.Tensor:
        return seq.flatten(self.net.sequence(seq, seq.hidden_v)).squeeze(-1)


# ---- evaluation memory -------------------------------------------------------------------------
class _ResetMemoryOnDone(VectorWrapper):
    """Clears the agent's evaluation memory of the envs whose episode ended (and all on reset)."""

    def __init__(self, env: VectorEnv, agent: "RecurrentOnPolicyMixin"):
        super().__init__(env)
        self.agent = agent

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self.agent.reset_memory()
        return self.env.reset(**kwargs)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        self.agent.reset_memory(np.asarray(terminated) | np.asarray(truncated))
        return obs, rewards, terminated, truncated, info


class RecurrentOnPolicyMixin:
    """Put before PPO or A2C: a GRU policy and value over sequences (see the module docstring).

    The config must have ``rnn_hidden_size`` (GRU width); ``hidden_sizes`` is the MLP after it.
    """

    #: the recurrent head draws i.i.d. Gaussian noise: no gSDE
    supports_sde: bool = False
    config: Any
    n_envs: int
    device: torch.device
    observation_space: gym.Space
    action_space: gym.Space

    def _build(self) -> None:
        cfg = self.config
        if getattr(cfg, "use_sde", False):
            raise ConfigError(f"config field 'use_sde': the recurrent {self.name} has no gSDE head")
        H = int(cfg.rnn_hidden_size)
        self.policy = RecurrentStochasticPolicy(
            self.observation_space, self.action_space, H, cfg.hidden_sizes, cfg.activation, cfg.log_std_init
        ).to(self.device)
        self.value = RecurrentValueFunction(self.observation_space, H, cfg.hidden_sizes, cfg.activation).to(self.device)
        self.obs_rms = RunningMeanStd(self.observation_space.shape) if cfg.normalize_obs else None
        self.reward_scaler = RewardScaler(self.n_envs, cfg.gamma) if cfg.normalize_reward else None
        self._build_optimizers()  # type: ignore[attr-defined]
        self._hidden_pi = torch.zeros(self.n_envs, H, device=self.device)
        self._hidden_v = torch.zeros(self.n_envs, H, device=self.device)
        self._eval_hidden: torch.Tensor | None = None

    # ---- acting outside training (predict / evaluate) -------------------------------------------
    def reset_memory(self, mask: np.ndarray | None = None) -> None:
        """Forget the evaluation memory of the envs in ``mask`` (of all envs if None)."""
        if mask is None or self._eval_hidden is None:
            self._eval_hidden = None
            return
        m = torch.as_tensor(np.asarray(mask, dtype=bool), device=self.device)
        if m.shape[0] == self._eval_hidden.shape[0]:
            self._eval_hidden = self._eval_hidden.masked_fill(m[:, None], 0.0)

    def _wrap_env(self, env: VectorEnv, training: bool) -> VectorEnv:
        env = super()._wrap_env(env, training)  # type: ignore[misc]
        return env if training else _ResetMemoryOnDone(env, self)

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        n = obs.shape[0]
        if self._eval_hidden is None or self._eval_hidden.shape[0] != n:
            self._eval_hidden = torch.zeros(n, self.policy.hidden_size, device=self.device)
        dist, self._eval_hidden = self.policy.step(obs, self._eval_hidden)
        return dist.mode() if deterministic else dist.sample()

    # ---- sampling: OnPolicyAgent.collect, with the hidden states threaded through its hooks -----------
    def _rollout_begin(self, episode_start: np.ndarray) -> None:
        keep = torch.as_tensor(~episode_start, dtype=torch.float32, device=self.device)[:, None]
        self._h0 = (self._hidden_pi * keep, self._hidden_v * keep)  # the sequences' initial states
        self._h_pi, self._h_v = self._h0

    def _policy_step(self, obs_t: torch.Tensor, episode_start: np.ndarray) -> tuple[Any, torch.Tensor]:
        """h_t = 0 where an episode starts; π(·|s_t, h^π_t), V(s_t, h^V_t), and the next hidden states."""
        start_t = torch.as_tensor(episode_start, dtype=torch.float32, device=self.device)[:, None]
        self._h_pi, self._h_v = self._h_pi * (1.0 - start_t), self._h_v * (1.0 - start_t)
        dist, self._h_pi_next = self.policy.step(obs_t, self._h_pi)
        values, self._h_v_next = self.value.step(obs_t, self._h_v)
        return dist, values

    def _bootstrap_values(self, final_obs_t: torch.Tensor, env_idx: np.ndarray) -> torch.Tensor:
        values, _ = self.value.step(final_obs_t, self._h_v_next[env_idx])
        return values

    def _rollout_advance(self) -> None:
        self._h_pi, self._h_v = self._h_pi_next, self._h_v_next

    def _rollout_end_value(self, obs_t: torch.Tensor, episode_start: np.ndarray) -> torch.Tensor:
        self._hidden_pi, self._hidden_v = self._h_pi, self._h_v
        not_start = torch.as_tensor(~episode_start, dtype=torch.float32, device=self.device)[:, None]
        values, _ = self.value.step(obs_t, self._h_v * not_start)
        return values

    def _make_rollout_batch(self, **fields: torch.Tensor) -> SequenceRolloutBatch:
        return SequenceRolloutBatch(**fields, hidden_pi0=self._h0[0], hidden_v0=self._h0[1])


__all__ = [
    "SequenceObs",
    "SequenceFlatBatch",
    "SequenceRolloutBatch",
    "RecurrentNet",
    "RecurrentStochasticPolicy",
    "RecurrentValueFunction",
    "RecurrentOnPolicyMixin",
]
