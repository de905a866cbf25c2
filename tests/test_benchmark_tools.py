"""The checkout comparison tool loads a second copy of the package beside the installed one."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import compare_checkouts  # noqa: E402

import oscillink_core  # noqa: E402


def test_compare_checkouts_loads_a_second_copy_and_compares():
    other = compare_checkouts.load_checkout(str(ROOT), name="oscillink_core_copy")
    assert other is not oscillink_core and other.__name__ == "oscillink_core_copy"
    assert other.rerank.__module__.startswith("oscillink_core_copy")
    row = compare_checkouts.compare(other, oscillink_core, n=40, rounds=2, per_round=2)
    assert row["n"] == 40 and row["calls_each"] == 4
    assert row["backend"]["before"] == row["backend"]["this"]
    assert row["before"]["median_ms"] > 0 and row["this"]["median_ms"] > 0
    assert set(row["this"]["stage_ms"]) == set(compare_checkouts._STAGES)
