"""Every algorithm of the suite by name: its class, module and the notes' topic.

Entries are imported lazily, so listing algorithms stays fast. ``deeprl train --algo NAME`` and
``Agent.load`` resolve names here. A new algorithm adds one line to ``ALGORITHMS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property

from core_rl.common.errors import ConfigError


@dataclass(frozen=True)
class AlgoSpec:
    name: str
    target: str          # "module:Class"
    topic: str           # the notes' lecture and topic

    @property
    def module(self) -> str:
        return self.target.split(":")[0]

    @cached_property
    def cls(self):  # type: ignore[no-untyped-def]
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)


ALGORITHMS: dict[str, AlgoSpec] = {s.name: s for s in [
    AlgoSpec("reinforce", "core_rl.policy_gradient.reinforce:REINFORCE", "9/5 policy gradient: REINFORCE, reward-to-go, baselines"),
    AlgoSpec("offpolicy_pg", "core_rl.policy_gradient.offpolicy_pg:OffPolicyPG", "9/5 off-policy policy gradient with importance sampling"),
    AlgoSpec("actor_critic", "core_rl.actor_critic.actor_critic:ActorCritic", "9/7 actor-critic: batch/online, n-step, GAE"),
    AlgoSpec("a2c", "core_rl.actor_critic.actor_critic:A2C", "9/7 synchronous parallel actor-critic (A2C)"),
    AlgoSpec("npg", "core_rl.trust_region.natural_pg:NaturalPG", "9/19 natural policy gradient (Fisher, conjugate gradient)"),
    AlgoSpec("trpo", "core_rl.trust_region.trpo:TRPO", "9/19 TRPO: KL-constrained line search"),
    AlgoSpec("kl_dual", "core_rl.trust_region.kl_dual:KLDual", "9/19 KL constraint by dual gradient descent"),
    AlgoSpec("ppo", "core_rl.trust_region.ppo:PPO", "9/19 PPO (clipped surrogate)"),
    AlgoSpec("dqn", "core_rl.q_learning.dqn:DQN", "9/12-9/14 DQN: replay, target network, double Q, N-step, dueling, prioritized"),
    AlgoSpec("double_dqn", "core_rl.q_learning.dqn:DoubleDQN", "9/14 double DQN: current net picks, target net evaluates"),
    AlgoSpec("online_q", "core_rl.q_learning.fitted_q:OnlineQLearning", "9/12 online Q-learning: one transition per update"),
    AlgoSpec("ddpg", "core_rl.continuous.ddpg:DDPG", "9/14 continuous-action Q-learning: train a maximizer (DDPG)"),
    AlgoSpec("td3", "core_rl.continuous.td3:TD3", "9/14 DDPG + clipped double Q, target smoothing, delayed actor (TD3)"),
    AlgoSpec("sac", "core_rl.continuous.sac:SAC", "9/14 soft actor-critic: stochastic maximizer of a soft Q (SAC)"),
    AlgoSpec("naf", "core_rl.continuous.naf:NAF", "9/14 continuous-action Q-learning: easily maximizable Q (NAF)"),
    AlgoSpec("qt_opt", "core_rl.continuous.sampled_max:QTOpt", "9/14 continuous-action Q-learning: sampled max / CEM (QT-Opt)"),
    AlgoSpec("mpc", "core_rl.model_based.mpc:MPC", "9/21-9/26 model-based RL: learned model + replanning MPC (random/CEM/MPPI)"),
    AlgoSpec("pets", "core_rl.model_based.mpc:PETS", "9/28 uncertainty-aware MPC: probabilistic ensemble + trajectory sampling (PETS)"),
    AlgoSpec("mbpo", "core_rl.model_based.mbpo:MBPO", "10/3 model-generated data for a model-free learner (MBPO with SAC)"),
    AlgoSpec("soft_q", "core_rl.inference.soft_q_learning:SoftQLearning", "10/10 soft Q-learning (MaxEnt RL): DQN with the soft Bellman target"),
    AlgoSpec("gail", "core_rl.irl.gail:GAIL", "10/12 adversarial imitation: GAIL / AIRL discriminator reward, PPO policy"),
    AlgoSpec("ppo_unconstrained", "safety.unconstrained:UnconstrainedPPO", "11/7-14 safety: PPO ignoring costs but logging them (baseline)"),
    AlgoSpec("ppo_lag", "safety.ppo_lag:PPOLag", "11/7-14 safety: PPO-Lagrangian (dual ascent on λ, 9/19)"),
    AlgoSpec("pid_lag", "safety.ppo_lag:PIDLag", "11/7-14 safety: PPO with the PID Lagrangian"),
    AlgoSpec("trpo_lag", "safety.trpo_lag:TRPOLag", "11/7-14 safety: TRPO-Lagrangian"),
    AlgoSpec("cpo", "safety.cpo:CPO", "11/7-14 safety: constrained policy optimization (TRPO + linearized cost constraint)"),
    AlgoSpec("saute_ppo", "safety.saute:Saute", "11/7-14 safety: Saute state augmentation with the remaining budget (PPO)"),
    AlgoSpec("shield_ppo_lag", "safety.shield:ShieldedPPOLag", "11/7-14 safety: PPO-Lag behind a learned safety layer"),
    AlgoSpec("sac_lag", "safety.sac_lag:SACLag", "11/7-14 safety: SAC-Lagrangian (pessimistic cost critic)"),
    AlgoSpec("safe_mpc", "safety.model_based:SafeMPC", "11/7-14 safety: PETS planning with an ensemble's pessimistic cost"),
    AlgoSpec("slateq", "recsys.slateq:SlateQ", "11/7-14 recommender systems: SlateQ, slate Q-learning through the user choice model"),
    AlgoSpec("bonus_dqn", "core_rl.exploration.agents:BonusDQN", "10/17 optimism: DQN on r + β·bonus (counts, SimHash, density, ensemble disagreement)"),
    AlgoSpec("bonus_ppo", "core_rl.exploration.agents:BonusPPO", "10/17 optimism: PPO on r + β·bonus (counts, SimHash, density, ensemble disagreement)"),
    AlgoSpec("bonus_a2c", "core_rl.exploration.agents:BonusA2C", "10/17 optimism: A2C on r + β·bonus (counts, SimHash, density, ensemble disagreement)"),
    AlgoSpec("bootstrapped_dqn", "core_rl.exploration.bootstrapped_dqn:BootstrappedDQN", "10/19 Thompson sampling: bootstrapped Q-heads, one sampled per episode"),
    AlgoSpec("rl2", "core_rl.meta.rl2:RL2", "10/24-26 meta-RL as an RNN: RL² (GRU policy over trials, PPO updates)"),
    AlgoSpec("rl2_a2c", "core_rl.meta.rl2:RL2A2C", "10/24-26 meta-RL as an RNN: RL² with A2C updates"),
    AlgoSpec("diayn", "core_rl.meta.diayn:DIAYN", "11/2 unsupervised RL: DIAYN skill discovery (discriminator reward, SAC)"),
    AlgoSpec("distributed_ppo", "core_rl.distributed.on_policy:DistributedPPO", "10/31 distributed RL: PPO with Ray rollout workers"),
    AlgoSpec("distributed_a2c", "core_rl.distributed.on_policy:DistributedA2C", "10/31 distributed RL: A2C with Ray rollout workers"),
    AlgoSpec("apex_dqn", "core_rl.distributed.apex:ApeXDQN", "10/31 distributed RL: Ape-X replay (many ε-actors, one learner)"),
]}


def get_algo(name: str) -> AlgoSpec:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ConfigError(f"unknown algorithm '{name}'; known: {', '.join(sorted(ALGORITHMS))}") from None
