"""Other HPO libraries as Optuna samplers: nevergrad's NGOpt and SMAC3, through their ask/tell APIs.

Both adapters are :class:`AskTellSampler` s, so a comparison runs every library through the same
``study.optimize`` loop, the same objective and the same search space:

* **Search space** — the union of the distributions seen in the study's finished trials (Optuna is
  define-by-run, so the space is learned, as ``CmaEsSampler`` and ``GPSampler`` learn the
  intersection). The first trial, and a parameter the study has never seen (a new branch of a
  conditional space), is sampled by a seeded :class:`~optuna.samplers.RandomSampler`.
* **Types** — a float is a bounded float (log-scaled when ``log=True``), an int a bounded integer
  (log-scaled when ``log=True``), a float or int with ``step`` an integer index into its grid, a
  categorical an unordered choice (nevergrad ``Choice``, ConfigSpace ``Categorical``).
* **Conditional spaces** — neither library is told the tree: it optimizes over the union of all
  branches' parameters, asks a value for every one of them, and the objective uses those of the
  branch it takes (the others are inert). When the union grows, the library is rebuilt on the new
  space and every finished trial is told again (a parameter a trial did not take gets a random
  value: the objective did not read it). ConfigSpace can express conditions, but the tree is not
  known before the objective runs; this is the "flat" treatment of conditional spaces.
* **Failed trials** are told the worst loss seen so far (nothing when none is finite yet).
* **Start** — the random first trial is not told to the library (it starts from its own initial
  design, e.g. the centre for NGOpt's COBYLA, SMAC's Sobol points); a point the study has already
  evaluated is told its known value at once and the library asked again (no trial is spent twice).

``nevergrad`` and ``smac`` are optional (``pip install -e .[peers]``); :func:`available` says which
are installed.
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from core_rl.common.errors import ConfigError

PEER_MODULES = {"ngopt": "nevergrad", "smac": "smac", "smac-bb": "smac"}


def available(name: str) -> bool:
    """Whether the library behind peer sampler ``name`` is installed."""
    return importlib.util.find_spec(PEER_MODULES[name]) is not None


def _grid(dist: BaseDistribution) -> int:
    """Number of grid values of a stepped float or a linear int with step > 1 (0 when not a grid)."""
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        return int(round((dist.high - dist.low) / dist.step)) + 1
    if isinstance(dist, IntDistribution) and dist.step != 1:
        return (dist.high - dist.low) // dist.step + 1
    return 0


def _to_internal(dist: BaseDistribution, value: Any) -> Any:
    """An Optuna value -> the library's value (grid index, choice index or the number)."""
    if isinstance(dist, CategoricalDistribution):
        return int(dist.to_internal_repr(value))
    if _grid(dist):
        return int(round((value - dist.low) / dist.step))  # type: ignore[attr-defined]
    return int(value) if isinstance(dist, IntDistribution) else float(value)


def _to_external(dist: BaseDistribution, value: Any) -> Any:
    """The library's value -> a value inside ``dist``."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(value)]
    if (k := _grid(dist)) > 0:
        idx = min(max(int(round(float(value))), 0), k - 1)
        v = dist.low + idx * dist.step  # type: ignore[attr-defined]
        v = min(max(v, dist.low), dist.high)  # type: ignore[attr-defined]
        return int(v) if isinstance(dist, IntDistribution) else float(v)
    if isinstance(dist, IntDistribution):
        return int(min(max(int(round(float(value))), dist.low), dist.high))
    return float(min(max(float(value), dist.low), dist.high))  # type: ignore[attr-defined]


def _constant(dist: BaseDistribution) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return len(dist.choices) == 1
    return dist.low == dist.high  # type: ignore[attr-defined]


class AskTellSampler(BaseSampler):
    """An Optuna sampler driving an ask/tell optimizer over the union of the study's parameters.

    Subclasses build the library's optimizer for a space (``_build``), ask one point as
    ``{name: internal value}`` (``_ask``) and tell a point and its loss (``_tell``; ``asked`` is
    the library's own handle when the point came from ``_ask``, ``None`` when it is replayed).
    """

    def __init__(self, seed: int | None = None, n_trials_hint: int = 100):
        if n_trials_hint <= 0:
            raise ConfigError(f"n_trials_hint must be positive, got {n_trials_hint}")
        self.seed = seed
        self.n_trials_hint = n_trials_hint
        self._rng = np.random.default_rng(seed)
        self._random = RandomSampler(seed=seed)
        self._space: dict[str, BaseDistribution] = {}
        self._told: set[int] = set()  # trial numbers the current optimizer has been told
        self._pending: dict[int, tuple[dict[str, Any], Any]] = {}  # trial number -> (point, handle)
        self._opt: Any = None

    # ---- the library --------------------------------------------------------------------------
    def _build(self, space: dict[str, BaseDistribution]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _ask(self) -> tuple[dict[str, Any], Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _tell(self, point: dict[str, Any], asked: Any, loss: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- Optuna's sampler interface -----------------------------------------------------------
    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        space: dict[str, BaseDistribution] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            for name, dist in t.distributions.items():
                space.setdefault(name, dist)
        return {k: v for k, v in sorted(space.items()) if not _constant(v)}

    def _losses(self, study: Study) -> list[tuple[FrozenTrial, float]]:
        sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
        out = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            v = t.value if t.state == TrialState.COMPLETE else None
            out.append((t, sign * float(v) if v is not None and math.isfinite(v) else math.nan))
        finite = [loss for _, loss in out if math.isfinite(loss)]
        worst = max(finite) if finite else math.nan
        return [(t, loss if math.isfinite(loss) else worst) for t, loss in out]

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        first_build = self._opt is None
        if search_space != self._space or self._opt is None:
            self._space = dict(search_space)
            self._opt = self._build(self._space)
            self._told = set()
        known: dict[tuple[Any, ...], float] = {}
        for t, loss in self._losses(study):  # replay what this optimizer has not been told
            if math.isfinite(loss):
                known[self._key(t.params)] = loss
            if t.number in self._told or not math.isfinite(loss):
                continue
            self._told.add(t.number)
            pending = self._pending.pop(t.number, None)
            if pending is not None and set(pending[0]) == set(self._space):
                self._tell(pending[0], pending[1], loss)
                continue
            if first_build and pending is None:
                continue  # the random first trial(s): the library starts from its own initial points
            point = {}
            for name, dist in self._space.items():
                value = t.params[name] if name in t.params else self._random_value(dist)
                point[name] = _to_internal(dist, value)
            self._tell(point, None, loss)
        for _ in range(20):  # a point the study already evaluated is told its value, and asked again
            point, handle = self._ask()
            params = {name: _to_external(dist, point[name]) for name, dist in self._space.items()}
            loss = known.get(self._key(params))
            if loss is None:
                break
            self._tell(point, handle, loss)
        self._pending[trial.number] = (point, handle)
        return params

    def _key(self, params: dict[str, Any]) -> tuple[Any, ...]:
        return tuple((name, repr(params.get(name))) for name in self._space)

    def _random_value(self, dist: BaseDistribution) -> Any:
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[int(self._rng.integers(len(dist.choices)))]
        if isinstance(dist, IntDistribution):
            return int(self._rng.integers(dist.low, dist.high + 1))
        return float(self._rng.uniform(dist.low, dist.high))  # type: ignore[attr-defined]

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        # told lazily at the next sample_relative (which knows the worst loss for failed trials)
        return None


# ---- nevergrad --------------------------------------------------------------------------------------
def _numpy2_metamodel_float() -> None:
    """nevergrad 1.0.12's meta-model (``MetaModel``, which NGOpt picks e.g. for d = 2 at a 200-trial budget)
    calls ``float()`` on the one-element array its scikit-learn surrogate predicts. NumPy 2 refuses that
    (``TypeError: only 0-dimensional arrays can be converted to Python scalars``), so from the trial where the
    meta-model starts, every ``ask`` raised and every later trial of the study failed (measured: from trial 14
    on, on all 72 BBOB d = 2 studies of 200 trials). This gives that one module a ``float`` that takes a
    one-element array as NumPy 1 did; nothing else changes, and a nevergrad that no longer needs it is left as it is."""
    import builtins

    from nevergrad.optimization import metamodel

    if "float" in vars(metamodel):
        return

    def one_element_float(x: Any = 0.0) -> float:
        if isinstance(x, np.ndarray) and x.size == 1:
            return builtins.float(x.reshape(()))
        return builtins.float(x)

    metamodel.float = one_element_float  # type: ignore[attr-defined]


class NevergradSampler(AskTellSampler):
    """nevergrad's ``NGOpt`` (or any optimizer of its registry) with the study's budget.

    NGOpt picks its algorithm from the budget, the dimension and the variable types (e.g. a
    meta-model on top of CMA-ES or a DE/discrete (1+1) mix for categoricals).
    """

    def __init__(self, seed: int | None = None, n_trials_hint: int = 100, optimizer: str = "NGOpt"):
        super().__init__(seed, n_trials_hint)
        import nevergrad as ng

        if optimizer not in ng.optimizers.registry:
            raise ConfigError(f"unknown nevergrad optimizer '{optimizer}'")
        self.optimizer = optimizer
        if int(np.__version__.split(".")[0]) >= 2:
            _numpy2_metamodel_float()

    def _build(self, space: dict[str, BaseDistribution]) -> Any:
        import nevergrad as ng

        params: dict[str, Any] = {}
        for name, d in space.items():
            if isinstance(d, CategoricalDistribution):
                params[name] = ng.p.Choice(list(range(len(d.choices))))
            elif (k := _grid(d)) > 0:
                params[name] = ng.p.Scalar(lower=0, upper=k - 1).set_integer_casting()
            elif isinstance(d, IntDistribution):
                lo, hi = float(d.low), float(d.high)
                p = ng.p.Log(lower=lo, upper=hi) if d.log else ng.p.Scalar(lower=lo, upper=hi)
                params[name] = p.set_integer_casting()
            else:
                params[name] = ng.p.Log(lower=d.low, upper=d.high) if d.log else ng.p.Scalar(lower=d.low, upper=d.high)  # type: ignore[attr-defined]
        parametrization = ng.p.Dict(**params)
        seed = int(self._rng.integers(2**31 - 1))
        parametrization.random_state = np.random.RandomState(seed)
        return ng.optimizers.registry[self.optimizer](parametrization, budget=self.n_trials_hint, num_workers=1)

    def _ask(self) -> tuple[dict[str, Any], Any]:
        with warnings.catch_warnings():  # scipy's COBYLA inside NGOpt warns about its own settings
            warnings.simplefilter("ignore")
            cand = self._opt.ask()
        return dict(cand.value), cand

    def _tell(self, point: dict[str, Any], asked: Any, loss: float) -> None:
        import nevergrad as ng

        if asked is None:
            asked = self._opt.parametrization.spawn_child(new_value=point)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._opt.tell(asked, loss)
        except ng.errors.TellNotAskedNotSupportedError:
            pass  # an optimizer that cannot learn from points it did not ask: the point is lost


# ---- SMAC3 ------------------------------------------------------------------------------------------
class SMACSampler(AskTellSampler):
    """SMAC3's ``HyperparameterOptimizationFacade`` (random forest, ``facade="hpo"``) or its
    ``BlackBoxFacade`` (Gaussian process, ``facade="bb"``), deterministic, with the study's budget."""

    def __init__(self, seed: int | None = None, n_trials_hint: int = 100, facade: str = "hpo"):
        super().__init__(seed, n_trials_hint)
        if facade not in ("hpo", "bb"):
            raise ConfigError(f"SMAC facade must be 'hpo' or 'bb', got '{facade}'")
        self.facade = facade
        self._tmp = tempfile.TemporaryDirectory(prefix="smac-")
        self._builds = 0

    def _build(self, space: dict[str, BaseDistribution]) -> Any:
        import logging

        from ConfigSpace import Categorical, ConfigurationSpace, Float, Integer
        from smac import BlackBoxFacade, HyperparameterOptimizationFacade, Scenario

        logging.getLogger("smac").setLevel(logging.ERROR)
        cs = ConfigurationSpace(seed=int(self._rng.integers(2**31 - 1)))
        for name, d in space.items():
            if isinstance(d, CategoricalDistribution):
                cs.add(Categorical(name, [str(i) for i in range(len(d.choices))]))
            elif (k := _grid(d)) > 0:
                cs.add(Integer(name, (0, k - 1)))
            elif isinstance(d, IntDistribution):
                cs.add(Integer(name, (d.low, d.high), log=d.log))
            else:
                cs.add(Float(name, (d.low, d.high), log=d.log))  # type: ignore[attr-defined]
        self._builds += 1
        scenario = Scenario(
            cs,
            deterministic=True,
            n_trials=self.n_trials_hint + 1000,  # the study stops it, not SMAC
            seed=int(self._rng.integers(2**31 - 1)),
            output_directory=f"{self._tmp.name}/{self._builds}",
        )
        facade = HyperparameterOptimizationFacade if self.facade == "hpo" else BlackBoxFacade
        initial = facade.get_initial_design(scenario, n_configs=min(10, max(2, self.n_trials_hint // 4)))
        return facade(scenario, lambda config, seed=0: 0.0, initial_design=initial, overwrite=True, logging_level=40)

    def _ask(self) -> tuple[dict[str, Any], Any]:
        info = self._opt.ask()
        cfg = dict(info.config)
        point = {}
        for name, d in self._space.items():
            v = cfg[name]
            point[name] = int(v) if isinstance(d, CategoricalDistribution) else v
        return point, info

    def _tell(self, point: dict[str, Any], asked: Any, loss: float) -> None:
        from ConfigSpace import Configuration
        from smac.runhistory import TrialInfo, TrialValue

        if asked is None:
            values = {
                name: str(v) if isinstance(self._space[name], CategoricalDistribution) else v
                for name, v in point.items()
            }
            asked = TrialInfo(Configuration(self._opt.scenario.configspace, values=values), seed=0)
        self._opt.tell(asked, TrialValue(cost=float(loss)), save=False)


def make_peer_sampler(name: str, seed: int, n_trials: int | None = None) -> BaseSampler:
    """``ngopt``, ``smac`` (SMAC3 random-forest facade) or ``smac-bb`` (SMAC3 GP facade)."""
    if name not in PEER_MODULES:
        raise ConfigError(f"unknown peer sampler '{name}'; known: {', '.join(PEER_MODULES)}")
    if not available(name):
        raise ConfigError(f"sampler '{name}' needs the '{PEER_MODULES[name]}' package: pip install -e .[peers]")
    hint = n_trials or 100
    if name == "ngopt":
        return NevergradSampler(seed=seed, n_trials_hint=hint)
    return SMACSampler(seed=seed, n_trials_hint=hint, facade="hpo" if name == "smac" else "bb")
