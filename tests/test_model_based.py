"""Model-based RL (notes 9/21–10/5): planners against exact answers, models against baselines.

Planners: LQR vs the discrete algebraic Riccati equation and a brute-force optimum, iLQR on an LQ
problem (one Newton step) and on the Pendulum-v1 swing-up, MCTS on game trees with a trap, shooting
planners vs the LQR optimum. Models: the GP's likelihood/posterior vs scikit-learn, GP vs a small
network at 50 transitions, ensemble/BNN/GP uncertainty off-distribution, local linear-Gaussian
models recovering a time-varying system. Policies through models: BPTT and the dual-gradient-descent
(collocation) form vs the LQR optimum.
"""

import math

import gymnasium as gym
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import torch

from core_rl.common.transitions import Transitions
from core_rl.model_based.bnn import BNNDynamics
from core_rl.model_based.dynamics import BatchedMLP, NeuralDynamics, deterministic_dynamics
from core_rl.model_based.ensemble import BootstrapEnsemble
from core_rl.model_based.env_models import angle_normalize, pendulum_dynamics, pendulum_obs_dynamics, pendulum_reward
from core_rl.model_based.gp import GPDynamics
from core_rl.model_based.local_models import TimeVaryingLinearGaussian
from core_rl.model_based.planners.ilqr import ILQR, model_dynamics
from core_rl.model_based.planners.lqr import lqr, lqr_backward, lqr_rollout
from core_rl.model_based.planners.mcts import MCTS
from core_rl.model_based.planners.shooting import CEM, MPPI, FunctionModel, RandomShooting, TrajectoryEvaluator
from core_rl.model_based.policy_through_model import BPTTPolicyTrainer, DeterministicPolicy, DualGradientDescentTrainer

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- helpers -------------------------------------------------------------------------------------
def pendulum_transitions(n: int, seed: int, episode: int = 20) -> Transitions:
    """n random-action Pendulum-v1 transitions from episodes of ``episode`` steps."""
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    O, A, R, N = [], [], [], []
    for i in range(n):
        a = rng.uniform(-2, 2, size=1).astype(np.float32)
        nxt, r, _, _, _ = env.step(a)
        O.append(obs), A.append(a), R.append(r), N.append(nxt)
        obs = nxt
        if i % episode == episode - 1:
            obs, _ = env.reset(seed=int(rng.integers(1 << 30)))
    return Transitions.from_arrays(O, A, R, N)


# double integrator x = (p, v), dt = 0.1; cost ½xᵀQx + ½uᵀRu
A_DI = torch.tensor([[1.0, 0.1], [0.0, 1.0]], dtype=F64)
B_DI = torch.tensor([[0.005], [0.1]], dtype=F64)
Q_DI = torch.diag(torch.tensor([1.0, 0.1], dtype=F64))
R_DI = torch.tensor([[0.01]], dtype=F64)


def di_step(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return x @ A_DI.T.to(x.dtype) + u @ B_DI.T.to(x.dtype)


def di_cost(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x * (x @ Q_DI.to(x.dtype))).sum(-1) + 0.5 * (u * (u @ R_DI.to(x.dtype))).sum(-1)


def di_lqr_cost(x0: torch.Tensor, T: int) -> torch.Tensor:
    sol = lqr(A_DI, B_DI, Q_DI, R_DI, T)
    return 0.5 * (x0[..., None, :] @ sol.V[0] @ x0[..., :, None])[..., 0, 0]


def closed_loop_cost(policy, x0: torch.Tensor, T: int) -> float:
    x, total = x0.clone(), torch.zeros(x0.shape[0], dtype=x0.dtype)
    with torch.no_grad():
        for _ in range(T):
            u = policy(x)
            total, x = total + di_cost(x, u), di_step(x, u)
    return float(total.mean())


# ---- LQR ---------------------------------------------------------------------------------------------
def test_lqr_long_horizon_matches_discrete_algebraic_riccati_equation():
    g = torch.Generator().manual_seed(0)
    A = torch.eye(3, dtype=F64) + 0.3 * torch.randn(3, 3, generator=g, dtype=F64)
    B = torch.randn(3, 2, generator=g, dtype=F64)
    Q, R = torch.diag(torch.tensor([1.0, 2.0, 0.5], dtype=F64)), 0.1 * torch.eye(2, dtype=F64)
    sol = lqr(A, B, Q, R, horizon=400)
    P = scipy.linalg.solve_discrete_are(A.numpy(), B.numpy(), Q.numpy(), R.numpy())
    K_inf = -np.linalg.solve(R.numpy() + B.numpy().T @ P @ B.numpy(), B.numpy().T @ P @ A.numpy())
    np.testing.assert_allclose(sol.V[0].numpy(), P, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(sol.K[0].numpy(), K_inf, rtol=1e-8, atol=1e-8)
    # near the end of the horizon the gains differ (finite-horizon): the recursion is not a constant
    assert np.abs(sol.K[-1].numpy() - K_inf).max() > 1e-2


def test_lqr_matches_brute_force_optimum_and_batches():
    """Time-varying scalar system with affine terms, terminal cost: minimize over u_{1:T} directly."""
    T = 5
    g = torch.Generator().manual_seed(1)
    a, b = 1 + 0.2 * torch.randn(T, generator=g, dtype=F64), 0.5 + 0.1 * torch.rand(T, generator=g, dtype=F64)
    drift = 0.1 * torch.randn(T, generator=g, dtype=F64)
    F = torch.stack([a, b], -1)[:, None, :]  # [T, 1, 2]
    f = drift[:, None]
    C = torch.diag_embed(torch.stack([torch.full((T,), 1.0, dtype=F64), torch.full((T,), 0.3, dtype=F64)], -1))
    C[:, 0, 1] = C[:, 1, 0] = 0.05  # a cross term x·u
    c = 0.2 * torch.randn(T, 2, generator=g, dtype=F64)
    VT, vT = torch.tensor([[4.0]], dtype=F64), torch.tensor([0.5], dtype=F64)
    x0 = torch.tensor([1.5], dtype=F64)

    def total(u_np: np.ndarray) -> float:
        x, J = x0.clone(), 0.0
        for t in range(T):
            z = torch.cat([x, torch.tensor([u_np[t]], dtype=F64)])
            J += float(0.5 * z @ C[t] @ z + z @ c[t])
            x = F[t] @ z + f[t]
        return J + float(0.5 * x @ VT @ x + vT @ x)

    brute = scipy.optimize.minimize(total, np.zeros(T), method="BFGS", options={"gtol": 1e-10})
    sol = lqr_backward(F, f, C, c, 1, terminal_V=VT, terminal_v=vT)
    xs, us = lqr_rollout(sol, F, f, x0)
    np.testing.assert_allclose(us[:, 0].numpy(), brute.x, atol=1e-5)
    # the optimal cost-to-go ½x₀ᵀV₀x₀ + v₀ᵀx₀ + const: compare through cost differences of two starts
    assert total(us[:, 0].numpy()) == pytest.approx(brute.fun, abs=1e-8)
    # a batch of two problems solved at once equals each solved alone
    Fb, fb, Cb, cb = (torch.stack([t, 2 * t]) for t in (F, f, C, c))
    Cb[1] = C
    batched = lqr_backward(Fb, fb, Cb, cb, 1, terminal_V=VT, terminal_v=vT)
    single = lqr_backward(Fb[1], fb[1], Cb[1], cb[1], 1, terminal_V=VT, terminal_v=vT)
    torch.testing.assert_close(batched.K[0], sol.K)
    torch.testing.assert_close(batched.K[1], single.K)


# ---- iLQR / DDP -------------------------------------------------------------------------------------
def test_ilqr_on_a_linear_quadratic_problem_is_lqr_after_one_iteration():
    T = 30
    x0 = torch.tensor([[1.0, -0.5]], dtype=F64)
    res = ILQR(di_step, di_cost, n_iterations=1, mu_init=0.0, mu_min=0.0).solve(x0, torch.zeros(1, T, 1, dtype=F64))
    sol = lqr(A_DI, B_DI, Q_DI, R_DI, T)
    _, us = lqr_rollout(sol, torch.cat([A_DI, B_DI], -1).expand(T, 2, 3), torch.zeros(T, 2, dtype=F64), x0)
    torch.testing.assert_close(res.u, us, atol=1e-9, rtol=1e-7)
    assert res.cost.item() == pytest.approx(di_lqr_cost(x0, T).item(), rel=1e-9)


@pytest.mark.parametrize("second_order", [False, True], ids=["ilqr", "ddp"])
def test_ilqr_swings_up_the_pendulum_with_known_dynamics(second_order):
    T, restarts = 100, 6
    x0 = torch.tensor([math.pi, 0.0], dtype=F64).expand(restarts, 2)  # hanging down, at rest

    def running(x, u):
        return 0.01 * u[..., 0] ** 2

    def final(x):
        return 100 * (1 - torch.cos(x[..., 0])) + 10 * x[..., 1] ** 2

    g = torch.Generator().manual_seed(0)
    u0 = 0.5 * torch.randn(restarts, T, 1, generator=g, dtype=F64)  # random restarts, solved as one batch
    res = ILQR(pendulum_dynamics, running, final, second_order=second_order, n_iterations=80).solve(x0, u0)
    assert res.history[-1] < res.history[0]
    best = int(res.cost.argmin())
    assert abs(angle_normalize(res.x[best, -1, 0]).item()) < 0.05
    assert abs(res.x[best, -1, 1].item()) < 0.3
    # the open-loop controls, replayed in gymnasium's own Pendulum-v1 from the same state, end upright too
    env = gym.make("Pendulum-v1").unwrapped
    env.reset(seed=0)
    env.state = np.array([math.pi, 0.0])
    for t in range(T):
        env.step(res.u[best, t].numpy().astype(np.float32))
    assert abs(float(angle_normalize(torch.tensor(env.state[0])))) < 0.05


def test_ilqr_through_a_learned_model_uses_autograd_jacobians():
    """iLQR on a network fitted to the double integrator recovers the LQR controls."""
    g = torch.Generator().manual_seed(0)
    X, U = 4 * torch.rand(2000, 2, generator=g) - 2, 10 * torch.rand(2000, 1, generator=g) - 5
    data = Transitions.from_arrays(X, U, -di_cost(X.double(), U.double()).float(), di_step(X.double(), U.double()))
    model = NeuralDynamics(2, 1, hidden_sizes=(64, 64), learn_reward=False)
    model.fit(data, epochs=100)
    T, x0 = 30, torch.tensor([[1.0, -0.5]], dtype=F64)
    res = ILQR(model_dynamics(model), di_cost, n_iterations=10).solve(x0, torch.zeros(1, T, 1, dtype=F64))
    true_cost = float(di_cost(ILQR(di_step, di_cost).rollout(x0, res.u)[..., :-1, :], res.u).sum())
    assert true_cost <= 1.03 * di_lqr_cost(x0, T).item()


# ---- MCTS ---------------------------------------------------------------------------------------------
class TrapTree:
    """Depth-3 tree, 3 actions. Action 0 pays 0.5 at once and nothing after; under action 1 only the
    branch (1, 2, ·) pays 1 at its end. A one-step greedy choice (0) and plain random rollouts
    (mean 1/3 under action 1) both prefer the trap; the optimal first move is 1."""

    n_actions = 3

    def step(self, state, action):
        path = state + (action,)
        if len(path) == 1:
            reward = {0: 0.5, 1: 0.0, 2: 0.2}[action]
        else:
            reward = 1.0 if len(path) == 3 and path[:2] == (1, 2) else 0.0
        return path, reward, len(path) == 3


class TicTacToe:
    """Two-player: the state is (board, player to move); the mover gets +1 for a win."""

    n_actions = 9
    lines = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]

    def legal_actions(self, state):
        board, _ = state
        return [i for i, v in enumerate(board) if v == 0]

    def step(self, state, action):
        board, player = state
        board = list(board)
        board[action] = player
        won = any(all(board[i] == player for i in line) for line in self.lines)
        done = won or all(v != 0 for v in board)
        return (tuple(board), -player), (1.0 if won else 0.0), done


def test_mcts_finds_the_optimal_first_move_behind_a_trap():
    model = TrapTree()
    greedy = max(range(3), key=lambda a: model.step((), a)[1])
    mcts = MCTS(model, n_simulations=2000, c_uct=1.0, seed=0)
    assert greedy == 0 and mcts.search(()) == 1
    stats = mcts.root_statistics()
    assert stats[1][0] > stats[0][0]  # most visits
    assert stats[1][1] > 0.8  # its value approaches the optimum 1 (> the trap's 0.5)


@pytest.mark.parametrize(
    "board,best",
    [
        # X (1) to move: complete the top row at 2 rather than anything else
        ((1, 1, 0, -1, -1, 0, 0, 0, 0), 2),
        # X to move: O (−1) threatens the diagonal 0-4-8; X must block at 8
        ((-1, 1, 0, 0, -1, 0, 1, 0, 0), 8),
    ],
)
def test_mcts_plays_tic_tac_toe_two_player_negamax(board, best):
    mcts = MCTS(TicTacToe(), n_simulations=3000, c_uct=1.0, rollout_depth=9, two_player=True, seed=0)
    assert mcts.search((board, 1)) == best


# ---- shooting planners -------------------------------------------------------------------------------
def test_shooting_planners_approach_the_lqr_optimum_on_known_dynamics():
    H, x0 = 20, torch.tensor([[1.0, 0.0]])
    optimum = di_lqr_cost(x0.double(), H).item()
    model = FunctionModel(lambda x, u: di_step(x, u), 2, 1)
    evaluator = TrajectoryEvaluator(model, reward_fn=lambda x, u, nxt: -di_cost(x, u))
    kw = dict(horizon=H, n_candidates=400, seed=0)
    low, high = torch.tensor([-5.0]), torch.tensor([5.0])
    costs = {}
    for name, planner in {
        "random": RandomShooting(evaluator, low, high, n_iterations=10, **kw),
        "cem": CEM(evaluator, low, high, n_iterations=20, n_elites=40, init_std=0.5, **kw),
        "mppi": MPPI(evaluator, low, high, n_iterations=20, temperature=0.003, init_std=0.1, **kw),
    }.items():
        plan = planner.plan(x0).actions
        costs[name] = -evaluator(x0, plan[:, None]).item()
    assert costs["cem"] <= 1.03 * optimum, costs
    assert costs["mppi"] <= 1.03 * optimum, costs
    assert costs["random"] > costs["cem"] and costs["random"] > 1.1 * optimum, costs


def test_trajectory_sampling_assigns_each_particle_to_one_member():
    """With a 'model' whose member m adds m to the state, particle p must follow member p mod M."""

    class Members:
        n_members, learn_reward = 3, True

        def begin_rollout(self):
            pass

        def propagate(self, obs, act, sample=True):
            shift = torch.arange(3.0)[:, None, None]
            return obs + shift, (obs + shift)[..., 0]

    evaluator = TrajectoryEvaluator(Members(), n_particles=6, risk="penalty", risk_coef=1.0)
    returns = evaluator.particle_returns(torch.zeros(2, 1), torch.zeros(2, 4, 3, 1))  # B=2, C=4, H=3
    # member m moves m per step and is rewarded its position: m + 2m + 3m = 6m; particle p ↦ member p mod 3
    expected = torch.tensor([0.0, 6.0, 12.0, 0.0, 6.0, 12.0])
    assert returns.shape == (2, 4, 6)
    torch.testing.assert_close(returns, expected.expand(2, 4, 6))
    score = evaluator(torch.zeros(2, 1), torch.zeros(2, 4, 3, 1))  # mean − β·std over particles
    torch.testing.assert_close(score, torch.full((2, 4), 6.0 - expected.std().item()))


# ---- models ------------------------------------------------------------------------------------------
def test_batched_members_equal_separate_networks():
    net = BatchedMLP(4, 3, 2, (16, 16), "silu")
    x = torch.randn(4, 10, 3)
    out = net(x)
    for m in range(4):
        h = x[m]
        for i, layer in enumerate(net.layers):
            h = h @ layer.weight[m] + layer.bias[m]
            if i < len(net.layers) - 1:
                h = torch.nn.functional.silu(h)
        torch.testing.assert_close(out[m], h)


def test_bootstrap_members_see_different_resamples():
    ens = BootstrapEnsemble(3, 1, n_members=5, hidden_sizes=(8,))
    idx = ens._member_indices(1000)
    assert idx.shape == (5, 1000)
    unique = [len(torch.unique(idx[m])) / 1000 for m in range(5)]
    assert all(0.58 < u < 0.68 for u in unique), unique  # 1 − 1/e ≈ 0.632 distinct per resample
    assert not torch.equal(idx[0], idx[1])


def test_gp_marginal_likelihood_and_posterior_match_scikit_learn():
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2 + 0.05 * rng.normal(size=30)
    gp = GPDynamics(obs_dim=1, act_dim=1, learn_reward=False, jitter=0.0)
    ls, sf, sn = np.array([0.7, 1.3]), 1.5, 0.2
    with torch.no_grad():
        gp.log_lengthscale.copy_(torch.log(torch.tensor(ls))[None])
        gp.log_signal_std.fill_(math.log(sf))
        gp.log_noise_std.fill_(math.log(sn))
    xt, yt = torch.tensor(x), torch.tensor(y)[:, None]
    ours = -gp.negative_log_marginal_likelihood(xt, yt).item()
    kernel = ConstantKernel(sf**2, "fixed") * RBF(ls, "fixed") + WhiteKernel(sn**2, "fixed")
    skl = GaussianProcessRegressor(kernel, alpha=0.0, optimizer=None, normalize_y=False).fit(x, y)
    assert ours == pytest.approx(skl.log_marginal_likelihood_value_, rel=1e-9)
    gp.x_train, gp.y_train = xt, yt
    x_new = rng.normal(size=(5, 2))
    with torch.no_grad():
        mean, var = gp.predict(
            torch.tensor(x_new[:, :1], dtype=torch.float32), torch.tensor(x_new[:, 1:], dtype=torch.float32)
        )
    skl_mean, skl_std = skl.predict(x_new, return_std=True)  # includes the white-noise variance
    np.testing.assert_allclose(mean[:, 0].numpy(), skl_mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(var[:, 0].numpy(), skl_std**2, rtol=1e-4, atol=1e-5)


def test_gp_fits_noise_free_data_with_repeated_points():
    """Deterministic linear dynamics with every transition seen twice: the likelihood wants zero noise
    and infinite length scales; the fit must stay finite and positive definite (an MPC run on such data
    once died in Cholesky inside the L-BFGS line search) and still predict the map."""
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, size=(60, 2)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(60, 1)).astype(np.float32)
    obs, act = np.concatenate([obs, obs]), np.concatenate([act, act])
    nxt = obs + 0.1 * np.stack([obs[:, 1], act[:, 0]], axis=1)
    data = Transitions.from_arrays(list(obs), list(act), list(-(obs[:, 0] ** 2)), list(nxt))
    gp = GPDynamics(2, 1)
    out = gp.fit(data)
    assert np.isfinite(out["model_loss"])
    assert all(torch.isfinite(p).all() for p in gp.parameters())
    x_new = torch.tensor(rng.uniform(-1, 1, size=(20, 2)), dtype=torch.float32)
    a_new = torch.tensor(rng.uniform(-1, 1, size=(20, 1)), dtype=torch.float32)
    with torch.no_grad():
        pred, _ = gp.mean_step(x_new, a_new)
    exact = x_new + 0.1 * torch.stack([x_new[:, 1], a_new[:, 0]], dim=1)
    assert float((pred - exact).abs().max()) < 1e-2


def test_gp_beats_a_small_network_at_50_transitions():
    train, test = pendulum_transitions(50, seed=0), pendulum_transitions(1000, seed=1)
    gp = GPDynamics(3, 1)
    gp.fit(train)
    nn_model = deterministic_dynamics(3, 1, hidden_sizes=(32, 32), seed=0)
    nn_model.fit(train, epochs=300, batch_size=32, holdout_ratio=0.0)

    def next_state_mse(model):
        with torch.no_grad():
            pred, _ = model.mean_step(test.obs, test.actions)
        return float((pred - test.next_obs).pow(2).mean())

    gp_mse, nn_mse = next_state_mse(gp), next_state_mse(nn_model)
    # the exact one-step map is smooth: 50 points pin it down for the GP far better than for the net
    assert gp_mse < 0.1 * nn_mse, (gp_mse, nn_mse)
    assert gp_mse < 1e-3


@pytest.mark.parametrize("kind", ["ensemble", "bnn", "gp"])
def test_model_uncertainty_is_higher_off_distribution(kind):
    data = pendulum_transitions(1500 if kind != "gp" else 200, seed=0)
    if kind == "ensemble":
        model = BootstrapEnsemble(3, 1, n_members=5, hidden_sizes=(64, 64), seed=0)
        model.fit(data, epochs=60)
    elif kind == "bnn":
        model = BNNDynamics(3, 1, n_members=5, hidden_sizes=(64, 64), seed=0)
        model.fit(data, epochs=60)
    else:
        model = GPDynamics(3, 1)
        model.fit(data)
    test = pendulum_transitions(500, seed=1)
    on = model.disagreement(test.obs, test.actions)
    # off the data: velocities beyond the env's ±8 rad/s limit and torques beyond ±2
    off = model.disagreement(test.obs * torch.tensor([1.0, 1.0, 3.0]), test.actions * 4)
    # (mean-field VI is known to underestimate the posterior spread: a lower bar for the BNN)
    factor = 3.0 if kind == "bnn" else 10.0
    assert off.median() > factor * on.median(), (float(on.median()), float(off.median()))
    # and the mean prediction on the data is good
    with torch.no_grad():
        pred, _ = model.mean_step(test.obs, test.actions)
    assert float((pred - test.next_obs).pow(2).mean()) < 0.01


def test_gaussian_ensemble_learns_the_reward_and_the_transition():
    data, test = pendulum_transitions(2000, seed=0), pendulum_transitions(500, seed=1)
    model = BootstrapEnsemble(3, 1, n_members=3, hidden_sizes=(64, 64), seed=0)
    model.fit(data, epochs=80)
    with torch.no_grad():
        pred, reward = model.mean_step(test.obs, test.actions)
    assert float((pred - pendulum_obs_dynamics(test.obs, test.actions)).pow(2).mean()) < 1e-3
    true_r = pendulum_reward(test.obs, test.actions)
    assert float((reward - true_r).pow(2).mean()) < 0.05 * float(true_r.var())
    # the predicted noise is small on this deterministic env (well below the targets' spread)
    assert float(model.aleatoric_variance(test.obs, test.actions).mean()) < 0.05 * float(data.targets().var(0).mean())


# ---- local models -----------------------------------------------------------------------------------
def test_local_linear_gaussian_models_recover_a_time_varying_system():
    """Per-step least squares recovers (A_t, B_t, c_t, Σ_t); with too few rollouts the global prior helps."""
    g = torch.Generator().manual_seed(0)
    T, dx, du = 10, 3, 2
    # linearizations along a trajectory drift slowly: a shared part plus a small per-step change
    A = (
        torch.eye(dx, dtype=F64)
        + 0.1 * torch.randn(dx, dx, generator=g, dtype=F64)
        + 0.02 * torch.randn(T, dx, dx, generator=g, dtype=F64)
    )
    B = torch.randn(dx, du, generator=g, dtype=F64) + 0.05 * torch.randn(T, dx, du, generator=g, dtype=F64)
    c = 0.1 * torch.randn(T, dx, generator=g, dtype=F64)

    def rollouts(n):
        x = torch.randn(n, dx, generator=g, dtype=F64)
        xs, us = [x], []
        for t in range(T):
            u = torch.randn(n, du, generator=g, dtype=F64)
            x = x @ A[t].T + u @ B[t].T + c[t] + 0.01 * torch.randn(n, dx, generator=g, dtype=F64)
            xs.append(x), us.append(u)
        return torch.stack(xs, 1), torch.stack(us, 1)

    model = TimeVaryingLinearGaussian(prior_strength=0.0).fit(*rollouts(50))
    assert (model.A - A).abs().max() < 0.02 and (model.B - B).abs().max() < 0.02
    assert (model.c - c).abs().max() < 0.02
    assert model.cov[0].diagonal().mean().item() == pytest.approx(1e-4, rel=0.5)
    # LQR on the fitted local model gives the gains of LQR on the true one
    F_hat, f_hat = model.lqr_dynamics()
    C = torch.eye(dx + du, dtype=F64).expand(T, -1, -1)
    true = lqr_backward(torch.cat([A, B], -1), c, C, torch.zeros(T, dx + du, dtype=F64), dx)
    fitted = lqr_backward(F_hat, f_hat, C, torch.zeros(T, dx + du, dtype=F64), dx)
    assert (true.K - fitted.K).abs().max() < 0.02
    # with 4 rollouts per step (fewer than dim x + dim u + 1 = 6) the global prior keeps the fit sane
    few = rollouts(4)
    with_prior = TimeVaryingLinearGaussian(prior_strength=1.0).fit(*few)
    without = TimeVaryingLinearGaussian(prior_strength=0.0, ridge=1e-3).fit(*few)
    err = lambda m: float(((m.A - A) ** 2).mean() + ((m.B - B) ** 2).mean())  # noqa: E731
    assert err(with_prior) < err(without)


# ---- policies through models -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def learned_double_integrator(_one_thread):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    X, U = 4 * torch.rand(3000, 2, generator=g) - 2, 10 * torch.rand(3000, 1, generator=g) - 5
    data = Transitions.from_arrays(X, U, -di_cost(X.double(), U.double()).float(), di_step(X.double(), U.double()))
    model = NeuralDynamics(2, 1, hidden_sizes=(64, 64), learn_reward=False, seed=0)
    model.fit(data, epochs=100)
    return model, X


def test_bptt_through_a_learned_model_approaches_the_lqr_controller(learned_double_integrator):
    model, starts = learned_double_integrator
    policy = DeterministicPolicy(2, 1, -5.0, 5.0, (64, 64))
    trainer = BPTTPolicyTrainer(
        model, policy, horizon=20, gamma=1.0, lr=3e-3, reward_fn=lambda x, u, nxt: -di_cost(x, u), seed=0
    )
    trainer.train(starts, n_steps=250, batch_size=256)
    x_test = 2 * torch.rand(64, 2, generator=torch.Generator().manual_seed(1), dtype=F64) - 1
    T = 50
    optimum = di_lqr_cost(x_test, T).mean().item()
    achieved = closed_loop_cost(policy, x_test, T)
    do_nothing = closed_loop_cost(lambda x: torch.zeros(x.shape[0], 1, dtype=x.dtype), x_test, T)
    assert achieved <= 1.15 * optimum, (achieved, optimum, do_nothing)
    assert do_nothing > 10 * optimum


def test_dual_gradient_descent_collocation_trains_a_policy_that_satisfies_the_constraint(learned_double_integrator):
    model, _ = learned_double_integrator
    torch.manual_seed(0)
    policy = DeterministicPolicy(2, 1, -5.0, 5.0, (64, 64))
    B, T = 32, 50
    x0 = 2 * torch.rand(B, 2, generator=torch.Generator().manual_seed(2), dtype=F64) - 1
    trainer = DualGradientDescentTrainer(
        model_dynamics(model), di_cost, policy, rho=0.01, rho_growth=2.0, policy_steps=150, ilqr_iterations=5
    )
    history = trainer.train(x0, torch.zeros(B, T, 1, dtype=F64), n_outer=8)
    # the constraint u_t = π_θ(x_t) ends (almost) satisfied, with the multipliers doing their part
    assert history[-1]["constraint_violation"] < 0.01 < history[0]["constraint_violation"]
    assert trainer.lam.abs().max() > 0
    # the trajectories stay near-optimal for the task, and the policy alone controls new starts well
    assert history[-1]["task_cost"] <= 1.1 * di_lqr_cost(x0, T).mean().item()
    x_test = 2 * torch.rand(64, 2, generator=torch.Generator().manual_seed(1), dtype=F64) - 1
    assert closed_loop_cost(policy, x_test, T) <= 1.15 * di_lqr_cost(x_test, T).mean().item()
