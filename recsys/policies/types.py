"""Slate observations, decisions and the :class:`SlatePolicy` interface (``policy(obs, info) → SlateDecision``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from core_rl.common.errors import ConfigError
from recsys.choice_model import num_ordered_slates, ordered_slate_index


# ---- observations ------------------------------------------------------------------------------
@dataclass
class ObsLayout:
    """Widths of the user part U, the candidate count C and the per-candidate feature width F."""

    user_dim: int
    num_candidates: int
    doc_dim: int

    @classmethod
    def from_env(cls, env: Any) -> "ObsLayout":
        space = getattr(env, "single_observation_space", None) or env.observation_space
        import gymnasium as gym

        if isinstance(space, gym.spaces.Dict):
            c, f = space["doc"].shape
            return cls(int(space["user"].shape[0]), int(c), int(f))
        base = getattr(env, "unwrapped", env)
        return cls(len(base.user_feature_names), int(base.num_candidates), len(base.doc_feature_names))

    def as_dict(self) -> dict[str, int]:
        return {"user_dim": self.user_dim, "num_candidates": self.num_candidates, "doc_dim": self.doc_dim}


@dataclass
class SlateObs:
    """A batch of users and their candidates as torch tensors."""

    user: torch.Tensor  # [N, U] float32
    docs: torch.Tensor  # [N, C, F] float32
    doc_ids: torch.Tensor | None = None  # [N, C] int64

    def __len__(self) -> int:
        return int(self.docs.shape[0])

    @property
    def num_candidates(self) -> int:
        return int(self.docs.shape[1])

    def to(self, device: torch.device | str) -> "SlateObs":
        return SlateObs(
            self.user.to(device), self.docs.to(device), None if self.doc_ids is None else self.doc_ids.to(device)
        )

    def index(self, rows: torch.Tensor) -> "SlateObs":
        return SlateObs(self.user[rows], self.docs[rows], None if self.doc_ids is None else self.doc_ids[rows])


def _f32(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(torch.float32)
    a = np.asarray(x, dtype=np.float32)
    return torch.from_numpy(a if a.flags.writeable else a.copy())  # an env's read-only arrays are not shared


def as_slate_obs(obs: Any, layout: ObsLayout | None = None, info: Mapping[str, Any] | None = None) -> SlateObs:
    """A :class:`SlateObs` from a SlateObs, a ``{"user", "doc"}`` dict, or a flat ``[N, U + C·F]`` array."""
    if isinstance(obs, SlateObs):
        return obs
    doc_ids = None
    if info is not None and "candidate_doc_id" in info:
        doc_ids = torch.as_tensor(np.array(info["candidate_doc_id"], dtype=np.int64))
    if isinstance(obs, Mapping):
        user, docs = _f32(obs["user"]), _f32(obs["doc"])
        if user.dim() == 1:
            user, docs = user.unsqueeze(0), docs.unsqueeze(0)
        return SlateObs(user, docs, doc_ids)
    if layout is None:
        raise ConfigError("a flat observation needs the layout (user_dim, num_candidates, doc_dim)")
    flat = _f32(obs)
    flat = flat.reshape(-1, layout.user_dim + layout.num_candidates * layout.doc_dim)
    user = flat[:, : layout.user_dim]
    docs = flat[:, layout.user_dim :].reshape(-1, layout.num_candidates, layout.doc_dim)
    return SlateObs(user, docs, doc_ids)


# ---- decisions ---------------------------------------------------------------------------------
@dataclass
class SlateDecision:
    """Ordered slates and the probabilities with which the policy chose them."""

    slates: torch.Tensor  # [N, K] int64 candidate indices
    slate_propensity: torch.Tensor  # [N] float64: μ(A | x)
    position_propensity: torch.Tensor  # [N, K] float64: μ(a_k at position k | x) (nan where unknown)

    def numpy(self) -> np.ndarray:
        return self.slates.detach().cpu().numpy().astype(np.int64)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The slates as an array, so a decision can go straight to ``env.step``."""
        out = self.numpy()
        return out if dtype is None else out.astype(dtype)


def random_ordered_slates(n: int, num_candidates: int, slate_size: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform random ordered slates: the K largest of C iid uniform keys, in key order."""
    keys = torch.rand(n, num_candidates, generator=generator)
    return keys.topk(slate_size, dim=1).indices


# ---- the interface -----------------------------------------------------------------------------
class SlatePolicy(ABC):
    """``policy(obs, info) → SlateDecision``. Subclasses provide :meth:`decide`."""

    kind: ClassVar[str] = "policy"
    deterministic: ClassVar[bool] = True
    #: the policy reads simulator ground truth from ``info`` (it cannot be served from features alone)
    needs_info: bool = False

    def __init__(self, num_candidates: int, slate_size: int):
        if slate_size < 1 or slate_size > num_candidates:
            raise ConfigError(f"slate_size must lie in [1, num_candidates={num_candidates}], got {slate_size}")
        self.num_candidates, self.slate_size = int(num_candidates), int(slate_size)
        self.layout: ObsLayout | None = None

    # -- what subclasses provide -------------------------------------------------------------------
    @abstractmethod
    def decide(self, obs: SlateObs, info: Mapping[str, Any] | None) -> SlateDecision:
        """Slates and propensities for a batch."""

    def spec(self) -> dict[str, Any]:
        """JSON-able description (with :meth:`state` it rebuilds the policy)."""
        return {"num_candidates": self.num_candidates, "slate_size": self.slate_size}

    def state(self) -> dict[str, Any]:
        """Tensors to save beside the spec (network weights, tables)."""
        return {}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], state: dict[str, Any]) -> "SlatePolicy":
        return cls(**spec)  # type: ignore[call-arg]

    # -- shared --------------------------------------------------------------------------------
    def __call__(self, obs: Any, info: Mapping[str, Any] | None = None) -> SlateDecision:
        o = as_slate_obs(obs, self.layout, info)
        if o.num_candidates != self.num_candidates:
            raise ConfigError(
                f"{self.kind} policy was built for {self.num_candidates} candidates, got {o.num_candidates}"
            )
        if self.needs_info and info is None:
            raise ConfigError(f"{self.kind} policy reads the simulator's choice model from info; pass info")
        with torch.no_grad():
            return self.decide(o, info)

    def act(self, obs: Any, info: Mapping[str, Any] | None = None) -> np.ndarray:
        """Slates as the env's action array ``[N, K]``."""
        return self(obs, info).numpy()

    def probability_of(self, obs: Any, info: Mapping[str, Any] | None, slates: torch.Tensor) -> torch.Tensor:
        """π(A | x) of given ordered ``[N, K]`` slates. Deterministic policies: 1[A = π(x)]."""
        if not self.deterministic:
            raise NotImplementedError(f"{self.kind} must implement probability_of")
        chosen = self(obs, info).slates
        return (chosen == slates.to(chosen.device)).all(1).to(torch.float64)

    def slate_distribution(self, obs: Any, info: Mapping[str, Any] | None = None) -> torch.Tensor:
        """``[N, S]`` probability of every ordered slate of :func:`enumerate_slates` (``ordered=True``)."""
        if not self.deterministic:
            raise NotImplementedError(f"{self.kind} must implement slate_distribution")
        chosen = self(obs, info).slates
        s = num_ordered_slates(self.num_candidates, self.slate_size)
        out = torch.zeros(chosen.shape[0], s, dtype=torch.float64)
        return out.scatter_(1, ordered_slate_index(chosen, self.num_candidates).unsqueeze(1), 1.0)

    def describe(self) -> str:
        return self.kind


__all__ = ["ObsLayout", "SlateObs", "as_slate_obs", "SlateDecision", "SlatePolicy", "random_ordered_slates"]
