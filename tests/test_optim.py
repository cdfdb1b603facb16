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
