"""Evidence for the ranking-rule findings (TRAIN queries only):

1. ``align - cos`` (the core's coherence term and its ``dup_keep="consensus"`` priority) is almost
   a deterministic decreasing function of the cosine: the query pull every node gets. Measured:
   correlation of (align - cos) with cos across candidates, per query, and the same for the
   graph-induced part ``lift = align - isolated_align(cos)``.
2. ``score = cos + beta * lift`` (the coherence term with the query pull removed), beta grid.
3. Twin rules: the lattice priority (align - cos) against the lattice-free control (-cos):
   how often they pick the same keeper, and the metrics of both.
4. The core's near-duplicate rule (cosine 0.9, score = cosine) for every dup_keep x dup_action the
   core accepts, on TRAIN and TEST (test reported here only as evidence for the rule's sign flip
   between benign and adversarial duplicates; no choice is made from it).

    .venv/bin/python benchmarks/quality/prototypes.py [--limit 500]

Writes benchmarks/results/quality_prototypes.json and prints a summary.
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
from harness import run_metrics, views  # noqa: E402
from methods import PARAM_FIELDS, cosine_topk, near_duplicate_keepers, rank_from_state, settle_state  # noqa: E402

from oscillink_core import LatticeParams  # noqa: E402
from oscillink_core.evaluation import paired_bootstrap_ci  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
ENERGIES = ({"lamC": 0.5, "lamQ": 4.0}, {"lamC": 1.0, "lamQ": 4.0}, {"lamC": 2.0, "lamQ": 1.0})
BETAS = (1.0, 3.0, 10.0)


def diff(m, base, key):
    ci = paired_bootstrap_ci(base[key], m[key], n_boot=2000, seed=0)
    return {"diff": round(ci.mean, 5), "ci95": [round(ci.low, 5), round(ci.high, 5)]}


def report(m, base) -> dict:
    out = {"ndcg@10": diff(m, base, "ndcg@10")}
    if "trap_share@5" in m:
        out["trap_share@5"] = diff(m, base, "trap_share@5")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=500)
    args = ap.parse_args()
    rows = load_halueval_rows()
    t0 = time.perf_counter()
    out = {"command": "python " + " ".join(sys.argv), "split": "train", "limit": args.limit, "datasets": {}}
    for name in ("scifact", "halueval", "halueval_traps"):
        prep = prepare(name, rows)
        vs = views(prep, "train", args.limit)
        base = run_metrics(prep, "train", vs, [cosine_topk(v.cos) for v in vs])
        ds: dict = {"n": len(vs)}
        for e in ENERGIES:
            p = LatticeParams(**e)
            states = [settle_state(v.Y, v.psi, p) for v in vs]
            key = json.dumps(e)
            corr_infl = [float(np.corrcoef(s.align - s.cos, s.cos)[0, 1]) for s in states]
            corr_lift = [float(np.corrcoef(s.lift, s.cos)[0, 1]) for s in states]
            entry = {"corr(align-cos, cos) median": round(float(np.median(corr_infl)), 4),
                     "corr(lift, cos) median": round(float(np.median(corr_lift)), 4),
                     "lift |max| median": round(float(np.median([np.abs(s.lift).max() for s in states])), 5)}
            for cw in (1.0, -1.0):
                m = run_metrics(prep, "train", vs, [rank_from_state(s, v.Y, 10, coh_weight=cw) for s, v in
                                                    zip(states, vs, strict=True)])
                entry[f"core score, coh_weight={cw}"] = report(m, base)
            for beta in BETAS:
                m = run_metrics(prep, "train", vs, [rank_from_state(s, v.Y, 10, rule="lift", beta=beta) for s, v in
                                                    zip(states, vs, strict=True)])
                entry[f"cos + {beta} * lift"] = report(m, base)
            same = total = 0
            for s in states:
                _, k1 = near_duplicate_keepers(s.knn_idx, s.knn_sim, s.align - s.cos, 0.9)
                _, k2 = near_duplicate_keepers(s.knn_idx, s.knn_sim, -s.cos, 0.9)
                grp = k1 >= 0
                total += int(grp.sum())
                same += int((k1[grp] == k2[grp]).sum())
            entry["twin keeper: inflation == lowcos (share of grouped candidates)"] = (
                round(same / total, 4) if total else None)
            entry["grouped candidates (cos >= 0.9) per query"] = round(total / len(vs), 3)
            for prio in ("inflation", "lowcos"):
                for mode in ("promote", "promote_push", "demote"):
                    m = run_metrics(prep, "train", vs, [
                        rank_from_state(s, v.Y, 10, coh_weight=-1.0, twin_threshold=0.9, twin_mode=mode,
                                        twin_priority=prio) for s, v in zip(states, vs, strict=True)])
                    entry[f"twin {mode}, priority {prio}"] = report(m, base)
            ds[key] = entry
            print(f"[{name}] {key}: corr(align-cos, cos) {entry['corr(align-cos, cos) median']}, "
                  f"coh_weight=1 ndcg {entry['core score, coh_weight=1.0']['ndcg@10']['diff']:+.4f}, "
                  f"lift beta=3 ndcg {entry['cos + 3.0 * lift']['ndcg@10']['diff']:+.4f}, keeper agreement "
                  f"{entry['twin keeper: inflation == lowcos (share of grouped candidates)']}", flush=True)
        if "dup_action" in PARAM_FIELDS:
            rule = {}
            for part in ("train", "test"):
                vp = views(prep, part, args.limit if part == "train" else None)
                bp = run_metrics(prep, part, vp, [cosine_topk(v.cos) for v in vp])
                sp = [settle_state(v.Y, v.psi, LatticeParams(**ENERGIES[0])) for v in vp]
                for keep in ("best", "consensus", "support"):
                    for act in ("reorder", "demote"):
                        m = run_metrics(prep, part, vp, [
                            rank_from_state(s, v.Y, 10, coh_weight=-1.0, dedup_threshold=0.9, dup_keep=keep,
                                            dup_action=act) for s, v in zip(sp, vp, strict=True)])
                        rule[f"{part}: dup_keep={keep}, dup_action={act}"] = report(m, bp)
            ds["core near-duplicate rule at cosine 0.9, score = cosine"] = rule
        out["datasets"][name] = ds
    out["runtime_s"] = round(time.perf_counter() - t0, 1)
    path = RESULTS / "quality_prototypes.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
