"""Every algorithm reachable from the command line (issue 18): the programs — tabular solvers, IRL,
imitation from a fixed expert, fitted Q iteration, planners — run with ``deeprl train`` in one MLflow
run each, with their metrics and artifacts; bad input gets one clear error and creates no run."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from core_rl.registry import ALGORITHMS
from core_rl.tabular import TabularMDP, policy_evaluation, value_iteration
from pipelines.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def train_json(capsys, tracking_uri, algo, env, *extra):
    code, out, err = run_cli(
        capsys, "train", "--algo", algo, "--env", env, "--json", "--tracking-uri", tracking_uri, *extra
    )
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def finished_run(tracking_uri, run_id):
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    return client, run


def download_json(client, run_id, name, tmp_path):
    local = client.download_artifacts(run_id, name, str(tmp_path))
    with open(local) as f:
        return json.load(f)


def run_count(tracking_uri) -> int:
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.tracking.MlflowClient()
    return sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())


def test_algos_lists_the_programs_with_their_lecture(capsys):
    code, out, _ = run_cli(capsys, "algos", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    for name in ("value_iteration", "policy_iteration", "q_iteration", "maxent_irl", "max_margin_irl"):
        assert rows[name]["kind"] == "program"
        assert rows[name]["topic"].split()[0].count("/") == 1  # "9/12 ...": the lecture date first
        assert ALGORITHMS[name].cls.name == name
    assert rows["ppo"]["kind"] == "agent"
    code, out, _ = run_cli(capsys, "algos")
    assert any(line.split()[:2] == ["maxent_irl", "program"] for line in out.splitlines())


@pytest.mark.parametrize("algo", ["value_iteration", "policy_iteration", "q_iteration"])
def test_tabular_solvers_on_frozenlake_record_the_exact_solution(capsys, tracking_uri, tmp_path, algo):
    result = train_json(capsys, tracking_uri, algo, "FrozenLake-v1", "--set", "eval_episodes=200")
    client, run = finished_run(tracking_uri, result["run_id"])
    assert run.data.tags["algo"] == algo and run.data.tags["kind"] == "program"
    assert run.data.params["gamma"] == "0.99"
    m = run.data.metrics
    assert m["converged"] == 1.0 and m["residual"] <= 1e-10
    # the recorded solution is the exact one, and its greedy policy succeeds in the real env
    mdp = TabularMDP.from_gym("FrozenLake-v1", gamma=0.99)
    exact = value_iteration(mdp)
    solution = download_json(client, result["run_id"], "solution.json", tmp_path)
    np.testing.assert_allclose(solution["V"], exact.V, atol=1e-8)
    assert m["start_value"] == pytest.approx(float(mdp.mu0 @ exact.V), abs=1e-8)
    # FrozenLake's optimum under the 100-step limit succeeds ~74% of the time; uniform ~1.5%
    assert 0.6 <= m["mean_return"] == result["mean_return"] <= 0.9
    assert {"config.json", "solution.json"} <= {a.path for a in client.list_artifacts(result["run_id"])}


def test_value_iteration_on_a_gridworld_layout_from_the_command_line(capsys, tracking_uri, tmp_path):
    result = train_json(
        capsys, tracking_uri, "value_iteration", "gridworld", "--set", "layout=S..#/.#.G/...H", "gamma=0.9"
    )
    client, run = finished_run(tracking_uri, result["run_id"])
    policy = client.download_artifacts(result["run_id"], "policy.txt", str(tmp_path))
    assert open(policy).read().splitlines() == ["→→↓#", "↓#→G", "→→↑H"]
    assert run.data.metrics["start_value"] == pytest.approx(0.9**3)  # 4 steps to G, reward on entry
    assert run.data.metrics["mean_return"] == pytest.approx(1.0)  # deterministic: always reaches G


def test_maxent_irl_run_records_a_reward_that_reproduces_the_expert(capsys, tracking_uri, tmp_path):
    result = train_json(capsys, tracking_uri, "maxent_irl", "FrozenLake-v1", "--steps", "150")
    client, run = finished_run(tracking_uri, result["run_id"])
    m = run.data.metrics
    assert run.data.params["iterations"] == "150"
    history = client.get_metric_history(result["run_id"], "feature_gap")
    assert len(history) == 150
    gaps = [h.value for h in sorted(history, key=lambda h: h.step)]
    assert gaps[-1] < 0.1 * gaps[0]
    assert m["return_ratio"] >= 0.9
    payload = download_json(client, result["run_id"], "reward.json", tmp_path)
    mdp = TabularMDP.from_gym("FrozenLake-v1", gamma=0.99)
    learned = mdp.replace(r=np.array(payload["reward"]))  # the artifact is a valid MDP reward
    policy = value_iteration(learned).policy
    assert float(mdp.mu0 @ policy_evaluation(mdp, policy).V) == pytest.approx(m["learned_start_value"])
    assert {"reward.npy", "reward.json", "config.json"} <= {a.path for a in client.list_artifacts(result["run_id"])}


def test_max_margin_irl_from_demonstrations_on_a_gridworld(capsys, tracking_uri, tmp_path):
    result = train_json(
        capsys,
        tracking_uri,
        "max_margin_irl",
        "gridworld:bridge",
        "--set",
        "features=cell_type",
        "slip=0.2",
        "gamma=0.95",
        "n_demos=300",
        "demo_length=40",
    )
    client, run = finished_run(tracking_uri, result["run_id"])
    assert run.data.metrics["return_ratio"] >= 0.9
    payload = download_json(client, result["run_id"], "reward.json", tmp_path)
    w = payload["weights"]
    assert w[1] > w[2]  # the goal is worth more than a hole
    assert "learned_policy.txt" in {a.path for a in client.list_artifacts(result["run_id"])}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algo", "value_iteration", "--env", "CartPole-v1"], "no tabular model"),
        (["--algo", "value_iteration", "--env", "gridworld:nope"], "gridworld field 'layout'"),
        (["--algo", "value_iteration", "--env", "gridworld"], "needs a layout"),
        (["--algo", "q_iteration", "--env", "FrozenLake-v1", "--set", "tol=-1"], "config field 'tol'"),
        (["--algo", "maxent_irl", "--env", "FrozenLake-v1", "--set", "features=cell_type"], "needs --env gridworld"),
        (["--algo", "maxent_irl", "--env", "FrozenLake-v1", "--set", "lrr=1"], "config field 'lrr'"),
        (["--algo", "policy_iteration", "--env", "FrozenLake-v1", "--steps", "0"], "--steps must be positive"),
        (["--algo", "value_iteration", "--env", "FrozenLake-v1", "--resume", "abc"], "--resume is for agents"),
    ],
)
def test_bad_program_input_gets_one_clear_error_and_no_run(capsys, tracking_uri, argv, message):
    code, _, err = run_cli(capsys, "train", *argv, "--tracking-uri", tracking_uri)
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert "Traceback" not in err
    assert run_count(tracking_uri) == 0


# ---- imitation: bc and dagger with experts from a script, a trained run or a demonstrations file ----


def test_bc_from_a_demonstrations_file_and_dagger_with_the_scripted_expert(capsys, tracking_uri, tmp_path):
    from core_rl.imitation import cartpole_expert, collect_demonstrations

    demos = tmp_path / "expert.parquet"
    collect_demonstrations(cartpole_expert, "CartPole-v1", n_episodes=4, seed=0, path=demos)
    result = train_json(
        capsys,
        tracking_uri,
        "bc",
        "CartPole-v1",
        "--steps",
        "20",
        "--set",
        f"demonstrations={demos}",
        "eval_episodes=5",
    )
    client, run = finished_run(tracking_uri, result["run_id"])
    assert run.data.params["n_epochs"] == "20" and run.data.params["demonstrations"] == str(demos)
    assert len(client.get_metric_history(result["run_id"], "bc_loss")) == 20
    assert run.data.metrics["n_samples"] == 4 * 500  # the expert balances every episode to the limit
    assert result["mean_return"] >= 450  # the scripted expert scores 500; a random policy ~22
    arts = {a.path for a in client.list_artifacts(result["run_id"])}
    assert {"policy.pt", "demonstrations.parquet", "config.json"} <= arts
    policy = torch_load(client.download_artifacts(result["run_id"], "policy.pt", str(tmp_path)))
    assert policy["algo"] == "bc" and policy["state_dict"]

    result = train_json(
        capsys,
        tracking_uri,
        "dagger",
        "CartPole-v1",
        "--steps",
        "2",
        "--set",
        "expert=scripted",
        "initial_episodes=1",
        "labels_per_iteration=300",
        "n_epochs=10",
        "eval_episodes=5",
    )
    client, run = finished_run(tracking_uri, result["run_id"])
    assert len(client.get_metric_history(result["run_id"], "dagger_disagreement")) == 2
    assert run.data.metrics["dagger_expert_labels"] == 500 + 2 * 300
    assert run.data.metrics["expert_return"] == 500.0
    assert result["mean_return"] >= 450


def torch_load(path):
    import torch

    return torch.load(path, weights_only=False)


def test_bc_with_the_expert_of_a_trained_run(capsys, tracking_uri):
    """``expert=run:RUN_ID``: the agent trained in another run (its checkpoint) labels the data;
    the clone must act like it (same return up to the evaluation's noise)."""
    code, out, err = run_cli(
        capsys,
        "train",
        "--algo",
        "dqn",
        "--env",
        "CartPole-v1",
        "--steps",
        "500",
        "--json",
        "--tracking-uri",
        tracking_uri,
        "--set",
        "learning_starts=100",
    )
    assert code == 0, err
    trained = json.loads(out.strip().splitlines()[-1])
    expert_run = trained["run_id"]
    result = train_json(
        capsys,
        tracking_uri,
        "bc",
        "CartPole-v1",
        "--steps",
        "30",
        "--set",
        f"expert=run:{expert_run}",
        "n_demo_episodes=3",
        "eval_episodes=5",
    )
    _, run = finished_run(tracking_uri, result["run_id"])
    assert run.data.params["expert"] == f"run:{expert_run}"
    expert_return = run.data.metrics["expert_return"]
    assert abs(run.data.metrics["mean_return"] - expert_return) <= 0.25 * expert_return + 5
    # the same agent as a logged model (models:/...) is the same expert
    by_model = train_json(
        capsys,
        tracking_uri,
        "bc",
        "CartPole-v1",
        "--steps",
        "2",
        "--set",
        f"expert={trained['model_uri']}",
        "n_demo_episodes=3",
        "eval_episodes=5",
    )
    _, run = finished_run(tracking_uri, by_model["run_id"])
    assert run.data.metrics["expert_return"] == expert_return


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algo", "bc", "--env", "CartPole-v1"], "needs an expert"),
        (["--algo", "dagger", "--env", "CartPole-v1", "--set", "demonstrations=x.parquet"], "no file 'x.parquet'"),
        (["--algo", "bc", "--env", "Pendulum-v1", "--set", "expert=scripted"], "no scripted expert for Pendulum-v1"),
        (["--algo", "dagger", "--env", "CartPole-v1", "--set", "expert=run:0123456789abcdef"], "has no checkpoint"),
        (["--algo", "bc", "--env", "CartPole-v1", "--set", "expert=scripted", "n_epochs=0"], "'n_epochs'"),
    ],
)
def test_bad_imitation_input_gets_one_clear_error_and_no_run(capsys, tracking_uri, argv, message):
    code, _, err = run_cli(capsys, "train", *argv, "--tracking-uri", tracking_uri)
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert run_count(tracking_uri) == 0


# ---- fitted Q iteration -------------------------------------------------------------------------------


def test_fitted_q_on_random_policy_data_recovers_q_star(capsys, tracking_uri, tmp_path):
    result = train_json(
        capsys,
        tracking_uri,
        "fitted_q",
        "FrozenLake-v1",
        "--steps",
        "300",
        "--set",
        'env_kwargs={"is_slippery": false}',
        "gamma=0.9",
        "n_transitions=4000",
        "tol=1e-9",
        "eval_episodes=10",
    )
    client, run = finished_run(tracking_uri, result["run_id"])
    m = run.data.metrics
    assert m["converged"] == 1.0 and m["q_star_error"] < 1e-6  # exact on the visited pairs
    assert result["mean_return"] == 1.0  # the greedy policy of Q* reaches the goal every time
    assert len(client.get_metric_history(result["run_id"], "fqi_bellman_error")) == m["iterations"]
    table = download_json(client, result["run_id"], "q_table.json", tmp_path)
    assert np.array(table["Q"]).shape == (16, 4)
    assert "q_function.pt" in {a.path for a in client.list_artifacts(result["run_id"])}
    code, _, err = run_cli(
        capsys, "train", "--algo", "fitted_q", "--env", "Pendulum-v1", "--tracking-uri", tracking_uri
    )
    assert code == 2 and "Discrete action space" in err


# ---- planners as controllers ----------------------------------------------------------------------


def pendulum_zero_torque_return(steps: int, seed: int = 0) -> float:
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    env.reset(seed=seed)
    return float(sum(env.step(np.zeros(1, dtype=np.float32))[1] for _ in range(steps)))


@pytest.mark.parametrize("algo", ["random_shooting", "cem", "mppi"])
def test_shooting_planners_control_pendulum_in_its_true_model(capsys, tracking_uri, tmp_path, algo):
    result = train_json(
        capsys,
        tracking_uri,
        algo,
        "Pendulum-v1",
        "--steps",
        "60",
        "--set",
        "horizon=15",
        "n_candidates=150",
        "n_iterations=3",
    )
    client, run = finished_run(tracking_uri, result["run_id"])
    assert run.data.params["max_steps"] == "60" and run.data.params["horizon"] == "15"
    assert run.data.metrics["mean_length"] == 60
    # planning beats doing nothing from the same start (the pendulum would keep swinging down)
    assert result["mean_return"] > pendulum_zero_torque_return(60) + 50
    episodes = download_json(client, result["run_id"], "episodes.json", tmp_path)
    assert len(episodes["actions_episode_0"]) == 60
    assert np.abs(np.array(episodes["actions_episode_0"])).max() <= 2.0


def test_lqr_balances_pendulum_near_upright_and_mcts_solves_deterministic_frozenlake(capsys, tracking_uri):
    result = train_json(capsys, tracking_uri, "lqr", "Pendulum-v1", "--steps", "100", "--set", "episodes=3")
    _, run = finished_run(tracking_uri, result["run_id"])
    assert len(mlflow.tracking.MlflowClient().get_metric_history(result["run_id"], "episode_return")) == 3
    assert result["mean_return"] > -5.0  # held upright from a start within ±0.3 rad
    result = train_json(
        capsys,
        tracking_uri,
        "mcts",
        "FrozenLake-v1",
        "--set",
        'env_kwargs={"is_slippery": false}',
        "episodes=2",
        "n_simulations=100",
    )
    _, run = finished_run(tracking_uri, result["run_id"])
    assert result["mean_return"] == 1.0 and run.data.metrics["mean_length"] >= 6  # reached G (6 steps at best)
    code, _, err = run_cli(capsys, "train", "--algo", "mcts", "--env", "FrozenLake-v1", "--tracking-uri", tracking_uri)
    assert code == 2 and "stochastic" in err
    code, _, err = run_cli(capsys, "train", "--algo", "cem", "--env", "CartPole-v1", "--tracking-uri", tracking_uri)
    assert code == 2 and "known model of MountainCarContinuous-v0, Pendulum-v1" in err and "use mcts" in err


def test_ilqr_controller_run_is_recorded(capsys, tracking_uri, tmp_path):
    """A tiny budget (the swing-up itself is the slow docstring test below)."""
    result = train_json(
        capsys,
        tracking_uri,
        "ilqr",
        "Pendulum-v1",
        "--steps",
        "20",
        "--set",
        "horizon=20",
        "restarts=2",
        "n_iterations=3",
        "replan_every=10",
        "replan_iterations=2",
    )
    client, run = finished_run(tracking_uri, result["run_id"])
    assert run.data.metrics["plans"] == 2  # the first plan and one replan
    assert "upright_fraction_second_half" in run.data.metrics
    assert len(download_json(client, result["run_id"], "episodes.json", tmp_path)["actions_episode_0"]) == 20


def test_ilqr_docstring_example_swings_pendulum_up():
    """The module docstring's example, as written: up by step 100 and balanced (~10 s on one thread)."""
    import doctest
    import importlib

    from core_rl.common.seeding import configure_torch

    configure_torch(1)

    module = importlib.import_module("core_rl.model_based.planners.ilqr")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


def test_program_runs_are_not_agents(capsys, tracking_uri):
    from core_rl import make_agent
    from core_rl.common.errors import ConfigError

    with pytest.raises(ConfigError, match="'value_iteration' is a program, not an agent"):
        make_agent("value_iteration", "FrozenLake-v1")
    result = train_json(capsys, tracking_uri, "value_iteration", "gridworld:cliff")
    code, _, err = run_cli(capsys, "eval", "--run", result["run_id"], "--tracking-uri", tracking_uri)
    assert code == 2 and "ran the program value_iteration" in err
