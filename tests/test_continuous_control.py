"""Continuous-action Q-learning (notes 9/14): train a maximizer (DDPG, TD3, SAC), an easily
maximizable Q (NAF), sampled maxima (QT-Opt). Learning tests on Pendulum-v1 (random ≈ −1200,
solved ≈ −150); estimator tests against exact answers."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from core_rl import ConfigError, SpaceError, make_agent
from core_rl.common.base import Agent
from core_rl.common.replay import ReplaySample
from core_rl.common.tracking import MemoryTracker
from core_rl.continuous import critics
from core_rl.continuous.critics import ActionScaler, OrnsteinUhlenbeckNoise, QEnsemble
from core_rl.continuous.ddpg import DDPG
from core_rl.continuous.naf import NAF, NAFNetwork
from core_rl.continuous.sac import SAC, soft_state_value
from core_rl.continuous.sampled_max import QTOpt, cem_max, random_shooting_max
from core_rl.continuous.td3 import TD3
from tests.seeding import seed as shifted

SMALL = dict(hidden_sizes=(64, 64), lr=1e-3, batch_size=256, buffer_size=100_000, learning_starts=1000, seed=shifted(0))


def pendulum_return(agent) -> float:
    return agent.evaluate(10)["mean_return"]


# ---- learning ------------------------------------------------------------------------------


def test_sac_solves_pendulum_and_alpha_tracks_target_entropy():
    tracker = MemoryTracker()
    agent = SAC("Pendulum-v1", SMALL, tracker=tracker)
    agent.learn(8000)  # at 5k, seeds 3 and 5 had not swung up yet (-613, -502)
    assert pendulum_return(agent) >= -250  # at 5k over seeds 0-2: -123, -137, -135 (random ≈ -1200)
    alpha = [v for _, v in tracker.metrics["alpha"]]
    entropy = [v for _, v in tracker.metrics["entropy"]]
    # the policy starts above the target entropy −|A| = −1 (≈ +0.7), so α falls from 1 (measured: to ≈ 0.2)
    # until the entropy settles near −1 (measured: mean of the last three logs ≈ −0.85)
    assert alpha[0] > 0.9 and alpha[-1] < 0.3, alpha
    assert entropy[0] > 0.0 and abs(np.mean(entropy[-3:]) - agent.target_entropy) < 0.4, entropy


def test_td3_solves_pendulum():
    # 8000 steps left seed 2 at -409; measured at 10 000 over seeds 0-2: -110, -125, -136 (random ≈ -1200)
    agent = TD3("Pendulum-v1", {**SMALL, "gamma": 0.98})
    agent.learn(10_000)
    assert pendulum_return(agent) >= -250


def test_ddpg_with_ou_noise_learns_pendulum():
    agent = DDPG("Pendulum-v1", {**SMALL, "exploration_noise": "ou", "noise_std": 0.5})
    agent.learn(6000)
    assert pendulum_return(agent) >= -300  # measured over seeds 0-2: -109, -125, -134


def test_naf_learns_pendulum():
    # measured over seeds 0-2: -793/-140/-139 at 6000 steps, -341/-140/-137 at 10 000, -146/-140/-135 at
    # 14 000 (solved ≈ -150, random ≈ -1200): at 14 000 every seed swings up and holds
    agent = NAF("Pendulum-v1", SMALL)
    agent.learn(14_000)
    assert pendulum_return(agent) >= -300


@pytest.mark.slow  # ~1 min; SAC/TD3/DDPG/NAF cover continuous control in the fast tier
def test_qt_opt_with_cem_learns_pendulum():
    # 6000 steps sat on the edge (issue 12: -405 on a Xeon; seed 2 here: -702 at 6000, -152 at 8000);
    # measured at 10 000 over seeds 0-2: -126, -215, -135 (8000: -139, -123, -152). Random ≈ -1200.
    agent = QTOpt("Pendulum-v1", {**SMALL, "batch_size": 128, "target_n_samples": 16})
    agent.learn(10_000)
    assert pendulum_return(agent) >= -400


# ---- TD3's target: twin min and policy smoothing, on a crafted critic ---------------------------


def craft_linear_critic(critic: QEnsemble, slopes, offsets) -> None:
    """hidden (2,), relu: h = (relu(a), relu(−a)), Q_k = slope_k·(h₁ − h₂) + offset_k = slope_k·a + offset_k."""
    with torch.no_grad():
        w0, w1 = critic.weights
        b0, b1 = critic.biases
        w0.zero_(), b0.zero_(), b1.zero_()
        w0[:, -1, 0], w0[:, -1, 1] = 1.0, -1.0
        for k, (s, o) in enumerate(zip(slopes, offsets)):
            w1[k, :, 0] = torch.tensor([s, -s])
            b1[k] = o


def craft_constant_actor(actor, value: float) -> None:
    with torch.no_grad():
        last = actor.net[-1]
        last.weight.zero_()
        last.bias.fill_(math.atanh(value))


def fake_batch(n: int, obs_dim: int = 3) -> ReplaySample:
    g = torch.Generator().manual_seed(0)
    return ReplaySample(
        obs=torch.randn(n, obs_dim, generator=g),
        actions=torch.rand(n, 1, generator=g) * 4 - 2,
        rewards=torch.randn(n, generator=g),
        next_obs=torch.randn(n, obs_dim, generator=g),
        dones=(torch.rand(n, generator=g) < 0.2).float(),
        discounts=torch.full((n,), 0.99),
    )


def test_td3_target_takes_twin_min_and_smooths_the_target_action():
    batch = fake_batch(50_000)
    cfg = dict(hidden_sizes=(2,), learning_starts=0, target_noise=1.0, target_noise_clip=0.3)
    td3 = TD3("Pendulum-v1", cfg)
    craft_linear_critic(td3.critic_target, slopes=(1.0, 1.0), offsets=(1.0, -2.0))
    craft_constant_actor(td3.actor_target, 0.9)

    # smoothing: ã' = clip(μ'(s') + clip(ε, −c, c), −1, 1) with ε ~ N(0, 1), c = 0.3, μ' = 0.9
    a_tilde = td3.target_action(batch.next_obs)
    eps = a_tilde - 0.9
    assert eps.min() >= -0.3 - 1e-6 and a_tilde.max() <= 1.0
    assert abs((eps <= -0.3 + 1e-6).float().mean().item() - 0.3821) < 0.01  # P(ε ≤ −0.3), ε ~ N(0,1)
    assert abs((a_tilde >= 1.0 - 1e-6).float().mean().item() - 0.4602) < 0.01  # P(ε ≥ 0.1): clipped at the bound
    # twin min: Q₁ = a + 1, Q₂ = a − 2 → y = r + γ(1−d)(ã' − 2), with the same noise
    torch.manual_seed(1)
    y = td3.target_q(batch)
    torch.manual_seed(1)
    expected = batch.rewards + 0.99 * (1 - batch.dones) * (td3.target_action(batch.next_obs).squeeze(-1) - 2.0)
    assert torch.allclose(y, expected, atol=1e-5)
    assert not torch.allclose(y, batch.rewards + 0.99 * (1 - batch.dones) * (0.9 - 2.0), atol=1e-2)

    # DDPG is the same update with the switches off: one critic, no smoothing → Q₁(s', μ'(s'))
    ddpg = DDPG("Pendulum-v1", dict(hidden_sizes=(2,), learning_starts=0))
    craft_linear_critic(ddpg.critic_target, slopes=(1.0,), offsets=(1.0,))
    craft_constant_actor(ddpg.actor_target, 0.9)
    expected = batch.rewards + 0.99 * (1 - batch.dones) * (0.9 + 1.0)
    assert torch.allclose(ddpg.target_q(batch), expected, atol=1e-5)


def test_td3_delays_actor_and_target_updates():
    td3 = TD3("Pendulum-v1", {**SMALL, "policy_delay": 2})
    batch = fake_batch(64)
    snapshot = lambda m: [p.detach().clone() for p in m.parameters()]  # noqa: E731
    changed = lambda before, m: any(not torch.equal(a, b) for a, b in zip(before, m.parameters()))  # noqa: E731
    history = []
    for _ in range(4):
        actor, actor_t, critic = snapshot(td3.actor), snapshot(td3.actor_target), snapshot(td3.critic)
        td3.train_step(batch)
        td3.gradient_updates += 1
        history.append((changed(actor, td3.actor), changed(actor_t, td3.actor_target), changed(critic, td3.critic)))
    assert history == [(False, False, True), (True, True, True)] * 2


def test_sac_alpha_moves_toward_target_entropy():
    """α falls while the policy's entropy is above H̄ and rises while it is below."""
    for target_entropy, direction in ((-1.0, -1), (2.0, +1)):  # tanh-Gaussian entropy ≤ log 2 < 2
        agent = SAC("Pendulum-v1", {**SMALL, "target_entropy": target_entropy, "learning_starts": 0})
        batch = fake_batch(256)
        for _ in range(20):
            agent.train_step(batch)
        assert direction * math.log(agent.alpha) > 0.01, (target_entropy, agent.alpha)


def test_soft_state_value_estimators():
    """'logsumexp' with a uniform proposal on [-1, 1] → α log ∫ exp(Q/α) da; 'mean' → E[Q − α log π]."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(200_000, 1, generator=g) * 2 - 1
    q, log_q = -a.pow(2), torch.full_like(a, -math.log(2.0))
    exact = math.log(math.sqrt(math.pi) * math.erf(1.0))  # ∫_{-1}^{1} e^{−a²} da = √π erf(1)
    assert abs(soft_state_value(q, log_q, 1.0, "logsumexp").item() - exact) < 5e-3
    alpha = 0.5  # α log ∫ exp(Q/α) = 0.5 log(√(π/2) erf(√2))
    exact = 0.5 * math.log(math.sqrt(math.pi / 2) * math.erf(math.sqrt(2)))
    assert abs(soft_state_value(q, log_q, alpha, "logsumexp").item() - exact) < 5e-3
    assert abs(soft_state_value(q, log_q, alpha, "mean").item() - (-1 / 3 + alpha * math.log(2))) < 5e-3


# ---- NAF: the closed-form max --------------------------------------------------------------


def test_naf_closed_form_max_equals_grid_max():
    torch.manual_seed(0)
    space = gym.spaces.Box(-np.inf, np.inf, (3,))
    net = NAFNetwork(space, 2, (32, 32))
    with torch.no_grad():
        net.net[-1].weight.mul_(10)  # make μ, L non-trivial
        obs = torch.randn(6, 3)
        value, mu, L = net.heads(obs)
        assert (mu.abs() < 1).all() and mu.abs().max() > 0.2
        # the quadratic form is V − ½ (a−μ)ᵀ L Lᵀ (a−μ), P positive definite
        a = torch.rand(6, 2) * 2 - 1
        P = L @ L.transpose(1, 2)
        explicit = value - 0.5 * torch.einsum("bi,bij,bj->b", a - mu, P, a - mu)
        assert torch.allclose(net(obs, a), explicit, atol=1e-5)
        assert (torch.linalg.eigvalsh(P) > 0).all()
        # brute force over a 401×401 grid of [-1, 1]²
        g = torch.linspace(-1, 1, 401)
        grid = torch.cartesian_prod(g, g)  # [G, 2]
        q = NAFNetwork.q_from_heads(value[:, None], mu[:, None], L[:, None], grid[None])  # [6, G]
        best = q.max(1)
        assert torch.allclose(net(obs, mu), value, atol=1e-6)  # Q(s, μ(s)) = V(s)
        assert (best.values <= value + 1e-5).all()  # no grid point beats the closed form
        assert torch.allclose(best.values, value, atol=1e-3)
        assert torch.allclose(grid[best.indices], mu, atol=0.02)


# ---- QT-Opt: CEM vs random sampling --------------------------------------------------------


def test_cem_beats_random_sampling_on_a_quadratic_q():
    torch.manual_seed(0)
    dim, n_states = 6, 512
    a_star = torch.rand(n_states, dim) * 1.6 - 0.8  # the known argmax, one per state
    obs = torch.cat([a_star, torch.zeros(n_states, 1)], dim=1)  # the state carries its optimum
    scales = torch.linspace(1.0, 4.0, dim)

    def q_fn(o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return -((a - o[:, :dim]).pow(2) * scales).sum(-1)

    g = torch.Generator().manual_seed(1)
    a_cem, v_cem = cem_max(q_fn, obs, dim, n_samples=64, n_iters=4, n_elites=6, generator=g)
    a_rnd, v_rnd = random_shooting_max(q_fn, obs, dim, n_samples=256, generator=g)  # the same 256 evaluations
    err_cem = (a_cem - a_star).norm(dim=1).mean().item()
    err_rnd = (a_rnd - a_star).norm(dim=1).mean().item()
    assert torch.allclose(v_cem, q_fn(obs, a_cem)) and (a_cem.abs() <= 1).all()
    assert err_cem < 0.4 * err_rnd, (err_cem, err_rnd)
    assert (v_cem >= v_rnd).float().mean() > 0.9


# ---- shared pieces and the API -------------------------------------------------------------


def test_action_scaling_and_env_scale_replay():
    space = gym.spaces.Box(np.array([0.0, -3.0], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32))
    scaler = ActionScaler(space)
    ones = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])
    env_a = scaler.unnormalize(ones)
    assert torch.allclose(env_a, torch.tensor([[0.0, -3.0], [2.0, 1.0], [1.0, -1.0]]))
    assert torch.allclose(scaler.normalize(env_a), ones)
    with pytest.raises(SpaceError, match="bounded"):
        ActionScaler(gym.spaces.Box(-np.inf, np.inf, (1,)))
    # Pendulum's torque is in [-2, 2]: warm-up and policy actions are stored at env scale
    agent = SAC("Pendulum-v1", {**SMALL, "learning_starts": 300})
    agent.learn(600)
    stored = agent.replay.actions[:600].flatten()
    assert stored.min() < -1.8 and stored.max() > 1.8 and stored.abs().max() <= 2.0
    obs = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    assert np.abs(agent.predict(obs, deterministic=False)).max() <= 2.0


def test_ou_noise_is_correlated_and_resets_per_env():
    torch.manual_seed(0)
    noise = OrnsteinUhlenbeckNoise(2, 1, std=0.5, theta=0.15, dt=1e-2)
    xs = torch.stack([noise() for _ in range(3000)])[:, 0, 0]
    lag1 = torch.corrcoef(torch.stack([xs[:-1], xs[1:]]))[0, 1].item()
    assert lag1 > 0.95
    noise.reset(np.array([True, False]))
    assert noise.state[0].abs().sum() == 0 and noise.state[1].abs().sum() > 0


def test_vector_envs_ou_noise_and_random_maximizer():
    agent = QTOpt(
        "Pendulum-v1",
        {
            "n_envs": 3,
            "maximizer": "random",
            "exploration_noise": "ou",
            "noise_std": 0.3,
            "hidden_sizes": (16, 16),
            "learning_starts": 150,
            "batch_size": 32,
        },
    )
    agent.learn(300)
    assert agent.num_timesteps == 300 and agent.gradient_updates == 51
    acts = agent.replay.actions[:100]  # [T, n_envs, 1], env scale
    assert acts.shape == (100, 3, 1) and not torch.equal(acts[:, 0], acts[:, 1])
    assert acts[60:].abs().max() <= 2.0 and agent.noise.state.shape == (3, 1)


@pytest.mark.parametrize("algo", ["ddpg", "td3", "sac", "naf", "qt_opt"])
def test_registry_seeding_and_checkpoints(algo, tmp_path):
    cfg = {"hidden_sizes": (32, 32), "learning_starts": 200, "batch_size": 64, "seed": shifted(3)}
    a = make_agent(algo, "Pendulum-v1", cfg).learn(400)
    b = make_agent(algo, "Pendulum-v1", cfg).learn(400)
    obs = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    assert a.name == algo and a.gradient_updates == 201  # steps 200..400 each train once
    assert list(a.episode_returns) == list(b.episode_returns)
    assert np.array_equal(a.predict(obs), b.predict(obs))
    loaded = Agent.load(a.save(tmp_path / f"{algo}.pt"))
    assert type(loaded) is type(a) and np.array_equal(loaded.predict(obs), a.predict(obs))


def test_user_errors():
    with pytest.raises(SpaceError, match="Box"):
        make_agent("sac", "CartPole-v1")
    with pytest.raises(ConfigError, match="n_elites"):
        make_agent("qt_opt", "Pendulum-v1", {"n_samples": 4, "n_elites": 6})
    with pytest.raises(ConfigError, match="exploration_noise"):
        make_agent("ddpg", "Pendulum-v1", {"exploration_noise": "pink"})
    with pytest.raises(ConfigError, match="ent_coef"):
        make_agent("sac", "Pendulum-v1", {"ent_coef": "sometimes"})


# ---- the bf16 update mode (matmul_dtype) -------------------------------------------------------


@pytest.mark.parametrize("path", ["onednn", "autocast"])
@pytest.mark.parametrize("cls", [SAC, TD3])
def test_bf16_update_is_the_float32_update_to_bf16_precision(cls, path, monkeypatch):
    """One gradient step from the same networks and batch: the losses agree to bf16's ~3 digits, every
    parameter moves by the same Adam step (first step: ±lr per weight, sign of the gradient), the
    parameters stay float32, and the result is not bit-identical (the mode really ran in bf16). Both ways
    of computing it: oneDNN's bf16-precision matmuls (CPUs with bf16 instructions) and a bf16 autocast."""
    if path == "onednn" and not critics.onednn_bf16_matmuls_available():
        pytest.skip("this CPU or torch has no native oneDNN bf16 matmuls")
    if path == "autocast":
        monkeypatch.setattr(critics, "onednn_bf16_matmuls_available", lambda: False)
    batch = fake_batch(256)
    cfg = dict(hidden_sizes=(256, 256), learning_starts=0, seed=shifted(0), policy_delay=1) if cls is TD3 else None
    cfg = cfg or dict(hidden_sizes=(256, 256), learning_starts=0, seed=shifted(0))
    agents = {d: cls("Pendulum-v1", {**cfg, "matmul_dtype": d}) for d in ("float32", "bfloat16")}
    metrics = {}
    for d, agent in agents.items():
        torch.manual_seed(3)  # the same actor/target-smoothing noise for both
        with agent._update_context():
            metrics[d] = agent.train_step(batch)
            q = agent.critic(batch.obs, agent.scaler.normalize(batch.actions))
            assert q.dtype == torch.float32 and agent.actor(batch.obs)[0].dtype == torch.float32
    for key in ("critic_loss", "actor_loss"):
        assert metrics["bfloat16"][key] == pytest.approx(metrics["float32"][key], rel=2e-2, abs=1e-3), key
    assert metrics["bfloat16"] != metrics["float32"]
    for net in ("critic", "actor"):
        p32 = torch.cat([p.flatten() for p in getattr(agents["float32"], net).parameters()])
        p16 = torch.cat([p.flatten() for p in getattr(agents["bfloat16"], net).parameters()])
        assert p16.dtype == torch.float32
        assert (p32 - p16).abs().max() < 2.5 * agents["float32"].config.lr  # at most one flipped ±lr step
        close = ((p32 - p16).abs() < 0.1 * agents["float32"].config.lr).float().mean()
        assert close > 0.95  # almost every weight took the same step


@pytest.mark.slow  # ~18 s
def test_sac_in_bf16_mode_solves_pendulum():
    # 8k steps: at 5k, seeds 3 and 5 had not swung up yet (-600, -590; float32 alike: -613, -502); at 8k
    # seeds 0-5 gave -109, -121, -133, -217, -121, -143
    agent = SAC("Pendulum-v1", {**SMALL, "matmul_dtype": "bfloat16"})
    agent.learn(8000)
    assert pendulum_return(agent) >= -250  # as the float32 test's bar


@pytest.mark.parametrize("cls", [SAC, TD3])
def test_flat_optimizer_steps_give_the_same_run_bit_for_bit(cls, monkeypatch):
    """SAC's and TD3's critic and actor optimizers step on flat buffers (``flat_optimizers``): a seeded run
    ends with the same parameters as one stepped by ``optim.step``."""
    params = {}
    for flat in (True, False):
        if not flat:
            monkeypatch.setattr(cls, "flat_optimizers", ())
        agent = cls("Pendulum-v1", {"hidden_sizes": (32, 32), "learning_starts": 100, "seed": shifted(4)})
        agent.learn(400)
        params[flat] = torch.cat([p.detach().flatten() for m in (agent.actor, agent.critic) for p in m.parameters()])
        steps = list(agent.__dict__.get("_flat_steps", {}).values())
        assert (len(steps) == 2 and all(s is not None and s.flat_ok for s in steps)) if flat else not steps
    assert torch.equal(params[True], params[False])


def test_the_bf16_scope_ends_with_the_block_also_when_it_raises():
    """The oneDNN switch is process-wide: after the update (or an error inside it) float32 matmuls are exact again."""
    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    x, w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0)), torch.randn(256, 64)
    exact = (x.double() @ w.double()).float()
    with pytest.raises(RuntimeError, match="inside the update"):
        with critics.bf16_matmul_context(torch.device("cpu")):
            if critics.onednn_bf16_matmuls_available():
                assert matmul.fp32_precision == "bf16"
            else:
                assert torch.is_autocast_enabled("cpu")
            assert (x @ w - exact).abs().max() > 1e-2  # bf16 inputs: ~3 significant digits
            raise RuntimeError("inside the update")
    assert matmul.fp32_precision == before and not torch.is_autocast_enabled("cpu")
    assert (x @ w - exact).abs().max() < 1e-3


def test_bf16_mode_only_where_outputs_stay_float32():
    with pytest.raises(ConfigError, match="matmul_dtype"):
        make_agent("naf", "Pendulum-v1", {"matmul_dtype": "bfloat16"})
    with pytest.raises(ConfigError, match="matmul_dtype"):
        make_agent("sac", "Pendulum-v1", {"matmul_dtype": "bfloat16", "use_sde": True})
    with pytest.raises(ConfigError, match="matmul_dtype"):
        make_agent("td3", "Pendulum-v1", {"matmul_dtype": "float16"})


@pytest.mark.parametrize("cls", [SAC, TD3, DDPG])
def test_continuous_init_is_orthogonal_or_torchs_default(cls):
    """``init`` reaches the actor and every critic member: 'orthogonal' (the default) keeps zero biases and
    orthonormal hidden weights (gain √2); 'torch_default' is nn.Linear's own U(±1/√fan_in), as SB3's
    SAC/TD3/DDPG keep it, with members that differ; a bad value is one error naming the field."""
    cfg = {"seed": shifted(0), "hidden_sizes": (64, 64)}
    ortho, default = cls("Pendulum-v1", cfg), cls("Pendulum-v1", {**cfg, "init": "torch_default"})
    for w in ortho.critic.weights[:-1]:
        gram = w[0].detach().double().T @ w[0].detach().double()  # [d_out, d_out] of W_k: d_in × d_out
        if gram.shape[0] <= w.shape[1]:
            torch.testing.assert_close(
                torch.diagonal(gram), torch.full_like(torch.diagonal(gram), 2.0), atol=1e-5, rtol=0
            )
    assert not any(b.detach().any() for b in ortho.critic.biases)
    actor_linears = [m for m in default.actor.modules() if isinstance(m, torch.nn.Linear)]
    for lin in actor_linears:
        bound = lin.in_features**-0.5
        assert bound >= lin.weight.abs().max() > 0.9 * bound and bound >= lin.bias.abs().max() > 0
    for w, b in zip(default.critic.weights, default.critic.biases):
        bound = w.shape[1] ** -0.5  # [K, d_in, d_out]
        assert bound >= w.abs().max() > 0.9 * bound and bound >= b.abs().max() > 0
        assert not torch.equal(w[0], w[-1]) or w.shape[0] == 1
    default.learn(default.config.learning_starts + 64)  # the update runs on these weights
    with pytest.raises(ConfigError, match="init"):
        cls("Pendulum-v1", {**cfg, "init": "xavier"})
