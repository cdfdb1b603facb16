"""``deeprl recsys …``: simulate logs, ingest a user's logs, train a slate policy, evaluate it.

    deeprl recsys simulate-logs --env recsys/InterestEvolution-v0 --sessions 2000 --policy epsilon_popularity \\
                                --epsilon 0.3 --out logs.parquet [--env-set num_candidates=10 ...]
    deeprl recsys ingest   --logs raw.parquet --out clean.parquet [--strict] [--num-candidates C]
    deeprl recsys train    --logs logs.parquet --algo topk_reinforce [--set k=v ...] [--online] [--register NAME]
    deeprl recsys train    --env recsys/RecSimInterestEvolution-v0 --algo slateq --steps 200000   (online SlateQ)
    deeprl recsys evaluate --model MODEL_URI | --run RUN_ID  [--logs logs.parquet] [--online | --env ID]

Each command is one MLflow run (experiment ``recsys``) with its parameters, metrics and plots:
engagement curves (mean engagement at each session step), training curves, and the OPE estimates
with bootstrap intervals beside the ground truth. ``train`` logs the policy as a pyfunc model
(user state + candidates → slate, :mod:`recsys.serving`) and registers it in the model registry.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from core_rl.common.errors import ConfigError, EnvError
from core_rl.common.seeding import configure_torch, set_seed

EXPERIMENT = "recsys"
OFFLINE_ALGOS: dict[str, str] = {
    "slateq": "SlateQ from logs: item-wise Q-learning (or SARSA, --set target=sarsa) through the choice model",
    "cql": "SlateQ Q-learning from logs with a conservative (CQL) penalty",
    "topk_reinforce": "top-K off-policy-corrected REINFORCE (Chen et al. 2019), learned β head",
    "bc": "behaviour cloning of the logging policy (Plackett-Luce MLE, served by its mode)",
    "myopic": "myopic greedy under a learned choice + engagement model",
    "popularity": "top-K by engagement per impression (doc id or topic)",
    "random": "uniform random slates",
}
LOGGING_POLICIES = ("random", "popularity", "epsilon_popularity", "myopic", "epsilon_myopic")


# ---- simulators ------------------------------------------------------------------------------------
def make_simulator(env_id: str, num_envs: int, seed: int | None = None,
                   overrides: Mapping[str, Any] | None = None) -> Any:
    """The batched simulator registered as ``env_id`` with config ``overrides``."""
    from recsys.simulation import ENV_IDS

    if env_id not in ENV_IDS:
        raise EnvError(f"unknown recommender simulator '{env_id}'; known: {', '.join(sorted(ENV_IDS))}")
    return ENV_IDS[env_id][1](num_envs, seed=seed, **dict(overrides or {}))


def _env_id_of_kind(kind: str | None) -> str | None:
    return {"ng": "recsys/InterestEvolution-v0", "recsim": "recsys/RecSimInterestEvolution-v0"}.get(kind or "")


def popularity_from_rollout(env: Any, steps: int = 50, seed: int = 0, key: str | None = None) -> Any:
    """Fit a :class:`PopularityPolicy` from ``steps`` random-slate steps of every user in ``env``."""
    from recsys.logs import env_kind_of
    from recsys.policies import ObsLayout, PopularityPolicy, RandomPolicy, as_slate_obs

    layout = ObsLayout.from_env(env)
    kind = env_kind_of(env)
    key = key or ("topic" if kind == "recsim" else "doc_id")
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    num_topics = int(base.config.num_topics)
    rand = RandomPolicy(layout.num_candidates, base.slate_size, seed=seed)
    keys, earned = [], []
    obs, info = env.reset(seed=seed)
    for _ in range(steps):
        o = as_slate_obs(obs, layout, info)
        slates = rand(o).slates
        k_all = PopularityPolicy.keys_of(o, key, num_topics)
        obs, reward, _, _, info = env.step(slates.numpy())
        choice = torch.as_tensor(np.asarray(info["choice"]))
        shown = k_all.gather(1, slates)
        eng = torch.zeros(shown.shape, dtype=torch.float32)
        hit = choice < slates.shape[1]
        rows = hit.nonzero().squeeze(1)
        eng[rows, choice[rows]] = torch.as_tensor(np.asarray(reward), dtype=torch.float32)[rows]
        keys.append(shown.reshape(-1))
        earned.append(eng.reshape(-1))
    all_keys = torch.cat(keys)
    num_keys = num_topics if key == "topic" else int(all_keys.max()) + 1
    return PopularityPolicy.fit(all_keys, torch.cat(earned), num_keys, layout.num_candidates, base.slate_size,
                                key=key, num_topics=num_topics)


def make_logging_policy(name: str, env: Any, epsilon: float = 0.3, seed: int = 0) -> Any:
    """One of :data:`LOGGING_POLICIES` for ``env``."""
    from recsys.policies import EpsilonGreedyPolicy, MyopicGreedyPolicy, ObsLayout, RandomPolicy

    layout = ObsLayout.from_env(env)
    k = int(getattr(env, "unwrapped", env).slate_size)
    if name == "random":
        return RandomPolicy(layout.num_candidates, k, seed=seed)
    if name in ("popularity", "epsilon_popularity"):
        warm = make_simulator_like(env, 256, seed + 101)
        pop = popularity_from_rollout(warm, steps=40, seed=seed + 101)
        return pop if name == "popularity" else EpsilonGreedyPolicy(pop, epsilon, seed=seed)
    if name in ("myopic", "epsilon_myopic"):
        myopic = MyopicGreedyPolicy(layout.num_candidates, k)
        return myopic if name == "myopic" else EpsilonGreedyPolicy(myopic, epsilon, seed=seed)
    raise ConfigError(f"unknown logging policy '{name}'; known: {', '.join(LOGGING_POLICIES)}")


def make_simulator_like(env: Any, num_envs: int, seed: int) -> Any:
    base = getattr(env, "unwrapped", env)
    corpus = getattr(base, "_fixed_corpus", None)
    kwargs = {"corpus": corpus} if corpus is not None else {}
    return type(base)(num_envs, config=base.config, seed=seed, **kwargs)


# ---- MLflow helpers -----------------------------------------------------------------------------
@dataclass
class _Run:
    run_id: str
    tracker: Any
    client: Any
    tmp: Path


class _run:
    """An MLflow run in the ``recsys`` experiment; FAILED (with the error as a tag) if the body raises."""

    def __init__(self, name: str, tracking_uri: str | None, experiment: str = EXPERIMENT,
                 tags: Mapping[str, str] | None = None):
        self.name, self.tracking_uri, self.experiment, self.tags = name, tracking_uri, experiment, dict(tags or {})

    def __enter__(self) -> _Run:
        import mlflow

        from core_rl.common.tracking import MLflowTracker
        from pipelines.tracking import get_experiment_id, setup_tracking

        uri = setup_tracking(self.tracking_uri)
        exp = get_experiment_id(self.experiment, uri)
        self.active = mlflow.start_run(experiment_id=exp, run_name=self.name)
        if self.tags:
            mlflow.set_tags(self.tags)
        self._tmp = tempfile.TemporaryDirectory(prefix="recsys-run-")
        return _Run(self.active.info.run_id, MLflowTracker(self.active.info.run_id), mlflow.tracking.MlflowClient(),
                    Path(self._tmp.name))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        import mlflow

        try:
            if exc is not None:
                mlflow.set_tag("failure", f"{exc_type.__name__}: {exc}"[:5000])
                mlflow.end_run("KILLED" if exc_type is KeyboardInterrupt else "FAILED")
            else:
                mlflow.end_run("FINISHED")
        finally:
            self._tmp.cleanup()


def _log_figure(run: _Run, fig: Any, name: str) -> None:
    import matplotlib.pyplot as plt

    path = run.tmp / name
    fig.savefig(path, dpi=100, bbox_inches="tight")
    run.client.log_artifact(run.run_id, str(path), "plots")
    plt.close(fig)


def engagement_curve_plot(curves: Mapping[str, np.ndarray], title: str):  # type: ignore[no-untyped-def]
    """Mean engagement at each session step, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, curve in curves.items():
        if len(curve):
            ax.plot(np.arange(len(curve)), curve, lw=1.3, label=f"{name} (mean {np.mean(curve):.2f})")
    ax.set_xlabel("session step")
    ax.set_ylabel("mean engagement")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def training_curve_plot(history: Sequence[Mapping[str, float]], keys: Sequence[str],  # type: ignore[no-untyped-def]
                        title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in h for h in history)]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(3.2 * max(len(keys), 1), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(h["step"], h[key]) for h in history if key in h and math.isfinite(h[key])]
        if pts:
            ax.plot(*zip(*pts), lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("gradient step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def log_curve(path: Path, chunk_rows: int = 262_144) -> np.ndarray:
    """Mean logged engagement at each session step, streamed from a log."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(path), pre_buffer=False)
    sums, counts = np.zeros(0), np.zeros(0)
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=["step", "engagement"]):
        step = batch.column("step").to_numpy().astype(np.int64)
        eng = batch.column("engagement").to_numpy().astype(np.float64)
        m = int(step.max()) + 1 if len(step) else 0
        if m > len(sums):
            sums = np.concatenate([sums, np.zeros(m - len(sums))])
            counts = np.concatenate([counts, np.zeros(m - len(counts))])
        sums += np.bincount(step, eng, minlength=len(sums))
        counts += np.bincount(step, minlength=len(counts))
    return sums / np.maximum(counts, 1)


# ---- simulate-logs -------------------------------------------------------------------------------
def simulate_logs(out: str | Path, env_id: str = "recsys/InterestEvolution-v0", sessions: int = 1000,
                  policy: str = "epsilon_popularity", epsilon: float = 0.3, seed: int = 0, num_envs: int = 256,
                  env_config: Mapping[str, Any] | None = None, include_oracle: bool = True,
                  tracking_uri: str | None = None, experiment: str = EXPERIMENT, track: bool = True) -> dict[str, Any]:
    """Write a log of ``sessions`` sessions of ``policy`` in the simulator (one MLflow run)."""
    from recsys.logs import generate_logs

    configure_torch(1)
    set_seed(seed)
    env = make_simulator(env_id, num_envs, seed, env_config)
    logging_policy = make_logging_policy(policy, env, epsilon, seed)

    def body(run: _Run | None) -> dict[str, Any]:
        res = generate_logs(env, logging_policy, out, sessions, seed=seed, include_oracle=include_oracle,
                            env_id=env_id)
        summary = {"path": str(res.path), "rows": res.rows, "sessions": res.sessions,
                   "mean_session_engagement": res.mean_session_engagement,
                   "mean_step_engagement": res.mean_step_engagement, "logging_policy": logging_policy.describe()}
        if run is not None:
            run.tracker.log_params({"env_id": env_id, "sessions": sessions, "logging_policy": policy,
                                    "epsilon": epsilon, "seed": seed, "out": str(out),
                                    "env_config": json.dumps(dict(env_config or {}))})
            run.tracker.log_metrics({"rows": res.rows, "sessions": res.sessions,
                                     "mean_session_engagement": res.mean_session_engagement,
                                     "mean_step_engagement": res.mean_step_engagement}, step=0)
            _log_figure(run, engagement_curve_plot({logging_policy.describe(): log_curve(res.path)},
                                                   f"logged engagement ({env_id})"), "logged_engagement.png")
            summary["run_id"] = run.run_id
        return summary

    if not track:
        return body(None)
    with _run(f"simulate-logs-{policy}", tracking_uri, experiment, {"recsys_command": "simulate-logs"}) as run:
        return body(run)


# ---- ingest ----------------------------------------------------------------------------------------
def ingest(source: str | Path, out: str | Path, quarantine: str | Path | None = None, strict: bool = False,
           num_candidates: int | None = None, estimate: str = "auto", tracking_uri: str | None = None,
           experiment: str = EXPERIMENT, track: bool = True, seed: int = 0) -> Any:
    """Validate and normalise a user's log (:func:`recsys.logs.ingest_logs`), as one MLflow run."""
    from recsys.logs import ingest_logs

    configure_torch(1)
    if not track:
        return ingest_logs(source, out, quarantine, strict=strict, num_candidates=num_candidates,
                           estimate=estimate, seed=seed)
    with _run("ingest", tracking_uri, experiment, {"recsys_command": "ingest"}) as run:
        report = ingest_logs(source, out, quarantine, strict=strict, num_candidates=num_candidates,
                             estimate=estimate, seed=seed)
        run.tracker.log_params({"source": str(source), "out": str(out), "strict": strict, "estimate": estimate})
        run.tracker.log_metrics(report.metrics(), step=0)
        txt = run.tmp / "ingest_report.txt"
        txt.write_text("\n".join(report.lines()) + "\n")
        run.client.log_artifact(run.run_id, str(txt))
        report.run_id = run.run_id  # type: ignore[attr-defined]
        return report


def _open_logs(path: str | Path, chunk_rows: int, oracle: bool = False, seed: int = 0) -> tuple[Any, list[str]]:
    """A reader on ``path``; a file without our metadata is ingested first (beside it)."""
    from recsys.logs import LogReader, ingest_logs, read_meta

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"log file '{path}' does not exist")
    notes: list[str] = []
    try:
        meta = read_meta(path)
    except Exception as exc:
        from recsys.logs import LogSchemaError

        raise LogSchemaError(f"'{path}' is not a parquet log: {exc}") from None
    if meta is None:
        clean = path.with_name(path.stem + ".clean.parquet")
        report = ingest_logs(path, clean, chunk_rows=chunk_rows, seed=seed)
        notes += report.lines()
        path = clean
    return LogReader(path, chunk_rows=chunk_rows, oracle=oracle), notes


# ---- train -----------------------------------------------------------------------------------------
@dataclass
class TrainedPolicy:
    policy: Any
    history: list[dict[str, float]] = field(default_factory=list)
    curve_keys: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)


def train_policy_from_logs(algo: str, reader: Any, config: Mapping[str, Any] | None = None,
                           tracker: Any | None = None, seed: int = 0) -> TrainedPolicy:
    """Fit ``algo`` (one of :data:`OFFLINE_ALGOS`) on the log behind ``reader``."""
    from recsys.policies import MyopicGreedyPolicy, PopularityPolicy, RandomPolicy

    cfg = dict(config or {})
    cfg.setdefault("seed", seed)
    meta = reader.meta
    layout, k = reader.layout, meta.slate_size
    epochs = int(cfg.pop("epochs", 5 if algo in ("slateq", "cql", "topk_reinforce") else 3))
    if algo in ("slateq", "cql"):
        from recsys.offline import ConservativeSlateQ
        from recsys.slateq import OfflineSlateQ

        env_config = None
        if cfg.get("choice_model") == "simulator":
            env_config = meta.make_env(1).config
        cls = ConservativeSlateQ if algo == "cql" else OfflineSlateQ
        learner = cls(layout, k, cfg, env_config=env_config, tracker=tracker)
        learner.fit(reader, epochs=epochs)
        pol = learner.as_policy()
        return TrainedPolicy(pol, learner.history, ("loss", "q_mean", "cql_gap", "choice_nll"),
                             learner.config.model_dump(mode="json"))
    if algo == "topk_reinforce":
        from recsys.topk_reinforce import TopKReinforce

        cfg["epochs"] = epochs
        learner = TopKReinforce(layout, k, cfg, tracker=tracker)
        learner.fit(reader)
        return TrainedPolicy(learner.as_policy(), learner.history, ("policy_loss", "beta_nll", "weight_mean",
                                                                    "entropy"), learner.config.model_dump(mode="json"))
    if algo == "bc":
        from recsys.offline import BehaviorCloning

        cfg["epochs"] = epochs
        learner = BehaviorCloning(layout, k, cfg, tracker=tracker)
        learner.fit(reader)
        return TrainedPolicy(learner.as_policy(), learner.history, ("bc_nll",), learner.config.model_dump(mode="json"))
    if algo == "myopic":
        from recsys.ope import fit_reward_model

        unknown = set(cfg) - {"seed", "lr", "batch_size", "hidden_sizes", "method"}
        if unknown:
            raise ConfigError(f"config field(s) {sorted(unknown)} unknown for myopic (seed, lr, batch_size, "
                              "hidden_sizes, epochs, method)")
        rm = fit_reward_model(reader, layout.user_dim, layout.doc_dim, epochs=epochs, seed=int(cfg["seed"]),
                              lr=float(cfg.get("lr", 3e-3)), batch_size=int(cfg.get("batch_size", 512)),
                              hidden_sizes=tuple(cfg.get("hidden_sizes", (64, 64))))
        pol = MyopicGreedyPolicy(layout.num_candidates, k, rm, method=str(cfg.get("method", "lp")))
        pol.layout = layout
        return TrainedPolicy(pol, [], (), cfg)
    if algo == "popularity":
        key = cfg.get("key", "topic" if meta.env_kind == "recsim" else "doc_id")
        unknown = set(cfg) - {"seed", "key", "prior_strength"}
        if unknown:
            raise ConfigError(f"config field(s) {sorted(unknown)} unknown for popularity (key, prior_strength)")
        keys, earned = [], []
        num_topics = int(meta.env_config.get("num_topics", layout.doc_dim)) if meta.env_config else layout.doc_dim
        for chunk in reader.chunks():
            from recsys.policies import PopularityPolicy as P

            k_all = P.keys_of(chunk.obs(), key, num_topics)
            shown = k_all.gather(1, chunk.slate)
            eng = torch.zeros(shown.shape, dtype=torch.float32)
            rows = chunk.clicked.nonzero().squeeze(1)
            eng[rows, chunk.click[rows]] = chunk.engagement[rows]
            keys.append(shown.reshape(-1))
            earned.append(eng.reshape(-1))
        all_keys = torch.cat(keys)
        num_keys = num_topics if key == "topic" else int(all_keys.max()) + 1
        pol = PopularityPolicy.fit(all_keys, torch.cat(earned), num_keys, layout.num_candidates, k, key=key,
                                   prior_strength=float(cfg.get("prior_strength", 1.0)), num_topics=num_topics)
        pol.layout = layout
        return TrainedPolicy(pol, [], (), cfg)
    if algo == "random":
        pol = RandomPolicy(layout.num_candidates, k, seed=int(cfg["seed"]))
        pol.layout = layout
        return TrainedPolicy(pol, [], (), cfg)
    raise ConfigError(f"unknown recsys algorithm '{algo}'; known: {', '.join(OFFLINE_ALGOS)}")


def train(algo: str, logs: str | Path | None = None, env_id: str | None = None, config: Mapping[str, Any] | None = None,
          seed: int = 0, steps: int | None = None, env_config: Mapping[str, Any] | None = None, online: bool = False,
          eval_sessions: int = 500, register: str | None = None, chunk_rows: int = 65_536,
          tracking_uri: str | None = None, experiment: str = EXPERIMENT) -> dict[str, Any]:
    """Train ``algo`` from ``logs`` (or SlateQ online in ``env_id`` when no logs are given), log the
    policy as a pyfunc model and register it. With ``online`` (or ``env_id`` beside logs) the policy
    and the logging policy are run in the simulator and their engagement is compared."""
    from recsys.policies import evaluate_online, save_policy
    from recsys.serving import log_recommender, register_recommender

    configure_torch(1)
    set_seed(seed)
    if logs is None and env_id is None:
        raise ConfigError("give --logs FILE (offline) or --env ID (online SlateQ)")
    if logs is None and algo != "slateq":
        raise ConfigError(f"online training in a simulator is SlateQ's; '{algo}' learns from --logs")
    name = f"train-{algo}" + ("-online" if logs is None else "")
    register = register or f"recsys-{algo}"
    with _run(name, tracking_uri, experiment, {"recsys_command": "train", "algo": algo}) as run:
        notes: list[str] = []
        sim_id, sim_cfg, reader = env_id, dict(env_config or {}), None
        if logs is not None:
            reader, notes = _open_logs(logs, chunk_rows, seed=seed)
            if (online or env_id is not None) and env_id is None:
                sim_id = reader.meta.env_id or _env_id_of_kind(reader.meta.env_kind)
                sim_cfg = dict(reader.meta.env_config or {})
            run.tracker.log_params({"algo": algo, "logs": str(reader.path), "rows": reader.num_rows, "seed": seed,
                                    **{f"config.{k}": v for k, v in dict(config or {}).items()}})
            trained = train_policy_from_logs(algo, reader, config, run.tracker, seed)
        else:
            from recsys.slateq import SlateQ

            cfg = dict(config or {})
            cfg.setdefault("seed", seed)
            env = make_simulator(env_id, int(cfg.get("n_envs", 16)), seed, sim_cfg)  # type: ignore[arg-type]
            agent = SlateQ(env, cfg, tracker=run.tracker)
            agent.learn(int(steps or 50_000))
            hist = [{"step": float(s), "episode_return": v} for s, v in
                    [(m.step, m.value) for m in run.client.get_metric_history(run.run_id, "episode_return")]]
            trained = TrainedPolicy(agent.as_policy(), hist, ("episode_return",), agent.config.model_dump(mode="json"))
            run.tracker.log_params({"algo": algo, "env_id": env_id, "steps": steps, "env_config": json.dumps(sim_cfg)})
        policy = trained.policy
        cfg_path = run.tmp / "config.json"
        cfg_path.write_text(json.dumps({"algo": algo, **trained.config}, indent=2, default=str))
        run.client.log_artifact(run.run_id, str(cfg_path))
        if trained.history and trained.curve_keys:
            _log_figure(run, training_curve_plot(trained.history, trained.curve_keys, f"{algo} training"),
                        "training_curve.png")
        result: dict[str, Any] = {"run_id": run.run_id, "algo": algo, "policy": policy.describe(), "notes": notes}
        if sim_id is not None:
            env = make_simulator(sim_id, min(eval_sessions, 500), seed + 10_000, sim_cfg)
            online_res = evaluate_online(env, policy, eval_sessions, seed=seed + 10_000)
            metrics = online_res.metrics("online.")
            curves = {policy.describe(): online_res.step_curve}
            lp = reader.meta.logging_policy_object() if reader is not None else None
            if lp is not None:
                base = evaluate_online(env, lp, eval_sessions, seed=seed + 10_000)
                metrics.update(base.metrics("online.logging."))
                curves[f"logging: {lp.describe()}"] = base.step_curve
            run.tracker.log_metrics(metrics, step=0)
            _log_figure(run, engagement_curve_plot(curves, f"online engagement ({sim_id})"), "engagement_curve.png")
            result["online"] = {k.replace("online.", ""): v for k, v in metrics.items()}
        ckpt = save_policy(policy, run.tmp / "policy.pt", {"algo": algo})
        run.client.log_artifact(run.run_id, str(ckpt), "policy")
        if policy.needs_info:
            result["model_uri"] = None
        else:
            uri = log_recommender(policy, extra={"algo": algo})
            result["model_uri"] = uri
            result["registered"] = {"name": register, "version": register_recommender(uri, register)}
            run.client.set_tag(run.run_id, "model_uri", uri)
        return result


# ---- evaluate ---------------------------------------------------------------------------------------
def evaluate(model_uri: str | None = None, run_id: str | None = None, logs: str | Path | None = None,
             env_id: str | None = None, env_config: Mapping[str, Any] | None = None, online: bool = False,
             sessions: int = 500, n_bootstrap: int = 200, seed: int = 0, chunk_rows: int = 65_536,
             reward_model_epochs: int = 2, tracking_uri: str | None = None, experiment: str = EXPERIMENT,
             ) -> dict[str, Any]:
    """OPE of a trained policy on ``logs`` (IPS, SNIPS, DR, PI with bootstrap CIs, beside the
    ground truth when the logs carry it) and, when a simulator is given (``env_id``, or ``online``
    for the logs' own), its online engagement."""
    from pipelines.tracking import setup_tracking
    from recsys.ope import evaluate_on_logs, fit_reward_model, ope_plot
    from recsys.policies import evaluate_online
    from recsys.serving import load_recommender

    configure_torch(1)
    set_seed(seed)
    if (model_uri is None) == (run_id is None):
        raise ConfigError("give exactly one of --model or --run")
    if logs is None and env_id is None and not online:
        raise ConfigError("nothing to evaluate on: give --logs (OPE) and/or --env / --online (simulator)")
    if logs is None and online and env_id is None:
        raise ConfigError("--online uses the simulator recorded in --logs; give --logs or --env")
    setup_tracking(tracking_uri)
    if model_uri is None:
        import mlflow

        try:
            tags = mlflow.tracking.MlflowClient().get_run(run_id).data.tags  # type: ignore[arg-type]
            model_uri = tags.get("model_uri")
        except Exception:
            raise ConfigError(f"no run '{run_id}' in the tracking store") from None
        if not model_uri:
            raise ConfigError(f"run '{run_id}' logged no recommender model")
    policy = load_recommender(model_uri)
    with _run("evaluate", tracking_uri, experiment, {"recsys_command": "evaluate", "model_uri": model_uri}) as run:
        run.tracker.log_params({"model_uri": model_uri, "policy": policy.describe(), "logs": str(logs),
                                "env_id": str(env_id), "sessions": sessions, "bootstrap": n_bootstrap, "seed": seed})
        out: dict[str, Any] = {"run_id": run.run_id, "policy": policy.describe(), "model_uri": model_uri}
        sim_id, sim_cfg = env_id, dict(env_config or {})
        ope = None
        if logs is not None:
            reader, notes = _open_logs(logs, chunk_rows, oracle=True, seed=seed)
            out["notes"] = notes
            if online and env_id is None:
                sim_id = reader.meta.env_id or _env_id_of_kind(reader.meta.env_kind)
                sim_cfg = dict(reader.meta.env_config or {})
            lay = reader.layout
            rm = fit_reward_model(reader, lay.user_dim, lay.doc_dim, epochs=reward_model_epochs, seed=seed)
            lp = reader.meta.logging_policy_object()
            ope = evaluate_on_logs(policy, reader, reward_model=rm, logging_policy=lp, n_bootstrap=n_bootstrap,
                                   seed=seed)
            run.tracker.log_metrics(ope.metrics(), step=0)
            out["ope"] = {name: e.as_dict() for name, e in ope.estimates.items()}
            out["ground_truth"] = ope.ground_truth
            out["logging_value"] = ope.logging_value
            out["notes"] = out["notes"] + ope.notes
        online_step = None
        if sim_id is not None:
            env = make_simulator(sim_id, min(sessions, 500), seed + 20_000, sim_cfg)
            res = evaluate_online(env, policy, sessions, seed=seed + 20_000)
            run.tracker.log_metrics(res.metrics("online."), step=0)
            online_step = res.per_step
            out["online"] = res.metrics()
            _log_figure(run, engagement_curve_plot({policy.describe(): res.step_curve},
                                                   f"online engagement ({sim_id})"), "engagement_curve.png")
        if ope is not None:
            _log_figure(run, ope_plot(ope, f"OPE of {policy.describe()}", online_step), "ope_estimates.png")
            table = run.tmp / "ope.json"
            table.write_text(json.dumps({"estimates": out["ope"], "ground_truth": ope.ground_truth,
                                         "online_step_engagement": online_step}, indent=2))
            run.client.log_artifact(run.run_id, str(table))
        return out


# ---- the command line ---------------------------------------------------------------------------
def _kv(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{flag} expects key=value, got '{pair}'")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def add_recsys_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``recsys`` (with simulate-logs / ingest / train / evaluate) to the ``deeprl`` parser."""
    p = subparsers.add_parser("recsys", help="slate recommenders: simulate logs, train, evaluate")
    sub = p.add_subparsers(dest="recsys_command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--experiment", default=EXPERIMENT)
        q.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite under .deeprl/)")
        q.add_argument("--json", action="store_true", help="print one JSON line")

    s = sub.add_parser("simulate-logs", help="write a log of a logging policy in a simulator")
    s.add_argument("--env", default="recsys/InterestEvolution-v0")
    s.add_argument("--env-set", nargs="*", default=[], metavar="KEY=VALUE", help="simulator config fields")
    s.add_argument("--sessions", type=int, default=1000)
    s.add_argument("--policy", default="epsilon_popularity", choices=LOGGING_POLICIES)
    s.add_argument("--epsilon", type=float, default=0.3)
    s.add_argument("--num-envs", type=int, default=256, help="users simulated in parallel")
    s.add_argument("--no-oracle", action="store_true", help="leave out the simulator's ground-truth columns")
    s.add_argument("--out", required=True)
    common(s)

    i = sub.add_parser("ingest", help="validate a log, quarantine bad rows, estimate missing propensities")
    i.add_argument("--logs", required=True)
    i.add_argument("--out", required=True)
    i.add_argument("--quarantine", default=None)
    i.add_argument("--strict", action="store_true", help="fail with every problem instead of quarantining")
    i.add_argument("--num-candidates", type=int, default=None)
    i.add_argument("--estimate", default="auto", choices=["auto", "always", "never"])
    common(i)

    t = sub.add_parser("train", help="train a slate policy from logs (or SlateQ online), log and register it")
    t.add_argument("--algo", required=True, help=", ".join(OFFLINE_ALGOS))
    t.add_argument("--logs", default=None)
    t.add_argument("--env", default=None, help="simulator id: online SlateQ without --logs, else online evaluation")
    t.add_argument("--env-set", nargs="*", default=[], metavar="KEY=VALUE")
    t.add_argument("--online", action="store_true", help="evaluate online in the simulator recorded in the logs")
    t.add_argument("--steps", type=int, default=None, help="env steps of online SlateQ")
    t.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="algorithm config fields (epochs=…)")
    t.add_argument("--eval-sessions", type=int, default=500)
    t.add_argument("--register", default=None, help="registered model name (default recsys-ALGO)")
    common(t)

    e = sub.add_parser("evaluate", help="OPE on logs and/or online engagement of a trained policy")
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--model", default=None, metavar="MODEL_URI")
    g.add_argument("--run", default=None, metavar="RUN_ID")
    e.add_argument("--logs", default=None)
    e.add_argument("--env", default=None)
    e.add_argument("--env-set", nargs="*", default=[], metavar="KEY=VALUE")
    e.add_argument("--online", action="store_true", help="run in the simulator recorded in the logs")
    e.add_argument("--sessions", type=int, default=500)
    e.add_argument("--bootstrap", type=int, default=200)
    common(e)
    return p


def _print(result: Any, as_json: bool, lines: Sequence[str]) -> None:
    if as_json:
        print(json.dumps(result, default=str))
    else:
        for line in lines:
            print(line)


def cmd_recsys(args: argparse.Namespace) -> int:
    """Run one ``deeprl recsys`` command; user errors raise :class:`DeepRLError` (the CLI prints them)."""
    cmd = args.recsys_command
    if cmd == "simulate-logs":
        if args.sessions < 1:
            raise ConfigError(f"--sessions must be positive, got {args.sessions}")
        res = simulate_logs(args.out, args.env, args.sessions, args.policy, args.epsilon, args.seed, args.num_envs,
                            _kv(args.env_set, "--env-set"), not args.no_oracle, args.tracking_uri, args.experiment)
        _print(res, args.json, [f"wrote {res['rows']} rows ({res['sessions']} sessions) to {res['path']}",
                                f"logging policy {res['logging_policy']}: {res['mean_session_engagement']:.2f} "
                                f"engagement per session, {res['mean_step_engagement']:.3f} per step",
                                f"run {res['run_id']}"])
        return 0
    if cmd == "ingest":
        rep = ingest(args.logs, args.out, args.quarantine, args.strict, args.num_candidates, args.estimate,
                     args.tracking_uri, args.experiment, seed=args.seed)
        _print({"rows_in": rep.rows_in, "rows_clean": rep.rows_clean, "rows_quarantined": rep.rows_quarantined,
                "problems": [p.message() for p in rep.problems], "output": str(rep.output),
                "quarantine": str(rep.quarantine) if rep.rows_quarantined else None,
                "propensity_source": rep.propensity_source}, args.json, rep.lines())
        return 0
    if cmd == "train":
        res = train(args.algo, args.logs, args.env, _kv(args.set, "--set"), args.seed, args.steps,
                    _kv(args.env_set, "--env-set"), args.online, args.eval_sessions, args.register,
                    tracking_uri=args.tracking_uri, experiment=args.experiment)
        lines = [*res.get("notes", []), f"run {res['run_id']}: trained {res['policy']}"]
        if "online" in res:
            o = res["online"]
            lines.append(f"online: {o['session_engagement']:.2f} ± {o['session_engagement_se']:.2f} engagement per "
                         "session" + (f" (logging policy {o['logging.session_engagement']:.2f})"
                                      if "logging.session_engagement" in o else ""))
        if res.get("model_uri"):
            lines.append(f"model: {res['model_uri']} (registered {res['registered']['name']} "
                         f"version {res['registered']['version']})")
        _print(res, args.json, lines)
        return 0
    if cmd == "evaluate":
        res = evaluate(args.model, args.run, args.logs, args.env, _kv(args.env_set, "--env-set"), args.online,
                       args.sessions, args.bootstrap, args.seed, tracking_uri=args.tracking_uri,
                       experiment=args.experiment)
        lines = [f"run {res['run_id']}: {res['policy']}"]
        for name, e in res.get("ope", {}).items():
            lines.append(f"  {name:6s} {e['value']:.4f}  [{e['lower']:.4f}, {e['upper']:.4f}]")
        if res.get("ground_truth") is not None:
            lines.append(f"  ground truth (one step on the logged contexts) {res['ground_truth']:.4f}")
        if "online" in res:
            o = res["online"]
            lines.append(f"  online: {o['session_engagement']:.2f} ± {o['session_engagement_se']:.2f} per session, "
                         f"{o['step_engagement']:.4f} per step")
        _print(res, args.json, lines)
        return 0
    raise ConfigError(f"unknown recsys command '{cmd}'")


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m recsys.pipeline …``), the same as ``deeprl recsys …``."""
    from core_rl.common.errors import DeepRLError

    parser = argparse.ArgumentParser(prog="deeprl")
    add_recsys_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["recsys", *(argv if argv is not None else sys.argv[1:])])
    try:
        return cmd_recsys(args)
    except DeepRLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
