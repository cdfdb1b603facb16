"""The scoreboard's arithmetic: places, ties, meta against the best peer, and the average over suites
that re-ranks among the samplers every suite has (benchmarks/autotune_scoreboard.py)."""

from __future__ import annotations

import json

import pytest

from autotune.compare import StudyResult
from benchmarks.autotune_scoreboard import Row, average_over_suites, load_row, render, score_row


def _study(task: str, sampler: str, seed: int, best: float, budget: int = 4) -> StudyResult:
    values = [best + 3.0, best + 1.0, best, best + 2.0][:budget]
    return StudyResult(task, sampler, budget, seed, values, 0.1, 1.0, "minimize")


def _suite(prefix: str, order: list[str], seeds: int = 3) -> list[StudyResult]:
    """Every cell ranks the samplers in ``order`` (best first)."""
    return [
        _study(f"{prefix}/t{t}", s, seed, float(i))
        for t in range(2)
        for seed in range(seeds)
        for i, s in enumerate(order)
    ]


def test_a_row_ranks_places_and_tests_meta_against_its_best_peer() -> None:
    results = _suite("a", ["meta", "tpe", "gp"])
    e = score_row(results, [], 4)
    assert e["n_cells"] == 6 and e["seeds"] == [0, 1, 2]
    assert e["mean_rank"] == {"meta": 1.0, "tpe": 2.0, "gp": 3.0}
    assert e["place"] == {"meta": 1, "tpe": 2, "gp": 3}
    assert e["best_peer"] == "tpe"
    assert e["meta_vs_best_peer"]["wins"] == 6 and e["meta_vs_best_peer"]["losses"] == 0
    # a tie shares the place: gp as good as tpe everywhere
    tied = [r if r.sampler != "gp" else _study(r.task, "gp", r.seed, 1.0) for r in results]
    assert score_row(tied, [], 4)["place"] == {"meta": 1, "tpe": 2, "gp": 2}
    # a cell a sampler did not run is left out of the row
    partial = [r for r in results if not (r.sampler == "gp" and r.seed == 2)]
    assert score_row(partial, [], 4)["n_cells"] == 4 and score_row(partial, [], 4)["seeds"] == [0, 1]


def test_the_average_over_suites_reranks_among_the_samplers_every_suite_has() -> None:
    a = _suite("a", ["meta", "tpe", "gp"])
    b = _suite("b", ["smac", "tpe", "meta", "gp"])  # SMAC3 only here, and first
    c = _suite("c", ["gp", "meta", "tpe"])
    rows = []
    for name, res, detail in (("A", a, False), ("B", b, False), ("C", c, False), ("A detail", a[:6], True)):
        row = Row(name, 4, (), detail=detail)
        rows.append((row, res, [], score_row(res, [], 4)))
    avg = average_over_suites(rows)["4"]
    assert avg["rows"] == 3  # the detail row is shown, not averaged
    assert avg["missing"] == {"smac": ["A", "C"]}
    # B without SMAC3: tpe 1, meta 2, gp 3; A: meta 1, tpe 2, gp 3; C: gp 1, meta 2, tpe 3
    assert avg["per_suite"]["B"] == {"tpe": 1.0, "meta": 2.0, "gp": 3.0}
    assert avg["mean_rank"] == pytest.approx({"meta": 5 / 3, "tpe": 2.0, "gp": 7 / 3})
    assert avg["samplers"] == ["meta", "tpe", "gp"]
    assert avg["first_in_rows"]["meta"] == 1 and avg["first_in_rows"]["smac"] == 1 and avg["first_in_rows"]["gp"] == 1
    table = render([(row, e) for row, _r, _t, e in rows], {"4": avg})
    assert "**average over the 3 suites**" in table and "SMAC3 (not run: A, C)" in table
    assert "| A (6, 3) | **1.00** |" in table and "↳ A detail" in table


def test_a_row_reads_only_the_named_samplers_of_a_piece_at_its_budget(tmp_path) -> None:
    pytest.importorskip("cocoex", reason="coco-experiment (BBOB) not installed: pip install -e '.[autotune]'")
    old = [_study("bbob/f01_d2", s, 0, float(i)) for i, s in enumerate(["tpe", "meta"])]
    new = [_study("bbob/f01_d2", "meta", 0, -1.0), _study("bbob/f01_d2", "meta", 0, -1.0, budget=2)]
    for name, studies in (("old", old), ("new", new)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps([s.__dict__ for s in studies]))
        (tmp_path / name / "summary.json").write_text(json.dumps({"setup": {"suite": "bbob-small"}}))
    results, tasks = load_row(Row("s", 4, ("old:tpe", "new:meta")), root=tmp_path)
    assert sorted((r.sampler, r.budget, min(r.values)) for r in results) == [("meta", 4, -1.0), ("tpe", 4, 0.0)]
    assert {t.name for t in tasks} >= {"bbob/f01_d2"}
