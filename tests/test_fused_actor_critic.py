"""The fused (autograd-free) PPO / A2C / DQN updates take the same steps as the autograd ones."""

from __future__ import annotations

import pytest
import torch

from core_rl.actor_critic.actor_critic import A2C
from core_rl.q_learning.dqn import DQN
from core_rl.trust_region.ppo import PPO

SMALL = {"n_envs": 4, "n_steps": 16, "seed": 3}
DQN_SMALL = {
    "seed": 0,
    "learning_starts": 100,
    "train_freq": 16,
    "gradient_steps": 8,
    "batch_size": 32,
    "hidden_sizes": (64, 64),
}


def _update(cls, env: str, cfg: dict, fused: bool) -> tuple[list[torch.Tensor], dict[str, float], object]:
    """One update from the same seed, with plain SGD so that the parameter change is −lr·(clipped) gradient."""
    agent = cls(env, {**SMALL, **cfg, "fused_update": fused})
    batch = agent.estimate(agent.collect())
    params = list(agent.policy.parameters()) + list(agent.value.parameters())
    agent.optimizer = torch.optim.SGD(params, lr=1.0 if cls is PPO else 0.05)  # PPO: far enough to clip
    before = [p.detach().clone() for p in params]
    metrics = agent.update(batch)
    return [p.detach() - b for p, b in zip(params, before)], metrics, agent


@pytest.mark.parametrize(
    "cls, env, cfg",
    [
        (PPO, "CartPole-v1", {"batch_size": 32, "n_epochs": 3, "ent_coef": 0.01, "clip_range_vf": 0.05}),
        (
            PPO,
            "Pendulum-v1",
            {"batch_size": 32, "n_epochs": 3, "ent_coef": 0.01, "activation": "relu", "vf_coef": 1e-3},
        ),
        (A2C, "CartPole-v1", {"ent_coef": 0.01}),
        (A2C, "Pendulum-v1", {"normalize_advantage": True, "max_grad_norm": None}),
    ],
)
def test_fused_update_matches_autograd(cls, env, cfg):
    fused_steps, fused_metrics, agent = _update(cls, env, cfg, fused=True)
    assert agent._fused_actor_critic() is not None
    auto_steps, auto_metrics, agent = _update(cls, env, cfg, fused=False)
    assert agent._fused_actor_critic() is None
    for fused, auto in zip(fused_steps, auto_steps):
        assert auto.abs().max() > 0 or fused.abs().max() == 0
        torch.testing.assert_close(fused, auto, rtol=1e-4, atol=1e-6)
    assert fused_metrics.keys() == auto_metrics.keys()
    for name, value in auto_metrics.items():
        assert fused_metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    if cls is PPO:  # the steps after the first move the ratio: the clipped branch of the gradient is exercised
        assert auto_metrics["clip_fraction"] > 0


@pytest.mark.parametrize("cfg", [{"activation": "elu"}, {"use_sde": True}, {"fused_update": False}])
def test_fused_update_falls_back_where_it_does_not_apply(cfg):
    agent = PPO("Pendulum-v1", {**SMALL, "batch_size": 32, **cfg})
    assert agent._fused_actor_critic() is None
    agent.learn(64)  # the autograd path runs


@pytest.mark.parametrize(
    "cls, env, cfg", [(PPO, "CartPole-v1", {"batch_size": 32, "n_epochs": 2}), (A2C, "Pendulum-v1", {})]
)
def test_flat_optimizer_step_matches_torch_and_checkpoints(cls, env, cfg, tmp_path):
    """Adam / RMSprop on flat buffers (FlatStep) take torch's steps, and the state they leave in the
    optimizer is torch's: a checkpoint saved after fused updates resumes into the same parameters."""
    agents = []
    for fused in (True, False):
        agent = cls(env, {**SMALL, **cfg, "fused_update": fused}).learn(128)
        agents.append(agent)
    fused, auto = agents
    assert fused._fused_actor_critic().flat_step is not None
    for p, q in zip(fused.optimizer.param_groups[0]["params"], auto.optimizer.param_groups[0]["params"]):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
        for key, value in auto.optimizer.state[q].items():
            torch.testing.assert_close(fused.optimizer.state[p][key], value, rtol=1e-4, atol=1e-7)
    fused.save(tmp_path / "agent")
    restored = cls.load(tmp_path / "agent", env=env)
    batch = fused.estimate(fused.collect())
    for agent in (fused, restored):
        torch.manual_seed(0)
        agent.update(batch)
    for p, q in zip(fused.policy.parameters(), restored.policy.parameters()):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize(
    "cfg",
    [{"prioritized": True}, {"loss": "mse", "activation": "tanh", "double_q": True, "max_grad_norm": None}],
)
def test_fused_dqn_step_matches_autograd(cfg):
    """DQN's autograd-free gradient step (FusedQ: Huber/MSE, importance weights, ReLU/tanh, clip) takes
    autograd's steps: the same network after 96 gradient steps."""
    nets = []
    for fused in (True, False):
        agent = DQN("CartPole-v1", {**DQN_SMALL, **cfg, "fused_update": fused}).learn(300)
        assert (agent._fused_q() is not None) == fused
        nets.append(list(agent.q_net.parameters()))
    for p, q in zip(*nets):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("act", "fast_tanh"), [(torch.nn.Tanh, False), (torch.nn.Tanh, True), (torch.nn.ReLU, False)])
def test_mlp_chain_rule_equals_autograd(act, fast_tanh):
    """The fused module's own forward/backward: outputs and every ∂L/∂W, ∂L/∂b equal autograd's on a 2-hidden MLP
    (80 rows x 64 hidden = 5,120 values, so ``fast_tanh`` takes its 2σ(2x) − 1 branch)."""
    from core_rl.common.fused_actor_critic import flat_grad_views, mlp_backward, mlp_forward, mlp_layers

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 64), act(), torch.nn.Linear(64, 64), act(), torch.nn.Linear(64, 3))
    layers, kind = mlp_layers(net)
    assert kind == ("tanh" if act is torch.nn.Tanh else "relu")
    x, g_out = torch.randn(80, 5), torch.randn(80, 3)
    with torch.no_grad():
        y, hs = mlp_forward(layers, x, kind == "tanh", fast_tanh=fast_tanh)
    params = [p for lin in layers for p in (lin.weight, lin.bias)]
    _, views = flat_grad_views(params)
    with torch.no_grad():  # as in the agents' update: no autograd graph
        mlp_backward(layers, hs, list(zip(views[0::2], views[1::2])), g_out, kind == "tanh")
    y_ref = net(x)
    torch.testing.assert_close(y, y_ref.detach(), rtol=0, atol=1e-5 if fast_tanh else 0)
    (y_ref * g_out).sum().backward()
    for view, p in zip(views, params):
        torch.testing.assert_close(view, p.grad, rtol=1e-5, atol=1e-5)
    # not a plain Linear/activation chain: no fused path
    assert mlp_layers(torch.nn.Sequential(torch.nn.Linear(5, 4, bias=False))) is None
    assert (
        mlp_layers(
            torch.nn.Sequential(
                torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)
            )
        )
        is None
    )


def test_flat_step_of_a_fused_adam_is_torchs_fused_step_bit_for_bit():
    """FlatStep on an Adam built with ``fused=True`` runs torch's fused kernel on the flat buffers: the
    parameters and the state it leaves are exactly those of ``optimizer.step()`` on separate tensors."""
    from core_rl.common.fused_actor_critic import flat_grad_views
    from core_rl.common.optim import FlatStep, make_adam

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [make_adam(net.parameters(), lr=2.3e-3) for net in nets]
    params = list(nets[0].parameters())
    flat_grad, views = flat_grad_views(params)
    flat = FlatStep.build(opts[0], params, flat_grad)
    assert flat is not None and flat.fused_kernel
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        for view, g in zip(views, grads):
            view.copy_(g)
        flat.step()
        for p, g in zip(nets[1].parameters(), grads):
            p.grad = g.clone()
        opts[1].step()
    for p, q in zip(params, nets[1].parameters()):
        assert torch.equal(p, q)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opts[0].state[p][key], opts[1].state[q][key])
