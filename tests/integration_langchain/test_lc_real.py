"""The compressor and the retriever with the real packaged model over a real FAISS index and an
InMemoryVectorStore (bundled demo corpus): ContextualCompressionRetriever and LCEL, sync and async."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.runnables import RunnablePassthrough

from langchain_oscillink import OscillinkCompressor, OscillinkRetriever
from oscillink_core import validate_receipt, verify_receipt

from ._lc_helpers import questions

pytestmark = pytest.mark.slow

KEY = "test-key"


def topic_of(doc_id: str) -> str:
    return doc_id.split("-")[0]


@pytest.fixture(scope="module")
def qs():
    return questions()


@pytest.mark.parametrize("which", ["faiss", "memory"])
def test_compressor_contextual_compression_and_lcel_sync_async(stores, qs, which, handler):
    from langchain_classic.retrievers import ContextualCompressionRetriever

    emb, faiss_store, memory, _ = stores
    store = faiss_store if which == "faiss" else memory
    base = store.as_retriever(search_kwargs={"k": 30})
    comp = OscillinkCompressor(embeddings=emb, top_n=4, vectorstore=store, signing_key=KEY)
    ccr = ContextualCompressionRetriever(base_compressor=comp, base_retriever=base)
    lcel = {"documents": base, "query": RunnablePassthrough()} | comp.as_runnable()
    for q in list(qs.values())[:3]:
        query = q["question"]
        outs = [ccr.invoke(query, config={"callbacks": [handler]}), asyncio.run(ccr.ainvoke(query)),
                lcel.invoke(query), asyncio.run(lcel.ainvoke(query))]
        ids = [[d.id for d in out] for out in outs]
        assert all(x == ids[0] for x in ids), ids
        assert len(ids[0]) == 4
        # the reranked context stays on the question's topic (the corpus has 7 topics)
        want = topic_of(q["relevant"][0])
        assert sum(topic_of(i) == want for i in ids[0]) >= 3, (query, ids[0])
        rec = outs[0][0].metadata["oscillink_receipt"]
        validate_receipt(rec)
        assert verify_receipt(rec, KEY)
        assert rec["provenance"]["vectors"] == "store"
        assert rec["inputs"]["n"] == 30 and [b["id"] for b in rec["bundle"]] == ids[0]
    assert len(handler.rerank_runs()) == 3


@pytest.mark.parametrize("which", ["faiss", "memory"])
def test_retriever_real_model_sync_async(stores, qs, which):
    emb, faiss_store, memory, _ = stores
    store = faiss_store if which == "faiss" else memory
    r = OscillinkRetriever(vectorstore=store, k=4, fetch_k=40, signing_key=KEY)
    comp = OscillinkCompressor(embeddings=emb, top_n=4)
    for q in list(qs.values())[:3]:
        out = r.invoke(q["question"])
        aout = asyncio.run(r.ainvoke(q["question"]))
        assert [d.id for d in out] == [d.id for d in aout]
        rec = out[0].metadata["oscillink_receipt"]
        assert verify_receipt(rec, KEY) and rec["provenance"]["vectors"] == "store"
        # the same candidates through the compressor's embedding path give the same ranking
        cands = store.similarity_search(q["question"], k=40)
        assert [d.id for d in comp.compress_documents(cands, q["question"])] == [d.id for d in out]
