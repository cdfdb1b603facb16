"""Multi-fidelity tuning: a core_rl agent reports evaluation returns while it trains, the pruner stops bad runs."""

from __future__ import annotations

import argparse
import json

import optuna
import pytest
from optuna.trial import TrialState

from autotune.cli import add_tune_parser, cmd_tune
from autotune.fidelity import STEPS_ATTR, PruningCallback, make_pruner, train_with_pruning
from core_rl.common.errors import ConfigError

optuna.logging.set_verbosity(optuna.logging.ERROR)

TINY_PPO = {"n_envs": 1, "n_steps": 32, "batch_size": 32, "n_epochs": 1}


def _ppo(seed: int):
    from core_rl.trust_region.ppo import PPO

    return PPO("CartPole-v1", {**TINY_PPO, "seed": seed})


def test_the_callback_prunes_a_bad_run_at_its_first_rung_and_never_a_good_one(seeded):
    """Real agents train under the callback; their evaluation is a fixed curve per trial kind, so
    which trial should stop is known: every bad one at its first rung, no good one."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", n_startup_trials=2))
    curves = {"good": [20.0, 40.0, 60.0, 80.0], "bad": [5.0, 6.0, 7.0, 8.0]}
    kinds = ["good", "good", "bad", "good", "bad", "good", "bad"]

    def objective(trial: optuna.Trial) -> float:
        kind = kinds[trial.number]
        trial.set_user_attr("kind", kind)
        cb = PruningCallback(trial, eval_every=64, evaluate=lambda agent: curves[kind][agent.num_timesteps // 64 - 1])
        agent = _ppo(seeded(trial.number))
        try:
            agent.learn(256, callback=cb)
        finally:
            agent.close()
        return cb.reports[-1][1]

    study.optimize(objective, n_trials=len(kinds))
    for t in study.trials:
        if t.user_attrs["kind"] == "bad":
            assert t.state == TrialState.PRUNED and list(t.intermediate_values) == [64], t
            assert t.user_attrs[STEPS_ATTR] == 64  # it stopped there: 192 steps of the 256 saved
        else:
            assert t.state == TrialState.COMPLETE and t.value == 80.0
            assert list(t.intermediate_values) == [64, 128, 192, 256] and t.user_attrs[STEPS_ATTR] == 256


def test_train_with_pruning_reports_real_evaluation_returns_at_rung_steps(seeded):
    """With n_steps·n_envs = 96 the agent's step count never hits a rung exactly; reports land on the rungs."""
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    from core_rl.trust_region.ppo import PPO

    agent = PPO("CartPole-v1", {**TINY_PPO, "n_envs": 3, "seed": seeded(0)})
    value = train_with_pruning(agent, trial, total_steps=300, eval_every=100, n_episodes=2)
    frozen = study.tell(trial, value)
    assert list(frozen.intermediate_values) == [100, 200, 300]
    assert all(v >= 8.0 for v in frozen.intermediate_values.values())  # CartPole returns, not placeholders
    assert value == frozen.intermediate_values[300] and frozen.user_attrs[STEPS_ATTR] == 384


def test_bad_settings_name_their_field():
    with pytest.raises(ConfigError, match="--pruner"):
        make_pruner("asha")
    with pytest.raises(ConfigError, match="eval_every"):
        PruningCallback(optuna.create_study().ask(), eval_every=0)
    assert isinstance(make_pruner("sha"), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)


REPORTING = """
import optuna
def objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("pruner", type(trial.study.pruner).__name__)
    bad = trial.number % 2 == 1
    for step in range(1, 5):
        trial.report((0.0 if bad else 10.0) + step, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return (0.0 if bad else 10.0) + x
"""


@pytest.mark.parametrize("pruner", ["median", "none"])
def test_the_pruner_flag_reaches_the_study(tmp_path, monkeypatch, capsys, pruner):
    (tmp_path / "reporting.py").write_text(REPORTING)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DEEPRL_HOME", str(tmp_path / "data"))
    parser = argparse.ArgumentParser(prog="deeprl")
    add_tune_parser(parser.add_subparsers(dest="command", required=True))
    argv = ["tune", "run", "--objective", "reporting:objective", "--sampler", "random", "--trials", "10"]
    argv += ["--direction", "maximize", "--seed", "0", "--no-mlflow", "--json", "--pruner", pruner]
    assert cmd_tune(parser.parse_args(argv)) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    study = optuna.load_study(study_name=result["study"], storage=result["storage"])
    expected = {"median": "MedianPruner", "none": "NopPruner"}[pruner]
    assert {t.user_attrs["pruner"] for t in study.trials} == {expected}
    pruned = [t.number for t in study.trials if t.state == TrialState.PRUNED]
    if pruner == "median":  # odd trials fall behind the median once 4 trials have finished
        assert pruned and all(n % 2 == 1 for n in pruned) and len(pruned) >= 2
    else:
        assert pruned == []
    assert result["n_trials"] == 10 and result["best_value"] >= 10.0
