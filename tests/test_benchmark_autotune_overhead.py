"""benchmarks/autotune_overhead.py: the late-study CPU table runs end to end and refuses bad arguments."""

from __future__ import annotations

import pytest

from benchmarks import autotune_overhead
from core_rl.common.errors import ConfigError


def test_overhead_table_times_the_last_trials_of_each_task(capsys):
    assert autotune_overhead.main(["--tasks", "conditional:3", "--trials", "12", "--repeats", "2", "--last", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| task | CPU ms per trial, last 4 of 12 (min of 2)")
    name, ms, best = [c.strip() for c in lines[2].strip("|").split("|")]
    assert name == "conditional/functions" and float(ms) > 0.0 and float(best) >= 0.0


def test_overhead_refuses_a_window_longer_than_the_study_and_an_unknown_task():
    with pytest.raises(ConfigError, match="--last"):
        autotune_overhead.main(["--tasks", "conditional:0", "--trials", "10", "--last", "20"])
    with pytest.raises(ConfigError, match="out of range"):
        autotune_overhead.main(["--tasks", "conditional:9", "--trials", "10", "--last", "5"])
