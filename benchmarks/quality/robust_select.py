"""Choose the screening defaults on TRAIN splits only, across families (issue 27's protocol).

    .venv/bin/python benchmarks/quality/robust_select.py [--limit 300]

Each variant (screening settings of `LatticeParams`) runs on the TRAIN queries of the selection
families; the held-out families (HELD_OUT: no rule or default is chosen on them, not even on their
train split) are never read. Per variant and set: the relative change of the planted share@5
against cosine (attack sets), truth@5 and nDCG@10 differences (every set). The chosen variant
is the one with the fewest train goal failures, ties broken by the mean relative share change.
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

from oscillink_core import LatticeParams, rerank, textsignals  # noqa: E402

_ASKS = textsignals.asks

HELD_OUT = ("adv_gemma", "adv_quote", "gpe_fakegpt", "benign_templates")
SELECTION = tuple(n for n in list(ATTACKS) + list(CLEAN) if n not in HELD_OUT)
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "page_form_decides": {"page_form_decides": True},
    "page_form_never": {"page_form_decides": False},
    "untexted_q_m0.3": {"screen_untexted_questions": True},
    "untexted_q_m0.2": {"screen_untexted_questions": True, "screen_untexted_group_margin": 0.2},
    "untexted_q_m0.1": {"screen_untexted_questions": True, "screen_untexted_group_margin": 0.1},
    "untexted_m0.1": {"screen_untexted_group_margin": 0.1},
    "untexted_m0.2": {"screen_untexted_group_margin": 0.2},
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
            page_form = over.pop("page_form_decides", None)  # prototype: the lone echo's "asks" clause
            p = LatticeParams(**over)
            saved = textsignals.asks
            if page_form is False:
                textsignals.asks = lambda terms, text: False
            elif page_form is True:
                textsignals.asks = _ASKS
            try:
                tops = [np.asarray(rerank(v.psi, v.Y, k=10, params=p, texts=v.texts, query_text=v.qtext).indices)
                        for v in vs]
            finally:
                textsignals.asks = saved
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
        table[vname] = {"train_failures": fails, "mean_relative_share": float(np.mean(rel)) if rel else 0.0}
    best = min(table, key=lambda v: (len(table[v]["train_failures"]), table[v]["mean_relative_share"]))
    return {"chosen": best, "table": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--sets", nargs="+", default=list(SELECTION))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = ap.parse_args()
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
    out = RESULTS / "robustness_selection.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["# Screening defaults chosen on train (robust_select.py)", "",
             f"`{doc['command']}`; held out (never read): {', '.join(HELD_OUT)}. Chosen: **{pick['chosen']}**.", "",
             "| variant | train goal failures | mean relative share change |", "|---|---|---|"]
    for v, t in pick["table"].items():
        lines.append(f"| {v} `{json.dumps(variants[v])}` | {', '.join(t['train_failures']) or '-'} | "
                     f"{100 * t['mean_relative_share']:+.1f} % |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    log(f"chosen {pick['chosen']}; wrote {out}")


if __name__ == "__main__":
    main()
