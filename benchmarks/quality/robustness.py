"""Robustness: does screening hold where it was not tuned? Per family, train and test.

    .venv/bin/python benchmarks/quality/robustness.py                  # every family (~25 min once cached)
    .venv/bin/python benchmarks/quality/robustness.py --quick          # 150 queries per split
    .venv/bin/python benchmarks/quality/robustness.py --sets gpe_ata benign_faq

Families (all with the candidates' texts and the query's text passed, as the LangChain and
LlamaIndex adapters and the CLI pass them):

* published attacks: GPE PoisonedRAG, ATA, FakeGPT, ignore-instruction (`gpe_data.py`; claims are
  statements);
* our own attack sets: HaluEval PoisonedRAG-style plants and the counterfactual trap set
  (`data.py`; the sets the screening rules were written from);
* an adaptive attacker who read the docs (`families.py`): dropped word, swapped words,
  synonyms, statement form, entity-only, quote-and-change-one-clause, Gemma-written;
* clean and benign sets: HaluEval, SciFact, two-hop, GPE clean, FAQ pages, revised editions,
  template pages (`families.py`).

Methods over the same top-100 FAISS candidates: ``cosine``; ``oscillink`` (`rerank` with the
core's defaults, texts and query text passed); ``oscillink_vectors`` (the same without texts);
``oscillink_previous`` (the previous defaults: ``screen_untexted_questions=False``, a
question's tight groups that no text rule explained left to the echo rule, and every member of a
tight group counted, ``screening.screen(copies_once=False)``; the current defaults were chosen
on train by `robust_select.py`); ``oscillink_trusted`` on GPE only (``sources=`` the URL
hosts, ``trusted_sources=`` the hosts of the TRAIN claims' benign evidence: what a store that
ingested them before the attack would declare; the default policy ``provenance="corroboration"``,
chosen on train by `provenance_select.py`) and ``oscillink_trusted_first`` (the same with
``provenance="trusted_first"``).

Metrics on the 5-passage context and the top 10: planted share of the top 5 (``trap_share@5``),
truth in the context (``truth@5``: some relevant passage in the top 5), ``ndcg@10``. Every
difference is against cosine on the same queries with a paired bootstrap 95 % interval.
Goals checked (issue 27): planted share@5 down >= 30 % against cosine on every attack family
with truth@5 not lower; clean sets no nDCG@10 loss below -0.005 (bootstrap lower bound).
Writes benchmarks/results/robustness.json and robustness.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import families  # noqa: E402
import numpy as np  # noqa: E402
from data import load_halueval_rows, prepare  # noqa: E402
from harness import views  # noqa: E402
from methods import cosine_topk  # noqa: E402

from oscillink_core import LatticeParams, ranking, rerank  # noqa: E402
from oscillink_core.evaluation import evaluate_rankings, paired_bootstrap_ci  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
ATTACKS = {
    "gpe_poisonedrag": "GPE PoisonedRAG (published)",
    "gpe_ata": "GPE ATA (published)",
    "gpe_fakegpt": "GPE FakeGPT (published)",
    "gpe_ignore": "GPE ignore-instruction (published)",
    "halueval_poison": "HaluEval restating plants (rules written from it)",
    "halueval_traps": "HaluEval counterfactual + look-alike (rules written from it)",
    "adv_drop_word": "adaptive: one question word dropped",
    "adv_swap": "adaptive: words swapped",
    "adv_synonym": "adaptive: synonyms",
    "adv_statement": "adaptive: statement form",
    "adv_entity": "adaptive: names only",
    "adv_quote": "adaptive: genuine passage, one clause changed",
    "adv_gemma": "adaptive: written by Gemma 3 270M",
}
CLEAN = {
    "halueval": "HaluEval QA",
    "scifact": "SciFact",
    "two_hop": "two-hop (HotpotQA paragraphs)",
    "gpe_clean": "GPE clean (claims)",
    "benign_faq": "FAQ pages (Q: question A: page)",
    "benign_editions": "revised editions (both relevant)",
    "benign_templates": "template pages (one field differs)",
}
SHARE_GOAL = -0.30  # relative change of planted share@5
NDCG_GOAL = -0.005  # bootstrap lower bound of the nDCG@10 difference


def _methods(name: str, prep, trusted: set[str] | None) -> dict:
    p = LatticeParams()
    prev = LatticeParams(screen_untexted_questions=False)

    def previous(v):
        saved = ranking.screen_kwargs  # copies_once is a screen() keyword, not a LatticeParams field
        ranking.screen_kwargs = lambda params: {**saved(params), "copies_once": False}
        try:
            return np.asarray(rerank(v.psi, v.Y, k=10, params=prev, texts=v.texts, query_text=v.qtext).indices)
        finally:
            ranking.screen_kwargs = saved

    out = {
        "cosine": lambda v: cosine_topk(v.cos),
        "oscillink": lambda v: np.asarray(rerank(v.psi, v.Y, k=10, params=p, texts=v.texts,
                                                 query_text=v.qtext).indices),
        "oscillink_previous": previous,
        "oscillink_vectors": lambda v: np.asarray(rerank(v.psi, v.Y, k=10, params=p).indices),
    }
    if trusted is not None and prep.ds.sources:
        src = prep.ds.sources
        strict = LatticeParams(provenance="trusted_first")
        out["oscillink_trusted"] = lambda v: np.asarray(rerank(
            v.psi, v.Y, k=10, params=p, texts=v.texts, query_text=v.qtext,
            sources=[src.get(d) for d in v.ids], trusted_sources=trusted).indices)
        out["oscillink_trusted_first"] = lambda v: np.asarray(rerank(
            v.psi, v.Y, k=10, params=strict, texts=v.texts, query_text=v.qtext,
            sources=[src.get(d) for d in v.ids], trusted_sources=trusted).indices)
    return out


def trusted_hosts(prep) -> set[str]:
    """Hosts of the TRAIN claims' relevant (benign) evidence: the sources a store held before."""
    src = prep.ds.sources
    return {src[d] for rel in prep.ds.train.qrels.values() for d in rel if src.get(d)}


def metrics(prep, part: str, vs, tops) -> dict[str, np.ndarray]:
    split = prep.splits[part]["split"]
    rankings = {v.qid: [v.ids[j] for j in t] for v, t in zip(vs, tops, strict=True)}
    traps = {v.qid: prep.ds.traps for v in vs} if prep.ds.traps else None
    m = evaluate_rankings(rankings, split.qrels, traps=traps, ks=(5, 10))
    m["truth@5"] = np.array([float(bool(set(r[:5]) & set(split.qrels[q]))) for q, r in rankings.items()])
    if prep.ds.name == "two_hop":
        m["both@5"] = np.array([float(set(split.qrels[q]) <= set(r[:5])) for q, r in rankings.items()])
    return m


def compare(m: dict, base: dict, n_boot: int) -> dict:
    out = {}
    for key in ("trap_share@5", "truth@5", "ndcg@10", "recall@10", "both@5"):
        if key not in m:
            continue
        ci = paired_bootstrap_ci(base[key], m[key], n_boot=n_boot, seed=0)
        entry = {"cosine": float(base[key].mean()), "method": float(m[key].mean()), "diff": ci.mean,
                 "ci95": [ci.low, ci.high]}
        if key == "trap_share@5" and entry["cosine"] > 0:
            entry["relative"] = entry["diff"] / entry["cosine"]
        out[key] = entry
    return out


def goal(name: str, cmp: dict) -> dict:
    if name in ATTACKS:
        rel = cmp["trap_share@5"].get("relative", 0.0)
        truth_ok = cmp["truth@5"]["diff"] >= 0.0 or cmp["truth@5"]["ci95"][0] > -0.005
        return {"goal": "planted share@5 -30 %, truth@5 not lower", "met": bool(rel <= SHARE_GOAL and truth_ok),
                "relative_share_change": rel}
    lo = cmp["ndcg@10"]["ci95"][0]
    return {"goal": "nDCG@10 lower bound >= -0.005", "met": bool(lo >= NDCG_GOAL), "ndcg_lower_bound": lo}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(ATTACKS) + list(CLEAN))
    ap.add_argument("--limit", type=int, default=None, help="queries per split (default: all)")
    ap.add_argument("--train-limit", type=int, default=400)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="150 queries per split, 500 bootstrap draws")
    ap.add_argument("--out", default=str(RESULTS / "robustness.json"))
    ap.add_argument("--methods", nargs="+", default=None,
                    help="run only these methods besides cosine (default: all); --merge unions them per set")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="combine the results of runs over disjoint sets (in this order) into --out")
    args = ap.parse_args()
    if args.merge:
        docs = [json.loads(Path(f).read_text()) for f in args.merge]
        doc = {**docs[0], "command": " && ".join(d["command"] for d in docs),
               "date": max(d["date"] for d in docs),  # the latest run's (ISO 8601 compares as text)
               "runtime_s": round(sum(d["runtime_s"] for d in docs), 1),
               "trusted_sources_gpe": next((d["trusted_sources_gpe"] for d in docs if d["trusted_sources_gpe"]), None),
               "results": _merge_results(docs)}
        out = Path(args.out)
        out.write_text(json.dumps(doc, indent=1) + "\n")
        out.with_suffix(".md").write_text(report(doc))
        print(f"wrote {out} and {out.with_suffix('.md')}")
        return
    if args.quick:
        args.limit, args.train_limit, args.n_boot = 150, 150, 500
    if "adv_gemma" in args.sets and not families.GEMMA_CACHE.exists():
        ap.error(f"adv_gemma reads the Gemma-written plants from {families.GEMMA_CACHE}, which does not exist: "
                 "write them first (`.venv/bin/python benchmarks/quality/families.py --gemma`, about 20 min) "
                 "or leave the set out (--sets)")
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    rows = load_halueval_rows()
    trusted_gpe = None
    results = {}
    for name in args.sets:
        prep = prepare(name, rows)
        if name.startswith("gpe_") and trusted_gpe is None:
            trusted_gpe = trusted_hosts(prep)
        entry = {"label": ATTACKS.get(name) or CLEAN.get(name, name), "kind": "attack" if name in ATTACKS else "clean",
                 "description": prep.ds.description, "splits": {}}
        for part, lim in (("train", args.train_limit), ("test", args.limit)):
            if lim == 0:  # --train-limit 0: test only
                continue
            vs = views(prep, part, lim)
            if not vs:
                continue
            per, ms = {}, {}
            todo = _methods(name, prep, trusted_gpe if name.startswith("gpe_") else None)
            if args.methods:
                todo = {m: f for m, f in todo.items() if m == "cosine" or m in args.methods}
            for mname, fn in todo.items():
                t1 = time.perf_counter()
                tops = [fn(v) for v in vs]
                ms[mname] = 1e3 * (time.perf_counter() - t1) / len(vs)
                per[mname] = metrics(prep, part, vs, tops)
            base = per["cosine"]
            entry["splits"][part] = {
                "n": len(vs),
                "methods": {m: {"compare": compare(per[m], base, args.n_boot), "ms_per_query": ms[m],
                                **({"goal": goal(name, compare(per[m], base, args.n_boot))} if m != "cosine" else {})}
                            for m in per if m != "cosine"},
                "cosine_ms_per_query": ms["cosine"],
            }
            o = next(iter(entry["splits"][part]["methods"].values()))["compare"]
            msg = (f"share@5 {o['trap_share@5']['cosine']:.3f}->{o['trap_share@5']['method']:.3f}"
                   if "trap_share@5" in o else "")
            log(f"{name:18s} {part:5s} n={len(vs):4d} {msg} ndcg@10 {o['ndcg@10']['diff']:+.4f} "
                f"[{o['ndcg@10']['ci95'][0]:+.4f}, {o['ndcg@10']['ci95'][1]:+.4f}] truth@5 {o['truth@5']['diff']:+.3f}")
        results[name] = entry
    doc = {"format": "oscillink-core/robustness", "version": 1, "command": " ".join(["python"] + sys.argv),
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "runtime_s": round(time.perf_counter() - t0, 1), "params": LatticeParams().to_dict(),
           "n_boot": args.n_boot, "goals": {"share_relative": SHARE_GOAL, "ndcg_lower_bound": NDCG_GOAL},
           "trusted_sources_gpe": sorted(trusted_gpe) if trusted_gpe else None, "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(report(doc))
    log(f"wrote {out} and {out.with_suffix('.md')}")


def _merge_results(docs: list[dict]) -> dict:
    """Union of the sets of several runs; a set in more than one run gets the union of its methods."""
    out: dict = {}
    for d in docs:
        for name, e in d["results"].items():
            if name not in out:
                out[name] = json.loads(json.dumps(e))
                continue
            for part, sp in e["splits"].items():
                mine = out[name]["splits"].setdefault(part, sp)
                if mine is not sp:
                    mine["methods"].update(sp["methods"])
    return out


def _fmt_ci(e: dict) -> str:
    return f"{e['diff']:+.3f} [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}]"


def _trusted_cell(m: dict | None, key: str) -> str:
    """A trusted-sources method's cell: the planted share (attacks) or the nDCG@10 difference, with its goal."""
    if not m:
        return "-"
    c = m["compare"][key]
    if key == "trap_share@5":
        return f"{c['method']:.3f} ({100 * c.get('relative', 0.0):+.0f} %)"
    return f"{_fmt_ci(c)} ({'met' if m['goal']['met'] else 'NOT met'})"


def report(doc: dict) -> str:
    lines = ["# Robustness: where the screening was not tuned", "",
             f"Generated by `{doc['command']}` on {doc['date']}. Test split unless marked; the train split "
             "is in robustness.json. Texts and the query text passed (as the adapters do); differences "
             "against cosine on the same queries, paired bootstrap 95 % intervals.", "",
             "## Attack families: planted share of the 5-passage context", "",
             "| family | n | cosine | oscillink | change | truth@5 diff | previous defaults | vectors only | "
             "trusted sources (corroboration) | trusted sources (trusted_first) | goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in doc["results"].values():
        if e["kind"] != "attack" or "oscillink" not in e["splits"].get("test", {}).get("methods", {}):
            continue
        s = e["splits"]["test"]
        o = s["methods"]["oscillink"]
        c = o["compare"]["trap_share@5"]
        vec = s["methods"]["oscillink_vectors"]["compare"]["trap_share@5"]["method"]
        trs = [_trusted_cell(s["methods"].get(m), "trap_share@5") for m in ("oscillink_trusted",
                                                                            "oscillink_trusted_first")]
        met = "met" if o["goal"]["met"] else "NOT met"
        prv = _trusted_cell(s["methods"].get("oscillink_previous"), "trap_share@5")
        lines.append(f"| {e['label']} | {s['n']} | {c['cosine']:.3f} | {c['method']:.3f} | "
                     f"{100 * c.get('relative', 0.0):+.0f} % | {_fmt_ci(o['compare']['truth@5'])} | {prv} | "
                     f"{vec:.3f} | {trs[0]} | {trs[1]} | {met} |")
    lines += ["", "## Clean and benign sets: nDCG@10", "",
              "| set | n | cosine | oscillink diff | truth@5 diff | previous defaults diff | vectors only diff | "
              "trusted sources (corroboration) | trusted sources (trusted_first) | goal |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for e in doc["results"].values():
        if e["kind"] != "clean" or "oscillink" not in e["splits"].get("test", {}).get("methods", {}):
            continue
        s = e["splits"]["test"]
        o = s["methods"]["oscillink"]
        c = o["compare"]["ndcg@10"]
        vec = s["methods"]["oscillink_vectors"]["compare"]["ndcg@10"]
        trs = [_trusted_cell(s["methods"].get(m), "ndcg@10") for m in ("oscillink_trusted", "oscillink_trusted_first")]
        met = "met" if o["goal"]["met"] else "NOT met"
        prv = s["methods"].get("oscillink_previous")
        prv = _fmt_ci(prv["compare"]["ndcg@10"]) if prv else "-"
        lines.append(f"| {e['label']} | {s['n']} | {c['cosine']:.4f} | {_fmt_ci(c)} | "
                     f"{_fmt_ci(o['compare']['truth@5'])} | {prv} | {_fmt_ci(vec)} | {trs[0]} | {trs[1]} | {met} |")
    lines += ["", "## Time per query (mean over the test queries, 100 candidates, this run's machine)", "",
              "| set | cosine ms | oscillink ms (texts) | vectors only ms |", "|---|---|---|---|"]
    for name, e in doc["results"].items():
        if "oscillink" not in e["splits"].get("test", {}).get("methods", {}):
            continue
        s = e["splits"]["test"]
        lines.append(f"| {name} | {s['cosine_ms_per_query']:.2f} | {s['methods']['oscillink']['ms_per_query']:.1f} | "
                     f"{s['methods']['oscillink_vectors']['ms_per_query']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
