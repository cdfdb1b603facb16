r"""Tabular Markov decision processes, the notes' (9/5) :math:`\mathcal M = \{\mathcal S, \mathcal A, \mathcal T, r\}`.

The notes add actions and a reward to the Markov chain. With :math:`\mu_{t,j} = p(s_t=j)`,
:math:`\xi_{t,k} = p(a_t=k)` and

.. math::
    \mathcal T_{i,j,k} = p(s_{t+1}=i \mid s_t=j, a_t=k), \qquad
    \mu_{t+1,i} = \sum_{j,k} \mathcal T_{i,j,k}\, \mu_{t,j}\, \xi_{t,k}.

The notes' :math:`\xi_{t,k}` is an open-loop action distribution; under a (closed-loop) policy the
action depends on the state, :math:`p(s_t=j, a_t=k) = \mu_{t,j}\pi(a_t=k|s_t=j)`, and
:meth:`TabularMDP.state_marginals` computes

.. math::
    \mu_{t+1,i} = \sum_{j,k} \mathcal T_{i,j,k}\, \mu_{t,j}\, \pi_t(k \mid j),

which is the notes' formula whenever the policy ignores the state (:math:`\pi_t(k|j) = \xi_{t,k}`).
The policy turns the MDP into a Markov chain over states with
:math:`(\mathcal T_\pi)_{i,j} = \sum_k \mathcal T_{i,j,k}\pi(k|j)` (:meth:`induced_chain`), and into
one over state-action pairs, :math:`p((s',a')|(s,a)) = p(s'|s,a)\,\pi(a'|s')`
(:meth:`state_action_chain`), whose stationary distribution is :math:`\mu_\pi(s)\pi(a|s)`.

Q- and value functions (9/5), with discount γ (9/7) and, optionally, a horizon T:

.. math::
    Q^\pi(s_t,a_t) = \sum_{t'=t}^{T} \mathbb E_\pi[\gamma^{t'-t} r(s_{t'},a_{t'}) \mid s_t,a_t], \qquad
    V^\pi(s_t) = \mathbb E_{a_t\sim\pi(a_t|s_t)}[Q^\pi(s_t,a_t)],

    Q^\pi(s,a) = r(s,a) + \gamma\, \mathbb E_{s'\sim p(s'|s,a)}[V^\pi(s')].

**Array conventions.** Two views of the same dynamics are exposed, both read-only:

* ``mdp.T`` — the notes' operator, shape (S', S, A): ``T[i, j, k] = p(s'=i | s=j, a=k)``;
* ``mdp.P`` — the computational layout, shape (S, A, S'): ``P[s, a, s'] = p(s' | s, a)``,
  so ``P @ V`` is :math:`\mathbb E[V(s')\mid s,a]` for every (s, a) at once. ``P`` is what is stored.

``mdp.r`` is the expected reward :math:`r(s,a) = \sum_{s'} p(s'|s,a)\,r(s,a,s')`, shape (S, A).
A policy is a row-stochastic array ``pi[s, a] = π(a|s)`` of shape (S, A), an integer array of
actions of shape (S,) (deterministic), or either with a leading time axis (H, ...) for a
time-varying (finite-horizon) policy. Terminal states (``mdp.terminal``) are absorbing with zero
reward, so every value below is that of the episodic task.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import ArrayLike

from core_rl.common.envs import make_env
from core_rl.common.errors import ConfigError, EnvError, SpaceError
from core_rl.tabular.markov_chain import (
    PROB_ATOL,
    MarkovChain,
    as_float_array,
    check_distribution,
    make_rng,
    readonly,
    sample_from_cdf,
    sampling_cdf,
)


@dataclass(frozen=True)
class Trajectories:
    """Sampled rollouts: ``states`` (n, steps+1), ``actions`` (n, steps), ``rewards`` (n, steps) with
    the expected reward r(s_t, a_t)."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray


class TabularMDP:
    r"""A finite MDP :math:`\{\mathcal S, \mathcal A, \mathcal T, r\}` with discount ``gamma``.

    Parameters
    ----------
    P : (S, A, S') array, ``P[s, a, s'] = p(s' | s, a)`` (use :meth:`from_transition_operator` for
        the notes' (S', S, A) layout).
    r : (S, A) expected reward r(s, a), or (S, A, S') reward r(s, a, s') (averaged over s').
    gamma : discount γ in (0, 1].
    horizon : optional episode length H (number of decisions); the default of the finite-horizon
        solver and of :meth:`state_marginals`.
    mu0 : optional initial state distribution p(s_0).
    terminal : optional (S,) bool mask of terminal states; they must be absorbing with zero reward.
    """

    def __init__(
        self,
        P: ArrayLike,
        r: ArrayLike,
        gamma: float = 0.99,
        *,
        horizon: int | None = None,
        mu0: ArrayLike | None = None,
        terminal: ArrayLike | None = None,
        name: str | None = None,
    ):
        P = as_float_array(P, "P")
        if P.ndim != 3 or P.shape[0] != P.shape[2] or 0 in P.shape:
            raise ConfigError(f"P must have shape (S, A, S) with P[s, a, s'] = p(s'|s,a), got {P.shape}")
        S, A, _ = P.shape
        if np.any(P < 0):
            s, a, s2 = np.argwhere(P < 0)[0]
            raise ConfigError(f"P has negative entries, e.g. P[{s}, {a}, {s2}] = {P[s, a, s2]:.3g}")
        sums = P.sum(axis=2)
        bad = np.argwhere(np.abs(sums - 1.0) > PROB_ATOL)
        if bad.size:
            s, a = bad[0]
            raise ConfigError(
                f"P[{s}, {a}, :] = p(. | s={s}, a={a}) sums to {sums[s, a]:.10g}, must sum to 1 "
                f"({len(bad)} bad (s, a) pair(s))"
            )
        P = P / sums[..., None]
        r = as_float_array(r, "r")
        if r.shape == (S, A, S):
            r = np.einsum("sat,sat->sa", P, r)
        elif r.shape != (S, A):
            raise ConfigError(f"r must have shape (S, A) = {(S, A)} or (S, A, S) = {(S, A, S)}, got {r.shape}")
        gamma = float(gamma)
        if not 0.0 < gamma <= 1.0:
            raise ConfigError(f"gamma must be in (0, 1], got {gamma}")
        if horizon is not None and (int(horizon) != horizon or horizon < 1):
            raise ConfigError(f"horizon must be a positive integer or None, got {horizon}")
        if terminal is None:
            term = np.zeros(S, dtype=bool)
        else:
            term = np.asarray(terminal)
            if term.shape != (S,) or term.dtype != bool:
                raise ConfigError(f"terminal must be a bool array of shape ({S},), got {term.dtype} {term.shape}")
            term = term.copy()
            idx = np.flatnonzero(term)
            if np.any(np.abs(P[idx, :, idx] - 1.0) > PROB_ATOL) or np.any(r[idx] != 0):
                raise ConfigError("terminal states must be absorbing (P[s, a, s] = 1) with zero reward")
        self._P = readonly(P)
        self._r = readonly(r)
        self.gamma = gamma
        self.horizon = None if horizon is None else int(horizon)
        self._mu0 = None if mu0 is None else readonly(check_distribution(mu0, S, "mu0"))
        self._terminal = readonly(term)
        self.name = name

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def from_transition_operator(cls, T: ArrayLike, r: ArrayLike, gamma: float = 0.99, **kwargs: Any) -> "TabularMDP":
        """Build from the notes' operator ``T[i, j, k] = p(s'=i | s=j, a=k)`` of shape (S', S, A)."""
        T = as_float_array(T, "T")
        if T.ndim != 3:
            raise ConfigError(f"T must have shape (S', S, A), got {T.shape}")
        return cls(np.transpose(T, (1, 2, 0)), r, gamma, **kwargs)

    @classmethod
    def from_gym(
        cls, env: gym.Env | str, gamma: float = 0.99, *, horizon: int | None = None, **env_kwargs: Any
    ) -> "TabularMDP":
        """Read the exact model of a gymnasium toy-text env (FrozenLake, Taxi, CliffWalking, ...).

        Uses ``env.unwrapped.P[s][a] = [(prob, next_state, reward, terminated), ...]`` and
        ``initial_state_distrib`` as ``mu0``. States entered by a terminating transition become
        absorbing zero-reward terminal states, so the values are those of the episodic task.
        The env's time limit is not part of the model; pass ``horizon`` for that.
        """
        if isinstance(env, str):
            env = make_env(env, **env_kwargs)
        elif env_kwargs:
            raise ConfigError("env_kwargs are only used when env is an id string")
        u = env.unwrapped
        table = getattr(u, "P", None)
        if not isinstance(table, dict):
            raise EnvError(f"{type(u).__name__} has no tabular model env.unwrapped.P (a dict s -> a -> transitions)")
        if not isinstance(env.observation_space, gym.spaces.Discrete) or not isinstance(
            env.action_space, gym.spaces.Discrete
        ):
            raise SpaceError(
                f"from_gym needs Discrete observation and action spaces, got "
                f"{env.observation_space} and {env.action_space}"
            )
        S, A = int(env.observation_space.n), int(env.action_space.n)
        P = np.zeros((S, A, S))
        r = np.zeros((S, A))
        P_done = np.zeros((S, A, S))  # the part of P through terminating transitions
        for s in range(S):
            for a in range(A):
                for prob, s2, reward, done in table[s][a]:
                    P[s, a, int(s2)] += prob
                    r[s, a] += prob * reward
                    if done:
                        P_done[s, a, int(s2)] += prob
        isd = getattr(u, "initial_state_distrib", None)
        mu0 = None if isd is None else np.asarray(isd, dtype=np.float64)
        # A state is terminal if the env ends the episode on entering it. That must hold for every
        # way in from the non-terminal states the env can reach from mu0; unreachable states (e.g.
        # Taxi's passenger-at-destination states other than the one just entered) are ignored.
        reached = np.ones(S, dtype=bool) if mu0 is None else mu0 > 0
        terminal = np.zeros(S, dtype=bool)
        P_live = P - P_done
        while True:
            sources = reached & ~terminal
            terminal |= P_done[sources].sum(axis=(0, 1)) > 0
            grown = reached | terminal | (P_live[sources] > 1e-12).any(axis=(0, 1))
            if np.array_equal(grown, reached) and np.array_equal(sources, reached & ~terminal):
                break
            reached = grown
        live_into_terminal = P_live[sources][:, :, terminal] > 1e-12
        if live_into_terminal.any():
            s, a, k = np.argwhere(live_into_terminal)[0]
            raise EnvError(
                f"state {np.flatnonzero(terminal)[k]} is entered both by terminating and "
                f"non-terminating transitions (e.g. from s={np.flatnonzero(sources)[s]}, a={a}); "
                f"it cannot be modelled as a terminal state"
            )
        P[terminal] = 0.0
        P[terminal, :, terminal] = 1.0
        r[terminal] = 0.0
        spec = getattr(env, "spec", None)
        return cls(
            P, r, gamma, horizon=horizon, mu0=mu0, terminal=terminal, name=getattr(spec, "id", None) or type(u).__name__
        )

    def replace(self, **changes: Any) -> "TabularMDP":
        """A copy with some of ``P, r, gamma, horizon, mu0, terminal, name`` changed."""
        fields = dict(
            P=self._P,
            r=self._r,
            gamma=self.gamma,
            horizon=self.horizon,
            mu0=self._mu0,
            terminal=self._terminal,
            name=self.name,
        )
        unknown = set(changes) - set(fields)
        if unknown:
            raise ConfigError(f"unknown TabularMDP field(s): {sorted(unknown)}")
        fields.update(changes)
        P, r, gamma = fields.pop("P"), fields.pop("r"), fields.pop("gamma")
        return TabularMDP(P, r, gamma, **fields)

    # ---- views --------------------------------------------------------------------------------
    @property
    def P(self) -> np.ndarray:
        """``P[s, a, s'] = p(s' | s, a)``, shape (S, A, S') (read-only)."""
        return self._P

    @property
    def T(self) -> np.ndarray:
        """The notes' ``T[i, j, k] = p(s'=i | s=j, a=k)``, shape (S', S, A) (read-only view of P)."""
        return np.transpose(self._P, (2, 0, 1))

    @property
    def r(self) -> np.ndarray:
        """Expected reward r(s, a), shape (S, A) (read-only)."""
        return self._r

    @property
    def mu0(self) -> np.ndarray | None:
        """Initial state distribution p(s_0), or None."""
        return self._mu0

    @property
    def terminal(self) -> np.ndarray:
        """(S,) bool mask of absorbing zero-reward terminal states."""
        return self._terminal

    @property
    def n_states(self) -> int:
        return self._P.shape[0]

    @property
    def n_actions(self) -> int:
        return self._P.shape[1]

    def __repr__(self) -> str:
        return (
            f"TabularMDP(name={self.name!r}, n_states={self.n_states}, n_actions={self.n_actions}, "
            f"gamma={self.gamma}, horizon={self.horizon}, n_terminal={int(self._terminal.sum())})"
        )

    # ---- policies -----------------------------------------------------------------------------
    def policy_matrix(self, policy: ArrayLike) -> np.ndarray:
        """``policy`` as a row-stochastic π(a|s) of shape (S, A), or (H, S, A) if time-varying.

        Accepts (S, A) / (H, S, A) float probabilities or (S,) / (H, S) actions. A 2-D array of an
        integer dtype is always read as (H, S) actions; probabilities must be floats.
        """
        S, A = self.n_states, self.n_actions
        if hasattr(policy, "detach"):
            policy = policy.detach().cpu().numpy()
        arr = np.asarray(policy)
        integral = np.issubdtype(arr.dtype, np.integer) or (
            np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
        )
        is_actions = arr.ndim == 1 or (
            arr.ndim == 2 and (np.issubdtype(arr.dtype, np.integer) or (arr.shape != (S, A) and integral))
        )
        if is_actions:
            if arr.shape[-1] != S:
                raise ConfigError(f"a deterministic policy must have shape ({S},) or (H, {S}), got {arr.shape}")
            if not integral:
                raise ConfigError(f"a policy of shape {arr.shape} must hold integer actions")
            arr = arr.astype(np.int64)
            if np.any(arr < 0) or np.any(arr >= A):
                raise ConfigError(f"policy actions must be in [0, {A}), got range [{arr.min()}, {arr.max()}]")
            return np.eye(A)[arr]
        pi = as_float_array(arr, "policy")
        if pi.shape[-2:] != (S, A) or pi.ndim not in (2, 3):
            raise ConfigError(f"policy must have shape (S, A) = {(S, A)}, (H, S, A), (S,) or (H, S); got {pi.shape}")
        if np.any(pi < 0):
            raise ConfigError("policy has negative probabilities")
        sums = pi.sum(axis=-1)
        if np.any(np.abs(sums - 1.0) > PROB_ATOL):
            idx = tuple(np.argwhere(np.abs(sums - 1.0) > PROB_ATOL)[0])
            raise ConfigError(f"policy rows must sum to 1: pi[{', '.join(map(str, idx))}, :] sums to {sums[idx]:.10g}")
        return pi / sums[..., None]

    def uniform_policy(self) -> np.ndarray:
        """π(a|s) = 1/A."""
        return np.full((self.n_states, self.n_actions), 1.0 / self.n_actions)

    def _stationary_pi(self, policy: ArrayLike) -> np.ndarray:
        pi = self.policy_matrix(policy)
        if pi.ndim != 2:
            raise ConfigError(
                "this operation needs a stationary policy of shape (S, A) or (S,), not a time-varying one"
            )
        return pi

    def P_pi(self, policy: ArrayLike) -> np.ndarray:
        """Row-stochastic state transition matrix under π: ``P_pi[s, s'] = Σ_a π(a|s) p(s'|s,a)``."""
        return np.einsum("sa,sat->st", self._stationary_pi(policy), self._P)

    def r_pi(self, policy: ArrayLike) -> np.ndarray:
        """Expected one-step reward under π: ``r_pi[s] = Σ_a π(a|s) r(s,a)``."""
        return np.einsum("sa,sa->s", self._stationary_pi(policy), self._r)

    # ---- Q and V ------------------------------------------------------------------------------
    def q_from_v(self, V: ArrayLike) -> np.ndarray:
        r""":math:`Q(s,a) = r(s,a) + \gamma \sum_{s'} p(s'|s,a) V(s')`, shape (S, A)."""
        V = as_float_array(V, "V")
        if V.shape != (self.n_states,):
            raise ConfigError(f"V must have shape ({self.n_states},), got {V.shape}")
        return self._r + self.gamma * (self._P @ V)

    def v_from_q(self, Q: ArrayLike, policy: ArrayLike | None = None) -> np.ndarray:
        r""":math:`V(s) = \mathbb E_{a\sim\pi(a|s)}[Q(s,a)]`, or :math:`\max_a Q(s,a)` without a policy."""
        Q = as_float_array(Q, "Q")
        if Q.shape != (self.n_states, self.n_actions):
            raise ConfigError(f"Q must have shape {(self.n_states, self.n_actions)}, got {Q.shape}")
        if policy is None:
            return Q.max(axis=1)
        return np.einsum("sa,sa->s", self._stationary_pi(policy), Q)

    @staticmethod
    def greedy(Q: ArrayLike) -> np.ndarray:
        r"""The notes' improvement step :math:`\pi'(a|s) = 1` iff :math:`a = \arg\max_a Q(s,a)`, as
        integer actions (ties go to the lowest index). Works on (S, A) and (H, S, A)."""
        return np.argmax(np.asarray(Q), axis=-1)

    # ---- distributions ------------------------------------------------------------------------
    def _start(self, mu0: ArrayLike | None) -> np.ndarray:
        if mu0 is None:
            if self._mu0 is None:
                raise ConfigError("mu0 is required: this MDP has no initial state distribution")
            return self._mu0
        return check_distribution(mu0, self.n_states, "mu0")

    def state_marginals(self, policy: ArrayLike, mu0: ArrayLike | None = None, steps: int | None = None) -> np.ndarray:
        r"""The state marginals :math:`\mu_0, \dots, \mu_{steps}`, shape (steps + 1, S), from

        .. math:: \mu_{t+1,i} = \sum_{j,k} \mathcal T_{i,j,k}\,\mu_{t,j}\,\pi_t(k|j).

        ``policy`` may be time-varying (H, S, A) with H >= steps. ``steps`` defaults to the horizon;
        ``mu0`` to the MDP's initial distribution.
        """
        pi = self.policy_matrix(policy)
        if steps is None:
            if self.horizon is None:
                raise ConfigError("steps is required: this MDP has no horizon")
            steps = self.horizon
        if steps < 0:
            raise ConfigError(f"steps must be >= 0, got {steps}")
        if pi.ndim == 3 and pi.shape[0] < steps:
            raise ConfigError(f"a time-varying policy of length {pi.shape[0]} cannot cover {steps} steps")
        mu = np.empty((steps + 1, self.n_states))
        mu[0] = self._start(mu0)
        for t in range(steps):
            pi_t = pi[t] if pi.ndim == 3 else pi
            mu[t + 1] = np.einsum("j,jk,jki->i", mu[t], pi_t, self._P)
        return mu

    def state_action_marginals(
        self, policy: ArrayLike, mu0: ArrayLike | None = None, steps: int | None = None
    ) -> np.ndarray:
        r""":math:`p(s_t=s, a_t=a) = \mu_t(s)\pi_t(a|s)` for t < steps, shape (steps, S, A)."""
        pi = self.policy_matrix(policy)
        mu = self.state_marginals(pi, mu0, steps)[:-1]
        return mu[:, :, None] * (pi[: len(mu)] if pi.ndim == 3 else pi[None])

    def induced_chain(self, policy: ArrayLike) -> MarkovChain:
        r"""The Markov chain over states under π: :math:`(\mathcal T_\pi)_{i,j} = \sum_k \mathcal T_{i,j,k}\pi(k|j)`."""
        return MarkovChain(self.P_pi(policy).T)

    def state_action_chain(self, policy: ArrayLike) -> MarkovChain:
        r"""The notes' chain on pairs, :math:`p((s',a')|(s,a)) = p(s'|s,a)\pi(a'|s')`, over S·A states
        indexed ``s * A + a``."""
        pi = self._stationary_pi(policy)
        S, A = self.n_states, self.n_actions
        # K[(s, a), (s', a')] = p(s'|s,a) pi(a'|s')  (row-stochastic), the chain's T is its transpose
        K = (self._P[:, :, :, None] * pi[None, None, :, :]).reshape(S * A, S * A)
        return MarkovChain(K.T)

    def stationary_state_distribution(self, policy: ArrayLike, method: str = "eigen") -> np.ndarray:
        r"""Stationary :math:`\mu_\pi = \mathcal T_\pi\mu_\pi` of the induced chain (must be unique)."""
        return self.induced_chain(policy).stationary_distribution(method)  # type: ignore[arg-type]

    def stationary_state_action_distribution(self, policy: ArrayLike, method: str = "eigen") -> np.ndarray:
        r"""Stationary :math:`p_\pi(s,a) = \mu_\pi(s)\pi(a|s)` of the state-action chain, shape (S, A) —
        the distribution under which the notes' average-reward objective
        :math:`\frac1T\sum_t \mathbb E_{(s_t,a_t)\sim p_\theta}[r(s_t,a_t)]` is evaluated as T → ∞."""
        pi = self._stationary_pi(policy)
        return self.stationary_state_distribution(pi, method)[:, None] * pi

    def occupancy_measure(self, policy: ArrayLike, mu0: ArrayLike | None = None) -> np.ndarray:
        r"""Discounted state-action occupancy :math:`\rho_\pi(s,a) = \sum_t \gamma^t p(s_t=s, a_t=a)`,
        shape (S, A), so that :math:`\mathbb E[\sum_t\gamma^t r_t] = \sum_{s,a}\rho_\pi(s,a) r(s,a)`.

        Infinite horizon (γ < 1): :math:`d_\pi = (I - \gamma\mathcal T_\pi)^{-1}\mu_0`,
        :math:`\rho = d_\pi(s)\pi(a|s)`; with a horizon H the sum runs over t < H.
        """
        pi = self.policy_matrix(policy)
        start = self._start(mu0)
        if self.horizon is not None:
            sa = self.state_action_marginals(pi, start, self.horizon)
            return np.einsum("t,tsa->sa", self.gamma ** np.arange(self.horizon), sa)
        if pi.ndim == 3:
            raise ConfigError("a time-varying policy needs an MDP with a horizon")
        if self.gamma >= 1.0:
            raise ConfigError("the infinite-horizon occupancy needs gamma < 1 (or set a horizon)")
        d = np.linalg.solve(np.eye(self.n_states) - self.gamma * self.P_pi(pi).T, start)
        return d[:, None] * pi

    def episodic_occupancy(
        self,
        policy: ArrayLike,
        mu0: ArrayLike | None = None,
        *,
        dynamics: ArrayLike | None = None,
    ) -> np.ndarray:
        r"""Discounted visitation of the *episodic* task, shape (S, A): live steps as in
        :meth:`occupancy_measure`, and each terminal state counted **once**, on entry:

        .. math::
            \rho(s,a) = \sum_t \gamma^t\,p(s_t=s, a_t=a, \text{episode running at } t)
            \quad (s \notin \mathcal T),\qquad
            \rho(s,a) = \tfrac{1}{|\mathcal A|}\sum_{t\ge1}\gamma^t\,p(\text{episode enters } s
            \text{ at } t) \quad (s \in \mathcal T).

        A terminal entry is split evenly over the actions, so for any (S, A) reward
        :math:`\sum_{s,a}\rho(s,a)\,r(s,a)` is the return of the episode that receives
        :math:`\bar r(s') = \frac1{|\mathcal A|}\sum_a r(s',a)` once on entering a terminal state
        s' (the reward :meth:`fold_terminal_reward` puts on the live transitions). Mass starting in
        a terminal state is an episode that never ran and is not counted. Without terminal states
        this is :meth:`occupancy_measure`. ``dynamics`` replaces P (S, A, S) — or (H, S, A, S) per
        step with a horizon — e.g. the posterior dynamics of exact inference.
        """
        pi = self.policy_matrix(policy)
        term = self._terminal
        start = np.where(term, 0.0, self._start(mu0))
        H = self.horizon
        P = self._P if dynamics is None else as_float_array(dynamics, "dynamics")
        S, A = self.n_states, self.n_actions
        if P.shape not in ((S, A, S), (H or 0, S, A, S)):
            raise ConfigError(f"dynamics must have shape {(S, A, S)} or (H, S, A, S), got {P.shape}")
        uniform = np.full(A, 1.0 / A)
        pi = np.where(term[:, None], uniform, pi) if pi.ndim == 2 else np.where(term[None, :, None], uniform, pi)
        live = (~term).astype(np.float64)
        if H is not None:
            rho = np.zeros((S, A))
            mu = start
            for t in range(H + 1):  # the entries at t = H are counted: the last transition's reward
                pi_t = pi[min(t, len(pi) - 1)] if pi.ndim == 3 else pi
                sa = mu[:, None] * pi_t
                rho += self.gamma**t * (sa if t < H else sa * term[:, None])
                if t < H:
                    P_t = P[t] if P.ndim == 4 else P
                    mu = np.einsum("sa,sat->t", sa * live[:, None], P_t)
            return rho
        if pi.ndim == 3:
            raise ConfigError("a time-varying policy needs an MDP with a horizon")
        if self.gamma >= 1.0:
            raise ConfigError("the infinite-horizon occupancy needs gamma < 1 (or set a horizon)")
        if P.ndim == 4:
            raise ConfigError("time-varying dynamics need an MDP with a horizon")
        P_pi = np.einsum("sa,sat->st", pi, P) * live[:, None]  # terminal states pass nothing on
        d = np.linalg.solve(np.eye(S) - self.gamma * P_pi.T, start)
        return d[:, None] * pi

    def fold_terminal_reward(self, reward: ArrayLike) -> np.ndarray:
        r"""A reward on all (s, a), terminal states included, as an MDP reward (zero on terminal
        states, so ``mdp.replace(r=...)`` accepts it):

        .. math::
            r'(s,a) = r(s,a) + \gamma\sum_{s'\in\mathcal T}p(s'|s,a)\,\bar r(s'),\qquad
            \bar r(s') = \tfrac1{|\mathcal A|}\sum_{a'} r(s',a'),

        on live states and :math:`r' = 0` on terminal ones: the value of entering a terminal state is
        paid on the transition into it. The return under r' of every policy equals
        :math:`\sum_{s,a}\rho(s,a)\,r(s,a)` with ρ the :meth:`episodic_occupancy`. ``reward`` is (S,)
        or (S, A); without terminal states it is returned unchanged (as (S, A))."""
        r = as_float_array(reward, "reward")
        S, A = self.n_states, self.n_actions
        if r.shape == (S,):
            r = np.repeat(r[:, None], A, axis=1)
        if r.shape != (S, A):
            raise ConfigError(f"reward must have shape (S,) = ({S},) or (S, A) = {(S, A)}, got {r.shape}")
        term = self._terminal
        if not term.any():
            return r
        entry = np.where(term, r.mean(axis=1), 0.0)
        return np.where(term[:, None], 0.0, r + self.gamma * (self._P @ entry))

    # ---- simulation ---------------------------------------------------------------------------
    @cached_property
    def _cdf(self) -> np.ndarray:
        return sampling_cdf(self._P.copy())

    def sample(
        self,
        policy: ArrayLike,
        n: int,
        steps: int,
        mu0: ArrayLike | None = None,
        seed: int | np.random.Generator | None = None,
    ) -> Trajectories:
        """Simulate ``n`` rollouts of ``steps`` steps from the model (vectorized over rollouts).
        Terminal states absorb (the rollout stays there with zero reward)."""
        if n < 1 or steps < 0:
            raise ConfigError(f"need n >= 1 and steps >= 0, got n={n}, steps={steps}")
        pi = self.policy_matrix(policy)
        if pi.ndim == 3 and pi.shape[0] < steps:
            raise ConfigError(f"a time-varying policy of length {pi.shape[0]} cannot cover {steps} steps")
        rng = make_rng(seed)
        pi_cdf = sampling_cdf(pi)
        states = np.empty((n, steps + 1), dtype=np.int64)
        actions = np.empty((n, steps), dtype=np.int64)
        states[:, 0] = sample_from_cdf(np.broadcast_to(sampling_cdf(self._start(mu0)), (n, self.n_states)), rng)
        for t in range(steps):
            s = states[:, t]
            actions[:, t] = sample_from_cdf((pi_cdf[t] if pi.ndim == 3 else pi_cdf)[s], rng)
            states[:, t + 1] = sample_from_cdf(self._cdf[s, actions[:, t]], rng)
        rewards = self._r[states[:, :-1], actions]
        return Trajectories(states=states, actions=actions, rewards=rewards)
