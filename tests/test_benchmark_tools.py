"""Benchmark tools: the checkout comparison loads a second copy of the package beside the
installed one; the backend notes' reference CG and their ``--only`` merge."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import backend_notes  # noqa: E402
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


def test_backend_notes_pcg_reference_converges_and_counts_iterations():
    rng = np.random.default_rng(0)
    n = 30
    A = sp.random_array((n, n), density=0.1, random_state=rng)
    M = sp.csr_array(A @ A.T + 3.0 * sp.eye_array(n))
    F = rng.normal(size=(n, 4))
    dinv = (1.0 / M.diagonal())[:, None]
    hist = backend_notes._pcg_iterations(M, F, lambda R: dinv * R, dinv * F, rtol=1e-8)
    assert hist[-1] <= 1e-8 < hist[0]
    assert 1 <= len(hist) - 1 <= n  # CG reaches the tolerance within n steps in exact arithmetic


def test_backend_notes_only_replaces_the_named_sections(tmp_path):
    out = tmp_path / "notes.json"
    out.write_text(json.dumps({"benchmark": "x", "budget": {"kept": True}}))
    assert backend_notes.main(["--only", "thread_handoff_ms", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["budget"] == {"kept": True} and got["thread_handoff_ms"] > 0
    assert got["provenance"]["thread_handoff_ms"]["command"].endswith(f"--only thread_handoff_ms --out {out}")
    with pytest.raises(SystemExit):
        backend_notes.main(["--only", "no_such_section", "--out", str(out)])


def test_backend_notes_product_in_context_times_the_real_call_and_restores_the_package():
    import oscillink_core.graph as graph

    original = graph.exact_knn
    out = backend_notes.product_in_context(n=120, rounds=2, reps=2)
    assert graph.exact_knn is original
    assert out["calls_inside"] == 4  # rounds x reps; the warm-up call is not counted
    assert set(out["ms"]) == {"rerank", "Y @ Y.T back to back (the yardstick)",
                              "unit rows @ their transpose, back to back",
                              "kNN product inside rerank", "top-k inside rerank"}
    assert all(v > 0 for v in out["ms"].values())
    assert out["ms"]["kNN product inside rerank"] < out["ms"]["rerank"]
