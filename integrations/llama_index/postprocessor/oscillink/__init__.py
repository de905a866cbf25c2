"""LlamaIndex integration for oscillink-core: ``OscillinkPostprocessor`` reranks retrieved nodes.

``index.as_query_engine(similarity_top_k=50, node_postprocessors=[OscillinkPostprocessor(top_n=5)])``,
or ``OscillinkPostprocessor.from_index(index, top_n=5)`` to read candidate vectors from the index's
vector store. ``PackagedMiniLMEmbedding`` is an offline LlamaIndex embedding model over the packaged
all-MiniLM-L6-v2 (needs the ``embeddings`` extra).
"""

from llama_index.postprocessor.oscillink.base import (
    DEFAULT_RECEIPT_KEY,
    RANK_KEY,
    RETRIEVAL_SCORE_KEY,
    SCORE_KEY,
    OscillinkPostprocessor,
)
from llama_index.postprocessor.oscillink.embeddings import PackagedMiniLMEmbedding

__all__ = [
    "OscillinkPostprocessor",
    "PackagedMiniLMEmbedding",
    "DEFAULT_RECEIPT_KEY",
    "SCORE_KEY",
    "RANK_KEY",
    "RETRIEVAL_SCORE_KEY",
]
