r"""The Open Bandit Dataset (Saito et al. 2021): fetch, load, and its standard off-policy evaluation
protocol.

The small sample of the dataset (ZOZOTOWN fashion recommendations: 3 positions, 80 items in campaign
``all``, 10 000 impressions per logging policy — uniform ``random`` and Bernoulli Thompson sampling
``bts`` —, propensities, hashed user features, user–item affinities and item features) ships inside
the ``obp`` 0.5.7 source distribution. :func:`fetch` downloads that sdist with pip (the only network
access: the package registry) and copies ``obp/dataset/obd/`` (and the ZOZOTOWN Beta prior of the
BTS policy, ``obp/policy/conf/prior_bts.yaml``) under ``data_dir()/obd``::

    python -m recsys.obd fetch            # ≈ 20 s, 24 MB

**The protocol** (:func:`obd_protocol`): estimate the BTS policy's click rate from the Random
policy's logs and compare with BTS's own on-policy click rate
:math:`V_{\mathrm{on}} = \frac1{n}\sum_{i \in \mathcal D_{bts}} r_i`. Each logged row is one round
:math:`(x_i, k_i, a_i, r_i, \mu_i)` with position :math:`k_i`; BTS's action distribution
:math:`\pi(a \mid k)` is the frequency of item a at position k among the top-3 of
:math:`\theta \sim \mathrm{Beta}(\alpha, \beta)` (the production prior), by Monte Carlo. The
estimators (:func:`recsys.ope.bandit_estimates`) use :math:`w_i = \pi(a_i|k_i)/\mu_i` and a
cross-fitted click model :math:`\hat q(x, a, k)`; the relative error is
:math:`|\hat V - V_{\mathrm{on}}| / V_{\mathrm{on}}`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from core_rl.common.errors import ConfigError
from core_rl.common.runs import data_dir

OBP_VERSION = "0.5.7"
POLICIES: tuple[str, ...] = ("random", "bts")
CAMPAIGNS: tuple[str, ...] = ("all", "men", "women")
_STAMP = ".fetched"


def obd_dir(root: str | Path | None = None) -> Path:
    """Where the dataset lives: ``root`` or ``data_dir()/obd``."""
    return Path(root) if root is not None else data_dir() / "obd"


def available(root: str | Path | None = None) -> bool:
    """The dataset has been fetched (both policies, campaign ``all``, and the BTS prior)."""
    d = obd_dir(root)
    return (d / _STAMP).is_file() and all((d / p / "all" / "all.csv").is_file() for p in POLICIES)


def fetch(root: str | Path | None = None, python: str | None = None, force: bool = False) -> Path:
    """Download the ``obp`` sdist with pip into a temporary folder and copy its ``obp/dataset/obd/``
    (and ``obp/policy/conf/prior_bts.yaml``) to :func:`obd_dir`. Idempotent."""
    dest = obd_dir(root)
    if available(dest) and not force:
        return dest
    with tempfile.TemporaryDirectory(prefix="obd-fetch-") as tmp:
        cmd = [python or sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python",
               "--no-binary", ":all:", "--disable-pip-version-check", f"obp=={OBP_VERSION}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sdists = sorted(Path(tmp).glob(f"obp-{OBP_VERSION}.tar.gz"))
        if proc.returncode != 0 or not sdists:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ConfigError(f"could not download obp=={OBP_VERSION} with pip: {tail[0]}")
        prefix = f"obp-{OBP_VERSION}/obp/"
        staging = Path(tmp) / "obd"
        with tarfile.open(sdists[0]) as tar:
            for member in tar.getmembers():
                name = member.name
                if not member.isfile() or not name.startswith(prefix):
                    continue
                rel = name[len(prefix):]
                if rel.startswith("dataset/obd/"):
                    target = staging / rel[len("dataset/obd/"):]
                elif rel == "policy/conf/prior_bts.yaml":
                    target = staging / "prior_bts.yaml"
                else:
                    continue
                if ".." in Path(rel).parts:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                target.write_bytes(src.read())
        if not (staging / "random" / "all" / "all.csv").is_file():
            raise ConfigError(f"obp-{OBP_VERSION}.tar.gz has no obp/dataset/obd/ folder")
        (staging / _STAMP).write_text(f"obp=={OBP_VERSION}\n")
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, dest)
    return dest


def require(root: str | Path | None = None) -> Path:
    """:func:`obd_dir` if the dataset is there, else a :class:`ConfigError` saying how to fetch it."""
    d = obd_dir(root)
    if not available(d):
        raise ConfigError(f"the Open Bandit Dataset is not under {d}: run `python -m recsys.obd fetch`")
    return d


def log_path(policy: str, campaign: str = "all", root: str | Path | None = None) -> Path:
    """The per-position CSV of one logging policy and campaign (``item_context.csv`` lies beside it)."""
    if policy not in POLICIES:
        raise ConfigError(f"policy must be one of {', '.join(POLICIES)}, got '{policy}'")
    if campaign not in CAMPAIGNS:
        raise ConfigError(f"campaign must be one of {', '.join(CAMPAIGNS)}, got '{campaign}'")
    return require(root) / policy / campaign / f"{campaign}.csv"


@dataclass
class OBDLog:
    """One logging policy's per-position rows, as arrays (rounds in logged order)."""

    policy: str
    campaign: str
    frame: pd.DataFrame          # the raw per-position rows
    items: pd.DataFrame          # item_id + item features
    action: np.ndarray           # [n] item index
    position: np.ndarray         # [n] 0-based position
    reward: np.ndarray           # [n] click
    pscore: np.ndarray           # [n] μ(a_i at k_i | x_i)
    context: np.ndarray          # [n, U] one-hot user features (OBP: get_dummies(drop_first=True))
    affinity: np.ndarray         # [n, C] user-item affinities

    @property
    def n_actions(self) -> int:
        return len(self.items)

    @property
    def len_list(self) -> int:
        return int(self.position.max()) + 1

    @property
    def on_policy_value(self) -> float:
        """The policy's own click rate on its logs."""
        return float(self.reward.mean())


def load(policy: str, campaign: str = "all", root: str | Path | None = None) -> OBDLog:
    """Load one logging policy's logs (OBP's preprocessing: positions ranked to 0-based, user features
    one-hot with the first level dropped)."""
    path = log_path(policy, campaign, root)
    frame = pd.read_csv(path, index_col=0)
    items = pd.read_csv(path.parent / "item_context.csv", index_col=0).sort_values("item_id").reset_index(drop=True)
    user_cols = [c for c in frame.columns if c.startswith("user_feature")]
    context = pd.get_dummies(frame[user_cols], drop_first=True).to_numpy(np.float32)
    aff_cols = [f"user-item_affinity_{i}" for i in items["item_id"]]
    affinity = frame[aff_cols].to_numpy(np.float32) if all(c in frame.columns for c in aff_cols) else \
        np.zeros((len(frame), len(items)), np.float32)
    index_of = pd.Series(np.arange(len(items)), index=items["item_id"].to_numpy())
    return OBDLog(policy, campaign, frame, items,
                  action=index_of.loc[frame["item_id"].to_numpy()].to_numpy(np.int64),
                  position=frame["position"].rank(method="dense").to_numpy(np.int64) - 1,
                  reward=frame["click"].to_numpy(np.float64),
                  pscore=frame["propensity_score"].to_numpy(np.float64),
                  context=context, affinity=affinity)


def bts_prior(campaign: str = "all", root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The production Beta prior (α, β) of ZOZOTOWN's Bernoulli TS policy, from OBP's ``prior_bts.yaml``."""
    import yaml

    conf = yaml.safe_load((require(root) / "prior_bts.yaml").read_text())
    if campaign not in conf:
        raise ConfigError(f"campaign '{campaign}' has no BTS prior")
    return np.asarray(conf[campaign]["alpha"], np.float64), np.asarray(conf[campaign]["beta"], np.float64)


def bts_action_dist(alpha: np.ndarray, beta: np.ndarray, len_list: int = 3, n_sim: int = 100_000,
                    seed: int = 0, batch: int = 20_000) -> np.ndarray:
    r""":math:`\pi(a \mid k)`, ``[C, K]``: how often item a is k-th among the ``len_list`` largest
    :math:`\theta_a \sim \mathrm{Beta}(\alpha_a, \beta_a)` over ``n_sim`` draws (vectorized)."""
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.as_tensor(alpha, dtype=torch.float64), torch.as_tensor(beta, dtype=torch.float64)
    c = a.shape[0]
    counts = torch.zeros(c, len_list, dtype=torch.float64)
    done = 0
    while done < n_sim:
        m = min(batch, n_sim - done)
        # Beta draws as X / (X + Y) with X ~ Gamma(α), Y ~ Gamma(β) (torch's Gamma takes no generator)
        x = torch._standard_gamma(a.expand(m, c).contiguous(), generator=gen)
        y = torch._standard_gamma(b.expand(m, c).contiguous(), generator=gen)
        top = torch.topk(x / (x + y), len_list, dim=1).indices                  # [m, K]
        counts.index_put_((top.reshape(-1), torch.arange(len_list).repeat(m)),
                          torch.ones(m * len_list, dtype=torch.float64), accumulate=True)
        done += m
    return (counts / n_sim).numpy()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recsys.obd", description="the Open Bandit Dataset")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help=f"download obp=={OBP_VERSION}'s sdist with pip and copy its dataset")
    f.add_argument("--root", default=None, help="target folder (default: data_dir()/obd)")
    f.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    try:
        print(fetch(args.root, force=args.force))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["OBP_VERSION", "POLICIES", "CAMPAIGNS", "obd_dir", "available", "fetch", "require", "log_path", "OBDLog",
           "load", "bts_prior", "bts_action_dist"]
