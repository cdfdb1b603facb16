"""Costs are first-class in the shared buffers; configs are validated per algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core_rl.common.errors import ConfigError
from core_rl.common.replay import ReplayBuffer


def test_replay_keeps_costs_and_discounts_them_over_n_steps_like_rewards():
    gamma = 0.9
    buf = ReplayBuffer(16, 1, (1,), (), n_step=3, gamma=gamma, n_costs=2)
    costs = [[1.0, 0.0], [0.0, 2.0], [4.0, 1.0], [8.0, 8.0]]
    for t, c in enumerate(costs):
        done = np.array([t == 3])
        buf.add(
            np.array([[t]]),
            np.array([0]),
            np.array([1.0]),
            np.array([[t + 1]]),
            done,
            np.array([False]),
            costs=np.array([c]),
        )
    sample = buf.gather(torch.tensor([0, 2]), torch.tensor([0, 0]))
    # from t=0: c_0 + γ c_1 + γ² c_2 ; from t=2 the episode ends at t=3: c_2 + γ c_3
    expected = torch.tensor(
        [[1.0 + gamma**2 * 4.0, gamma * 2.0 + gamma**2 * 1.0], [4.0 + gamma * 8.0, 1.0 + gamma * 8.0]]
    )
    torch.testing.assert_close(sample.costs, expected)
    torch.testing.assert_close(sample.rewards, torch.tensor([1 + gamma + gamma**2, 1 + gamma]))
    assert ReplayBuffer(4, 1, (1,), ()).gather(torch.tensor([0]), torch.tensor([0])).costs is None


def test_a_cost_buffer_refuses_steps_without_costs():
    buf = ReplayBuffer(4, 1, (1,), (), n_costs=1)
    with pytest.raises(ConfigError, match="costs"):
        buf.add(
            np.zeros((1, 1)), np.array([0]), np.array([0.0]), np.zeros((1, 1)), np.array([False]), np.array([False])
        )


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_use_critic_false_is_rejected_where_the_loss_needs_the_critic(algo):
    from core_rl.registry import get_algo

    with pytest.raises(ConfigError, match="use_critic"):
        get_algo(algo).cls("CartPole-v1", {"use_critic": False})
