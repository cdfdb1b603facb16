"""The recommender pipeline as a library: simulate logs, ingest a user's logs, train a slate policy,
evaluate it (the ``deeprl recsys …`` commands of :mod:`recsys.cli`).

Each step is one MLflow run (experiment ``recsys``, :func:`core_rl.common.runs.tracked_run`) with
its parameters, metrics and plots: engagement curves (mean engagement at each session step),
training curves, and the OPE estimates with bootstrap intervals beside the ground truth. ``train`` logs the policy as a pyfunc model
(user state + candidates → slate, :mod:`recsys.serving`) and registers it in the model registry.
Every input (algorithm, config fields, log file, simulator id, model) is validated before the run
is created: a bad input creates no run.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core_rl.common.config import parse_config
from core_rl.common.errors import ConfigError, EnvError
from core_rl.common.runs import setup_tracking, tracked_run
from core_rl.common.seeding import configure_torch, set_seed
from recsys.log_learners import LOG_LEARNERS, build_log_learner, check_workers
from recsys.plots import engagement_curve_plot, log_curve, log_figure, training_curve_plot

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
ONLINE_SEED_OFFSET = 10_000  # online evaluation seed = seed + this, in train and evaluate alike


# ---- simulators ------------------------------------------------------------------------------------
def check_simulator(env_id: str) -> None:
    """An :class:`EnvError` unless ``env_id`` is a registered recommender simulator."""
    from recsys.simulation import ENV_IDS

    if env_id not in ENV_IDS:
        raise EnvError(f"unknown recommender simulator '{env_id}'; known: {', '.join(sorted(ENV_IDS))}")


def make_simulator(
    env_id: str, num_envs: int, seed: int | None = None, overrides: Mapping[str, Any] | None = None
) -> Any:
    """The batched simulator registered as ``env_id`` with config ``overrides``."""
    from recsys.simulation import ENV_IDS

    check_simulator(env_id)
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
    return PopularityPolicy.fit(
        all_keys, torch.cat(earned), num_keys, layout.num_candidates, base.slate_size, key=key, num_topics=num_topics
    )


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


def freeze_corpus(env: Any, seed: int | None = None) -> Any:
    """``env`` with its current frozen corpus (NG twin) fixed, so that ``reset(seed=…)`` keeps it;
    simulators without a corpus are returned as they are."""
    base = getattr(env, "unwrapped", env)
    corpus = getattr(base, "corpus", None)
    if corpus is None or getattr(base, "_fixed_corpus", None) is not None:
        return env
    return type(base)(base.num_envs, config=base.config, seed=seed, corpus=corpus)


def online_simulator(
    reader: Any, env_id: str | None, env_config: Mapping[str, Any] | None, num_envs: int, seed: int
) -> tuple[Any, str | None]:
    """The simulator ``--online`` runs in, and its id: ``env_id`` (with ``env_config``) when given,
    else the one recorded in the log's metadata, rebuilt exactly (config and, for the NG twin, the
    logged corpus: :meth:`recsys.logs.LogMeta.make_env`)."""
    if env_id is not None:
        return make_simulator(env_id, num_envs, seed, env_config), env_id
    meta = reader.meta
    return meta.make_env(num_envs, seed), meta.env_id or _env_id_of_kind(meta.env_kind)


def _corpus_note(meta: Any) -> list[str]:
    if meta.env_kind == "ng" and meta.env_corpus is None:
        return [
            "note: this log does not record its NG corpus (written before env_corpus): --online draws a "
            "new corpus, unlike the logged one"
        ]
    return []


def make_simulator_like(env: Any, num_envs: int, seed: int) -> Any:
    base = getattr(env, "unwrapped", env)
    corpus = getattr(base, "_fixed_corpus", None)
    kwargs = {"corpus": corpus} if corpus is not None else {}
    return type(base)(num_envs, config=base.config, seed=seed, **kwargs)


# ---- simulate-logs -------------------------------------------------------------------------------
def simulate_logs(
    out: str | Path,
    env_id: str = "recsys/InterestEvolution-v0",
    sessions: int = 1000,
    policy: str = "epsilon_popularity",
    epsilon: float = 0.3,
    seed: int = 0,
    num_envs: int = 256,
    env_config: Mapping[str, Any] | None = None,
    include_oracle: bool = True,
    tracking_uri: str | None = None,
    experiment: str = EXPERIMENT,
    track: bool = True,
) -> dict[str, Any]:
    """Write a log of ``sessions`` sessions of ``policy`` in the simulator (one MLflow run)."""
    from recsys.logs import generate_logs

    configure_torch(1)
    set_seed(seed)
    # the NG twin's corpus is fixed first: the logging policy's warm-up, the log and its metadata share it
    env = freeze_corpus(make_simulator(env_id, num_envs, seed, env_config), seed)
    logging_policy = make_logging_policy(policy, env, epsilon, seed)

    def body(run: Any | None) -> dict[str, Any]:
        res = generate_logs(env, logging_policy, out, sessions, seed=seed, include_oracle=include_oracle, env_id=env_id)
        summary = {
            "path": str(res.path),
            "rows": res.rows,
            "sessions": res.sessions,
            "mean_session_engagement": res.mean_session_engagement,
            "mean_step_engagement": res.mean_step_engagement,
            "logging_policy": logging_policy.describe(),
        }
        if run is not None:
            run.log_params(
                {
                    "env_id": env_id,
                    "sessions": sessions,
                    "logging_policy": policy,
                    "epsilon": epsilon,
                    "seed": seed,
                    "out": str(out),
                    "env_config": json.dumps(dict(env_config or {})),
                }
            )
            run.log_metrics(
                {
                    "rows": res.rows,
                    "sessions": res.sessions,
                    "mean_session_engagement": res.mean_session_engagement,
                    "mean_step_engagement": res.mean_step_engagement,
                },
                step=0,
            )
            log_figure(
                run,
                engagement_curve_plot(
                    {logging_policy.describe(): log_curve(res.path)}, f"logged engagement ({env_id})"
                ),
                "logged_engagement.png",
            )
            summary["run_id"] = run.run_id
        return summary

    if not track:
        return body(None)
    with tracked_run(
        experiment,
        run_name=f"simulate-logs-{policy}",
        tracking_uri=tracking_uri,
        tags={"recsys_command": "simulate-logs"},
    ) as run:
        return body(run)


# ---- ingest ----------------------------------------------------------------------------------------
def ingested_path(source: str | Path) -> Path:
    """Where a log ingested without ``--out`` goes: ``<data folder>/recsys/ingested/<name>-<hash>.parquet``
    (the data folder of :func:`core_rl.common.runs.data_dir`; the hash is of the source's absolute
    path, so two sources never share an output). Nothing is written beside the user's input."""
    import hashlib

    from core_rl.common.runs import data_dir

    src = Path(source).resolve()
    digest = hashlib.sha1(str(src).encode()).hexdigest()[:10]
    name = src.name[: -len(".parquet")] if src.name.endswith(".parquet") else src.name
    name = "".join("_" if ch in "*?[]" else ch for ch in name)  # a glob's last part
    return data_dir() / "recsys" / "ingested" / f"{name}-{digest}.parquet"


def ingest(
    source: str | Path,
    out: str | Path | None = None,
    quarantine: str | Path | None = None,
    strict: bool = False,
    num_candidates: int | None = None,
    estimate: str = "auto",
    tracking_uri: str | None = None,
    experiment: str = EXPERIMENT,
    track: bool = True,
    seed: int = 0,
    require_sorted: bool = False,
    chunk_rows: int = 65_536,
    backend: str = "local",
    ray_address: str | None = None,
) -> Any:
    """Validate and normalise a user's log (:func:`recsys.logs.ingest_logs`), recorded as one MLflow run.

    ``source``: a parquet file, a directory or a glob of parquet files (a partitioned export); ``backend="ray"``
    validates its row groups on Ray Data (the cluster at ``ray_address``, else a local Ray). The clean log
    goes to ``out`` (default :func:`ingested_path`, under the data folder) and the quarantine beside
    it. Rows out of (session_id, step) order are sorted (``require_sorted``: refused instead). The
    log is ingested first: a log that cannot be ingested (missing, unreadable, or with bad rows
    under ``strict``) raises and creates no run."""
    from recsys.logs import ingest_logs

    configure_torch(1)
    is_glob = isinstance(source, str) and any(ch in source for ch in "*?[")
    if isinstance(source, (str, Path)) and not is_glob and not Path(source).exists():
        raise ConfigError(f"log file '{source}' does not exist")  # a glob that matches nothing: ingest_logs says so
    if out is None:
        if not isinstance(source, (str, Path)):
            raise ConfigError("out: give an output path for a log that is not a file")
        out = ingested_path(source)
    if track:
        setup_tracking(tracking_uri)  # an unusable store fails before the work
    report = ingest_logs(
        source,
        out,
        quarantine,
        strict=strict,
        num_candidates=num_candidates,
        estimate=estimate,
        seed=seed,
        chunk_rows=chunk_rows,
        order="require" if require_sorted else "sort",
        backend=backend,
        ray_address=ray_address,
    )
    if not track:
        return report
    with tracked_run(
        experiment,
        run_name="ingest",
        tracking_uri=tracking_uri,
        tags={"recsys_command": "ingest"},
        params={
            "source": str(source),
            "out": str(out),
            "strict": strict,
            "estimate": estimate,
            "require_sorted": require_sorted,
            "backend": backend,
        },
    ) as run:
        run.log_metrics(report.metrics(), step=0)
        with tempfile.TemporaryDirectory(prefix="recsys-ingest-") as tmp:
            txt = Path(tmp) / "ingest_report.txt"
            txt.write_text("\n".join(report.lines()) + "\n")
            run.log_artifact(txt)
        report.run_id = run.run_id  # type: ignore[attr-defined]
        return report


def _open_logs(path: str | Path, chunk_rows: int, oracle: bool = False, seed: int = 0) -> tuple[Any, list[str]]:
    """A reader on ``path``; a file without our metadata, or a directory of parquet files, is
    ingested first (into :func:`ingested_path`, under the data folder — never beside the input)."""
    from recsys.logs import LogReader, ingest_logs, read_meta

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"log file '{path}' does not exist")
    notes: list[str] = []
    meta = None
    if path.is_file() and path.suffix.lower() != ".csv":  # a CSV has no metadata: ingestion reads (or refuses) it
        try:
            meta = read_meta(path)
        except Exception as exc:
            from recsys.logs import LogSchemaError

            raise LogSchemaError(f"'{path}' is not a parquet log: {exc}") from None
    if meta is None:
        clean = ingested_path(path)
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


_BASELINE_FIELDS = {
    "myopic": {"seed", "lr", "batch_size", "hidden_sizes", "method"},
    "popularity": {"seed", "key", "prior_strength"},
}


def _check_baseline_fields(algo: str, cfg: Mapping[str, Any]) -> None:
    unknown = set(cfg) - _BASELINE_FIELDS[algo]
    if unknown:
        raise ConfigError(
            f"config field(s) {sorted(unknown)} unknown for {algo} "
            f"({', '.join(sorted(_BASELINE_FIELDS[algo] | {'epochs'}))})"
        )


def check_train_config(algo: str, config: Mapping[str, Any] | None = None, online: bool = False) -> None:
    """A :class:`ConfigError` naming the algorithm or field unless ``algo`` and ``config`` are valid
    (``online``: SlateQ in a simulator). Called before a run is created."""
    if algo not in OFFLINE_ALGOS:
        raise ConfigError(f"unknown recsys algorithm '{algo}'; known: {', '.join(OFFLINE_ALGOS)}")
    cfg = {k: v for k, v in dict(config or {}).items() if k != "epochs"}
    if online or algo == "slateq":
        from recsys.slateq import SlateQConfig

        parse_config(SlateQConfig, cfg)
    elif algo == "cql":
        from recsys.offline import CQLConfig

        parse_config(CQLConfig, cfg)
    elif algo == "topk_reinforce":
        from recsys.topk_reinforce import TopKReinforceConfig

        parse_config(TopKReinforceConfig, cfg)
    elif algo == "bc":
        from recsys.offline import BCConfig

        parse_config(BCConfig, cfg)
    elif algo in _BASELINE_FIELDS:
        _check_baseline_fields(algo, cfg)


def train_policy_from_logs(
    algo: str, reader: Any, config: Mapping[str, Any] | None = None, tracker: Any | None = None, seed: int = 0
) -> TrainedPolicy:
    """Fit ``algo`` (one of :data:`OFFLINE_ALGOS`) on the log behind ``reader``."""
    from recsys.policies import MyopicGreedyPolicy, PopularityPolicy, RandomPolicy

    cfg = dict(config or {})
    cfg.setdefault("seed", seed)
    meta = reader.meta
    layout, k = reader.layout, meta.slate_size
    if algo in LOG_LEARNERS:
        spec = LOG_LEARNERS[algo]
        learner, epochs = build_log_learner(algo, reader, cfg, tracker, seed)
        learner.fit(reader, epochs=epochs, log_every=spec.log_every)
        return TrainedPolicy(
            learner.as_policy(), learner.history, spec.curve_keys, learner.config.model_dump(mode="json")
        )
    epochs = int(cfg.pop("epochs", 3))
    if algo == "myopic":
        from recsys.ope import fit_reward_model

        _check_baseline_fields(algo, cfg)
        rm = fit_reward_model(
            reader,
            layout.user_dim,
            layout.doc_dim,
            epochs=epochs,
            seed=int(cfg["seed"]),
            lr=float(cfg.get("lr", 3e-3)),
            batch_size=int(cfg.get("batch_size", 512)),
            hidden_sizes=tuple(cfg.get("hidden_sizes", (64, 64))),
        )
        pol = MyopicGreedyPolicy(layout.num_candidates, k, rm, method=str(cfg.get("method", "lp")))
        pol.layout = layout
        return TrainedPolicy(pol, [], (), cfg)
    if algo == "popularity":
        _check_baseline_fields(algo, cfg)
        key = cfg.get("key", "topic" if meta.env_kind == "recsim" else "doc_id")
        keys, earned = [], []
        num_topics = int(meta.env_config.get("num_topics", layout.doc_dim)) if meta.env_config else layout.doc_dim
        for chunk in reader.chunks():
            k_all = PopularityPolicy.keys_of(chunk.obs(), key, num_topics)
            shown = k_all.gather(1, chunk.slate)
            eng = torch.zeros(shown.shape, dtype=torch.float32)
            rows = chunk.clicked.nonzero().squeeze(1)
            eng[rows, chunk.click[rows]] = chunk.engagement[rows]
            keys.append(shown.reshape(-1))
            earned.append(eng.reshape(-1))
        all_keys = torch.cat(keys)
        num_keys = num_topics if key == "topic" else int(all_keys.max()) + 1
        pol = PopularityPolicy.fit(
            all_keys,
            torch.cat(earned),
            num_keys,
            layout.num_candidates,
            k,
            key=key,
            prior_strength=float(cfg.get("prior_strength", 1.0)),
            num_topics=num_topics,
        )
        pol.layout = layout
        return TrainedPolicy(pol, [], (), cfg)
    if algo == "random":
        pol = RandomPolicy(layout.num_candidates, k, seed=int(cfg["seed"]))
        pol.layout = layout
        return TrainedPolicy(pol, [], (), cfg)
    raise ConfigError(f"unknown recsys algorithm '{algo}'; known: {', '.join(OFFLINE_ALGOS)}")


def train_policy_data_parallel(
    algo: str,
    reader: Any,
    workers: int,
    config: Mapping[str, Any] | None = None,
    tracker: Any | None = None,
    seed: int = 0,
) -> TrainedPolicy:
    """Fit ``algo`` (one of :data:`recsys.log_learners.DATA_PARALLEL_LEARNERS`) on the log behind
    ``reader`` with ``workers`` data-parallel processes (:func:`recsys.data_parallel.run_data_parallel`,
    gloo on loopback): the same loss curve as one worker at the same global ``batch_size``. Rank 0's
    metrics are replayed into ``tracker`` at their steps and its networks loaded into a learner here."""
    from recsys.data_parallel import run_data_parallel
    from recsys.log_learners import LearnerJob

    check_workers(algo, workers)
    spec = LOG_LEARNERS[algo]
    job = LearnerJob(algo, str(reader.path), dict(config or {}), reader.chunk_rows, spec.log_every, seed)
    value = run_data_parallel(job, workers, timeout_s=None)[0].value
    learner, _ = build_log_learner(algo, reader, config, None, seed)
    for name, net in learner.networks().items():
        net.load_state_dict(value["state"][name])
    learner.history = value["history"]
    if tracker is not None:
        for metrics, step in value["records"]:
            tracker.log_metrics(metrics, step)
    return TrainedPolicy(learner.as_policy(), learner.history, spec.curve_keys, learner.config.model_dump(mode="json"))


def train(
    algo: str,
    logs: str | Path | None = None,
    env_id: str | None = None,
    config: Mapping[str, Any] | None = None,
    seed: int = 0,
    steps: int | None = None,
    env_config: Mapping[str, Any] | None = None,
    online: bool = False,
    eval_sessions: int = 500,
    register: str | None = None,
    chunk_rows: int = 65_536,
    tracking_uri: str | None = None,
    experiment: str = EXPERIMENT,
    workers: int = 1,
) -> dict[str, Any]:
    """Train ``algo`` from ``logs`` (or SlateQ online in ``env_id`` when no logs are given), log the
    policy as a pyfunc model and register it. With ``online`` (or ``env_id`` beside logs) the policy
    and the logging policy are run in the simulator and their engagement is compared. ``workers`` > 1:
    data-parallel training from the logs (:func:`train_policy_data_parallel`; bc, topk_reinforce,
    slateq, cql)."""
    from recsys.policies import evaluate_online, save_policy
    from recsys.serving import log_recommender, register_recommender

    configure_torch(1)
    set_seed(seed)
    # every input is checked before the run exists: a bad one creates no run
    if logs is None and env_id is None:
        raise ConfigError("give --logs FILE (offline) or --env ID (online SlateQ)")
    if logs is None and algo != "slateq":
        check_train_config(algo, config)
        raise ConfigError(f"online training in a simulator is SlateQ's; '{algo}' learns from --logs")
    check_train_config(algo, config, online=logs is None)
    check_workers(algo, workers)
    if workers > 1 and logs is None:
        raise ConfigError(f"workers={workers}: data-parallel training reads --logs; online SlateQ runs in one process")
    if env_id is not None:
        check_simulator(env_id)
    setup_tracking(tracking_uri)
    notes: list[str] = []
    sim_id, sim_cfg, reader = env_id, dict(env_config or {}), None
    if logs is not None:
        reader, notes = _open_logs(logs, chunk_rows, seed=seed)
        if online and env_id is None:
            reader.meta.make_env(1)  # the log records a simulator (else one clear error, before the run)
            notes += _corpus_note(reader.meta)
            sim_id = reader.meta.env_id or _env_id_of_kind(reader.meta.env_kind)
            sim_cfg = dict(reader.meta.env_config or {})
    name = f"train-{algo}" + ("-online" if logs is None else "")
    register = register or f"recsys-{algo}"
    with tracked_run(
        experiment, run_name=name, tracking_uri=tracking_uri, tags={"recsys_command": "train", "algo": algo}
    ) as run:
        if reader is not None:
            run.log_params(
                {
                    "algo": algo,
                    "logs": str(reader.path),
                    "rows": reader.num_rows,
                    "seed": seed,
                    "workers": workers,
                    **{f"config.{k}": v for k, v in dict(config or {}).items()},
                }
            )
            if workers > 1:
                trained = train_policy_data_parallel(algo, reader, workers, config, run.tracker, seed)
            else:
                trained = train_policy_from_logs(algo, reader, config, run.tracker, seed)
        else:
            from recsys.slateq import SlateQ

            cfg = dict(config or {})
            cfg.setdefault("seed", seed)
            env = make_simulator(env_id, int(cfg.get("n_envs", 16)), seed, sim_cfg)  # type: ignore[arg-type]
            agent = SlateQ(env, cfg, tracker=run.tracker)
            agent.learn(int(steps or 50_000))
            hist = [
                {"step": float(m.step), "episode_return": m.value}
                for m in run.client.get_metric_history(run.run_id, "episode_return")
            ]
            trained = TrainedPolicy(agent.as_policy(), hist, ("episode_return",), agent.config.model_dump(mode="json"))
            run.log_params({"algo": algo, "env_id": env_id, "steps": steps, "env_config": json.dumps(sim_cfg)})
        policy = trained.policy
        run.log_dict(json.loads(json.dumps({"algo": algo, **trained.config}, default=str)), "config.json")
        if trained.history and trained.curve_keys:
            log_figure(
                run, training_curve_plot(trained.history, trained.curve_keys, f"{algo} training"), "training_curve.png"
            )
        result: dict[str, Any] = {
            "run_id": run.run_id,
            "algo": algo,
            "policy": policy.describe(),
            "notes": notes,
            "workers": workers,
        }
        if sim_id is not None:
            eval_seed = seed + ONLINE_SEED_OFFSET
            env, _ = online_simulator(reader, env_id, sim_cfg, min(eval_sessions, 500), eval_seed)
            online_res = evaluate_online(env, policy, eval_sessions, seed=eval_seed)
            metrics = online_res.metrics("online.")
            curves = {policy.describe(): online_res.step_curve}
            lp = reader.meta.logging_policy_object() if reader is not None else None
            if lp is not None:
                base = evaluate_online(env, lp, eval_sessions, seed=eval_seed)
                metrics.update(base.metrics("online.logging."))
                curves[f"logging: {lp.describe()}"] = base.step_curve
            run.log_metrics(metrics, step=0)
            log_figure(run, engagement_curve_plot(curves, f"online engagement ({sim_id})"), "engagement_curve.png")
            result["online"] = {k.replace("online.", ""): v for k, v in metrics.items()}
        with tempfile.TemporaryDirectory(prefix="recsys-train-") as tmp:
            run.log_artifact(save_policy(policy, Path(tmp) / "policy.pt", {"algo": algo}), "policy")
        if policy.needs_info:
            result["model_uri"] = None
        else:
            uri = log_recommender(policy, extra={"algo": algo})
            result["model_uri"] = uri
            result["registered"] = {"name": register, "version": register_recommender(uri, register)}
            run.set_tags({"model_uri": uri})
        return result


# ---- evaluate ---------------------------------------------------------------------------------------
def evaluate(
    model_uri: str | None = None,
    run_id: str | None = None,
    logs: str | Path | None = None,
    env_id: str | None = None,
    env_config: Mapping[str, Any] | None = None,
    online: bool = False,
    sessions: int = 500,
    n_bootstrap: int = 200,
    seed: int = 0,
    chunk_rows: int = 65_536,
    reward_model_epochs: int = 2,
    tracking_uri: str | None = None,
    experiment: str = EXPERIMENT,
    backend: str = "local",
    ray_address: str | None = None,
) -> dict[str, Any]:
    """OPE of a trained policy on ``logs`` (IPS, SNIPS, DR, PI with bootstrap CIs, beside the
    ground truth when the logs carry it) and, when a simulator is given (``env_id``, or ``online``
    for the logs' own), its online engagement. ``backend="ray"``: the estimators' per-row terms are
    computed on Ray Data (:func:`recsys.ope_partitioned.evaluate_log_files`; the reward model is still
    fitted here)."""
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
    if env_id is not None:
        check_simulator(env_id)
    if backend not in ("local", "ray"):
        raise ConfigError(f"backend must be local or ray, got '{backend}'")
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
    sim_id, sim_cfg, reader, notes = env_id, dict(env_config or {}), None, []
    if logs is not None:
        reader, notes = _open_logs(logs, chunk_rows, oracle=True, seed=seed)
        if online and env_id is None:
            reader.meta.make_env(1)  # the log records a simulator (else one clear error, before the run)
            notes += _corpus_note(reader.meta)
            sim_id = reader.meta.env_id or _env_id_of_kind(reader.meta.env_kind)
            sim_cfg = dict(reader.meta.env_config or {})
    with tracked_run(
        experiment,
        run_name="evaluate",
        tracking_uri=tracking_uri,
        tags={"recsys_command": "evaluate", "model_uri": model_uri},
        params={
            "model_uri": model_uri,
            "policy": policy.describe(),
            "logs": str(logs),
            "env_id": str(env_id),
            "sessions": sessions,
            "bootstrap": n_bootstrap,
            "seed": seed,
        },
    ) as run:
        out: dict[str, Any] = {"run_id": run.run_id, "policy": policy.describe(), "model_uri": model_uri}
        ope = None
        if reader is not None:
            out["notes"] = notes
            lay = reader.layout
            rm = fit_reward_model(reader, lay.user_dim, lay.doc_dim, epochs=reward_model_epochs, seed=seed)
            lp = reader.meta.logging_policy_object()
            if backend == "ray":
                from recsys.ope_partitioned import evaluate_log_files

                ope = evaluate_log_files(
                    policy,
                    str(reader.path),
                    reward_model=rm,
                    logging_policy=lp,
                    n_bootstrap=n_bootstrap,
                    seed=seed,
                    chunk_rows=chunk_rows,
                    backend="ray",
                    ray_address=ray_address,
                )
            else:
                ope = evaluate_on_logs(
                    policy, reader, reward_model=rm, logging_policy=lp, n_bootstrap=n_bootstrap, seed=seed
                )
            run.log_metrics(ope.metrics(), step=0)
            out["ope"] = {name: e.as_dict() for name, e in ope.estimates.items()}
            out["ground_truth"] = ope.ground_truth
            out["logging_value"] = ope.logging_value
            out["notes"] = out["notes"] + ope.notes
        online_step = None
        if sim_id is not None:
            eval_seed = seed + ONLINE_SEED_OFFSET  # the seed train --online uses: the same value for a model
            env, _ = online_simulator(reader, env_id, sim_cfg, min(sessions, 500), eval_seed)
            res = evaluate_online(env, policy, sessions, seed=eval_seed)
            run.log_metrics(res.metrics("online."), step=0)
            online_step = res.per_step
            out["online"] = res.metrics()
            log_figure(
                run,
                engagement_curve_plot({policy.describe(): res.step_curve}, f"online engagement ({sim_id})"),
                "engagement_curve.png",
            )
        if ope is not None:
            log_figure(run, ope_plot(ope, f"OPE of {policy.describe()}", online_step), "ope_estimates.png")
            run.log_dict(
                {"estimates": out["ope"], "ground_truth": ope.ground_truth, "online_step_engagement": online_step},
                "ope.json",
            )
        return out


__all__ = [
    "EXPERIMENT",
    "OFFLINE_ALGOS",
    "LOGGING_POLICIES",
    "ONLINE_SEED_OFFSET",
    "check_simulator",
    "make_simulator",
    "make_simulator_like",
    "freeze_corpus",
    "online_simulator",
    "make_logging_policy",
    "popularity_from_rollout",
    "simulate_logs",
    "ingest",
    "ingested_path",
    "TrainedPolicy",
    "check_train_config",
    "train_policy_from_logs",
    "train",
    "evaluate",
]
