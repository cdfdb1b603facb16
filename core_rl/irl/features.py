r"""What the tabular inverse-RL methods share: reward features, the expert's visitation and
feature expectations (notes 10/12).

A linear reward is :math:`r_w(s,a) = w^\top\phi(s,a)`; its expected discounted return under π is
:math:`w^\top\mu(\pi)` with the **feature expectations**

.. math:: \mu(\pi) = \mathbb E_\pi\Big[\sum_t\gamma^t\phi(s_t,a_t)\Big] = \sum_{s,a}\rho_\pi(s,a)\phi(s,a),

where :math:`\rho_\pi` is the discounted state-action visitation (``TabularMDP.occupancy_measure``).
From demonstrations :math:`\{\tau_i\}` the expert's visitation is estimated by
:math:`\hat\rho_E(s,a) = \frac1N\sum_i\sum_t\gamma^t\mathbf 1[s_{i,t}=s, a_{i,t}=a]`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from core_rl.common.errors import ConfigError
from core_rl.tabular.markov_chain import as_float_array
from core_rl.tabular.mdp import TabularMDP, Trajectories

#: an expert given as demonstrations or as a policy (S,), (S, A) or (H, S, A)
Expert = Trajectories | np.ndarray


def check_features(mdp: TabularMDP, features: ArrayLike) -> np.ndarray:
    r"""Features as an (S, A, K) array; state features (S, K) are shared by every action."""
    phi = as_float_array(features, "features")
    S, A = mdp.n_states, mdp.n_actions
    if phi.ndim == 2 and phi.shape[0] == S:
        phi = np.repeat(phi[:, None, :], A, axis=1)
    if phi.ndim != 3 or phi.shape[:2] != (S, A) or phi.shape[2] < 1:
        raise ConfigError(f"features must have shape (S, K) = ({S}, K) or (S, A, K) = ({S}, {A}, K), got {phi.shape}")
    return phi


def check_trajectories(mdp: TabularMDP, demos: Trajectories) -> Trajectories:
    s, a = np.asarray(demos.states), np.asarray(demos.actions)
    if s.ndim != 2 or a.ndim != 2 or s.shape[0] != a.shape[0] or s.shape[1] not in (a.shape[1], a.shape[1] + 1):
        raise ConfigError(f"demonstrations need states (n, T+1) and actions (n, T), got {s.shape} and {a.shape}")
    if a.shape[1] < 1 or s.shape[0] < 1:
        raise ConfigError("demonstrations are empty")
    if s.min() < 0 or s.max() >= mdp.n_states or a.min() < 0 or a.max() >= mdp.n_actions:
        raise ConfigError(
            f"demonstrations hold states outside [0, {mdp.n_states}) or actions outside [0, {mdp.n_actions})"
        )
    return demos


def empirical_visitation(mdp: TabularMDP, demos: Trajectories, gamma: float | None = None) -> np.ndarray:
    r""":math:`\hat\rho_E(s,a) = \frac1N\sum_i\sum_t\gamma^t\mathbf 1[s_{i,t}=s,a_{i,t}=a]`, shape (S, A).

    On an MDP with terminal states this is the episodic estimate of
    :meth:`~core_rl.tabular.TabularMDP.episodic_occupancy`: a demonstration counts its steps up to
    its first terminal state, which counts once (split evenly over the actions), and nothing after.
    """
    demos = check_trajectories(mdp, demos)
    gamma = mdp.gamma if gamma is None else gamma
    a = np.asarray(demos.actions)
    states = np.asarray(demos.states)
    s = states[:, : a.shape[1]]
    weights = np.broadcast_to(gamma ** np.arange(a.shape[1]), a.shape).copy()
    A = mdp.n_actions
    rho = np.zeros(mdp.n_states * A)
    term = np.asarray(mdp.terminal)
    if term.any():
        # steps before the first terminal state are live; the first terminal state is the entry
        in_term = term[states]  # (n, T or T+1)
        ended = np.cumsum(in_term, axis=1) > 0
        entry = in_term & (np.cumsum(in_term, axis=1) == 1)
        entry[:, 0] = False  # an episode that starts in a terminal state never ran
        weights = np.where(ended[:, : a.shape[1]], 0.0, weights)
        n_idx, t_idx = np.nonzero(entry)
        entry_w = np.repeat(gamma**t_idx / A, A)
        entry_sa = (states[n_idx, t_idx][:, None] * A + np.arange(A)[None]).ravel()
        np.add.at(rho, entry_sa, entry_w)
    np.add.at(rho, (s * A + a).ravel(), weights.ravel())
    return rho.reshape(mdp.n_states, A) / a.shape[0]


def empirical_policy(mdp: TabularMDP, demos: Trajectories) -> tuple[np.ndarray, np.ndarray]:
    r"""The expert's empirical :math:`\hat\pi_E(a|s)` (S, A) and a mask of the states it visited."""
    counts = empirical_visitation(mdp, demos, gamma=1.0)
    n = counts.sum(axis=1)
    visited = n > 0
    pi = np.where(visited[:, None], counts / np.maximum(n, 1e-300)[:, None], 1.0 / mdp.n_actions)
    return pi, visited


def initial_distribution(mdp: TabularMDP, demos: Trajectories | None, mu0: ArrayLike | None) -> np.ndarray:
    """``mu0`` if given, else the MDP's, else the demonstrations' empirical start distribution."""
    if mu0 is not None:
        from core_rl.tabular.markov_chain import check_distribution

        return check_distribution(mu0, mdp.n_states, "mu0")
    if mdp.mu0 is not None:
        return np.asarray(mdp.mu0)
    if demos is None:
        raise ConfigError("mu0 is required: the MDP has none and no demonstrations were given")
    return np.bincount(np.asarray(demos.states)[:, 0], minlength=mdp.n_states) / len(demos.states)


def expert_visitation(mdp: TabularMDP, expert: Expert, mu0: ArrayLike | None = None) -> np.ndarray:
    r"""The expert's discounted visitation :math:`\rho_E(s,a)`: empirical from demonstrations, exact
    (``episodic_occupancy``: terminal states counted once, on entry) from a policy."""
    if isinstance(expert, Trajectories):
        return empirical_visitation(mdp, expert)
    return mdp.episodic_occupancy(expert, initial_distribution(mdp, None, mu0))


def trajectories_from_demonstrations(mdp: TabularMDP, demos: Any) -> Trajectories:
    """Recorded episodes (a :class:`~core_rl.imitation.demonstrations.Demonstrations` on
    ``Discrete(S)`` observations and ``Discrete(A)`` actions) as equal-length :class:`Trajectories`.

    An episode of L steps fills ``states[i, :L]`` and ``actions[i, :L]``; the state it ends in
    (``next_observations`` of its last step, when recorded) fills ``states[i, L]``. An episode that
    ends in a terminal state of ``mdp`` is padded with that state (absorbing: the IRL methods count
    nothing after the entry); every other episode must be as long as the longest (T steps), since a
    rollout cut short says nothing about the steps it did not take. Raises one ConfigError naming
    the episode otherwise."""
    obs = np.asarray(demos.observations, dtype=np.int64)
    act = np.asarray(demos.actions, dtype=np.int64)
    episodes = np.asarray(demos.episodes)
    if obs.ndim != 1 or act.ndim != 1:
        raise ConfigError("tabular IRL needs Discrete observations and actions (one integer each per step)")
    if obs.max() >= mdp.n_states or act.max() >= mdp.n_actions:
        raise ConfigError(
            f"demonstrations hold states outside [0, {mdp.n_states}) or actions outside [0, {mdp.n_actions})"
        )
    nxt = None if demos.next_observations is None else np.asarray(demos.next_observations, dtype=np.int64)
    ids, starts, lengths = np.unique(episodes, return_index=True, return_counts=True)
    T = int(lengths.max())
    term = np.asarray(mdp.terminal)
    states = np.zeros((len(ids), T + 1), dtype=np.int64)
    actions = np.zeros((len(ids), T), dtype=np.int64)
    for i, (start, L) in enumerate(zip(starts, lengths, strict=True)):
        states[i, :L] = obs[start : start + L]
        actions[i, :L] = act[start : start + L]
        final = obs[start + L - 1] if nxt is None else nxt[start + L - 1]  # unknown end: no entry seen
        states[i, L:] = final
        if L < T and not term[final]:
            why = "no 'next_obs' recorded" if nxt is None else f"state {final} is not terminal"
            raise ConfigError(
                f"demonstrations: episode {ids[i]} stops after {L} steps without entering a terminal state "
                f"({why}) while the longest runs {T}; give episodes of equal length or ending in a "
                "terminal state (with 'next_obs' in an .npz file)"
            )
    return Trajectories(states=states, actions=actions, rewards=mdp.r[states[:, :T], actions])


def feature_expectations(visitation: np.ndarray, features: np.ndarray) -> np.ndarray:
    r""":math:`\mu = \sum_{s,a}\rho(s,a)\phi(s,a)`, shape (K,)."""
    return np.einsum("sa,sak->k", visitation, features)
