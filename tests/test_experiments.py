"""The notes' claims as experiments (issue 18): every finished experiment is registered with its
lecture, each new experiment reproduces its claim on a small budget, and ``deeprl experiment``
records a run with a plot and ``result.json`` and prints a summary table."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from core_rl.common.errors import ConfigError
from core_rl.common.tracking import MemoryTracker
from pipelines.cli import main
from pipelines.experiments import EXPERIMENTS, summary_rows
from tests.seeding import seed as shifted

REPO = Path(__file__).resolve().parents[1]


def _experiment_functions() -> set[str]:
    """``module:run_*`` for every public ``run_*`` function of a core ``experiments.py``."""
    found = set()
    for path in sorted((REPO / "core_rl").glob("*/experiments.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        found |= {
            f"{module}:{n.name}" for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("run_")
        }
    return found


# ---- the registry ---------------------------------------------------------------------------------
def test_registry_lists_every_experiment_with_its_lecture():
    assert {spec.target for spec in EXPERIMENTS.values()} == _experiment_functions()
    for spec in EXPERIMENTS.values():
        params = inspect.signature(spec.load()).parameters
        assert {"tracker", "seed"} <= set(params), spec.name
        assert spec.lecture and spec.claim and spec.lecture[0].isdigit(), spec
    assert {
        "pg_variance",
        "natural_gradient",
        "importance_weights",
        "overestimation",
        "nstep",
        "compounding_error",
        "model_error",
        "soft_optimality",
        "chain_exploration",
        "domain_randomization",
        "diayn",
        "rl2_bandits",
    } <= set(EXPERIMENTS)


def test_summary_rows_flatten_nested_results():
    rows = dict(summary_rows({"a": {"b": 0.123456, "c": [1, 2]}, "d": list(range(20)), "e": None, "f": [{"x": 1}]}))
    assert rows == {
        "a.b": "0.1235",
        "a.c": "[1, 2]",
        "d": "[0, 1, 2, ... (20 values, mean 9.5) ..., 19]",
        "e": "None",
        "f": "[1 records: x]",
    }


# ---- the new experiments against their claims ---------------------------------------------------
def test_pg_variance_reward_to_go_and_baselines_cut_the_variance_of_unbiased_estimators():
    from core_rl.policy_gradient.experiments import ESTIMATORS, run_pg_variance

    tracker = MemoryTracker()
    out = run_pg_variance(tracker, seed=shifted(0), n_batches=80)
    for advantage, baseline in ESTIMATORS:
        row = out[f"{advantage}/{baseline}"]
        assert row["bias_z"] < 8.0 and row["relative_bias"] < 0.25, (advantage, baseline, row)
    plain = out["return/none"]["trace_cov"]
    assert out["reward_to_go/none"]["trace_cov"] < 0.8 * plain, out
    for advantage in ("return", "reward_to_go"):
        for baseline in ("mean", "optimal"):
            assert out[f"{advantage}/{baseline}"]["trace_cov"] < 0.4 * out[f"{advantage}/none"]["trace_cov"], out
    assert "pg_variance.png" in tracker.artifacts


def test_importance_weight_variance_matches_the_exact_value_and_grows_with_the_horizon():
    from core_rl.policy_gradient.experiments import run_importance_weight_variance

    out = run_importance_weight_variance(MemoryTracker(), seed=shifted(0), horizon=12, n_trajectories=20_000)
    exact = np.array(out["exact_variance"])
    assert np.all(np.diff(exact) > 0) and exact[-1] > 8 * exact[0]
    assert np.all(np.abs(out["z_score"]) < 4.5), out["z_score"]  # sampled E[w²] within sampling error
    assert np.all(np.abs(np.array(out["sampled_mean_weight"]) - 1.0) < 0.1)  # E[w] = 1
    # a larger policy shift makes it grow faster
    far = run_importance_weight_variance(MemoryTracker(), seed=shifted(0), horizon=12, n_trajectories=200, shift=1.0)
    assert far["exact_growth_rate_per_step"] > 2 * out["exact_growth_rate_per_step"]


def test_importance_weight_moments_match_the_closed_form_for_state_independent_policies():
    from core_rl.policy_gradient.experiments import importance_weight_moments, random_mdp

    mdp = random_mdp(4, 3, 10, mdp_seed=shifted(5))
    rng = np.random.default_rng(shifted(5))
    pi, beta = rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3))
    chi2 = float((pi**2 / beta).sum() - 1.0)
    moments = importance_weight_moments(mdp, np.tile(pi, (4, 1)), np.tile(beta, (4, 1)), 10)
    np.testing.assert_allclose(moments - 1.0, (1.0 + chi2) ** np.arange(1, 11) - 1.0, rtol=1e-10)


def test_natural_gradient_is_invariant_to_reparametrization_and_vanilla_is_not():
    from core_rl.trust_region.experiments import run_natural_gradient_invariance

    tracker = MemoryTracker()
    out = run_natural_gradient_invariance(tracker, seed=shifted(0), kappas=(1.0, 10.0, 100.0))
    assert max(out["natural_kl"]) < 1e-10, out["natural_kl"]
    np.testing.assert_allclose(out["natural_gain"], out["natural_gain_theta"], rtol=1e-8)
    assert out["vanilla_kl"][0] < 1e-10  # an orthogonal M (κ = 1) keeps the vanilla gradient too
    assert min(out["vanilla_kl"][1:]) > 1e-4, out["vanilla_kl"]  # ~ the step's own KL of 0.01
    assert out["natural_gain_theta"] > 0 and "natural_gradient_invariance.png" in tracker.artifacts


def test_soft_optimality_backward_messages_equal_soft_value_iteration():
    from core_rl.inference.experiments import run_soft_optimality

    temps = (0.02, 0.2, 1.0, 4.0)
    out = run_soft_optimality(MemoryTracker(), seed=shifted(0), temperatures=temps, n_states=3, n_actions=3, horizon=4)
    assert out["max_message_error"] < 1e-8 and out["max_policy_error"] < 1e-8, out
    # the expected backup tends to hard value iteration as α → 0; the exact backup is optimistic
    gap = np.array(out["expected_minus_hard_v"])
    assert np.all(np.diff(gap) > 0) and np.all(gap <= np.array(temps) * 4 * np.log(3) + 1e-12), gap
    assert min(out["optimism"]) > 0, out["optimism"]


def test_soft_optimality_rejects_too_many_futures():
    from core_rl.inference.experiments import run_soft_optimality

    with pytest.raises(ConfigError, match="too many futures"):
        run_soft_optimality(horizon=12)


def test_model_error_compounds_with_the_horizon_and_the_ensemble_knows_where():
    from core_rl.model_based.experiments import run_model_error

    tracker = MemoryTracker()
    out = run_model_error(
        tracker,
        seed=shifted(0),
        n_train_episodes=5,
        horizon=20,
        n_test=60,
        hidden=64,
        epochs=30,
        n_plan=4,
        plan_horizon=5,
    )
    for name in ("single", "gaussian", "ensemble_mean", "det_ensemble_mean", "ensemble_ts"):
        curve = np.array(out[name]["curve"])
        assert curve[-1] > 5 * curve[0], (name, curve)  # compounding
    assert out["uncertainty_error_correlation"] > 0.3, out["uncertainty_error_correlation"]
    # planning in the true dynamics predicts exactly what the plan then earns
    exact = out["planning"]["true_dynamics"]
    assert exact["exploitation"] == pytest.approx(0.0, abs=1e-4) and exact["true_return"] < 0
    assert "model_error.png" in tracker.artifacts


@pytest.mark.parametrize(
    ("target", "kwargs", "field"),
    [
        ("core_rl.policy_gradient.experiments:run_pg_variance", {"n_batches": 5}, "n_batches"),
        ("core_rl.policy_gradient.experiments:run_pg_variance", {"n_actions": 1}, "n_actions"),
        ("core_rl.policy_gradient.experiments:run_importance_weight_variance", {"horizon": 1}, "horizon"),
        ("core_rl.trust_region.experiments:run_natural_gradient_invariance", {"kappas": [0.5]}, "kappas"),
        ("core_rl.trust_region.experiments:run_natural_gradient_invariance", {"max_kl": 0.0}, "max_kl"),
        ("core_rl.model_based.experiments:run_model_error", {"n_test": 5}, "n_test"),
        ("core_rl.inference.experiments:run_soft_optimality", {"temperatures": [0.001]}, "temperatures"),
    ],
)
def test_new_experiments_reject_bad_parameters_with_one_clear_error(target, kwargs, field):
    module, name = target.split(":")
    fn = getattr(__import__(module, fromlist=[name]), name)
    with pytest.raises(ConfigError, match=field):
        fn(**kwargs)


def test_chain_exploration_takes_the_cli_seed(monkeypatch):
    import core_rl.exploration.experiments as chain

    used: list[int] = []

    class Stub:
        def close(self) -> None:
            pass

    monkeypatch.setattr(chain, "method_agent", lambda method, env, seed, obs, overrides: used.append(seed) or Stub())
    monkeypatch.setattr(chain, "steps_to_goal", lambda agent, budget, eval_every, goal_return: None)
    monkeypatch.setattr(chain, "_plot", lambda *args: None)
    chain.run_chain_exploration(methods=("epsilon_greedy",), seed=7)
    assert used == [7, 8, 9]
    used.clear()
    chain.run_chain_exploration(methods=("epsilon_greedy",), seeds=(4, 2))
    assert used == [4, 2]


# ---- the CLI ---------------------------------------------------------------------------------------
def test_experiment_cli_records_the_run_and_prints_a_summary_table(capsys, tracking_uri):
    code = main(["experiment", "--list"])
    listing = capsys.readouterr().out
    assert code == 0
    for spec in EXPERIMENTS.values():
        assert spec.name in listing and spec.lecture in listing

    argv = ["experiment", "soft_optimality", "--seed", str(shifted(1)), "--set", "horizon=3", "temperatures=[0.1,1.0]"]
    code = main([*argv, "--tracking-uri", tracking_uri])
    out = capsys.readouterr()
    assert code == 0, out.err
    run_id = out.out.splitlines()[-1].split(" run ")[1].split()[0]
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["horizon"] == "3"
    assert run.data.tags["experiment"] == "soft_optimality"
    arts = {a.path for a in client.list_artifacts(run_id)}
    assert "result.json" in arts
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/soft_optimality.png"]
    result = json.loads(Path(client.download_artifacts(run_id, "result.json")).read_text())
    assert result["temperatures"] == [0.1, 1.0] and result["max_message_error"] < 1e-8
    # the table: header, run id and one row per number of result.json
    table_lines = out.out.splitlines()[:-1]  # the table on stdout, then the run line
    assert "10/10 control as inference" in "\n".join(table_lines) and run_id in "\n".join(table_lines)
    table = dict(line.split(None, 1) for line in table_lines[4:] if line.strip())
    assert float(table["max_message_error"]) == pytest.approx(result["max_message_error"], rel=1e-3, abs=1e-30)
    assert set(table) == {k for k, _ in summary_rows(result)}

    code = main(["experiment", "soft_optimality", "--set", "horizon=0", "--tracking-uri", tracking_uri])
    err = capsys.readouterr().err
    assert code == 2 and "horizon" in err and "Traceback" not in err
