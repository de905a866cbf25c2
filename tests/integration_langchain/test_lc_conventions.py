"""The frameworks' reranker conventions in langchain_oscillink: relevance_score, top_n=None,
score_threshold, repeated inputs, deep copies, tracing contents (fake embeddings, fast)."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document

from langchain_oscillink import OscillinkCompressor, OscillinkRetriever

QUERY = "subject 3 with detail 2"


def test_relevance_score_is_written_and_a_stale_one_replaced(fake_emb, docs):
    stale = [Document(d.page_content, id=d.id, metadata={**d.metadata, "relevance_score": -1.0,
                                                          "retrieval_distance": 9.0}) for d in docs]
    out = OscillinkCompressor(embeddings=fake_emb, top_n=5).compress_documents(stale, QUERY)
    for d in out:
        assert d.metadata["relevance_score"] == d.metadata["oscillink_score"] != -1.0
        assert "retrieval_distance" not in d.metadata  # a stale first-stage key of the other kind is dropped
        assert isinstance(d.metadata["retrieval_score"], float)  # cosine computed here: a similarity
    assert [d.metadata["relevance_score"] for d in out] == sorted((d.metadata["relevance_score"] for d in out),
                                                                   reverse=True)


def test_top_n_none_returns_all_and_threshold_drops_below(fake_emb, docs):
    every = OscillinkCompressor(embeddings=fake_emb, top_n=None).compress_documents(docs, QUERY)
    assert len(every) == len(docs) and sorted(d.id for d in every) == sorted(d.id for d in docs)
    scores = [d.metadata["relevance_score"] for d in every]
    cut = scores[len(scores) // 2]
    kept = OscillinkCompressor(embeddings=fake_emb, top_n=None, score_threshold=cut).compress_documents(docs, QUERY)
    assert [d.id for d in kept] == [d.id for d in every if d.metadata["relevance_score"] >= cut]
    prov = kept[0].metadata["oscillink_receipt"]["provenance"]
    assert prov["score_threshold"] == cut
    assert prov["below_threshold"] == [d.id for d in every if d.metadata["relevance_score"] < cut]
    with pytest.raises(ValueError, match="top_n"):
        OscillinkCompressor(embeddings=fake_emb, top_n=0)
    with pytest.raises(ValueError, match="score_threshold"):
        OscillinkCompressor(embeddings=fake_emb, score_threshold=float("nan"))


def test_retriever_threshold(memory_store):
    r = OscillinkRetriever(vectorstore=memory_store, k=10, fetch_k=20)
    base = r.invoke(QUERY)
    cut = base[3].metadata["relevance_score"]
    out = OscillinkRetriever(vectorstore=memory_store, k=10, fetch_k=20, score_threshold=cut).invoke(QUERY)
    assert [d.id for d in out] == [d.id for d in base[:4]]


def test_repeated_inputs_are_ranked_once(fake_emb, docs):
    d0, d1 = docs[0], docs[1]
    out = OscillinkCompressor(embeddings=fake_emb, top_n=None).compress_documents([d0, d0, d1], QUERY)
    assert sorted(d.id for d in out) == sorted([d0.id, d1.id])
    prov = out[0].metadata["oscillink_receipt"]["provenance"]
    assert prov["duplicates_dropped"] == 1 and prov["candidates_in"] == 3
    ranks = {d.id: d.metadata["retrieval_rank"] for d in out}
    assert ranks == {d0.id: 1, d1.id: 3}  # first-stage positions of the inputs kept


def test_nested_metadata_is_not_shared_with_the_caller(fake_emb):
    src = [Document("alpha beta", id="a", metadata={"tags": [{"n": 1}, {"n": 2}]}), Document("gamma", id="b")]
    out = OscillinkCompressor(embeddings=fake_emb, top_n=None).compress_documents(src, "alpha")
    got = next(d for d in out if d.id == "a")
    got.metadata["tags"][1]["n"] = 999
    assert src[0].metadata["tags"][1]["n"] == 2


def test_trace_run_carries_counts_items_and_timings(fake_emb, docs, handler):
    comp = OscillinkCompressor(embeddings=fake_emb, top_n=4, score_threshold=-1e9)
    out = comp.compress_documents(docs + docs[:3], QUERY, callbacks=[handler])
    (start, end), = handler.rerank_runs()
    assert start["inputs"]["n_candidates"] == len(docs) + 3
    o = end["outputs"]
    assert o["n_candidates"] == len(docs) + 3 and o["duplicates_dropped"] == 3 and o["n_returned"] == 4
    assert [it["id"] for it in o["items"]] == [d.id for d in out]
    assert [it["score"] for it in o["items"]] == [d.metadata["relevance_score"] for d in out]
    assert o["below_threshold"] == [] and o["core_ms"] > 0 and o["total_ms"] >= o["core_ms"]
    assert o["state_sig"] == out[0].metadata["oscillink_receipt"]["state_sig"]
