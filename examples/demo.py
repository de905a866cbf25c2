"""`make demo`: the main job end to end on the bundled corpus, through the real `oscillink` CLI.

1. ingest examples/data/demo_corpus.jsonl (90 passages, 15 planted traps) into an index in a
   fresh temporary folder (removed at the end; ``--index-dir DIR`` keeps it in DIR instead), signing
   the ingest receipt. Nothing is written under the checkout, whatever the working directory;
2. ask the three demo questions with ``oscillink query --compare``: the oscillink bundle beside
   the plain cosine top-k, traps marked;
3. count, from the corpus labels, the relevant passages and the traps each method put in its
   top-k, and say plainly which did better on each question (ties and losses included);
4. verify one signed receipt against the index (schema, HMAC, re-run), then show that a
   tampered copy fails;
5. a real LLM reads the context: three short-answer questions (examples/data/demo_planted.json)
   over the corpus plus three planted passages per question that assert a false answer. Gemma 3
   270M (``oscillink_core.app.llm``, greedy) answers from cosine's top 5, from oscillink's
   (defaults) and from oscillink with ``screen="drop"``; the flags oscillink raised are shown, and the
   demo says plainly whether oscillink changed the answer (its verdict, right / planted value /
   neither, or only its wording) and how many planted passages each context held. Answers are cached in the user cache
   (``~/.cache/oscillink/llm_answers``, or ``$OSCILLINK_LLM_CACHE``). ``--no-llm`` skips this step.

Run: ``make demo`` or ``python examples/demo.py [--index-dir DIR] [-k 5] [--questions q1,q2,q3] [--no-llm]``.
The numbers printed are whatever the current code produces; nothing here is hard-coded.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from oscillink_core.app.cli import main as oscillink  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "demo_corpus.jsonl"
QUESTIONS = DATA / "demo_questions.json"
PLANTED = DATA / "demo_planted.json"
KEY_VAR = "OSCILLINK_DEMO_KEY"
DEMO_KEY = "demo-key: not a secret, set by examples/demo.py"


def banner(text: str) -> None:
    print(f"\n{'=' * 100}\n{text}\n{'=' * 100}", flush=True)


def _short(a: object) -> str:
    """Paths relative to the working directory when they lie under it (readable commands)."""
    if isinstance(a, Path):
        rel = os.path.relpath(a)
        return rel if not rel.startswith("..") else str(a)
    return str(a)


def run(*argv: object) -> int:
    args = [_short(a) for a in argv]
    print(f"$ oscillink {' '.join(a if ' ' not in a else repr(a) for a in args)}", flush=True)
    code = oscillink(args)
    sys.stdout.flush()
    if code != 0:
        print(f"(exit code {code})", flush=True)
    return code


def run_json(*argv: object) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = oscillink([_short(a) for a in argv])
    if code != 0:
        raise SystemExit(f"demo: oscillink {' '.join(map(str, argv[:2]))} failed with exit code {code}")
    return json.loads(buf.getvalue())


def describe(ids: list[str], q: dict) -> str:
    rel = [i for i in ids if i in q["relevant"]]
    cf = [i for i in ids if i in q["counterfactual_traps"]]
    la = [i for i in ids if i in q["lookalike_traps"]]
    parts = [f"{len(rel)}/{len(ids)} relevant"]
    parts.append(f"{len(cf) + len(la)} trap(s)" + (f" ({', '.join(cf + la)})" if cf or la else ""))
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index-dir", default=None,
                    help="keep the index (and receipts) here; default: a temporary folder, removed at the end")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--fetch-k", type=int, default=50)
    ap.add_argument("--questions", default=None, help="comma-separated question ids (default: the file's demo set)")
    ap.add_argument("--no-llm", action="store_true", help="skip step 5 (the LLM reading the contexts)")
    a = ap.parse_args(argv)
    if a.index_dir is None:
        tmp = tempfile.mkdtemp(prefix="oscillink-demo-")
        try:
            return _main(a, Path(tmp) / "demo-index")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _main(a, Path(a.index_dir))


def _main(a: argparse.Namespace, index: Path) -> int:
    t0 = time.perf_counter()
    os.environ[KEY_VAR] = DEMO_KEY
    spec = json.loads(QUESTIONS.read_text("utf-8"))
    by_id = {q["id"]: q for q in spec["questions"]}
    chosen = a.questions.split(",") if a.questions else spec["demo_questions"]
    receipts = index.parent / f"{index.name}-receipts"
    receipts.mkdir(parents=True, exist_ok=True)

    banner(f"1. ingest the bundled corpus ({CORPUS.relative_to(ROOT)})")
    if run("ingest", CORPUS, "--index", index, "--overwrite", "--key-env", KEY_VAR) != 0:
        return 1

    rows = []
    for n, qid in enumerate(chosen, start=1):
        q = by_id[qid]
        banner(f"2.{n} {qid}: {q['question']}")
        print(f"(relevant: {', '.join(q['relevant'])}; counterfactual traps: {', '.join(q['counterfactual_traps'])};"
              f" look-alike traps: {', '.join(q['lookalike_traps'])})\n")
        out = receipts / f"{qid}.json"
        if run("query", index, q["question"], "-k", a.k, "--fetch-k", a.fetch_k, "--compare",
               "--key-env", KEY_VAR, "--receipt-out", out) != 0:
            return 1
        doc = run_json("query", index, q["question"], "-k", a.k, "--fetch-k", a.fetch_k, "--compare", "--json")
        osc = [i["id"] for i in doc["items"]]
        cos = [c["id"] for c in doc["cosine"]]
        rows.append((qid, q, osc, cos, out))

    banner(f"3. what each method put in its top-{a.k} (counted from the corpus labels)")
    better = same = worse = 0
    tot = {"cosine": [0, 0], "oscillink": [0, 0]}
    for qid, q, osc, cos, _ in rows:
        traps = set(q["traps"])
        t_osc, t_cos = sum(i in traps for i in osc), sum(i in traps for i in cos)
        r_osc, r_cos = sum(i in q["relevant"] for i in osc), sum(i in q["relevant"] for i in cos)
        tot["cosine"][0] += r_cos
        tot["cosine"][1] += t_cos
        tot["oscillink"][0] += r_osc
        tot["oscillink"][1] += t_osc
        print(f"{qid}  cosine:    {describe(cos, q)}")
        print(f"{'':4}oscillink: {describe(osc, q)}")
        if t_cos > t_osc:
            verdict = f"oscillink kept out {t_cos - t_osc} trap(s) that cosine let in"
            better += 1
        elif t_cos < t_osc:
            verdict = f"oscillink let in {t_osc - t_cos} MORE trap(s) than cosine"
            worse += 1
        else:
            verdict = "same number of traps" + (" (none)" if t_cos == 0 else "")
            same += 1
        if set(osc) == set(cos):
            verdict += "; the two top-k sets are identical" + ("" if osc == cos else " (order differs)")
        print(f"{'':4}-> {verdict}\n")
    n = len(rows)
    print(f"over {n} question(s), {a.k} passages each: cosine {tot['cosine'][0]} relevant / {tot['cosine'][1]} traps; "
          f"oscillink {tot['oscillink'][0]} relevant / {tot['oscillink'][1]} traps")
    print(f"fewer traps with oscillink on {better}, the same on {same}, more on {worse} of {n} question(s).")
    r_c, r_o = tot["cosine"][0], tot["oscillink"][0]
    print("relevant passages returned: " + ("the same for both" if r_c == r_o else
          f"oscillink {'fewer' if r_o < r_c else 'more'} than cosine ({r_o} vs {r_c})") + ".")
    print("Note: counterfactual traps are near-copies of true passages with one fact changed; an embedding-based\n"
          "ranker (cosine or oscillink) sees them as close neighbours of the truth and cannot check the fact.\n"
          "Three questions are an illustration, not a benchmark: see benchmarks/quality for measured results.")

    qid, _, _, _, receipt_path = rows[0]
    banner(f"4. verify the signed receipt of {qid} against the index (schema, HMAC, re-run)")
    code = run("verify", receipt_path, "--index", index, "--key-env", KEY_VAR)
    tampered = receipts / f"{qid}-tampered.json"
    rec = json.loads(receipt_path.read_text("utf-8"))
    rec["bundle"][0]["score"] = rec["bundle"][0]["score"] + 0.001
    tampered.write_text(json.dumps(rec, indent=2), "utf-8")
    print(f"\nnow the same receipt with bundle[0].score changed by +0.001 ({tampered.name}); this must fail:")
    code_t = run("verify", tampered, "--key-env", KEY_VAR)
    if not a.no_llm:
        llm_step(a.k, a.fetch_k)
    where = (f"index in {_short(index)}, receipts in {_short(receipts)}" if a.index_dir else
             "index and receipts were in a temporary folder, now removed (--index-dir DIR keeps them)")
    banner(f"demo finished in {time.perf_counter() - t0:.1f} s; {where}")
    if code != 0 or code_t != 1:
        print("demo: receipt verification did not behave as expected", file=sys.stderr)
        return 1
    return 0


def _has(answer: str, value: str) -> bool:
    return value.lower() in answer.lower()


def llm_step(k: int, fetch_k: int, only: list[str] | None = None) -> dict:
    """Step 5: the real LLM answers from cosine's context and from oscillink's (see the docstring).
    ``only``: ask just these question ids of demo_planted.json (default: all)."""
    import numpy as np

    from oscillink_core import rerank
    from oscillink_core.app import llm
    from oscillink_core.app.embeddings import embed

    spec = json.loads(PLANTED.read_text("utf-8"))
    asked = [q for q in spec["questions"] if only is None or q["id"] in only]
    rows = [json.loads(line) for line in CORPUS.read_text("utf-8").splitlines() if line.strip()]
    planted = [p for q in spec["questions"] for p in q["planted"]]
    ids = [r["id"] for r in rows] + [p["id"] for p in planted]
    texts = [r["text"] for r in rows] + [p["text"] for p in planted]
    banner(f"5. a real LLM reads the context: {len(asked)} short-answer question(s), the corpus plus "
           f"{len(planted)} planted passages ({PLANTED.relative_to(ROOT)})")
    print(f"reader: {llm.MODEL_NAME}, greedy; first stage: cosine top {fetch_k} over {len(ids)} passages; "
          f"context: {k} passages", flush=True)
    t0 = time.perf_counter()
    X = embed(texts)
    llm.load()
    print(f"(embedded the passages and loaded the model in {time.perf_counter() - t0:.1f} s)", flush=True)
    cache = llm.AnswerCache(llm.default_cache_dir())
    variants = (("cosine", None), ("oscillink", None), ("oscillink screen=drop", {"screen": "drop"}))
    summary = {"changed": 0, "fixed": 0, "broke": 0, "wording": 0, "n": 0,
               "planted": {name: 0 for name, _ in variants}}
    for q in asked:
        psi = embed([q["question"]])[0]
        cos = X @ psi
        cand = np.lexsort((np.arange(cos.size), -cos))[:fetch_k]
        print(f"\n{q['id']}: {q['question']}   (true: {q['answer']}; planted false: {q['false_answer']})")
        answers, verdicts = {}, {}
        for name, params in variants:
            if name == "cosine":
                chosen, flags, screened = [int(i) for i in cand[:k]], {}, []
            else:
                res = rerank(psi, X[cand], k=k, ids=[ids[i] for i in cand], params=params,
                             texts=[texts[i] for i in cand], query_text=q["question"])
                chosen = [int(cand[i]) for i in res.indices]
                flags = {it.id: list(getattr(it, "flags", ()) or ()) for it in res}
                screened = list(getattr(res, "screened", ()) or ())
            ctx_ids = [ids[i] for i in chosen]
            ans = cache.answer(llm.qa_prompt(q["question"], [texts[i] for i in chosen]))
            answers[name] = ans
            n_planted = sum(i.startswith("plant-") for i in ctx_ids)
            summary["planted"][name] += n_planted
            verdict = ("right" if _has(ans, q["answer"]) and not _has(ans, q["false_answer"]) else
                       "FALSE (planted value)" if _has(ans, q["false_answer"]) else "neither")
            verdicts[name] = verdict
            print(f"  {name:<22} context {', '.join(ctx_ids)}  ({n_planted} planted)")
            shown = {i: f for i, f in flags.items() if f}
            if shown:
                print(f"  {'':<22} flags: " + "; ".join(f"{i}: {', '.join(f)}" for i, f in shown.items()))
            if screened:
                print(f"  {'':<22} screened out: " + "; ".join(
                    f"{s.get('id')} ({', '.join(s.get('flags', ()))}, {s.get('action')})" for s in screened))
            print(f"  {'':<22} answer: {ans!r}  -> {verdict}", flush=True)
        base = answers["cosine"]
        for name, _ in variants[1:]:
            summary["n"] += 1
            if answers[name] == base:
                print(f"  -> {name}: the same answer as cosine")
                continue
            if verdicts[name] == verdicts["cosine"]:
                summary["wording"] += 1
                print(f"  -> {name}: changed the wording, not the verdict (both {verdicts[name]}: "
                      f"{base!r} -> {answers[name]!r})")
                continue
            summary["changed"] += 1
            if verdicts[name] == "right":
                summary["fixed"] += 1
            elif verdicts["cosine"] == "right":
                summary["broke"] += 1
            print(f"  -> {name}: CHANGED the answer, {verdicts['cosine']} -> {verdicts[name]} "
                  f"({base!r} -> {answers[name]!r})")
    slots = k * len(asked)
    counts = ", ".join(f"{name} {n}" for name, n in summary["planted"].items())
    print(f"\nplanted passages in the contexts ({slots} context slots): {counts}")
    print(f"oscillink changed the verdict of the answer in {summary['changed']} of {summary['n']} (question, variant) "
          f"pairs: {summary['fixed']} to right, {summary['broke']} from right; the wording alone in "
          f"{summary['wording']}.")
    print(f"{len(asked)} question(s) are an illustration, not a measurement: benchmarks/e2e/run.py measures this on "
          "HaluEval (benchmarks/results/e2e.md).")
    print(f"(answers: {cache.hits} from the cache, {cache.misses} generated; the cache is the user cache, "
          "~/.cache/oscillink/llm_answers, or $OSCILLINK_LLM_CACHE)")
    return summary


if __name__ == "__main__":
    sys.exit(main())
