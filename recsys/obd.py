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
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core_rl.common.errors import ConfigError
from core_rl.common.runs import data_dir, run_child

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
        cmd = [
            python or sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--ignore-requires-python",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            f"obp=={OBP_VERSION}",
            "-d",
            tmp,
        ]
        proc = run_child(cmd, capture_output=True, text=True)
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
                rel = name[len(prefix) :]
                if rel.startswith("dataset/obd/"):
                    target = staging / rel[len("dataset/obd/") :]
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
    frame: pd.DataFrame  # the raw per-position rows
    items: pd.DataFrame  # item_id + item features
    action: np.ndarray  # [n] item index
    position: np.ndarray  # [n] 0-based position
    reward: np.ndarray  # [n] click
    pscore: np.ndarray  # [n] μ(a_i at k_i | x_i)
    context: np.ndarray  # [n, U] one-hot user features (OBP: get_dummies(drop_first=True))
    affinity: np.ndarray  # [n, C] user-item affinities

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
    affinity = (
        frame[aff_cols].to_numpy(np.float32)
        if all(c in frame.columns for c in aff_cols)
        else np.zeros((len(frame), len(items)), np.float32)
    )
    index_of = pd.Series(np.arange(len(items)), index=items["item_id"].to_numpy())
    return OBDLog(
        policy,
        campaign,
        frame,
        items,
        action=index_of.loc[frame["item_id"].to_numpy()].to_numpy(np.int64),
        position=frame["position"].rank(method="dense").to_numpy(np.int64) - 1,
        reward=frame["click"].to_numpy(np.float64),
        pscore=frame["propensity_score"].to_numpy(np.float64),
        context=context,
        affinity=affinity,
    )


def bts_prior(campaign: str = "all", root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The production Beta prior (α, β) of ZOZOTOWN's Bernoulli TS policy, from OBP's ``prior_bts.yaml``."""
    import yaml

    conf = yaml.safe_load((require(root) / "prior_bts.yaml").read_text())
    if campaign not in conf:
        raise ConfigError(f"campaign '{campaign}' has no BTS prior")
    return np.asarray(conf[campaign]["alpha"], np.float64), np.asarray(conf[campaign]["beta"], np.float64)


def bts_action_dist(
    alpha: np.ndarray, beta: np.ndarray, len_list: int = 3, n_sim: int = 100_000, seed: int = 0, batch: int = 20_000
) -> np.ndarray:
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
        top = torch.topk(x / (x + y), len_list, dim=1).indices  # [m, K]
        counts.index_put_(
            (top.reshape(-1), torch.arange(len_list).repeat(m)),
            torch.ones(m * len_list, dtype=torch.float64),
            accumulate=True,
        )
        done += m
    return (counts / n_sim).numpy()


# ---- the reward model q̂(x, a, k) ----------------------------------------------------------------
def item_features(items: pd.DataFrame) -> np.ndarray:
    """``[C, F]`` item features: the numeric ``item_feature_0`` and one-hot hashed categorical ones."""
    from recsys.logs.positions import _encode

    cols = [c for c in items.columns if c != "item_id"]
    return _encode(items, cols)[0]


def fit_click_model(log: OBDLog, rows: np.ndarray, l2: float = 1e-2, seed: int = 0) -> Any:
    r"""A position-aware logistic click model fitted on ``rows`` of ``log`` (full-batch L-BFGS, L2):

    :math:`\hat q(x, a, k) = \sigma(u^\top x + v^\top f_a + \gamma\,\mathrm{aff}(x, a) + p_k + e_a)`.
    Returns ``predict(idx) → [len(idx), C, K]``.
    """
    torch.manual_seed(seed)
    x = torch.as_tensor(log.context, dtype=torch.float64)
    f = torch.as_tensor(item_features(log.items), dtype=torch.float64)
    aff = torch.as_tensor(log.affinity, dtype=torch.float64)
    c, k = log.n_actions, log.len_list
    params = [
        torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True),
        torch.zeros(f.shape[1], dtype=torch.float64, requires_grad=True),
        torch.zeros(1, dtype=torch.float64, requires_grad=True),
        torch.zeros(k, dtype=torch.float64, requires_grad=True),
        torch.zeros(c, dtype=torch.float64, requires_grad=True),
        torch.full((1,), float(np.log(max(log.reward.mean(), 1e-4))), dtype=torch.float64, requires_grad=True),
    ]

    def logits(idx: torch.Tensor) -> torch.Tensor:  # [m, C, K]
        u, v, g, pk, ea, b = params
        return (
            (x[idx] @ u)[:, None, None] + (f @ v + ea)[None, :, None] + g * aff[idx][:, :, None] + pk[None, None, :] + b
        )

    tr = torch.as_tensor(rows, dtype=torch.long)
    a, pos = torch.from_numpy(np.array(log.action))[tr], torch.from_numpy(np.array(log.position))[tr]
    y = torch.as_tensor(log.reward, dtype=torch.float64)[tr]
    opt = torch.optim.LBFGS(params, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        u, v, g, pk, ea, b = params
        z = x[tr] @ u + (f @ v + ea)[a] + g * aff[tr, a] + pk[pos] + b  # the logged (a, k) only
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
        loss = loss + l2 * sum((p_ * p_).sum() for p_ in params[:5]) / len(tr) * 100
        loss.backward()
        return loss

    opt.step(closure)

    def predict(idx: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(logits(torch.as_tensor(idx, dtype=torch.long))).numpy()

    return predict


def cross_fitted_q(log: OBDLog, folds: int = 3, seed: int = 0) -> np.ndarray:
    """q̂(x_i, a, k) for every round, ``[n, C, K]``, each predicted by a model fitted on the other folds."""
    n = len(log.reward)
    fold = np.random.default_rng(seed).permutation(n) % folds
    q = np.empty((n, log.n_actions, log.len_list))
    for j in range(folds):
        test = np.flatnonzero(fold == j)
        q[test] = fit_click_model(log, np.flatnonzero(fold != j), seed=seed + j)(test)
    return q


# ---- the protocol -------------------------------------------------------------------------------------
DEFAULT_LAMBDAS: dict[str, float] = {"switch_dr": 10.0, "dros": 100.0}  # BTS on OBD: w ≤ 19.5


@dataclass
class ProtocolResult:
    ground_truth: float  # BTS's on-policy click rate
    random_value: float  # the Random policy's on-policy click rate
    estimates: dict[str, Any]  # name → recsys.ope.Estimate

    def rel_errors(self) -> dict[str, float]:
        return {k: abs(e.value - self.ground_truth) / self.ground_truth for k, e in self.estimates.items()}


def protocol_inputs(
    campaign: str = "all", n_sim: int = 100_000, seed: int = 0, root: str | Path | None = None
) -> dict[str, np.ndarray]:
    """The Random logs, BTS's action distribution and the cross-fitted q̂ (what both libraries are fed)."""
    log = load("random", campaign, root)
    alpha, beta = bts_prior(campaign, root)
    dist = bts_action_dist(alpha, beta, log.len_list, n_sim=n_sim, seed=seed)
    return {
        "reward": log.reward,
        "action": log.action,
        "position": log.position,
        "pscore": log.pscore,
        "action_dist": np.broadcast_to(dist, (len(log.reward),) + dist.shape),
        "q_hat": cross_fitted_q(log, seed=seed),
    }


def obd_protocol(
    campaign: str = "all",
    n_sim: int = 100_000,
    n_bootstrap: int = 200,
    seed: int = 0,
    lambdas: dict[str, float] | None = None,
    root: str | Path | None = None,
    inputs: dict[str, np.ndarray] | None = None,
) -> ProtocolResult:
    """Estimate BTS's click rate from the Random logs with every bandit estimator (with intervals) and
    compare with BTS's own click rate (the standard protocol of the dataset's paper)."""
    from recsys.ope import bandit_estimates

    inputs = inputs if inputs is not None else protocol_inputs(campaign, n_sim, seed, root)
    est = bandit_estimates(
        inputs["reward"],
        inputs["action"],
        inputs["position"],
        inputs["pscore"],
        np.ascontiguousarray(inputs["action_dist"]),
        inputs["q_hat"],
        lambdas=dict(DEFAULT_LAMBDAS, **(lambdas or {})),
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    return ProtocolResult(load("bts", campaign, root).on_policy_value, float(inputs["reward"].mean()), est)


# ---- Open Bandit Pipeline, in its own venv (recsys/build_obp_env.sh) ---------------------------------
OBP_NAMES: dict[str, str] = {
    "ips": "InverseProbabilityWeighting",
    "snips": "SelfNormalizedInverseProbabilityWeighting",
    "dm": "DirectMethod",
    "dr": "DoublyRobust",
    "sndr": "SelfNormalizedDoublyRobust",
    "switch_dr": "SwitchDoublyRobust",
    "dros": "DoublyRobustWithShrinkage",
}

_OBP_SCRIPT = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import obp.ope as ope

args = json.loads(sys.argv[1])
names, lambdas = args["names"], args["lambdas"]

def estimators():
    out = {}
    for key, cls in names.items():
        kw = {"lambda_": lambdas[key]} if key in lambdas else {}
        out[key] = getattr(ope, cls)(**kw)
    return out

def run(inp):
    values = {}
    for key, est in estimators().items():
        kw = dict(action=inp["action"], position=inp["position"], action_dist=inp["action_dist"])
        if key != "dm":
            kw.update(reward=inp["reward"], pscore=inp["pscore"])
        if key in ("dm", "dr", "sndr", "switch_dr", "dros"):
            kw["estimated_rewards_by_reg_model"] = inp["q_hat"]
        if key == "dm":
            kw.pop("action")
        values[key] = float(est.estimate_policy_value(**kw))
    return values

result = {}
if args.get("inputs"):
    inp = dict(np.load(args["inputs"]))
    result["values"] = run(inp)
if args.get("speed"):
    sp = args["speed"]
    exec(sp["generator"], globals())
    inp = synthetic_rounds(sp["n"], sp["c"], sp["k"], sp["seed"])
    times = []
    for _ in range(sp["repeats"]):
        t = time.perf_counter()
        vals = run(inp)
        times.append(time.perf_counter() - t)
    result["speed"] = {"seconds": min(times), "values": vals}
if args.get("protocol"):
    pr = args["protocol"]
    from sklearn.linear_model import LogisticRegression
    from obp.dataset import OpenBanditDataset
    from obp.policy import BernoulliTS
    ds = OpenBanditDataset(behavior_policy="random", campaign=pr["campaign"], data_path=Path(pr["root"]))
    bf = ds.obtain_batch_bandit_feedback()
    pol = BernoulliTS(n_actions=ds.n_actions, len_list=ds.len_list, is_zozotown_prior=True,
                      campaign=pr["campaign"], random_state=pr["seed"])
    dist = pol.compute_batch_action_dist(n_rounds=bf["n_rounds"], n_sim=pr["n_sim"])
    reg = ope.RegressionModel(n_actions=ds.n_actions, len_list=ds.len_list, action_context=ds.action_context,
                              base_model=LogisticRegression(max_iter=1000, C=100, random_state=pr["seed"]))
    q = reg.fit_predict(context=bf["context"], action=bf["action"], reward=bf["reward"], position=bf["position"],
                        pscore=bf["pscore"], n_folds=3, random_state=pr["seed"])
    inp = dict(reward=bf["reward"], action=bf["action"], position=bf["position"], pscore=bf["pscore"],
               action_dist=dist, q_hat=q)
    truth = OpenBanditDataset.calc_on_policy_policy_value_estimate(
        behavior_policy="bts", campaign=pr["campaign"], data_path=Path(pr["root"]))
    result["protocol"] = {"values": run(inp), "ground_truth": float(truth)}
print("OBP-RESULT " + json.dumps(result))
"""

# the synthetic rounds of the speed comparison: the same code runs in both environments
SYNTHETIC_ROUNDS = r"""
def synthetic_rounds(n, c, k, seed):
    import numpy as np
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c, k))
    dist = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    action = rng.integers(c, size=n)
    position = rng.integers(k, size=n)
    pscore = np.full(n, 1.0 / c)
    q_hat = rng.uniform(0.0, 0.3, size=(n, c, k))
    reward = (rng.uniform(size=n) < q_hat[np.arange(n), action, position]).astype(float)
    return dict(reward=reward, action=action, position=position, pscore=pscore, action_dist=dist, q_hat=q_hat)
"""


def synthetic_rounds(n: int, c: int, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic position-based rounds (a random π, uniform μ, q̂ and Bernoulli clicks), numpy arrays."""
    scope: dict[str, Any] = {}
    exec(SYNTHETIC_ROUNDS, scope)
    return scope["synthetic_rounds"](n, c, k, seed)


def obp_python(venv: str | Path | None = None) -> Path:
    """The OBP venv's interpreter (``$OBP_VENV`` or ``data_dir()/obp-venv``; built by recsys/build_obp_env.sh)."""
    import os

    return Path(venv or os.environ.get("OBP_VENV") or data_dir() / "obp-venv") / "bin" / "python"


def obp_available(venv: str | Path | None = None) -> bool:
    d = obp_python(venv).parent.parent
    return obp_python(venv).is_file() and any(d.glob(".obp-installed-*"))


def run_obp(
    inputs: dict[str, np.ndarray] | None = None,
    lambdas: dict[str, float] | None = None,
    speed: dict[str, int] | None = None,
    protocol: dict[str, Any] | None = None,
    venv: str | Path | None = None,
    timeout: float = 1800,
) -> dict[str, Any]:
    """Run OBP's estimators in its venv (a subprocess) on saved ``inputs``, on synthetic rounds
    (``speed``: n, c, k, seed, repeats) and/or its own OBD protocol (``protocol``: root, campaign, n_sim,
    seed). Returns its JSON result."""
    import json

    py = obp_python(venv)
    if not obp_available(venv):
        raise ConfigError(f"no Open Bandit Pipeline venv at {py.parent.parent}: run `bash recsys/build_obp_env.sh`")
    lam = dict(DEFAULT_LAMBDAS, **(lambdas or {}))
    with tempfile.TemporaryDirectory(prefix="obp-run-") as tmp:
        args: dict[str, Any] = {"names": OBP_NAMES, "lambdas": lam}
        if inputs is not None:
            path = Path(tmp) / "inputs.npz"
            np.savez(path, **{k: np.ascontiguousarray(v) for k, v in inputs.items()})
            args["inputs"] = str(path)
        if speed is not None:
            args["speed"] = dict(speed, generator=SYNTHETIC_ROUNDS)
        if protocol is not None:
            args["protocol"] = protocol
        script = Path(tmp) / "run_obp.py"
        script.write_text(_OBP_SCRIPT)
        proc = run_child([str(py), str(script), json.dumps(args)], capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("OBP-RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ConfigError("Open Bandit Pipeline run failed: " + " | ".join(tail))
    return json.loads(lines[-1][len("OBP-RESULT ") :])


# ---- a policy learned from the Random logs ------------------------------------------------------------
def learned_action_dist(
    policy: Any, logs: str | Path, n: int, n_positions: int, chunk_rows: int = 65_536
) -> np.ndarray:
    """π(a | x_i, k_i) of a recsys policy on an ingested OBD log (one-position slates, position in the
    user features), as ``[n, C, K]`` with row i's distribution at every position column."""
    from recsys.choice_model import enumerate_slates
    from recsys.logs import LogReader

    reader = LogReader(logs, chunk_rows=chunk_rows)
    c = reader.meta.num_candidates
    if reader.meta.slate_size != 1:
        raise ConfigError(
            f"expected one-position slates (per-position OBD rows), got slate_size {reader.meta.slate_size}"
        )
    table = enumerate_slates(c, 1, ordered=True)[:, 0]  # slate s shows item table[s]
    out = np.zeros((n, c), np.float64)
    with torch.no_grad():
        for chunk in reader:
            dist = policy.slate_distribution(chunk.obs(), chunk.info()).double()  # [m, S]
            rows = chunk.session.numpy()  # session = source row
            item_dist = torch.zeros(dist.shape[0], c, dtype=torch.float64).index_add_(1, table, dist)
            out[rows] = item_dist.numpy()
    return np.repeat(out[:, :, None], n_positions, axis=2)


def learn_from_random(
    algo: str = "topk_reinforce",
    config: dict[str, Any] | None = None,
    campaign: str = "all",
    test_size: float = 0.3,
    workdir: str | Path | None = None,
    tracking_uri: str | None = None,
    experiment: str = "recsys",
    n_bootstrap: int = 200,
    n_sim: int = 100_000,
    seed: int = 0,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Learn a position-aware policy from the Random logs with the app's off-policy learner ``algo``
    (``recsys.pipeline.train``: one MLflow run, registered as ``recsys-obd-<algo>``) on the first
    ``1 − test_size`` of the rounds (time order), estimate its click rate with DR (and IPS / SNIPS) and a
    bootstrap interval on the held-out rounds (q̂ fitted on the training rounds), and plot it beside the two
    logged policies' click rates and BTS's DR estimate (a second run, ``obd-evaluate``, with
    ``plots/obd_policies.png``). Evaluating on the training rounds instead would reward memorised clicks."""
    from core_rl.common.runs import tracked_run
    from recsys.logs import ingest_logs
    from recsys.logs.positions import to_slates
    from recsys.ope import bandit_estimates
    from recsys.pipeline import train
    from recsys.plots import log_figure
    from recsys.serving import load_recommender

    if not 0 < test_size < 1:
        raise ConfigError(f"test_size must be in (0, 1), got {test_size}")
    workdir = Path(workdir) if workdir is not None else data_dir() / "obd-work"
    log = load("random", campaign, root)
    n = len(log.reward)
    cut = int(round(n * (1 - test_size)))
    train_logs, test_logs = workdir / f"random_{campaign}_train.parquet", workdir / f"random_{campaign}_test.parquet"
    if not (train_logs.is_file() and test_logs.is_file()):
        slates, meta = to_slates(log.frame, log.items)  # one encoding for both splits
        ingest_logs(slates.iloc[:cut].reset_index(drop=True), train_logs, meta_overrides=meta)
        ingest_logs(slates.iloc[cut:].reset_index(drop=True), test_logs, meta_overrides=meta)
    trained = train(
        algo,
        logs=train_logs,
        config=config,
        seed=seed,
        register=f"recsys-obd-{algo}",
        tracking_uri=tracking_uri,
        experiment=experiment,
    )
    policy = load_recommender(trained["model_uri"])
    te = np.arange(cut, n)
    q_hat = fit_click_model(log, np.arange(cut), seed=seed)(te)
    dist = learned_action_dist(policy, test_logs, n, log.len_list)[te]
    learned = bandit_estimates(
        log.reward[te],
        log.action[te],
        log.position[te],
        log.pscore[te],
        dist,
        q_hat,
        estimators=("ips", "snips", "dr"),
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    bts = obd_protocol(
        campaign, inputs=protocol_inputs(campaign, n_sim, seed, root), n_bootstrap=n_bootstrap, seed=seed, root=root
    )
    out = {
        "train_run_id": trained["run_id"],
        "model_uri": trained["model_uri"],
        "registered": trained.get("registered"),
        "train_rounds": cut,
        "test_rounds": n - cut,
        "random_click_rate": bts.random_value,
        "random_click_rate_test": float(log.reward[te].mean()),
        "bts_click_rate": bts.ground_truth,
        "bts_dr": bts.estimates["dr"].as_dict(),
        "learned": {k: e.as_dict() for k, e in learned.items()},
    }
    with tracked_run(
        experiment,
        run_name="obd-evaluate",
        tracking_uri=tracking_uri,
        tags={"recsys_command": "obd-evaluate", "model_uri": trained["model_uri"]},
        params={"algo": algo, "campaign": campaign, "test_size": test_size, "bootstrap": n_bootstrap, "seed": seed},
    ) as run:
        metrics = {
            "random_click_rate": bts.random_value,
            "bts_click_rate": bts.ground_truth,
            "bts_dr": bts.estimates["dr"].value,
        }
        for k, e in learned.items():
            metrics.update({f"learned_{k}": e.value, f"learned_{k}_lower": e.lower, f"learned_{k}_upper": e.upper})
        run.log_metrics(metrics, step=0)
        log_figure(
            run,
            policies_plot(out, f"Open Bandit Dataset ({campaign}): {algo} learned from Random logs"),
            "obd_policies.png",
        )
        run.log_dict(out, "obd_policies.json")
        out["run_id"] = run.run_id
    return out


def policies_plot(result: dict[str, Any], title: str):  # type: ignore[no-untyped-def]
    """Click rates: the two logged policies (on-policy), BTS's and the learned policy's DR estimates with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dr = result["learned"]["dr"]
    names = ["Random (logged)", "BTS (logged)", "BTS (DR from Random)", "learned (DR from Random)"]
    vals = [result["random_click_rate"], result["bts_click_rate"], result["bts_dr"]["value"], dr["value"]]
    lo = [0, 0, result["bts_dr"]["value"] - result["bts_dr"]["lower"], dr["value"] - dr["lower"]]
    hi = [0, 0, result["bts_dr"]["upper"] - result["bts_dr"]["value"], dr["upper"] - dr["value"]]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.bar(names, vals, yerr=np.array([lo, hi]), capsize=4, color=["#999999", "#999999", "#6a8fc9", "#d9834c"])
    ax.set_ylabel("click rate per impression")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


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


__all__ = [
    "OBP_VERSION",
    "POLICIES",
    "CAMPAIGNS",
    "obd_dir",
    "available",
    "fetch",
    "require",
    "log_path",
    "OBDLog",
    "load",
    "bts_prior",
    "bts_action_dist",
    "item_features",
    "fit_click_model",
    "cross_fitted_q",
    "DEFAULT_LAMBDAS",
    "ProtocolResult",
    "protocol_inputs",
    "obd_protocol",
    "OBP_NAMES",
    "synthetic_rounds",
    "obp_python",
    "obp_available",
    "run_obp",
    "learned_action_dist",
    "learn_from_random",
    "policies_plot",
]
