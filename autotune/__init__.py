"""autotune: RL hyperparameter tuning inside Optuna, measured against Optuna's own samplers.

* :class:`RLSampler` — a controller policy (one distribution head per parameter) trained online by
  REINFORCE with a baseline, or PPO-clipped updates, on trial results (Zoph & Le).
* :class:`MetaSampler` — a meta-learned attention policy that reads the trial history and proposes
  the next configuration; pretrained by RL on synthetic tasks (``python -m autotune.pretrain``),
  its weights ship in ``autotune/weights/meta_policy.pt``.
* :class:`PopulationBasedTraining` — exploit/explore of core_rl agents' checkpoints in one budget.
* ``deeprl tune compare`` / ``deeprl tune run`` (:mod:`autotune.cli`).

Both samplers are ``optuna.samplers.BaseSampler`` subclasses and stateless across workers: they
rebuild everything from the study's stored trials, so many processes can share one study::

    study = optuna.create_study(sampler=autotune.RLSampler(seed=0))
"""

from autotune.controller import ControllerConfig, RLSampler
from autotune.meta import MetaConfig, MetaSampler
from autotune.pbt import PBTConfig, PopulationBasedTraining

__all__ = ["RLSampler", "ControllerConfig", "MetaSampler", "MetaConfig", "PopulationBasedTraining", "PBTConfig"]
