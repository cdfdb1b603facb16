r"""Slate policies behind one interface: ``policy(obs batch, info) → SlateDecision`` (slates + propensities).

Every policy maps a batch of N users, each with C candidates, to ordered slates of K distinct
candidate indices, and reports what off-policy evaluation and learning need about its own
randomness (notes 9/5, importance sampling):

* ``slate_propensity`` :math:`\mu(A \mid x)`, the probability of the whole ordered slate, and
* ``position_propensity`` :math:`\mu(a_k \text{ at } k \mid x)`, the per-position marginals;
* :meth:`SlatePolicy.probability_of` gives :math:`\pi(A \mid x)` of any given slates and
  :meth:`SlatePolicy.slate_distribution` the whole distribution over the enumerated ordered slates
  (the pseudo-inverse estimator's :math:`\Gamma_\mu(x) = \mathbb E_\mu[\mathbb 1_A \mathbb 1_A^\top]`).

Policies: :class:`RandomPolicy` (uniform ordered slates, :math:`\mu = (C-K)!/C!`),
:class:`PopularityPolicy` (top-K by a popularity table over doc ids or topics, fitted by
counting engagement per impression), :class:`MyopicGreedyPolicy` (the slate maximising the
immediate expected engagement :math:`\sum_i P(i|s,A) e(s,i)` under the simulator's choice model read
from ``info``, or under a learned :class:`~recsys.choice_model.SlateRewardModel`),
:class:`EpsilonGreedyPolicy` (a deterministic base with probability 1−ε, else uniform:
:math:`\mu(A|x) = (1-\epsilon)\mathbb 1[A = A^*(x)] + \epsilon/S`), :class:`PlackettLucePolicy`
(K draws without replacement :math:`\propto e^{s_i/\tau}`, by the Gumbel top-K trick, with
:math:`\mu(A|x) = \prod_k e^{s_{a_k}/\tau} / \sum_{j \notin a_{<k}} e^{s_j/\tau}`) and
:class:`ScoredTopKPolicy` (its mode: top-K by score). Learned policies (SlateQ, top-K REINFORCE,
CQL) subclass :class:`SlatePolicy` in their modules; :func:`save_policy`/:func:`load_policy` store
any of them as one torch file (kind + JSON spec + state dict).

:func:`evaluate_online` runs a policy in a simulator for whole sessions (a fixed number per
user slot, so short sessions are not favoured) and returns session engagement and the
per-step engagement curve.

Modules: :mod:`~recsys.policies.types` (observations, decisions, the :class:`SlatePolicy` interface),
:mod:`~recsys.policies.baselines` (the policies above), :mod:`~recsys.policies.registry` (kinds,
policy files) and :mod:`~recsys.policies.evaluation` (:func:`evaluate_online`).
"""

from recsys.policies.baselines import (
    EpsilonGreedyPolicy,
    MyopicGreedyPolicy,
    PlackettLucePolicy,
    PopularityPolicy,
    RandomPolicy,
    ScoredTopKPolicy,
    ScoreFn,
)
from recsys.policies.evaluation import OnlineResult, evaluate_online
from recsys.policies.registry import (
    POLICY_KINDS,
    load_policy,
    policy_class,
    policy_from_spec,
    register_policy,
    save_policy,
)
from recsys.policies.types import ObsLayout, SlateDecision, SlateObs, SlatePolicy, as_slate_obs, random_ordered_slates

__all__ = [
    "ObsLayout",
    "SlateObs",
    "as_slate_obs",
    "SlateDecision",
    "SlatePolicy",
    "RandomPolicy",
    "PopularityPolicy",
    "MyopicGreedyPolicy",
    "EpsilonGreedyPolicy",
    "PlackettLucePolicy",
    "ScoredTopKPolicy",
    "ScoreFn",
    "random_ordered_slates",
    "POLICY_KINDS",
    "register_policy",
    "policy_class",
    "policy_from_spec",
    "save_policy",
    "load_policy",
    "OnlineResult",
    "evaluate_online",
]
