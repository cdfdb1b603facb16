"""recsys: slate recommendation against simulated users (RecSim NG and a native torch twin).

Built in issue 6 on top of core_rl; this package is installed by the one `deeprl-suite` distribution.

* :mod:`recsys.simulation` — the simulated users: a torch twin of RecSim NG's interest-evolution
  model and the original RecSim interest-evolution environment (SlateQ's setting), as gymnasium
  vector envs with slate actions. Importing ``recsys`` registers ``recsys/InterestEvolution-v0``
  and ``recsys/RecSimInterestEvolution-v0``.
* :mod:`recsys.recsim_ng_bridge` — runs the real RecSim NG (TensorFlow) in its own virtual
  environment (``recsys/build_recsim_env.sh``) as a subprocess, exchanging parquet files; this
  environment never imports TensorFlow.
"""

from recsys import simulation  # noqa: F401  (registers the env ids)
