"""Each algorithm's docstring example works as written (issue 18): the ``>>>`` examples of every
registered algorithm's module and of the library's algorithm modules run as doctests, with the
small budgets written into the examples themselves. Every one of these modules must have an example:
a module without one fails the test."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

from core_rl.registry import ALGORITHMS

LIBRARY = {
    "core_rl",
    "core_rl.irl.maxent_irl",
    "core_rl.irl.max_margin",
    "core_rl.tabular.dynamic_programming",
    "core_rl.tabular.gridworld",
    "core_rl.tabular.markov_chain",
    "core_rl.model_based.planners.ilqr",
    "core_rl.model_based.planners.mcts",
    "core_rl.model_based.planners.lqr",
    "core_rl.model_based.planners.shooting",
    "core_rl.model_based.vae",
    "core_rl.imitation.behavior_cloning",
    "core_rl.imitation.dagger",
    "core_rl.inference.control_as_inference",
}
MODULES = sorted({spec.module for spec in ALGORITHMS.values()} | LIBRARY)
#: examples that take longer than the fast tier allows (on one thread: the iLQR swing-up ~10 s, also run
#: by tests/test_cli_reach.py; MPC's swing-up ~14 s; MBPO's branched rollouts ~8 s; DIAYN's skills ~4 s)
SLOW = {
    "core_rl.model_based.planners.ilqr",
    "core_rl.model_based.mpc",
    "core_rl.model_based.mbpo",
    "core_rl.meta.diayn",
}


def examples(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    return [t for t in doctest.DocTestFinder().find(module) if t.examples]


def test_every_algorithm_module_has_an_example():
    missing = sorted(m for m in MODULES if not examples(m))
    assert not missing, (
        f"no >>> example in the module docstring of {missing}: add one under an 'Example' heading at the "
        "end of the module docstring (build the agent on a small task, learn briefly, check the result)"
    )


@pytest.mark.parametrize(
    "module_name",
    [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in MODULES],
)
def test_docstring_examples_run_as_written(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
        output: list[str] = []
        for test in examples(module_name):
            runner.run(test, out=output.append)
        result = runner.summarize(verbose=False)
    finally:
        torch.set_num_threads(before)
    assert result.attempted > 0, f"{module_name} has no >>> example"
    assert result.failed == 0, "".join(output)
