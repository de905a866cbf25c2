"""The robustness sets of benchmarks/quality (issue 27): the adaptive attacker's plants, the benign
corpora and the GPE loader do what their docstrings say, on the real HaluEval and GPE data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "quality"))

import data as qd  # noqa: E402
import families  # noqa: E402
import gpe_data  # noqa: E402

from oscillink_core import textsignals  # noqa: E402


@pytest.fixture(scope="module")
def rows():
    return qd.load_halueval_rows()


def _terms(q):
    return {t.lower() for t in textsignals.content_terms(q)}


def test_adaptive_plants_evade_the_surface_rule_they_were_written_against(rows):
    idx = list(range(60))
    q_of = {f"q{i}": rows[i]["question"] for i in idx}
    for fam in ("adv_drop_word", "adv_statement", "adv_entity"):
        plants = families.adaptive_rows(fam, rows, idx)
        assert plants and len({p["id"] for p in plants}) == len(plants)
        per_q = {}
        for p in plants:
            per_q.setdefault(p["query_id"], []).append(p["text"])
        assert all(3 <= len(v) <= 5 for v in per_q.values())
        if fam == "adv_statement":  # never the question form
            assert all(not families.as_statement(q_of[qid], "X.").startswith(("Which ", "What ", "Who "))
                       and "?" not in families.as_statement(q_of[qid], "X.")[-3:] for qid in per_q)
    rng = np.random.default_rng(0)
    for i in idx:  # the restatement misses one content word of the question
        q = rows[i]["question"]
        head = families.drop_word(q, rng)
        if head is not None:
            assert not textsignals.restates(textsignals.tokens(q), textsignals.content_terms(q),
                                            textsignals.tokens(head))
    # deterministic
    assert families.adaptive_rows("adv_swap", rows, idx) == families.adaptive_rows("adv_swap", rows, idx)


def test_quote_plants_copy_the_genuine_page_and_change_the_answer(rows):
    plants = families.adaptive_rows("adv_quote", rows, list(range(40)))
    assert plants
    for p in plants[:30]:
        i = int(p["query_id"][1:])
        wrong = rows[i]["hallucinated_answer"].strip().rstrip(".")
        assert wrong in p["text"] and p["text"] != rows[i]["knowledge"]


def test_benign_corpora(rows):
    replaced, added = families.benign_rows("benign_faq", rows, [0, 1, 2])
    assert not added and len(replaced) == 3
    assert all(t.startswith("Q: ") and " A: " in t for t in replaced.values())
    _, added = families.benign_rows("benign_editions", rows, [0, 1, 2])
    assert [a["relevant"] for a in added] == [1, 1, 1]
    _, added = families.benign_rows("benign_templates", rows, list(range(20)))
    assert added and all(a["relevant"] == 0 for a in added)
    own = qd._halueval_corpus(rows)[2]
    texts = dict(zip(*qd._halueval_corpus(rows)[:2], strict=True))
    for a in added[:10]:  # a sibling is its page with one field changed, not the page itself
        page = texts[own[int(a["id"][2:].split("_")[0])]]
        assert a["text"] != page and len(a["text"].split()) == pytest.approx(len(page.split()), abs=6)


def test_gpe_loader_keeps_annotations_out_and_splits_claims():
    rows = gpe_data.load_rows()
    ds, meta = gpe_data.load_gpe("gpe_poisonedrag", rows)
    with_evidence = [r for r in rows if r["evidence_environment"].get("benign")]
    assert len(rows) == 638 and len(ds.train.qids) + len(ds.test.qids) == len(with_evidence)
    for r in with_evidence[:50]:  # a claim's relevant pages are all of its benign evidence, shared ones included
        split = ds.train if r["claim_id"] in ds.train.qrels else ds.test
        assert set(split.qrels[r["claim_id"]]) == {b["evidence_id"] for b in r["evidence_environment"]["benign"]}
    assert not set(ds.train.qids) & set(ds.test.qids)
    assert ds.traps and all(meta[d]["kind"] == "poisonedrag" for d in ds.traps)
    b = next(d for d in ds.doc_ids if meta[d]["kind"] == "benign")
    row = next(r for r in rows if any(e["evidence_id"] == b for e in r["evidence_environment"]["benign"]))
    ev = next(e for e in row["evidence_environment"]["benign"] if e["evidence_id"] == b)
    assert ev["summary"] not in meta[b]["text"]  # the benchmark's annotation is not passage text
    clean, _ = gpe_data.load_gpe("gpe_clean", rows)
    assert not clean.traps and set(clean.doc_ids) < set(ds.doc_ids)
    assert all(ds.sources[d] for d in ds.traps)  # every planted passage has a host
    with pytest.raises(ValueError, match="unknown GPE variant"):
        gpe_data.load_gpe("gpe_nothing", rows)


def _mini_corpus_runs(rows, family, idx, params_list):
    """For each question of ``idx`` with plants of ``family``: its own page, its plants and the 40
    pages of the other questions most similar to it (real MiniLM embeddings), ranked by cosine and
    by `rerank` under each of ``params_list``; returns per ranking (plants in the top 5, own page in
    the top 5), summed over the questions."""
    from oscillink_core import rerank
    from oscillink_core.app.embeddings import embed

    _, texts, own = qd._halueval_corpus(rows)
    page = dict(zip(qd._halueval_corpus(rows)[0], texts, strict=True))
    plants = families.adaptive_rows(family, rows, idx)
    by_q: dict[str, list[str]] = {}
    for p in plants:
        by_q.setdefault(p["query_id"], []).append(p["text"])
    pages = sorted({own[i] for i in idx})
    P = embed([page[p] for p in pages])
    out = [[0, 0] for _ in range(1 + len(params_list))]
    for i in idx:
        mine = by_q.get(f"q{i}")
        if not mine:
            continue
        q = rows[i]["question"]
        V = embed([q, *mine])
        psi, Yp = V[0], V[1:]
        me = pages.index(own[i])
        others = [j for j in np.argsort(-(P @ psi)) if j != me][:40]
        cand = [page[own[i]], *mine, *[page[pages[j]] for j in others]]
        Y = np.vstack([P[me], Yp, P[others]])
        kinds = ["own"] + ["plant"] * len(mine) + ["other"] * len(others)
        tops = [np.argsort(-(Y @ psi), kind="stable")[:5]]
        tops += [np.asarray(rerank(psi, Y, k=5, params=p, texts=cand, query_text=q).indices) for p in params_list]
        for acc, top in zip(out, tops, strict=True):
            acc[0] += sum(kinds[j] == "plant" for j in top)
            acc[1] += int(any(kinds[j] == "own" for j in top))
    return out


def test_synonym_plants_that_no_text_rule_reads_leave_the_context_by_the_group_rule(rows):
    """The attacker who restates the question in synonyms walks around the echo rule; the
    embedding group rule (``screen_untexted_questions=True``, the default) still takes the plants
    out, and the genuine page is in the context at least as often as under cosine. Train questions."""
    idx = list(range(2000, 2060))
    (cos_plants, cos_own), (dflt_plants, dflt_own), (off_plants, _) = _mini_corpus_runs(
        rows, "adv_synonym", idx, [None, {"screen_untexted_questions": False}])
    assert cos_plants > 50
    assert dflt_plants <= 0.7 * cos_plants, (cos_plants, dflt_plants)
    assert dflt_plants < off_plants  # it is this rule that takes them out
    assert dflt_own >= cos_own
