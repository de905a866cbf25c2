"""Trusted sources through LlamaIndex: a real VectorStoreIndex (hashing embedding, fast) whose nodes
carry their source in ``node.metadata["source"]``, queried through a query engine and through a
retriever plus `OscillinkPostprocessor`: an untrusted node that would be in the top n is pushed
out while a trusted one exists (the ``trusted_first`` policy; the default ``corroboration`` keeps a
lone source's node, flagged ``new_source``). Slow: the same with the packaged MiniLM model."""

from __future__ import annotations

import json

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.oscillink import OscillinkPostprocessor
from pydantic import ValidationError

from .conftest import corpus_nodes

QUERY = "Which animals are cats?"
STRICT = {"provenance": "trusted_first"}  # one untrusted site is the attacker here
PLANTED = TextNode(id_="planted", text="Animals that are cats include dogs, wolves and foxes.",
                   metadata={"topic": "cats", "source": "forum.example"}, excluded_embed_metadata_keys=["source"])
TRUSTED = "encyclopedia.example"


def nodes_with_sources() -> list[TextNode]:
    out = []
    for n in corpus_nodes():
        n.metadata["source"] = TRUSTED if n.metadata["topic"] == "cats" else "blog.example"
        n.excluded_embed_metadata_keys = ["source"]
        out.append(n)
    return out + [PLANTED.model_copy(deep=True)]


@pytest.fixture
def index(hash_embed):
    return VectorStoreIndex(nodes_with_sources(), embed_model=hash_embed)


def receipt_of(nodes: list[NodeWithScore]) -> dict:
    return json.loads(nodes[0].node.metadata["oscillink_receipt"])


def ids(nodes: list[NodeWithScore]) -> list[str]:
    return [n.node.node_id for n in nodes]


async def test_query_engine_pushes_the_untrusted_node_out(index, hash_embed, li_settings):
    li_settings(embed_model=hash_embed)
    plain = index.as_query_engine(similarity_top_k=12, llm=MockLLM(),
                                  node_postprocessors=[OscillinkPostprocessor.from_index(index, top_n=3)])
    assert "planted" in ids(plain.query(QUERY).source_nodes), "precondition: the planted node is in the plain top 3"
    pp = OscillinkPostprocessor.from_index(index, top_n=3, trusted_sources=[TRUSTED], params=STRICT)
    engine = index.as_query_engine(similarity_top_k=12, llm=MockLLM(), node_postprocessors=[pp])
    response = engine.query(QUERY)
    aresponse = await engine.aquery(QUERY)
    for resp in (response, aresponse):
        got = ids(resp.source_nodes)
        assert len(got) == 3 and "planted" not in got
        assert all(n.node.metadata["source"] == TRUSTED for n in resp.source_nodes)
        receipt = receipt_of(resp.source_nodes)
        bundle = {b["id"]: b for b in receipt["bundle"]}
        assert all("trusted_source" in bundle[i]["flags"] for i in got)
        out = {s["id"]: s for s in receipt["screen"]["screened"]}
        assert out["planted"] == {"id": "planted", "flags": ["untrusted_source"], "action": "demoted"}
        assert receipt["provenance"]["sources"] == "node.metadata['source']"
        assert receipt["inputs"]["trusted_sources_count"] == 1


def test_retriever_and_postprocessor(index, hash_embed, li_settings):
    li_settings(embed_model=hash_embed)  # retrieved nodes carry no vectors: the postprocessor embeds them
    cands = index.as_retriever(similarity_top_k=12).retrieve(QUERY)
    assert "planted" in ids(cands)
    bundle = QueryBundle(QUERY, embedding=hash_embed.get_query_embedding(QUERY))
    plain = OscillinkPostprocessor(top_n=3).postprocess_nodes(cands, query_bundle=bundle)
    assert "planted" in ids(plain)
    pp = OscillinkPostprocessor(top_n=3, trusted_sources={TRUSTED}, params=STRICT)
    out = pp.postprocess_nodes(cands, query_bundle=bundle)
    assert "planted" not in ids(out) and len(out) == 3
    assert cands[ids(cands).index("planted")].node.metadata == PLANTED.metadata  # the caller's nodes untouched
    assert receipt_of(out)["state_sig"] != receipt_of(plain)["state_sig"]


def test_default_policy_keeps_a_lone_untrusted_node(index, hash_embed, li_settings):
    li_settings(embed_model=hash_embed)
    cands = index.as_retriever(similarity_top_k=12).retrieve(QUERY)
    bundle = QueryBundle(QUERY, embedding=hash_embed.get_query_embedding(QUERY))
    plain = OscillinkPostprocessor(top_n=3).postprocess_nodes(cands, query_bundle=bundle)
    out = OscillinkPostprocessor(top_n=3, trusted_sources=[TRUSTED]).postprocess_nodes(cands, query_bundle=bundle)
    assert ids(out) == ids(plain) and "planted" in ids(out)
    rec = receipt_of(out)
    assert {b["id"]: b for b in rec["bundle"]}["planted"]["flags"] == ["new_source"]
    assert rec["params"]["provenance"] == "corroboration"


def test_source_key_and_unknown_sources(index, hash_embed, li_settings):
    li_settings(embed_model=hash_embed)
    cands = index.as_retriever(similarity_top_k=12).retrieve(QUERY)
    bundle = QueryBundle(QUERY, embedding=hash_embed.get_query_embedding(QUERY))
    plain = OscillinkPostprocessor(top_n=3).postprocess_nodes(cands, query_bundle=bundle)
    # judged by another key: the topic, with "cats" trusted; the planted node claims that topic too
    by_topic = OscillinkPostprocessor(top_n=3, trusted_sources=["cats"], source_key="topic")
    out = by_topic.postprocess_nodes(cands, query_bundle=bundle)
    assert ids(out) == ids(plain) and "planted" in ids(out)
    assert receipt_of(out)["provenance"]["sources"] == "node.metadata['topic']"
    # nodes without the key are of unknown source: never flagged
    none = OscillinkPostprocessor(top_n=3, trusted_sources=[TRUSTED], source_key="missing")
    out = none.postprocess_nodes(cands, query_bundle=bundle)
    assert ids(out) == ids(plain)
    assert all("untrusted_source" not in b["flags"] for b in receipt_of(out)["bundle"])


def test_without_trusted_sources_the_receipt_is_unchanged(index, hash_embed, li_settings):
    li_settings(embed_model=hash_embed)
    cands = index.as_retriever(similarity_top_k=12).retrieve(QUERY)
    bundle = QueryBundle(QUERY, embedding=hash_embed.get_query_embedding(QUERY))
    a = OscillinkPostprocessor(top_n=3).postprocess_nodes(cands, query_bundle=bundle)
    b = OscillinkPostprocessor(top_n=3, source_key="elsewhere").postprocess_nodes(cands, query_bundle=bundle)
    ra, rb = receipt_of(a), receipt_of(b)
    assert ra["state_sig"] == rb["state_sig"] and "sources" not in rb["provenance"]
    assert "sources_sha256" not in rb["inputs"]


def test_serialisation_keeps_the_trust_settings():
    pp = OscillinkPostprocessor(top_n=2, trusted_sources=("b.example", "a.example", "b.example"), source_key="site")
    assert pp.trusted_sources == ["a.example", "b.example"]
    d = pp.to_dict()
    assert d["trusted_sources"] == ["a.example", "b.example"] and d["source_key"] == "site"
    back = OscillinkPostprocessor.from_dict(d)
    assert back.trusted_sources == pp.trusted_sources and back.source_key == "site"
    assert json.loads(pp.to_json())["trusted_sources"] == ["a.example", "b.example"]


@pytest.mark.parametrize("kwargs, message", [
    ({"trusted_sources": "wiki"}, "not a single string"),
    ({"trusted_sources": ["wiki", ""]}, "every trusted source is a non-empty str"),
    ({"trusted_sources": [None]}, "every trusted source is a non-empty str"),
    ({"trusted_sources": 3}, "trusted_sources must be a collection of str"),
    ({"source_key": ""}, "source_key must be a non-empty str"),
])
def test_bad_trust_settings_fail_at_construction(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        OscillinkPostprocessor(**kwargs)


@pytest.mark.slow
def test_real_model_query_engine(minilm, li_settings):
    li_settings(embed_model=minilm)
    index = VectorStoreIndex(nodes_with_sources(), embed_model=minilm)
    plain = index.as_query_engine(similarity_top_k=12, llm=MockLLM(),
                                  node_postprocessors=[OscillinkPostprocessor.from_index(index, top_n=4)])
    assert "planted" in ids(plain.query(QUERY).source_nodes), "precondition: the planted node is in the plain top 4"
    pp = OscillinkPostprocessor.from_index(index, top_n=4, trusted_sources=[TRUSTED], params=STRICT)
    resp = index.as_query_engine(similarity_top_k=12, llm=MockLLM(), node_postprocessors=[pp]).query(QUERY)
    assert "planted" not in ids(resp.source_nodes) and len(resp.source_nodes) == 4
    assert all(n.node.metadata["source"] == TRUSTED for n in resp.source_nodes)
