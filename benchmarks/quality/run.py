"""Retrieval-quality benchmark: cosine vs MMR vs the Oscillink lattice, on SciFact, HaluEval and
a counterfactual trap set built from HaluEval. Parameters are chosen on TRAIN queries, every
reported number is on TEST queries.

    .venv/bin/python benchmarks/quality/run.py                 # full run (~6 min on 2 CPUs once cached)
    .venv/bin/python benchmarks/quality/run.py --quick         # smoke run: 100 train / 200 test queries

First run: embeds the corpora into .cache/quality/ (slow on CPU: ~30 min on 2 cores);
later runs read the cache. Writes benchmarks/results/quality.json, quality.md and quality.png.

Methods (all on the same top-100 FAISS candidates of each query):

* cosine: first-stage order.
* mmr_0.5, mmr_tuned: MMR with lambda 0.5, and lambda chosen on train from MMR_GRID.
* lattice_default: ``oscillink_core.rerank`` with the core's current defaults (``LatticeParams()``),
  screening included (``screen="demote"``: candidates flagged query_targeted / twin_conflict leave the
  context; defaults chosen on train by screen_tune.py).
* lattice_default_noscreen: the same with ``screen="off"`` (ranking only).
* lattice_default_text_always: ``lattice_default_text`` with ``coh_scope="always"`` (the lattice
  ranks every query; the default ``"evidence"`` keeps the cosine order where the pool shows no
  structure).
* lattice_tuned: ``rerank`` with the (energy x ranking) grid point with the best train objective
  of that dataset (grid = ENERGY_GRID x RANK_GRID, LatticeParams fields only).
* lattice_recommended: ``rerank`` with ONE grid point for all datasets: the one whose worst
  train-objective gain over cosine across datasets is largest (the candidate new default).
* proto_twin_push5: prototype near-duplicate ("twin") rule on the settled lattice (not in the core;
  see methods.rank_from_state), one setting for all datasets chosen like lattice_recommended.
* control_twin_push5_no_lattice, control_dup_reorder_no_lattice: the same twin rules with the lattice
  removed (score = cosine, keeper = the least query-similar member): how much of them is the lattice.

Train objective: mean nDCG@10 minus mean trap share of the top 5 (`harness.objective`); every choice
maximises its gain over cosine minus 10 x any nDCG@10 loss (`harness.selection_gain`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
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
from harness import (  # noqa: E402
    HEADLINE,
    NDCG_LOSS_PENALTY,
    NEAR_DUP_THRESHOLD,
    objective,
    run_metrics,
    selection_gain,
    summarize,
    views,
)
from methods import (  # noqa: E402
    PARAM_FIELDS,
    LatticeState,
    check_engine_matches_core,
    cosine_topk,
    lattice_topk,
    mmr_topk,
    rank_from_state,
    settle_state,
)

import oscillink_core  # noqa: E402
from oscillink_core import LatticeParams  # noqa: E402
from oscillink_core.graph import exact_knn  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
DATASETS = ("scifact", "halueval", "halueval_traps", "halueval_poison", "two_hop")
MMR_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)

# Energy settings tried for lattice_tuned / lattice_recommended (chosen from the wider train
# sweep in explore.py, results in quality_sweep.json). Each is settled once per query.
ENERGY_GRID: list[dict] = [
    {},  # core defaults
    {"lamC": 1.0},
    {"lamC": 0.5, "lamQ": 1.0},
    {"lamC": 2.0, "lamQ": 1.0},
    {"lamC": 0.5, "gating": "diffusion"},
]


def _dup_options() -> list[dict]:
    """No near-duplicate rule, or the rule at cosine 0.9 with every (dup_keep, dup_action) this core accepts."""
    out: list[dict] = [{"dedup_threshold": None}]
    actions = ("demote", "reorder") if "dup_action" in PARAM_FIELDS else (None,)
    for keep in ("best", "consensus", "support"):
        for act in actions:
            opt = {"dedup_threshold": 0.9, "dup_keep": keep, **({"dup_action": act} if act else {})}
            try:
                LatticeParams(**opt)
            except ValueError:
                continue
            out.append(opt)
    return out


# Ranking settings applied to every settled state (LatticeParams ranking fields only).
# coh_weight = -1 reproduces the cosine order exactly (score = cos). MMR inside the lattice never
# helped in the wide sweep (quality_sweep.json) and is left out here to keep the run short.
RANK_GRID: list[dict] = [{"coh_weight": cw, "mmr_lambda": 1.0, **d}
                         for cw in (-1.0, -0.75, -0.5, 0.0) for d in _dup_options()]
# Prototype rules (methods.rank_from_state keywords, core-default energy); ONE setting per family
# is chosen for all datasets (largest worst-case train gain), like lattice_recommended.
PROTO_GRID: dict[str, list[dict]] = {
    "proto_twin_push5": [{"coh_weight": cw, "twin_threshold": t, "twin_mode": "promote_push", "push_to": 5}
                         for cw in (-1.0, -0.5) for t in (0.85, 0.9, 0.95)],
}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count(),
            "oscillink_core": oscillink_core.__version__, "git_commit": _git("rev-parse", "HEAD"),
            "core_uncommitted_changes": bool(_git("status", "--porcelain", "oscillink_core"))}


def timed_tops(vs, fn) -> tuple[list[np.ndarray], np.ndarray]:
    tops, ms = [], []
    for v in vs:
        t0 = time.perf_counter()
        tops.append(np.asarray(fn(v)))
        ms.append(1e3 * (time.perf_counter() - t0))
    return tops, np.asarray(ms)


def cosine_state(v) -> LatticeState:
    """A 'state' without any lattice (align = cos): lets the twin rules run as a lattice-free control."""
    idx, sim = exact_knn(np.ascontiguousarray(v.Y, dtype=np.float32), min(10, len(v.ids) - 1))
    n = len(v.ids)
    return LatticeState(v.cos, v.cos, np.zeros(n, np.int64), np.ones(n), idx, sim, 0)


CONTROL_REORDER = {"coh_weight": -1.0, "dedup_threshold": 0.9, "dup_keep": "consensus", "dup_action": "reorder"}


def control_dup_reorder(v) -> np.ndarray:
    """The core's near-duplicate rule (dup_keep="consensus", dup_action="reorder", cosine 0.9) with the
    lattice removed: align := 0 makes the score (coh_weight -1) the cosine and the consensus priority
    (align - cos) equal to -cos, i.e. 'inside a near-duplicate group, the least query-similar member
    takes the group's best place'."""
    st = cosine_state(v)
    st.align = np.zeros_like(st.cos)
    return rank_from_state(st, v.Y, 10, kneighbors=6, **CONTROL_REORDER)


def tune(prep, vs_train, log) -> dict:
    """All train-side measurements for one dataset: MMR lambdas, the lattice grid, prototype rules."""
    cos_m = run_metrics(prep, "train", vs_train, [cosine_topk(v.cos) for v in vs_train])
    base = objective(cos_m)
    mmr_gain = {}
    for lam in MMR_GRID:
        m = run_metrics(prep, "train", vs_train, [mmr_topk(v.Y, v.cos, lam) for v in vs_train])
        mmr_gain[lam] = selection_gain(m, cos_m)
    grid: dict[str, float] = {}
    proto: dict[str, list[float]] = {}
    for ei, e in enumerate(ENERGY_GRID):
        p = LatticeParams(**e)
        states = [settle_state(v.Y, v.psi, p) for v in vs_train]
        for ri, r in enumerate(RANK_GRID):
            tops = [rank_from_state(s, v.Y, 10, kneighbors=p.kneighbors, **r) for s, v in zip(states, vs_train,
                                                                                               strict=True)]
            grid[f"{ei}:{ri}"] = selection_gain(run_metrics(prep, "train", vs_train, tops), cos_m)
        if ei == 0:
            for pname, variants in PROTO_GRID.items():
                proto[pname] = []
                for kw in variants:
                    tops = [rank_from_state(s, v.Y, 10, kneighbors=p.kneighbors, **kw)
                            for s, v in zip(states, vs_train, strict=True)]
                    proto[pname].append(selection_gain(run_metrics(prep, "train", vs_train, tops), cos_m))
        log(f"    energy {e or 'defaults'}: best train gain "
            f"{max(g for k, g in grid.items() if k.startswith(f'{ei}:')):+.4f}")
    best_key = max(grid, key=lambda k: grid[k])
    return {"cosine_objective": base, "mmr_gain": {str(k): v for k, v in mmr_gain.items()},
            "mmr_lambda": max(MMR_GRID, key=lambda lam: (mmr_gain[lam], lam)),
            "grid_gain": grid, "lattice_best": {"key": best_key, "gain": grid[best_key]}, "proto_gain": proto}


def params_of(key: str) -> LatticeParams:
    ei, ri = map(int, key.split(":"))
    return LatticeParams(**ENERGY_GRID[ei], **RANK_GRID[ri], screen="off")  # the grid is the ranking alone


def pick_common(gains: dict[str, dict], keys) -> tuple:
    """The key with the largest worst-case gain across datasets (ties: larger mean gain)."""
    worst = {k: min(g[k] for g in gains.values()) for k in keys}
    mean = {k: float(np.mean([g[k] for g in gains.values()])) for k in keys}
    best = max(keys, key=lambda k: (round(worst[k], 6), mean[k]))
    return best, worst[best], mean[best]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--train-limit", type=int, default=400,
                    help="train queries per dataset used for tuning (first N; default 400)")
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
    rec_key, rec_worst, rec_mean = pick_common({n: t["grid_gain"] for n, t in tuning.items()}, keys)
    rec_params = params_of(rec_key)
    default_key = next(k for k in keys if params_of(k) == LatticeParams(screen="off"))
    log(f"recommended: {rec_params.to_dict()} (worst train gain {rec_worst:+.4f})")
    proto_choice = {}
    for pname, variants in PROTO_GRID.items():
        gains = {n: dict(enumerate(t["proto_gain"][pname])) for n, t in tuning.items()}
        vi, w, mn = pick_common(gains, list(range(len(variants))))
        proto_choice[pname] = {"variant": variants[vi], "worst_train_gain": w, "mean_train_gain": mn,
                               "per_dataset_train_gain": {n: g[vi] for n, g in gains.items()}}
        log(f"{pname}: {variants[vi]} (worst train gain {w:+.4f})")
    push = proto_choice["proto_twin_push5"]["variant"]
    control_kw = {**push, "coh_weight": -1.0, "twin_priority": "lowcos"}

    # engine == core, checked on real queries for every lattice setting that is reported
    for name in preps:
        for p in (LatticeParams(screen="off"), rec_params, params_of(tuning[name]["lattice_best"]["key"])):
            for v in vtrain[name][:5]:
                check_engine_matches_core(v.Y, v.psi, p)

    # ---------------------------------------------------------------- test: report
    results = {}
    for name, prep in preps.items():
        vs = views(prep, "test", args.test_limit)
        log(f"testing on {len(vs)} {name} test queries")
        tuned = params_of(tuning[name]["lattice_best"]["key"])
        lam = tuning[name]["mmr_lambda"]
        methods = {
            "cosine": lambda v: cosine_topk(v.cos),
            "mmr_0.5": lambda v: mmr_topk(v.Y, v.cos, 0.5),
            "mmr_tuned": lambda v, lam=lam: mmr_topk(v.Y, v.cos, lam),
            "lattice_default_text": lambda v: lattice_topk(v.Y, v.psi, LatticeParams(), texts=v.texts,
                                                           query_text=v.qtext),
            "lattice_default_text_always": lambda v: lattice_topk(v.Y, v.psi, LatticeParams(coh_scope="always"),
                                                                  texts=v.texts, query_text=v.qtext),
            "lattice_default": lambda v: lattice_topk(v.Y, v.psi, LatticeParams()),
            "lattice_default_noscreen": lambda v: lattice_topk(v.Y, v.psi, LatticeParams(screen="off")),
            "lattice_recommended": lambda v: lattice_topk(v.Y, v.psi, rec_params),
            "lattice_tuned": lambda v, p=tuned: lattice_topk(v.Y, v.psi, p),
        }
        for pname, pc in proto_choice.items():
            methods[pname] = lambda v, kw=pc["variant"]: rank_from_state(settle_state(v.Y, v.psi, LatticeParams()),
                                                                          v.Y, 10, **kw)
        methods["control_twin_push5_no_lattice"] = lambda v: rank_from_state(cosine_state(v), v.Y, 10, **control_kw)
        if "dup_action" in PARAM_FIELDS:
            methods["control_dup_reorder_no_lattice"] = control_dup_reorder
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
                                    "lattice_default_text": LatticeParams().to_dict(),
                                    "lattice_default_text_always": LatticeParams(coh_scope="always").to_dict(),
                                    "lattice_default_noscreen": LatticeParams(screen="off").to_dict(),
                                    "lattice_recommended": rec_params.to_dict(), "lattice_tuned": tuned.to_dict(),
                                    **{pn: pc["variant"] for pn, pc in proto_choice.items()},
                                    "control_twin_push5_no_lattice": control_kw,
                                    "control_dup_reorder_no_lattice": CONTROL_REORDER}}
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
                  "objective": objective.__doc__.strip(), "selection": selection_gain.__doc__.strip(),
                  "ndcg_loss_penalty": NDCG_LOSS_PENALTY},
        "grids": {"mmr": list(MMR_GRID), "energy": ENERGY_GRID, "rank": RANK_GRID, "proto": PROTO_GRID},
        "recommended": {"params": rec_params.to_dict(), "worst_train_gain": rec_worst,
                        "mean_train_gain": rec_mean,
                        "per_dataset_train_gain": {n: tuning[n]["grid_gain"][rec_key] for n in tuning},
                        "default_per_dataset_train_gain": {n: tuning[n]["grid_gain"][default_key] for n in tuning}},
        "prototypes": proto_choice,
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
