r"""Known dynamics, rewards and terminations of a few gymnasium envs, written in torch.

They serve three purposes: the true model for planners (iLQR swing-up, MCTS/MPC sanity checks),
a "known reward" r(s, a, s') for MPC when only p(s'|s, a) is learned (the usual PETS setup), and
the termination test for MBPO's model rollouts. Every function is batched over leading dims and
differentiable (autograd jacobians for iLQR/DDP).

Pendulum-v1 (gymnasium ``classic_control/pendulum.py``, g=10, m=1, l=1, dt=0.05):

.. math::
    u = \mathrm{clip}(u, -2, 2),\quad
    \dot\theta' = \mathrm{clip}\big(\dot\theta + (\tfrac{3g}{2l}\sin\theta + \tfrac{3}{ml^2}u)\,dt,\ -8, 8\big),\quad
    \theta' = \theta + \dot\theta' dt,

    r = -(\mathrm{norm}(\theta)^2 + 0.1\dot\theta^2 + 0.001u^2), \qquad o = (\cos\theta, \sin\theta, \dot\theta).

MountainCarContinuous-v0 (``continuous_mountain_car.py``; o = (x, v)):
:math:`v' = \mathrm{clip}(v + 0.0015\,\mathrm{clip}(u,-1,1) - 0.0025\cos 3x,\ \pm0.07)`,
:math:`x' = \mathrm{clip}(x + v', -1.2, 0.6)`, and :math:`v' = 0` when :math:`x'` hits −1.2 moving left.

CartPole-v1 (``cartpole.py``, Euler, τ = 0.02; the state is the observation (x, ẋ, θ, θ̇)):
:func:`cartpole_step` in numpy, for tree search over its two actions.

:data:`KNOWN_DYNAMICS` lists the continuous-action envs whose observation-space step is known
(the shooting planners' true models); :data:`KNOWN_SEARCH_MODELS` the discrete ones MCTS can search.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from core_rl.common.errors import ConfigError

PENDULUM_G, PENDULUM_M, PENDULUM_L, PENDULUM_DT = 10.0, 1.0, 1.0, 0.05
PENDULUM_MAX_SPEED, PENDULUM_MAX_TORQUE = 8.0, 2.0

RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def angle_normalize(x: torch.Tensor) -> torch.Tensor:
    """θ mapped to [−π, π)."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def pendulum_dynamics(state: torch.Tensor, u: torch.Tensor, clip_speed: bool = True) -> torch.Tensor:
    """One Pendulum-v1 step on the true state (θ, θ̇): ``state [..., 2], u [..., 1] -> [..., 2]``."""
    th, thdot = state[..., 0], state[..., 1]
    u = u[..., 0].clamp(-PENDULUM_MAX_TORQUE, PENDULUM_MAX_TORQUE)
    g, m, l, dt = PENDULUM_G, PENDULUM_M, PENDULUM_L, PENDULUM_DT
    new_thdot = thdot + (3 * g / (2 * l) * torch.sin(th) + 3.0 / (m * l**2) * u) * dt
    if clip_speed:
        new_thdot = new_thdot.clamp(-PENDULUM_MAX_SPEED, PENDULUM_MAX_SPEED)
    new_th = th + new_thdot * dt
    return torch.stack([new_th, new_thdot], dim=-1)


def pendulum_obs(state: torch.Tensor) -> torch.Tensor:
    """o = (cos θ, sin θ, θ̇)."""
    return torch.stack([torch.cos(state[..., 0]), torch.sin(state[..., 0]), state[..., 1]], dim=-1)


def pendulum_obs_dynamics(obs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The true Pendulum-v1 step in observation space (o → o')."""
    state = torch.stack([torch.atan2(obs[..., 1], obs[..., 0]), obs[..., 2]], dim=-1)
    return pendulum_obs(pendulum_dynamics(state, u))


def mountain_car_dynamics(obs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One MountainCarContinuous-v0 step on the observation (x, v): ``[..., 2], u [..., 1] -> [..., 2]``."""
    x, v = obs[..., 0], obs[..., 1]
    force = u[..., 0].clamp(-1.0, 1.0)
    v = (v + force * 0.0015 - 0.0025 * torch.cos(3 * x)).clamp(-0.07, 0.07)
    x = (x + v).clamp(-1.2, 0.6)
    v = torch.where((x <= -1.2) & (v < 0), torch.zeros_like(v), v)
    return torch.stack([x, v], dim=-1)


CARTPOLE_THRESHOLD_X, CARTPOLE_THRESHOLD_THETA = 2.4, 12 * 2 * math.pi / 360


def cartpole_step(state: np.ndarray, action: int) -> tuple[np.ndarray, bool]:
    """One CartPole-v1 step on the true state (x, ẋ, θ, θ̇): the next state and whether the episode
    terminates there (reward 1 every step, the terminating one included)."""
    g, m_cart, m_pole, half_length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total, pole_ml = m_cart + m_pole, m_pole * half_length
    x, x_dot, th, th_dot = (float(v) for v in state)
    force = force_mag if int(action) == 1 else -force_mag
    cos, sin = math.cos(th), math.sin(th)
    temp = (force + pole_ml * th_dot**2 * sin) / total
    th_acc = (g * sin - cos * temp) / (half_length * (4.0 / 3.0 - m_pole * cos**2 / total))
    x_acc = temp - pole_ml * th_acc * cos / total
    x, x_dot = x + tau * x_dot, x_dot + tau * x_acc
    th, th_dot = th + tau * th_dot, th_dot + tau * th_acc
    done = abs(x) > CARTPOLE_THRESHOLD_X or abs(th) > CARTPOLE_THRESHOLD_THETA
    return np.array([x, x_dot, th, th_dot]), done


def pendulum_reward(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor | None = None) -> torch.Tensor:
    """Pendulum-v1's reward from the observation (cos θ, sin θ, θ̇) before the step."""
    th = torch.atan2(obs[..., 1], obs[..., 0])
    u = action[..., 0].clamp(-PENDULUM_MAX_TORQUE, PENDULUM_MAX_TORQUE)
    return -(th**2 + 0.1 * obs[..., 2] ** 2 + 0.001 * u**2)


def mountain_car_reward(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """MountainCarContinuous-v0: +100 on reaching the goal (x' ≥ 0.45, v' ≥ 0), −0.1u² every step."""
    u = action[..., 0].clamp(-1.0, 1.0)
    return 100.0 * mountain_car_termination(obs, action, next_obs).float() - 0.1 * u**2


def mountain_car_termination(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    return (next_obs[..., 0] >= 0.45) & (next_obs[..., 1] >= 0.0)


def never_terminates(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(obs.shape[:-1], dtype=torch.bool, device=obs.device)


#: env id → (observation-space step o' = f(o, u), obs size, action size) of the continuous-action envs
KNOWN_DYNAMICS: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], int, int]] = {
    "Pendulum-v1": (pendulum_obs_dynamics, 3, 1),
    "MountainCarContinuous-v0": (mountain_car_dynamics, 2, 1),
}
#: discrete-action envs with a known deterministic step for tree search (state → next, done)
KNOWN_SEARCH_MODELS: dict[str, Callable[[np.ndarray, int], tuple[np.ndarray, bool]]] = {"CartPole-v1": cartpole_step}

KNOWN_REWARDS: dict[str, RewardFn] = {"Pendulum-v1": pendulum_reward, "MountainCarContinuous-v0": mountain_car_reward}
KNOWN_TERMINATIONS: dict[str, TerminationFn] = {
    "Pendulum-v1": never_terminates,
    "MountainCarContinuous-v0": mountain_car_termination,
}


def known_reward(env_id: str) -> RewardFn:
    try:
        return KNOWN_REWARDS[env_id]
    except KeyError:
        raise ConfigError(
            f"reward='known' needs a known reward function; none for env '{env_id}' "
            f"(known: {', '.join(sorted(KNOWN_REWARDS))}); use reward='learned'"
        ) from None


def known_termination(env_id: str) -> TerminationFn | None:
    """The env's termination test, or None when it is not known (model rollouts then never terminate)."""
    return KNOWN_TERMINATIONS.get(env_id)
