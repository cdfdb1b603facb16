"""recsys.simulation.lazy_info: a dict whose costly entries are computed on first read, and the slate
envs' infos built on it (the same keys and values whenever they are read)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from recsys.simulation import (
    InterestEvolutionVectorEnv,
    RandomSlatePolicy,
    RecSimInterestEvolutionVectorEnv,
    ng_choice_logits,
)
from recsys.simulation.lazy_info import LazyInfo


def _info() -> tuple[LazyInfo, list[str]]:
    calls: list[str] = []

    def thunk(key: str, value: int):
        def fn():
            calls.append(key)
            return value

        return fn

    return LazyInfo({"a": 1}, {"b": thunk("b", 2), "c": thunk("c", 3)}), calls


def test_lazy_entries_are_computed_once_on_read_and_behave_like_a_dict():
    info, calls = _info()
    assert isinstance(info, dict) and len(info) == 3 and "b" in info and list(info) == ["a", "b", "c"]
    assert list(info.keys()) == ["a", "b", "c"] and calls == []  # keys, len, in, iteration compute nothing
    assert info["b"] == 2 and info["b"] == 2 and calls == ["b"]
    assert info.get("c") == 3 and info.get("zz", 7) == 7 and calls == ["b", "c"]
    for make in (lambda i: dict(i), lambda i: {**i}, lambda i: dict(i.items()), lambda i: i.copy()):
        fresh, _ = _info()
        assert make(fresh) == {"a": 1, "b": 2, "c": 3}
    fresh, _ = _info()
    assert list(fresh.values()) == [1, 2, 3]
    fresh, _ = _info()
    assert fresh == {"a": 1, "b": 2, "c": 3} and {"a": 1, "b": 2, "c": 3} == _info()[0]
    assert _info()[0] != {"a": 1}
    fresh, _ = _info()
    assert (fresh | {"d": 4}) == {"a": 1, "b": 2, "c": 3, "d": 4}
    fresh, _ = _info()
    assert repr(fresh) == "{'a': 1, 'b': 2, 'c': 3}"
    fresh, _ = _info()
    assert pickle.loads(pickle.dumps(fresh)) == {"a": 1, "b": 2, "c": 3}
    assert copy.deepcopy(_info()[0]) == {"a": 1, "b": 2, "c": 3}
    fresh, calls = _info()
    assert fresh.pop("b") == 2 and "b" not in fresh and fresh.setdefault("c") == 3 and calls == ["b", "c"]
    fresh, calls = _info()
    fresh["b"] = 20  # overwriting a pending entry drops its computation
    fresh.update(LazyInfo(lazy={"c": lambda: 30}))
    assert dict(fresh) == {"a": 1, "b": 20, "c": 30} and calls == []
    fresh, calls = _info()
    twin = fresh.copy()
    assert twin.is_pending("b") and twin["b"] == 2 and fresh.is_pending("b")


def _read(info):
    return {k: _read(v) for k, v in info.items()} if isinstance(info, dict) else info


def _rollout(env, steps: int, read_now: bool, seed: int = 3) -> list[dict]:
    obs, info = env.reset(seed=seed)
    policy = RandomSlatePolicy(env.num_candidates, env.slate_size, seed=seed)
    infos = [_read(info) if read_now else info]
    for _ in range(steps):
        obs, _, _, _, info = env.step(policy(obs))
        infos.append(_read(info) if read_now else info)
    return [_read(i) for i in infos]


def _assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b)
        for key in a:
            _assert_same(a[key], b[key])
    else:
        assert np.array_equal(np.asarray(a), np.asarray(b)) and np.asarray(a).dtype == np.asarray(b).dtype


@pytest.mark.parametrize(
    "make",
    [
        lambda: InterestEvolutionVectorEnv(6, seed=0, horizon=4),
        lambda: InterestEvolutionVectorEnv(6, seed=0, horizon=4, num_candidates=10, slate_size=3),
        lambda: RecSimInterestEvolutionVectorEnv(6, seed=0, max_episode_steps=4),
    ],
)
def test_env_infos_read_late_equal_infos_read_at_once(make):
    """Read after later steps (and episode ends), every info holds what it held at its own step."""
    now, late = _rollout(make(), 9, read_now=True), _rollout(make(), 9, read_now=False)
    assert any("final_info" in i for i in late)
    for a, b in zip(now, late):
        _assert_same(a, b)


def test_env_info_values_are_the_choice_model_of_the_step():
    env = InterestEvolutionVectorEnv(5, seed=1, num_candidates=8)
    obs, info = env.reset(seed=1)
    rows, corpus, k = env.candidate_corpus_index().clone(), env.corpus, env.slate_size
    for _ in range(3):
        slate = RandomSlatePolicy(8, k, seed=2)(obs)
        obs, reward, _, _, step = env.step(slate)
        x = torch.from_numpy(info["user_interest"])
        logits, _ = ng_choice_logits(x, corpus.features[rows], env.config)
        torch.testing.assert_close(torch.from_numpy(info["candidate_choice_logit"]), logits, rtol=0, atol=0)
        np.testing.assert_array_equal(info["candidate_doc_id"], corpus.doc_id[rows].numpy())
        choice = step["choice"]
        np.testing.assert_array_equal(step["clicked"], choice < k)
        np.testing.assert_array_equal(step["engagement"], reward)
        np.testing.assert_array_equal(step["slate_doc_id"], info["candidate_doc_id"][np.arange(5)[:, None], slate])
        picked = slate[np.arange(5), np.minimum(choice, k - 1)]
        np.testing.assert_array_equal(step["clicked_candidate"], np.where(choice < k, picked, -1))
        doc = info["candidate_doc_id"][np.arange(5), picked]
        np.testing.assert_array_equal(step["clicked_doc_id"], np.where(choice < k, doc, -1))
        np.testing.assert_allclose(step["slate_choice_prob"].sum(1), 1.0, rtol=1e-6)
        info, rows = step, env.candidate_corpus_index().clone()
