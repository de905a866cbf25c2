"""Parameter sweep on TRAIN queries only: which lattice settings and ranking rules help?

    .venv/bin/python benchmarks/quality/explore.py [--datasets scifact halueval halueval_traps] [--limit 500]

For each energy setting (graph + lamC/lamQ/gating...) the core lattice is settled once per
query (`methods.settle_state`); every ranking variant (coh_weight, near-duplicate rule,
dup_keep, MMR, prototype rules) is then applied to the same settled state. Writes
``benchmarks/results/quality_sweep.json``: one row per (dataset, energy, ranking) with the mean
train metrics, the train objective (`harness.objective`) and the difference to cosine.
Runtime: a few minutes per dataset at --limit 500 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from data import load_halueval_rows, prepare  # noqa: E402
from harness import objective, run_metrics, views  # noqa: E402
from methods import cosine_topk, mmr_topk, rank_from_state, settle_state  # noqa: E402

from oscillink_core import LatticeParams  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"


def energy_grid() -> list[dict]:
    grid = []
    for lamC in (0.1, 0.25, 0.5, 1.0, 2.0, 4.0):
        for lamQ in (1.0, 4.0):
            grid.append({"lamC": lamC, "lamQ": lamQ})
    for k in (3, 10, 15):
        grid.append({"kneighbors": k, "lamC": 1.0, "lamQ": 4.0})
    for f in (0.3, 0.5, 0.7):
        grid.append({"edge_floor": f, "lamC": 1.0, "lamQ": 4.0})
    for tau in (0.1, 0.5, 2.0):
        grid.append({"degree_reg": tau, "lamC": 1.0, "lamQ": 4.0})
    for lamC in (0.5, 1.0):
        grid.append({"gating": "diffusion", "lamC": lamC, "lamQ": 4.0})
    return grid


def rank_grid() -> list[dict]:
    out = []
    for cw in (-0.75, -0.5, 0.0, 1.0, 3.0):
        for dd in ((None, "best"), (0.9, "best"), (0.8, "consensus"), (0.9, "consensus"), (0.95, "consensus")):
            for mmr in (1.0, 0.9):
                out.append({"coh_weight": cw, "dedup_threshold": dd[0], "dup_keep": dd[1], "mmr_lambda": mmr})
    return out


KEEP = ("p@1", "ndcg@10", "mrr@10", "recall@10", "trap_share@5", "any_trap@5", "trap_share@10", "any_trap@10",
        "near_dup@10")


def means(m: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: round(float(v.mean()), 5) for k, v in m.items() if k in KEEP}


def sweep(name: str, limit: int | None, rows: list[dict], energies: list[dict], ranks: list[dict]) -> list[dict]:
    prep = prepare(name, rows)
    vs = views(prep, "train", limit)
    out = []
    cos_m = run_metrics(prep, "train", vs, [cosine_topk(v.cos) for v in vs])
    base_obj = objective(cos_m)
    out.append({"dataset": name, "method": "cosine", "n": len(vs), "objective": base_obj, **means(cos_m)})
    for lam in (0.5, 0.7, 0.8, 0.9, 0.95):
        m = run_metrics(prep, "train", vs, [mmr_topk(v.Y, v.cos, lam) for v in vs])
        out.append({"dataset": name, "method": "mmr", "mmr_lambda": lam, "n": len(vs), "objective": objective(m),
                    "objective_vs_cosine": objective(m) - base_obj, **means(m)})
    for e in energies:
        p = LatticeParams(**e)
        t0 = time.perf_counter()
        states = [settle_state(v.Y, v.psi, p) for v in vs]
        t_solve = time.perf_counter() - t0
        best = None
        for r in ranks:
            tops = [rank_from_state(s, v.Y, 10, kneighbors=p.kneighbors, **r) for s, v in zip(states, vs, strict=True)]
            m = run_metrics(prep, "train", vs, tops)
            row = {"dataset": name, "method": "lattice", "energy": e, "rank": r, "n": len(vs),
                   "objective": objective(m), "objective_vs_cosine": objective(m) - base_obj,
                   "ndcg_vs_cosine": float(m["ndcg@10"].mean() - cos_m["ndcg@10"].mean()), **means(m)}
            out.append(row)
            if best is None or row["objective"] > best["objective"]:
                best = row
        print(f"[{name}] {e}: solve {t_solve:.1f}s, best ranking {best['rank']} "
              f"obj {best['objective_vs_cosine']:+.4f} ndcg {best['ndcg_vs_cosine']:+.4f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["scifact", "halueval", "halueval_traps"])
    ap.add_argument("--limit", type=int, default=500, help="train queries per dataset (first N)")
    ap.add_argument("--out", default=str(RESULTS / "quality_sweep.json"))
    args = ap.parse_args()
    rows = load_halueval_rows()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out)
    existing = json.loads(out_path.read_text())["rows"] if out_path.exists() else []
    existing = [r for r in existing if r["dataset"] not in args.datasets]
    t0 = time.perf_counter()
    new = []
    for name in args.datasets:
        new += sweep(name, args.limit, rows, energy_grid(), rank_grid())
    doc = {"command": "python " + " ".join(sys.argv), "split": "train", "limit": args.limit,
           "runtime_s": round(time.perf_counter() - t0, 1), "rows": existing + new}
    body = ",\n".join(json.dumps(r, separators=(",", ":")) for r in doc.pop("rows"))
    head = json.dumps(doc, separators=(",", ":"))[:-1]
    out_path.write_text(head + ',"rows":[\n' + body + "\n]}\n")
    print(f"wrote {out_path} ({len(doc['rows'])} rows)")


if __name__ == "__main__":
    main()
