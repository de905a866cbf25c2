"""Where do the traps sit, and which lattice quantities tell them apart from the truth?

    .venv/bin/python benchmarks/quality/diagnose.py [--part train] [--limit 600]

Prints, for the halueval_traps queries of one split: how often each trap kind outranks the true
passage under cosine, the cosine between the true passage and its counterfactual twin, and
for a few lattice settings the mean of ``align - cos`` (query inflation) for true passages,
counterfactuals and look-alikes, and the share of queries where the true passage has the
larger ``align - cos`` than its counterfactual twin. TRAIN split by default (this is what the
ranking rules may be designed on).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from data import prepare  # noqa: E402
from harness import views  # noqa: E402
from methods import cosine_topk, settle_state  # noqa: E402

from oscillink_core import LatticeParams  # noqa: E402
from oscillink_core.graph import exact_knn, mutual_knn_graph  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="train")
    ap.add_argument("--limit", type=int, default=600)
    args = ap.parse_args()
    prep = prepare("halueval_traps")
    vs = views(prep, args.part, args.limit)
    split = prep.splits[args.part]["split"]
    stats = {"cf_above_true": 0, "la_above_true": 0, "true_in": 0, "cf_in": 0, "la_in": 0, "n": 0}
    twin_cos = []
    configs = {
        "lamC=0.5,lamQ=4": LatticeParams(lamC=0.5, lamQ=4.0),
        "lamC=1": LatticeParams(lamC=1.0, lamQ=4.0),
        "lamC=2,lamQ=1": LatticeParams(lamC=2.0, lamQ=1.0),
        "diffusion": LatticeParams(lamC=0.5, lamQ=4.0, gating="diffusion"),
    }
    infl = {c: {"true": [], "counterfactual": [], "lookalike": [], "other": [], "true_gt_cf": []} for c in configs}
    top10 = {"true": [[], []], "counterfactual": [[], []], "lookalike": [[], []], "other": [[], []]}
    in_top5 = {"counterfactual": [], "lookalike": []}
    for v in vs:
        true_id = next(iter(split.qrels[v.qid]))
        q = v.qid[1:]
        pos = {d: r for r, d in enumerate(v.ids)}
        stats["n"] += 1
        rt, rc, rl = pos.get(true_id), pos.get(f"cf{q}"), pos.get(f"la{q}")
        stats["true_in"] += rt is not None
        stats["cf_in"] += rc is not None
        stats["la_in"] += rl is not None
        big = 10**9
        stats["cf_above_true"] += rc is not None and rc < (rt if rt is not None else big)
        stats["la_above_true"] += rl is not None and rl < (rt if rt is not None else big)
        if rt is not None and rc is not None:
            twin_cos.append(float(v.Y[rt] @ v.Y[rc]))
        idx, sim = exact_knn(np.ascontiguousarray(v.Y, dtype=np.float32), 6)
        deg = np.diff(mutual_knn_graph(idx, sim, len(v.ids)).indptr)
        order = cosine_topk(v.cos)
        for j in order:
            did = v.ids[j]
            kind = "true" if did == true_id else prep.ds.trap_kind.get(did, "other")
            top10[kind][0].append(float(sim[j, 0]))
            top10[kind][1].append(float(deg[j] == 0))
        for kind in in_top5:
            in_top5[kind].append(sum(prep.ds.trap_kind.get(v.ids[j]) == kind for j in order[:5]))
        for name, p in configs.items():
            st = settle_state(v.Y, v.psi, p)
            d = st.align - st.cos
            for j, did in enumerate(v.ids):
                if did == true_id:
                    kind = "true"
                elif did == f"cf{q}":
                    kind = "counterfactual"
                elif did == f"la{q}":
                    kind = "lookalike"
                else:
                    kind = "other"
                infl[name][kind].append(d[j])
            if rt is not None and rc is not None:
                infl[name]["true_gt_cf"].append(float(d[rt] > d[rc]))
    n = stats["n"]
    print(f"{n} queries ({args.part}); true passage in top-100: {stats['true_in'] / n:.3f}; "
          f"counterfactual in top-100: {stats['cf_in'] / n:.3f}; look-alike in top-100: {stats['la_in'] / n:.3f}")
    print(f"counterfactual ranked above the true passage (cosine): {stats['cf_above_true'] / n:.3f}")
    print(f"look-alike ranked above the true passage (cosine):     {stats['la_above_true'] / n:.3f}")
    tc = np.array(twin_cos)
    print(f"cos(true, counterfactual): mean {tc.mean():.3f}, quantiles 5/25/50/75/95% "
          f"{np.round(np.quantile(tc, [0.05, 0.25, 0.5, 0.75, 0.95]), 3).tolist()}")
    for kind, (ms, iso) in top10.items():
        print(f"cosine top 10, {kind:14s}: n {len(ms)}, max cosine to another candidate {np.mean(ms):.3f}, "
              f"isolated in the mutual 6-NN graph {np.mean(iso):.3f}")
    print("cosine top 5: mean number of " + ", ".join(f"{k}s {np.mean(x):.3f}" for k, x in in_top5.items()))
    for name in configs:
        parts = ", ".join(f"{k} {np.mean(val):+.4f}" for k, val in infl[name].items() if k != "true_gt_cf")
        print(f"[{name}] mean align-cos: {parts}; true > counterfactual in {np.mean(infl[name]['true_gt_cf']):.3f}")


if __name__ == "__main__":
    main()
