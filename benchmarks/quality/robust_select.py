"""Choose the screening defaults on TRAIN splits only, across families (issue 27's protocol).

    .venv/bin/python benchmarks/quality/robust_select.py [--limit 300]

Each variant (screening settings of `LatticeParams`) runs on the TRAIN queries of the selection
families; the held-out families (HELD_OUT: no rule or default is chosen on them, not even on their
train split) are never read. Per variant and set: the relative change of the planted share@5
against cosine (attack sets), truth@5 and nDCG@10 differences (every set). The chosen variant
is the one with the fewest clean-set failures on train (an nDCG@10 loss below the goal where
nothing is planted), then the fewest attack-family failures, then the largest mean share drop.
Writes benchmarks/results/robustness_selection.json and .md; robustness.py then reports TEST.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from data import load_halueval_rows, prepare  # noqa: E402
from harness import views  # noqa: E402
from methods import cosine_topk  # noqa: E402
from robustness import ATTACKS, CLEAN, NDCG_GOAL, RESULTS, SHARE_GOAL, compare, metrics  # noqa: E402

from oscillink_core import LatticeParams, ranking, rerank  # noqa: E402

HELD_OUT = ("adv_gemma", "adv_quote", "gpe_fakegpt", "benign_templates")
SELECTION = tuple(n for n in list(ATTACKS) + list(CLEAN) if n not in HELD_OUT)
VARIANTS: dict[str, dict] = {
    "defaults": {},
    # `screening.screen(copies_once=)` (not a LatticeParams field; set here for the comparison):
    # False counts a page and its edition as two members of a tight group (the previous rule)
    "before_copies_once": {"screen_untexted_questions": False, "copies_once": False},
    "untexted_q_m0.3_copies_each": {"screen_untexted_questions": True, "copies_once": False},
    "untexted_q_m0.3_copies_once": {"screen_untexted_questions": True, "copies_once": True},
    "untexted_q_m0.2_copies_once": {"screen_untexted_questions": True, "screen_untexted_group_margin": 0.2,
                                    "copies_once": True},
    "untexted_q_m0.3": {"screen_untexted_questions": True},
    "untexted_q_m0.2": {"screen_untexted_questions": True, "screen_untexted_group_margin": 0.2},
    "untexted_q_m0.1": {"screen_untexted_questions": True, "screen_untexted_group_margin": 0.1},
    "untexted_m0.1": {"screen_untexted_group_margin": 0.1},
    "untexted_m0.2": {"screen_untexted_group_margin": 0.2},
    "tie_not_evidence": {"evidence_flags": ["tight_group", "query_targeted", "query_echo", "twin_conflict"]},
    "copies_once": {"dup_action": "demote"},
    "copies_once_untexted_q_m0.2": {"dup_action": "demote", "screen_untexted_questions": True,
                                    "screen_untexted_group_margin": 0.2},
    "group_max12": {"screen_group_max": 12},
    "group_max12_m0.1": {"screen_group_max": 12, "screen_untexted_group_margin": 0.1},
}


def run(names, limit: int, variants: dict[str, dict], log) -> dict:
    rows = load_halueval_rows()
    out: dict = {}
    for name in names:
        prep = prepare(name, rows)
        vs = views(prep, "train", limit)
        if not vs:
            continue
        base = metrics(prep, "train", vs, [cosine_topk(v.cos) for v in vs])
        out[name] = {"n": len(vs), "kind": "attack" if name in ATTACKS else "clean", "variants": {}}
        for vname, over in variants.items():
            over = dict(over)
            evidence = over.pop("evidence_flags", None)  # prototype: what counts as structure for the lattice
            copies_once = over.pop("copies_once", None)  # a screen() keyword, not a LatticeParams field
            p = LatticeParams(**over)
            saved, saved_kw = ranking.EVIDENCE_FLAGS, ranking.screen_kwargs
            if evidence is not None:
                ranking.EVIDENCE_FLAGS = tuple(evidence)
            if copies_once is not None:
                ranking.screen_kwargs = lambda params, _kw=saved_kw, _c=copies_once: {**_kw(params), "copies_once": _c}
            try:
                tops = [np.asarray(rerank(v.psi, v.Y, k=10, params=p, texts=v.texts, query_text=v.qtext).indices)
                        for v in vs]
            finally:
                ranking.EVIDENCE_FLAGS, ranking.screen_kwargs = saved, saved_kw
            c = compare(metrics(prep, "train", vs, tops), base, 500)
            out[name]["variants"][vname] = c
            share = c.get("trap_share@5", {})
            log(f"{name:18s} {vname:18s} share {share.get('cosine', 0):.3f}->{share.get('method', 0):.3f} "
                f"ndcg {c['ndcg@10']['diff']:+.4f} [{c['ndcg@10']['ci95'][0]:+.4f}] truth {c['truth@5']['diff']:+.3f}")
    return out


def choose(res: dict, variants) -> dict:
    table = {}
    for vname in variants:
        fails, rel = [], []
        for name, e in res.items():
            c = e["variants"][vname]
            if e["kind"] == "attack":
                r = c["trap_share@5"].get("relative", 0.0)
                rel.append(r)
                if r > SHARE_GOAL or c["truth@5"]["diff"] < 0:
                    fails.append(name)
            elif c["ndcg@10"]["ci95"][0] < NDCG_GOAL:
                fails.append(name)
        clean = [n for n in fails if res[n]["kind"] == "clean"]
        table[vname] = {"train_failures": fails, "clean_failures": clean,
                        "mean_relative_share": float(np.mean(rel)) if rel else 0.0}
    # a clean set's loss weighs first (the goal is no loss where nothing is planted), then the
    # number of attack families that miss the goal, then the mean share change
    best = min(table, key=lambda v: (len(table[v]["clean_failures"]), len(table[v]["train_failures"]),
                                     table[v]["mean_relative_share"]))
    return {"chosen": best, "table": table}


def _write(doc: dict, out) -> None:
    out.write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["# Screening settings compared on train (robust_select.py)", "",
             f"`{doc['command']}`; held out (never read): {', '.join(doc['held_out'])}. "
             f"Chosen: **{doc['chosen']}**.", "",
             "| variant | clean-set failures | attack-family failures | mean relative share change |",
             "|---|---|---|---|"]
    for v, t in doc["table"].items():
        attack = [n for n in t["train_failures"] if n not in t["clean_failures"]]
        lines.append(f"| {v} `{json.dumps(doc['variants'][v])}` | {', '.join(t['clean_failures']) or '-'} | "
                     f"{', '.join(attack) or '-'} | {100 * t['mean_relative_share']:+.1f} % |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--sets", nargs="+", default=list(SELECTION))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--rechoose", action="store_true",
                    help="re-apply the choice to the results in robustness_selection.json (no new runs)")
    args = ap.parse_args()
    out = RESULTS / "robustness_selection.json"
    if args.rechoose:
        doc = json.loads(out.read_text())
        doc.update(choose(doc["results"], doc["variants"]))
        _write(doc, out)
        print(f"chosen {doc['chosen']}; wrote {out}")
        return
    bad = [s for s in args.sets if s in HELD_OUT]
    if bad:
        raise SystemExit(f"held-out families are never used for selection: {bad}")
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    variants = {v: VARIANTS[v] for v in args.variants}
    res = run(args.sets, args.limit, variants, log)
    pick = choose(res, variants)
    doc = {"format": "oscillink-core/robustness-selection", "command": " ".join(["python"] + sys.argv),
           "held_out": list(HELD_OUT), "variants": variants, "limit": args.limit, **pick, "results": res}
    _write(doc, out)
    log(f"chosen {pick['chosen']}; wrote {out}")


if __name__ == "__main__":
    main()
