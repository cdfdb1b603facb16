"""Ray Tune driving our samplers through ``ray.tune.search.optuna.OptunaSearch`` (where Ray is installed).

    from ray import tune
    search = autotune.ray_tune.optuna_search("rl", space, metric="loss", mode="min", seed=0)
    tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=search, num_samples=50)).fit()

``space`` is a mapping of Optuna distributions (or the ``deeprl tune run`` space-file mapping).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.distributions import BaseDistribution

from core_rl.common.errors import ConfigError


def optuna_search(
    sampler: str, space: Mapping[str, Any], metric: str, mode: str = "min", seed: int = 0, n_trials_hint: int = 100
) -> Any:
    """An ``OptunaSearch`` whose suggestions come from one of our samplers (by ``deeprl tune`` name)."""
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise ConfigError("Ray Tune is not installed: pip install 'ray[tune]'") from None
    from autotune.compare import make_sampler
    from autotune.run import parse_space

    if mode not in ("min", "max"):
        raise ConfigError(f"mode must be 'min' or 'max', got '{mode}'")
    dists: dict[str, BaseDistribution] = (
        dict(space) if all(isinstance(v, BaseDistribution) for v in space.values()) else parse_space(dict(space))
    )
    return OptunaSearch(space=dists, metric=metric, mode=mode, sampler=make_sampler(sampler, seed, n_trials_hint))
