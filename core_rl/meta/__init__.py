"""Transfer and meta-RL (notes 10/24–10/26) and unsupervised skill discovery (11/2).

* :mod:`.envs` — task distributions (Bernoulli bandits, point-goal), RL² trials, a reward-free
  point mass; importing this package registers ``meta/BanditTrial-v0``, ``meta/PointGoalTrial-v0``,
  ``meta/Point-v0``;
* :mod:`.recurrent` — the on-policy core made recurrent (sequence rollouts and minibatches);
* :mod:`.rl2` — ``rl2`` (PPO) and ``rl2_a2c``;
* :mod:`.domain_randomization` — zero-shot transfer by randomizing physics per episode;
* :mod:`.diayn` — ``diayn``: skills from a discriminator's pseudo-reward, trained with SAC;
* :mod:`.experiments` — RL² vs a non-adaptive policy on held-out bandits; randomized vs nominal
  training on held-out physics; DIAYN skill distinguishability.
"""

from core_rl.meta import envs as _envs  # noqa: F401  (registers the env ids)
