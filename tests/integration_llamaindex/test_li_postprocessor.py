"""Fast tests of OscillinkPostprocessor with the deterministic hashing embedding (no model load)."""

from __future__ import annotations

import asyncio
import copy
import doctest
import json
import threading

import faiss
import llama_index.postprocessor.oscillink as pkg
import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.postprocessor.oscillink import OscillinkPostprocessor
from llama_index.postprocessor.oscillink import base as base_mod
from llama_index.postprocessor.oscillink import embeddings as emb_mod
from llama_index.postprocessor.oscillink import vectors as vec_mod
from llama_index.vector_stores.faiss import FaissVectorStore

from oscillink_core import LatticeParams, rerank, save_profile, validate_receipt, verify_receipt

from .conftest import HashEmbedding, corpus_nodes, hash_vector

DIM = 64


def with_scores(nodes, query, dim=DIM, embed=False):
    """Nodes ranked by cosine to the query (as a retriever would return them), scores plain floats."""
    q = hash_vector(query, dim)
    sims = [float(hash_vector(n.get_content(metadata_mode=MetadataMode.EMBED), dim) @ q) for n in nodes]
    order = np.argsort(sims)[::-1]
    out = []
    for i in order:
        node = nodes[i]
        if embed:
            vec = hash_vector(node.get_content(MetadataMode.EMBED), dim)
            node = node.model_copy(update={"embedding": vec.tolist()})
        out.append(NodeWithScore(node=node, score=sims[i]))
    return out


def bundle(query, dim=DIM):
    return QueryBundle(query, embedding=hash_vector(query, dim).tolist())


# -- package surface
def test_public_names_pinned():
    assert sorted(pkg.__all__) == sorted(["OscillinkPostprocessor", "PackagedMiniLMEmbedding", "DEFAULT_RECEIPT_KEY",
                                          "SCORE_KEY", "RANK_KEY", "RETRIEVAL_SCORE_KEY"])
    assert OscillinkPostprocessor.class_name() == "OscillinkPostprocessor"


@pytest.mark.parametrize("module", [base_mod, emb_mod, vec_mod])
def test_module_doctests(module):
    # pytest's doctest collection covers oscillink_core only, so the examples here are run explicitly
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


# -- fields and serialisation
def test_round_trip_keeps_settings_and_drops_handles(hash_embed):
    pp = OscillinkPostprocessor(top_n=7, params={"lamC": 0.9, "kneighbors": 4}, receipt_key="rc",
                                scores_in_llm_metadata=True, sign_key="secret", embed_model=hash_embed,
                                vector_store=SimpleVectorStore())
    d = pp.to_dict()
    assert d["class_name"] == "OscillinkPostprocessor"
    assert {k: d[k] for k in ("top_n", "params", "receipt_key", "scores_in_llm_metadata")} == {
        "top_n": 7, "params": {"lamC": 0.9, "kneighbors": 4}, "receipt_key": "rc", "scores_in_llm_metadata": True}
    assert not {"sign_key", "embed_model", "vector_store", "callback_manager"} & set(d)
    assert "secret" not in pp.to_json() and "secret" not in repr(pp)
    back = OscillinkPostprocessor.from_json(pp.to_json())
    assert back.to_dict() == d
    assert back.sign_key is None and back.embed_model is None and back.vector_store is None


def test_params_forms_are_stored_as_dicts(tmp_path):
    lp = LatticeParams(lamC=0.8, kneighbors=5)
    assert OscillinkPostprocessor(params=lp).params == lp.to_dict()
    path = save_profile(lp, tmp_path / "profile.json", tuned_on="unit")
    pp = OscillinkPostprocessor(params=str(path))
    assert pp.params["format"] == "oscillink-core/profile" and pp.params["params"]["lamC"] == 0.8
    assert OscillinkPostprocessor.from_dict(pp.to_dict()).params == pp.params  # self-contained: file not needed
    (tmp_path / "profile.json").unlink()
    assert OscillinkPostprocessor.from_dict(pp.to_dict()).params["meta"]["tuned_on"] == "unit"


@pytest.mark.parametrize("kwargs, match", [
    ({"params": {"lamCC": 1.0}}, "unknown lattice parameter"),
    ({"params": {"lamG": 0.0}}, "lamG"),
    ({"params": "/nonexistent/profile.json"}, "not found"),
    ({"top_n": 0}, "top_n"),
    ({"topn": 3}, "topn"),
    ({"receipt_key": ""}, "receipt_key"),
])
def test_bad_fields_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OscillinkPostprocessor(**kwargs)


def test_bare_faiss_store_is_refused():
    with pytest.raises(ValueError, match="from_index"):
        OscillinkPostprocessor(vector_store=FaissVectorStore(faiss_index=faiss.IndexFlatIP(DIM)))


# -- edge cases
def test_missing_query_bundle_raises():
    nodes = with_scores(corpus_nodes()[:4], "cats", embed=True)
    with pytest.raises(ValueError, match="needs the query"):
        OscillinkPostprocessor().postprocess_nodes(nodes)


async def test_missing_query_bundle_raises_async():
    nodes = with_scores(corpus_nodes()[:4], "cats", embed=True)
    with pytest.raises(ValueError, match="needs the query"):
        await OscillinkPostprocessor().apostprocess_nodes(nodes)


async def test_empty_input_returns_empty(recorder):
    pp = OscillinkPostprocessor(embed_model=HashEmbedding())
    assert pp.postprocess_nodes([], query_bundle=bundle("cats")) == []
    assert await pp.apostprocess_nodes([], query_bundle=bundle("cats")) == []
    assert recorder.events == []


@pytest.mark.parametrize("n", [1, 2, 5])
def test_top_n_larger_than_candidates_returns_all(n):
    nodes = with_scores(corpus_nodes()[:n], "cats purr", embed=True)
    out = OscillinkPostprocessor(top_n=10).postprocess_nodes(nodes, query_bundle=bundle("cats purr"))
    assert sorted(x.node.node_id for x in out) == sorted(x.node.node_id for x in nodes)
    assert [x.node.metadata["oscillink_rank"] for x in out] == list(range(1, n + 1))


def test_dimension_mismatch_is_explained():
    nodes = with_scores(corpus_nodes()[:6], "cats", embed=True)
    with pytest.raises(ValueError, match="same embedding model"):
        OscillinkPostprocessor().postprocess_nodes(nodes, query_bundle=bundle("cats", dim=32))


# -- the result: agrees with the core, copies, metadata, receipt
def test_ranking_and_receipt_match_the_core_call():
    query = "cats that purr and sleep"
    nodes = with_scores(corpus_nodes(), query, embed=True)
    params = {"kneighbors": 4, "lamC": 0.7}
    out = OscillinkPostprocessor(top_n=5, params=params).postprocess_nodes(nodes, query_bundle=bundle(query))
    Y = np.vstack([np.asarray(n.node.embedding, dtype=np.float32) for n in nodes])
    ref = rerank(hash_vector(query, DIM), Y, k=5, ids=[n.node.node_id for n in nodes], params=params,
                 texts=[n.node.get_content() for n in nodes], query_text=query)
    assert [x.node.node_id for x in out] == ref.ids
    assert [x.score for x in out] == ref.scores
    assert all(type(x.score) is float for x in out)
    receipt = json.loads(out[0].node.metadata["oscillink_receipt"])
    validate_receipt(receipt)
    assert receipt["state_sig"] == ref.receipt["state_sig"]
    assert receipt["bundle"] == ref.receipt["bundle"]
    assert receipt["provenance"]["vectors"] == "node"
    assert receipt["provenance"]["vector_counts"] == {"node": 24, "vector_store": 0, "embedded": 0}
    assert receipt["provenance"]["query_vector"] == "query_bundle"


def test_callers_nodes_are_untouched():
    nodes = with_scores(corpus_nodes(), "python packages", embed=True)
    before = copy.deepcopy([n.model_dump() for n in nodes])
    out = OscillinkPostprocessor(top_n=4).postprocess_nodes(nodes, query_bundle=bundle("python packages"))
    assert [n.model_dump() for n in nodes] == before
    ids_in = {id(n) for n in nodes} | {id(n.node) for n in nodes}
    assert not ({id(x) for x in out} | {id(x.node) for x in out}) & ids_in


@pytest.mark.parametrize("scores_to_llm", [False, True])
def test_metadata_and_exclusions(scores_to_llm):
    query = "the capital of France"
    nodes = with_scores(corpus_nodes(), query, embed=True)
    retrieval = {n.node.node_id: n.score for n in nodes}
    pp = OscillinkPostprocessor(top_n=3, receipt_key="rk", scores_in_llm_metadata=scores_to_llm)
    out = pp.postprocess_nodes(nodes, query_bundle=bundle(query))
    for rank, x in enumerate(out, start=1):
        md = x.node.metadata
        assert md["topic"] in {"cats", "paris", "python", "space"}  # original metadata kept
        assert md["oscillink_rank"] == rank and md["oscillink_score"] == x.score
        assert md["retrieval_score"] == retrieval[x.node.node_id]
        assert json.loads(md["rk"])["bundle"][rank - 1]["id"] == x.node.node_id
        assert "rk" in x.node.excluded_llm_metadata_keys and "rk" in x.node.excluded_embed_metadata_keys
        llm_text = x.node.get_content(MetadataMode.LLM)
        assert "state_sig" not in llm_text and "rk:" not in llm_text and "topic: " in llm_text
        assert ("oscillink_rank" in llm_text) == scores_to_llm and ("retrieval_score" in llm_text) == scores_to_llm
        assert "state_sig" not in x.node.get_content(MetadataMode.EMBED)
        assert "oscillink_score" not in x.node.get_content(MetadataMode.EMBED)
        assert "state_sig" in x.node.get_content(MetadataMode.ALL)
        # the embed text is what it was before reranking, so re-embedding a result gives the same vector
        original = next(n.node for n in nodes if n.node.node_id == x.node.node_id)
        assert x.node.get_content(MetadataMode.EMBED) == original.get_content(MetadataMode.EMBED)


def test_none_retrieval_score_is_kept_as_none():
    nodes = [NodeWithScore(node=n.node) for n in with_scores(corpus_nodes()[:5], "mars", embed=True)]
    out = OscillinkPostprocessor(top_n=2).postprocess_nodes(nodes, query_bundle=bundle("mars"))
    assert [x.node.metadata["retrieval_score"] for x in out] == [None, None]


def test_signed_receipt_verifies_and_detects_tampering():
    nodes = with_scores(corpus_nodes(), "planets", embed=True)
    out = OscillinkPostprocessor(top_n=3, sign_key="k1").postprocess_nodes(nodes, query_bundle=bundle("planets"))
    receipt = json.loads(out[0].node.metadata["oscillink_receipt"])
    assert verify_receipt(receipt, "k1") and not verify_receipt(receipt, "k2")
    receipt["provenance"]["vectors"] = "embedded"
    assert not verify_receipt(receipt, "k1")
    pp = OscillinkPostprocessor(top_n=3, sign_key=b"bytes-key")
    receipt = json.loads(pp.postprocess_nodes(nodes, query_bundle=bundle("planets"))[0].node.metadata[
        "oscillink_receipt"])
    assert verify_receipt(receipt, b"bytes-key")


def test_duplicate_node_ids_are_dropped_and_counted():
    nodes = with_scores(corpus_nodes()[:8], "cats", embed=True)
    doubled = nodes + [NodeWithScore(node=nodes[0].node, score=0.0)]
    out = OscillinkPostprocessor(top_n=20).postprocess_nodes(doubled, query_bundle=bundle("cats"))
    assert len(out) == 8 and len({x.node.node_id for x in out}) == 8
    prov = json.loads(out[0].node.metadata["oscillink_receipt"])["provenance"]
    assert prov["candidates_in"] == 9 and prov["duplicates_dropped"] == 1


# -- where vectors come from
def test_embedded_path_uses_embed_model_on_embed_text(hash_embed):
    query = "rings of ice around saturn"
    nodes = with_scores(corpus_nodes(), query)  # no embeddings on the nodes
    pp = OscillinkPostprocessor(top_n=4, embed_model=hash_embed)
    out = pp.postprocess_nodes(nodes, query_bundle=QueryBundle(query))  # no query embedding either
    assert hash_embed.text_calls == len(nodes)
    Y = np.vstack([hash_vector(n.node.get_content(MetadataMode.EMBED), DIM) for n in nodes])
    ref = rerank(hash_vector(query, DIM), Y, k=4, ids=[n.node.node_id for n in nodes],
                 texts=[n.node.get_content() for n in nodes], query_text=query)
    receipt = json.loads(out[0].node.metadata["oscillink_receipt"])
    assert receipt["state_sig"] == ref.receipt["state_sig"]
    prov = receipt["provenance"]
    assert prov["vectors"] == "embedded" and prov["query_vector"] == "embedded"
    assert prov["embed_model"] == "hash-embedding" and prov["vector_store"] is None


def test_embedded_path_defaults_to_settings_embed_model(li_settings):
    emb = HashEmbedding(model_name="from-settings")
    li_settings(embed_model=emb)
    nodes = with_scores(corpus_nodes(), "museum")
    out = OscillinkPostprocessor(top_n=2).postprocess_nodes(nodes, query_bundle=QueryBundle("museum"))
    assert emb.text_calls == len(nodes)
    assert json.loads(out[0].node.metadata["oscillink_receipt"])["provenance"]["embed_model"] == "from-settings"


class NoTextEmbedding(HashEmbedding):
    """Embeds queries only: any attempt to embed node text fails the test."""

    def _get_text_embedding(self, text):
        raise AssertionError("node text was re-embedded")

    async def _aget_text_embedding(self, text):
        raise AssertionError("node text was re-embedded")


def _indexes(hash_embed):
    nodes = corpus_nodes()
    simple = VectorStoreIndex(nodes, embed_model=hash_embed)
    store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(DIM))
    fidx = VectorStoreIndex(nodes, embed_model=hash_embed,
                            storage_context=StorageContext.from_defaults(vector_store=store))
    return {"simple": simple, "faiss": fidx}


@pytest.mark.parametrize("kind, wiring", [("simple", "from_index"), ("simple", "field"), ("faiss", "from_index")])
async def test_vector_store_path_reads_stored_vectors(hash_embed, kind, wiring):
    index = _indexes(hash_embed)[kind]
    query = "python dictionaries and lists"
    retrieved = index.as_retriever(similarity_top_k=12).retrieve(query)
    assert all(n.node.embedding is None for n in retrieved)  # why the store lookup is needed
    if wiring == "from_index":
        pp = OscillinkPostprocessor.from_index(index, top_n=4, embed_model=NoTextEmbedding())
    else:
        pp = OscillinkPostprocessor(top_n=4, embed_model=NoTextEmbedding(), vector_store=index.vector_store)
    out = pp.postprocess_nodes(retrieved, query_bundle=bundle(query))
    Y = np.vstack([hash_vector(n.node.get_content(MetadataMode.EMBED), DIM) for n in retrieved])
    ref = rerank(hash_vector(query, DIM), Y, k=4, ids=[n.node.node_id for n in retrieved],
                 texts=[n.node.get_content() for n in retrieved], query_text=query)
    receipt = json.loads(out[0].node.metadata["oscillink_receipt"])
    assert receipt["state_sig"] == ref.receipt["state_sig"]  # bit-identical vectors from the store
    prov = receipt["provenance"]
    assert prov["vectors"] == "vector_store" and prov["vector_counts"]["vector_store"] == 12
    assert prov["vector_store"] == type(index.vector_store).__name__ and prov["embed_model"] is None
    # async: the query is embedded (no bundle embedding), the nodes still are not
    aout = await pp.apostprocess_nodes(retrieved, query_str=query)
    assert [x.node.node_id for x in aout] == [x.node.node_id for x in out]
    aprov = json.loads(aout[0].node.metadata["oscillink_receipt"])["provenance"]
    assert aprov["vectors"] == "vector_store" and aprov["query_vector"] == "embedded"


def test_faiss_map_follows_later_inserts(hash_embed):
    index = _indexes(hash_embed)["faiss"]
    pp = OscillinkPostprocessor.from_index(index, top_n=3, embed_model=NoTextEmbedding())
    assert pp.to_dict()["top_n"] == 3
    extra = [TextNode(id_="late-0", text="Comets have icy tails near the Sun."),
             TextNode(id_="late-1", text="Meteors burn up in the atmosphere.")]
    index.insert_nodes(extra)
    retrieved = index.as_retriever(similarity_top_k=8).retrieve("comets and meteors near the sun")
    assert {"late-0", "late-1"} <= {n.node.node_id for n in retrieved}
    out = pp.postprocess_nodes(retrieved, query_bundle=bundle("comets and meteors near the sun"))
    prov = json.loads(out[0].node.metadata["oscillink_receipt"])["provenance"]
    assert prov["vector_counts"] == {"node": 0, "vector_store": 8, "embedded": 0}


def test_mixed_sources_and_unknown_nodes(hash_embed):
    index = _indexes(hash_embed)["simple"]
    retrieved = index.as_retriever(similarity_top_k=6).retrieve("the moon and mars")
    carried = retrieved[0].node.model_copy(update={"embedding": hash_vector("anything", DIM).tolist()})
    stranger = TextNode(id_="not-in-store", text="Venus is hot.")
    nodes = [NodeWithScore(node=carried, score=1.0)] + retrieved[1:] + [NodeWithScore(node=stranger, score=0.1)]
    emb = HashEmbedding()
    out = OscillinkPostprocessor.from_index(index, top_n=7, embed_model=emb).postprocess_nodes(
        nodes, query_bundle=bundle("the moon and mars"))
    assert emb.text_calls == 1  # only the node the store does not know
    prov = json.loads(out[0].node.metadata["oscillink_receipt"])["provenance"]
    assert prov["vectors"] == "mixed"
    assert prov["vector_counts"] == {"node": 1, "vector_store": 5, "embedded": 1}


def test_faiss_index_that_cannot_reconstruct_falls_back_to_embedding(hash_embed):
    rng = np.random.default_rng(0)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 2, faiss.METRIC_INNER_PRODUCT)
    ivf.train(rng.normal(size=(200, DIM)).astype(np.float32))
    ivf.nprobe = 2
    store = FaissVectorStore(faiss_index=ivf)
    index = VectorStoreIndex(corpus_nodes(), embed_model=hash_embed,
                             storage_context=StorageContext.from_defaults(vector_store=store))
    retrieved = index.as_retriever(similarity_top_k=6).retrieve("cats")
    emb = HashEmbedding()
    out = OscillinkPostprocessor.from_index(index, top_n=3, embed_model=emb).postprocess_nodes(
        retrieved, query_bundle=bundle("cats"))
    assert emb.text_calls == 6
    prov = json.loads(out[0].node.metadata["oscillink_receipt"])["provenance"]
    assert prov["vectors"] == "embedded" and "could not reconstruct" in prov["vector_store_note"]


# -- events and async
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_instrumentation_and_legacy_callback_events(recorder, mode):
    debug = LlamaDebugHandler()
    pp = OscillinkPostprocessor(top_n=3, callback_manager=CallbackManager([debug]))
    nodes = with_scores(corpus_nodes(), "paris museums", embed=True)
    if mode == "sync":
        out = pp.postprocess_nodes(nodes, query_bundle=bundle("paris museums"))
    else:
        out = await pp.apostprocess_nodes(nodes, query_bundle=bundle("paris museums"))
    names = [type(e).__name__ for e in recorder.events if "ReRank" in type(e).__name__]
    assert names == ["ReRankStartEvent", "ReRankEndEvent"]
    start, end = (e for e in recorder.events if "ReRank" in type(e).__name__)
    assert start.top_n == 3 and len(start.nodes) == len(nodes) and start.model_name.startswith("oscillink-core")
    assert [n.node.node_id for n in end.nodes] == [n.node.node_id for n in out]
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 1
    begin, finish = pairs[0]
    assert begin.payload["query_str"] == "paris museums" and begin.payload["top_k"] == 3
    assert [n.node.node_id for n in finish.payload["nodes"]] == [n.node.node_id for n in out]


async def test_async_path_does_not_block_the_event_loop(monkeypatch):
    rng = np.random.default_rng(1)
    Y = rng.normal(size=(300, 96)).astype(np.float32)
    nodes = [NodeWithScore(node=TextNode(id_=f"n{i}", text=f"t{i}", embedding=Y[i].tolist()), score=0.0)
             for i in range(len(Y))]
    pp = OscillinkPostprocessor(top_n=5)
    loop_turned = threading.Event()
    seen = {}
    real_rank = OscillinkPostprocessor._rank

    def rank_when_the_loop_has_turned(self, *args, **kwargs):
        # the ranking waits until the event loop has run another task: on the loop's own thread that
        # can never happen (the wait would run out), in a worker thread it happens at once
        seen["thread"] = threading.get_ident()
        seen["loop_ran_meanwhile"] = loop_turned.wait(timeout=60)
        return real_rank(self, *args, **kwargs)

    monkeypatch.setattr(OscillinkPostprocessor, "_rank", rank_when_the_loop_has_turned)
    task = asyncio.create_task(pp.apostprocess_nodes(nodes, query_bundle=QueryBundle("q", embedding=Y[0].tolist())))

    async def other_work():
        loop_turned.set()

    await asyncio.gather(task, other_work())
    out = task.result()
    assert seen["loop_ran_meanwhile"] and seen["thread"] != threading.get_ident()
    sync = pp.postprocess_nodes(nodes, query_bundle=QueryBundle("q", embedding=Y[0].tolist()))
    assert [x.node.node_id for x in out] == [x.node.node_id for x in sync]
    assert [x.score for x in out] == [x.score for x in sync]
