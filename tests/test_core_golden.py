"""Receipts against golden files generated from fixed inputs, on both backends.

A refactor must not change a receipt (timings aside). On the machine that generated the files the
receipts are byte-identical; another CPU may round the last bit of a float differently (numba
compiles for the host CPU, BLAS picks kernels by CPU), and then every hash over those floats
(``state_sig``, the HMAC) differs too. So the test compares bytes first and, when they differ,
compares the structure: every key, string, int, bool, order and flag exactly, floats to 1e-9
relative, and the 64-hex-digit hashes only for being present. If this fails after an
*intended* change of behaviour, regenerate with ``PYTHONPATH=. python -m tests._golden`` and
say why in the commit; see `tests/_golden.py`.
"""

from __future__ import annotations

import difflib
import json
import math
import re

import pytest

from oscillink_core import available_backends

from ._golden import CASES, build, encode, golden_path

_HASH = re.compile(r"^[0-9a-f]{64}$")


def _same(want, got, path="") -> str | None:
    """None when ``got`` matches ``want`` up to float rounding (see the module docstring), else where not."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or sorted(want) != sorted(got):
            return f"{path}: keys {sorted(want) if isinstance(want, dict) else want} vs " \
                   f"{sorted(got) if isinstance(got, dict) else got}"
        for k in want:
            bad = _same(want[k], got[k], f"{path}.{k}")
            if bad:
                return bad
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(want) != len(got):
            return f"{path}: list lengths differ"
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            bad = _same(a, b, f"{path}[{i}]")
            if bad:
                return bad
        return None
    if isinstance(want, float) and isinstance(got, (float, int)) and not isinstance(got, bool):
        return None if math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-12) else f"{path}: {want} vs {got}"
    if isinstance(want, str) and isinstance(got, str) and _HASH.match(want) and _HASH.match(got):
        return None
    return None if (type(want) is type(got) and want == got) else f"{path}: {want!r} vs {got!r}"


def test_the_structural_comparison_catches_real_changes():
    base = {"bundle": [{"id": 3, "score": 0.5, "flags": []}], "state_sig": "a" * 64}
    assert _same(base, {"bundle": [{"id": 3, "score": 0.5 + 1e-14, "flags": []}], "state_sig": "b" * 64}) is None
    assert _same(base, {"bundle": [{"id": 4, "score": 0.5, "flags": []}], "state_sig": "a" * 64})
    assert _same(base, {"bundle": [{"id": 3, "score": 0.51, "flags": []}], "state_sig": "a" * 64})
    assert _same(base, {"bundle": [{"id": 3, "score": 0.5, "flags": ["query_echo"]}], "state_sig": "a" * 64})
    assert _same(base, {"bundle": [{"id": 3, "score": 0.5, "flags": []}], "state_sig": "a" * 64, "new": 1})


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("case", CASES)
def test_receipts_match_the_golden_files(case, backend, monkeypatch):
    if backend not in available_backends():
        pytest.skip(f"{backend} is not installed")
    monkeypatch.delenv("OSCILLINK_BACKEND", raising=False)
    got = encode(build(case, backend))
    want = golden_path(case, backend).read_bytes()
    if got != want and _same(json.loads(want), json.loads(got)) is not None:
        a = json.dumps(json.loads(want), indent=1, sort_keys=True).splitlines()
        b = json.dumps(json.loads(got), indent=1, sort_keys=True).splitlines()
        diff = "\n".join(list(difflib.unified_diff(a, b, "golden", "now", lineterm="", n=1))[:60])
        pytest.fail(f"{golden_path(case, backend).name} differs at "
                    f"{_same(json.loads(want), json.loads(got))}:\n{diff}")


def test_every_case_has_a_golden_file_per_backend():
    for case in CASES:
        for backend in ("numba", "numpy"):
            assert golden_path(case, backend).is_file(), golden_path(case, backend)


def test_the_two_backends_record_different_solver_blocks():
    """The golden files are not one file twice: each records the backend that produced it."""
    for case in CASES:
        a = json.loads(golden_path(case, "numba").read_bytes())
        b = json.loads(golden_path(case, "numpy").read_bytes())
        assert a["receipt_full"]["solver"]["backend"] == "numba"
        assert b["receipt_full"]["solver"]["backend"] == "numpy"
