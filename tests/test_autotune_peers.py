"""The peer libraries' adapters (autotune/peers.py): nevergrad NGOpt and SMAC3 as Optuna samplers."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from autotune.compare import make_sampler
from autotune.peers import available
from tests.seeding import seed

PEERS = ["ngopt", "smac"]


def _need(name: str) -> None:
    if not available(name):
        pytest.skip(f"{name} needs the optional package (pip install -e .[peers])")


def _quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    y = trial.suggest_float("y", -5.0, 5.0)
    return (x - 1.0) ** 2 + (y + 2.0) ** 2


@pytest.mark.parametrize("name", PEERS)
def test_peer_finds_the_optimum_region_of_a_quadratic(name):
    """30 trials on [-5, 5]^2: the last 10 trials concentrate near (1, -2). A uniform sampler's
    median value there is ~17 and it puts a trial below 8 with probability 0.25."""
    _need(name)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for s in (seed(0), seed(1)):
        study = optuna.create_study(sampler=make_sampler(name, s, 30))
        study.optimize(_quadratic, n_trials=30)
        tail = [t.value for t in study.trials[-10:]]
        assert np.median(tail) < 8.0, (name, s, tail)
        assert study.best_value < 3.0, (name, s, study.best_value)


def test_ngopt_meta_model_runs_under_numpy_2():
    """With a 200-trial budget on a 2-d space NGOpt runs nevergrad's meta-model, which calls float() on a
    one-element array; under NumPy 2 that raised from trial 14 on and every later trial failed. Now every trial
    completes and the meta-model's proposals reach the optimum of the quadratic."""
    _need("ngopt")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=make_sampler("ngopt", seed(0), 200))
    study.optimize(_quadratic, n_trials=40, catch=(Exception,))
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 40, states
    assert study.best_value < 1e-3


def _mixed(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    n = trial.suggest_int("n", 1, 64, log=True)
    k = trial.suggest_int("k", 0, 20, step=2)
    s = trial.suggest_float("s", 0.0, 1.0, step=0.1)
    c = trial.suggest_categorical("c", ["a", "b", None])
    value = (math.log10(lr) + 3) ** 2 + (math.log2(n) - 3) ** 2 / 4 + (k - 8) ** 2 / 16 + (s - 0.3) ** 2
    value += {"a": 1.0, "b": 0.0, None: 2.0}[c]
    if c == "b":  # a conditional parameter: exists on one branch only
        value += (trial.suggest_float("b_only", -1.0, 1.0) - 0.5) ** 2
    return value


@pytest.mark.parametrize("name", PEERS)
def test_peer_drives_every_parameter_type_and_a_conditional_branch(name):
    """After the first trial every parameter it has seen (log float, log int, stepped int and
    float, categorical incl. None, a branch-only float) comes from the library, inside its
    distribution; the study gets well below the space's typical values."""
    _need(name)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler = make_sampler(name, seed(0), 25)
    study = optuna.create_study(sampler=sampler)
    study.optimize(_mixed, n_trials=25)
    assert len(study.trials) == 25 and all(t.state.name == "COMPLETE" for t in study.trials)
    for t in study.trials:
        for p, d in t.distributions.items():
            assert d._contains(d.to_internal_repr(t.params[p])), (p, t.params[p])
    assert {"lr", "n", "k", "s", "c"} <= set(sampler._space)
    assert "b_only" in sampler._space  # the branch's parameter joined the library's space
    values = [t.value for t in study.trials]
    assert min(values) < np.median(values) / 2


def test_unknown_peer_or_missing_package_is_one_clear_error():
    from autotune.peers import make_peer_sampler
    from core_rl.common.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown peer sampler 'hyperopt'"):
        make_peer_sampler("hyperopt", 0)
