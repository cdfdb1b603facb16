"""Runs RecSim NG's interest-evolution simulation. Executed INSIDE the isolated RecSim NG venv.

Imports only the standard library, numpy, pandas/pyarrow, TensorFlow and recsim-ng (never torch or
the suite). Usage::

    .deeprl/recsim-venv/bin/python recsys/_recsim_ng_driver.py SPEC.json OUT_DIR

``SPEC.json``: ``{"seed": int, "jobs": [job, ...]}``, each job::

    {"name": str, "num_users": N, "horizon": H, "policy": "fixed" | "random" | "linear" | "myopic",
     "config": {num_topics, num_docs, slate_size, no_click_mass, interest_step_size,
                interest_update_noise_scale, max_user_affinity, topic_min_utility,
                topic_max_utility, video_length},
     "corpus": "corpus.parquet" | null,      # null: NG samples its own (CorpusWithTopicAndQuality)
     "slates": "slates.parquet" | null,      # fixed policy: rows (t, user, slot_0..slot_{K-1}) of corpus rows
     "weights": [w_affinity, w_quality, w_length],   # linear policy
     "record": true,                         # write the per-step trajectory
     "graph_compile": true, "benchmark_repeats": 0}     # >0: time `execute(horizon)` that often
                                                           # (with record=false: timing only); wall
                                                           # and CPU time (time.process_time) each

A job with ``"kind": "recsim"`` instead runs episodes of the *original* RecSim interest-evolution
environment (``recsim==0.2.4``, ``create_environment``): ``{"kind": "recsim", "name", "episodes",
"policy": "random" | "greedy", "num_candidates", "slate_size", "resample_documents"}``, writing
``NAME_episodes.parquet`` (episode, steps, engagement, clicks) and ``NAME_summary.json``.

Per (NG) job it writes ``NAME_corpus.parquet`` (the corpus used), ``NAME_trajectory.parquet`` (if
``record``: t, user, choice, consumed_time, slot_*, interest_*, next_interest_*) and
``NAME_summary.json`` (per-user engagement, timings).

The simulation is the real RecSim NG story ``recsim_ng.stories.recommendation_simulation.recs_story``
with the real ``InterestEvolutionUser`` (``recsys_partially_observable_rl/user.py``), ``StaticCorpus``
/ ``CorpusWithTopicAndQuality`` (``corpus.py``) and ``ConsumedTimeAsRewardMetrics`` (``metrics.py``).
Only the recommender is ours (it serves the requested slates), and the user's *observation* exposes
its interest so that the ``linear`` and ``myopic`` policies can read it; the dynamics are untouched.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import itertools  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
from recsim_ng.applications.recsys_partially_observable_rl import corpus as corpus_lib  # noqa: E402
from recsim_ng.applications.recsys_partially_observable_rl import metrics as metrics_lib  # noqa: E402
from recsim_ng.applications.recsys_partially_observable_rl import user as user_lib  # noqa: E402
from recsim_ng.core import network as network_lib  # noqa: E402
from recsim_ng.core import value as value_lib  # noqa: E402
from recsim_ng.entities.recommendation import recommender as recommender_lib  # noqa: E402
from recsim_ng.lib.tensorflow import (
    field_spec,  # noqa: E402
    runtime,  # noqa: E402
)
from recsim_ng.stories import recommendation_simulation as simulation  # noqa: E402

Value = value_lib.Value
ValueSpec = value_lib.ValueSpec


class ObservedInterestUser(user_lib.InterestEvolutionUser):
    """NG's InterestEvolutionUser whose observation is its interest (dynamics unchanged)."""

    def observation(self, user_state):
        return Value(interest=tf.identity(user_state.get("interest.state")))

    def specs(self):
        spec = super().specs()
        obs = ValueSpec(interest=field_spec.FieldSpec()).prefixed_with("observation")
        fields = {k: v for k, v in spec.as_dict.items() if not k.startswith("observation")}
        return ValueSpec(**fields).union(obs)


class DriverRecommender(recommender_lib.BaseRecommender):
    """Serves fixed / random / linear-scored / myopic-greedy slates over the whole corpus."""

    def __init__(self, config, policy, slates=None, weights=None, no_click_mass=0.0):
        super().__init__(config, name="DriverRecommender")
        self._policy = policy
        self._num_topics = config["num_topics"]
        self._slates = None if slates is None else tf.constant(slates, dtype=tf.int32)  # [H, N, K]
        self._weights = tf.constant(weights if weights is not None else [1.0, 0.0, 0.0], dtype=tf.float32)
        self._no_click = float(no_click_mass)
        combos = list(itertools.combinations(range(self._num_docs), self._slate_size))
        self._combos = tf.constant(combos, dtype=tf.int32)  # [S, K]

    def initial_state(self):
        return Value(step=tf.constant(0, dtype=tf.int32))

    def next_state(self, previous_state, user_response, slate_docs):
        del user_response, slate_docs
        return Value(step=previous_state.get("step") + 1)

    def _affinity(self, interest, features):
        # the same -||x - f|| as TargetPointSimilarity('negative_euclidean'), for all docs: [N, D]
        return -tf.norm(tf.expand_dims(interest, 1) - tf.expand_dims(features, 0), axis=-1)

    def slate_docs(self, previous_state, user_obs, available_docs):
        n, k = self._num_users, self._slate_size
        if self._policy == "fixed":
            t = tf.minimum(previous_state.get("step"), tf.shape(self._slates)[0] - 1)
            idx = tf.gather(self._slates, t)
        elif self._policy == "random":  # uniform K-subsets by Floyd's algorithm (as recsys' random_slates)
            slots = []
            for top in range(self._num_docs - k, self._num_docs):
                draw = tf.random.uniform((n,), 0, top + 1, dtype=tf.int32)
                if slots:
                    taken = tf.reduce_any(tf.equal(tf.stack(slots, 0), draw), axis=0)
                    draw = tf.where(taken, tf.fill((n,), top), draw)
                slots.append(draw)
            idx = tf.stack(slots, axis=1)
        else:
            interest = user_obs.get("interest")
            aff = self._affinity(interest, available_docs.get("doc_features"))
            quality = tf.expand_dims(available_docs.get("doc_quality"), 0)
            length = tf.expand_dims(available_docs.get("doc_length"), 0)
            if self._policy == "linear":
                w = self._weights
                score = w[0] * aff + w[1] * quality + w[2] * length
                idx = tf.math.top_k(score, k=k).indices
            else:  # myopic: argmax_A sum_{k in A} v_k e_k / (v_0 + sum_{k in A} v_k), v = exp(logit)
                logits = aff + 2.0
                shift = tf.maximum(tf.reduce_max(logits, axis=1, keepdims=True), self._no_click)
                weight = tf.exp(logits - shift)  # [N, D]
                weight_none = tf.exp(self._no_click - shift)  # [N, 1]
                gain = weight * tf.sigmoid(-quality) * length
                num = tf.reduce_sum(tf.gather(gain, self._combos, axis=1), -1)  # [N, S]
                den = weight_none + tf.reduce_sum(tf.gather(weight, self._combos, axis=1), -1)
                best = tf.argmax(num / den, axis=1, output_type=tf.int32)
                idx = tf.gather(self._combos, best)
        idx = tf.ensure_shape(tf.cast(idx, tf.int32), (n, k))
        slate = available_docs.map(lambda field: tf.gather(field, idx))
        return slate.union(Value(doc_index=idx))

    def specs(self):
        state = ValueSpec(step=field_spec.FieldSpec())
        slate = ValueSpec(
            doc_id=field_spec.FieldSpec(),
            doc_topic=field_spec.FieldSpec(),
            doc_quality=field_spec.FieldSpec(),
            doc_features=field_spec.FieldSpec(),
            doc_length=field_spec.FieldSpec(),
            doc_index=field_spec.FieldSpec(),
        )
        return state.prefixed_with("state").union(slate.prefixed_with("slate"))


def _corpus_value(frame):
    cols = sorted([c for c in frame.columns if c.startswith("feature_")], key=lambda c: int(c.split("_")[1]))
    return Value(
        doc_id=tf.constant(frame["doc_id"].to_numpy(), tf.int32),
        doc_topic=tf.constant(frame["topic"].to_numpy(), tf.int32),
        doc_quality=tf.constant(frame["quality"].to_numpy(), tf.float32),
        doc_features=tf.constant(frame[cols].to_numpy(), tf.float32),
        doc_length=tf.constant(frame["length"].to_numpy(), tf.float32),
    )


def _corpus_frame(val):
    data = {
        "doc_id": np.asarray(val.get("doc_id")).astype(np.int64),
        "topic": np.asarray(val.get("doc_topic")).astype(np.int64),
        "quality": np.asarray(val.get("doc_quality")).astype(np.float32),
        "length": np.asarray(val.get("doc_length")).astype(np.float32),
    }
    feats = np.asarray(val.get("doc_features"))
    for j in range(feats.shape[1]):
        data[f"feature_{j}"] = feats[:, j].astype(np.float32)
    return pd.DataFrame(data)


def run_job(job, seed, out_dir):
    cfg = job["config"]
    n, horizon = int(job["num_users"]), int(job["horizon"])
    config = {
        "num_users": n,
        "num_topics": int(cfg["num_topics"]),
        "num_docs": int(cfg["num_docs"]),
        "slate_size": int(cfg["slate_size"]),
        "history_length": 1,
    }
    tf.random.set_seed(seed)
    corpus_ctor_kwargs = dict(
        topic_min_utility=float(cfg["topic_min_utility"]),
        topic_max_utility=float(cfg["topic_max_utility"]),
        video_length=float(cfg["video_length"]),
    )
    if job.get("corpus"):
        static = _corpus_value(pd.read_parquet(job["corpus"]))
    else:
        static = corpus_lib.CorpusWithTopicAndQuality(config, **corpus_ctor_kwargs).initial_state().map(tf.identity)
    slates = None
    if job["policy"] == "fixed":
        frame = pd.read_parquet(job["slates"]).sort_values(["t", "user"])
        k = config["slate_size"]
        slates = frame[[f"slot_{j}" for j in range(k)]].to_numpy().reshape(-1, n, k)
    noise = cfg.get("interest_update_noise_scale")

    def user_ctor(c):
        return ObservedInterestUser(
            c,
            no_click_mass=float(cfg["no_click_mass"]),
            interest_step_size=float(cfg["interest_step_size"]),
            interest_update_noise_scale=None if noise is None else float(noise),
            max_user_affinity=float(cfg["max_user_affinity"]),
        )

    def corpus_ctor(c):
        return corpus_lib.StaticCorpus(c, static)

    def recommender_ctor(c):
        return DriverRecommender(
            c, job["policy"], slates=slates, weights=job.get("weights"), no_click_mass=float(cfg["no_click_mass"])
        )

    variables = simulation.recs_story(
        config, user_ctor, corpus_ctor, recommender_ctor, metrics_lib.ConsumedTimeAsRewardMetrics
    )
    tf_runtime = runtime.TFRuntime(
        network=network_lib.Network(variables=variables), graph_compile=bool(job.get("graph_compile", True))
    )
    name = job["name"]
    summary = {"name": name, "num_users": n, "horizon": horizon}
    _corpus_frame(static).to_parquet(os.path.join(out_dir, f"{name}_corpus.parquet"))
    repeats = int(job.get("benchmark_repeats", 0))
    if not (repeats > 0 and not job.get("record", True)):  # a benchmark-only job skips the trajectory
        start = time.perf_counter()
        traj = tf_runtime.trajectory(length=horizon + 1)
        summary["first_run_s"] = time.perf_counter() - start
        interest = np.asarray(traj["user state"].get("interest.state"))  # [H+1, N, T]
        choice = np.asarray(traj["user response"].get("choice"))[:horizon]  # [H, N]
        consumed = np.asarray(traj["user response"].get("consumed_time"))[:horizon]
        index = np.asarray(traj["slate docs"].get("doc_index"))[:horizon]  # [H, N, K]
        engagement = np.clip(consumed, 0.0, None)
        summary["user_engagement"] = engagement.sum(axis=0).astype(float).tolist()
        summary["mean_engagement"] = float(engagement.sum(axis=0).mean())
        if job.get("record", True):
            t_idx, u_idx = np.meshgrid(np.arange(horizon), np.arange(n), indexing="ij")
            data = {
                "t": t_idx.ravel().astype(np.int32),
                "user": u_idx.ravel().astype(np.int32),
                "choice": choice.ravel().astype(np.int32),
                "consumed_time": consumed.ravel().astype(np.float32),
            }
            for j in range(index.shape[-1]):
                data[f"slot_{j}"] = index[..., j].ravel().astype(np.int32)
            for j in range(interest.shape[-1]):
                data[f"interest_{j}"] = interest[:horizon, :, j].ravel().astype(np.float32)
                data[f"next_interest_{j}"] = interest[1:, :, j].ravel().astype(np.float32)
            pd.DataFrame(data).to_parquet(os.path.join(out_dir, f"{name}_trajectory.parquet"))
    if repeats > 0:
        steps = tf.constant(horizon)
        tf_runtime.execute(num_steps=steps)  # compile
        times, cpu_times = [], []
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            out = tf_runtime.execute(num_steps=steps)
            np.asarray(out["user state"].get("interest.state"))
            cpu_times.append(time.process_time() - cpu_start)  # CPU time of every thread of this process
            times.append(time.perf_counter() - start)
        summary["execute_s"] = times
        summary["execute_cpu_s"] = cpu_times
        summary["user_steps_per_s"] = n * horizon / min(times)
        summary["user_steps_per_cpu_s"] = n * horizon / min(cpu_times)
    with open(os.path.join(out_dir, f"{name}_summary.json"), "w") as fh:
        json.dump(summary, fh)


def _recsim_interest_evolution():
    """Import the original RecSim's interest_evolution without ``recsim.simulator.runner_lib``.

    ``recsim/simulator/__init__.py`` imports the training runner (and with it dopamine); the
    environment needs only ``environment.py`` and ``recsim_gym.py`` from that folder, so the two
    sub-packages are registered as plain namespace modules first.
    """
    import types

    import recsim

    root = os.path.dirname(recsim.__file__)
    for sub in ("simulator", "environments"):
        name = f"recsim.{sub}"
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.__path__ = [os.path.join(root, sub)]
            sys.modules[name] = mod
    from recsim.environments import interest_evolution

    return interest_evolution


def run_recsim_job(job, seed, out_dir):
    """Episodes of the original RecSim interest-evolution env under a random or greedy policy.

    greedy: the ``slate_size`` candidates with the highest score ``interest . features`` (the
    user's own choice score, observable in RecSim: user obs = interests, doc obs = features).
    """
    ie = _recsim_interest_evolution()
    np.random.seed(seed)
    env = ie.create_environment(
        {
            "num_candidates": int(job["num_candidates"]),
            "slate_size": int(job["slate_size"]),
            "resample_documents": bool(job.get("resample_documents", True)),
            "seed": seed,
        }
    )
    rng = np.random.default_rng(seed + 7)
    k, rows = int(job["slate_size"]), []
    start = time.perf_counter()
    steps_total = 0
    for episode in range(int(job["episodes"])):
        obs = env.reset()
        total, steps, clicks = 0.0, 0, 0
        while True:
            docs = np.stack(list(obs["doc"].values()))
            if job["policy"] == "greedy":
                slate = np.argsort(-(docs @ obs["user"]), kind="stable")[:k]
            else:
                slate = rng.permutation(len(docs))[:k]
            obs, reward, done, _ = env.step(list(slate))
            total += reward
            steps += 1
            clicks += int(any(r["click"] for r in obs["response"]))
            if done:
                break
        steps_total += steps
        rows.append({"episode": episode, "steps": steps, "engagement": total, "clicks": clicks})
    elapsed = time.perf_counter() - start
    name = job["name"]
    pd.DataFrame(rows).to_parquet(os.path.join(out_dir, f"{name}_episodes.parquet"))
    with open(os.path.join(out_dir, f"{name}_summary.json"), "w") as fh:
        json.dump(
            {
                "name": name,
                "episodes": len(rows),
                "user_steps_per_s": steps_total / elapsed,
                "mean_engagement": float(np.mean([r["engagement"] for r in rows])),
            },
            fh,
        )


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as fh:
        spec = json.load(fh)
    out_dir = argv[2]
    os.makedirs(out_dir, exist_ok=True)
    threads = int(spec.get("threads", 0))
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    for i, job in enumerate(spec["jobs"]):
        runner = run_recsim_job if job.get("kind") == "recsim" else run_job
        runner(job, int(spec.get("seed", 0)) + i, out_dir)
    with open(os.path.join(out_dir, "versions.json"), "w") as fh:
        import recsim_ng  # noqa: F401

        json.dump({"tensorflow": tf.__version__, "numpy": np.__version__}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
