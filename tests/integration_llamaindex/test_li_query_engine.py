"""End to end: a real VectorStoreIndex query engine with the packaged MiniLM model, MockLLM synthesis,
over the default (Simple) vector store and over a FAISS store, through ``query`` and ``aquery``."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.llms import MockLLM
from llama_index.core.schema import MetadataMode, QueryBundle
from llama_index.postprocessor.oscillink import OscillinkPostprocessor
from llama_index.vector_stores.faiss import FaissVectorStore

from oscillink_core import validate_receipt, verify_receipt

from .conftest import corpus_nodes

pytestmark = pytest.mark.slow

QUERY = "Which animals are cats?"


@pytest.fixture(scope="module")
def indexes(minilm):
    nodes = corpus_nodes()
    simple = VectorStoreIndex(nodes, embed_model=minilm)
    store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(384))
    fidx = VectorStoreIndex(nodes, embed_model=minilm, storage_context=StorageContext.from_defaults(vector_store=store))
    return {"simple": simple, "faiss": fidx}


def receipt_of(response) -> dict:
    return json.loads(response.source_nodes[0].node.metadata["oscillink_receipt"])


@pytest.mark.parametrize("kind, wiring", [("simple", "from_index"), ("simple", "plain"),
                                          ("faiss", "from_index"), ("faiss", "plain")])
async def test_query_and_aquery(indexes, minilm, li_settings, kind, wiring):
    li_settings(embed_model=minilm)  # the plain postprocessor embeds with Settings.embed_model
    index = indexes[kind]
    if wiring == "from_index":
        pp = OscillinkPostprocessor.from_index(index, top_n=3, sign_key="test-key")
    else:
        pp = OscillinkPostprocessor(top_n=3, sign_key="test-key")
    engine = index.as_query_engine(similarity_top_k=12, node_postprocessors=[pp], llm=MockLLM())

    response = engine.query(QUERY)
    aresponse = await engine.aquery(QUERY)
    for resp, query_vector in ((response, "query_bundle"), (aresponse, "embedded")):
        assert len(resp.source_nodes) == 3
        assert resp.source_nodes[0].node.metadata["topic"] == "cats"
        assert [n.node.metadata["oscillink_rank"] for n in resp.source_nodes] == [1, 2, 3]
        assert all(type(n.score) is float for n in resp.source_nodes)
        receipt = receipt_of(resp)
        validate_receipt(receipt)
        assert verify_receipt(receipt, "test-key")
        prov = receipt["provenance"]
        assert prov["vectors"] == ("vector_store" if wiring == "from_index" else "embedded")
        assert prov["candidates_in"] == 12 and prov["query_vector"] == query_vector
        assert prov["vector_store"] == (type(index.vector_store).__name__ if wiring == "from_index" else None)
        for n in resp.source_nodes:
            assert "state_sig" not in n.node.get_content(metadata_mode=MetadataMode.LLM)
            assert "state_sig" in n.node.get_content(metadata_mode=MetadataMode.ALL)
            assert n.node.get_content(metadata_mode=MetadataMode.NONE) in str(resp)  # MockLLM echoes the prompt
        assert "state_sig" not in str(resp) and "oscillink_receipt" not in str(resp)
    # the async path embeds the query itself; with the same model it gets the same vector and result
    assert receipt_of(aresponse)["state_sig"] == receipt_of(response)["state_sig"]
    assert [n.node.node_id for n in aresponse.source_nodes] == [n.node.node_id for n in response.source_nodes]


def test_stored_and_embedded_vectors_agree(indexes, minilm):
    """The store path returns the vectors the index stored; they match fresh embeddings of the node text,
    and both paths rank alike."""
    index = indexes["faiss"]
    retrieved = index.as_retriever(similarity_top_k=12).retrieve(QUERY)
    ids = [n.node.node_id for n in retrieved]
    positions = {nid: int(vid) for vid, nid in index.index_struct.nodes_dict.items()}
    stored = np.vstack([index.vector_store.client.reconstruct(positions[i]) for i in ids])
    fresh = np.asarray(minilm.get_text_embedding_batch([n.node.get_content(MetadataMode.EMBED) for n in retrieved]))
    np.testing.assert_allclose(stored, fresh, atol=1e-5)
    bundle = QueryBundle(QUERY, embedding=minilm.get_query_embedding(QUERY))
    out_store = OscillinkPostprocessor.from_index(index, top_n=5).postprocess_nodes(retrieved, query_bundle=bundle)
    out_embed = OscillinkPostprocessor(top_n=5, embed_model=minilm).postprocess_nodes(retrieved, query_bundle=bundle)
    assert [n.node.node_id for n in out_store] == [n.node.node_id for n in out_embed]
    np.testing.assert_allclose([n.score for n in out_store], [n.score for n in out_embed], atol=1e-4)
    assert all(set(n.node.metadata) == {"topic"} for n in retrieved)  # the retrieved nodes are untouched


def test_events_through_the_query_engine(indexes, li_settings, recorder):
    debug = LlamaDebugHandler()
    li_settings(callback_manager=CallbackManager([debug]))
    index = indexes["simple"]
    engine = index.as_query_engine(similarity_top_k=8, llm=MockLLM(),
                                   node_postprocessors=[OscillinkPostprocessor.from_index(index, top_n=2)])
    response = engine.query(QUERY)
    start = [e for e in recorder.events if type(e).__name__ == "ReRankStartEvent"]
    end = [e for e in recorder.events if type(e).__name__ == "ReRankEndEvent"]
    assert len(start) == 1 and len(end) == 1 and len(start[0].nodes) == 8
    assert [n.node.node_id for n in end[0].nodes] == [n.node.node_id for n in response.source_nodes]
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 1
    assert [n.node.node_id for n in pairs[0][1].payload["nodes"]] == [n.node.node_id for n in response.source_nodes]
