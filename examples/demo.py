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
   (``~/.cache/oscillink/llm_answers``, or ``$OSCILLINK_LLM_CACHE``). ``--no-llm`` skips this step;
6. a published attack: one claim of GPE (the ``gpe-eval`` package, located, never imported) with
   its benign evidence, its distractors and its PoisonedRAG passages, plus the benign evidence of a
   few other claims as background. Cosine's top 5, oscillink's with the texts, and oscillink's with
   each passage's source (its URL's host) and a declared list of trusted sources (the hosts of the
   benign evidence of the benchmark's TRAIN claims: what the store held before; none from this
   claim): how many planted passages each context holds, and the flags that decided;
7. an adaptive attacker who has read the screening rules: one HaluEval question, the corpus
   passages around it and the plants of ``benchmarks/quality/families.py`` (``adv_drop_word``: the
   question restated with one content word left out, then the false answer): what oscillink
   catches and what it does not, counted.

Run: ``make demo`` or ``python examples/demo.py [--index-dir DIR] [-k 5] [--questions q1,q2,q3] [--no-llm]``.
The numbers printed are whatever the current code produces; nothing here is hard-coded. Steps 6
and 7 are illustrations (one claim, one question); ``benchmarks/quality/robustness.py`` measures
every family (``benchmarks/results/robustness.md``).
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
    else:
        print("\n(step 5, a real LLM reading the contexts, skipped: --no-llm)", flush=True)
    gpe_step(a.k, a.fetch_k)
    adaptive_step(a.k, a.fetch_k)
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


# ----------------------------------------------------------------------------- steps 6 and 7
# Step 6's claim was fixed before any ranking was looked at, by a rule on the data alone: the first
# claim of GPE's TEST half (`gpe_data.claim_split`, the benchmark's seeded split), in file order,
# whose environment has the dataset's median numbers of benign pages (8) and distractors (9) and the
# most common number of PoisonedRAG passages (5; 420 of the 638 claims have 5, the rest 10).
GPE_CLAIM = "benchmark-000067"
GPE_ATTACK = "poisonedrag"
GPE_BACKGROUND = 3  # background: the benign pages of the first 3 TRAIN claims of the claim's category
# Step 7: HaluEval question 0, the first question of the adaptive sets (`data.POISON_TEST`), fixed by
# its position; the corpus around it is the passages of questions 0..59; its plants are the ones the
# benchmark evaluates (generated over the benchmark's question list, so the seeded draws match).
ADAPTIVE_FAMILY = "adv_drop_word"
ADAPTIVE_QUESTION = 0
ADAPTIVE_AROUND = 60
_EVIDENCE = {"query_echo": "the wording", "twin_conflict": "the wording", "query_targeted": "the embeddings",
             "untrusted_source": "the source", "new_source_echo": "the sources (echoed only by new ones)"}


def _quality():
    """The benchmark loaders of benchmarks/quality (gpe_data, data, families), imported from the checkout."""
    import importlib

    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    return tuple(importlib.import_module(f"benchmarks.quality.{m}") for m in ("gpe_data", "data", "families"))


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 3] + "..."


def _decisive() -> tuple[str, ...]:
    from oscillink_core.corroboration import CORROBORATION_DECISIVE
    from oscillink_core.provenance import PROVENANCE_DECISIVE
    from oscillink_core.screening import DECISIVE_FLAGS

    return tuple(DECISIVE_FLAGS) + tuple(CORROBORATION_DECISIVE) + tuple(PROVENANCE_DECISIVE)


def _show_variant(name: str, ctx: list[str], label: dict[str, str], line, res=None) -> dict:
    """Print one variant's context (label, passage, flags) and, for oscillink, what its receipt
    records as kept out and which decisive flags decided. Returns the counts."""
    decisive = _decisive()
    flags = {it.id: list(it.flags) for it in res} if res is not None else {}
    n_planted = sum(label[i] == "PLANTED" for i in ctx)
    print(f"\n  [{name}] {n_planted} planted passage(s) of {len(ctx)} in the context:")
    for i in ctx:
        f = flags.get(i)
        print(f"    {label[i]:<10} {line(i)}" + (f"   flags: {', '.join(f)}" if f else ""))
    out = {"planted": n_planted, "ctx": list(ctx), "decided": {}}
    if res is None:
        return out
    rec = res.receipt
    kept_out = rec["screen"]["screened"]
    bound = [key for key in ("texts_sha256", "query_text_sha256", "sources_sha256", "trusted_sources_sha256")
             if key in rec["inputs"]]
    print(f"    receipt: inputs bind {', '.join(bound) or 'no texts or sources'}; screen.screened records "
          f"{len(kept_out)} candidate(s) kept out of the context (action {rec['screen']['action']!r})"
          + (":" if kept_out else ""))
    for s in kept_out:
        print(f"      {label[s['id']]:<10} {line(s['id'])}   flags: {', '.join(s['flags'])} ({s['action']})")
    for s in kept_out:
        for f in s["flags"]:
            if f in decisive:
                side = "planted" if label[s["id"]] == "PLANTED" else "other"
                out["decided"].setdefault(f, {"planted": 0, "other": 0})[side] += 1
    in_ctx = [(i, f) for i, fl in flags.items() for f in fl if f in decisive]
    if out["decided"]:
        n_out = sum(bool(set(s["flags"]) & set(decisive)) for s in kept_out)
        print(f"    decided by (the decisive flags of the {n_out} passage(s) kept out): " + "; ".join(
            f"{f}, {_EVIDENCE.get(f, 'screening')}: {c['planted']} planted + {c['other']} other"
            for f, c in out["decided"].items()))
    else:
        print("    decided by: nothing; no candidate carried a decisive flag, the context is the lattice's order")
    if in_ctx:
        print("    (decisive flags on passages still in the context: "
              + "; ".join(f"{label[i]} {i}: {f}" for i, f in in_ctx) + ")")
    return out


def gpe_step(k: int, fetch_k: int) -> dict:
    """Step 6: one GPE claim under its PoisonedRAG passages (see the module docstring)."""
    import numpy as np

    from oscillink_core import rerank
    from oscillink_core.app.embeddings import embed

    G, _, _ = _quality()
    rows = G.load_rows()
    meta = G.corpus(rows)
    train, _ = G.claim_split(rows)
    ci = next(i for i, r in enumerate(rows) if r["claim_id"] == GPE_CLAIM)
    row, claim = rows[ci], rows[ci]["original_claim"].strip()
    env = row["evidence_environment"]
    label: dict[str, str] = {}
    for b in env.get("benign") or []:
        label.setdefault(b["evidence_id"], "benign")
    for d in env.get("related_distractor") or []:
        label.setdefault(d["evidence_id"], "distractor")
    for p in (env.get("poisoned") or {}).get(GPE_ATTACK) or []:
        label.setdefault(p["evidence_id"], "PLANTED")
    background = [i for i in train if i != ci and rows[i]["category"] == row["category"]][:GPE_BACKGROUND]
    for i in background:
        for b in rows[i]["evidence_environment"].get("benign") or []:
            label.setdefault(b["evidence_id"], "background")
    ids = list(label)
    texts = [meta[d]["text"] for d in ids]
    sources = [meta[d]["source"] or None for d in ids]
    # what the store held before the attack, as benchmarks/quality/robustness.py declares it: the hosts
    # of the TRAIN claims' benign evidence (other claims only: this claim is in the TEST half)
    train_ids = {rows[i]["claim_id"] for i in train if i != ci}
    trusted = sorted({m["source"] for m in meta.values() if m["kind"] == "benign" and m["claim"] in train_ids
                      and m["source"]})
    held = {b["evidence_id"] for i in train if i != ci for b in rows[i]["evidence_environment"].get("benign") or []}
    count = {kind: sum(v == kind for v in label.values()) for kind in ("benign", "distractor", "PLANTED", "background")}
    planted = [d for d in ids if label[d] == "PLANTED"]
    own_benign = [d for d in ids if label[d] == "benign"]
    split = "TRAIN" if ci in train else "TEST"

    banner(f"6. a published attack: GPE {GPE_ATTACK} (the gpe-eval package), claim {GPE_CLAIM}")
    print(f"claim ({row['category']}, GPE's verdict: {row['ground_truth']}; a {split} claim): {claim}")
    print(f"pool ({len(ids)} passages, as a store holds them): this claim's {count['benign']} benign pages, "
          f"{count['distractor']} distractors and {count['PLANTED']} {GPE_ATTACK} passages (PLANTED), plus "
          f"{count['background']} benign pages of {len(background)} other claims of the category (background: "
          f"{', '.join(rows[i]['claim_id'] for i in background)})")
    print(f"first stage: cosine top {fetch_k}; context: {k} passages; query = the claim (a statement)")
    from oscillink_core.corroboration import CORROBORATION_DECISIVE
    from oscillink_core.screening import DECISIVE_FLAGS

    print(f"flags: {', '.join(DECISIVE_FLAGS)} (screening) and {', '.join(CORROBORATION_DECISIVE)} (provenance, "
          "the default policy 'corroboration') are decisive: under the default screen action 'demote' they "
          "move a passage behind the others, out of a short context; every other flag is information")
    print(f"declared trusted sources: the {len(trusted)} hosts of the benign evidence of the {len(train)} TRAIN "
          f"claims (what the store held before the attack; none taken from this claim). Of this claim's "
          f"{len(own_benign)} benign pages, {sum(sources[ids.index(d)] in trusted for d in own_benign)} come from a "
          f"declared host; of its {len(planted)} planted passages, "
          f"{sum(sources[ids.index(d)] in trusted for d in planted)} do ({sum(d in held for d in own_benign)} of the "
          f"{len(own_benign)} benign pages are also evidence of TRAIN claims: the store held them)")
    print("planted hosts: " + ", ".join(sorted({sources[ids.index(d)] or "?" for d in planted})), flush=True)
    t0 = time.perf_counter()
    X = embed(texts)
    psi = embed([claim])[0]
    print(f"(embedded {len(texts) + 1} texts in {time.perf_counter() - t0:.1f} s)", flush=True)
    cos = X @ psi
    cand = np.lexsort((np.arange(cos.size), -cos))[:fetch_k]
    c_ids = [ids[i] for i in cand]
    c_texts = [texts[i] for i in cand]

    def line(d: str) -> str:
        return f"{_clip(meta[d]['source'] or '?', 44):<44} {_clip(meta[d]['text'], 56)!r}"

    res_t = rerank(psi, X[cand], k=k, ids=c_ids, texts=c_texts, query_text=claim)
    res_s = rerank(psi, X[cand], k=k, ids=c_ids, texts=c_texts, query_text=claim,
                   sources=[sources[i] for i in cand], trusted_sources=trusted)
    shown = {
        "cosine": _show_variant(f"cosine: its top {k}", c_ids[:k], label, line),
        "oscillink": _show_variant("oscillink: rerank with texts= and query_text=", res_t.ids, label, line, res_t),
        "oscillink + sources": _show_variant("oscillink: the same plus sources= (the hosts) and trusted_sources= "
                                             "(the declared list)", res_s.ids, label, line, res_s),
    }
    print(f"\nplanted passages in the {k}-passage context (the pool holds {len(planted)}): "
          + ", ".join(f"{n} {v['planted']}" for n, v in shown.items()))
    print(f"this claim's benign pages in the context (the pool holds {len(own_benign)}): "
          + ", ".join(f"{n} {sum(label[i] == 'benign' for i in v['ctx'])}" for n, v in shown.items()))
    screen_pl = sum(c["planted"] for f, c in shown["oscillink"]["decided"].items())
    print(f"without sources: a screening flag decided on {screen_pl} planted passage(s)"
          + (" (the echo rule runs for questions only, and this query is a claim)" if not screen_pl else ""))
    prov = shown["oscillink + sources"]["decided"].get("new_source_echo", {"planted": 0, "other": 0})
    from oscillink_core import LatticeParams

    print(f"with sources: new_source_echo (a host not among the declared ones, agreed with by at least "
          f"{LatticeParams().provenance_min_echo} other such hosts and by fewer trusted ones) kept out "
          f"{prov['planted']} planted passage(s) and {prov['other']} other passage(s)")
    lost = [d for d in own_benign if d in c_ids and d not in res_s.ids and d in shown["cosine"]["ctx"]
            and sources[ids.index(d)] not in trusted]
    if lost:
        print(f"its cost here: {len(lost)} of this claim's benign page(s) in cosine's context came from an undeclared "
              f"host ({', '.join(sorted({sources[ids.index(d)] for d in lost}))}) and was kept out with the plants")
    print("One claim is an illustration, not a measurement: benchmarks/quality/robustness.py measures every GPE "
          "attack (benchmarks/results/robustness.md).")
    return {"claim": GPE_CLAIM, "planted_in_pool": len(planted), "variants": shown}


def adaptive_step(k: int, fetch_k: int) -> dict:
    """Step 7: an adaptive attacker (families.py) on one HaluEval question (see the module docstring)."""
    import numpy as np

    from oscillink_core import rerank
    from oscillink_core.app.embeddings import embed

    _, D, F = _quality()
    rows = D.load_halueval_rows()
    qi = ADAPTIVE_QUESTION
    row, question = rows[qi], rows[qi]["question"].strip()
    plants = [p for p in F.adaptive_rows(ADAPTIVE_FAMILY, rows, F._question_indices(ADAPTIVE_FAMILY))
              if p["query_id"] == f"q{qi}"]
    doc_ids, doc_texts, own = D._halueval_corpus(rows)
    text_of = dict(zip(doc_ids, doc_texts, strict=True))
    around = list(dict.fromkeys(own[j] for j in range(qi, min(qi + ADAPTIVE_AROUND, len(rows)))))
    label = {d: ("TRUE" if d == own[qi] else "corpus") for d in around}
    label.update({p["id"]: "PLANTED" for p in plants})
    ids = list(label)
    texts = [text_of[d] for d in around] + [p["text"] for p in plants]
    text = dict(zip(ids, texts, strict=True))

    banner(f"7. an adaptive attacker: benchmarks/quality/families.py, {ADAPTIVE_FAMILY}, HaluEval question {qi}")
    print(f"question: {question}   (right: {row['right_answer'].strip()}; "
          f"HaluEval's hallucinated answer: {row['hallucinated_answer'].strip()})")
    print(f"the attacker has read the screening rules: each plant restates the question with one content word left "
          f"out (aimed at the echo rule, which needs every one), then asserts the false answer. Its {len(plants)} "
          "plants:")
    for p in plants:
        print(f"    {p['id']}: {p['text']!r}")
    last = min(qi + ADAPTIVE_AROUND, len(rows)) - 1
    print(f"pool: the true passage ({own[qi]}) and the other passages of HaluEval questions {qi}..{last} "
          f"({len(around)} unique), plus the {len(plants)} plants; first stage: cosine top {fetch_k}; context: {k}")
    print("HaluEval records no source per passage, so the provenance option has nothing to use here.", flush=True)
    t0 = time.perf_counter()
    X = embed(texts)
    psi = embed([question])[0]
    print(f"(embedded {len(texts) + 1} texts in {time.perf_counter() - t0:.1f} s)", flush=True)
    cos = X @ psi
    cand = np.lexsort((np.arange(cos.size), -cos))[:fetch_k]
    c_ids = [ids[i] for i in cand]

    def line(d: str) -> str:
        return f"{d:<17} {_clip(text[d], 70)!r}"

    res = rerank(psi, X[cand], k=k, ids=c_ids, texts=[texts[i] for i in cand], query_text=question)
    cos_v = _show_variant(f"cosine: its top {k}", c_ids[:k], label, line)
    osc_v = _show_variant("oscillink: rerank with texts= and query_text=", res.ids, label, line, res)
    caught = sorted({s["id"] for s in res.receipt["screen"]["screened"] if label[s["id"]] == "PLANTED"
                     and set(s["flags"]) & set(_decisive())})
    left = osc_v["planted"]
    print(f"\nplants in the {k}-passage context (the pool holds {len(plants)}): cosine {cos_v['planted']}, "
          f"oscillink {left}; the true passage is in cosine's: {'yes' if own[qi] in cos_v['ctx'] else 'no'}, "
          f"in oscillink's: {'yes' if own[qi] in osc_v['ctx'] else 'no'}")
    if not caught:
        verdict = (f"oscillink did NOT catch this attacker: none of the {len(plants)} plants carried a decisive flag, "
                   f"and {left} of them are in its context")
    elif left:
        verdict = (f"oscillink caught {len(caught)} of the {len(plants)} plants ({', '.join(caught)}) and did NOT "
                   f"catch the rest: {left} plant(s) are still in its {k}-passage context")
    else:
        verdict = f"oscillink kept all {len(caught)} plants that reached its candidates out of the context"
    print(verdict + ".")
    from oscillink_core.textsignals import content_terms, tokens

    terms = set(content_terms(question))
    echoed = [s["id"] for s in res.receipt["screen"]["screened"] if "query_echo" in s["flags"]]
    whole = [d for d in echoed if label[d] == "PLANTED" and terms <= set(tokens(text[d]))]
    if whole:
        print(f"(query_echo fired on {', '.join(whole)}: the word dropped from the restatement comes back in the "
              "false answer, so the passage still holds every content word of the question)")
    print("One question is an illustration, not a measurement: benchmarks/quality/robustness.py measures every "
          "adaptive family on the TEST questions (benchmarks/results/robustness.md).")
    return {"question": qi, "plants": len(plants), "caught": caught, "cosine": cos_v, "oscillink": osc_v}


if __name__ == "__main__":
    sys.exit(main())
