"""Distributed RL (notes 10/31): rollout workers and replay actors on Ray, one learner.

* :mod:`.on_policy` — ``distributed_ppo`` / ``distributed_a2c``: W workers with env copies and
  policy weights return RolloutBatches, the learner updates and broadcasts weights; same seed ⇒
  the same run as local PPO/A2C;
* :mod:`.apex` — ``apex_dqn``: Ape-X-style distributed replay, many ε-greedy actors with different
  ε feeding one learner's (optionally prioritized) replay buffer;
* :mod:`.workers` — the worker classes and the Ray / in-process worker group;
* :mod:`.ray_utils` — lazy Ray import (``pip install 'deeprl-suite[distributed]'``), ``init_ray``.

Nothing here imports Ray until a ``backend='ray'`` agent starts its workers.
"""
