r"""Monte Carlo tree search with UCT for discrete actions (notes 9/21: closed-loop planning by search).

Closed-loop planning reacts to the state reached, which for discrete actions means searching the
tree of futures. MCTS grows the tree one node per simulation:

1. *selection*: from the root, descend by the UCT rule (Kocsis & Szepesvári)

   .. math:: a^* = \arg\max_a\ \frac{W(s,a)}{N(s,a)} + c\sqrt{\frac{\ln N(s)}{N(s,a)}}

   (an unvisited action first), balancing the mean value found so far against the exploration bonus;
2. *expansion*: add one child for an untried action, stepping the model;
3. *simulation*: finish with a default (uniform random) policy for at most ``rollout_depth`` steps;
4. *backup*: add the discounted return to W and 1 to N along the path.

The chosen action is the most visited at the root. ``two_player=True`` searches an alternating
zero-sum game (negamax): each node's value is from the perspective of the player to move there.
The model is anything with ``n_actions`` and ``step(state, action) -> (state', reward, done)``
(deterministic).

Example (Nim: take one or two sticks, whoever takes the last one wins; the winning move leaves the
opponent a multiple of three)::

    >>> class Nim:
    ...     n_actions = 2  # action a takes a + 1 sticks
    ...     def legal_actions(self, sticks):
    ...         return [a for a in (0, 1) if a + 1 <= sticks]
    ...     def step(self, sticks, action):
    ...         left = sticks - (action + 1)
    ...         return left, float(left == 0), left == 0
    >>> search = MCTS(Nim(), n_simulations=200, two_player=True, seed=0)
    >>> [search.search(sticks) + 1 for sticks in (4, 5, 7, 8, 10)]
    [1, 2, 1, 2, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from core_rl.common.errors import ConfigError


class SearchModel(Protocol):
    n_actions: int

    def step(self, state: Any, action: int) -> tuple[Any, float, bool]: ...

    def legal_actions(self, state: Any) -> list[int]: ...


@dataclass
class Node:
    state: Any
    done: bool = False
    visits: int = 0
    value_sum: float = 0.0
    children: dict[int, "Node"] = field(default_factory=dict)
    rewards: dict[int, float] = field(default_factory=dict)  # r(s, a) of the edge to each child
    untried: list[int] = field(default_factory=list)

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0


class MCTS:
    """UCT search over a deterministic model; ``search(state)`` returns the most visited root action."""

    def __init__(
        self,
        model: SearchModel,
        n_simulations: int = 500,
        c_uct: float = math.sqrt(2),
        gamma: float = 1.0,
        rollout_depth: int = 50,
        two_player: bool = False,
        seed: int = 0,
    ):
        if n_simulations < 1:
            raise ConfigError(f"n_simulations must be positive, got {n_simulations}")
        self.model, self.n_simulations, self.c_uct, self.gamma = model, n_simulations, c_uct, gamma
        self.rollout_depth, self.two_player = rollout_depth, two_player
        self.rng = np.random.default_rng(seed)
        self.root: Node | None = None

    def _legal(self, state: Any) -> list[int]:
        legal = getattr(self.model, "legal_actions", None)
        return list(legal(state)) if legal is not None else list(range(self.model.n_actions))

    def _new_node(self, state: Any, done: bool) -> Node:
        untried = [] if done else self._legal(state)
        self.rng.shuffle(untried)
        return Node(state=state, done=done, untried=untried)

    def _uct_child(self, node: Node) -> int:
        log_n = math.log(node.visits)
        best, best_a = -math.inf, -1
        for a, child in node.children.items():
            # the edge's value to the player choosing at `node`: r + γ·V(child), negated for an opponent
            q = node.rewards[a] + self.gamma * (-child.value if self.two_player else child.value)
            score = q + self.c_uct * math.sqrt(log_n / child.visits)
            if score > best:
                best, best_a = score, a
        return best_a

    def _rollout(self, state: Any, done: bool) -> float:
        """Return of the default (uniform random) policy from ``state``, for the player to move there."""
        total, discount, sign = 0.0, 1.0, 1.0
        for _ in range(self.rollout_depth):
            if done:
                break
            actions = self._legal(state)
            if not actions:
                break
            state, reward, done = self.model.step(state, int(self.rng.choice(actions)))
            total += sign * discount * reward
            discount *= self.gamma
            if self.two_player:
                sign = -sign
        return total

    def simulate(self, root: Node) -> None:
        """One selection–expansion–simulation–backup pass."""
        path: list[tuple[Node, int]] = []
        node = root
        while not node.done and not node.untried and node.children:
            a = self._uct_child(node)
            path.append((node, a))
            node = node.children[a]
        if not node.done and node.untried:
            a = node.untried.pop()
            state, reward, done = self.model.step(node.state, a)
            child = self._new_node(state, done)
            node.children[a], node.rewards[a] = child, float(reward)
            path.append((node, a))
            node = child
        value = self._rollout(node.state, node.done)  # value of `node` for its player to move
        node.visits += 1
        node.value_sum += value
        for parent, a in reversed(path):
            value = parent.rewards[a] + self.gamma * (-value if self.two_player else value)
            parent.visits += 1
            parent.value_sum += value

    def search(self, state: Any) -> int:
        """Run ``n_simulations`` simulations from ``state`` and return the most visited action."""
        self.root = root = self._new_node(state, False)
        if not root.untried:
            raise ConfigError("the root state has no legal actions")
        for _ in range(self.n_simulations):
            self.simulate(root)
        return max(root.children, key=lambda a: (root.children[a].visits, self._edge_value(root, a)))

    def _edge_value(self, node: Node, a: int) -> float:
        child = node.children[a]
        return node.rewards[a] + self.gamma * (-child.value if self.two_player else child.value)

    def root_statistics(self) -> dict[int, tuple[int, float]]:
        """Visits and mean value of each root action after the last search."""
        if self.root is None:
            return {}
        return {a: (c.visits, self._edge_value(self.root, a)) for a, c in self.root.children.items()}
