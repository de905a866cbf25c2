"""Fast, offline tests of langchain_oscillink with fake (deterministic) embeddings."""

from __future__ import annotations

import asyncio
import copy
import doctest
import json
import threading
import warnings

import faiss
import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

import langchain_oscillink
import oscillink_core
from langchain_oscillink import FaissCandidateSource, OscillinkCompressor, OscillinkRetriever
from langchain_oscillink import _core as lc_core
from oscillink_core import rerank, strip_timings, validate_receipt, verify_receipt

from ._lc_helpers import CountingEmbeddings, TextOnlyStore

QUERY = "subject 3 with detail 2"
META_KEYS = {"relevance_score", "oscillink_score", "oscillink_rank", "retrieval_score", "retrieval_rank",
             "oscillink_receipt"}


def community_faiss(emb, docs, index=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.docstore.in_memory import InMemoryDocstore
        from langchain_community.vectorstores import FAISS
    if index is None:
        return FAISS.from_documents(docs, emb, ids=[d.id for d in docs])
    vecs = np.asarray(emb.embed_documents([d.page_content for d in docs]), dtype=np.float32)
    if not index.is_trained:
        index.train(vecs)
    store = FAISS(emb, index, InMemoryDocstore(), {})
    store.add_embeddings([(d.page_content, v.tolist()) for d, v in zip(docs, vecs, strict=True)],
                         metadatas=[d.metadata for d in docs], ids=[d.id for d in docs])
    return store


def expected_by_core(store: InMemoryVectorStore, emb, query: str, fetch_k: int, k: int):
    """Independent computation: the store's top fetch_k, its own vectors, unit rows, oscillink_core.rerank."""
    q = np.asarray(emb.embed_query(query), dtype=np.float32)
    hits = store.similarity_search_with_score_by_vector(q.tolist(), k=fetch_k)
    Y = np.asarray([store.store[d.id]["vector"] for d, _ in hits], dtype=np.float32)
    return rerank(q, Y, k=k, ids=[d.id for d, _ in hits],  # the core scales to unit length (params.normalize)
                  texts=[d.page_content for d, _ in hits], query_text=query)


# ---------------------------------------------------------------- package surface
def test_doctests_of_the_package_pass():
    for mod in (lc_core, langchain_oscillink._vectors):
        res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert res.attempted > 0 and res.failed == 0, mod.__name__


# ---------------------------------------------------------------- compressor
def test_compressor_returns_new_documents_and_leaves_inputs_alone(fake_emb, docs):
    before = [d.model_dump() for d in docs]
    comp = OscillinkCompressor(embeddings=fake_emb, top_n=4, signing_key="k")
    out = comp.compress_documents(docs, QUERY)
    assert [d.model_dump() for d in docs] == before
    assert len(out) == 4
    by_id = {d.id: d for d in docs}
    for rank, d in enumerate(out, start=1):
        src = by_id[d.id]
        assert d is not src and d.metadata is not src.metadata
        assert d.page_content == src.page_content
        assert set(d.metadata) == set(src.metadata) | META_KEYS
        assert d.metadata["i"] == src.metadata["i"]
        assert type(d.metadata["oscillink_score"]) is float and type(d.metadata["oscillink_rank"]) is int
        assert type(d.metadata["retrieval_score"]) is float and d.metadata["oscillink_rank"] == rank
        json.dumps(d.metadata)  # plain JSON types only
    scores = [d.metadata["oscillink_score"] for d in out]
    assert scores == sorted(scores, reverse=True) or comp.params.mmr_lambda < 1


def test_compressor_receipt_binds_ids_and_verifies(fake_emb, docs):
    comp = OscillinkCompressor(embeddings=fake_emb, top_n=3, signing_key=b"secret")
    out = comp.compress_documents(docs, QUERY)
    rec = out[0].metadata["oscillink_receipt"]
    validate_receipt(rec)
    assert verify_receipt(rec, b"secret") and not verify_receipt(rec, b"other")
    assert [b["id"] for b in rec["bundle"]] == [d.id for d in out]
    assert rec["provenance"]["vectors"] == "reembedded" and rec["provenance"]["reason"] == "no vectorstore given"
    tampered = copy.deepcopy(rec)
    tampered["provenance"]["vectors"] = "store"
    assert not verify_receipt(tampered, b"secret")
    # same inputs -> same receipt (timings aside); other ids for the same texts -> other state_sig
    again = comp.compress_documents(docs, QUERY)[0].metadata["oscillink_receipt"]
    assert strip_timings(again) == strip_timings(rec)
    renamed = [Document(page_content=d.page_content, id=f"x{d.id}", metadata=d.metadata) for d in docs]
    other = comp.compress_documents(renamed, QUERY)[0].metadata["oscillink_receipt"]
    assert other["state_sig"] != rec["state_sig"]
    assert [b["id"] for b in other["bundle"]] == ["x" + b["id"] for b in rec["bundle"]]


def test_compressor_matches_the_core_on_the_same_vectors(fake_emb, docs):
    out = OscillinkCompressor(embeddings=fake_emb, top_n=5).compress_documents(docs, QUERY)
    Y = np.asarray(fake_emb.embed_documents([d.page_content for d in docs]), dtype=np.float32)
    q = np.asarray(fake_emb.embed_query(QUERY), dtype=np.float32)
    ref = rerank(q, Y, k=5, ids=[d.id for d in docs], texts=[d.page_content for d in docs], query_text=QUERY)
    assert [d.id for d in out] == ref.ids
    assert out[0].metadata["oscillink_receipt"]["state_sig"] == ref.receipt["state_sig"]
    assert [d.metadata["oscillink_score"] for d in out] == ref.scores


def test_compressor_edge_cases(fake_emb, docs):
    comp = OscillinkCompressor(embeddings=fake_emb, top_n=10)
    assert comp.compress_documents([], QUERY) == []
    assert asyncio.run(comp.acompress_documents([], QUERY)) == []
    few = comp.compress_documents(docs[:4], QUERY)
    assert sorted(d.id for d in few) == sorted(d.id for d in docs[:4])
    assert [d.metadata["oscillink_rank"] for d in few] == [1, 2, 3, 4]
    one = comp.compress_documents(docs[:1], QUERY)
    assert [d.id for d in one] == [docs[0].id]


def test_compressor_ids_fallback_and_duplicates(fake_emb):
    docs = [Document("alpha beta"), Document("gamma", id="g"), Document("gamma", id="g"), Document("eps"),
            Document("alpha beta")]
    out = OscillinkCompressor(embeddings=fake_emb, top_n=None).compress_documents(docs, "alpha")
    rec = out[0].metadata["oscillink_receipt"]
    ids = [b["id"] for b in rec["bundle"]]
    assert len(ids) == 3 and "g" in ids and sum(i.startswith("pos") for i in ids) == 2
    assert rec["provenance"]["duplicates_dropped"] == 2 and rec["provenance"]["candidates_in"] == 5
    # the returned documents keep their own (possibly missing) ids
    assert sorted(str(d.id) for d in out) == sorted(["None", "None", "g"])
    # one id, two texts: not one candidate, a clear error
    with pytest.raises(ValueError, match="share the id 'g'"):
        OscillinkCompressor(embeddings=fake_emb).compress_documents([Document("a", id="g"), Document("b", id="g")], "a")


def test_compressor_rejects_bad_configuration(fake_emb):
    with pytest.raises(ValueError, match="unknown lattice parameter"):
        OscillinkCompressor(embeddings=fake_emb, params={"lamQQ": 1.0})
    with pytest.raises(ValueError, match="top_n"):
        OscillinkCompressor(embeddings=fake_emb, top_n=0)
    with pytest.raises(ValueError):
        OscillinkCompressor(embeddings=fake_emb, unknown_field=1)
    profile = {"format": "oscillink-core/profile", "params": {"lamC": 0.9, "kneighbors": 4}}
    comp = OscillinkCompressor(embeddings=fake_emb, params=profile)
    assert comp.params.lamC == 0.9 and comp.params.kneighbors == 4


def test_compressor_reuses_store_vectors(fake_emb, docs, memory_store):
    comp = OscillinkCompressor(embeddings=fake_emb, top_n=3, vectorstore=memory_store)
    out = comp.compress_documents(docs[:20], QUERY)
    assert fake_emb.n_documents == 0  # nothing re-embedded
    prov = out[0].metadata["oscillink_receipt"]["provenance"]
    assert prov["vectors"] == "store" and prov["source"] == "InMemoryVectorStore" and "reason" not in prov
    # documents the store does not hold: re-embedded, with the reason
    strangers = [Document(page_content=d.page_content, id=f"new-{d.id}") for d in docs[:5]]
    prov = comp.compress_documents(strangers, QUERY)[0].metadata["oscillink_receipt"]["provenance"]
    assert prov["vectors"] == "reembedded" and "not in the InMemoryVectorStore" in prov["reason"]
    assert fake_emb.n_documents == 5


def test_compressor_embedding_size_mismatch(docs):
    store = InMemoryVectorStore(CountingEmbeddings(size=16))
    store.add_documents(docs)
    comp = OscillinkCompressor(embeddings=CountingEmbeddings(size=32), vectorstore=store)
    with pytest.raises(ValueError, match="embedding size mismatch: the query embedding has 32 dimensions"):
        comp.compress_documents(docs, QUERY)


def test_compressor_callbacks_show_the_rerank(fake_emb, docs, handler):
    comp = OscillinkCompressor(embeddings=fake_emb, top_n=3)
    out = comp.compress_documents(docs[:25], QUERY, callbacks=[handler])
    (start, end), = handler.rerank_runs()
    assert start["inputs"]["n_candidates"] == 25 and start["inputs"]["top_n"] == 3
    assert end["outputs"]["n_candidates"] == 25 and end["outputs"]["n_returned"] == 3
    assert end["outputs"]["rerank_ms"] > 0 and end["outputs"]["total_ms"] >= end["outputs"]["rerank_ms"]
    assert 0 < end["outputs"]["core_ms"] <= end["outputs"]["rerank_ms"]
    assert end["outputs"]["cg_iterations"] == out[0].metadata["oscillink_receipt"]["solver"]["iterations"]
    assert end["outputs"]["state_sig"] == out[0].metadata["oscillink_receipt"]["state_sig"]


async def test_compressor_async_solves_off_the_event_loop(fake_emb, docs, handler, monkeypatch):
    threads = []

    def spy(*args, **kwargs):
        threads.append(threading.get_ident())
        return rerank(*args, **kwargs)

    monkeypatch.setattr(oscillink_core, "rerank", spy)
    comp = OscillinkCompressor(embeddings=fake_emb, top_n=3)
    out = await comp.acompress_documents(docs, QUERY, callbacks=[handler])
    assert threads and threads[0] != threading.get_ident()
    assert [d.id for d in out] == [d.id for d in comp.compress_documents(docs, QUERY)]
    assert len(handler.rerank_runs()) == 1


def test_compressor_in_contextual_compression_retriever(fake_emb, memory_store, handler):
    from langchain_classic.retrievers import ContextualCompressionRetriever

    comp = OscillinkCompressor(embeddings=fake_emb, top_n=3)
    ccr = ContextualCompressionRetriever(base_compressor=comp,
                                         base_retriever=memory_store.as_retriever(search_kwargs={"k": 20}))
    out = ccr.invoke(QUERY, config={"callbacks": [handler]})
    aout = asyncio.run(ccr.ainvoke(QUERY))
    assert len(out) == 3 and [d.id for d in out] == [d.id for d in aout]
    base = memory_store.similarity_search(QUERY, k=20)
    assert {d.id for d in out} <= {d.id for d in base}
    (start, end), = handler.rerank_runs()
    assert start["parent_run_id"] == handler.retriever_runs[0]["run_id"]  # a child of the retriever run
    assert start["inputs"]["n_candidates"] == 20


def test_compressor_in_lcel_with_core_only(fake_emb, memory_store, handler):
    comp = OscillinkCompressor(embeddings=fake_emb, top_n=3)
    base = memory_store.as_retriever(search_kwargs={"k": 20})
    spelled = {"documents": base, "query": RunnablePassthrough()} | comp.as_runnable()
    short = comp.as_runnable(base)
    ref = [d.id for d in comp.compress_documents(base.invoke(QUERY), QUERY)]
    assert [d.id for d in spelled.invoke(QUERY)] == ref
    assert [d.id for d in short.invoke(QUERY, config={"callbacks": [handler]})] == ref
    assert [d.id for d in asyncio.run(short.ainvoke(QUERY))] == ref
    assert [d.id for d in asyncio.run(spelled.ainvoke(QUERY))] == ref
    (start, _), = handler.rerank_runs()
    assert start["parent_run_id"] is not None
    with pytest.raises(ValueError, match="expects"):
        comp.as_runnable().invoke(QUERY)


# ---------------------------------------------------------------- retriever
def test_retriever_inmemory_reuses_store_vectors_and_matches_core(fake_emb, memory_store):
    r = OscillinkRetriever(vectorstore=memory_store, k=4, fetch_k=15, signing_key="k")
    out = r.invoke(QUERY)
    assert fake_emb.n_documents == 0 and fake_emb.n_queries == 1  # query embedded once, passages never
    ref = expected_by_core(memory_store, fake_emb, QUERY, 15, 4)
    assert [d.id for d in out] == ref.ids
    rec = out[0].metadata["oscillink_receipt"]
    assert rec["state_sig"] == ref.receipt["state_sig"] and verify_receipt(rec, "k")
    prov = rec["provenance"]
    assert prov["vectors"] == "store" and prov["fetch_k"] == 15 and prov["source"] == "InMemoryVectorStore"
    hits = dict((d.id, s) for d, s in memory_store.similarity_search_with_score(QUERY, k=15))
    for d in out:
        assert d.metadata["retrieval_score"] == pytest.approx(hits[d.id])
        assert set(d.metadata) == {"i", "tags"} | META_KEYS


def test_retriever_per_call_k_fetch_k_and_errors(fake_emb, memory_store):
    r = OscillinkRetriever(vectorstore=memory_store)
    assert len(r.invoke(QUERY, k=2)) == 2
    out = r.invoke(QUERY, k=6, fetch_k=3)  # fetch_k is raised to k
    assert len(out) == 6 and out[0].metadata["oscillink_receipt"]["provenance"]["fetch_k"] == 6
    assert len(r.invoke(QUERY, k=100)) == 40  # more than the store holds: all of it
    only = r.invoke(QUERY, filter=lambda d: d.metadata["i"] % 2 == 0)
    assert all(d.metadata["i"] % 2 == 0 for d in only)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        r.invoke(QUERY, k=0)
    with pytest.raises(ValueError, match="no Embeddings|VectorStore"):
        OscillinkRetriever(vectorstore=object())
    assert OscillinkRetriever(vectorstore=InMemoryVectorStore(fake_emb)).invoke(QUERY) == []


def test_retriever_embedding_size_mismatch(memory_store):
    r = OscillinkRetriever(vectorstore=memory_store, embeddings=CountingEmbeddings(size=8))
    with pytest.raises(ValueError, match="embedding size mismatch.*8 dimensions.*32-dimensional"):
        r.invoke(QUERY)


def test_retriever_generic_store_reembeds_and_says_so(fake_emb, docs):
    inner = InMemoryVectorStore(fake_emb)
    inner.add_documents(docs)
    fake_emb.reset()
    r = OscillinkRetriever(vectorstore=TextOnlyStore(inner), k=3, fetch_k=12)
    out = r.invoke(QUERY)
    prov = out[0].metadata["oscillink_receipt"]["provenance"]
    assert prov["vectors"] == "reembedded" and "does not expose stored vectors" in prov["reason"]
    assert prov["score_source"] == "similarity_search_with_score"
    assert fake_emb.n_documents == 12
    # same vectors either way (the fake model is deterministic): same ranking and state_sig as the reuse path
    ref = OscillinkRetriever(vectorstore=inner, k=3, fetch_k=12).invoke(QUERY)
    assert [d.id for d in out] == [d.id for d in ref]
    assert prov and out[0].metadata["oscillink_receipt"]["state_sig"] == ref[0].metadata["oscillink_receipt"][
        "state_sig"]


async def test_retriever_async_matches_sync_and_solves_off_the_loop(fake_emb, memory_store, handler, monkeypatch):
    threads = []

    def spy(*args, **kwargs):
        threads.append(threading.get_ident())
        return rerank(*args, **kwargs)

    r = OscillinkRetriever(vectorstore=memory_store, k=3, fetch_k=20)
    ref = r.invoke(QUERY)
    monkeypatch.setattr(oscillink_core, "rerank", spy)
    out = await r.ainvoke(QUERY, config={"callbacks": [handler]})
    assert threads and threads[0] != threading.get_ident()
    assert [d.id for d in out] == [d.id for d in ref]
    (start, end), = handler.rerank_runs()
    assert start["inputs"]["n_candidates"] == 20 and end["outputs"]["vectors"] == "store"
    assert start["parent_run_id"] == handler.retriever_runs[0]["run_id"]


def test_retriever_over_community_faiss_does_not_touch_the_docstore(fake_emb, docs, handler):
    store = community_faiss(fake_emb, docs)
    snapshot = {i: copy.deepcopy(store.docstore.search(i).model_dump()) for i in store.index_to_docstore_id.values()}
    fake_emb.reset()
    r = OscillinkRetriever(vectorstore=store, k=4, fetch_k=20)
    out = r.invoke(QUERY, config={"callbacks": [handler]})
    aout = asyncio.run(r.ainvoke(QUERY))
    assert [d.id for d in out] == [d.id for d in aout]
    assert fake_emb.n_documents == 0
    for i, before in snapshot.items():
        assert store.docstore.search(i).model_dump() == before
    for d in out:
        assert d is not store.docstore.search(d.id)
    prov = out[0].metadata["oscillink_receipt"]["provenance"]
    assert prov["vectors"] == "store" and prov["faiss_index"] == "IndexFlatL2"
    hits = dict((d.id, s) for d, s in store.similarity_search_with_score(QUERY, k=20))
    # an L2 store gives distances: named so, never as a retrieval_score
    assert [d.metadata["retrieval_distance"] for d in out] == [pytest.approx(float(hits[d.id])) for d in out]
    assert all("retrieval_score" not in d.metadata for d in out) and prov["score_kind"] == "distance"
    # after a delete the docstore-id map is rebuilt; the labels must follow it
    store.delete([docs[0].id, docs[5].id])
    out2 = r.invoke(QUERY, fetch_k=38)
    assert out2[0].metadata["oscillink_receipt"]["provenance"]["vectors"] == "store"
    assert {docs[0].id, docs[5].id}.isdisjoint(d.id for d in out2)


def test_community_faiss_ivf_without_direct_map_reembeds(fake_emb, docs):
    quantizer = faiss.IndexFlatL2(32)
    ivf = faiss.IndexIVFFlat(quantizer, 32, 2)
    store = community_faiss(fake_emb, docs, index=ivf)
    ivf.nprobe = 2  # exhaustive: same candidates as a flat index
    fake_emb.reset()
    r = OscillinkRetriever(vectorstore=store, k=3, fetch_k=15)
    out = r.invoke(QUERY)
    prov = out[0].metadata["oscillink_receipt"]["provenance"]
    assert prov["vectors"] == "reembedded" and "IndexIVFFlat cannot reconstruct" in prov["reason"]
    assert fake_emb.n_documents == 15
    ivf.make_direct_map()
    fake_emb.reset()
    out_dm = r.invoke(QUERY)
    prov_dm = out_dm[0].metadata["oscillink_receipt"]["provenance"]
    assert prov_dm["vectors"] == "store" and fake_emb.n_documents == 0
    assert [d.id for d in out] == [d.id for d in out_dm]
    assert out[0].metadata["oscillink_receipt"]["state_sig"] == out_dm[0].metadata["oscillink_receipt"]["state_sig"]


def test_raw_faiss_candidate_source_flat_idmap_and_idmap2(fake_emb, docs):
    vecs = np.asarray(fake_emb.embed_documents([d.page_content for d in docs]), dtype=np.float32)
    flat = faiss.IndexFlatIP(32)
    flat.add(vecs)
    labels = np.arange(1000, 1000 + len(docs), dtype=np.int64)
    idmap = faiss.IndexIDMap(faiss.IndexFlatIP(32))
    idmap.add_with_ids(vecs, labels)
    idmap2 = faiss.IndexIDMap2(faiss.IndexFlatIP(32))
    idmap2.add_with_ids(vecs, labels)
    by_label = dict(zip(labels.tolist(), docs, strict=True))
    results = {}
    for name, src in (("flat", FaissCandidateSource(flat, docs)), ("idmap", FaissCandidateSource(idmap, by_label)),
                      ("idmap2", FaissCandidateSource(idmap2, by_label))):
        fake_emb.reset()
        out = OscillinkRetriever(vectorstore=src, embeddings=fake_emb, k=3, fetch_k=12).invoke(QUERY)
        results[name] = (out, fake_emb.n_documents)
    for name, want, n_embedded in (("flat", "store", 0), ("idmap", "reembedded", 12), ("idmap2", "store", 0)):
        out, n = results[name]
        prov = out[0].metadata["oscillink_receipt"]["provenance"]
        assert prov["vectors"] == want and n == n_embedded, name
        assert prov["score_source"].startswith("index.search: inner product")
    sigs = {name: out[0].metadata["oscillink_receipt"]["state_sig"] for name, (out, _) in results.items()}
    assert len(set(sigs.values())) == 1, sigs
    assert "IndexIDMap cannot reconstruct" in results["idmap"][0][0].metadata["oscillink_receipt"]["provenance"][
        "reason"]
    with pytest.raises(ValueError, match="ntotal = 40"):
        FaissCandidateSource(flat, docs[:3])
    with pytest.raises(ValueError, match="embedding size mismatch"):
        OscillinkRetriever(vectorstore=FaissCandidateSource(flat, docs), embeddings=CountingEmbeddings(size=8)).invoke(
            QUERY)
    with pytest.raises(ValueError, match="needs embeddings"):
        OscillinkRetriever(vectorstore=FaissCandidateSource(flat, docs))


def test_inmemory_vector_cache_follows_overwritten_documents(fake_emb, docs, memory_store):
    comp = OscillinkCompressor(embeddings=fake_emb, top_n=3, vectorstore=memory_store)
    first = comp.compress_documents(docs[:10], QUERY)[0].metadata["oscillink_receipt"]
    memory_store.add_documents([Document(page_content=QUERY, id="d3")])  # same id, new text and vector
    fresh = [Document(page_content=memory_store.store[d.id]["text"], id=d.id) for d in docs[:10]]
    second = comp.compress_documents(fresh, QUERY)[0].metadata["oscillink_receipt"]
    Y = np.asarray([memory_store.store[d.id]["vector"] for d in fresh], dtype=np.float32)
    q = np.asarray(fake_emb.embed_query(QUERY), dtype=np.float32)
    ref = rerank(q, Y, k=3, ids=[d.id for d in fresh], texts=[d.page_content for d in fresh], query_text=QUERY)
    assert second["state_sig"] == ref.receipt["state_sig"] != first["state_sig"]
    assert second["bundle"][0]["id"] == "d3"  # the passage now equal to the query wins


def test_signing_key_is_not_shown_or_serialised(fake_emb, memory_store):
    comp = OscillinkCompressor(embeddings=fake_emb, signing_key="hunter2-secret")
    retr = OscillinkRetriever(vectorstore=memory_store, signing_key=b"hunter2-secret")
    for obj in (comp, retr):
        assert "hunter2" not in repr(obj)
        assert "signing_key" not in obj.model_dump()
    rec = retr.invoke(QUERY)[0].metadata["oscillink_receipt"]
    assert "hunter2" not in json.dumps(rec) and verify_receipt(rec, b"hunter2-secret")
