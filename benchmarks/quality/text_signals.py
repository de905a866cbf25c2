"""How often the text screening signals fire, by kind of candidate, on TRAIN queries.

For each dataset and the first ``--limit`` train queries, the cosine top 20 of the FAISS top 100
(the screening pool) is read with `oscillink_core.textsignals`:

* ``query_echo`` (`restates`, questions only): share of candidates of each kind that restate the
  question;
* twin pairs (cosine >= 0.85) that differ by a small substitution (`edit_lean` not None), counted by
  the kinds of the two sides and by the side the rule picks as edited toward the question.

Kinds: ``rel`` (relevant), ``counterfactual`` / ``lookalike`` / ``planted`` (generated traps of the
query itself), ``*_otherq`` (traps generated for another query), ``other``. This is the measurement
behind the text signals' defaults; it reads train queries only.

Run: ``python benchmarks/quality/text_signals.py [--limit 300]``; writes
``benchmarks/results/text_signals.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "quality"))
sys.path.insert(0, str(ROOT))

import data  # noqa: E402

from oscillink_core.textsignals import content_terms, edit_lean, is_question, restates, tokens  # noqa: E402

POOL = 20
TWIN = 0.85
DATASETS = ("halueval", "halueval_traps", "halueval_poison", "two_hop", "scifact")


def kind_of(did: str, qid: str, rel: set[str], trap_kind: dict[str, str]) -> str:
    if did in rel:
        return "rel"
    k = trap_kind.get(did)
    if k is None:
        return "other"
    n = qid[1:]
    own = did in (f"cf{n}", f"la{n}") or did.startswith(f"pz{n}_")
    return k if own else f"{k}_otherq"


def measure(name: str, rows: list[dict], limit: int) -> dict:
    prep = data.prepare(name, rows)
    sp = prep.splits["train"]
    s = sp["split"]
    echo: dict[str, list[float]] = defaultdict(list)
    pairs: Counter[str] = Counter()
    n_q = min(limit, len(s.qids))
    for qi in range(n_q):
        qid, q = s.qids[qi], s.qtexts[qi]
        q_tok, terms, asks = tokens(q), content_terms(q), is_question(q)
        cand = sp["cand"][qi][:POOL]
        rel = set(s.qrels[qid])
        kinds = [kind_of(prep.ds.doc_ids[j], qid, rel, prep.ds.trap_kind) for j in cand]
        toks = [tokens(prep.ds.doc_texts[j]) for j in cand]
        for k, t in zip(kinds, toks, strict=True):
            echo[k].append(float(asks and restates(q_tok, terms, t)))
        Y = prep.doc_emb[cand]
        S = Y @ Y.T
        for a, b in zip(*np.nonzero(np.triu(S >= TWIN, 1)), strict=True):
            lean = edit_lean(toks[a], toks[b], terms)
            if lean is None:
                continue
            pair = " / ".join(sorted((kinds[a], kinds[b])))
            picked = {"a": kinds[a], "b": kinds[b]}.get(lean, "neither (tie)")
            pairs[f"{pair} -> {picked}"] += 1
    rates = {k: {"n": len(v), "rate": float(np.mean(v))} for k, v in sorted(echo.items())}
    return {"n_queries": n_q, "echo_rate": rates, "substitution_twins": dict(pairs.most_common())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=300, help="train queries per dataset")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "text_signals.json"))
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = data.load_halueval_rows()
    out = {"format": "oscillink-core/text-signals", "command": "python benchmarks/quality/text_signals.py "
           + " ".join(sys.argv[1:] if argv is None else argv), "pool": POOL, "twin_threshold": TWIN,
           "split": "train", "datasets": {}}
    for name in a.datasets.split(","):
        res = measure(name, rows, a.limit)
        out["datasets"][name] = res
        print(f"\n{name} ({res['n_queries']} train queries)")
        print("  query_echo rate by kind: " + ", ".join(f"{k} {v['rate']:.3f} (n={v['n']})"
                                                      for k, v in res["echo_rate"].items()))
        for pair, c in list(res["substitution_twins"].items())[:8]:
            print(f"  substitution twins {pair}: {c}")
    out["runtime_s"] = round(time.perf_counter() - t0, 1)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n", "utf-8")
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
