"""End-to-end benchmark: a real LLM answers from each reranker's 5-passage context.

Per test question (a seeded sample, ``--n`` per dataset): FAISS top 100 (exact inner product over
the packaged all-MiniLM-L6-v2, `benchmarks/quality/data.py`), rerank to a 5-passage context with

* ``cosine``: the first-stage order;
* ``mmr``: textbook MMR, lambda 0.7 (fixed, not tuned);
* ``oscillink``: ``oscillink_core.rerank`` with its defaults (``params=None``), given the
  passages' texts and the question as the LangChain and LlamaIndex adapters give them (so the
  text screening signals run);
* ``oscillink_drop``: the same with ``screen="drop"`` (candidates with a decisive flag leave the
  context; ``--drop-params`` overrides the params),
* ``oscillink_tuned``: ``rerank`` with a profile that `oscillink_core.tuning.tune` fitted on the
  dataset's first ``--tune-limit`` train questions (FAISS top 100, texts and question included,
  objective nDCG@10 minus the planted share of the 5-passage context, 5-fold cross-validation,
  the default grid; the tuner keeps the defaults unless the held-out gain's interval is above
  zero). The profile's changes and its cross-validated gain are recorded per dataset,
* ``cosine_isolated`` / ``oscillink_isolated`` (not run by default; ``--methods``): the same
  5-passage context as ``cosine`` / ``oscillink``, read by isolate-then-aggregate
  (`oscillink_core.app.aggregate`): Gemma answers from each passage alone and the answer with the
  most independent support wins; passages whose MiniLM cosine is ``>= --near-duplicate`` (0.9)
  count once (the datasets carry no source labels). Retrieval metrics are those of the base
  method; per question the record holds every passage's answer, the votes and the groups,

then ask Gemma 3 270M (`oscillink_core.app.llm`, greedy, the few-shot QA prompt, the passages in
rank order) and score the answer against HaluEval's right answer:

* ``em`` / ``f1``: SQuAD-style normalised exact match and token F1; ``contains``: the normalised
  right answer occurs in the normalised answer;
* ``follows_false``: the answer takes the planted false value. HaluEval's hallucinated answers are
  often whole sentences that repeat the question, so the test compares the answer's tokens with
  the tokens that tell the two answers apart: W = tokens of the false answer that are in neither
  the right answer nor the question, R = tokens of the right answer not in the false one; the
  answer follows the falsehood when it holds a W token and covers a larger share of W than of R.
  Reported over every sampled question (0 when nothing false was read) and over the questions
  whose context held a planted passage (``follows_false|planted``);
* retrieval on the same runs: nDCG@10, recall@10, planted share of the 5-passage context
  (``trap_share@5``), any planted passage in it (``any_trap@5``), both paragraphs in it (two-hop
  ``both@5``).

Every difference to cosine comes with a paired bootstrap 95% interval over the sampled questions.
SciFact has no short answers: retrieval metrics only, no LLM.

Answers are cached by prompt hash in the checkout's git-ignored ``.cache/llm_answers/``, so
identical contexts cost one generation and a rerun costs little more than the tuning of
``oscillink_tuned`` (2 to 20 minutes per dataset on 2 busy cores: the trap set's text twin rule
compares many near-copies; ``--tune-limit`` trades it for fewer train questions).

Run: ``python benchmarks/e2e/run.py [--n 20] [--datasets halueval,halueval_traps,...]
[--methods cosine,oscillink,cosine_isolated,oscillink_isolated]``; writes
``benchmarks/results/e2e.json`` and ``e2e.md``. Runs over disjoint datasets can go in parallel
(``--out`` each) and be combined with ``--merge A.json B.json ...``; the merged file records every
command. The output is rewritten after every question, so an interrupted run leaves a valid file
over the questions done so far (``complete: false`` and its ``n_sampled`` say so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import string
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # FAISS / BLAS threads spin badly on a shared CPU

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "quality"))
sys.path.insert(0, str(ROOT))

import data  # noqa: E402
from methods import cosine_topk, mmr_topk  # noqa: E402

from oscillink_core import rerank  # noqa: E402
from oscillink_core.evaluation import evaluate_rankings, paired_bootstrap_ci  # noqa: E402

LLM_DATASETS = ("halueval", "halueval_traps", "halueval_poison", "two_hop")
DEFAULT_DATASETS = LLM_DATASETS + ("scifact",)
METHODS = ("cosine", "mmr", "oscillink", "oscillink_drop", "oscillink_tuned", "cosine_isolated", "oscillink_isolated")
DEFAULT_METHODS = METHODS[:5]
ISOLATED = {"cosine_isolated": "cosine", "oscillink_isolated": "oscillink"}  # method -> the context it reads
NEAR_DUPLICATE = 0.9
MMR_LAMBDA = 0.7
K_CONTEXT = 5
K_EVAL = 10
RESULTS = ROOT / "benchmarks" / "results"
ANSWER_CACHE = ROOT / ".cache" / "llm_answers"


# ----------------------------------------------------------------------------- answer scoring
def normalize(s: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(pred: str, gold: str) -> float:
    return float(normalize(pred) == normalize(gold))


def token_f1(pred: str, gold: str) -> float:
    p, g = normalize(pred).split(), normalize(gold).split()
    if not p or not g:
        return float(p == g)
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


def contains(pred: str, gold: str) -> float:
    g = normalize(gold)
    return float(bool(g) and f" {g} " in f" {normalize(pred)} ")


def follows_false(pred: str, right: str, wrong: str, question: str) -> float:
    """1.0 when the answer takes the false value (see the module docstring for the rule)."""
    p = set(normalize(pred).split())
    r, w, q = (set(normalize(x).split()) for x in (right, wrong, question))
    w_only = w - r - q
    r_only = r - w
    if not w_only or not p & w_only:
        return 0.0
    share_w = len(p & w_only) / len(w_only)
    share_r = len(p & r_only) / len(r_only) if r_only else 0.0
    return float(share_w > share_r)


# ----------------------------------------------------------------------------- contexts
def tuned_params(prep: data.Prepared, limit: int):
    """`tune` on the first ``limit`` train questions of ``prep`` (see the module docstring)."""
    from oscillink_core.tuning import LabelledQuery, tune

    sp = prep.splits["train"]
    split = sp["split"]
    traps = prep.ds.traps or set()
    queries = []
    for qi in range(min(limit, len(split.qids))):
        cand = sp["cand"][qi]
        ids = [prep.ds.doc_ids[j] for j in cand]
        queries.append(LabelledQuery(sp["q_emb"][qi], prep.doc_emb[cand], ids=ids,
                                     relevance=split.qrels[split.qids[qi]], traps=set(ids) & traps,
                                     qid=split.qids[qi], texts=[prep.ds.doc_texts[j] for j in cand],
                                     query_text=split.qtexts[qi]))
    res = tune(queries, metric="ndcg@10", k=K_CONTEXT, folds=5, seed=0)
    gain = res.cv["gain"]["objective"]
    base = res.base.to_dict()
    searched = {k: v for k, v in res.searched.to_dict().items() if base[k] != v}
    info = {"n_train_questions": len(queries), "changed": dict(res.changed), "searched": searched,
            "fell_back": res.fell_back,
            "cv_gain_objective": {"mean": float(gain["mean"]), "ci95": [float(gain["low"]), float(gain["high"])]},
            "seconds": round(res.elapsed_s, 1)}
    return res.params, info


def contexts(prep: data.Prepared, qi: int, drop_params: dict, question: str, tuned=None,
             methods=DEFAULT_METHODS) -> dict[str, dict]:
    """Top-10 index lists (into the 100 candidates) per method, plus oscillink's flags (the
    reranks of ``methods`` and of the contexts their isolated variants read)."""
    sp = prep.splits["test"]
    cand = sp["cand"][qi]
    Y = prep.doc_emb[cand]
    psi = sp["q_emb"][qi]
    cos = Y.astype(np.float64) @ psi.astype(np.float64)
    ids = [prep.ds.doc_ids[j] for j in cand]
    cand_texts = [prep.ds.doc_texts[j] for j in cand]
    out = {"cosine": {"top": cosine_topk(cos, K_EVAL).tolist()},
           "mmr": {"top": mmr_topk(Y, cos, MMR_LAMBDA, K_EVAL).tolist()}}
    needed = {ISOLATED.get(m, m) for m in methods}
    for name, params in (("oscillink", None), ("oscillink_drop", drop_params), ("oscillink_tuned", tuned)):
        if name not in needed:
            continue
        res = rerank(psi, Y, k=K_EVAL, ids=list(range(len(ids))), params=params,
                     texts=cand_texts, query_text=question)
        flags = {int(it.id): list(getattr(it, "flags", ()) or ()) for it in res}
        actions = {int(it.id): getattr(it, "action", "kept") for it in res}
        screened = [dict(s) for s in getattr(res, "screened", ()) or ()]
        out[name] = {"top": [int(i) for i in res.indices], "flags": flags, "actions": actions,
                     "screened": [{"id": ids[int(s["index"])], "flags": list(s.get("flags", ())),
                                   "action": s.get("action")} for s in screened if "index" in s]}
    for m in out.values():
        m["ids"] = [ids[j] for j in m["top"]]
    return out


def sample_indices(n_test: int, n: int, seed: int) -> list[int]:
    """The first ``n`` of a seeded permutation of the test questions: samples are nested (the
    sample of 20 holds the sample of 10), so a bigger run reuses every cached answer."""
    return np.random.default_rng(seed).permutation(n_test)[:n].tolist()


# ----------------------------------------------------------------------------- one dataset
def run_dataset(name: str, rows: list[dict], n: int, seed: int, drop_params: dict, cache, n_boot: int,
                use_llm: bool, on_progress=None, tune_limit: int = 200, methods=DEFAULT_METHODS,
                near_duplicate: float = NEAR_DUPLICATE) -> dict:
    """One dataset over the first ``n`` questions of the seeded sample. ``on_progress(partial)`` is
    called after each question with the result so far (so an interrupted run leaves a valid file).
    ``methods``: the methods to run (cosine first; every difference is to cosine)."""
    from oscillink_core.app import llm
    from oscillink_core.app.aggregate import isolate_then_aggregate

    METHODS = tuple(methods)  # noqa: N806 - shadows the module's full list on purpose
    if METHODS[:1] != ("cosine",):
        raise ValueError(f"methods must start with cosine (the reference), got {METHODS}")

    t0 = time.perf_counter()
    prep = data.prepare(name, rows)
    split = prep.splits["test"]["split"]
    picked = sample_indices(len(split.qids), n, seed)
    tuned, tuned_info = None, None
    if "oscillink_tuned" in METHODS:
        print(f"{name}: tuning on {tune_limit} train questions ...", flush=True)
        tuned, tuned_info = tuned_params(prep, tune_limit)
        print(f"{name}: tuned {tuned_info}", flush=True)
    texts = dict(zip(prep.ds.doc_ids, prep.ds.doc_texts, strict=True))
    traps = prep.ds.traps
    per = {m: {"em": [], "f1": [], "contains": [], "follows_false": [], "planted_in_context": [], "both@5": []}
           for m in METHODS}
    rankings: dict[str, dict[str, list[str]]] = {m: {} for m in METHODS}
    records = []
    t_llm = 0.0
    def finish(done: list[int]) -> dict:
        """The dataset's result over the first len(done) questions of the sample."""
        n_done = len(done)
        per_d = {m: {k: v[:n_done] for k, v in per[m].items()} for m in METHODS}
        rankings_d = {m: {split.qids[i]: rankings[m][split.qids[i]] for i in done} for m in METHODS}
        qids = [split.qids[i] for i in done]
        qrels = {q: split.qrels[q] for q in qids}
        metrics: dict[str, dict[str, np.ndarray]] = {}
        for m in METHODS:
            ev = evaluate_rankings(rankings_d[m], qrels, traps={q: traps for q in qids} if traps else None, ks=(5, 10))
            mm = {key: np.asarray(ev[key], dtype=float)
                  for key in ("ndcg@10", "recall@10", "trap_share@5", "any_trap@5") if key in ev}
            if name == "two_hop":
                mm["both@5"] = np.asarray(per_d[m]["both@5"])
            for key in ("em", "f1", "contains", "follows_false"):
                if per_d[m][key]:
                    mm[key] = np.asarray(per_d[m][key])
            metrics[m] = mm
        summary: dict[str, dict] = {}
        for m in METHODS:
            summary[m] = {}
            for key, v in metrics[m].items():
                entry = {"mean": float(v.mean()), "n": int(v.size)}
                if m != "cosine":
                    ci = paired_bootstrap_ci(metrics["cosine"][key], v, n_boot=n_boot, seed=0)
                    entry.update(diff_vs_cosine=float(ci.mean), ci95=[float(ci.low), float(ci.high)])
                base = ISOLATED.get(m)
                if base in metrics and base != "cosine" and key in ("em", "f1", "contains", "follows_false"):
                    ci = paired_bootstrap_ci(metrics[base][key], v, n_boot=n_boot, seed=0)
                    entry.update(diff_vs_base=float(ci.mean), ci95_vs_base=[float(ci.low), float(ci.high)])
                summary[m][key] = entry
            if metrics[m].get("follows_false") is not None:
                mask = np.asarray(per_d[m]["planted_in_context"], dtype=bool)
                ff = metrics[m]["follows_false"]
                summary[m]["follows_false|planted"] = {"mean": float(ff[mask].mean()) if mask.any() else None,
                                                       "n": int(mask.sum())}
        return {"dataset": name, "description": prep.ds.description, "n_test_questions": len(split.qids),
                "n_sampled": len(done), "complete": len(done) == len(picked),
                "sample": f"first {len(done)} of a seeded permutation (numpy default_rng({seed})) of the "
                          f"{len(split.qids)} test questions",
                "llm": use_llm, "methods": list(METHODS), "tuned": tuned_info, "summary": summary,
                "records": records[:n_done],
                "llm_seconds": round(t_llm, 1),
                "seconds": round(time.perf_counter() - t0, 1)}

    for j, qi in enumerate(picked):
        qid = split.qids[qi]
        question = split.qtexts[qi]
        ctx = contexts(prep, qi, drop_params, question, tuned, METHODS)
        cand = prep.splits["test"]["cand"][qi]
        rec = {"qid": qid, "question": question, "methods": {}}
        row = rows[int(qid[1:])] if qid.startswith("q") and qid[1:].isdigit() else None
        if use_llm and row is not None:
            rec["right_answer"] = row["right_answer"]
            rec["hallucinated_answer"] = row["hallucinated_answer"]
        rel = set(split.qrels[qid])
        for m in METHODS:
            base = ISOLATED.get(m, m)
            ids5 = ctx[base]["ids"][:K_CONTEXT]
            rankings[m][qid] = ctx[base]["ids"]
            planted = [i for i in ids5 if i in traps]
            per[m]["planted_in_context"].append(float(bool(planted)))
            per[m]["both@5"].append(float(rel <= set(ids5)))
            mrec = {"context": ids5, "planted": planted}
            if m.startswith("oscillink") and m not in ISOLATED:
                top5 = ctx[m]["top"][:K_CONTEXT]
                mrec["flags"] = {ctx[m]["ids"][t]: ctx[m]["flags"].get(ix, []) for t, ix in enumerate(top5)
                                 if ctx[m]["flags"].get(ix)}
                mrec["screened"] = ctx[m]["screened"]
            if use_llm and row is not None:
                t1 = time.perf_counter()
                if m in ISOLATED:
                    emb5 = prep.doc_emb[cand[ctx[base]["top"][:K_CONTEXT]]]
                    agg = isolate_then_aggregate(question, [texts[i] for i in ids5], embeddings=emb5,
                                                 near_duplicate=near_duplicate, cache=cache)
                    ans = agg.answer
                    mrec["isolated"] = {"answers": list(agg.answers),
                                        "votes": [{"answer": v.answer, "passages": list(v.passages),
                                                   "support": v.support} for v in agg.votes],
                                        "counted_together": [list(g) for g in agg.counted_together]}
                else:
                    ans = llm.answer(question, [texts[i] for i in ids5], cache=cache)
                t_llm += time.perf_counter() - t1
                right, wrong = row["right_answer"], row["hallucinated_answer"]
                sc = {"em": exact_match(ans, right), "f1": token_f1(ans, right), "contains": contains(ans, right),
                      "follows_false": follows_false(ans, right, wrong, question)}
                for key, v in sc.items():
                    per[m][key].append(v)
                mrec.update(answer=ans, **sc)
            rec["methods"][m] = mrec
        records.append(rec)
        if on_progress is not None:
            on_progress(finish(picked[: j + 1]))
        if use_llm:
            print(f"  {name} {j + 1}/{len(picked)} {qid}: llm {t_llm:.0f} s, cache hits {cache.hits} / "
                  f"misses {cache.misses}", flush=True)
    return finish(picked)


# ----------------------------------------------------------------------------- report
ROW_KEYS = (("f1", "LLM F1"), ("em", "LLM EM"), ("contains", "LLM contains"), ("follows_false", "follows falsehood"),
            ("trap_share@5", "planted share@5"), ("both@5", "both@5"), ("ndcg@10", "nDCG@10"))


def markdown(doc: dict) -> str:
    lines = ["# End-to-end: Gemma 3 270M answers from each reranker's 5-passage context", "",
             f"Command: `{doc['command']}`  ", f"Date: {doc['date']}; git {doc['git_commit']}; "
             f"{doc['runtime_s']:.0f} s; answers {doc['answer_cache']['misses']} generated, "
             f"{doc['answer_cache']['hits']} from the cache.", "",
             "Each cell: mean (difference to cosine, paired bootstrap 95% interval). "
             f"`oscillink_drop` params: `{json.dumps(doc['drop_params'])}`. `oscillink_tuned`: the profile "
             "`tune` fitted on the dataset's train questions (below each table).", ""]
    if any(set(ds.get("methods", ())) & set(ISOLATED) for ds in doc["datasets"]):
        lines[-2] += (" `*_isolated`: the base method's 5 passages read one at a time (isolate-then-aggregate), "
                      "the answer with the most independent support kept (near-duplicates: MiniLM cosine >= "
                      f"{doc.get('near_duplicate', NEAR_DUPLICATE)} count once).")
    for ds in doc["datasets"]:
        METHODS = tuple(ds.get("methods", DEFAULT_METHODS))  # noqa: N806
        lines += [f"## {ds['dataset']} ({ds['sample']})", ""]
        t = ds.get("tuned")
        keys = [(k, lab) for k, lab in ROW_KEYS if k in ds["summary"]["cosine"]]
        lines.append("| method | " + " | ".join(lab for _, lab in keys) + " |")
        lines.append("|---|" + "---|" * len(keys))
        for m in METHODS:
            cells = []
            for k, _ in keys:
                e = ds["summary"][m][k]
                c = f"{e['mean']:.3f}"
                if "ci95" in e:
                    c += f" ({e['diff_vs_cosine']:+.3f} [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}])"
                cells.append(c)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        recs = ds.get("records") or []
        if recs:
            same = {m: sum(r["methods"][m]["context"] == r["methods"]["cosine"]["context"] for r in recs)
                    for m in METHODS[1:] if m not in ISOLATED}
            if same:
                lines += ["", "Contexts identical to cosine's (same 5 passages, same order): "
                          + ", ".join(f"{m} {v} of {len(recs)}" for m, v in same.items()) + "."]
            pairs = [(m, ISOLATED[m]) for m in METHODS if m in ISOLATED and ISOLATED[m] in METHODS]
            pkeys = [(k, lab) for k, lab in keys if k in ("f1", "em", "contains", "follows_false")]
            if pairs and pkeys:
                lines += ["", "The reader-side defence alone: each isolated method against its base (same 5 passages "
                              "read jointly); mean difference, paired bootstrap 95% interval.", "",
                          "| isolated - joint | " + " | ".join(lab for _, lab in pkeys) + " |",
                          "|---|" + "---|" * len(pkeys)]
                for m, b in pairs:
                    cells = []
                    for k, _ in pkeys:
                        e = ds["summary"][m][k]
                        if "diff_vs_base" in e:
                            d, (lo, hi) = e["diff_vs_base"], e["ci95_vs_base"]
                        elif b == "cosine":  # the difference to cosine is the one
                            d, (lo, hi) = e["diff_vs_cosine"], e["ci95"]
                        else:  # a file written before diff_vs_base was recorded
                            cells.append("n/a")
                            continue
                        cells.append(f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
                    lines.append(f"| {m} - {b} | " + " | ".join(cells) + " |")
            for m in (m for m in METHODS if m in ISOLATED and "isolated" in recs[0]["methods"][m]):
                iso = [r["methods"][m]["isolated"] for r in recs]
                merged = sum(bool(x["counted_together"]) for x in iso)
                lines += ["", f"`{m}`: near-duplicates counted together in {merged} of {len(recs)} contexts; "
                              f"no passage gave a real answer in {sum(not r['methods'][m]['answer'] for r in recs)}."]
        if t:
            g = t["cv_gain_objective"]
            lines += ["", f"`oscillink_tuned`: fitted on {t['n_train_questions']} train questions; searched changes "
                          f"`{json.dumps(t['searched'])}`; cross-validated objective gain {g['mean']:+.4f} "
                          f"[{g['ci95'][0]:+.4f}, {g['ci95'][1]:+.4f}]"
                          + (" (not above zero: the defaults were kept)." if t["fell_back"] else ".")]
        lines.append("")
    return "\n".join(lines) + "\n"


def merge(paths: list[str], out: Path) -> int:
    docs = [json.loads(Path(p).read_text("utf-8")) for p in paths]
    doc = dict(docs[0])
    doc["datasets"] = [ds for d in docs for ds in d["datasets"]]
    doc["command"] = " && ".join(d["command"] for d in docs)
    doc["merged_from"] = [{"command": d["command"], "date": d["date"], "git_commit": d["git_commit"],
                           "runtime_s": d["runtime_s"], "answer_cache": d["answer_cache"]} for d in docs]
    doc["answer_cache"] = {k: sum(d["answer_cache"][k] for d in docs) for k in ("hits", "misses")}
    doc["runtime_s"] = max(d["runtime_s"] for d in docs)
    for key in ("drop_params", "mmr_lambda", "k_context", "llm", "prompt", "near_duplicate"):
        if any(d.get(key) != doc.get(key) for d in docs):
            raise SystemExit(f"cannot merge: runs differ in {key}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1), "utf-8")
    out.with_suffix(".md").write_text(markdown(doc), "utf-8")
    print(markdown(doc))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="test questions sampled per dataset")
    ap.add_argument("--n-per", default="", help="per-dataset sample sizes, e.g. halueval=10,two_hop=6 "
                                                 "(overrides --n for those datasets)")
    ap.add_argument("--n-retrieval-only", type=int, default=300,
                    help="test questions sampled on datasets without LLM answers (SciFact)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--datasets", default=",".join(DEFAULT_DATASETS))
    ap.add_argument("--drop-params", default='{"screen": "drop"}', help="JSON params of oscillink_drop")
    ap.add_argument("--n-boot", type=int, default=5000)
    ap.add_argument("--tune-limit", type=int, default=200, help="train questions the tuned profile is fitted on")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help=f"comma-separated methods to run, cosine first (of {', '.join(METHODS)})")
    ap.add_argument("--near-duplicate", type=float, default=NEAR_DUPLICATE,
                    help="cosine at which the isolated methods count two passages once")
    ap.add_argument("--out", default=str(RESULTS / "e2e.json"))
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="combine the datasets of earlier runs (e.g. run in parallel) into --out; no new run")
    a = ap.parse_args(argv)
    if a.merge:
        return merge(a.merge, Path(a.out))
    methods = tuple(m for m in a.methods.split(",") if m)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or methods[:1] != ("cosine",):
        ap.error(f"--methods: unknown {unknown}" if unknown else "--methods must start with cosine")
    from oscillink_core.app import llm

    t0 = time.perf_counter()
    cache = llm.AnswerCache(ANSWER_CACHE)
    drop_params = json.loads(a.drop_params)
    rows = data.load_halueval_rows()
    n_per = {k: int(v) for k, v in (kv.split("=") for kv in a.n_per.split(",") if kv)}
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "oscillink_core"],
                               capture_output=True, text=True, check=False).stdout.split("\n")
    except OSError:  # pragma: no cover
        commit, dirty = "?", []
    dirty = [line[3:] for line in dirty if line.strip()]
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(datasets: list[dict]) -> dict:
        doc = {"format": "oscillink-core/e2e", "version": 1,
               "command": "python benchmarks/e2e/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "git_commit": commit,
               "core_uncommitted_changes": dirty,
               "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                           "llm_threads": os.environ.get("OSCILLINK_LLM_THREADS", "1")},
               "llm": llm.MODEL_NAME, "decoding": "greedy, one line, max_new_tokens 24",
               "prompt": "oscillink_core.app.llm.qa_prompt (two written few-shot examples)",
               "first_stage": "FAISS IndexFlatIP top 100, all-MiniLM-L6-v2", "k_context": K_CONTEXT,
               "mmr_lambda": MMR_LAMBDA, "drop_params": drop_params, "n_boot": a.n_boot,
               "methods": list(methods), "near_duplicate": a.near_duplicate,
               "answer_cache": {"hits": cache.hits, "misses": cache.misses},
               "runtime_s": time.perf_counter() - t0, "datasets": datasets}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1), "utf-8")
        os.replace(tmp, path)
        path.with_suffix(".md").write_text(markdown(doc), "utf-8")
        return doc

    out: list[dict] = []
    for name in a.datasets.split(","):
        print(f"{name}: preparing ...", flush=True)
        use_llm = name in LLM_DATASETS
        n = n_per.get(name, a.n if use_llm else a.n_retrieval_only)
        out.append(run_dataset(name, rows, n, a.seed, drop_params, cache, a.n_boot, use_llm,
                               on_progress=lambda part: write(out + [part]), tune_limit=a.tune_limit,
                               methods=methods, near_duplicate=a.near_duplicate))
    doc = write(out)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
