"""Safety (CMDPs, notes 11/7-14): the tasks, the cost interface and its errors, the shared Lagrangian
piece, CPO's step and Saute/shield pieces against exact answers, and the tabular CMDP solved
exactly by an LP and by dual ascent. Fast: no agent is trained to convergence here
(tests/test_safety_agents.py does that)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

import safety
from core_rl.common import returns as R
from core_rl.common.envs import make_vec_env
from core_rl.common.errors import ConfigError
from core_rl.registry import get_algo
from safety.cmdp import CostKeyError, CostMonitor, read_costs
from safety.cpo import CPO, MIN_RELIABILITY, cpo_step, split_half_reliability
from safety.envs import HazardGridworld, PointGoalVectorEnv
from safety.evaluation import evaluate_cmdp
from safety.lagrangian import LagrangeMultiplier, PIDLagrangeMultiplier, lagrangian_advantage
from safety.parts import CostCriticPart, CostMonitorPart, LagrangianPart
from safety.ppo_lag import PIDLag, PPOLag
from safety.saute import Saute, SauteConfig, SauteWrapper, saute_budget_scale
from safety.shield import LinearCostModel, ShieldedPPOLag
from safety.tabular import TabularCMDP, best_response, solve_cmdp_lagrangian, solve_cmdp_lp
from safety.trpo_lag import TRPOLag
from safety.unconstrained import UnconstrainedPPO
from tests.seeding import seed as shifted

TINY = dict(n_envs=4, n_steps=64, hidden_sizes=(16,), seed=shifted(0))


# ---- tasks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", sorted(safety.TASKS))
def test_tasks_are_seeded_same_step_vector_envs(env_id: str) -> None:
    vec = make_vec_env(env_id, 4, seed=shifted(0))
    assert isinstance(vec, VectorEnv) and not isinstance(vec, SyncVectorEnv)  # the batched numpy env itself
    assert vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert set(vec.metadata["cost_keys"]) >= {"cost"}

    def run(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        v = make_vec_env(env_id, 4, seed=None)
        v.action_space.seed(seed)
        obs, _ = v.reset(seed=seed)
        o, r, c = [obs], [], []
        for _ in range(260):  # past one episode's end: autoreset in the same step
            obs, rew, term, trunc, info = v.step(v.action_space.sample())
            if (term | trunc).any():
                assert "final_obs" in info and np.all(info["final_info"]["_cost"] == (term | trunc))
            o.append(obs)
            r.append(rew)
            c.append(info["cost"])
        return np.stack(o), np.stack(r), np.stack(c)

    a, b, other = run(3), run(3), run(4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], other[0])


@pytest.mark.parametrize("env_id", sorted(safety.TASKS))
def test_single_env_id_matches_the_batched_env(env_id: str) -> None:
    """gym.make(id) (the registered single env, with TimeLimit) and the batched env with one env
    produce the same trajectory, costs included, across episode ends — and the monitor reads the
    same costs from a SyncVectorEnv (costs of finished episodes come from info['final_info'])."""
    single_vec = SyncVectorEnv([lambda: gym.make(env_id)], autoreset_mode=AutoresetMode.SAME_STEP)
    batched = make_vec_env(env_id, 1, seed=None)
    keys = batched.metadata["cost_keys"]
    m1, m2 = CostMonitor(single_vec, keys, [1.0] * len(keys)), CostMonitor(batched, keys, [1.0] * len(keys))
    o1, _ = m1.reset(seed=7)
    o2, _ = m2.reset(seed=7)
    rng = np.random.default_rng(0)
    total = 0.0
    for _ in range(450):
        a = np.stack([single_vec.single_action_space.sample() for _ in range(1)])
        if isinstance(single_vec.single_action_space, gym.spaces.Box):
            a = rng.uniform(-1, 1, size=a.shape).astype(np.float32)
        o1, r1, t1, u1, i1 = m1.step(a)
        o2, r2, t2, u2, i2 = m2.step(a)
        np.testing.assert_allclose(o1, o2, rtol=1e-6)
        np.testing.assert_allclose(r1, r2)
        np.testing.assert_array_equal(t1 | u1, t2 | u2)
        np.testing.assert_array_equal(i1["costs"], i2["costs"])
        total += float(i1["costs"].sum())
    assert m1.episodes == m2.episodes >= 2
    np.testing.assert_allclose(m1.total_cost, m2.total_cost)
    np.testing.assert_allclose(np.stack(m1.episode_costs), np.stack(m2.episode_costs))
    assert m1.total_cost.sum() == pytest.approx(total)


def test_point_goal_costs_hazard_steps_and_rewards_progress() -> None:
    env = PointGoalVectorEnv(num_envs=2, max_episode_steps=None)
    env.reset(seed=0)
    env.pos[:] = [[-0.6, 0.0], [-1.0, 1.5]]
    env.vel[:] = 0.0
    _, reward, _, _, info = env.step(np.array([[1.0, 0.0], [1.0, 0.0]]))
    # both moved 0.03 right toward the goal at (1.2, 0); neither is inside the hazard (r = 0.45 at 0)
    np.testing.assert_allclose(env.pos[:, 0], [-0.57, -0.97])
    assert reward[0] == pytest.approx(0.03) and 0 < reward[1] < 0.03
    np.testing.assert_array_equal(info["cost"], [0.0, 0.0])
    env.pos[0] = [-0.44, 0.0]
    _, _, _, _, info = env.step(np.zeros((2, 2)))
    assert info["cost"][0] == 1.0 and info["cost_hazard"][0] == 1.0 and info["cost"][1] == 0.0


def test_cartpole_costs_match_their_definition() -> None:
    env = make_vec_env("safety/CartPole-v0", 16, seed=shifted(0)).unwrapped
    env.reset(seed=0)
    env.state[:, 0] = np.linspace(-1.5, 1.5, 16)
    env.state[:, 1] = np.linspace(2.0, -2.0, 16)
    _, reward, _, _, info = env.step(np.ones(16, dtype=np.int64))
    x, x_dot = env.state[:, 0], env.state[:, 1]
    np.testing.assert_array_equal(info["cost_position"], np.abs(x) > env.safe_x)
    np.testing.assert_array_equal(info["cost_speed"], np.abs(x_dot) > env.max_speed)
    np.testing.assert_array_equal(info["cost"], info["cost_position"] + info["cost_speed"])
    np.testing.assert_allclose(reward, 1.0 + env.target_reward * (x > env.target_x))


# ---- the CMDP interface and its errors ----------------------------------------------------------
def test_negative_or_mismatched_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="cost_limit.*must be a finite number >= 0"):
        PPOLag("safety/PointGoal-v0", cost_limit=-1.0, **TINY)
    with pytest.raises(ConfigError, match="2 values for 1 cost_keys"):
        PPOLag("safety/PointGoal-v0", cost_limit=(1.0, 2.0), **TINY)
    with pytest.raises(ConfigError, match="dual_optimizer"):
        PPOLag("safety/PointGoal-v0", dual_optimizer="rmsprop", **TINY)
    with pytest.raises(ConfigError, match="CPO handles one constraint"):
        CPO("safety/CartPole-v0", cost_keys=("cost_position", "cost_speed"), cost_limit=5.0, **TINY)


def test_missing_cost_key_is_a_clear_error() -> None:
    # a key the env declares it does not report: at construction
    with pytest.raises(CostKeyError, match="cost_speed.*not reported by this env"):
        PPOLag("safety/PointGoal-v0", cost_keys=("cost_speed",), **TINY)
    # an env without costs at all (no declaration): at its first step, naming key, env and fix
    agent = PPOLag("Pendulum-v1", **TINY)
    with pytest.raises(CostKeyError, match=r"no 'cost' entry .*info\['cost'\].*cost_keys"):
        agent.learn(256)
    with pytest.raises(CostKeyError, match="no 'cost' entry"):
        read_costs({"cost_hazard": np.zeros(2)}, ["cost"], 2)


def test_several_constraints_each_with_its_own_limit_and_lambda() -> None:
    agent = PPOLag("safety/CartPole-v0", cost_keys=("cost_position", "cost_speed"), cost_limit=(5.0, 3.0), **TINY)
    assert agent.part(LagrangianPart).multiplier.limits.tolist() == [5.0, 3.0]
    agent.learn(4 * 64 * 6)
    m = agent.last_metrics
    assert {
        "lambda/cost_position",
        "lambda/cost_speed",
        "episode_cost/cost_speed",
        "cost_rate/cost_position",
        "violation_steps/cost_speed",
        "episodes_over_limit/cost_position",
    } <= set(m)
    assert agent.part(CostCriticPart).critic(torch.zeros(3, 4)).shape == (3, 2)


# ---- the shared Lagrangian piece ---------------------------------------------------------------
def test_dual_ascent_adam_and_pid_updates_follow_their_formulas() -> None:
    lam = LagrangeMultiplier([5.0, 1.0], lr=0.1, init=0.5, max_value=2.0)
    assert lam.update([7.0, 0.0]).tolist() == pytest.approx([0.7, 0.4])  # λ + α(J − d)
    assert lam.update([25.0, 0.0]).tolist() == pytest.approx([2.0, 0.3])  # clipped at λ_max
    assert lam.update([float("nan"), -20.0]).tolist() == pytest.approx([2.0, 0.0])  # nan: unchanged; ≥ 0

    pid = PIDLagrangeMultiplier([1.0], kp=0.5, ki=0.1, kd=2.0, ema_alpha=0.0, d_delay=1)
    assert pid.update([3.0]).item() == pytest.approx(0.5 * 2 + 0.1 * 2)  # K_P e + K_I Σe, no D yet
    assert pid.update([5.0]).item() == pytest.approx(0.5 * 4 + 0.1 * 6 + 2.0 * 2)  # D on the cost's rise
    assert pid.update([1.0]).item() == pytest.approx(0.5 * 0 + 0.1 * 6 + 0.0)  # falling cost: no D term

    # Adam on the dual loss −λ(Ĵc − d) (OmniSafe's λ: lr 0.035, λ₀ 0.001): the first step is exactly lr
    # whatever the violation's size, then λ follows torch's Adam on the same loss, clipped at 0
    adam = LagrangeMultiplier([25.0, 25.0], lr=0.035, init=0.001, optimizer="adam")
    param = torch.nn.Parameter(torch.tensor(0.001, dtype=torch.float64))
    reference = torch.optim.Adam([param], lr=0.035)
    costs = [80.0, 60.0, 26.0, *[0.0] * 12, 40.0]  # the last: Adam's momentum still holds λ at 0
    for i, cost in enumerate(costs):
        new = adam.update([cost, float("nan") if i == 2 else 26.0])
        reference.zero_grad()
        (-param * (cost - 25.0)).backward()
        reference.step()
        param.data.clamp_(min=0.0)
        assert new[0].item() == pytest.approx(param.item(), abs=1e-12)
        if i == 0:
            assert new.tolist() == pytest.approx([0.036, 0.036])  # 0.001 + lr, for a violation of 55 or of 1
        if i == len(costs) - 2:
            assert new[0].item() == 0.0 < new[1].item()  # projected onto λ ≥ 0 after the costs fell under d
    assert adam.adam_t.tolist() == [len(costs), len(costs) - 1]  # the nan entry skipped one step only
    with pytest.raises(ValueError, match="dual_optimizer"):
        LagrangeMultiplier([1.0], optimizer="rmsprop")  # type: ignore[arg-type]

    adv_r, adv_c = torch.tensor([1.0, -1.0]), torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    out = lagrangian_advantage(adv_r, adv_c, torch.tensor([0.5, 1.0]))
    assert out.tolist() == pytest.approx([(1 - 1.0) / 2.5, (-1 - 1.0) / 2.5])


def test_the_cost_advantage_is_standardized_centred_or_left_as_it_is() -> None:
    """``normalize_cost_advantage``: True standardizes Â^c over the valid steps, "center" (OmniSafe's
    ``standardized_cost_adv``) only subtracts its mean, so the cost term keeps its scale; checked by hand on
    one constraint, with a masked step that must not count."""
    from core_rl.common.buffers import RolloutBatch
    from safety.on_policy import lagrangian_advantages

    adv_r = torch.tensor([[1.0], [3.0], [100.0]])  # [T=3, N=1]; the last step is masked out
    adv_c = torch.tensor([[[0.2]], [[0.6]], [[-50.0]]])
    zeros = torch.zeros(3, 1)
    batch = RolloutBatch(
        obs=zeros, actions=zeros, log_probs=zeros, rewards=zeros, dones=zeros, episode_starts=zeros, values=zeros,
        valid=torch.tensor([[1.0], [1.0], [0.0]]), last_value=torch.zeros(1), advantages=adv_r, cost_advantages=adv_c,
    )  # fmt: skip
    lam = torch.tensor([3.0])
    r = [-(2**-0.5), 2**-0.5]  # (1, 3) standardized with the sample std (√2)
    expected = {
        True: [(r[0] - 3 * -(2**-0.5)) / 4, (r[1] - 3 * 2**-0.5) / 4],
        "center": [(r[0] - 3 * -0.2) / 4, (r[1] - 3 * 0.2) / 4],
        False: [(r[0] - 3 * 0.2) / 4, (r[1] - 3 * 0.6) / 4],
    }
    for mode, want in expected.items():
        out = lagrangian_advantages(batch, lam, True, mode)
        assert out[:2, 0].tolist() == pytest.approx(want, abs=1e-6), mode
    assert TRPOLag("safety/CartPole-v0", normalize_cost_advantage="center").config.normalize_cost_advantage == "center"
    with pytest.raises(ConfigError, match="normalize_cost_advantage"):
        TRPOLag("safety/CartPole-v0", normalize_cost_advantage="centre")


def test_critic_l2_is_omnisafes_critic_norm_on_both_critics() -> None:
    """``critic_l2`` / ``cost_critic_l2`` add c·Σ‖φ‖² to the value and cost critics' regressions (OmniSafe's
    ``critic_norm_coef``): the penalty by hand on a known layer, then the same seed trained with and without
    it, where only the penalized critics end with smaller weights (the policy's are not touched by it)."""
    from core_rl.common.optim import l2_penalty

    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
        layer.bias.fill_(3.0)
    assert float(l2_penalty(layer, 0.5).detach()) == pytest.approx(0.5 * (1 + 4 + 9))
    assert l2_penalty(layer, 0.0) == 0.0

    def norm(module: torch.nn.Module) -> float:
        return float(sum(p.detach().pow(2).sum() for p in module.parameters()))

    agents = {}
    for c in (0.0, 1.0):
        agent = TRPOLag("safety/CartPole-v0", critic_l2=c, cost_critic_l2=c, **TINY)
        agents[c] = (agent, norm(agent.value), norm(agent.part(CostCriticPart).critic))
        agent.learn(4 * 64 * 5)
    (plain, v0, c0), (penalized, _, _) = agents[0.0], agents[1.0]
    # measured on seeds 0-3: the plain critics end at 0.99-1.09 of their initial norm, the penalized at 0.71-0.81
    assert norm(penalized.value) < 0.9 * v0 < 0.9 * norm(plain.value) / 0.95
    cost_plain, cost_penalized = (a.part(CostCriticPart).critic for a in (plain, penalized))
    assert norm(cost_penalized) < 0.9 * c0 < 0.9 * norm(cost_plain) / 0.95
    with pytest.raises(ConfigError, match="cost_critic_l2"):
        TRPOLag("safety/CartPole-v0", cost_critic_l2=-1.0)


def test_cost_gae_is_per_env_and_per_constraint() -> None:
    agent = PPOLag("safety/CartPole-v0", cost_keys=("cost_position", "cost_speed"), cost_limit=1.0, **TINY)
    agent.learn(4 * 64 * 3)  # let the cost critic move away from its initialisation
    batch = agent.estimate(agent.collect())
    T, N, K = batch.costs.shape
    assert (T, N, K) == (64, 4, 2) and batch.costs.sum() > 0
    for n in range(N):
        for k in range(K):
            expect = R.gae(
                batch.costs[:, n : n + 1, k],
                batch.cost_values[:, n : n + 1, k],
                batch.dones[:, n : n + 1],
                batch.last_cost_value[n : n + 1, k],
                agent.config.gamma_c,
                agent.config.gae_lambda,
            )
            torch.testing.assert_close(batch.cost_advantages[:, n : n + 1, k], expect)


def test_registry_and_checkpoint_keep_lambda() -> None:
    for name, cls in [
        ("ppo_lag", PPOLag),
        ("pid_lag", PIDLag),
        ("trpo_lag", TRPOLag),
        ("cpo", CPO),
        ("saute_ppo", Saute),
        ("shield_ppo_lag", ShieldedPPOLag),
        ("ppo_unconstrained", UnconstrainedPPO),
    ]:
        assert get_algo(name).cls is cls
    agent = TRPOLag("safety/PointGoal-v0", cost_limit=0.0, lagrangian_lr=0.1, **TINY)
    agent.learn(4 * 64 * 8)  # 512 steps per env: two 200-step episodes finish
    lam = agent.part(LagrangianPart).multiplier.value.clone()
    assert lam.item() > 0
    clone = TRPOLag.load(agent.save(agent_path := __import__("tempfile").mkdtemp() + "/trpo_lag"))
    assert clone.part(LagrangianPart).multiplier.value.tolist() == lam.tolist() and agent_path
    # the Adam dual optimizer reaches the part from the config, and its moments are checkpointed with λ
    agent = PPOLag("safety/PointGoal-v0", cost_limit=0.0, dual_optimizer="adam", lagrangian_init=0.5, **TINY)
    agent.learn(4 * 64 * 8)
    adam = agent.part(LagrangianPart).multiplier
    assert adam.optimizer == "adam" and adam.adam_t.item() >= 1
    clone = PPOLag.load(agent.save(agent_path.replace("trpo_lag", "ppo_lag"))).part(LagrangianPart).multiplier
    for key in ("value", "adam_m", "adam_v", "adam_t"):
        assert getattr(clone, key).tolist() == getattr(adam, key).tolist(), key


def test_checkpoint_keeps_the_cost_monitor_bookkeeping() -> None:
    """A resumed run continues its cumulative training cost, counts and last episodes' costs; before
    the parts' state was checkpointed, the cumulative cost of a resumed run restarted at zero."""
    agent = TRPOLag("safety/PointGoal-v0", cost_limit=0.0, **TINY)
    agent.learn(4 * 64 * 8)
    before = agent.part(CostMonitorPart).monitor
    assert before.total_cost[0] > 0 and before.episodes > 0
    clone = TRPOLag.load(agent.save(__import__("tempfile").mkdtemp() + "/trpo_lag"))
    after = clone.part(CostMonitorPart).monitor
    assert after is not before
    assert after.total_cost.tolist() == before.total_cost.tolist() and after.total_steps == before.total_steps
    assert (after.episodes, after.violation_steps.tolist()) == (before.episodes, before.violation_steps.tolist())
    assert np.array_equal(after.mean_episode_cost, before.mean_episode_cost)
    clone.learn(4 * 64)
    assert clone.last_metrics["cumulative_cost"] >= before.total_cost[0]
    assert after.total_steps == before.total_steps + 4 * 64


# ---- CPO's step against a numerical solver ------------------------------------------------------
def test_cpo_step_solves_the_linearized_trust_region_problem() -> None:
    """max gᵀΔ s.t. c + bᵀΔ ≤ 0, ½ΔᵀHΔ ≤ δ — the closed form against scipy's SLSQP, in all cases."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    cases = set()
    for _ in range(30):
        n = 5
        m = rng.normal(size=(n, n))
        H = m @ m.T + 0.5 * np.eye(n)
        g, b, c, delta = rng.normal(size=n), rng.normal(size=n), float(rng.normal() * 1.2), 0.2
        Hinv = np.linalg.inv(H)
        step, case, _, _ = cpo_step(
            torch.tensor(g), torch.tensor(b), torch.tensor(Hinv @ g), torch.tensor(Hinv @ b), c, delta
        )
        step = step.numpy()
        cases.add(case)
        if case == 0:  # infeasible: the recovery step minimizes bᵀΔ within the trust region
            expect = -np.sqrt(2 * delta / (b @ Hinv @ b)) * Hinv @ b
        else:
            cons = [
                {"type": "ineq", "fun": lambda x: -(c + b @ x), "jac": lambda x: -b},
                {"type": "ineq", "fun": lambda x: delta - 0.5 * x @ H @ x, "jac": lambda x: -H @ x},
            ]
            best = min(
                (
                    minimize(
                        lambda x: -g @ x,
                        rng.normal(size=n) * 0.05,
                        jac=lambda x: -g,
                        constraints=cons,
                        method="SLSQP",
                        options={"ftol": 1e-12, "maxiter": 500},
                    )
                    for _ in range(5)
                ),
                key=lambda r: r.fun if r.success else np.inf,
            )
            expect = best.x
            assert c + b @ step <= 1e-6 and 0.5 * step @ H @ step <= delta * (1 + 1e-6)
        np.testing.assert_allclose(step, expect, atol=2e-4)
    assert {0, 1, 2} <= cases


def test_cpo_cost_margin_tightens_the_limit_it_aims_at() -> None:
    """c = (Ĵc − (d − m)) / T̄; a margin above the limit is a config error."""
    from types import SimpleNamespace

    batch = SimpleNamespace(episode_costs=torch.tensor([[7.0], [9.0]]), n_steps=64)
    plain = CPO("safety/CartPole-v0", cost_limit=5.0, **{**TINY, "n_envs": 1})
    tight = CPO("safety/CartPole-v0", cost_limit=5.0, cost_margin=2.0, **{**TINY, "n_envs": 1})
    assert plain.violation(batch) == pytest.approx((8.0 - 5.0) / 64)  # type: ignore[arg-type]
    assert tight.violation(batch) == pytest.approx((8.0 - 3.0) / 64)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cost_margin"):
        CPO("safety/CartPole-v0", cost_limit=5.0, cost_margin=6.0, **TINY)


@pytest.mark.parametrize("cls", [PPOLag, TRPOLag, PIDLag])
def test_lagrangian_cost_margin_moves_the_dual_target(cls) -> None:
    """λ's dual step aims at d − m: the same rollout cost Ĵc gives λ = α(Ĵc − (d − m)) instead of α(Ĵc − d)
    (and the PID's error is Ĵc − (d − m)); the monitor's limit stays d; a margin above d is a config error."""
    settings = {**TINY, "n_envs": 1, "cost_limit": 5.0, "lagrangian_lr": 0.1, "pid_kp": 0.0, "pid_kd": 0.0}
    lams = []
    for margin in (0.0, 2.0):
        agent = cls("safety/CartPole-v0", cost_margin=margin, **settings)
        multiplier = agent.part(LagrangianPart).multiplier
        assert multiplier.limits.tolist() == [5.0 - margin]
        assert agent.part(CostMonitorPart).monitor.limits.tolist() == [5.0]
        lams.append(float(multiplier.update(torch.tensor([8.0]))[0]))
    rate = settings["lagrangian_lr"] if cls is not PIDLag else 0.01  # PID: K_I = 0.01
    assert lams == pytest.approx([rate * (8.0 - 5.0), rate * (8.0 - 3.0)])
    with pytest.raises(ConfigError, match="cost_margin 6.0 exceeds the cost limit 5.0"):
        cls("safety/CartPole-v0", cost_margin=6.0, **settings)


@pytest.mark.parametrize("cls", [CPO, PPOLag])
def test_cost_gae_lambda_sets_the_cost_advantage_lambda(cls) -> None:
    """Â^c is GAE(γ_c, λ_c) with λ_c = ``cost_gae_lambda`` (default: the agent's gae_lambda), independent of Â^r's λ."""
    settings = {**TINY, "n_envs": 2, "cost_limit": 5.0, "gae_lambda": 0.95}
    assert cls("safety/CartPole-v0", **settings).part(CostCriticPart).critic.gae_lambda == 0.95
    agent = cls("safety/CartPole-v0", cost_gae_lambda=0.5, **settings)
    critic = agent.part(CostCriticPart).critic
    assert critic.gae_lambda == 0.5
    batch = agent.estimate(agent.collect())
    expect = R.gae(
        batch.costs[..., 0], batch.cost_values[..., 0], batch.dones, batch.last_cost_value[:, 0], critic.gamma_c, 0.5
    )
    torch.testing.assert_close(batch.cost_advantages[..., 0], expect)
    reward = R.gae(batch.rewards, batch.values, batch.dones, batch.last_value, agent.config.gamma, 0.95)
    torch.testing.assert_close(batch.advantages, reward)  # (the Lagrangian's advantage comes in before_update)
    with pytest.raises(ConfigError, match="cost_gae_lambda"):
        cls("safety/CartPole-v0", cost_gae_lambda=1.5, **settings)


def test_cpo_violation_window_and_scale() -> None:
    """Ĵc from the rollout or the last k training episodes; c per step (÷ T̄) or per episode (OmniSafe 0.5.0)."""
    from types import SimpleNamespace

    batch = SimpleNamespace(episode_costs=torch.tensor([[7.0], [9.0]]), n_steps=64)
    episode = CPO("safety/CartPole-v0", cost_limit=5.0, violation_scale="episode", **{**TINY, "n_envs": 1})
    assert episode.violation(batch) == pytest.approx(8.0 - 5.0)  # type: ignore[arg-type]
    window = CPO(
        "safety/CartPole-v0", cost_limit=5.0, cost_window=2, violation_scale="episode", **{**TINY, "n_envs": 1}
    )
    window.part(CostMonitorPart).monitor.episode_costs.extend(np.array([c]) for c in (1.0, 3.0, 6.0))
    assert window.violation(batch) == pytest.approx((3.0 + 6.0) / 2 - 5.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="violation_scale"):
        CPO("safety/CartPole-v0", violation_scale="per_episode", **TINY)


def test_split_half_reliability_is_the_signal_share_of_s() -> None:
    """κ = b_Bᵀ H⁻¹ b_A / bᵀH⁻¹b, clipped to [κ_min, 1]: 1 for agreeing halves, 1 − |ε|²/|β|² for
    halves β ± ε with ε ⟂ β, κ_min for opposite halves (H = diag(2, 1))."""

    def kappa(b_a: list[float], b_b: list[float]) -> float:
        b_a_t, b_b_t = torch.tensor(b_a), torch.tensor(b_b)
        b = (b_a_t + b_b_t) / 2
        h_inv = torch.ones_like(b)
        h_inv[0] = 0.5
        return split_half_reliability(b, b_a_t, h_inv * b_a_t, h_inv * b)

    assert kappa([1.0, 2.0], [1.0, 2.0]) == pytest.approx(1.0)
    # β = (2, 0), ε = (0, 0.5): s = 0.5·4 = 2, b_Bᵀ H⁻¹ b_A = 2 − 0.25
    assert kappa([2.0, 0.5], [2.0, -0.5]) == pytest.approx(1.75 / 2)
    assert kappa([1.0, 0.0], [-1.0, 0.2]) == MIN_RELIABILITY
    # noise only (β = 0): over many draws κ sits at its floor far more often than not
    gen = torch.Generator().manual_seed(0)
    draws = [kappa(torch.randn(50, generator=gen).tolist(), torch.randn(50, generator=gen).tolist()) for _ in range(50)]
    assert sum(k < 0.5 for k in draws) >= 45


def test_cpo_split_half_shrinks_the_cost_gradient() -> None:
    """cost_gradient='split_half' reports κ in (0, 1] and keeps the step's KL within δ; 'plain' reports 1."""
    settings = {"n_envs": 8, "n_steps": 64, "cost_limit": 0.0, "seed": 0}
    for mode in ("plain", "split_half"):
        agent = CPO("safety/CartPole-v0", {**settings, "cost_gradient": mode}).learn(1024)
        m = agent.last_metrics
        assert MIN_RELIABILITY <= m["cost_gradient_reliability"] <= 1.0
        assert mode == "split_half" or m["cost_gradient_reliability"] == 1.0
        assert m["kl"] <= agent.config.max_kl * (1 + 1e-6)


# ---- Saute and the shield's pieces --------------------------------------------------------------
def test_saute_budget_and_reward() -> None:
    base = CostMonitor(make_vec_env("safety/PointGoal-v0", 2, seed=None), ("cost",), [2.0])
    env = SauteWrapper(base, ("cost",), np.array([2.0]), unsafe_reward=-0.5)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 10) and np.all(obs[:, -1] == 1.0)
    core = base.env.unwrapped
    core.pos[0], core.vel[0] = [0.0, 0.0], 0.0  # env 0 sits in the hazard: cost 1 per step
    zs, rewards = [], []
    for _ in range(3):
        obs, reward, *_ = env.step(np.zeros((2, 2), dtype=np.float32))
        zs.append(obs[0, -1])
        rewards.append(reward[0])
    assert zs == pytest.approx([0.5, 0.0, -0.5])  # z ← z − c/d
    assert rewards[:2] == pytest.approx([0.0, 0.0]) and rewards[2] == -0.5  # budget spent: r_unsafe
    assert obs[1, -1] == 1.0


def test_saute_discounted_budget_is_omnisafes() -> None:
    """budget_horizon T scales d by (1 − γ^T)/((1 − γ)T): OmniSafe's PPOSaute budget (d = 25, T = 1000:
    γ_s = 0.999 → 15.81, 0.9999 → 23.79), and z ← (z − c/d′)/γ_s each step."""
    assert saute_budget_scale(0.999, 1000) * 25 == pytest.approx(15.8076, abs=1e-4)
    assert saute_budget_scale(0.9999, 1000) * 25 == pytest.approx(23.7918, abs=1e-4)
    assert saute_budget_scale(0.999, None) == 1.0 and saute_budget_scale(1.0, 1000) == 1.0
    assert saute_budget_scale(0.5, 1) == pytest.approx(1.0)  # one step: nothing to discount
    base = CostMonitor(make_vec_env("safety/PointGoal-v0", 2, seed=None), ("cost",), [2.0])
    gamma = 0.9
    env = SauteWrapper(base, ("cost",), np.array([2.0]), saute_gamma=gamma, budget_horizon=10)
    budget = 2.0 * (1 - gamma**10) / ((1 - gamma) * 10)  # 1.3026
    assert env.limits == pytest.approx([budget])
    env.reset(seed=0)
    core = base.env.unwrapped
    core.pos[0], core.vel[0] = [0.0, 0.0], 0.0  # env 0 sits in the hazard: cost 1 per step
    obs, *_ = env.step(np.zeros((2, 2), dtype=np.float32))
    assert obs[0, -1] == pytest.approx((1 - 1 / budget) / gamma, rel=1e-6)
    assert obs[1, -1] == pytest.approx(1 / gamma, rel=1e-6)  # no cost: the budget grows by 1/γ_s
    with pytest.raises(ValueError, match="budget_horizon"):
        SauteConfig.model_validate({"budget_horizon": 0})


def test_safety_layer_projects_onto_the_linearized_constraint() -> None:
    space = gym.spaces.Box(-1, 1, (3,))
    model = LinearCostModel(space, gym.spaces.Box(-1, 1, (2,)), 1, (8,))
    torch.manual_seed(0)
    obs, actions = torch.randn(64, 3), torch.rand(64, 2) * 0.4 - 0.2
    tau = 0.0
    with torch.no_grad():
        model.net[-1].weight.normal_()
        model.net[-1].bias.copy_(torch.tensor([0.3, 1.0, -0.5]))
    h, g = model.split(obs)
    safe, changed = model.project(obs, actions, tau)
    logit_before, logit_after = model(obs, actions)[:, 0], model(obs, safe)[:, 0]
    feasible = (h - g.abs().sum(-1) <= tau)[:, 0]
    assert changed.any() and (~changed).any()
    assert torch.equal(changed, (logit_before > tau) & feasible)
    torch.testing.assert_close(safe[~changed], actions[~changed])
    # the closest action on the constraint's boundary, where the box does not bind
    inside = changed & (safe.abs() < 1 - 1e-6).all(-1)
    assert inside.any()
    torch.testing.assert_close(logit_after[inside], torch.full_like(logit_after[inside], tau), atol=1e-5, rtol=0)
    expect = actions - ((logit_before - tau) / g[:, 0].pow(2).sum(-1))[:, None] * g[:, 0]
    torch.testing.assert_close(safe[inside], expect[inside], atol=1e-5, rtol=0)


# ---- the tabular CMDP: LP vs Lagrangian ---------------------------------------------------------
def test_lagrangian_solution_matches_the_exact_lp_optimum() -> None:
    world = HazardGridworld.from_layout(slip=0.1, gamma=0.95)
    limit = 0.2
    cmdp = TabularCMDP.build(world.mdp, world.cost, limit)
    _, rho_free, _ = best_response(cmdp, np.zeros(1))
    free_cost = float((rho_free * world.cost).sum())
    assert free_cost > 4 * limit  # the unconstrained optimum (through the hazard) violates it

    lp = solve_cmdp_lp(cmdp)
    v_r, v_c = cmdp.values(lp.policy)  # the LP's policy, evaluated exactly on the MDP
    assert v_r == pytest.approx(lp.reward_value, abs=1e-8) and v_c[0] == pytest.approx(limit, abs=1e-8)
    assert lp.reward_value < float((rho_free * world.mdp.r).sum())
    assert lp.multipliers[0] > 0

    lag = solve_cmdp_lagrangian(cmdp, iterations=2000, lr=2.0)
    lag_r, lag_c = cmdp.values(lag.policy)  # the averaged (mixture) policy, evaluated exactly
    assert lag_r == pytest.approx(lp.reward_value, abs=2e-3)
    assert lag_c[0] <= limit + 2e-3
    assert lag.multipliers[0] == pytest.approx(lp.multipliers[0], abs=0.02)
    # strong duality: min_λ max_π L(π, λ) equals the LP's optimum
    assert lag.history["dual"].min() == pytest.approx(lp.reward_value, abs=1e-4)


def test_infeasible_cmdp_and_bad_model_inputs_are_errors() -> None:
    world = HazardGridworld.from_layout(slip=0.1)
    with pytest.raises(ConfigError, match="infeasible"):
        solve_cmdp_lp(TabularCMDP.build(world.mdp, world.cost, 0.0))  # slipping into the hazard is unavoidable
    with pytest.raises(ConfigError, match=">= 0"):
        TabularCMDP.build(world.mdp, world.cost, -0.1)
    with pytest.raises(ConfigError, match="shape"):
        TabularCMDP.build(world.mdp, world.cost[:3], 0.1)
    with pytest.raises(ConfigError, match="layout characters"):
        HazardGridworld.from_layout(("S.X", "..G"))


# ---- every agent runs and logs the safety metrics ------------------------------------------------
@pytest.mark.parametrize("cls", [UnconstrainedPPO, PPOLag, PIDLag, TRPOLag, CPO, Saute, ShieldedPPOLag])
def test_agents_log_safety_metrics_and_evaluate_costs(cls) -> None:
    from core_rl.common.tracking import MemoryTracker

    tracker = MemoryTracker()
    agent = cls("safety/PointGoal-v0", cost_limit=5.0, tracker=tracker, **TINY)
    agent.learn(4 * 64 * 4)
    for key in (
        "episode_return",
        "episode_cost",
        "cost_rate",
        "cumulative_cost",
        "violation_steps",
        "episodes_over_limit",
    ):
        assert key in tracker.metrics, key
    if cls not in (UnconstrainedPPO, Saute):
        assert "lambda" in tracker.metrics or cls is CPO
    monitor = agent.part(CostMonitorPart).monitor
    assert tracker.last("cumulative_cost") == pytest.approx(monitor.total_cost[0])
    assert tracker.last("cost_rate") == pytest.approx(monitor.total_cost[0] / agent.num_timesteps)
    ev = evaluate_cmdp(agent, n_episodes=4)
    assert len(ev["costs"]) == 4 and np.isfinite(ev["mean_return"])


# ---- SAC-Lag and the model-based safe agent: their pieces -------------------------------------------
def test_sac_lag_stores_costs_and_adds_the_lagrangian_to_the_actor_loss() -> None:
    from safety.sac_lag import SACLag

    with pytest.raises(ConfigError, match="n_step must be 1"):
        SACLag("safety/PointGoal-v0", n_step=3)
    near_hazard = PointGoalVectorEnv(num_envs=2, start_low=(-0.5, -0.4), start_high=(0.5, 0.4))
    agent = SACLag(
        near_hazard,
        cost_limit=0.0,
        n_envs=2,
        hidden_sizes=(32,),
        batch_size=64,
        learning_starts=300,
        lagrangian_lr=0.05,
        seed=shifted(0),
    )
    agent.learn(1000)  # 500 steps per env: two 200-step episodes each have finished
    monitor, replay = agent.part(CostMonitorPart).monitor, agent.replay
    assert replay.costs.sum().item() == pytest.approx(monitor.total_cost[0]) and monitor.total_cost[0] > 0
    assert agent.lagrange.value.item() > 0  # costs over a limit of 0 raised λ
    batch = replay.sample(32)
    torch.manual_seed(1)
    action, log_prob = agent.actor(batch.obs)
    alpha = torch.tensor(agent.alpha)
    lam = agent.lagrange.value.item()
    got = agent.actor_loss(batch, action, log_prob, alpha)
    q_r = agent.critic(batch.obs, action).amin(0)
    q_c = agent.cost_critic(batch.obs, action).amax(0)
    torch.testing.assert_close(got, ((alpha * log_prob - q_r).mean() + lam * q_c.mean()) / (1 + lam))


def test_pessimistic_cost_planning_keeps_the_plan_feasible() -> None:
    """s' = s + a on a line, reward s' (go right), cost once past s = 1: the feasible-first CEM plans
    to stop at the wall, the plain one runs through it."""
    from core_rl.model_based.planners.shooting import CEM, FunctionModel, TrajectoryEvaluator
    from safety.model_based import CostTrackingModel, PessimisticCostPlanning

    class WallCost:
        n_members = 1

        def risk(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
            return (next_obs[..., 0] > 1.0).float()

    model = FunctionModel(lambda s, a: s + a, 1, 1)
    reward = lambda s, a, s2: s2[..., 0]  # noqa: E731
    low, high = torch.tensor([-0.5]), torch.tensor([0.5])
    tracker = CostTrackingModel(model, WallCost())  # type: ignore[arg-type]
    safe = PessimisticCostPlanning(TrajectoryEvaluator(tracker, reward_fn=reward), tracker, threshold=0.0)
    plain = TrajectoryEvaluator(model, reward_fn=reward)
    start = torch.tensor([[0.2]])
    plans = {}
    for name, evaluator in (("safe", safe), ("plain", plain)):
        planner = CEM(evaluator, low, high, horizon=5, n_candidates=300, n_iterations=6, n_elites=30, seed=shifted(0))
        plans[name] = planner.plan(start).actions[0, :, 0]
    path = lambda acts: 0.2 + torch.cumsum(acts, 0)  # noqa: E731
    assert path(plans["plain"]).max() > 1.5
    assert path(plans["safe"]).max() <= 1.0 and path(plans["safe"])[-1] > 0.8  # up to the wall, not past it
