r"""The notes' compounding-error analysis (9/7), measured: behavior cloning's cost grows O(εT²) with
the horizon T while DAgger's stays O(εT).

The analysis: let c(s, a) = 1 if a ≠ π*(s) and suppose the learner errs with probability ε on the
states it was trained on. Behavior cloning trains on p_train(s) = p_{π*}(s); after its first
mistake it is in states it has never seen, where it may keep making mistakes, so

.. math::
    \mathbb E\Big[\sum_t c(s_t, a_t)\Big] \le \epsilon T + (1-\epsilon)(\epsilon(T-1) + \dots)
      = O(\epsilon T^2)
    \quad\text{(with } |p_\theta(s_t) - p_{train}(s_t)| \le 2\epsilon t\text{)},

while DAgger trains on p_{π_θ}(s) itself and gets E[Σ_t c] ≤ εT.

The task, :class:`LaneKeepingVecEnv`: a car follows a winding lane. The observation is
(o_t, δ_t): its integer offset from the lane centre and the lane's next turn δ_t ∈ {−1, 0, 1};
the action a_t ∈ {left, straight, right} = {−1, 0, 1} moves it, o_{t+1} = o_t + a_t − δ_t.
The expert π*(o, δ) = clip(δ − o, −1, 1) never leaves the centre, so its demonstrations only hold
o = 0 and say nothing about how to come back. The learner is run with the notes' error model: on
every step, with probability ε its action is replaced by a random one (so it differs from the
expert's with probability ε' = ε(1 − 1/3)). Both learners get the same number of expert labels,
and the cost Σ_t 1[a_t ≠ π*(s_t)] is measured over many episodes for each horizon T; the slope of
log cost against log T estimates the exponent: ≈ 1 for DAgger (as for the expert itself run with the
same ε), 1.7 for BC over T = 10…160 at ε = 0.02 (locally 1.8 at small T, bending towards 1 once
ε'T ≫ 1, when the cost saturates at T).

The scripted CartPole expert :func:`~core_rl.imitation.experts.cartpole_expert` lives in
:mod:`core_rl.imitation.experts` (re-exported here for older imports).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from core_rl.common.tracking import NullTracker, Tracker
from core_rl.imitation.behavior_cloning import BehaviorCloning, PolicyActor
from core_rl.imitation.dagger import DAgger
from core_rl.imitation.demonstrations import Actor, rollout
from core_rl.imitation.experts import CARTPOLE_EXPERT_WEIGHTS as CARTPOLE_EXPERT_WEIGHTS  # re-exported
from core_rl.imitation.experts import cartpole_expert as cartpole_expert  # re-exported


class LaneKeepingVecEnv(VectorEnv):
    """``num_envs`` cars on winding lanes, vectorized in numpy (SAME_STEP autoreset).

    Observation (o_t, δ_t) as float32; action 0/1/2 = steer left/straight/right (−1/0/+1);
    o_{t+1} = clip(o_t + a_t − δ_t, −max_offset, max_offset); reward −1 per step spent off the
    centre (o_{t+1} ≠ 0); episodes are truncated after ``horizon`` steps and start on the centre.
    δ_t is ±1 with probability ``turn_prob``/2 each, else 0.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, horizon: int = 100, max_offset: int = 5, turn_prob: float = 0.5):
        if num_envs < 1 or horizon < 1 or max_offset < 1 or not 0.0 <= turn_prob <= 1.0:
            raise ValueError("LaneKeepingVecEnv needs num_envs, horizon, max_offset ≥ 1 and turn_prob in [0, 1]")
        self.num_envs = int(num_envs)
        self.horizon = int(horizon)
        self.max_offset = int(max_offset)
        self.turn_prob = float(turn_prob)
        k = float(max_offset)
        self.single_observation_space = gym.spaces.Box(np.array([-k, -1.0], np.float32), np.array([k, 1.0], np.float32))
        self.single_action_space = gym.spaces.Discrete(3)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._offset = np.zeros(self.num_envs, dtype=np.int64)
        self._turn = np.zeros(self.num_envs, dtype=np.int64)
        self._t = np.zeros(self.num_envs, dtype=np.int64)

    def _sample_turns(self, n: int) -> np.ndarray:
        p = self.turn_prob
        return self.np_random.choice(np.array([-1, 0, 1]), size=n, p=[p / 2, 1 - p, p / 2])

    def _obs(self) -> np.ndarray:
        return np.stack([self._offset, self._turn], -1).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        self._offset[:] = 0
        self._t[:] = 0
        self._turn = self._sample_turns(self.num_envs)
        return self._obs(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        move = np.asarray(actions, dtype=np.int64).reshape(self.num_envs) - 1
        self._offset = np.clip(self._offset + move - self._turn, -self.max_offset, self.max_offset)
        self._t += 1
        reward = -(self._offset != 0).astype(np.float64)
        self._turn = self._sample_turns(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = self._t >= self.horizon
        info: dict[str, Any] = {}
        if truncated.any():
            info = {"final_obs": self._obs(), "_final_obs": truncated.copy()}
            self._offset[truncated] = 0
            self._t[truncated] = 0
        return self._obs(), reward, terminated, truncated, info


def lane_keeping_expert(obs: np.ndarray) -> np.ndarray:
    """π*(o, δ) = clip(δ − o, −1, 1): follow the turn, and steer back towards the centre."""
    obs = np.asarray(obs)
    offset, turn = np.rint(obs[..., 0]).astype(np.int64), np.rint(obs[..., 1]).astype(np.int64)
    return np.clip(turn - offset, -1, 1) + 1


def mistake_cost(actor: Actor, expert: Actor, env: VectorEnv, epsilon: float, seed: int) -> np.ndarray:
    """Σ_t 1[a_t ≠ π*(s_t)] per episode, one episode per env, the actor erring with probability ε."""
    table = rollout(actor, env, n_episodes=env.num_envs, seed=seed, labeler=expert, action_noise=epsilon)
    table["mistake"] = (table["executed_action"] != table["action"]).astype(np.float64)
    return table.groupby("episode")["mistake"].sum().to_numpy()


def _slope(horizons: np.ndarray, cost: np.ndarray) -> float:
    """Least-squares slope of log cost on log T (the exponent p of cost ∝ T^p)."""
    keep = cost > 0
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(horizons[keep]), np.log(cost[keep]), 1)[0])


def run_compounding_error(
    tracker: Tracker | None = None,
    horizons: Sequence[int] = (10, 20, 40, 80, 160),
    epsilon: float = 0.02,
    label_budget: int = 2000,
    dagger_iterations: int = 4,
    n_eval_episodes: int = 2000,
    seed: int = 0,
    bc_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """BC against DAgger at equal expert labels on :class:`LaneKeepingVecEnv`, over ``horizons``.

    BC clones ``label_budget`` expert steps. DAgger starts from the first
    ``label_budget / (dagger_iterations + 1)`` of them and spends the rest on labelling its own
    (ε-erring) rollouts. Each policy is then run for ``n_eval_episodes`` episodes of each horizon
    with error rate ``epsilon``; the mean cost per horizon, the fitted exponents and the notes'
    bounds are returned, logged (step = T) and plotted.
    """
    tracker = tracker or NullTracker()
    horizons_arr = np.asarray(sorted(int(h) for h in horizons))
    if len(horizons_arr) < 2 or horizons_arr[0] < 1:
        raise ValueError("run_compounding_error needs at least two positive horizons")
    t_max = int(horizons_arr[-1])
    config = {"n_epochs": 60, "hidden_sizes": (64, 64), "seed": seed, **(bc_config or {})}
    tracker.log_params(
        {
            "experiment": "compounding_error",
            "epsilon": epsilon,
            "label_budget": label_budget,
            "dagger_iterations": dagger_iterations,
            "n_eval_episodes": n_eval_episodes,
            "horizons": ",".join(map(str, horizons_arr)),
            **{f"bc.{k}": v for k, v in config.items()},
        }
    )
    expert = lane_keeping_expert
    train_env = LaneKeepingVecEnv(8, horizon=t_max)
    spaces = (train_env.single_observation_space, train_env.single_action_space)

    demonstrations = rollout(expert, train_env, n_steps=label_budget, seed=seed)
    bc = BehaviorCloning(spaces, config)
    bc.fit(demonstrations)

    per_round = label_budget // (dagger_iterations + 1)
    initial = label_budget - dagger_iterations * per_round
    dagger = DAgger(
        train_env,
        expert,
        {
            **config,
            "n_iterations": dagger_iterations,
            "labels_per_iteration": per_round,
            "rollout_noise": epsilon,
            "n_envs": 8,
            "epochs_per_iteration": config["n_epochs"],
        },
    )
    dagger.learn(demonstrations.iloc[:initial].reset_index(drop=True))
    for round_metrics in dagger.history:
        tracker.log_metrics(
            {k: v for k, v in round_metrics.items() if k.startswith("dagger_")},
            step=int(round_metrics["dagger_expert_labels"]),
        )

    costs: dict[str, list[float]] = {"bc": [], "dagger": [], "expert": []}
    stderr: dict[str, list[float]] = {"bc": [], "dagger": [], "expert": []}
    actors = {"bc": PolicyActor(bc.policy), "dagger": PolicyActor(dagger.policy), "expert": expert}
    for t in horizons_arr:
        env = LaneKeepingVecEnv(n_eval_episodes, horizon=int(t))
        row: dict[str, float] = {}
        for name, actor in actors.items():
            c = mistake_cost(actor, expert, env, epsilon, seed=seed + 1_000 + int(t))
            costs[name].append(float(c.mean()))
            stderr[name].append(float(c.std() / np.sqrt(len(c))))
            row[f"{name}_cost"] = costs[name][-1]
        tracker.log_metrics(
            {**row, "bound_dagger": epsilon * t, "bound_bc": epsilon * t + 2 * epsilon * t * t}, step=int(t)
        )

    # the learners' own error rate on the expert's states (ε of the analysis, before the injected ε)
    on_expert = {}
    obs = demonstrations[["obs_0", "obs_1"]].to_numpy(np.float32)
    for name in ("bc", "dagger"):
        policy = bc.policy if name == "bc" else dagger.policy
        on_expert[name] = float((policy.predict(obs) != demonstrations["action"].to_numpy()).mean())

    result: dict[str, Any] = {
        "horizons": horizons_arr.tolist(),
        "epsilon": epsilon,
        "label_budget": label_budget,
        "bc_cost": costs["bc"],
        "dagger_cost": costs["dagger"],
        "expert_cost": costs["expert"],
        "bc_cost_stderr": stderr["bc"],
        "dagger_cost_stderr": stderr["dagger"],
        "bc_slope": _slope(horizons_arr, np.array(costs["bc"])),
        "dagger_slope": _slope(horizons_arr, np.array(costs["dagger"])),
        "expert_slope": _slope(horizons_arr, np.array(costs["expert"])),
        "bc_expert_labels": len(demonstrations),
        "dagger_expert_labels": dagger.n_expert_labels,
        "bc_error_on_expert_states": on_expert["bc"],
        "dagger_error_on_expert_states": on_expert["dagger"],
        "dagger_history": dagger.history,
    }
    tracker.log_metrics(
        {
            "bc_slope": result["bc_slope"],
            "dagger_slope": result["dagger_slope"],
            "expert_slope": result["expert_slope"],
        },
        step=t_max,
    )
    tracker.log_figure(_plot(result), "compounding_error.png")
    return result


def _plot(result: Mapping[str, Any]) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    t = np.asarray(result["horizons"], dtype=float)
    eps = result["epsilon"]
    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    for key, label, style in (
        ("bc", "behavior cloning", "o-"),
        ("dagger", "DAgger", "s-"),
        ("expert", "expert with the same ε", "^:"),
    ):
        cost = np.asarray(result[f"{key}_cost"])
        slope = result[f"{key}_slope"]
        ax.plot(t, np.maximum(cost, 1e-3), style, label=f"{label} (slope {slope:.2f})")
    ax.plot(t, eps * t, "k--", lw=1, label="εT (DAgger bound)")
    ax.plot(t, eps * t + 2 * eps * t**2, "k-.", lw=1, label="εT + 2εT² (BC bound)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("horizon T")
    ax.set_ylabel("E[Σ_t 1(a_t ≠ π*(s_t))]")
    ax.set_title(f"Compounding error, ε = {eps}, {result['label_budget']} expert labels each")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
