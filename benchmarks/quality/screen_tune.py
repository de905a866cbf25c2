"""Train-only sweep of the screening parameters (oscillink_core.screening) over the first-stage
candidates of every dataset; writes benchmarks/results/screen_sweep.json.

    .venv/bin/python benchmarks/quality/screen_tune.py [--limit 400]

The pool order is the core's default lattice score (one settle per query, shared by every grid
point); each grid point runs `ranking.screen_ranking` with action "demote" on it. Chosen: the grid
point with the largest mean planted-share reduction (traps, poisoning) among those that lose no
nDCG@10 (both@5 on two_hop) on any clean train set by more than 0.002.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from data import DATASETS, load_halueval_rows, prepare  # noqa: E402
from harness import views  # noqa: E402

from oscillink_core import LatticeParams, Oscillink  # noqa: E402
from oscillink_core.evaluation import evaluate_rankings  # noqa: E402
from oscillink_core.ranking import rank_settled, screen_ranking  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GRID = {"group_threshold": (0.7, 0.75, 0.8), "group_min": (2, 3), "target_margin": (0.0, 0.05, 0.1, 0.15, 0.2),
        "echo_delta": (0.05, 0.1, 0.2), "twin": (None, 0.9)}
CLEAN, ATTACKED = ("halueval", "scifact", "two_hop"), ("halueval_traps", "halueval_poison")


def both_at(ranked: list, rel: dict, k: int) -> float:
    return float(set(rel) <= set(ranked[:k]))


def metrics(prep, part, vs, tops) -> dict[str, float]:
    split = prep.splits[part]["split"]
    rankings = {v.qid: [v.ids[j] for j in t] for v, t in zip(vs, tops, strict=True)}
    traps = {v.qid: prep.ds.traps for v in vs} if prep.ds.traps else None
    m = evaluate_rankings(rankings, split.qrels, traps=traps, ks=(5, 10))
    out = {k: float(v.mean()) for k, v in m.items() if k in ("ndcg@10", "trap_share@5", "recall@5")}
    if prep.ds.name == "two_hop":
        out["both@5"] = float(np.mean([both_at(rankings[q], split.qrels[q], 5) for q in rankings]))
    return out


def state(v, p: LatticeParams):
    lat = Oscillink(v.Y, params=p)
    lat.set_query(v.psi)
    lat.settle()
    c = lat.components()
    idx, sim = lat.knn_lists()
    order, score, rep = rank_settled(c["align"], c["cosine"], lat.unit_rows, idx, sim, 10, coh_weight=p.coh_weight,
                                     dedup_threshold=p.dedup_threshold, dup_keep=p.dup_keep, dup_action=p.dup_action)
    return order, score, rep, c["cosine"], lat.unit_rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=400)
    args = ap.parse_args()
    rows = load_halueval_rows()
    p0 = LatticeParams(screen="off")
    res: dict = {}
    keys = list(itertools.product(*GRID.values()))
    for name in DATASETS:
        prep = prepare(name, rows)
        vs = views(prep, "train", args.limit)
        st = [state(v, p0) for v in vs]
        base = metrics(prep, "train", vs, [np.argsort(-v.cos, kind="stable")[:10] for v in vs])
        lat = metrics(prep, "train", vs, [s[0] for s in st])
        res[name] = {"cosine": base, "lattice_noscreen": lat, "grid": {}}
        for key in keys:
            kw = dict(zip(GRID, key, strict=True))
            tw = kw.pop("twin")
            tops = [screen_ranking(o, sc, rp, c, Yn, 10, action="demote", use_twins=tw is not None,
                                   twin_threshold=tw or 2.0, twin_margin=0.02, pool=20, **kw)[0]
                    for o, sc, rp, c, Yn in st]
            res[name]["grid"][repr(key)] = metrics(prep, "train", vs, tops)
        print(name, "cosine", base, "lattice", lat, flush=True)
    out = ROOT / "benchmarks" / "results" / "screen_sweep.json"
    summary = []
    for key in keys:
        k = repr(key)
        loss = max((res[n]["cosine"].get("both@5", res[n]["cosine"]["ndcg@10"])
                    - res[n]["grid"][k].get("both@5", res[n]["grid"][k]["ndcg@10"])) for n in CLEAN)
        red = float(np.mean([1 - res[n]["grid"][k]["trap_share@5"] / res[n]["cosine"]["trap_share@5"]
                             for n in ATTACKED]))
        summary.append({"key": dict(zip(GRID, key, strict=True)), "worst_clean_loss": loss, "mean_trap_reduction": red,
                        **{f"{n}": res[n]["grid"][k] for n in DATASETS}})
    ok = [s for s in summary if s["worst_clean_loss"] <= 0.002]
    best = max(ok or summary, key=lambda s: (s["mean_trap_reduction"], -s["worst_clean_loss"]))
    out.write_text(json.dumps({"limit": args.limit, "grid": GRID, "baselines": {n: {"cosine": res[n]["cosine"],
               "lattice_noscreen": res[n]["lattice_noscreen"]} for n in DATASETS}, "chosen": best,
               "summary": sorted(summary, key=lambda s: -s["mean_trap_reduction"])}, indent=1) + "\n")
    print("chosen", json.dumps(best, indent=1))
    for s in sorted(summary, key=lambda s: -s["mean_trap_reduction"])[:15]:
        print(s["key"], round(s["worst_clean_loss"], 4), round(s["mean_trap_reduction"], 3))


if __name__ == "__main__":
    main()
