"""The shared optimizer step, optimizer choice, transitions container and agent composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core_rl.common import optim
from core_rl.common.errors import ConfigError
from core_rl.common.transitions import Transitions


def _net_and_batch(seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return net, torch.randn(16, 3), torch.randn(16, 1)


@pytest.mark.parametrize("max_norm", [None, 0.05, 100.0])
def test_step_is_backward_clip_and_step(max_norm):
    ours, x, y = _net_and_batch(0)
    ref, _, _ = _net_and_batch(0)
    opt_a = torch.optim.Adam(ours.parameters(), lr=1e-2)
    opt_b = torch.optim.Adam(ref.parameters(), lr=1e-2)
    for _ in range(3):
        norm = optim.step(opt_a, (ours(x) - y).pow(2).mean(), max_norm)
        opt_b.zero_grad()
        (ref(x) - y).pow(2).mean().backward()
        ref_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm) if max_norm is not None else None
        opt_b.step()
        if max_norm is None:
            assert norm is None
        else:
            assert torch.allclose(norm, ref_norm)
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(p, q)


def test_step_without_a_loss_uses_the_stored_gradients():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([p], lr=1.0)
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])  # ‖g‖ = 5, clipped to 1
    norm = optim.step(opt, None, max_grad_norm=1.0)
    assert float(norm) == pytest.approx(5.0)
    assert torch.allclose(p.detach(), torch.tensor([-0.6, -0.8, 0.0, 0.0]), atol=1e-6)


def test_flat_grad_step_has_the_bits_of_step_and_survives_a_zero_grad_and_a_state_reload():
    ours, x, y = _net_and_batch(1)
    ref, _, _ = _net_and_batch(1)
    opt_a, opt_b = optim.make_adam(ours.parameters(), 1e-2), optim.make_adam(ref.parameters(), 1e-2)
    flat = optim.FlatGradStep.build(opt_a)
    assert flat is not None
    for i in range(6):
        if i == 2:
            opt_a.zero_grad(set_to_none=True)  # frees the views: the next step puts them back
        if i == 4:  # a checkpoint reload replaces the optimizer's state tensors: FlatStep adopts them
            opt_a.load_state_dict(opt_b.state_dict())
        flat.step((ours(x) - y).pow(2).mean())
        optim.step(opt_b, (ref(x) - y).pow(2).mean())
        assert flat.flat_ok
        for p, q in zip(ours.parameters(), ref.parameters()):
            assert torch.equal(p, q)
    assert optim.FlatGradStep.build(optim.make_adam(ours.parameters(), 1e-2)) is None  # already flat elsewhere


def test_flat_grad_step_takes_a_step_that_misses_a_parameter_the_torch_way():
    """A parameter the loss does not reach keeps ``.grad`` None for torch's Adam, which then leaves it alone;
    a zero flat gradient would move it by its momentum. The flat step notices and steps as torch does."""
    ours, x, y = _net_and_batch(2)
    ref, _, _ = _net_and_batch(2)
    opt_a, opt_b = optim.make_adam(ours.parameters(), 1e-2), optim.make_adam(ref.parameters(), 1e-2)
    flat = optim.FlatGradStep.build(opt_a)
    for i in range(4):
        head_only = i >= 2  # from step 2 on, only the last layer's bias is trained
        loss_a = (ours[2].bias - y).pow(2).mean() if head_only else (ours(x) - y).pow(2).mean()
        loss_b = (ref[2].bias - y).pow(2).mean() if head_only else (ref(x) - y).pow(2).mean()
        flat.step(loss_a)
        optim.step(opt_b, loss_b)
        assert flat.flat_ok is not head_only
        for p, q in zip(ours.parameters(), ref.parameters()):
            assert torch.equal(p, q)


def test_make_optimizer_names_and_errors():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(optim.make_optimizer("adam", params, 1e-3), torch.optim.Adam)
    rms = optim.make_optimizer("rmsprop", params, 1e-3)
    assert isinstance(rms, torch.optim.RMSprop) and rms.defaults["alpha"] == 0.95 and rms.defaults["eps"] == 1e-2
    assert isinstance(optim.make_optimizer("sgd", params, 1e-3), torch.optim.SGD)
    with pytest.raises(ConfigError, match="optimizer"):
        optim.make_optimizer("adagrad", params, 1e-3)  # type: ignore[arg-type]


def test_transitions_encode_indices_and_features():
    ints = Transitions.from_arrays(
        np.array([0, 1, 2]), np.array([1, 0, 1]), [1.0, 0.0, 2.0], np.array([1, 2, 0]), [0, 0, 1]
    )
    assert ints.obs.dtype == torch.long and ints.actions.dtype == torch.long and ints.actions.shape == (3,)
    assert len(ints) == 3 and ints.dones.tolist() == [0.0, 0.0, 1.0]
    feats = Transitions.from_arrays(np.zeros((3, 2)), np.array([0.5, -0.5, 0.0]), [1.0, 0.0, 2.0], np.ones((3, 2)))
    assert feats.actions.shape == (3, 1) and feats.actions.dtype == torch.float32 and feats.dones.sum() == 0
    assert feats.inputs().shape == (3, 3) and torch.equal(feats.targets()[:, :2], torch.ones(3, 2))
    with pytest.raises(ConfigError, match="'rewards'"):
        Transitions.from_arrays(np.zeros((3, 2)), np.zeros(3), [1.0], np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="differ in shape"):
        Transitions.from_arrays(np.zeros((3, 2)), np.zeros(3), np.zeros(3), np.zeros((3, 4)))
