"""The frameworks' reranker conventions in the LlamaIndex postprocessor: relevance_score and
NodeWithScore.score, keep_retrieval_score, top_n=None, score_threshold, repeated inputs, deep
copies, the empty query, and what the instrumentation events carry."""

from __future__ import annotations

import pytest
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.oscillink import OscillinkPostprocessor

from .conftest import corpus_nodes, hash_vector


def nodes_with_vectors(dim: int = 64) -> list[NodeWithScore]:
    out = []
    for i, n in enumerate(corpus_nodes()):
        node = TextNode(id_=n.node_id, text=n.text, metadata={**n.metadata, "relevance_score": -1.0,
                                                              "tags": [{"n": 1}, {"n": 2}]},
                        embedding=hash_vector(n.text, dim).tolist())
        out.append(NodeWithScore(node=node, score=1.0 - 0.01 * i))
    return out


def bundle(text: str = "cats purr and sleep", dim: int = 64) -> QueryBundle:
    return QueryBundle(text, embedding=hash_vector(text, dim).tolist())


def test_relevance_score_and_node_score_agree_and_stale_values_go():
    out = OscillinkPostprocessor(top_n=5).postprocess_nodes(nodes_with_vectors(), query_bundle=bundle())
    for n in out:
        assert n.score == n.node.metadata["relevance_score"] == n.node.metadata["oscillink_score"] != -1.0
        assert "relevance_score" in n.node.excluded_llm_metadata_keys
    first = {n.node.node_id: n.score for n in nodes_with_vectors()}
    assert [n.node.metadata["retrieval_score"] for n in out] == [first[n.node.node_id] for n in out]
    dropped = OscillinkPostprocessor(top_n=5, keep_retrieval_score=False).postprocess_nodes(
        nodes_with_vectors(), query_bundle=bundle())
    assert all("retrieval_score" not in n.node.metadata for n in dropped)


def test_top_n_none_and_threshold():
    nodes = nodes_with_vectors()
    every = OscillinkPostprocessor(top_n=None).postprocess_nodes(nodes, query_bundle=bundle())
    assert len(every) == len(nodes)
    cut = every[6].score
    kept = OscillinkPostprocessor(top_n=None, score_threshold=cut).postprocess_nodes(nodes, query_bundle=bundle())
    assert [n.node.node_id for n in kept] == [n.node.node_id for n in every if n.score >= cut]
    prov = __import__("json").loads(kept[0].node.metadata["oscillink_receipt"])["provenance"]
    assert prov["below_threshold"] == [n.node.node_id for n in every if n.score < cut]
    with pytest.raises(ValueError, match="top_n"):
        OscillinkPostprocessor(top_n=0)


def test_repeated_inputs_rule_and_conflicting_ids():
    nodes = nodes_with_vectors()
    out = OscillinkPostprocessor(top_n=None).postprocess_nodes([nodes[0], nodes[0], nodes[1]], query_bundle=bundle())
    assert sorted(n.node.node_id for n in out) == sorted([nodes[0].node.node_id, nodes[1].node.node_id])
    ranks = {n.node.node_id: n.node.metadata["retrieval_rank"] for n in out}
    assert ranks == {nodes[0].node.node_id: 1, nodes[1].node.node_id: 3}
    other = NodeWithScore(node=TextNode(id_=nodes[0].node.node_id, text="something else",
                                        embedding=nodes[0].node.embedding), score=0.5)
    with pytest.raises(ValueError, match="share the id"):
        OscillinkPostprocessor().postprocess_nodes([nodes[0], other], query_bundle=bundle())


def test_nested_metadata_is_copied_deeply():
    nodes = nodes_with_vectors()
    out = OscillinkPostprocessor(top_n=3).postprocess_nodes(nodes, query_bundle=bundle())
    out[0].node.metadata["tags"][1]["n"] = 999
    assert all(n.node.metadata["tags"][1]["n"] == 2 for n in nodes)


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_a_clear_error(query, hash_embed):
    pp = OscillinkPostprocessor(embed_model=hash_embed)
    with pytest.raises(ValueError, match="empty query"):
        pp.postprocess_nodes(nodes_with_vectors(), query_str=query)


def test_events_carry_counts_items_and_timings(recorder):
    debug = LlamaDebugHandler()
    pp = OscillinkPostprocessor(top_n=4, callback_manager=CallbackManager([debug]))
    nodes = nodes_with_vectors()
    out = pp.postprocess_nodes(nodes + nodes[:2], query_bundle=bundle())
    start = next(e for e in recorder.events if e.class_name() == "ReRankStartEvent")
    end = next(e for e in recorder.events if e.class_name() == "ReRankEndEvent")
    assert start.tags["n_candidates"] == len(nodes) + 2
    t = end.tags
    assert t["n_candidates"] == len(nodes) + 2 and t["duplicates_dropped"] == 2 and t["n_returned"] == 4
    assert [it["id"] for it in t["items"]] == [n.node.node_id for n in out]
    assert t["core_ms"] > 0 and t["total_ms"] >= t["core_ms"]
    (_, end_event), = debug.get_event_pairs(CBEventType.RERANKING)
    assert end_event.payload["oscillink"]["items"] == t["items"]
