"""One profile, one set of vectors: the LangChain compressor, the LlamaIndex postprocessor and
`oscillink_core.rerank` rank identically, with ``normalize`` on or off (vectors of unequal length)."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.oscillink import OscillinkPostprocessor

from langchain_oscillink import OscillinkCompressor
from oscillink_core import rerank

from .conftest import corpus_nodes, hash_vector

QUERY = "big cats hunt and sleep in Paris"


def scaled(text: str) -> list[float]:
    """Hash vectors scaled by a text-dependent factor: equal directions, unequal lengths."""
    return (hash_vector(text, 64) * (0.5 + (len(text) % 7))).tolist()


class ScaledEmbeddings(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [scaled(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return scaled(text)


@pytest.mark.parametrize("normalize", [True, False])
def test_adapters_and_core_agree(normalize):
    params = {"normalize": normalize}
    texts = [(n.node_id, n.text) for n in corpus_nodes()]
    lc = OscillinkCompressor(embeddings=ScaledEmbeddings(), top_n=8, params=params).compress_documents(
        [Document(t, id=i) for i, t in texts], QUERY)
    nodes = [NodeWithScore(node=TextNode(id_=i, text=t, embedding=scaled(t)), score=0.0) for i, t in texts]
    li = OscillinkPostprocessor(top_n=8, params=params).postprocess_nodes(
        nodes, query_bundle=QueryBundle(QUERY, embedding=scaled(QUERY)))
    ref = rerank(np.asarray(scaled(QUERY)), np.asarray([scaled(t) for _, t in texts]), k=8,
                 ids=[i for i, _ in texts], params=params, texts=[t for _, t in texts], query_text=QUERY)
    assert [d.id for d in lc] == [n.node.node_id for n in li] == ref.ids
    assert [d.metadata["relevance_score"] for d in lc] == [n.score for n in li] == ref.scores
    lc_rec = lc[0].metadata["oscillink_receipt"]
    assert lc_rec["state_sig"] == ref.receipt["state_sig"]
    assert lc_rec["provenance"]["normalized"] is normalize
