"""Retrieval-quality benchmark: cosine vs MMR vs the Oscillink lattice, on SciFact, HaluEval and
a counterfactual trap set built from HaluEval. Parameters are chosen on TRAIN queries, every
reported number is on TEST queries.

    .venv/bin/python benchmarks/quality/run.py                 # full run (~10 min once embeddings are cached)
    .venv/bin/python benchmarks/quality/run.py --quick         # smoke run: 100 train / 200 test queries

First run: embeds the corpora into .cache/quality/ (slow on CPU: ~30 min on 2 cores);
later runs read the cache. Writes benchmarks/results/quality.json, quality.md and quality.png.

Methods (all on the same top-100 FAISS candidates of each query):

* cosine: first-stage order.
* mmr_0.5, mmr_tuned: MMR with lambda 0.5, and lambda chosen on train from MMR_GRID.
* lattice_default: ``oscillink_core.rerank`` with the core's current defaults (``LatticeParams()``).
* lattice_tuned: ``rerank`` with the (energy x ranking) grid point with the best train objective
  of that dataset (grid = ENERGY_GRID x RANK_GRID, LatticeParams fields only).
* lattice_recommended: ``rerank`` with ONE grid point for all datasets: the one whose worst
  train-objective gain over cosine across datasets is largest (the candidate new default).
* proto_*: prototype ranking rules built from the lattice's quantities (not in the core; see
  methods.py), tuned on train the same way.

Train objective: mean nDCG@10 minus mean trap share of the top 10 (`harness.objective`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from data import N_CANDIDATES, load_halueval_rows, prepare  # noqa: E402
from harness import HEADLINE, NEAR_DUP_THRESHOLD, objective, run_metrics, summarize, views  # noqa: E402
from methods import (  # noqa: E402
    check_engine_matches_core,
    cosine_topk,
    lattice_topk,
    mmr_topk,
    rank_from_state,
    settle_state,
)

import oscillink_core  # noqa: E402
from oscillink_core import LatticeParams  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
DATASETS = ("scifact", "halueval", "halueval_traps")
MMR_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)

# Energy settings tried for lattice_tuned / lattice_recommended (chosen from the wider train
# sweep in explore.py; see quality.md). Each is settled once per query.
ENERGY_GRID: list[dict] = [
    {},  # core defaults
    {"lamC": 1.0},
    {"lamC": 2.0, "lamQ": 1.0},
    {"lamC": 4.0, "lamQ": 1.0},
    {"lamC": 1.0, "kneighbors": 10},
    {"lamC": 1.0, "degree_reg": 0.5},
    {"lamC": 0.5, "gating": "diffusion"},
]
# Ranking settings applied to every settled state (LatticeParams ranking fields).
RANK_GRID: list[dict] = [
    {"coh_weight": cw, "dedup_threshold": dt, "dup_keep": dk, "mmr_lambda": ml}
    for cw in (-0.75, -0.5, 0.0)
    for dt, dk in ((None, "best"), (0.9, "best"), (0.9, "consensus"), (0.95, "consensus"))
    for ml in (1.0, 0.9)
]
# Prototype rules (methods.rank_from_state keywords), tuned per dataset on train.
PROTO_GRID: dict[str, list[dict]] = {}


def machine() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count(),
            "oscillink_core": oscillink_core.__version__}


def timed_tops(vs, fn) -> tuple[list[np.ndarray], np.ndarray]:
    tops, ms = [], []
    for v in vs:
        t0 = time.perf_counter()
        tops.append(np.asarray(fn(v)))
        ms.append(1e3 * (time.perf_counter() - t0))
    return tops, np.asarray(ms)


def tune(prep, vs_train, log) -> dict:
    """All train-side choices for one dataset: MMR lambda, the lattice grid, prototype rules."""
    cos_m = run_metrics(prep, "train", vs_train, [cosine_topk(v.cos) for v in vs_train])
    base = objective(cos_m)
    mmr_scores = {}
    for lam in MMR_GRID:
        mmr_scores[lam] = objective(run_metrics(prep, "train", vs_train, [mmr_topk(v.Y, v.cos, lam) for v in vs_train]))
    mmr_best = max(MMR_GRID, key=lambda lam: (mmr_scores[lam], lam))
    grid = []  # (energy index, rank index, objective gain)
    proto = []
    for ei, e in enumerate(ENERGY_GRID):
        p = LatticeParams(**e)
        states = [settle_state(v.Y, v.psi, p) for v in vs_train]
        for ri, r in enumerate(RANK_GRID):
            tops = [rank_from_state(s, v.Y, 10, kneighbors=p.kneighbors, **r) for s, v in zip(states, vs_train,
                                                                                               strict=True)]
            grid.append((ei, ri, objective(run_metrics(prep, "train", vs_train, tops)) - base))
        for pname, variants in PROTO_GRID.items():
            for vi, kw in enumerate(variants):
                tops = [rank_from_state(s, v.Y, 10, kneighbors=p.kneighbors, **kw) for s, v in zip(states, vs_train,
                                                                                                    strict=True)]
                proto.append((pname, ei, vi, objective(run_metrics(prep, "train", vs_train, tops)) - base))
        log(f"    energy {e or 'defaults'}: best train gain "
            f"{max(g for g_ei, _, g in grid if g_ei == ei):+.4f}")
    best = max(grid, key=lambda t: t[2])
    out = {"cosine_objective": base, "mmr_objective": {str(k): v - base for k, v in mmr_scores.items()},
           "mmr_lambda": mmr_best, "grid_gain": {f"{ei}:{ri}": g for ei, ri, g in grid},
           "lattice_best": {"energy": best[0], "rank": best[1], "gain": best[2]}}
    out["proto_best"] = {}
    for pname in PROTO_GRID:
        rows = [t for t in proto if t[0] == pname]
        b = max(rows, key=lambda t: t[3])
        out["proto_best"][pname] = {"energy": b[1], "variant": b[2], "gain": b[3]}
    return out


def params_of(ei: int, ri: int) -> LatticeParams:
    return LatticeParams(**ENERGY_GRID[ei], **RANK_GRID[ri])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--train-limit", type=int, default=600, help="train queries per dataset used for tuning")
    ap.add_argument("--test-limit", type=int, default=None, help="test queries per dataset (default: all)")
    ap.add_argument("--n-boot", type=int, default=5000)
    ap.add_argument("--quick", action="store_true", help="100 train / 200 test queries, 1000 bootstrap draws")
    ap.add_argument("--out", default=str(RESULTS / "quality.json"))
    args = ap.parse_args()
    if args.quick:
        args.train_limit, args.test_limit, args.n_boot = 100, 200, 1000
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    rows = load_halueval_rows()
    preps = {}
    for name in args.datasets:
        preps[name] = prepare(name, rows)
        log(f"{name}: {len(preps[name].ds.doc_ids)} docs ready")

    # ---------------------------------------------------------------- train: choose parameters
    tuning = {}
    vtrain = {}
    for name, prep in preps.items():
        vtrain[name] = views(prep, "train", args.train_limit)
        log(f"tuning on {len(vtrain[name])} {name} train queries")
        tuning[name] = tune(prep, vtrain[name], log)
    # one setting for every dataset: maximise the worst train gain across datasets
    keys = list(next(iter(tuning.values()))["grid_gain"])
    worst = {k: min(tuning[n]["grid_gain"][k] for n in tuning) for k in keys}
    mean = {k: float(np.mean([tuning[n]["grid_gain"][k] for n in tuning])) for k in keys}
    rec_key = max(keys, key=lambda k: (round(worst[k], 6), mean[k]))
    rec_params = params_of(*map(int, rec_key.split(":")))
    default_key = next(k for k in keys if params_of(*map(int, k.split(":"))) == LatticeParams())
    log(f"recommended: {rec_params.to_dict()} (worst train gain {worst[rec_key]:+.4f})")

    # engine == core, checked on real queries for every lattice setting that is reported
    for name in preps:
        b = tuning[name]["lattice_best"]
        for p in (LatticeParams(), rec_params, params_of(b["energy"], b["rank"])):
            for v in vtrain[name][:5]:
                check_engine_matches_core(v.Y, v.psi, p)

    # ---------------------------------------------------------------- test: report
    results = {}
    for name, prep in preps.items():
        vs = views(prep, "test", args.test_limit)
        log(f"testing on {len(vs)} {name} test queries")
        b = tuning[name]["lattice_best"]
        tuned = params_of(b["energy"], b["rank"])
        lam = tuning[name]["mmr_lambda"]
        methods = {
            "cosine": lambda v: cosine_topk(v.cos),
            "mmr_0.5": lambda v: mmr_topk(v.Y, v.cos, 0.5),
            "mmr_tuned": lambda v, lam=lam: mmr_topk(v.Y, v.cos, lam),
            "lattice_default": lambda v: lattice_topk(v.Y, v.psi, LatticeParams()),
            "lattice_recommended": lambda v: lattice_topk(v.Y, v.psi, rec_params),
            "lattice_tuned": lambda v, p=tuned: lattice_topk(v.Y, v.psi, p),
        }
        for pname, pb in tuning[name]["proto_best"].items():
            pe = LatticeParams(**ENERGY_GRID[pb["energy"]])
            kw = PROTO_GRID[pname][pb["variant"]]
            methods[pname] = lambda v, pe=pe, kw=kw: rank_from_state(settle_state(v.Y, v.psi, pe), v.Y, 10,
                                                                      kneighbors=pe.kneighbors, **kw)
        per_method, lat_ms = {}, {}
        for mname, fn in methods.items():
            tops, ms = timed_tops(vs, fn)
            per_method[mname] = run_metrics(prep, "test", vs, tops)
            lat_ms[mname] = ms
        base = per_method["cosine"]
        res = {}
        for mname, m in per_method.items():
            res[mname] = {"metrics": summarize(m, None if mname == "cosine" else base, args.n_boot),
                          "latency_ms": {"p50": float(np.percentile(lat_ms[mname], 50)),
                                         "p95": float(np.percentile(lat_ms[mname], 95))}}
        results[name] = {"n_test": len(vs), "n_train_used": len(vtrain[name]),
                         "first_stage_recall@100": float(np.mean([
                             len(set(v.ids) & set(prep.splits["test"]["split"].qrels[v.qid]))
                             / len(prep.splits["test"]["split"].qrels[v.qid]) for v in vs])),
                         "description": prep.ds.description, "methods": res,
                         "params": {"mmr_tuned": {"mmr_lambda": lam}, "lattice_default": LatticeParams().to_dict(),
                                    "lattice_recommended": rec_params.to_dict(), "lattice_tuned": tuned.to_dict(),
                                    **{pn: {"energy": ENERGY_GRID[pb["energy"]], **PROTO_GRID[pn][pb["variant"]]}
                                       for pn, pb in tuning[name]["proto_best"].items()}}}
        for mname in methods:
            mm = res[mname]["metrics"]
            log(f"  {mname:22s} ndcg@10 {mm['ndcg@10']['mean']:.4f}"
                + (f" ({mm['ndcg@10']['diff_vs_cosine']:+.4f} [{mm['ndcg@10']['ci95'][0]:+.4f}, "
                   f"{mm['ndcg@10']['ci95'][1]:+.4f}])" if "ci95" in mm["ndcg@10"] else "")
                + (f" trap@5 {mm['trap_share@5']['mean']:.4f}" if "trap_share@5" in mm else ""))

    doc = {
        "format": "oscillink-core/quality-benchmark", "version": 1,
        "command": " ".join(["python"] + sys.argv),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "runtime_s": round(time.perf_counter() - t_start, 1),
        "model": "sentence-transformers/all-MiniLM-L6-v2 (packaged)", "candidates_per_query": N_CANDIDATES,
        "k": 10, "near_duplicate_threshold": NEAR_DUP_THRESHOLD, "n_boot": args.n_boot,
        "headline_metrics": list(HEADLINE),
        "notes": {"trap_share@5": "headline trap metric (a 5-passage context); @10 also reported",
                  "ci95": "paired bootstrap 95% interval of mean(method - cosine) over test queries",
                  "objective": objective.__doc__.strip()},
        "grids": {"mmr": list(MMR_GRID), "energy": ENERGY_GRID, "rank": RANK_GRID, "proto": PROTO_GRID},
        "recommended": {"params": rec_params.to_dict(), "worst_train_gain": worst[rec_key],
                        "mean_train_gain": mean[rec_key],
                        "per_dataset_train_gain": {n: tuning[n]["grid_gain"][rec_key] for n in tuning},
                        "default_per_dataset_train_gain": {n: tuning[n]["grid_gain"][default_key] for n in tuning}},
        "tuning": {n: {k: v for k, v in t.items() if k != "grid_gain"} for n, t in tuning.items()},
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    log(f"wrote {out}")
    try:
        from report import write_report
    except ImportError:  # pragma: no cover
        return
    write_report(doc, out.with_suffix(".md"), out.with_suffix(".png"))
    log(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
