"""Choose the provenance policy's defaults on GPE TRAIN only, and test the attacker who read them.

    .venv/bin/python benchmarks/quality/provenance_select.py            # ~10 min once GPE is cached
    .venv/bin/python benchmarks/quality/provenance_select.py --limit 80 # a quick look

Selection (train only). A store that declares trusted sources knows the sources it held before
the attack, not the genuine pages that arrive with it. To measure that honestly on train, the
TRAIN claims are split in two halves by position: the trusted set is the hosts of the benign
evidence of half A, and the policies are measured on the claims of half B (their genuine pages
come partly from hosts half A never saw). Candidates: `rerank` with texts, query text, sources
and that trusted set, over a grid of ``provenance_threshold`` x ``provenance_min_echo`` of the
``corroboration`` policy, plus ``trusted_first``. Attack sets used for the choice: PoisonedRAG
and ATA (FakeGPT and ignore-instruction are held out); clean set: GPE clean. Rule: among the
settings whose GPE clean nDCG@10 lower bound is >= -0.005, the largest mean relative fall of the
planted share@5 over the two attack sets (ties: the larger threshold, then the larger min_echo:
the more conservative). If no setting meets the clean bound, the one with the best clean lower
bound is chosen (then the larger fall), and the report says so.

Adaptive attackers (test split, trusted set = the hosts of every TRAIN claim's benign evidence,
the defaults as chosen): the published plants; only the attacker's best 3 plants per claim (one
fewer than the default echo needs); every plant of a claim published from one new host; and
plants published on trusted hosts (the attacker controls a source the store trusts). Methods:
cosine, oscillink with texts (no sources), the ``corroboration`` default, ``trusted_first``.

Writes benchmarks/results/provenance_select.json and provenance_select.md.
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
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from data import prepare  # noqa: E402
from harness import QueryView, views  # noqa: E402
from methods import cosine_topk  # noqa: E402
from robustness import compare, metrics, trusted_hosts  # noqa: E402

from oscillink_core import LatticeParams, rerank  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CHOOSE_ATTACKS = ("gpe_poisonedrag", "gpe_ata")
CLEAN = "gpe_clean"
TEST_ATTACKS = ("gpe_poisonedrag", "gpe_ata", "gpe_fakegpt")
THRESHOLDS = (0.55, 0.6, 0.65, 0.7)
MIN_ECHO = (2, 3, 4)
NDCG_GOAL = -0.005


def _run(vs: list[QueryView], sources: dict, trusted: set[str], params: LatticeParams | None) -> list[np.ndarray]:
    if params is None:
        return [cosine_topk(v.cos) for v in vs]
    return [np.asarray(rerank(v.psi, v.Y, k=10, params=params, texts=v.texts, query_text=v.qtext,
                              sources=[sources.get(d) for d in v.ids] if trusted else None,
                              trusted_sources=trusted or None).indices) for v in vs]


def _half_b(prep):
    """(trusted hosts of half A's benign evidence, the views of half B) on the TRAIN split."""
    src = prep.ds.sources
    qids = prep.splits["train"]["split"].qids
    half_a = set(qids[0::2])
    trusted = {src[d] for q, rel in prep.ds.train.qrels.items() if q in half_a for d in rel if src.get(d)}
    return trusted, [v for v in views(prep, "train") if v.qid not in half_a]


def select(limit: int | None, n_boot: int, log) -> dict:
    grid = {f"corroboration t={t} m={m}": LatticeParams(provenance_threshold=t, provenance_min_echo=m)
            for t in THRESHOLDS for m in MIN_ECHO}
    grid["trusted_first"] = LatticeParams(provenance="trusted_first")
    rows: dict[str, dict] = {name: {} for name in grid}
    for set_name in (*CHOOSE_ATTACKS, CLEAN):
        prep = prepare(set_name)
        trusted, vs = _half_b(prep)
        vs = vs[:limit] if limit else vs
        base = metrics(prep, "train", vs, _run(vs, prep.ds.sources, set(), None))
        for name, p in grid.items():
            c = compare(metrics(prep, "train", vs, _run(vs, prep.ds.sources, trusted, p)), base, n_boot)
            rows[name][set_name] = c
        log(f"select {set_name}: {len(vs)} half-B train claims, {len(trusted)} trusted hosts")
    ok, fallback = [], []
    for name, r in rows.items():
        clean_lo = r[CLEAN]["ndcg@10"]["ci95"][0]
        rel = float(np.mean([r[a]["trap_share@5"]["relative"] for a in CHOOSE_ATTACKS]))
        r["_summary"] = {"clean_ndcg_lower": clean_lo, "mean_relative_share": rel, "clean_ok": clean_lo >= NDCG_GOAL}
        if name == "trusted_first":
            continue
        p = grid[name]
        tie = (-p.provenance_threshold, -p.provenance_min_echo, name)
        fallback.append((-clean_lo, rel, *tie))
        if clean_lo >= NDCG_GOAL:
            ok.append((rel, *tie))
    # no setting meets the clean goal: the one that costs clean data least (then the larger fall)
    chosen = min(ok)[-1] if ok else min(fallback)[-1]
    return {"grid": {n: {"threshold": p.provenance_threshold, "min_echo": p.provenance_min_echo,
                         "policy": p.provenance} for n, p in grid.items()},
            "rows": rows, "chosen": chosen,
            "chosen_params": ({"provenance_threshold": grid[chosen].provenance_threshold,
                               "provenance_min_echo": grid[chosen].provenance_min_echo} if chosen else None)}


def _few(v: QueryView, traps: set[str], keep: int) -> QueryView:
    """The view without the planted candidates beyond the attacker's best ``keep`` (by cosine)."""
    planted = [j for j in np.lexsort((np.arange(len(v.ids)), -v.cos)) if v.ids[j] in traps]
    drop = set(planted[keep:])
    idx = [j for j in range(len(v.ids)) if j not in drop]
    return QueryView(v.qid, v.Y[idx], v.cos[idx], v.psi, [v.ids[j] for j in idx],
                     [v.texts[j] for j in idx] if v.texts else None, v.qtext)


def adaptive(limit: int | None, n_boot: int, log) -> dict:
    default, strict = LatticeParams(), LatticeParams(provenance="trusted_first")
    out: dict = {}
    trusted_all = None
    for set_name in (*TEST_ATTACKS, CLEAN):
        prep = prepare(set_name)
        trusted_all = trusted_all or trusted_hosts(prep)
        traps = set(prep.ds.traps)
        src = dict(prep.ds.sources)
        vs_all = views(prep, "test", limit)
        variants = {"published": (vs_all, src)} if set_name == CLEAN else {
            "published": (vs_all, src),
            "best 3 plants only": ([_few(v, traps, 3) for v in vs_all], src),
            "every plant from one new host": (vs_all, _one_host(vs_all, traps, src)),
            "plants on a trusted host": (vs_all, _on_trusted(vs_all, traps, src, sorted(trusted_all))),
        }
        out[set_name] = {}
        for vname, (vs, sources) in variants.items():
            base = metrics(prep, "test", vs, _run(vs, sources, set(), None))
            res = {}
            for mname, p, tr in (("oscillink", default, set()), ("corroboration", default, trusted_all),
                                 ("trusted_first", strict, trusted_all)):
                res[mname] = compare(metrics(prep, "test", vs, _run(vs, sources, tr, p)), base, n_boot)
            out[set_name][vname] = {"n": len(vs), "methods": res}
            sh = res["corroboration"].get("trap_share@5", {})
            log(f"adaptive {set_name:16s} {vname:30s} n={len(vs)} share {sh.get('cosine', 0):.3f} -> "
                f"{sh.get('method', 0):.3f}; ndcg {res['corroboration']['ndcg@10']['diff']:+.4f}")
    return out


def _one_host(vs: list[QueryView], traps: set[str], src: dict) -> dict:
    """Sources where every plant of a claim carries the host of that claim's first plant."""
    out = dict(src)
    for v in vs:
        planted = [d for d in v.ids if d in traps]
        for d in planted:
            out[d] = src[planted[0]]
    return out


def _on_trusted(vs: list[QueryView], traps: set[str], src: dict, trusted: list[str]) -> dict:
    """Sources where each plant is published on a trusted host (a different one per plant)."""
    out = dict(src)
    for v in vs:
        for n, d in enumerate(x for x in v.ids if x in traps):
            out[d] = trusted[n % len(trusted)]
    return out


def report(doc: dict) -> str:
    s = doc["select"]
    lines = ["# Provenance policy: chosen on GPE train, attacked on test", "",
             f"Generated by `{doc['command']}` on {doc['date']} ({doc['runtime_s']:.0f} s).", "",
             "## Selection (train, half-B claims, trusted = hosts of half-A claims' benign evidence)", "",
             "| setting | PoisonedRAG share@5 | ATA share@5 | GPE clean nDCG@10 diff [95 % CI] | chosen |",
             "|---|---|---|---|---|"]
    for name, r in s["rows"].items():
        cells = [f"{r[a]['trap_share@5']['cosine']:.3f} -> {r[a]['trap_share@5']['method']:.3f} "
                 f"({100 * r[a]['trap_share@5']['relative']:+.0f} %)" for a in CHOOSE_ATTACKS]
        c = r[CLEAN]["ndcg@10"]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {c['diff']:+.4f} [{c['ci95'][0]:+.4f}, "
                     f"{c['ci95'][1]:+.4f}] | {'**chosen**' if name == s['chosen'] else ''} |")
    met = s["rows"][s["chosen"]]["_summary"]["clean_ok"]
    lines += ["", f"Chosen: {s['chosen']} (rule: clean lower bound >= {NDCG_GOAL}, then the largest mean fall"
              + ("" if met else "; no setting met the clean bound, so the one with the best clean lower bound")
              + f"). The package defaults: threshold {doc['defaults']['provenance_threshold']}, min_echo "
              f"{doc['defaults']['provenance_min_echo']}.", "",
              "## Adaptive attackers (test; trusted = hosts of every TRAIN claim's benign evidence)", "",
              "| set | attacker | n | cosine share@5 | oscillink (no sources) | corroboration (default) | "
              "trusted_first | truth@5 diff (corroboration) |", "|---|---|---|---|---|---|---|---|"]
    for set_name, variants in doc["adaptive"].items():
        for vname, e in variants.items():
            m = e["methods"]
            if "trap_share@5" not in m["corroboration"]:
                c = m["corroboration"]["ndcg@10"]
                t = m["trusted_first"]["ndcg@10"]
                o = m["oscillink"]["ndcg@10"]
                lines.append(f"| {set_name} | (clean) nDCG@10 diff | {e['n']} | | {o['diff']:+.4f} "
                             f"[{o['ci95'][0]:+.4f}] | {c['diff']:+.4f} [{c['ci95'][0]:+.4f}] | "
                             f"{t['diff']:+.4f} [{t['ci95'][0]:+.4f}] | |")
                continue

            def cell(x: dict) -> str:
                sh = x["trap_share@5"]
                return f"{sh['method']:.3f} ({100 * sh.get('relative', 0.0):+.0f} %)"

            lines.append(f"| {set_name} | {vname} | {e['n']} | {m['oscillink']['trap_share@5']['cosine']:.3f} | "
                         f"{cell(m['oscillink'])} | {cell(m['corroboration'])} | {cell(m['trusted_first'])} | "
                         f"{m['corroboration']['truth@5']['diff']:+.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="claims per split and set (default: all)")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--out", default=str(RESULTS / "provenance_select.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    sel = select(args.limit, args.n_boot, log)
    log(f"chosen: {sel['chosen']}; the package defaults: threshold {LatticeParams().provenance_threshold}, "
        f"min_echo {LatticeParams().provenance_min_echo}")
    doc = {"format": "oscillink-core/provenance-select", "version": 1, "command": " ".join(["python"] + sys.argv),
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "select": sel,
           "defaults": {"provenance_threshold": LatticeParams().provenance_threshold,
                        "provenance_min_echo": LatticeParams().provenance_min_echo},
           "adaptive": adaptive(args.limit, args.n_boot, log)}
    doc["runtime_s"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(report(doc))
    log(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
