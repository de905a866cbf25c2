"""Chroma (a real ``chroma run`` server) and Qdrant (``qdrant-client`` local mode) through
llama-index-vector-stores-chroma / -qdrant: the postprocessor reads the stored vectors by node id
instead of embedding the node texts, and ranks as the core does on those vectors."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import QueryBundle, TextNode
from llama_index.postprocessor.oscillink import OscillinkPostprocessor

from oscillink_core import rerank

from .conftest import corpus_nodes

QUERY = "which cats sleep all day?"


def uuid_nodes() -> list[TextNode]:  # Qdrant point ids must be UUIDs (or ints)
    return [TextNode(id_=str(uuid.uuid5(uuid.NAMESPACE_URL, n.node_id)), text=n.text, metadata=n.metadata)
            for n in corpus_nodes()]


@pytest.fixture
def chroma_index(chroma_server, hash_embed):
    from llama_index.vector_stores.chroma import ChromaVectorStore

    client = chroma_server.client()
    name = f"li-{uuid.uuid4().hex[:12]}"
    collection = client.create_collection(name, embedding_function=None)
    store = ChromaVectorStore(chroma_collection=collection)
    index = VectorStoreIndex(corpus_nodes(), storage_context=StorageContext.from_defaults(vector_store=store),
                             embed_model=hash_embed)
    yield index, collection
    client.delete_collection(name)


@pytest.fixture
def qdrant_index(hash_embed):
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    store = QdrantVectorStore(client=client, collection_name="li")
    index = VectorStoreIndex(uuid_nodes(), storage_context=StorageContext.from_defaults(vector_store=store),
                             embed_model=hash_embed)
    yield index, client
    client.close()


def _check(index, hash_embed, stored_vectors, mode):
    retrieved = index.as_retriever(similarity_top_k=12).retrieve(QUERY)
    assert len(retrieved) == 12 and all(n.node.embedding is None for n in retrieved)
    hash_embed.text_calls = 0
    pp = OscillinkPostprocessor.from_index(index, top_n=4)
    qb = QueryBundle(QUERY, embedding=hash_embed.get_query_embedding(QUERY))
    out = pp.postprocess_nodes(retrieved, query_bundle=qb)
    assert hash_embed.text_calls == 0  # nothing re-embedded
    prov = json.loads(out[0].node.metadata["oscillink_receipt"])["provenance"]
    assert prov["vectors"] == "vector_store" and prov["vector_counts"]["vector_store"] == 12
    ids = [n.node.node_id for n in retrieved]
    ref = rerank(np.asarray(qb.embedding), stored_vectors(ids), k=4, ids=ids,
                 texts=[n.node.get_content() for n in retrieved], query_text=QUERY)
    assert [n.node.node_id for n in out] == ref.ids and [n.score for n in out] == ref.scores
    assert prov["score_kind"] == "similarity"
    first = {n.node.node_id: n.score for n in retrieved}
    assert [n.node.metadata["retrieval_score"] for n in out] == [first[n.node.node_id] for n in out]
    return pp, retrieved, qb


async def test_chroma_server_vectors_are_read_back(chroma_index, hash_embed):
    index, collection = chroma_index

    def stored(ids):
        got = collection.get(ids=ids, include=["embeddings"])
        by_id = dict(zip(got["ids"], got["embeddings"], strict=True))
        return np.asarray([by_id[i] for i in ids], dtype=np.float32)

    pp, retrieved, qb = _check(index, hash_embed, stored, "sync")
    aout = await pp.apostprocess_nodes(retrieved, query_bundle=qb)
    assert [n.node.node_id for n in aout] == [n.node.node_id for n in pp.postprocess_nodes(retrieved, query_bundle=qb)]
    assert hash_embed.text_calls == 0


def test_qdrant_local_vectors_are_read_back(qdrant_index, hash_embed):
    index, client = qdrant_index

    def stored(ids):
        pts = {str(p.id): p.vector for p in client.retrieve("li", ids, with_vectors=True)}
        vecs = [pts[i] if not isinstance(pts[i], dict) else next(iter(pts[i].values())) for i in ids]
        return np.asarray(vecs, dtype=np.float32)

    _check(index, hash_embed, stored, "sync")


def test_a_node_the_served_store_lacks_is_embedded_and_noted(chroma_index, hash_embed):
    from llama_index.core.schema import NodeWithScore

    index, _ = chroma_index
    retrieved = index.as_retriever(similarity_top_k=5).retrieve(QUERY)
    stray = NodeWithScore(node=TextNode(id_="not-stored", text="a stray node about cats"), score=0.1)
    hash_embed.text_calls = 0
    out = OscillinkPostprocessor.from_index(index, top_n=3).postprocess_nodes(
        retrieved + [stray], query_bundle=QueryBundle(QUERY, embedding=hash_embed.get_query_embedding(QUERY)))
    prov = json.loads(out[0].node.metadata["oscillink_receipt"])["provenance"]
    assert prov["vectors"] == "embedded" and "not in the Chroma collection" in prov["vector_store_note"]
    assert hash_embed.text_calls == 6
