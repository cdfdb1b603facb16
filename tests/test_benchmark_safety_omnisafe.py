"""The Safety-Gymnasium / OmniSafe benchmark's report bookkeeping (no training here)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.safety_omnisafe import groups, load_pieces, piece_path, table


def _piece(side: str, algo: str, seed: int, steps: int, ret: float, cost: float) -> dict:
    return {
        "side": side,
        "algo": algo,
        "task": "SafetyPointGoal1-v0",
        "seed": seed,
        "steps": steps,
        "final_return": ret,
        "final_cost": cost,
        "cumulative_cost": 100.0 * cost,
        "steps_per_cpu_s": 500.0 if side == "ours" else 100.0,
        "curve": [],
    }


def test_pieces_of_two_budgets_render_as_two_tables_and_never_average_together(tmp_path: Path) -> None:
    runs = [  # (side, seed, requested budget, steps actually run, reward, cost)
        ("ours", 0, 200_000, 200_704, 1.0, 10.0),
        ("omnisafe", 0, 200_000, 200_000, 5.0, 60.0),
        ("ours", 0, 1_000_000, 1_001_472, 9.0, 20.0),
    ]
    for side, seed, budget, steps, ret, cost in runs:
        path = piece_path(tmp_path, side, "SafetyPointGoal1-v0", "TRPO-Lag", seed, budget)
        piece = _piece(side, "TRPO-Lag", seed, steps, ret, cost)
        if budget == 1_000_000:  # new pieces record their budget; old ones get it from the file name
            piece["budget"] = budget
        path.write_text(json.dumps(piece))
    pieces = load_pieces(tmp_path)
    assert sorted(p["budget"] for p in pieces) == [200_000, 200_000, 1_000_000]
    assert [(t, b, len(rs)) for t, b, rs in groups(pieces)] == [
        ("SafetyPointGoal1-v0", 1_000_000, 1),
        ("SafetyPointGoal1-v0", 200_000, 2),
    ]
    text = table(pieces)
    big, small = text.split("### ")[1:]
    assert big.startswith("SafetyPointGoal1-v0, 1,000,000 steps") and "9.00 ± 0.00" in big and "1.00" not in big
    assert small.startswith("SafetyPointGoal1-v0, 200,000 steps") and "1.00 ± 0.00" in small and "9.00" not in small
    assert "yes / **no** / yes" in small  # cost 10 ≤ 25, reward 1 < 5, cumulative 1,000 < 6,000
