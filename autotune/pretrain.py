r"""Meta-train the sequential policy by RL across synthetic tasks: ``python -m autotune.pretrain``.

Each iteration draws ``n_tasks`` tasks (:mod:`autotune.tasks`: GP samples and analytic functions,
never the evaluation suites) and runs ``rollouts`` episodes of each in lockstep. An episode is a
tuning run: ``n_startup`` shared uniform trials, then T decisions of the policy
(:func:`autotune.meta.propose` with sampling), each an action c_t with reward the negative
normalized simple regret after it,

.. math::
    r_t = -\frac1T\,\frac{\min_{s\le t} f(x_s) - f^*}{f_{\mathrm{med}} - f^*},

so the return is minus the area under the regret curve (fast progress and a good final value both
pay). The reward-to-go :math:`\hat G_t = \sum_{t'\ge t} r_{t'}` (core_rl's ``reward_to_go``) gets a
leave-one-out baseline — the mean over the task's other rollouts at the same step, which saw the
same task and the same start — and PPO's clipped surrogate (notes 9/19),
:math:`\min(\rho_t\hat A_t, \mathrm{clip}(\rho_t, 1\pm\epsilon)\hat A_t)` plus an entropy bonus, is
maximized for a few epochs. Every ``eval_every`` iterations the deterministic policy runs on a
fixed set of held-out synthetic tasks; the best weights by that score are written (float32, about
50 KB) to ``autotune/weights/meta_policy.pt``, loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from autotune.gp import GPHyper
from autotune.meta import (
    DTYPE,
    MetaConfig,
    MetaPolicy,
    MetaPolicyConfig,
    Observation,
    default_weights_path,
    propose,
    save_policy,
    single_thread,
)
from autotune.tasks import TaskBatch, sample_tasks
from core_rl.common.config import parse_config
from core_rl.common.returns import reward_to_go
from core_rl.common.seeding import set_seed


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(125, ge=1)
    n_tasks: int = Field(4, ge=1, description="Distinct tasks per iteration.")
    rollouts: int = Field(4, ge=2, description="Episodes per task (the leave-one-out baseline needs 2+).")
    horizon: int = Field(24, ge=2, description="Policy decisions per episode, T.")
    n_startup: int = Field(4, ge=1, description="Shared uniform trials an episode opens with (see star_fraction).")
    star_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of training episodes that open with MetaSampler's star design (the centre, then one "
        "axis probe of star_step per numeric column) instead of n_startup uniform trials; held-out evaluation "
        "runs both openings when it is above 0.",
    )
    star_step: float = Field(0.2, gt=0.0, lt=0.5)
    n_candidates: int = Field(96, ge=8)
    fit_steps: int = Field(5, ge=0)
    lr: float = Field(2e-3, gt=0.0)
    n_epochs: int = Field(3, ge=1)
    chunk: int = Field(6, ge=1, description="Decisions per PPO minibatch.")
    clip_range: float = Field(0.2, gt=0.0)
    ent_coef: float = Field(0.001, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    eval_every: int = Field(25, ge=1)
    n_eval_batches: int = Field(8, ge=1, description="Held-out task batches (of n_tasks each).")
    max_dim: int = Field(8, ge=1)
    target: Literal["yeo_johnson", "copula"] = Field(
        "yeo_johnson", description="Score target the policy is trained on (autotune.meta.score_target)."
    )
    hidden: int = Field(32, ge=4)
    max_minutes: float = Field(14.0, gt=0.0, description="Stop early past this much CPU time (minutes).")
    seed: int = Field(0, ge=0)


def _evaluate(tasks: TaskBatch, x: torch.Tensor, rollouts: int) -> torch.Tensor:
    """f at ``x [n_tasks·R, q, D]`` (rows grouped by task) -> ``[n_tasks·R, q]``."""
    B, q, D = x.shape
    n = B // rollouts
    return tasks(x.reshape(n, rollouts * q, D)).reshape(B, q)


def run_episode(
    policy: MetaPolicy,
    tasks: TaskBatch,
    n_tasks: int,
    rollouts: int,
    horizon: int,
    n_startup: int,
    gen: torch.Generator,
    meta_cfg: MetaConfig,
    deterministic: bool,
    random_search: bool = False,
    star_step: float | None = None,
) -> dict[str, Any]:
    """One batched episode; returns normalized regret curves and what PPO needs. It opens with ``n_startup``
    uniform trials, or with the star design when ``star_step`` is given (1 + d trials for d numeric columns)."""
    B = n_tasks * rollouts
    opening = tasks.uniform(n_tasks, n_startup, gen) if star_step is None else tasks.star(n_tasks, star_step, gen)
    n_startup = opening.shape[1]
    x = opening.repeat_interleave(rollouts, 0)
    f = _evaluate(tasks, x, rollouts)
    probe = tasks.uniform(n_tasks, 512, gen)
    f_probe = tasks(probe)  # [n_tasks, 512]
    hyper: GPHyper | None = None
    obs_l: list[Observation] = []
    idx_l, logp_l = [], []
    for t in range(horizon):
        t_frac = torch.full((B,), (n_startup + t) / (n_startup + horizon), dtype=DTYPE)
        if random_search:
            xn = tasks.uniform(B, 1, gen)[:, 0]
        else:
            p = propose(
                policy,
                x,
                -f,
                None,
                (tasks.layout, tasks.snap),
                gen,
                t_frac,
                meta_cfg,
                hyper,
                deterministic=deterministic,
            )
            hyper = p.hyper
            xn = p.x
            obs_l.append(p.obs)
            idx_l.append(p.index)
            logp_l.append(p.log_prob)
        fn = _evaluate(tasks, xn[:, None, :], rollouts)
        x = torch.cat([x, xn[:, None, :]], 1)
        f = torch.cat([f, fn], 1)
    per_task = f.reshape(n_tasks, rollouts * f.shape[1])
    f_star = torch.minimum(per_task.min(1).values, f_probe.min(1).values).repeat_interleave(rollouts)
    f_med = f_probe.median(1).values.repeat_interleave(rollouts)
    best = f.cummin(1).values[:, n_startup:]  # [B, T]
    regret = ((best - f_star[:, None]) / (f_med - f_star).clamp_min(1e-12)[:, None]).clamp_min(0.0)
    return {"regret": regret, "obs": obs_l, "index": idx_l, "log_prob": logp_l}


def ppo_update(
    policy: MetaPolicy, optimizer: torch.optim.Optimizer, ep: dict[str, Any], cfg: PretrainConfig, gen: torch.Generator
) -> dict[str, float]:
    regret = ep["regret"]  # [B,T]
    B, T = regret.shape
    rewards = (-regret / T).T.float()  # [T,B]
    dones = torch.zeros_like(rewards)
    dones[-1] = 1.0
    ret = reward_to_go(rewards, dones, 1.0)  # [T,B]
    R = cfg.rollouts
    g = ret.reshape(T, B // R, R)
    baseline = (g.sum(-1, keepdim=True) - g) / (R - 1)  # leave-one-out
    advantage = (g - baseline).reshape(T, B)
    advantage = advantage / (advantage.std() + 1e-8)
    stats = {"loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0}
    n = 0
    for _ in range(cfg.n_epochs):
        order = torch.randperm(T, generator=gen).tolist()
        for c in range(0, T, cfg.chunk):
            steps = order[c : c + cfg.chunk]
            optimizer.zero_grad(set_to_none=True)
            loss_total = torch.zeros(())
            for t in steps:
                dist = policy.distribution(ep["obs"][t])
                log_prob = dist.log_prob(ep["index"][t])
                log_ratio = log_prob - ep["log_prob"][t].float()
                ratio = log_ratio.exp()
                adv = advantage[t]
                surrogate = torch.min(ratio * adv, ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range) * adv)
                valid = ep["obs"][t].valid
                probs = dist.probs * valid
                entropy = -(probs * dist.logits.masked_fill(~valid, 0.0)).sum(-1)
                loss = (-surrogate.mean() - cfg.ent_coef * entropy.mean()) / len(steps)
                loss_total = loss_total + loss
                with torch.no_grad():
                    stats["entropy"] += float(entropy.mean())
                    stats["approx_kl"] += float(((ratio - 1) - log_ratio).mean())
                    stats["clip_fraction"] += float(((ratio - 1).abs() > cfg.clip_range).float().mean())
                    n += 1
            loss_total.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            optimizer.step()
            stats["loss"] += float(loss_total.detach())
    return {k: v / max(n, 1) for k, v in stats.items()}


def evaluate_policy(
    policy: MetaPolicy | None, cfg: PretrainConfig, meta_cfg: MetaConfig, seed: int = 10_000
) -> dict[str, float]:
    """Deterministic policy (or random search when ``policy`` is None) on fixed held-out tasks."""
    gen = torch.Generator().manual_seed(seed)
    openings = [None] + ([cfg.star_step] if cfg.star_fraction > 0 else [])
    areas, finals = [], []
    for _ in range(cfg.n_eval_batches):
        tasks = sample_tasks(cfg.n_tasks, gen, max_dim=cfg.max_dim)
        ep_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        for star_step in openings:
            with torch.no_grad():
                ep = run_episode(
                    policy or MetaPolicy(),
                    tasks,
                    cfg.n_tasks,
                    1,
                    cfg.horizon,
                    cfg.n_startup,
                    torch.Generator().manual_seed(ep_seed),
                    meta_cfg,
                    deterministic=True,
                    random_search=policy is None,
                    star_step=star_step,
                )
            areas.append(float(ep["regret"].mean()))
            finals.append(float(ep["regret"][:, -1].mean()))
    return {"regret_area": float(np.mean(areas)), "final_regret": float(np.mean(finals))}


def pretrain(
    config: PretrainConfig | dict[str, Any] | None = None, out: str | Path | None = None, log: Any = print
) -> dict[str, Any]:
    cfg = parse_config(PretrainConfig, config)
    out = Path(out) if out is not None else default_weights_path()
    set_seed(cfg.seed)
    meta_cfg = MetaConfig(
        n_candidates=cfg.n_candidates, fit_steps=cfg.fit_steps, deterministic=False, target=cfg.target
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = MetaPolicy(MetaPolicyConfig(hidden=cfg.hidden))
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    c0 = time.process_time()
    with single_thread():
        untrained = evaluate_policy(policy, cfg, meta_cfg)
        random_search = evaluate_policy(None, cfg, meta_cfg)
        log(f"held-out tasks: random search {random_search}, untrained policy (EI prior) {untrained}")
        best_score, best_iter = untrained["regret_area"], 0
        save_policy(policy, out, {"iteration": 0, "eval": untrained})
        curve: list[dict[str, float]] = [{"iteration": 0, **untrained}]
        for it in range(1, cfg.iterations + 1):
            tasks = sample_tasks(cfg.n_tasks, gen, max_dim=cfg.max_dim)
            star = cfg.star_fraction > 0 and float(torch.rand((), generator=gen)) < cfg.star_fraction
            with torch.no_grad():
                ep = run_episode(
                    policy,
                    tasks,
                    cfg.n_tasks,
                    cfg.rollouts,
                    cfg.horizon,
                    cfg.n_startup,
                    gen,
                    meta_cfg,
                    deterministic=False,
                    star_step=cfg.star_step if star else None,
                )
            stats = ppo_update(policy, optimizer, ep, cfg, gen)
            if it % cfg.eval_every == 0 or it == cfg.iterations:
                ev = evaluate_policy(policy, cfg, meta_cfg)
                curve.append({"iteration": it, **ev})
                improved = ev["regret_area"] < best_score
                if improved:
                    best_score, best_iter = ev["regret_area"], it
                    save_policy(
                        policy,
                        out,
                        {
                            "iteration": it,
                            "eval": ev,
                            "untrained": untrained,
                            "random_search": random_search,
                            "config": cfg.model_dump(),
                        },
                    )
                log(
                    f"iter {it:4d} {time.process_time() - c0:6.0f}s cpu train regret {float(ep['regret'].mean()):.4f} "
                    f"entropy {stats['entropy']:.2f} kl {stats['approx_kl']:.4f} | held-out {ev}"
                    f"{' (best, saved)' if improved else ''}"
                )
            if (time.process_time() - c0) / 60 > cfg.max_minutes:
                log(f"stopping at iteration {it}: {cfg.max_minutes} CPU minutes spent")
                break
    summary = {
        "weights": str(out),
        "best_iteration": best_iter,
        "best_regret_area": best_score,
        "untrained": untrained,
        "random_search": random_search,
        "curve": curve,
        "minutes": (time.perf_counter() - t0) / 60,
        "cpu_minutes": (time.process_time() - c0) / 60,
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autotune.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", default=None, help="weights file (default: the package's autotune/weights/meta_policy.pt)"
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="PretrainConfig fields")
    parser.add_argument("--summary", default=None, help="write the training summary (JSON) here")
    args = parser.parse_args(argv)
    overrides = {}
    for pair in args.set:
        k, v = pair.split("=", 1)
        try:
            overrides[k] = json.loads(v)
        except json.JSONDecodeError:
            overrides[k] = v
    summary = pretrain(overrides, args.out, log=lambda m: print(m, flush=True))
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "curve"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
