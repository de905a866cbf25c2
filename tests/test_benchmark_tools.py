"""benchmarks/compare_published.py: its driver feeds both workers the same inputs, interleaves them and
reports what they returned; its source-tree check. Behaviour only: no assertion on any timing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import compare_published  # noqa: E402

# A stand-in with the published package's API (OscillinkLattice, set_receipt_detail, last, last_ustar,
# receipt()["deltaH_total"]) that computes with this package, so both sides must rank alike.
STAND_IN = '''
from oscillink_core import Oscillink, warmup
warmup()  # the same backend as the timed side, which runs after warmup()
__version__ = "0.0+stand-in"

class OscillinkLattice:
    def __init__(self, Y, kneighbors=6):
        self._lat = Oscillink(Y, kneighbors=kneighbors)
        self.last, self.last_ustar = {}, {}
    def set_receipt_detail(self, mode):
        assert mode == "light"
    def set_query(self, psi):
        self._lat.set_query(psi)
    def settle(self):
        info = self._lat.settle()
        self.last = self.last_ustar = {"iters": info["iterations"]}
    def bundle(self, k):
        return self._lat.bundle(k=k)
    def receipt(self):
        return {"deltaH_total": self._lat.receipt(light=True)["energy"]["deltaH"]}
'''


def test_compare_size_runs_both_workers_on_the_same_inputs_interleaved(tmp_path):
    src = tmp_path / "src"
    (src / "oscillink").mkdir(parents=True)
    (src / "oscillink" / "__init__.py").write_text(STAND_IN, "utf-8")
    base = os.pathsep.join([str(ROOT), str(ROOT / "integrations")])
    env_pub = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), base])}
    env_this = {**os.environ, "PYTHONPATH": base}
    row = compare_published.compare_size(80, (sys.executable, env_pub), (sys.executable, env_this),
                                         rounds=3, per_round=2, tmp=tmp_path)
    assert row["n"] == 80 and row["calls_each"] == 6
    assert row["published"]["version"] == "0.0+stand-in"
    assert row["published"]["file"] == str(src / "oscillink" / "__init__.py")
    assert row["this"]["file"] == str(ROOT / "oscillink_core" / "__init__.py")
    # the same arrays reached both sides: the stand-in computes what rerank computes
    assert row["top10_overlap"] == 10
    assert row["published"]["info"]["settle_iters"] == row["this"]["info"]["cg_iterations"]
    assert row["ratio_of_medians"] == row["published"]["median_ms"] / row["this"]["median_ms"]
    lo, hi = row["round_ratio_range"]
    assert lo <= row["median_round_ratio"] <= hi


def test_source_tree_check_ignores_crlf_and_rejects_other_trees(tmp_path):
    wheel = tmp_path / "site" / "oscillink"
    wheel.mkdir(parents=True)
    (wheel / "__init__.py").write_bytes(b"from .core.lattice import OscillinkLattice\r\n__version__ = '9'\r\n")
    src = tmp_path / "src"
    with pytest.raises(SystemExit, match="no oscillink/core"):
        compare_published.check_source_tree(src, {"oscillink/__init__.py": wheel / "__init__.py"}, "9")
    (src / "oscillink" / "core").mkdir(parents=True)
    (src / "oscillink" / "__init__.py").write_bytes(b"from .core.lattice import OscillinkLattice\n__version__ = '9'\n")
    compare_published.check_source_tree(src, {"oscillink/__init__.py": wheel / "__init__.py"}, "9")  # CRLF aside
    (src / "oscillink" / "__init__.py").write_bytes(b"__version__ = '8'\n")
    with pytest.raises(SystemExit, match=r"not the source of the installed oscillink 9: \['oscillink/__init__.py'\]"):
        compare_published.check_source_tree(src, {"oscillink/__init__.py": wheel / "__init__.py"}, "9")
    with pytest.raises(SystemExit, match="no bin/python"):
        compare_published.ensure_published_venv("9", tmp_path / "nowhere")
