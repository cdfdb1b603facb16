"""Lists the random ops of RecSim NG's compiled trajectory graph with their seeds. Runs INSIDE the RecSim NG venv.

Evidence for the twin's ``interest_noise="recsim_ng"`` (see :mod:`recsys.simulation.user_model`)::

    .deeprl/recsim-venv/bin/python recsys/_recsim_ng_seed_graph.py [GLOBAL_SEED]

prints, for the interest-evolution story with update noise on (the driver's user, a random
recommender), every ``RandomStandardNormal`` / ``RandomUniformInt`` / ``Multinomial`` node of
``TFRuntime(graph_compile=True)``'s trajectory function and of its loop body, with ``seed`` /
``seed2``. The initial interest's normal (outer graph) and the update noise's normal (loop body)
carry the same pair: op-level seeds are per-graph counters and both are op 0 of their graph.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _recsim_ng_driver as driver  # noqa: E402
import tensorflow as tf  # noqa: E402
from recsim_ng.applications.recsys_partially_observable_rl import corpus as corpus_lib  # noqa: E402
from recsim_ng.applications.recsys_partially_observable_rl import metrics as metrics_lib  # noqa: E402
from recsim_ng.core import network as network_lib  # noqa: E402
from recsim_ng.lib.tensorflow import runtime  # noqa: E402
from recsim_ng.stories import recommendation_simulation as simulation  # noqa: E402

RANDOM_OPS = ("RandomUniformInt", "RandomUniform", "RandomStandardNormal", "Multinomial")


def main(argv: list[str]) -> int:
    config = {"num_users": 4, "num_topics": 2, "num_docs": 10, "slate_size": 2, "history_length": 1}
    tf.random.set_seed(int(argv[1]) if len(argv) > 1 else 0)
    static = corpus_lib.CorpusWithTopicAndQuality(config).initial_state().map(tf.identity)
    variables = simulation.recs_story(
        config,
        lambda c: driver.ObservedInterestUser(c, interest_update_noise_scale=0.5),
        lambda c: corpus_lib.StaticCorpus(c, static),
        lambda c: driver.DriverRecommender(c, "random"),
        metrics_lib.ConsumedTimeAsRewardMetrics,
    )
    rt = runtime.TFRuntime(network=network_lib.Network(variables=variables), graph_compile=True)
    graph_def = rt._trajectory_fn.get_concrete_function(3, None).graph.as_graph_def()
    graphs = [("trajectory_fn", graph_def.node)] + [(f.signature.name, f.node_def) for f in graph_def.library.function]
    for where, nodes in graphs:
        for node in nodes:
            if node.op in RANDOM_OPS:
                seeds = f"seed={node.attr['seed'].i} seed2={node.attr['seed2'].i}"
                print(f"{where[:32]:32s} {node.op:20s} {seeds:28s} {node.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
