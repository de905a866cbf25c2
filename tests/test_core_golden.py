"""Receipts byte for byte against golden files generated from fixed inputs, on both backends.

A refactor must not change a single byte of a receipt (timings aside). If this fails after an
*intended* change of behaviour, regenerate with ``PYTHONPATH=. python -m tests._golden`` and
say why in the commit; see `tests/_golden.py`.
"""

from __future__ import annotations

import difflib
import json

import pytest

from oscillink_core import available_backends

from ._golden import CASES, build, encode, golden_path


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("case", CASES)
def test_receipts_are_byte_identical_to_the_golden_files(case, backend, monkeypatch):
    if backend not in available_backends():
        pytest.skip(f"{backend} is not installed")
    monkeypatch.delenv("OSCILLINK_BACKEND", raising=False)
    got = encode(build(case, backend))
    want = golden_path(case, backend).read_bytes()
    if got != want:
        a = json.dumps(json.loads(want), indent=1, sort_keys=True).splitlines()
        b = json.dumps(json.loads(got), indent=1, sort_keys=True).splitlines()
        diff = "\n".join(list(difflib.unified_diff(a, b, "golden", "now", lineterm="", n=1))[:60])
        pytest.fail(f"{golden_path(case, backend).name} differs:\n{diff}")


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
