"""The recommender app as a deeprl-suite plugin: its agents and its env-id namespace.

Named by the ``deeprl_suite.plugins`` entry point in ``pyproject.toml``; :mod:`core_rl.registry`
reads it on first use. Importing this module imports no agent (targets resolve lazily).
"""

from core_rl.registry import AlgoSpec

ALGORITHMS: list[AlgoSpec] = [
    AlgoSpec(
        "slateq",
        "recsys.slateq:SlateQ",
        "11/7-14 recommender systems: SlateQ, slate Q-learning through the user choice model",
        learns="recsys interest-evolution twin: beats myopic greedy and random in 20k steps",
    ),
]

ENV_NAMESPACES: dict[str, str] = {"recsys": "recsys"}
