"""Every algorithm of the suite by name: its class, module and the notes' topic.

Entries are imported lazily, so listing algorithms stays fast. ``deeprl train --algo NAME`` and
``Agent.load`` resolve names here. A new core algorithm adds one line to the list below.

The core names no application. An application (safety, recsys, or a user's own package) adds its
agents and env-id namespaces through a plugin: a module, named by a ``deeprl_suite.plugins`` entry
point of its distribution, that defines ``ALGORITHMS`` (a list of :class:`AlgoSpec`) and
``ENV_NAMESPACES`` (namespace → the package whose import registers those env ids). Plugins are
read on first use of the registry; :func:`register_algo` and :func:`register_env_namespace` do
the same by hand.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from importlib.metadata import entry_points

from core_rl.common.errors import ConfigError


@dataclass(frozen=True)
class AlgoSpec:
    """``kind`` is ``"agent"`` (an :class:`~core_rl.common.base.Agent`: ``learn(steps)``) or
    ``"program"`` (a :class:`~core_rl.common.program.Program`: a solver, IRL method, imitation
    learner from a fixed expert or planner, run once and scored); both run with ``deeprl train``."""

    name: str
    target: str  # "module:Class"
    topic: str  # the notes' lecture and topic
    kind: str = "agent"
    #: the task and budget at which a test shows the agent learning ("" if no learning test yet);
    #: docs/algorithms.md has the full table with each bar, config and test
    learns: str = ""

    @property
    def module(self) -> str:
        return self.target.split(":")[0]

    @cached_property
    def cls(self):  # type: ignore[no-untyped-def]
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)


_CORE: list[AlgoSpec] = [
    AlgoSpec(
        "reinforce",
        "core_rl.policy_gradient.reinforce:REINFORCE",
        "9/5 policy gradient: REINFORCE, reward-to-go, baselines",
    ),
    AlgoSpec(
        "offpolicy_pg",
        "core_rl.policy_gradient.offpolicy_pg:OffPolicyPG",
        "9/5 off-policy policy gradient with importance sampling",
    ),
    AlgoSpec(
        "actor_critic", "core_rl.actor_critic.actor_critic:ActorCritic", "9/7 actor-critic: batch/online, n-step, GAE"
    ),
    AlgoSpec("a2c", "core_rl.actor_critic.actor_critic:A2C", "9/7 synchronous parallel actor-critic (A2C)"),
    AlgoSpec(
        "npg", "core_rl.trust_region.natural_pg:NaturalPG", "9/19 natural policy gradient (Fisher, conjugate gradient)"
    ),
    AlgoSpec("trpo", "core_rl.trust_region.trpo:TRPO", "9/19 TRPO: KL-constrained line search"),
    AlgoSpec("kl_dual", "core_rl.trust_region.kl_dual:KLDual", "9/19 KL constraint by dual gradient descent"),
    AlgoSpec("ppo", "core_rl.trust_region.ppo:PPO", "9/19 PPO (clipped surrogate)"),
    AlgoSpec(
        "dqn",
        "core_rl.q_learning.dqn:DQN",
        "9/12-9/14 DQN: replay, target network, double Q, N-step, dueling, prioritized",
    ),
    AlgoSpec(
        "double_dqn", "core_rl.q_learning.dqn:DoubleDQN", "9/14 double DQN: current net picks, target net evaluates"
    ),
    AlgoSpec(
        "online_q", "core_rl.q_learning.fitted_q:OnlineQLearning", "9/12 online Q-learning: one transition per update"
    ),
    AlgoSpec("ddpg", "core_rl.continuous.ddpg:DDPG", "9/14 continuous-action Q-learning: train a maximizer (DDPG)"),
    AlgoSpec(
        "td3", "core_rl.continuous.td3:TD3", "9/14 DDPG + clipped double Q, target smoothing, delayed actor (TD3)"
    ),
    AlgoSpec("sac", "core_rl.continuous.sac:SAC", "9/14 soft actor-critic: stochastic maximizer of a soft Q (SAC)"),
    AlgoSpec("naf", "core_rl.continuous.naf:NAF", "9/14 continuous-action Q-learning: easily maximizable Q (NAF)"),
    AlgoSpec(
        "qt_opt",
        "core_rl.continuous.sampled_max:QTOpt",
        "9/14 continuous-action Q-learning: sampled max / CEM (QT-Opt)",
    ),
    AlgoSpec(
        "mpc",
        "core_rl.model_based.mpc:MPC",
        "9/21-9/26 model-based RL: learned model + replanning MPC (random/CEM/MPPI)",
    ),
    AlgoSpec(
        "random_shooting",
        "core_rl.model_based.planner_programs:RandomShootingProgram",
        "9/21 open-loop planning: random shooting MPC in a known model (Pendulum-v1, MountainCarContinuous-v0) "
        "or a learned one (dynamics=fit|run:ID)",
        "program",
    ),
    AlgoSpec(
        "cem",
        "core_rl.model_based.planner_programs:CEMProgram",
        "9/21 open-loop planning: cross-entropy method MPC in a known model (Pendulum-v1, MountainCarContinuous-v0) "
        "or a learned one (dynamics=fit|run:ID)",
        "program",
    ),
    AlgoSpec(
        "mppi",
        "core_rl.model_based.planner_programs:MPPIProgram",
        "9/21 open-loop planning: MPPI in a known model (Pendulum-v1, MountainCarContinuous-v0) "
        "or a learned one (dynamics=fit|run:ID)",
        "program",
    ),
    AlgoSpec(
        "mcts",
        "core_rl.model_based.planner_programs:MCTSProgram",
        "9/21 closed-loop planning: Monte Carlo tree search (UCT) in a known deterministic model (finite envs, CartPole-v1)",
        "program",
    ),
    AlgoSpec(
        "lqr",
        "core_rl.model_based.planner_programs:LQRProgram",
        "9/21 trajectory optimization: LQR on the linearized dynamics (Pendulum-v1 balance)",
        "program",
    ),
    AlgoSpec(
        "ilqr",
        "core_rl.model_based.planner_programs:ILQRProgram",
        "9/21 trajectory optimization: iLQR swing-up on known dynamics (Pendulum-v1), replanning; "
        "or on a learned model (dynamics=fit|run:ID, linearized by autograd)",
        "program",
    ),
    AlgoSpec(
        "vae",
        "core_rl.model_based.latent_programs:VAEProgram",
        "10/5 latent-variable models: VAE of image observations (amortized inference, reparameterization)",
        "program",
    ),
    AlgoSpec(
        "latent_dynamics",
        "core_rl.model_based.latent_programs:LatentDynamicsProgram",
        "9/28-10/5 latent-state model of an image POMDP: VAE + latent dynamics p(z'|z,a)",
        "program",
    ),
    AlgoSpec(
        "pets",
        "core_rl.model_based.mpc:PETS",
        "9/28 uncertainty-aware MPC: probabilistic ensemble + trajectory sampling (PETS)",
    ),
    AlgoSpec(
        "mbpo", "core_rl.model_based.mbpo:MBPO", "10/3 model-generated data for a model-free learner (MBPO with SAC)"
    ),
    AlgoSpec(
        "soft_q",
        "core_rl.inference.soft_q_learning:SoftQLearning",
        "10/10 soft Q-learning (MaxEnt RL): DQN with the soft Bellman target",
    ),
    AlgoSpec(
        "bc",
        "core_rl.imitation.programs:BCProgram",
        "9/5 imitation: behaviour cloning from an expert or a demonstrations file",
        "program",
    ),
    AlgoSpec(
        "dagger",
        "core_rl.imitation.programs:DAggerProgram",
        "9/7 imitation: DAgger (the expert labels the learner's states)",
        "program",
    ),
    AlgoSpec(
        "fitted_q",
        "core_rl.q_learning.fitted_q_program:FittedQProgram",
        "9/12 fitted Q iteration on a fixed random-policy data set (tabular or MLP Q)",
        "program",
    ),
    AlgoSpec(
        "value_iteration",
        "core_rl.tabular.programs:ValueIterationProgram",
        "9/12 dynamic programming: value iteration on a finite env or gridworld",
        "program",
    ),
    AlgoSpec(
        "policy_iteration",
        "core_rl.tabular.programs:PolicyIterationProgram",
        "9/12 dynamic programming: policy iteration on a finite env or gridworld",
        "program",
    ),
    AlgoSpec(
        "q_iteration",
        "core_rl.tabular.programs:QIterationProgram",
        "9/12 dynamic programming: Q iteration on a finite env or gridworld",
        "program",
    ),
    AlgoSpec(
        "maxent_irl",
        "core_rl.irl.programs:MaxEntIRLProgram",
        "10/12 inverse RL: exact tabular MaxEnt IRL (learned reward as an artifact)",
        "program",
    ),
    AlgoSpec(
        "max_margin_irl",
        "core_rl.irl.programs:MaxMarginIRLProgram",
        "10/12 inverse RL: feature matching / max-margin (learned reward as an artifact)",
        "program",
    ),
    AlgoSpec(
        "gcl",
        "core_rl.irl.programs:GCLProgram",
        "10/12 inverse RL: guided cost learning, sample-based MaxEnt IRL (learned reward as an artifact)",
        "program",
    ),
    AlgoSpec(
        "gail", "core_rl.irl.gail:GAIL", "10/12 adversarial imitation: GAIL / AIRL discriminator reward, PPO policy"
    ),
    AlgoSpec(
        "bonus_dqn",
        "core_rl.exploration.agents:BonusDQN",
        "10/17 optimism: DQN on r + β·bonus (counts, SimHash, density, ensemble disagreement)",
    ),
    AlgoSpec(
        "bonus_ppo",
        "core_rl.exploration.agents:BonusPPO",
        "10/17 optimism: PPO on r + β·bonus (counts, SimHash, density, ensemble disagreement)",
    ),
    AlgoSpec(
        "bonus_a2c",
        "core_rl.exploration.agents:BonusA2C",
        "10/17 optimism: A2C on r + β·bonus (counts, SimHash, density, ensemble disagreement)",
    ),
    AlgoSpec(
        "bootstrapped_dqn",
        "core_rl.exploration.bootstrapped_dqn:BootstrappedDQN",
        "10/19 Thompson sampling: bootstrapped Q-heads, one sampled per episode",
    ),
    AlgoSpec("rl2", "core_rl.meta.rl2:RL2", "10/24-26 meta-RL as an RNN: RL² (GRU policy over trials, PPO updates)"),
    AlgoSpec("rl2_a2c", "core_rl.meta.rl2:RL2A2C", "10/24-26 meta-RL as an RNN: RL² with A2C updates"),
    AlgoSpec(
        "diayn", "core_rl.meta.diayn:DIAYN", "11/2 unsupervised RL: DIAYN skill discovery (discriminator reward, SAC)"
    ),
    AlgoSpec(
        "distributed_ppo",
        "core_rl.distributed.on_policy:DistributedPPO",
        "10/31 distributed RL: PPO with Ray rollout workers",
    ),
    AlgoSpec(
        "distributed_a2c",
        "core_rl.distributed.on_policy:DistributedA2C",
        "10/31 distributed RL: A2C with Ray rollout workers",
    ),
    AlgoSpec(
        "apex_dqn",
        "core_rl.distributed.apex:ApeXDQN",
        "10/31 distributed RL: Ape-X replay (many ε-actors, one learner)",
    ),
]

#: name → where a learning test shows the agent learn (task, budget, bar; the test in docs/algorithms.md)
_LEARNS: dict[str, str] = {
    "reinforce": "CartPole-v1 >200 in 60k steps",
    "offpolicy_pg": "CartPole-v1 >200 in 80k steps",
    "actor_critic": "CartPole-v1 >=100 in 120k steps (online config)",
    "a2c": "CartPole-v1 >=195 in 300k steps",
    "npg": "CartPole-v1 >=195 in 40k steps",
    "trpo": "CartPole-v1 >=195 in 40k steps",
    "kl_dual": "CartPole-v1 >=195 in 40k steps",
    "ppo": "CartPole-v1 >=195 in 100k steps; Pendulum-v1 > -600 in 74k",
    "dqn": "CartPole-v1 >=195 in 50k steps",
    "double_dqn": "CartPole-v1 >=195 in 50k steps",
    "online_q": "FrozenLake Q* (off-policy) in 10k steps",
    "ddpg": "Pendulum-v1 >=-300 in 6k steps",
    "td3": "Pendulum-v1 >=-250 in 10k steps",
    "sac": "Pendulum-v1 >=-250 in 5k steps",
    "naf": "Pendulum-v1 >=-300 in 14k steps",
    "qt_opt": "Pendulum-v1 >=-400 in 10k steps",
    "mpc": "Pendulum-v1 >=-450 in 1.6k steps (learned dynamics, known reward)",
    "pets": "Pendulum-v1 >=-450 in 2k steps (10 episodes)",
    "mbpo": "Pendulum-v1 >=-600 in 3.2k steps",
    "soft_q": "CartPole-v1 >=195 in 50k steps",
    "gail": "CartPole-v1 (expert demos) >=450 in 60k steps",
    "bonus_dqn": "20-state chain solved in 3k steps (count bonus)",
    "bonus_ppo": "explore/ChainRandomActions-v0 solved in 41k steps (count bonus; plain ppo 2/5 seeds)",
    "bonus_a2c": "explore/ChainRandomActions-v0 solved in 41k steps (count bonus; plain a2c 0/5 seeds)",
    "bootstrapped_dqn": "20-state chain solved in 3k steps",
    "rl2": "meta/BanditTrial-v0 > best fixed arm +0.8 in 200k steps (defaults)",
    "rl2_a2c": "meta/BanditTrial-v0 > best fixed arm +0.8 in 400k steps (defaults)",
    "diayn": "meta/Point-v0 skills 0.85+ distinguishable in 8k steps",
    "distributed_ppo": "reproduces ppo bit for bit (ppo's budget)",
    "distributed_a2c": "reproduces a2c bit for bit (a2c's budget)",
    "apex_dqn": "CartPole-v1 >=50 in 10k steps",
}
_CORE = [replace(spec, learns=_LEARNS.get(spec.name, "")) for spec in _CORE]

PLUGIN_GROUP = "deeprl_suite.plugins"


class _Registry(Mapping[str, AlgoSpec]):
    """Name → :class:`AlgoSpec`: the core's entries, plus the plugins' on first access."""

    def __init__(self, specs: list[AlgoSpec]):
        self._specs = {s.name: s for s in specs}
        self._plugins_loaded = False

    def _full(self) -> dict[str, AlgoSpec]:
        if not self._plugins_loaded:
            self._plugins_loaded = True
            load_plugins()
        return self._specs

    def __getitem__(self, name: str) -> AlgoSpec:
        return self._full()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._full())

    def __len__(self) -> int:
        return len(self._full())

    def add(self, spec: AlgoSpec) -> None:
        known = self._specs.get(spec.name)
        if known is not None and known.target != spec.target:
            raise ConfigError(f"algorithm name '{spec.name}' is taken by {known.target}; {spec.target} needs another")
        self._specs[spec.name] = spec


ALGORITHMS = _Registry(_CORE)

#: env-id namespace → the package whose import registers its ids (the core's own, plus the plugins')
ENV_NAMESPACES: dict[str, str] = {"explore": "core_rl.exploration", "pomdp": "core_rl.model_based.vae"}


def register_algo(spec: AlgoSpec) -> None:
    """Make ``spec`` trainable by name (``deeprl train --algo``) and loadable by ``Agent.load``."""
    ALGORITHMS.add(spec)


def register_env_namespace(namespace: str, package: str) -> None:
    """Env ids ``namespace/...`` are registered by importing ``package`` (done on first use)."""
    ENV_NAMESPACES[namespace] = package


def load_plugins() -> list[str]:
    """Read every ``deeprl_suite.plugins`` entry point; returns the plugin modules loaded."""
    loaded = []
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            module = importlib.import_module(ep.value)
        except Exception as exc:  # a broken plugin must not break the core
            warnings.warn(f"deeprl-suite plugin '{ep.name}' ({ep.value}) cannot be imported: {exc}", stacklevel=2)
            continue
        for spec in getattr(module, "ALGORITHMS", []):
            register_algo(spec)
        for namespace, package in getattr(module, "ENV_NAMESPACES", {}).items():
            register_env_namespace(namespace, package)
        loaded.append(ep.value)
    return loaded


def env_namespace_package(namespace: str) -> str | None:
    """The package that registers env ids ``namespace/...`` (plugins are read first)."""
    ALGORITHMS._full()
    return ENV_NAMESPACES.get(namespace)


def get_algo(name: str) -> AlgoSpec:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ConfigError(f"unknown algorithm '{name}'; known: {', '.join(sorted(ALGORITHMS))}") from None
