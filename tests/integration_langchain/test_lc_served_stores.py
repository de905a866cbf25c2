"""Chroma (a real ``chroma run`` server) and Qdrant (``qdrant-client`` local mode) through
langchain-chroma and langchain-qdrant: the stored vectors are read back by id, never re-embedded,
and the result equals the core's on those vectors."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from langchain_core.documents import Document

from langchain_oscillink import OscillinkCompressor, OscillinkRetriever
from oscillink_core import rerank, verify_receipt

QUERY = "subject 3 with detail 2"


@pytest.fixture
def chroma_store(chroma_server, fake_emb, docs):
    from langchain_chroma import Chroma

    store = Chroma(collection_name=f"lc-{uuid.uuid4().hex[:12]}", embedding_function=fake_emb,
                   client=chroma_server.client())
    store.add_documents(docs, ids=[d.id for d in docs])
    fake_emb.reset()
    yield store
    store.delete_collection()


@pytest.fixture
def qdrant_store(fake_emb, docs):
    from langchain_qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient
    from qdrant_client.models import Distance, VectorParams

    client = QdrantClient(location=":memory:")
    client.create_collection("lc", vectors_config=VectorParams(size=32, distance=Distance.COSINE))
    store = QdrantVectorStore(client=client, collection_name="lc", embedding=fake_emb)
    store.add_documents(docs, ids=[str(uuid.uuid5(uuid.NAMESPACE_URL, d.id)) for d in docs])
    fake_emb.reset()
    yield store
    client.close()


def _reference(vectors: np.ndarray, qvec, ids, k, texts):
    """The core on the same inputs the adapter passes: vectors, ids, the passages' texts, the query."""
    return rerank(np.asarray(qvec, dtype=np.float32), vectors, k=k, ids=ids, texts=texts, query_text=QUERY)


def test_chroma_server_retriever_reuses_vectors(chroma_store, fake_emb, handler):
    r = OscillinkRetriever(vectorstore=chroma_store, k=4, fetch_k=15, signing_key="k")
    out = r.invoke(QUERY, config={"callbacks": [handler]})
    assert fake_emb.n_documents == 0 and fake_emb.n_queries == 1
    rec = out[0].metadata["oscillink_receipt"]
    prov = rec["provenance"]
    assert prov["vectors"] == "store" and "collection.get" in prov["vector_access"]
    assert prov["score_kind"] == "distance" and verify_receipt(rec, "k")
    # independent: the same search, the vectors straight from the server, the core
    q = fake_emb.embed_query(QUERY)
    hits = chroma_store.similarity_search_by_vector_with_relevance_scores(q, k=15)  # (doc, distance)
    ids = [d.id for d, _ in hits]
    got = chroma_store._collection.get(ids=ids, include=["embeddings"])
    by_id = dict(zip(got["ids"], got["embeddings"], strict=True))
    ref = _reference(np.asarray([by_id[i] for i in ids], dtype=np.float32), q, ids, 4,
                     [d.page_content for d, _ in hits])
    assert [d.id for d in out] == ref.ids and rec["state_sig"] == ref.receipt["state_sig"]
    dist = dict((d.id, s) for d, s in hits)
    assert [d.metadata["retrieval_distance"] for d in out] == [pytest.approx(dist[d.id]) for d in out]
    assert all("retrieval_score" not in d.metadata for d in out)
    (_, end), = handler.rerank_runs()
    assert end["outputs"]["vectors"] == "store" and end["outputs"]["n_candidates"] == 15


async def test_chroma_server_compressor_and_async(chroma_store, fake_emb, docs):
    comp = OscillinkCompressor(embeddings=fake_emb, vectorstore=chroma_store, top_n=3)
    out = comp.compress_documents(docs[:12], QUERY)
    assert fake_emb.n_documents == 0
    assert out[0].metadata["oscillink_receipt"]["provenance"]["vectors"] == "store"
    aout = await OscillinkRetriever(vectorstore=chroma_store, k=3, fetch_k=12).ainvoke(QUERY)
    assert aout[0].metadata["oscillink_receipt"]["provenance"]["vectors"] == "store"
    # a document the collection does not hold: re-embedded, and the receipt says why
    stray = docs[:5] + [Document("not in the collection", id="nowhere")]
    fell = comp.compress_documents(stray, QUERY)
    prov = fell[0].metadata["oscillink_receipt"]["provenance"]
    assert prov["vectors"] == "reembedded" and "not in the Chroma collection" in prov["reason"]
    assert fake_emb.n_documents == len(stray)


async def test_qdrant_local_retriever_and_compressor_reuse_vectors(qdrant_store, fake_emb, docs):
    r = OscillinkRetriever(vectorstore=qdrant_store, k=4, fetch_k=15)
    out = r.invoke(QUERY)
    aout = await r.ainvoke(QUERY)
    assert fake_emb.n_documents == 0 and [d.id for d in out] == [d.id for d in aout]
    prov = out[0].metadata["oscillink_receipt"]["provenance"]
    assert prov["vectors"] == "store" and "retrieve" in prov["vector_access"] and prov["score_kind"] == "similarity"
    q = fake_emb.embed_query(QUERY)
    hits = qdrant_store.similarity_search_with_score_by_vector(q, k=15)
    pids = [d.metadata["_id"] for d, _ in hits]
    pts = {p.id: p.vector for p in qdrant_store.client.retrieve("lc", pids, with_vectors=True)}
    Y = np.asarray([pts[p] for p in pids], dtype=np.float32)
    ref = _reference(Y, q, None, 4, [d.page_content for d, _ in hits])
    assert [d.metadata["_id"] for d in out] == [pids[i] for i in ref.indices]
    assert [d.metadata["retrieval_score"] for d in out] == [pytest.approx(s) for d, s in
                                                            (hits[i] for i in ref.indices)]
    comp = OscillinkCompressor(embeddings=fake_emb, vectorstore=qdrant_store, top_n=3)
    cout = comp.compress_documents([d for d, _ in hits], QUERY)
    assert fake_emb.n_documents == 0
    assert cout[0].metadata["oscillink_receipt"]["provenance"]["vectors"] == "store"
