"""autotune's samplers: Optuna's sampler contract, learning, statelessness, failures, PBT."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from autotune import MetaSampler, PopulationBasedTraining, RLSampler
from autotune.meta import MetaPolicy, default_weights_path, load_policy
from autotune.space import SpaceCodec

optuna.logging.set_verbosity(optuna.logging.ERROR)

SAMPLERS = {
    "rl": lambda seed: RLSampler(seed=seed),
    "rl-ppo": lambda seed: RLSampler(seed=seed, update="ppo", batch_size=4),
    "meta": lambda seed: MetaSampler(seed=seed, n_startup_trials=3, n_candidates=128),
}


def every_type_objective(trial: optuna.Trial) -> float:
    """Every distribution type, a conditional branch, and trials that fail, prune or return NaN."""
    x = trial.suggest_float("x", -3.0, 3.0)
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    q = trial.suggest_float("q", 0.0, 1.0, step=0.1)
    n = trial.suggest_int("n", 1, 9)
    width = trial.suggest_int("width", 16, 256, step=16)
    k = trial.suggest_int("k", 1, 1000, log=True)
    kind = trial.suggest_categorical("kind", ["a", "b", None, 3])
    fixed = trial.suggest_float("fixed", 2.0, 2.0)
    value = x**2 + (math.log10(lr) + 3) ** 2 + q + abs(n - 4) + width / 256 + math.log(k) / 7 + fixed
    if kind == "a":  # conditional parameters that exist only on this branch
        value += trial.suggest_float("a_gain", 0.1, 10.0, log=True)
    if trial.number % 7 == 3:
        raise ValueError("this configuration crashed")
    if trial.number % 7 == 5:
        return float("nan")
    if trial.number % 7 == 6:
        trial.report(value, 1)
        raise optuna.TrialPruned()
    return value


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_contract_all_types_conditional_failed_pruned(name):
    sampler = SAMPLERS[name](0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(every_type_objective, n_trials=42, catch=(ValueError,))
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 42
    states = [t.state for t in trials]
    assert states.count(TrialState.FAIL) == 12  # 6 raised + 6 NaN: recorded as failed, the study went on
    assert states.count(TrialState.PRUNED) == 6
    assert states.count(TrialState.COMPLETE) == 24
    for t in trials:
        for pname, value in t.params.items():
            dist = t.distributions[pname]
            assert dist._contains(dist.to_internal_repr(value)), (pname, value, dist)
        assert ("a_gain" in t.params) == (t.params["kind"] == "a")
        assert t.params["fixed"] == 2.0
    assert math.isfinite(study.best_value)


def test_codec_roundtrip_and_snap_stay_inside_distributions():
    space = {
        "f": FloatDistribution(-1, 1),
        "lf": FloatDistribution(1e-4, 1, log=True),
        "sf": FloatDistribution(0, 1, step=0.1),
        "i": IntDistribution(0, 7),
        "si": IntDistribution(10, 100, step=15),
        "li": IntDistribution(1, 1000, log=True),
        "c": CategoricalDistribution(["x", 2, None]),
    }
    codec = SpaceCodec(space)
    rng = np.random.default_rng(0)
    u = rng.random((500, codec.dim))
    params = codec.decode(codec.snap(u))
    for p in params:
        for name, dist in space.items():
            assert dist._contains(dist.to_internal_repr(p[name])), (name, p[name])
    again = codec.decode(codec.encode(params))
    for a, b in zip(params, again):
        for name in space:
            assert a[name] == pytest.approx(b[name]) if isinstance(a[name], float) else a[name] == b[name]
    # a uniform unit point gives each grid value its share
    ints = np.array([p["i"] for p in codec.decode(codec.snap(rng.random((4000, codec.dim))))])
    counts = np.bincount(ints, minlength=8) / len(ints)
    assert np.all(np.abs(counts - 1 / 8) < 0.03)


def quadratic(trial: optuna.Trial) -> float:
    return sum((trial.suggest_float(f"x{i}", -5.0, 5.0) - 1.5) ** 2 for i in range(3))


@pytest.mark.parametrize("name", ["rl", "meta"])
def test_finds_quadratic_optimum_faster_than_random(name):
    n_trials, seeds = 60, range(5)
    ours, rand = [], []
    for seed in seeds:
        s = optuna.create_study(sampler=SAMPLERS[name](seed))
        s.optimize(quadratic, n_trials=n_trials)
        ours.append(np.minimum.accumulate([t.value for t in s.trials]))
        r = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        r.optimize(quadratic, n_trials=n_trials)
        rand.append(np.minimum.accumulate([t.value for t in r.trials]))
    ours_final, rand_final = np.array(ours)[:, -1], np.array(rand)[:, -1]
    # better on average and in most seeds, and random search needs all 60 trials for what ours reaches sooner
    assert ours_final.mean() < 0.5 * rand_final.mean(), (ours_final, rand_final)
    assert (ours_final < rand_final).sum() >= 4
    reach = [
        int(np.argmax(c <= np.median(rand_final))) if (c <= np.median(rand_final)).any() else n_trials for c in ours
    ]
    assert np.median(reach) < n_trials - 10


def test_controller_is_rebuilt_from_stored_trials(tmp_path):
    """Stateless: a fresh sampler (another worker, or a resumed run) rebuilds the same policy."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, sampler=RLSampler(seed=3))
    study.optimize(quadratic, n_trials=20)
    first = RLSampler(seed=3).policy(study)
    # resume in a "new process": new sampler object, study loaded back from the storage
    resumed = optuna.load_study(study_name="s", storage=storage, sampler=RLSampler(seed=3))
    resumed.optimize(quadratic, n_trials=13)
    assert [t.number for t in resumed.trials] == list(range(33))
    assert {t.state for t in resumed.trials} == {TrialState.COMPLETE}
    again = RLSampler(seed=3).policy(optuna.load_study(study_name="s", storage=storage))
    uninterrupted = optuna.create_study(sampler=RLSampler(seed=3))
    for t in resumed.trials:  # the same 33 results replayed in another storage
        uninterrupted.add_trial(t)
    replay = RLSampler(seed=3).policy(uninterrupted)
    for (k1, p1), (k2, p2) in zip(again.state_dict().items(), replay.state_dict().items()):
        assert k1 == k2 and torch.equal(p1, p2)
    # the first 20 trials' policy differs from the one after 33 (it kept learning after the resume)
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    # the policy moved towards the optimum x = 1.5 (unit coordinate 0.65, logit 0.62)
    means = [float(h.mean.detach()) for h in again.heads.values()]
    assert np.mean(np.abs(np.array(means) - 0.62)) < 0.6


def test_running_trials_are_handled():
    study = optuna.create_study(sampler=RLSampler(seed=0, batch_size=4))
    study.optimize(quadratic, n_trials=8)
    reference = [p.detach().clone() for p in RLSampler(seed=0, batch_size=4).policy(study).parameters()]
    running = [study.ask() for _ in range(3)]  # three workers mid-trial
    for t in running:
        quadratic(t)
    assert all(t._cached_frozen_trial.state == TrialState.RUNNING for t in running)
    waiting = list(RLSampler(seed=0, batch_size=4).policy(study).parameters())
    assert all(torch.equal(a, b) for a, b in zip(reference, waiting))  # unrewarded trials wait for their batch
    for t in running:
        study.tell(t, quadratic(t))
    study.optimize(quadratic, n_trials=5)
    assert len(study.trials) == 16 and all(t.state == TrialState.COMPLETE for t in study.trials)

    # the meta sampler steers away from configurations that are still running (kriging believer)
    meta = optuna.create_study(sampler=MetaSampler(seed=0, n_startup_trials=3, n_candidates=64))
    meta.optimize(quadratic, n_trials=6)
    pending = [meta.ask() for _ in range(4)]
    for t in pending:
        quadratic(t)
    xs = np.array([[t.params[f"x{i}"] for i in range(3)] for t in pending])
    assert len({tuple(np.round(x, 6)) for x in xs}) == 4


def test_growing_search_space_falls_back_cleanly():
    def objective(trial: optuna.Trial) -> float:
        v = (trial.suggest_float("x", -2, 2) - 1) ** 2
        if trial.number >= 10:  # a parameter added mid-study
            v += (trial.suggest_int("extra", 0, 10) - 7) ** 2 / 10
        return v

    for sampler in (RLSampler(seed=1), MetaSampler(seed=1, n_startup_trials=3, n_candidates=64)):
        study = optuna.create_study(sampler=sampler)
        study.optimize(objective, n_trials=25)
        assert all(t.state == TrialState.COMPLETE for t in study.trials)
        assert all("extra" in t.params for t in study.trials[10:])
        assert all(0 <= t.params["extra"] <= 10 for t in study.trials[10:])


def test_same_seed_same_configurations():
    runs = []
    for _ in range(2):
        for make in (SAMPLERS["rl"], SAMPLERS["meta"]):
            s = optuna.create_study(sampler=make(7))
            s.optimize(quadratic, n_trials=12)
            runs.append([t.params for t in s.trials])
    assert runs[0] == runs[2] and runs[1] == runs[3]


def test_shipped_meta_weights_load_weights_only():
    path = default_weights_path()
    assert path.is_file(), "run `python -m autotune.pretrain` to train the meta policy"
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["feature_version"] >= 1 and "state" in payload
    assert path.stat().st_size < 500_000
    policy = load_policy("default")
    assert sum(p.numel() for p in policy.parameters()) > 1000


def test_multi_objective_is_refused():
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=RLSampler(seed=0))
    with pytest.raises(ValueError, match="one objective"):
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=1)


def test_pbt_exploits_and_explores_core_rl_agents():
    space = {
        "lr": FloatDistribution(1e-6, 3e-3, log=True),
        "ent_coef": FloatDistribution(0.0, 0.02),
        "n_epochs": IntDistribution(2, 8),
    }
    pbt = PopulationBasedTraining(
        "ppo",
        "CartPole-v1",
        space,
        {"n_envs": 4, "n_steps": 128, "batch_size": 128},
        {"population": 4, "interval_steps": 4096, "total_steps": 5 * 4096, "seed": 0},
    )
    result = pbt.run()
    assert result.rounds == 5
    assert len(result.events) == 4  # one bottom member replaced after each of the first four rounds
    for e in result.events:
        assert e["fitness_source"] >= e["fitness_replaced"]
        for name, dist in space.items():
            assert dist._contains(dist.to_internal_repr(e["new"][name]))
    # the replaced members continue from the copied checkpoint: their step counters carried over
    assert all(m.agent.num_timesteps == 5 * 4096 for m in result.members)
    assert result.best_fitness > 100.0, result.fitness


@pytest.mark.slow  # starts Ray: ~1 min alone (2 min under load); CI runs it
@pytest.mark.ray_local
def test_ray_tune_drives_our_sampler():
    pytest.importorskip("ray.tune.search.optuna", reason="Ray Tune is not installed (pip install 'ray[tune]')")
    import ray
    from ray import tune

    from autotune.ray_tune import optuna_search

    def trainable(config):
        return {"loss": (config["x"] - 1.0) ** 2}

    search = optuna_search("rl", {"x": FloatDistribution(-3.0, 3.0)}, metric="loss", mode="min", seed=0)
    ray.init(num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        results = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=search, num_samples=12)).fit()
        losses = [r.metrics["loss"] for r in results]
        assert len(losses) == 12 and min(losses) < 0.5
    finally:
        ray.shutdown()


# ---- conditional (tree-structured) spaces ----------------------------------------------------------
def two_branch(trial: optuna.Trial) -> float:
    """Branch 'a' holds the optimum 0 in a narrow basin of two dimensions; branch 'b' bottoms out at 0.5."""
    shared = trial.suggest_float("shared", 0.0, 1.0)
    if trial.suggest_categorical("kind", ["a", "b"]) == "a":
        x, y = trial.suggest_float("ax", -5.0, 5.0), trial.suggest_float("ay", -5.0, 5.0, step=0.01)
        return ((x - 1.3) ** 2 + (y + 2.1) ** 2) / 40 + 0.1 * (shared - 0.3) ** 2
    return 0.5 + (trial.suggest_int("bn", 0, 100) - 70) ** 2 / 1000 + 0.1 * (shared - 0.3) ** 2


def test_group_decomposition_is_optunas():
    from optuna.search_space.group_decomposed import _SearchSpaceGroup

    from autotune.space import group_decomposition

    trials = []
    for objective in (every_type_objective, two_branch):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(objective, n_trials=20, catch=(ValueError,))
        trials += study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    reference = _SearchSpaceGroup()
    for t in trials:
        reference.add_distributions(t.distributions)
    ours = group_decomposition(trials)
    assert sorted(map(sorted, ours)) == sorted(sorted(g) for g in reference.search_spaces)
    assert frozenset({"ax", "ay"}) in ours and frozenset({"a_gain"}) in ours


@pytest.mark.parametrize("joint", [True, False])
def test_meta_models_each_branch_of_a_conditional_space(seeded, joint):
    """Every branch's parameters come from the policy (the whole tree at once, or each branch given
    the root's choice), not from random search: the sampler finds branch a's narrow optimum that
    random search misses."""
    ours, rand, fallbacks = [], [], 0
    for s in range(3):
        # the branch decisions (joint=False) from uniform startup trials: with the star design they end in a
        # basin at 0.025 on 3 of seeds 0-7 (0.0163 at most from uniform ones); the whole-tree decision (the
        # default) ends at 0.0000 on all 8 from either
        sampler = MetaSampler(
            seed=seeded(s),
            n_startup_trials=3,
            n_candidates=128,
            n_branch_candidates=128,
            joint_conditional=joint,
            initial_design="star" if joint else "random",
        )
        study = optuna.create_study(sampler=sampler)
        study.enqueue_trial({"kind": "a"})  # both branches seen from the start (the test is about branches,
        study.enqueue_trial({"kind": "b"})  # not about how soon a categorical's other value is tried)
        calls = []
        inner = sampler._independent.sample_independent
        sampler._independent.sample_independent = lambda st, t, name, d: (
            calls.append((t.number, name)) or inner(st, t, name, d)
        )
        study.optimize(two_branch, n_trials=30)
        fallbacks += sum(1 for number, name in calls if number >= 8 and name != "kind")
        for t in study.trials:  # each branch's parameters exist exactly on that branch, inside their ranges
            assert {"ax", "ay"} <= set(t.params) if t.params["kind"] == "a" else "bn" in t.params
            assert ("ax" in t.params) != ("bn" in t.params)
            for name, value in t.params.items():
                assert t.distributions[name]._contains(t.distributions[name].to_internal_repr(value))
        ours.append(study.best_value)
        r = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seeded(s)))
        r.enqueue_trial({"kind": "a"})
        r.enqueue_trial({"kind": "b"})
        r.optimize(two_branch, n_trials=30)
        rand.append(r.best_value)
    assert fallbacks <= 10  # once a branch has its startup trials, the policy decides its parameters (of ~130)
    assert np.mean(ours) < 0.25 * np.mean(rand) and max(ours) < 0.02, (ours, rand)


def test_categorical_sweep_scores_every_other_value_next_to_the_best_trials():
    """``categorical_sweep=k``: for the k best trials, one candidate per other value of each free
    categorical (pinned context columns are left alone), everything else unchanged."""
    from autotune.meta import Layout, sweep_categoricals

    # columns: a float, a 3-way categorical (1..3), a 2-way categorical (4..5, pinned)
    x = torch.tensor([[[0.2, 1, 0, 0, 0, 1], [0.7, 0, 1, 0, 0, 1], [0.9, 0, 0, 1, 0, 1]]], dtype=torch.float64)
    scores = torch.tensor([[3.0, 1.0, 2.0]], dtype=torch.float64)
    fixed = torch.full((6,), float("nan"), dtype=torch.float64)
    fixed[4:6] = torch.tensor([0.0, 1.0])
    cand = sweep_categoricals(x, scores, 2, Layout(6, [(1, 3), (4, 2)], fixed))
    assert cand.shape == (1, 4, 6)  # 2 parents × 2 other values of the free categorical
    rows = {tuple(r.tolist()) for r in cand[0]}
    assert rows == {
        (0.2, 0, 1, 0, 0, 1),
        (0.2, 0, 0, 1, 0, 1),
        (0.9, 1, 0, 0, 0, 1),
        (0.9, 0, 1, 0, 0, 1),
    }


def test_bound_sweep_moves_one_numeric_parameter_of_the_best_trials_to_each_bound():
    """``bound_sweep=k``: for the k best trials, one candidate per bound of each free numeric column
    (categoricals and pinned columns left alone, a move that does not change the snapped point dropped,
    with ``grid_only`` only the grid columns, and on a conditional space only the columns the trial uses)."""
    from autotune.meta import Layout, sweep_bounds

    # columns: two floats, a 2-way categorical (2..3), a pinned float (4)
    x = torch.tensor([[[0.2, 0.0, 1, 0, 0.5], [0.6, 0.3, 0, 1, 0.5], [0.9, 0.9, 1, 0, 0.5]]], dtype=torch.float64)
    scores = torch.tensor([[3.0, 1.0, 2.0]], dtype=torch.float64)
    fixed = torch.full((5,), float("nan"), dtype=torch.float64)
    fixed[4] = 0.5
    layout = Layout(5, [(2, 2)], fixed)
    cand = sweep_bounds(x, scores, 2, layout, lambda c: c)
    rows = {tuple(r.tolist()) for r in cand[0]}
    assert rows == {  # the best (0.2, 0.0): column 1 is already at its lower bound
        (0.0, 0.0, 1, 0, 0.5),
        (1.0, 0.0, 1, 0, 0.5),
        (0.2, 1.0, 1, 0, 0.5),
        (0.9, 0.0, 1, 0, 0.5),  # the second best (0.9, 0.9)
        (0.9, 1.0, 1, 0, 0.5),
        (0.0, 0.9, 1, 0, 0.5),
        (1.0, 0.9, 1, 0, 0.5),
    }
    assert cand.shape == (1, 7, 5)
    # a grid column of 4 levels (unit cell centres 0.125 … 0.875): the best trial holds its lowest level, so
    # the move to the lower bound snaps back onto it and is dropped
    centres = lambda c: torch.where(torch.arange(5) == 0, ((c * 4).floor().clamp(0, 3) + 0.5) / 4, c)  # noqa: E731
    on_grid = x.clone()
    on_grid[0, 0, 0] = 0.125
    grid = sweep_bounds(on_grid, scores, 1, layout, centres)[0]
    assert {tuple(r) for r in grid.tolist()} == {(0.875, 0.0, 1, 0, 0.5), (0.125, 1.0, 1, 0, 0.5)}
    # grid_only: only the grid columns move (column 0 has 4 levels, column 1 is continuous)
    gridded = Layout(5, [(2, 2)], fixed, levels=torch.tensor([4, 0, 0, 0, 0]))
    only_grid = sweep_bounds(on_grid, scores, 1, gridded, centres, grid_only=True)[0]
    assert {tuple(r) for r in only_grid.tolist()} == {(0.875, 0.0, 1, 0, 0.5)}
    assert sweep_bounds(x, scores, 1, layout, centres, grid_only=True).shape[1] == 0  # no grid column at all
    # conditional: the best trial does not use column 1, so only column 0 moves
    active = Layout(
        5,
        [(2, 2)],
        fixed,
        active=lambda p: torch.stack(
            [torch.ones_like(p[..., 0]) > 0, p[..., 0] > 0.5, *(torch.ones_like(p[..., 0]) > 0,) * 3], -1
        ),
    )
    only = sweep_bounds(x, scores, 1, active, lambda c: c)[0]
    assert {tuple(r) for r in only.tolist()} == {(0.0, 0.0, 1, 0, 0.5), (1.0, 0.0, 1, 0, 0.5)}
    assert sweep_bounds(x.expand(2, 3, 5), scores.expand(2, 3), 1, layout, lambda c: c).shape[1] == 0  # batched


_PEN_A, _PEN_B = (0.3, 0.2, 0.0, 0.4), (0.25, 0.15, 0.35, 0.0, 0.3)


def two_categoricals(trial: optuna.Trial) -> float:
    """A 3-d bowl plus one additive penalty per categorical; only (a=2, b=3) costs nothing."""
    x = [trial.suggest_float(f"x{i}", -1.0, 1.0) for i in range(3)]
    a = trial.suggest_categorical("a", [0, 1, 2, 3])
    b = trial.suggest_categorical("b", [0, 1, 2, 3, 4])
    return sum((xi - 0.3 * i) ** 2 for i, xi in enumerate(x)) + _PEN_A[a] + _PEN_B[b]


def test_meta_learns_each_categorical_value(seeded):
    """The GP's per-choice effects: the meta sampler tries the categoricals' other values next to its
    incumbent and ends on the zero-penalty pair (1 of 20 pairs): in 14 of seeds 0–15 (random search
    4; ``categorical_effects=False``, the Matérn-only surrogate, 3 of seeds 0–7, mean penalty 0.25)."""

    def penalties(make) -> list[float]:
        out = []
        for s in range(5):
            study = optuna.create_study(sampler=make(seeded(s)))
            study.optimize(two_categoricals, n_trials=40)
            out.append(_PEN_A[study.best_params["a"]] + _PEN_B[study.best_params["b"]])
        return out

    ours = penalties(lambda s: MetaSampler(seed=s, n_trials_hint=40))
    rand = penalties(lambda s: optuna.samplers.RandomSampler(seed=s))
    assert sum(p == 0 for p in ours) >= 3 and np.mean(ours) <= 0.08, (ours, rand)
    assert np.mean(ours) < np.mean(rand), (ours, rand)


def test_yeo_johnson_target_matches_scipys_maximum_likelihood_transform():
    """The batched torch transform against scipy.stats.yeojohnson (λ by Brent's method), row by row."""
    scipy_stats = pytest.importorskip("scipy.stats")
    from autotune.meta import score_target

    rng = np.random.default_rng(0)
    rows = np.stack(
        [
            rng.lognormal(0.0, 2.0, 40),  # right-skewed: λ < 1
            -rng.lognormal(0.0, 1.5, 40),  # left-skewed (a minimization's scores near the optimum): λ > 1
            rng.normal(size=40),  # already Gaussian: λ ≈ 1
            -np.exp(rng.normal(0.0, 3.0, 40)),
        ]
    )
    got = score_target(torch.as_tensor(rows), "yeo_johnson").numpy()
    for row, y in zip(rows, got):
        z = (row - row.mean()) / row.std()
        want, lam = scipy_stats.yeojohnson(z)
        want = (want - want.mean()) / want.std()
        assert np.abs(y - want).max() < 5e-3, lam
        assert np.all(np.argsort(y) == np.argsort(row))  # monotone: the order of the trials is kept
    flat = score_target(torch.full((2, 5), 3.0, dtype=torch.float64), "yeo_johnson")
    assert torch.equal(flat, torch.zeros(2, 5, dtype=torch.float64))  # equal scores: no signal, no NaN
    # equal scores whose mean rounds off them (98 trials of one cross-validated error, as a study of
    # sklearn/model_choice_cancer met): the residue is rounding, not signal
    rounded = score_target(torch.full((1, 98), -0.02634363686995267, dtype=torch.float64), "yeo_johnson")
    assert torch.equal(rounded, torch.zeros(1, 98, dtype=torch.float64))


def test_meta_keeps_proposing_when_every_trial_scores_the_same():
    """A flat objective (every configuration equally good) is data, not an error: the sampler proposes every trial."""

    def flat(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        return 0.1  # 0.1 × n does not round back to 0.1 n times for most n: the mean is off by one ulp

    study = optuna.create_study(sampler=MetaSampler(seed=0, n_startup_trials=3, n_candidates=64))
    study.optimize(flat, n_trials=12)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 12
    assert len({(t.params["x"], t.params["lr"]) for t in study.trials}) == 12  # and keeps moving


def star_space(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    n = trial.suggest_int("n", 1, 9)
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    value = (x - 1.0) ** 2 + (math.log10(lr) + 2) ** 2 + abs(n - 7) + (kind != "b")
    if kind == "a":  # a branch parameter, met first after trial 0
        value += trial.suggest_float("gain", 0.0, 4.0)
    return value


def test_meta_opens_with_the_centre_and_one_axis_probe_per_numeric_parameter():
    """``initial_design="star"`` (the default): trial 0 at the box's centre (the geometric middle of a log range,
    the middle level of an integer grid), then trial k moves the k-th numeric parameter alone by ``star_step``
    of its unit range (names in order: lr, n, x), categoricals as trial 0 took them; a branch parameter met
    later starts at its centre. ``"random"`` keeps the uniform startup."""
    for seed in range(3):
        study = optuna.create_study(sampler=MetaSampler(seed=seed, n_trials_hint=50))
        study.optimize(star_space, n_trials=4)
        t = [tr.params for tr in study.trials]
        centre = {"x": 0.0, "lr": 10**-3, "n": 5}
        assert {k: t[0][k] for k in centre} == pytest.approx(centre)
        # unit steps of 0.2: lr from 1e-3 to 10^(-5 + 0.7·4) = 10^-2.2; n's 9 levels, from the middle (5) to 7;
        # x from 0.0 to 2.0
        assert t[1] == pytest.approx({**t[0], "lr": 10**-2.2})
        assert t[2] == {**t[0], "n": 7}
        assert t[3] == pytest.approx({**t[0], "x": 2.0})
        first_gain = next((tr for tr in study.trials if "gain" in tr.params), None)
        if first_gain is not None:
            assert first_gain.params["gain"] == pytest.approx(2.0)
    branch = optuna.create_study(sampler=MetaSampler(seed=0, n_trials_hint=50))
    branch.enqueue_trial({"kind": "b"})
    branch.enqueue_trial({"kind": "a"})
    branch.optimize(star_space, n_trials=2)
    assert branch.trials[1].params["gain"] == pytest.approx(2.0)  # no earlier trial held it: its centre
    rand = optuna.create_study(sampler=MetaSampler(seed=0, n_trials_hint=50, initial_design="random"))
    rand.optimize(star_space, n_trials=4)
    assert all(abs(tr.params["x"]) > 1e-9 for tr in rand.trials)
    # a space too large for the design in the study's budget: the centre, then uniform startup trials
    wide = optuna.create_study(sampler=MetaSampler(seed=0, n_trials_hint=8, n_startup_trials=3))
    wide.optimize(star_space, n_trials=3)
    assert wide.trials[0].params["x"] == 0.0
    assert wide.trials[1].params["x"] != 0.0 and wide.trials[1].params["lr"] != pytest.approx(1e-3)


def test_meta_target_is_validated_and_copula_still_available():
    from core_rl.common.errors import ConfigError

    with pytest.raises(ConfigError, match="target"):
        MetaSampler(seed=0, target="ranks")
    with pytest.raises(ConfigError, match="refit_every_late"):
        MetaSampler(seed=0, refit_every_late=0)
    study = optuna.create_study(sampler=MetaSampler(seed=0, target="copula", n_startup_trials=3, n_candidates=64))
    study.optimize(quadratic, n_trials=12)
    assert len(study.trials) == 12 and study.best_value < 20.0


@pytest.mark.parametrize("categoricals", [False, True])
def test_gp_fit_gradient_in_closed_form_equals_autograd(categoricals):
    """The marginal likelihood's closed-form gradient (what the fit's Adam steps follow) against autograd
    of the same loss, at hyperparameters away from the priors' centres, with and without the
    per-choice effects."""
    from autotune.gp import GPHyper, _neg_log_marginal, _neg_log_marginal_and_grad, default_hyper

    gen = torch.Generator().manual_seed(0)
    B, n, D = 3, 40, 6
    x = torch.rand(B, n, D, generator=gen, dtype=torch.float64)
    mask = None
    if categoricals:  # the last three columns: one 3-way categorical, one-hot
        mask = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
        x[..., 3:] = torch.nn.functional.one_hot(torch.randint(0, 3, (B, n), generator=gen), 3).double()
    y = torch.randn(B, n, generator=gen, dtype=torch.float64)
    h = default_hyper(B, D, torch.float64, mask)
    params = [
        (h.log_ls + 0.3 * torch.randn(B, D, generator=gen, dtype=torch.float64)).requires_grad_(),
        (h.log_scale + 0.2).requires_grad_(),
        (h.log_noise + 0.5).requires_grad_(),
    ] + ([(h.log_cat - 0.3).requires_grad_()] if categoricals else [])
    at = GPHyper(params[0], params[1], params[2], params[3] if categoricals else None, h.cat_mask)
    want_loss = _neg_log_marginal(x, y, at)
    want = torch.autograd.grad(want_loss, params)
    got_loss, got = _neg_log_marginal_and_grad(x, y, at.detach())
    assert len(got) == len(want) == (4 if categoricals else 3)
    assert torch.allclose(got_loss, want_loss.detach(), rtol=1e-12)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-7, atol=1e-9), (g, w)


def test_policy_logits_equal_the_per_token_attention_they_fold():
    """The policy applies the pair embedding's last layer and the value map once per candidate, not once
    per (candidate, history point); the logits equal the per-token computation they replace."""
    from autotune.gp import default_hyper
    from autotune.meta import DTYPE, NEG, observe

    policy = load_policy("default").eval()
    gen = torch.Generator().manual_seed(1)
    n, M, D = 60, 64, 4
    x, y = torch.rand(1, n, D, generator=gen, dtype=DTYPE), torch.randn(1, n, generator=gen, dtype=DTYPE)
    cand = torch.rand(1, M, D, generator=gen, dtype=DTYPE)
    obs, _ = observe(x, y, None, cand, default_hyper(1, D, DTYPE), torch.full((1,), 0.5, dtype=DTYPE))
    with torch.no_grad():
        e = policy.pair(obs.pair)  # every token through the whole pair embedding
        a = policy.attend(e).squeeze(-1).masked_fill(~obs.pair_mask[:, None, :], NEG)
        read = (torch.softmax(a, -1).unsqueeze(-1) * policy.value(e)).sum(2)
        f = policy.score(torch.cat([obs.cand, read], -1)).squeeze(-1)
        want = (policy.beta * obs.prior + f).masked_fill(~obs.valid, NEG)
        got = policy.logits(obs)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-5)
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_meta_refits_the_gp_once_k_new_points_arrived(monkeypatch):
    """Before 100 points every decision refits the GP's hyperparameters; from 100 on, only once
    ``refit_every_late`` new points arrived since the last fit (counted per decision space, so a branch
    group taken on every other trial is not skipped by a trial-number rule), reusing the fit in between."""
    import autotune.meta as meta_module

    fits = []  # (points, Adam steps)
    fit = meta_module.fit_hyper

    def counting_fit(x, y, init, steps, cat_mask=None):
        fits.append((x.shape[1], steps))
        return fit(x, y, init, steps=steps, cat_mask=cat_mask)

    monkeypatch.setattr(meta_module, "fit_hyper", counting_fit)
    study = optuna.create_study(
        sampler=MetaSampler(seed=0, n_startup_trials=3, n_candidates=16, refit_every_late=3, n_trials_hint=110)
    )
    study.optimize(quadratic, n_trials=110)
    early = [steps for n, steps in fits if n < 100]
    # every decision after the star design's 4 trials (the centre and one probe per parameter) on
    assert len(early) == 100 - 4 and all(steps > 0 for steps in early)
    late = [(n, steps) for n, steps in fits if n >= 100]
    assert [n for n, steps in late if steps > 0] == [102, 105, 108], late  # last early fit at 99
    assert [n for n, steps in late if steps == 0] == [100, 101, 103, 104, 106, 107, 109], late


def test_meta_scores_each_distinct_candidate_once_and_chooses_as_over_all_copies():
    """On a discrete space snapping makes most generated candidates copies; the policy scores each distinct
    one once (its copies weigh in the prior's standardization) and picks what it picks over all copies."""
    from autotune.meta import (
        Layout,
        MetaConfig,
        codec_snap,
        make_candidates,
        observe,
        propose,
        score_target,
        trust_region_length,
    )

    codec = SpaceCodec({"k": CategoricalDistribution(["a", "b", "c"]), "n": IntDistribution(1, 4)})
    rows = [{"k": k, "n": n} for k, n in [("a", 1), ("b", 3), ("c", 2), ("a", 4), ("b", 1)]]
    x = torch.as_tensor(codec.encode(rows))[None]
    scores = torch.tensor([[0.1, 0.9, 0.4, 0.3, 0.5]], dtype=torch.float64)
    policy = load_policy("default").eval()
    config = MetaConfig(n_candidates=256, quadratic_candidates=0)  # the candidates make_candidates draws, no others
    got = propose(policy, x, scores, None, codec, torch.Generator().manual_seed(0), 0.5, config)
    assert got.cand.shape[1] <= 12 and torch.unique(got.cand[0], dim=0).shape[0] == got.cand.shape[1]

    layout = Layout(codec.dim, codec.categorical_columns, levels=torch.as_tensor(codec.grid_levels))  # as propose
    tr_length = trust_region_length(scores, int(layout.numeric.sum()), config.n_startup_trials)
    every = make_candidates(x, scores, 256, layout, torch.Generator().manual_seed(0), codec_snap(codec), tr_length)
    assert every.shape[1] == 256  # the same draw, copies kept
    tf = torch.full((1,), 0.5, dtype=torch.float64)
    obs, _ = observe(x, score_target(scores, config.target), None, every, got.hyper, tf)
    with torch.no_grad():
        every_logits, got_logits = policy.logits(obs)[0], policy.logits(got.obs)[0]
    want = every[0, every_logits.argmax()]
    assert torch.equal(got.x[0], want)
    for j, c in enumerate(got.cand[0]):  # each distinct candidate scores as each of its copies did
        copies = (every[0] == c).all(-1)
        assert copies.any() and torch.allclose(every_logits[copies], got_logits[j].expand(int(copies.sum())), atol=1e-4)


def test_spread_ties_centres_the_trust_region_on_every_trial_tied_at_the_best_score(seeded):
    """With ``spread_ties`` the box is centred, draw by draw, on each of the trials that share the best score
    (a plateau), not always on the first of them; without a tie the candidates, and the generator's stream,
    are exactly those of the default."""
    from autotune.meta import Layout, make_candidates

    layout = Layout(2, [])
    x = torch.tensor([[[0.5, 0.5], [0.1, 0.1], [0.9, 0.9], [0.3, 0.7], [0.1, 0.9]]], dtype=torch.float64)
    tied = torch.tensor([[0.2, 1.0, 1.0, 0.4, 1.0]], dtype=torch.float64)  # trials 1, 2 and 4 tie at the best
    length = torch.tensor([0.02])

    def centre(spread: bool, seed: int) -> int:
        cand = make_candidates(
            x, tied, 64, layout, torch.Generator().manual_seed(seed), lambda c: c, length, spread_ties=spread
        )
        box = cand[0, :16].mean(0)  # the uniform quarter, drawn in the box around the centre
        return int((x[0] - box).norm(dim=-1).argmin())

    shift = seeded(0)
    assert {centre(False, shift + s) for s in range(24)} == {1}  # the first of the tied trials, always
    assert {centre(True, shift + s) for s in range(24)} == {1, 2, 4}  # each of them, never a worse one

    distinct = torch.tensor([[0.2, 1.0, 0.9, 0.4, 0.8]], dtype=torch.float64)
    gens = [torch.Generator().manual_seed(shift) for _ in range(2)]
    plain = make_candidates(x, distinct, 64, layout, gens[0], lambda c: c, length)
    spread = make_candidates(x, distinct, 64, layout, gens[1], lambda c: c, length, spread_ties=True)
    assert torch.equal(plain, spread) and torch.equal(gens[0].get_state(), gens[1].get_state())


def test_meta_never_proposes_a_finished_configuration_again_while_a_new_one_exists(seeded):
    """On a grid, snapping makes the incumbent and its finished neighbours candidates again; with
    ``avoid_repeats`` (the default) the policy chooses among unseen configurations only, until none is left."""
    from autotune.meta import MetaConfig, propose

    codec = SpaceCodec({"k": CategoricalDistribution(["a", "b", "c"]), "n": IntDistribution(1, 4)})
    rows = [{"k": k, "n": n} for k, n in [("a", 1), ("b", 3), ("c", 2), ("a", 4), ("b", 2), ("b", 4)]]
    x = torch.as_tensor(codec.encode(rows))[None]
    scores = torch.tensor([[0.1, 0.9, 0.4, 0.3, 0.5, 0.8]], dtype=torch.float64)
    policy = load_policy("default").eval()
    seen = {tuple(r) for r in x[0].tolist()}
    for avoid in (True, False):
        config = MetaConfig(n_candidates=256, avoid_repeats=avoid)
        got = propose(policy, x, scores, None, codec, torch.Generator().manual_seed(seeded(0)), 0.5, config)
        repeats = [tuple(c) in seen for c in got.cand[0].tolist()]
        if avoid:
            assert not any(repeats) and tuple(got.x[0].tolist()) not in seen
        else:  # the same draw holds finished configurations (the incumbent among them): the filter had work
            assert any(repeats)
    # every configuration finished: the candidates are kept, and a choice is still made
    every = [{"k": k, "n": n} for k in "abc" for n in range(1, 5)]
    x_all = torch.as_tensor(codec.encode(every))[None]
    got = propose(policy, x_all, torch.rand(1, 12, dtype=torch.float64), None, codec, torch.Generator(), 0.5, config)
    assert tuple(got.x[0].tolist()) in {tuple(r) for r in x_all[0].tolist()}

    # through Optuna: the 12 configurations, each once, in 12 trials after the (random) startup
    def objective(trial: optuna.Trial) -> float:
        return {"a": 0.0, "b": 1.0, "c": 0.5}[trial.suggest_categorical("k", ["a", "b", "c"])] - abs(
            trial.suggest_int("n", 1, 4) - 3
        )

    study = optuna.create_study(direction="maximize", sampler=MetaSampler(seed=seeded(0), n_candidates=64))
    study.optimize(objective, n_trials=16)
    configs = [(t.params["k"], t.params["n"]) for t in study.trials]
    for i in range(4, 16):  # the policy's trials: a repeat only once all 12 were seen
        assert configs[i] not in configs[:i] or len(set(configs[:i])) == 12


def test_pretraining_updates_the_policy_and_saves_weights_the_sampler_loads(tmp_path):
    """``python -m autotune.pretrain`` end to end on a tiny budget: PPO steps change the policy (gradients
    flow through the folded attention), the best held-out policy is saved and loads into a sampler."""
    from autotune import pretrain

    out = tmp_path / "policy.pt"
    settings = ["iterations=2", "n_tasks=2", "rollouts=2", "horizon=6", "eval_every=1", "n_eval_batches=1"]
    assert pretrain.main(["--out", str(out), "--set", *settings, "--summary", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert [c["iteration"] for c in summary["curve"]] == [0, 1, 2]
    study = optuna.create_study(sampler=MetaSampler(weights=out, seed=0, n_startup_trials=3, n_candidates=32))
    study.optimize(quadratic, n_trials=8)
    assert len(study.trials) == 8

    # one PPO step on sampled tasks moves every layer of the policy (gradients flow through the folded attention)
    cfg = pretrain.PretrainConfig(n_tasks=2, rollouts=2, horizon=6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = MetaPolicy()
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    tasks = pretrain.sample_tasks(cfg.n_tasks, gen, max_dim=cfg.max_dim)
    meta_cfg = pretrain.MetaConfig(n_candidates=64, deterministic=False)
    with torch.no_grad():
        ep = pretrain.run_episode(
            policy, tasks, cfg.n_tasks, cfg.rollouts, cfg.horizon, cfg.n_startup, gen, meta_cfg, deterministic=False
        )
    pretrain.ppo_update(policy, torch.optim.Adam(policy.parameters(), lr=cfg.lr), ep, cfg, gen)
    moved = {k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and {k.split(".")[0] for k in moved} == {k.split(".")[0] for k in before}, moved


def test_pretraining_can_open_episodes_with_the_samplers_star_design():
    """``star_fraction``: an episode opens as a study does by default — the unit cube's centre, then each
    numeric column alone moved by ``star_step`` (the other way, or a grid level, where the step stays in the
    centre's grid cell), the categoricals one draw shared by every point — and the policy decides after it."""
    from autotune import pretrain
    from autotune.meta import Layout
    from autotune.tasks import TaskBatch

    levels = torch.tensor([0, 4, 3, 0, 0])  # a continuous column, grids of 4 and 3 levels, one categorical pair
    tasks = TaskBatch(Layout(5, [(3, 2)], levels=levels), levels, lambda x: (x[..., :3] - 0.3).pow(2).sum(-1), "t")
    x = tasks.star(2, 0.2, torch.Generator().manual_seed(0))
    assert x.shape == (2, 4, 5)
    centre = torch.tensor([0.5, 0.625, 0.5])  # the grid columns' cells that hold 0.5: [0.5, 0.75) and [1/3, 2/3)
    assert torch.allclose(x[:, 0, :3], centre.expand(2, 3).to(x.dtype))
    # 0.7 stays in the 4-level column's cell, so that column steps down to 0.3's cell; 3 levels: up to 0.7's
    probes = torch.tensor([[0.7, 0.625, 0.5], [0.5, 0.375, 0.5], [0.5, 0.625, 5 / 6]], dtype=x.dtype)
    assert torch.allclose(x[0, 1:, :3], probes) and torch.allclose(x[1, 1:, :3], probes)
    assert torch.equal(x[:, :, 3:].sum(-1), torch.ones(2, 4, dtype=x.dtype))  # one-hot
    assert torch.equal(x[:, :, 3:], x[:, :1, 3:].expand(2, 4, 2))  # the same choice at every point of a task

    cfg = pretrain.PretrainConfig(n_tasks=2, rollouts=2, horizon=3, star_fraction=1.0)
    with torch.no_grad():
        ep = pretrain.run_episode(
            MetaPolicy(),
            tasks,
            cfg.n_tasks,
            cfg.rollouts,
            cfg.horizon,
            cfg.n_startup,
            torch.Generator().manual_seed(1),
            pretrain.MetaConfig(n_candidates=32, deterministic=False),
            deterministic=False,
            star_step=cfg.star_step,
        )
    assert ep["regret"].shape == (4, 3) and len(ep["index"]) == 3
    assert ep["obs"][0].pair_mask.sum(-1).tolist() == [4] * 4  # the policy's first decision sees the 4-point design


def test_trust_region_length_follows_turbos_rule_replayed_from_the_scores():
    """TuRBO's side length from the history in trial order: it starts at 0.4, 3 improvements in a row
    double it (capped at 1.6), max(4, ⌈d/2⌉) trials without one halve it, below 0.5^7 it restarts;
    startup trials only set the incumbent."""
    from autotune.meta import trust_region_length

    def length(scores: list[float], d: int = 2, startup: int = 2) -> float:
        return float(trust_region_length(torch.tensor([scores], dtype=torch.float64), d, startup)[0])

    assert length([0.0, 1.0]) == 0.4  # startup only
    assert length([0.0, 1.0, 2.0, 3.0]) == 0.4  # two successes: not yet
    assert length([0.0, 1.0, 2.0, 3.0, 4.0]) == 0.8  # three in a row
    assert length([0.0, 1.0] + [float(v) for v in range(2, 14)]) == 1.6  # 0.4 → 0.8 → 1.6, then capped
    assert length([0.0, 1.0] + [1.0005] * 4) == 0.2  # below the 1e-3 relative threshold: failures
    assert length([0.0, 1.0] + [0.5] * 4, d=12) == 0.4  # d = 12 needs six failures
    assert length([0.0, 1.0] + [0.5] * 6, d=12) == 0.2
    assert length([0.0, 1.0] + [0.5] * 4, d=7) == 0.2  # ceil(7/2) = 4
    assert length([0.0, 1.0, 2.0, 0.5, 0.5, 3.0, 0.5]) == 0.4  # a failure resets the success count
    assert length([0.0, 1.0] + [0.5] * 4 * 5) == 0.4 * 0.5**5  # five halvings
    assert length([0.0, 1.0] + [0.5] * 4 * 6) == 0.4  # the sixth falls below 0.5^7: restart
    batch = trust_region_length(torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 0.0, 0.0]]), 1, 2)
    assert batch.tolist() == [0.8, 0.4]


def test_a_collapsed_trust_region_restarts_on_the_whole_cube_and_a_grid_box_collapses_at_its_floor():
    """``trust_region_restart="global"``: a collapsed box restarts at side 1.6 (the whole cube), not 0.4 around
    the same incumbent; on grid parameters it has collapsed once halving narrows no column (every column held at
    two cells either side), which :func:`trust_region_floor` gives."""
    from autotune.meta import Layout, trust_region_floor, trust_region_length

    def length(scores: list[float], floor: float = 0.0, restart_global: bool = True) -> float:
        t = torch.tensor([scores], dtype=torch.float64)
        return float(trust_region_length(t, 2, 2, length_floor=floor, restart_global=restart_global)[0])

    flat = [0.0, 1.0] + [0.5] * 4 * 6  # six halvings: below 0.5^7
    assert length(flat, restart_global=False) == 0.4
    assert length(flat) == 1.6
    assert length(flat + [0.5] * 4) == 0.8  # then it shrinks again
    assert length([0.0, 1.0] + [0.5] * 4, floor=0.3) == 1.6  # 0.2 < 0.3: collapsed after one halving
    assert length([0.0, 1.0] + [0.5] * 4, floor=0.1) == 0.2

    levels = torch.tensor([15.0, 12.0, 10.0, 0.0, 0.0])  # three grids, then a categorical of two choices
    assert trust_region_floor(Layout(5, [(3, 2)], levels=levels)) == pytest.approx(4 / 15)
    # a box of side 0.2 is held at two cells on every grid column: halving it changes nothing
    grid = Layout(5, [(3, 2)], levels=levels)
    half = grid.trust_half_width(torch.tensor([0.2]))[0, 0, :3]
    assert half.tolist() == pytest.approx(grid.trust_half_width(torch.tensor([0.1]))[0, 0, :3].tolist())
    assert trust_region_floor(Layout(3, [], levels=torch.tensor([15.0, 0.0, 10.0]))) == 0.0  # a continuous column
    assert trust_region_floor(Layout(2, [])) == 0.0


def test_trust_region_stretches_by_the_ard_lengthscales_at_the_same_volume():
    """``trust_region_ard``: TuRBO's weights ℓ_i / (∏ ℓ_j)^{1/d} over the numeric columns (1 on categorical
    ones), clipped to [1/8, 8]; the box they give keeps the volume and is longer along the long lengthscale."""
    import math as _math

    from autotune.meta import Layout, make_candidates, trust_region_weights

    layout = Layout(4, [(2, 2)])  # two numeric columns, one categorical of two choices
    log_ls = torch.log(torch.tensor([[0.1, 0.4, 3.0, 3.0]], dtype=torch.float64))
    w = trust_region_weights(log_ls, layout.numeric)[0, 0]
    assert w.tolist() == pytest.approx([0.5, 2.0, 1.0, 1.0])  # geometric mean of 0.1 and 0.4 is 0.2
    assert _math.prod(w[:2].tolist()) == pytest.approx(1.0)
    far = trust_region_weights(torch.log(torch.tensor([[0.001, 10.0, 1.0, 1.0]], dtype=torch.float64)), layout.numeric)
    assert far[0, 0].tolist() == pytest.approx([1 / 8, 8.0, 1.0, 1.0])  # the clip
    half = layout.trust_half_width(torch.tensor([0.2]), trust_region_weights(log_ls, layout.numeric))[0, 0]
    assert half[:2].tolist() == pytest.approx([0.05, 0.2])
    x = torch.tensor([[[0.1, 0.9, 1, 0], [0.5, 0.5, 0, 1], [0.8, 0.2, 1, 0]]], dtype=torch.float64)
    scores = torch.tensor([[0.0, 2.0, 1.0]], dtype=torch.float64)
    c = make_candidates(
        x,
        scores,
        256,
        layout,
        torch.Generator().manual_seed(0),
        lambda c: c,
        torch.tensor([0.2]),
        trust_region_weights(log_ls, layout.numeric),
    )[0]
    spread = (c[:64, :2] - 0.5).abs().max(0).values  # the uniform quarter, around the best trial (0.5, 0.5)
    assert spread[0] <= 0.05 + 1e-12 and 0.15 < spread[1] <= 0.2 + 1e-12
    s = optuna.create_study(sampler=MetaSampler(seed=0, n_candidates=128, trust_region_ard=True))
    s.optimize(quadratic, n_trials=30)
    r = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    r.optimize(quadratic, n_trials=30)
    assert s.best_value < 0.5 * r.best_value


def test_trust_region_candidates_stay_in_the_box_around_the_best_trial():
    """``trust_region=True``: the uniform quarter of the candidates lies within L/2 of the best trial
    (numeric columns; categorical columns keep their one-hot draws), the perturbations of the top
    trials shrink by L, and the sampler still optimizes."""
    from autotune.meta import Layout, make_candidates

    x = torch.tensor([[[0.1, 0.9, 1, 0], [0.5, 0.5, 0, 1], [0.8, 0.2, 1, 0]]], dtype=torch.float64)
    scores = torch.tensor([[0.0, 2.0, 1.0]], dtype=torch.float64)
    layout = Layout(4, [(2, 2)])

    def candidates(length: torch.Tensor | None) -> torch.Tensor:
        return make_candidates(x, scores, 256, layout, torch.Generator().manual_seed(0), lambda c: c, length)[0]

    boxed, free = candidates(torch.tensor([0.2])), candidates(None)
    assert (boxed[:64, :2] - 0.5).abs().max() <= 0.1 + 1e-12
    assert (free[:64, :2] - 0.5).abs().max() > 0.3  # without the trust region: the whole cube
    assert set(boxed[:, 2:].sum(-1).tolist()) == {1.0}

    def step(c: torch.Tensor) -> float:  # median distance of the local candidates to their nearest trial
        return float(torch.cdist(c[64:, :2], x[0, :, :2]).min(1).values.median())

    assert step(boxed) < 0.3 * step(free)
    # a grid column keeps at least two of its cells either side: 5 levels -> half-width 0.4, not 0.1
    gridded = Layout(4, [(2, 2)], levels=torch.tensor([0, 5, 0, 0]))
    assert gridded.trust_half_width(torch.tensor([0.2]))[0, 0].tolist() == pytest.approx([0.1, 0.4, 0.1, 0.1])

    s = optuna.create_study(sampler=MetaSampler(seed=0, n_startup_trials=3, n_candidates=128, trust_region=True))
    s.optimize(quadratic, n_trials=30)
    r = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    r.optimize(quadratic, n_trials=30)
    assert s.best_value < 0.5 * r.best_value


def _rotated_ellipsoid(d: int, seed: int) -> tuple[torch.Tensor, Any]:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    w = 10.0 ** (torch.arange(d, dtype=torch.float64) * 1.5)  # condition number 10^(1.5(d-1))
    opt = 0.2 + 0.6 * torch.rand(d, generator=g, dtype=torch.float64)
    return opt, lambda x: (((x - opt) @ q) ** 2 * w).sum(-1)


def test_quadratic_candidates_step_to_the_floor_of_a_rotated_valley():
    """``quadratic_candidates``: on a rotated, ill-conditioned quadratic (a valley no axis-wise perturbation
    follows) the model's full Newton step lands on the optimum, the other candidates spread along the valley
    below the best trial; too short a history gives none."""
    from autotune.meta import Layout, quadratic_candidates

    d = 5
    opt, f = _rotated_ellipsoid(d, 0)
    x = torch.rand(1, 60, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    c = quadratic_candidates(x, -f(x), 64, Layout(d, []), gen, lambda c: c)[0]
    assert c.shape == (64, d)
    assert f(c).min() < 1e-2 * f(x).min()  # the a = 1, ε = 0 candidates: the minimum, up to the fit's rounding
    assert (f(c) < f(x).min()).float().mean() > 0.15  # many of the others below the best trial too
    none = quadratic_candidates(x[:, :30], -f(x[:, :30]), 64, Layout(d, []), gen, lambda c: c)  # 30 < 1.5 · 21
    assert none.shape == (1, 0, d)


def test_quadratic_candidates_fit_the_continuous_columns_to_the_rounded_grid_ones():
    """With grid columns (an integer parameter), every other candidate's continuous columns are the model's
    best given its snapped grid values: on an exact quadratic that is the true conditional minimum."""
    from autotune.meta import Layout, quadratic_candidates

    d = 4
    opt, f = _rotated_ellipsoid(d, 3)
    levels = torch.tensor([0, 0, 11, 11])  # the last two columns: 11-level grids

    def snap(c: torch.Tensor) -> torch.Tensor:
        out = c.clone()
        out[..., 2:] = (torch.floor(c[..., 2:] * 11).clamp(0, 10) + 0.5) / 11
        return out

    x = snap(torch.rand(1, 80, d, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
    c = quadratic_candidates(x, -f(x), 32, Layout(d, [], levels=levels), torch.Generator().manual_seed(5), snap)[0]
    assert torch.equal(c, snap(c))  # the grid columns sit on their levels
    odd = c[1::2]
    interior = odd[((odd[:, :2] > 1e-9) & (odd[:, :2] < 1 - 1e-9)).all(-1)]  # not clipped by the cube
    assert len(interior) >= 1
    for row in interior:  # the continuous columns minimize f given the grid columns
        point = row.clone().requires_grad_(True)
        grad = torch.autograd.grad(f(point), point)[0]
        assert grad[:2].abs().max() < 1e-6 * max(1.0, float(f(row)))
    assert f(odd).min() < 0.5 * f(x).min()  # and they reach well below the best trial


def test_quadratic_candidates_fall_back_to_a_separable_model_on_a_short_history():
    """``fallback="diagonal"``: with fewer trials than the full model needs (1.5 · 66 at d = 10) but 1.5× the
    separable model's 21 coefficients, the Newton step of a separable quadratic lands on its minimum;
    without the fallback there are no candidates yet."""
    from autotune.meta import Layout, quadratic_candidates

    d = 10
    centre = torch.linspace(0.3, 0.7, d, dtype=torch.float64)
    w = 10.0 ** torch.linspace(0.0, 3.0, d, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return ((x - centre) ** 2 * w).sum(-1)

    x = torch.rand(1, 40, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    layout = Layout(d, [])
    c = quadratic_candidates(x, -f(x), 64, layout, torch.Generator().manual_seed(1), lambda c: c, "diagonal")[0]
    assert c.shape == (64, d) and f(c).min() < 1e-6 * f(x).min()
    assert quadratic_candidates(x, -f(x), 64, layout, torch.Generator().manual_seed(1), lambda c: c).shape[1] == 0
    short = x[:, :30]  # 30 < 1.5 · 21: not even the separable model
    assert (
        quadratic_candidates(
            short, -f(short), 64, layout, torch.Generator().manual_seed(1), lambda c: c, "diagonal"
        ).shape[1]
        == 0
    )


def test_quadratic_candidates_fit_the_shortest_lengthscale_subspace_on_a_short_history():
    """``fallback="subspace"``: with 40 trials at d = 10 (the full model needs 99) the full model is fitted over
    the 5 numeric columns with the shortest GP lengthscales (1.5 · 21 ≤ 40 < 1.5 · 28); the other columns keep
    the best trial's values, and a rotated valley in those 5 columns is stepped to its floor."""
    from autotune.meta import Layout, quadratic_candidates

    d, active = 10, torch.tensor([1, 3, 4, 7, 8])
    opt, g = _rotated_ellipsoid(5, 6)

    def f(x: torch.Tensor) -> torch.Tensor:
        return g(x[..., active])

    x = torch.rand(1, 40, d, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    log_ls = torch.zeros(1, d, dtype=torch.float64)
    log_ls[0, active] = -2.0  # the GP has found the five columns that matter
    layout = Layout(d, [])
    c = quadratic_candidates(x, -f(x), 64, layout, torch.Generator().manual_seed(8), lambda c: c, "subspace", log_ls)[0]
    best = x[0, f(x[0]).argmin()]
    rest = torch.tensor([i for i in range(d) if i not in active.tolist()])
    assert c.shape == (64, d) and torch.equal(c[:, rest], best[rest].expand(64, len(rest)))
    assert f(c).min() < 1e-2 * f(x).min()
    none = quadratic_candidates(x, -f(x), 64, layout, torch.Generator().manual_seed(8), lambda c: c, "none", log_ls)
    assert none.shape == (1, 0, d)
