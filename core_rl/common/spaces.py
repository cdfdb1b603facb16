r"""Action spaces the suite adds to gymnasium's: the slate, K distinct indices out of n.

A slate recommender shows K of n candidates at once; the action is the ordered tuple
:math:`A = (a_1, \dots, a_K)` with :math:`a_j \in \{0..n-1\}` and :math:`a_i \ne a_j` for :math:`i \ne j`
— one of :math:`n!/(n-K)!` ordered slates. :class:`Slate` is a ``MultiDiscrete([n] * K)`` (so code
that checks ``isinstance(space, MultiDiscrete)`` and reads ``nvec`` keeps working) whose
``contains`` also demands distinct entries and whose ``sample`` draws without replacement.

A ``Slate`` may carry leading batch axes (``batch_shape``): ``nvec`` is then
``[*batch_shape, K]`` and distinctness holds along the last axis. This is what
:func:`gymnasium.vector.utils.batch_space` returns for a slate (registered below), so a vector
env's ``action_space.sample()`` gives one valid slate per env; gymnasium's own rule for
``MultiDiscrete`` would give an integer ``Box`` whose samples repeat candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium.spaces import MultiDiscrete
from gymnasium.vector.utils import batch_space, iterate

from core_rl.common.errors import SpaceError


class Slate(MultiDiscrete):
    """K distinct indices out of ``n``, in order (``Slate(n, k)``; ``Slate(n, k, batch_shape=(N,))``
    for N slates at once).

    It compares equal to the ``MultiDiscrete`` with the same ``nvec`` (it is one, restricted to
    distinct entries): tell them apart with ``isinstance``.
    """

    def __init__(self, n: int, k: int, seed: int | np.random.Generator | None = None, batch_shape: Sequence[int] = ()):
        n, k = int(n), int(k)
        if n < 1:
            raise SpaceError(f"a slate needs at least one candidate, got n={n}")
        if not 1 <= k <= n:
            raise SpaceError(f"slate size k={k} must lie in [1, n={n}]: a slate holds k distinct candidates")
        self.n, self.k = n, k
        self.batch_shape = tuple(int(b) for b in batch_shape)
        super().__init__(np.full((*self.batch_shape, k), n, dtype=np.int64), dtype=np.int64, seed=seed)

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """A uniformly random ordered slate (per batch entry): the first k of a random permutation."""
        if mask is not None or probability is not None:
            raise SpaceError("Slate.sample does not support mask/probability (draws are without replacement)")
        keys = self.np_random.random((*self.batch_shape, self.n))
        return np.argsort(keys, axis=-1)[..., : self.k].astype(self.dtype)

    def contains(self, x: Any) -> bool:
        if isinstance(x, Sequence):
            x = np.array(x)
        if not super().contains(x):
            return False
        if self.k == 1:
            return True
        ordered = np.sort(x, axis=-1)
        return bool(np.all(ordered[..., 1:] != ordered[..., :-1]))

    def __getitem__(self, index: int | tuple[int, ...]) -> Any:  # type: ignore[override]
        """An int index into the first batch axis gives the Slate of one batch entry."""
        if isinstance(index, (int, np.integer)) and self.batch_shape:
            if not -self.batch_shape[0] <= int(index) < self.batch_shape[0]:
                raise IndexError(f"index {index} out of range for batch axis of size {self.batch_shape[0]}")
            sub = Slate(self.n, self.k, batch_shape=self.batch_shape[1:])
            sub.np_random.bit_generator.state = self.np_random.bit_generator.state
            return sub
        return super().__getitem__(index)

    def __repr__(self) -> str:
        batch = f", batch_shape={self.batch_shape}" if self.batch_shape else ""
        return f"Slate({self.n}, {self.k}{batch})"


@batch_space.register(Slate)
def _batch_space_slate(space: Slate, n: int = 1) -> Slate:
    return Slate(space.n, space.k, seed=deepcopy(space.np_random), batch_shape=(int(n), *space.batch_shape))


@iterate.register(Slate)
def _iterate_slate(space: Slate, items: np.ndarray) -> Any:
    if not space.batch_shape:
        raise TypeError(f"unable to iterate over {space}: it has no batch axis")
    return iter(items)


__all__ = ["Slate"]


# ---- spaces as plain data (checkpoints keep them, so a policy loads without its env) ----------


def space_to_dict(space: Any) -> dict[str, Any]:
    """A JSON-able description of a gymnasium space (Box, Discrete, MultiDiscrete, Slate, MultiBinary,
    Dict, Tuple), read back by :func:`space_from_dict`."""
    from gymnasium import spaces as S

    if isinstance(space, Slate):
        return {"type": "Slate", "n": space.n, "k": space.k, "batch_shape": list(space.batch_shape)}
    if isinstance(space, S.Box):
        return {
            "type": "Box",
            "low": space.low.tolist(),
            "high": space.high.tolist(),
            "shape": list(space.shape),
            "dtype": str(space.dtype),
        }
    if isinstance(space, S.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, S.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "dtype": str(space.dtype)}
    if isinstance(space, S.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, S.Dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(v) for k, v in space.spaces.items()}}
    if isinstance(space, S.Tuple):
        return {"type": "Tuple", "spaces": [space_to_dict(v) for v in space.spaces]}
    raise SpaceError(f"cannot store a {type(space).__name__} space in a checkpoint")


def space_from_dict(d: dict[str, Any]) -> Any:
    """The space :func:`space_to_dict` described."""
    from gymnasium import spaces as S

    kind = d.get("type")
    if kind == "Slate":
        return Slate(d["n"], d["k"], batch_shape=d.get("batch_shape", ()))
    if kind == "Box":
        dtype = np.dtype(d["dtype"])
        return S.Box(np.asarray(d["low"], dtype=dtype), np.asarray(d["high"], dtype=dtype), dtype=dtype)
    if kind == "Discrete":
        return S.Discrete(d["n"], start=d.get("start", 0))
    if kind == "MultiDiscrete":
        return S.MultiDiscrete(np.asarray(d["nvec"]), dtype=np.dtype(d.get("dtype", "int64")))
    if kind == "MultiBinary":
        return S.MultiBinary(d["n"])
    if kind == "Dict":
        return S.Dict({k: space_from_dict(v) for k, v in d["spaces"].items()})
    if kind == "Tuple":
        return S.Tuple([space_from_dict(v) for v in d["spaces"]])
    raise SpaceError(f"unknown stored space type {kind!r}")


__all__ += ["space_to_dict", "space_from_dict"]
