r"""Held-out check of CPO's linearized cost constraint on a real task (issue 14).

``python -m benchmarks.cpo_diagnostics --steps 100000 --seed 0 --out FILE [--set key=value ...]``

Trains :class:`~safety.cpo.CPO` on SafetyPointGoal1-v0 with the benchmark's settings
(:mod:`benchmarks.safety_omnisafe`: one env, 10,000-step rollouts, observation normalization) and,
at every update, before the real step, splits the rollout in two halves in time (A, then B; about
five episodes each) and measures, per episode (× T̄):

* ``promised_A``: the cost-surrogate change :math:`\mathbb E_A[\rho\hat A^c]` of the step Δ_A that CPO
  computes on half A alone, measured on A (what the step promises in-sample);
* ``heldout_B``: the same step's cost-surrogate change on half B (what it delivers on fresh data
  drawn from the same policy);
* ``cos_AB``: :math:`b_A^TH^{-1}b_B/\sqrt{s_As_B}`, the agreement of the two halves' cost gradients in
  the Fisher metric (1: the same direction, 0: unrelated);
* ``cost_critic_ev``: the cost critic's explained variance of the cost returns before its fit,
  :math:`1 - \mathrm{Var}(\hat R^c - V^c)/\mathrm{Var}(\hat R^c)`;

and the full batch's ``cost_surrogate_change``, case and violation, with the next rollout's
episodic cost. Writes one JSON line per update. No effect on the run itself other than extra
computation (the held-out pass restores θ).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from core_rl.common.buffers import FlatBatch, RolloutBatch
from core_rl.trust_region.common import mean_kl, natural_gradients, policy_params, set_flat_params
from safety.cpo import CPO, cpo_step


class DiagnosedCPO(CPO):
    """CPO that records the held-out check of each update's cost constraint in :attr:`records`."""

    records: list[dict[str, Any]]

    def _half(self, flat: FlatBatch, adv: torch.Tensor, cadv: torch.Tensor, idx: slice) -> tuple:
        return flat.obs[idx], flat.actions[idx], adv[idx], cadv[idx] - cadv[idx].mean()

    @torch.no_grad()
    def _cost_change(self, theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor, cadv: torch.Tensor) -> float:
        params = policy_params(self.policy)
        old_log_prob = self.policy.distribution(obs).log_prob(actions)
        set_flat_params(params, theta)
        ratio = (self.policy.distribution(obs).log_prob(actions) - old_log_prob).exp()
        return float((ratio * cadv).mean()) - float(cadv.mean())

    def heldout(self, flat: FlatBatch, advantage: torch.Tensor, cost_advantage: torch.Tensor, c: float) -> dict:
        cfg = self.config
        n = len(flat)
        a, b = slice(0, n // 2), slice(n // 2, n)
        obs_a, act_a, adv_a, cadv_a = self._half(flat, advantage, cost_advantage, a)
        obs_b, act_b, adv_b, cadv_b = self._half(flat, advantage, cost_advantage, b)

        def objectives_for(actions, adv, cadv):
            def objectives(dist, old_log_prob):
                ratio = (dist.log_prob(actions) - old_log_prob).exp()
                return [(ratio * adv).mean(), (ratio * cadv).mean()]

            return objectives

        ma = natural_gradients(
            self.policy, obs_a, act_a, objectives_for(act_a, adv_a, cadv_a), cfg.damping, cfg.cg_iters, cfg.cg_tol
        )
        mb = natural_gradients(
            self.policy, obs_b, act_b, objectives_for(act_b, adv_b, cadv_b), cfg.damping, cfg.cg_iters, cfg.cg_tol
        )
        (g_a, b_a), (x_a, p_a) = ma.grads, ma.directions
        b_b, p_b = mb.grads[1], mb.directions[1]
        step, case, _, _ = cpo_step(g_a, b_a, x_a, p_a, c, cfg.max_kl)
        theta = ma.theta
        params = policy_params(self.policy)
        promised = self._cost_change(theta + step, obs_a, act_a, cadv_a)
        set_flat_params(params, theta)
        delivered = self._cost_change(theta + step, obs_b, act_b, cadv_b)
        set_flat_params(params, theta)
        with torch.no_grad():
            set_flat_params(params, theta + step)
            kl_b = float(mean_kl(self.policy.distribution(obs_b), mb.old))
            set_flat_params(params, theta)
        s_a, s_b = float(b_a @ p_a), float(b_b @ p_b)
        return {
            "case_A": case,
            "promised_A": promised,
            "heldout_B": delivered,
            "linear_A": float(b_a @ step),
            "cos_AB": float(b_a @ p_b) / max((abs(s_a) * abs(s_b)) ** 0.5, 1e-12),
            "s_A": s_a,
            "s_B": s_b,
            "kl_B": kl_b,
        }

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        flat = batch.flat()
        advantage = self.normalize(flat.advantages) if self.config.normalize_advantage else flat.advantages
        cadv = batch.masked(batch.cost_advantages)[:, 0]
        c = self.violation(batch)
        record = self.heldout(flat, advantage.detach(), cadv.detach(), c)
        returns, values = batch.masked(batch.cost_returns)[:, 0], batch.masked(batch.cost_values)[:, 0]
        record["cost_critic_ev"] = float(1 - (returns - values).var() / returns.var().clamp_min(1e-12))
        record["cost_return_var"] = float(returns.var())
        metrics = super().update(batch)
        length = float(sum(self.episode_lengths) / len(self.episode_lengths)) if self.episode_lengths else 1000.0
        record.update(
            {
                k: float(metrics[k])
                for k in ("cpo_case", "violation", "cost_surrogate_change", "step_fraction", "entropy", "kl")
            }
        )
        record["episode_length"] = length
        record["rollout_episode_cost"] = (
            float(batch.episode_costs[:, 0].mean())
            if batch.episode_costs is not None and len(batch.episode_costs)
            else None
        )
        record["timesteps"] = int(self.num_timesteps)
        self.records.append(record)
        return metrics


def main(argv: list[str] | None = None) -> None:
    import safety  # noqa: F401  (registers the tasks)
    from benchmarks.safety import TASKS, agent_config
    from benchmarks.safety_omnisafe import SHARED, parse_sets, rollout_steps

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    args = p.parse_args(argv)
    task = next(t for t in TASKS if t.label == "SG-PointGoal1")
    task = replace(task, common={**task.common, **SHARED, "n_envs": 1, "n_steps": rollout_steps("CPO", 1)})
    config = {**agent_config(task, "CPO", args.seed), **parse_sets(args.set)}
    agent = DiagnosedCPO(task.env_id, config)
    agent.records = []
    agent.learn(args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as fh:
        for r in agent.records:
            fh.write(json.dumps(r) + "\n")
    m = agent.last_metrics
    print(
        json.dumps({"return": m.get("episode_return"), "cost": m.get("episode_cost"), "cum": m.get("cumulative_cost")})
    )
    agent.close()


if __name__ == "__main__":
    main()
