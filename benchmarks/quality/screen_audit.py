"""What screening with texts does to relevant passages, and the variants compared on TRAIN.

Two measurements behind the text-screening defaults (`docs/text_screening.md`):

* ``relevant`` (TEST, first ``--test-limit`` questions of the clean and two-hop sets): the
  questions whose relevant passage `rerank(..., texts=, query_text=)` keeps out of the top 10 by
  a flag, counted by the flags, and the questions whose top 10 differs from the text-free run.
* ``variants`` (TRAIN, every train question of every dataset unless ``--train-limit``): nDCG@10
  with its paired bootstrap 95% interval against cosine, the share of questions with a relevant
  passage in the top 5 and the planted share of the top 5, for cosine, the defaults without
  texts, the defaults with texts, and the defaults with texts and one choice changed (the rule
  before the lone-echo and untexted-group choices, each of those choices undone alone (a
  question's groups without a text hit left to the text flags, the group margin 0.2 or the
  rule's 0.1 instead of 0.3), no group
  defer, the twin lean on any changed question word ``screen_twin_lean="any"``, the cosine
  order ``coh_weight=-1``, the whole lattice where a near-duplicate pair is the only structure
  ``coh_scope="evidence"``, the lattice on every query ``coh_scope="always"``), how many queries
  the lattice ranked (whole order / near-duplicate members only; the default leaves the cosine
  order where the pool shows no structure) and how many top-5 contexts differ from cosine's.

Run: ``python benchmarks/quality/screen_audit.py [--test-limit 600] [--train-limit N]``; writes
``benchmarks/results/screen_audit.json`` and prints both tables (about 6 min on 2 CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "quality"))
sys.path.insert(0, str(ROOT))

import data  # noqa: E402
from methods import cosine_topk  # noqa: E402

from oscillink_core import rerank  # noqa: E402
from oscillink_core.evaluation import evaluate_rankings, paired_bootstrap_ci  # noqa: E402

K = 10
RELEVANT_SETS = ("halueval", "two_hop")
VARIANTS = {  # name -> (params, with texts)
    "vectors only": (None, False),
    "texts (defaults)": (None, True),
    "texts, earlier rule (every echo decides, one group margin)":
        ({"screen_lone_echo": "decisive", "screen_untexted_group_margin": None, "screen_untexted_questions": True},
         True),
    "texts, every lone echo decides": ({"screen_lone_echo": "decisive"}, True),
    "texts, no lone echo decides": ({"screen_lone_echo": "info"}, True),
    "texts, lone echo rest 0.2": ({"screen_lone_echo_rest": 0.2}, True),
    "texts, a question's untexted groups left to the text flags (issue 17's rule)":
        ({"screen_untexted_questions": False}, True),
    "texts, one group margin (0.1)": ({"screen_untexted_group_margin": None}, True),
    "texts, group margin 0.2": ({"screen_untexted_group_margin": 0.2}, True),
    "texts, no group defer": ({"screen_group_defer": False}, True),
    "texts, twin lean on any question word": ({"screen_twin_lean": "any"}, True),
    "texts, coh_weight -1": ({"coh_weight": -1.0}, True),
    "texts, whole lattice on a near-duplicate pair (coh_scope evidence)": ({"coh_scope": "evidence"}, True),
    "texts, lattice on every query (coh_scope always)": ({"coh_scope": "always"}, True),
    "vectors only, coh_scope always": ({"coh_scope": "always"}, False),
}


def _inputs(prep: data.Prepared, part: str, qi: int):
    sp = prep.splits[part]
    cand = sp["cand"][qi]
    Y, psi = prep.doc_emb[cand], sp["q_emb"][qi]
    return Y, psi, [prep.ds.doc_ids[j] for j in cand], [prep.ds.doc_texts[j] for j in cand], sp["split"].qtexts[qi]


def relevant(name: str, limit: int) -> dict:
    prep = data.prepare(name)
    split = prep.splits["test"]["split"]
    n = min(limit, len(split.qids))
    kept_out: Counter[str] = Counter()
    differs = 0
    for qi in range(n):
        Y, psi, ids, texts, question = _inputs(prep, "test", qi)
        rel = set(split.qrels[split.qids[qi]])
        with_t = rerank(psi, Y, k=K, texts=texts, query_text=question)
        without = rerank(psi, Y, k=K)
        differs += list(with_t.indices) != list(without.indices)
        for s in with_t.screened or ():
            if ids[int(s["index"])] in rel:
                kept_out[", ".join(s["flags"])] += 1
    return {"n_questions": n, "relevant_kept_out_by_flags": dict(kept_out),
            "relevant_kept_out": int(sum(kept_out.values())), "rankings_differ_from_vectors_only": differs}


def variants(name: str, limit: int | None) -> dict:
    prep = data.prepare(name)
    split = prep.splits["train"]["split"]
    n = len(split.qids) if limit is None else min(limit, len(split.qids))
    qids = split.qids[:n]
    runs: dict[str, dict[str, list[str]]] = {"cosine": {}, **{v: {} for v in VARIANTS}}
    lattice_ranked, local_ranked, changed5 = Counter(), Counter(), Counter()
    for qi in range(n):
        Y, psi, ids, texts, question = _inputs(prep, "train", qi)
        cos = Y.astype(np.float64) @ psi.astype(np.float64)
        runs["cosine"][qids[qi]] = [ids[j] for j in cosine_topk(cos, K)]
        for v, (params, use_text) in VARIANTS.items():
            kw = {"texts": texts, "query_text": question} if use_text else {}
            res = rerank(psi, Y, k=K, params=params, **kw)
            runs[v][qids[qi]] = [ids[j] for j in res.indices]
            lattice_ranked[v] += res.receipt["screen"]["ranking"] == "lattice"
            local_ranked[v] += res.receipt["screen"]["ranking"] == "local"
            changed5[v] += runs[v][qids[qi]][:5] != runs["cosine"][qids[qi]][:5]
    qrels = {q: split.qrels[q] for q in qids}
    traps = prep.ds.traps
    out = {}
    evs = {v: evaluate_rankings(rk, qrels, traps={q: traps for q in qids} if traps else None, ks=(5, 10))
           for v, rk in runs.items()}
    for v, ev in evs.items():
        ci = paired_bootstrap_ci(evs["cosine"]["ndcg@10"], ev["ndcg@10"], n_boot=2000, seed=0)
        row = {"ndcg@10": float(np.mean(ev["ndcg@10"])),
               "ndcg@10_diff": float(ci.mean), "ndcg@10_diff_ci95": [float(ci.low), float(ci.high)],
               "relevant_in_top5": float(np.mean([bool(set(qrels[q]) & set(runs[v][q][:5])) for q in qids]))}
        if "trap_share@5" in ev:
            row["trap_share@5"] = float(np.mean(ev["trap_share@5"]))
        if v != "cosine":
            row["lattice_ranked"] = int(lattice_ranked[v])
            row["local_ranked"] = int(local_ranked[v])
            row["top5_differs_from_cosine"] = int(changed5[v])
        row["worse_than_cosine"] = int((ev["ndcg@10"] < evs["cosine"]["ndcg@10"] - 1e-12).sum())
        row["better_than_cosine"] = int((ev["ndcg@10"] > evs["cosine"]["ndcg@10"] + 1e-12).sum())
        out[v] = row
    return {"n_questions": n, "methods": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--test-limit", type=int, default=600)
    ap.add_argument("--train-limit", type=int, default=None, help="train questions per dataset (default: all)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "screen_audit.json"))
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    args = argv if argv is not None else sys.argv[1:]
    doc = {"format": "oscillink-core/screen-audit",
           "command": "python benchmarks/quality/screen_audit.py " + " ".join(args),
           "relevant": {}, "variants": {}}
    print(f"relevant passages kept out by a flag (test, first {a.test_limit} questions)")
    for name in RELEVANT_SETS:
        r = doc["relevant"][name] = relevant(name, a.test_limit)
        print(f"  {name:16s} n={r['n_questions']}  kept out {r['relevant_kept_out']} "
              f"{r['relevant_kept_out_by_flags']}  rankings differing from vectors only "
              f"{r['rankings_differ_from_vectors_only']}", flush=True)
    print(f"\nvariants (train, {'all' if a.train_limit is None else a.train_limit} questions): nDCG@10 "
          "(difference to cosine [95% CI]) / relevant in top 5 / planted share@5")
    with ProcessPoolExecutor(max_workers=2) as pool:  # one dataset per process, 2 CPUs
        futures = {name: pool.submit(variants, name, a.train_limit) for name in data.DATASETS}
        for name, fut in futures.items():
            r = doc["variants"][name] = fut.result()
            print(f"  {name} (n={r['n_questions']})")
            for v, row in r["methods"].items():
                lo, hi = row["ndcg@10_diff_ci95"]
                extra = f" / {row['trap_share@5']:.3f}" if "trap_share@5" in row else ""
                print(f"    {v:52s} {row['ndcg@10']:.4f} ({row['ndcg@10_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]) / "
                      f"{row['relevant_in_top5']:.3f}{extra}  worse/better {row['worse_than_cosine']}/"
                      f"{row['better_than_cosine']}  lattice ranked {row.get('lattice_ranked', '-')}"
                      f"/{row.get('local_ranked', '-')}  top 5 changed {row.get('top5_differs_from_cosine', '-')}",
                      flush=True)
    doc["runtime_s"] = round(time.perf_counter() - t0, 1)
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n", "utf-8")
    print(f"\nwrote {a.out} ({doc['runtime_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
