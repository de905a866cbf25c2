"""`OscillinkRetriever`: vector-store search followed by the coherence rerank, in one retriever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, field_validator, model_validator

from oscillink_core import LatticeParams
from oscillink_core.app.adapters import check_score_threshold, check_source_key, check_trusted_sources

from ._core import DEFAULT_RECEIPT_KEY, atrace, check_params, rerank_documents, trace, unique_documents
from ._vectors import FaissCandidateSource, Fetched, afetch, as_matrix, fetch

__all__ = ["OscillinkRetriever"]


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    return value


class OscillinkRetriever(BaseRetriever):
    """Search a vector store for ``fetch_k`` candidates, rerank them by coherence, return ``k``.

    The query is embedded once (the store is searched by that vector when it can be). The
    passages' vectors are taken from the store where it holds them (`InMemoryVectorStore`,
    langchain-community `FAISS`, `FaissCandidateSource`); other stores' candidates are
    re-embedded and the receipt says so (``receipt["provenance"]["vectors"] == "reembedded"``,
    with a ``reason``). See `langchain_oscillink._vectors` for the FAISS index types that can and
    cannot give their vectors back.

    Every returned document is new; its metadata is a deep copy of the stored metadata plus
    ``relevance_score`` (the score the ranking used; ``oscillink_score`` holds the same value),
    ``oscillink_rank`` (int, 1 = best), the store's first-stage value as ``retrieval_score`` when
    it is a similarity (`InMemoryVectorStore`, FAISS inner product, Qdrant Cosine/Dot) or of unknown
    kind and as ``retrieval_distance`` when it is a distance (FAISS L2, Chroma), ``retrieval_rank``
    and the receipt under ``receipt_key``. Chroma and Qdrant stores give their vectors back too.
    The receipt's ``bundle`` gives each returned document's screening ``flags`` and ``action``.

    With ``trusted_sources``, each candidate's source is ``doc.metadata[source_key]`` (None when
    missing): when the screening pool holds a candidate from a trusted source, a candidate of
    another known source that other such sources echo and trusted ones do not is flagged
    ``"new_source_echo"`` and goes behind the others (``params={"provenance": "trusted_first"}``:
    every candidate of another known source, flag ``"untrusted_source"``).

    Setup:
        .. code-block:: bash

            pip install 'oscillink-core[langchain]'

    Instantiate:
        .. code-block:: python

            from langchain_core.vectorstores import InMemoryVectorStore
            from langchain_oscillink import OscillinkRetriever, PackagedMiniLMEmbeddings

            emb = PackagedMiniLMEmbeddings()
            store = InMemoryVectorStore.from_texts(texts, emb)
            retriever = OscillinkRetriever(vectorstore=store, k=4, fetch_k=50)

    Use:
        .. code-block:: python

            docs = retriever.invoke("how do vaccines work?")
            docs = retriever.invoke("how do vaccines work?", k=2)     # per-call k / fetch_k / search kwargs
            docs = await retriever.ainvoke("how do vaccines work?")
            docs[0].metadata["oscillink_receipt"]["state_sig"]

    A raw FAISS index with its documents (no langchain-community needed):
        .. code-block:: python

            from langchain_oscillink import FaissCandidateSource

            retriever = OscillinkRetriever(vectorstore=FaissCandidateSource(index, documents), embeddings=emb)
    """

    vectorstore: Any
    """The candidate source: any LangChain `VectorStore`, or a `FaissCandidateSource`."""

    embeddings: Embeddings | None = None
    """Embeddings for the query (and for re-embedding when the store cannot give vectors back). Defaults
    to ``vectorstore.embeddings``; must be the model the store was built with."""

    k: int = Field(default=4, ge=1)
    """How many documents to return."""

    fetch_k: int = Field(default=50, ge=1)
    """How many candidates to pull from the store and rerank (raised to ``k`` when smaller)."""

    params: Any = None
    """Lattice parameters: None (defaults), an ``oscillink_core.LatticeParams``, a dict of fields, a
    tuning profile dict or the path of a profile JSON file. Resolved once, at construction."""

    score_threshold: float | None = None
    """Drop documents whose ``relevance_score`` is below this value (None keeps all)."""

    search_kwargs: dict = Field(default_factory=dict)
    """Extra keyword arguments for the store search (e.g. ``{"filter": ...}``)."""

    receipt_key: str = DEFAULT_RECEIPT_KEY
    """Metadata key under which each returned document carries the receipt."""

    signing_key: str | bytes | None = Field(default=None, repr=False, exclude=True)
    """Optional HMAC key: the receipt is then signed (``oscillink_core.verify_receipt(receipt, key)``)."""

    light_receipt: bool = False
    """Omit the null-point list from the receipt (slightly cheaper)."""

    trusted_sources: Collection[str] | None = None
    """The sources you trust (compared exactly with ``doc.metadata[source_key]``); None: no trust
    policy, sources are not read. A single string is refused: pass ``["example.org"]``."""

    source_key: str = "source"
    """The ``Document.metadata`` key holding each document's source (read only with ``trusted_sources``)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    @field_validator("params", mode="before")
    @classmethod
    def _resolve(cls, value: Any) -> LatticeParams:
        return check_params(value)

    @field_validator("score_threshold", mode="before")
    @classmethod
    def _threshold(cls, value: Any) -> float | None:
        return check_score_threshold(value)

    @field_validator("trusted_sources", mode="before")
    @classmethod
    def _trusted(cls, value: Any) -> frozenset[str] | None:
        return check_trusted_sources(value)

    @field_validator("source_key", mode="before")
    @classmethod
    def _source_key(cls, value: Any) -> str:
        return check_source_key(value)

    @model_validator(mode="after")
    def _check_store(self) -> OscillinkRetriever:
        if isinstance(self.vectorstore, FaissCandidateSource):
            if self.embeddings is None:
                raise ValueError("a FaissCandidateSource needs embeddings=... to embed the query")
            return self
        if not hasattr(self.vectorstore, "similarity_search_by_vector"):
            raise ValueError(f"vectorstore must be a LangChain VectorStore or a FaissCandidateSource; "
                             f"got {type(self.vectorstore).__name__}")
        if self.embeddings is None:
            emb = getattr(self.vectorstore, "embeddings", None)
            if not isinstance(emb, Embeddings):
                raise ValueError(f"{type(self.vectorstore).__name__} has no Embeddings object; pass embeddings=...")
            self.embeddings = emb
        return self

    # ---------------------------------------------------------------- helpers
    def _counts(self, k: int | None, fetch_k: int | None) -> tuple[int, int]:
        k = self.k if k is None else _check_count("k", k)
        fetch_k = self.fetch_k if fetch_k is None else _check_count("fetch_k", fetch_k)
        return k, max(fetch_k, k)

    def _provenance(self, got: Fetched, fetch_k: int) -> dict:
        return {"integration": "langchain_oscillink", "component": type(self).__name__,
                "embeddings": type(self.embeddings).__name__, "fetch_k": fetch_k, **got.provenance}

    def _rerank(self, qvec: Any, got: Fetched, k: int, fetch_k: int,
                query: str | None = None) -> tuple[list[Document], dict, dict]:
        docs, keep = unique_documents(got.docs)
        vectors = got.vectors if len(keep) == len(got.docs) else got.vectors[keep]
        return rerank_documents(query_vector=qvec, vectors=vectors, docs=docs,
                                retrieval_scores=[got.scores[i] for i in keep], score_kind=got.score_kind,
                                positions=keep, n_in=len(got.docs), top_n=k, score_threshold=self.score_threshold,
                                params=self.params, receipt_key=self.receipt_key, signing_key=self.signing_key,
                                light_receipt=self.light_receipt, provenance=self._provenance(got, fetch_k),
                                query_text=query, trusted_sources=self.trusted_sources, source_key=self.source_key)

    @staticmethod
    def _fill(info: dict, got: Fetched, summary: dict, t_fetch: float) -> None:
        info.update(summary, vectors=got.provenance.get("vectors"), fetch_ms=t_fetch)

    # ---------------------------------------------------------------- BaseRetriever
    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None, fetch_k: int | None = None,
                                **search_kwargs: Any) -> list[Document]:
        k, fetch_k = self._counts(k, fetch_k)
        t0 = time.perf_counter()
        qvec = self.embeddings.embed_query(query)
        got = fetch(self.vectorstore, qvec, query, fetch_k, {**self.search_kwargs, **search_kwargs})
        if not got.docs:
            return []
        if got.vectors is None:
            got.vectors = as_matrix(self.embeddings.embed_documents([d.page_content for d in got.docs]),
                                    "passage embeddings")
        t_fetch = 1e3 * (time.perf_counter() - t0)
        with trace(run_manager.get_child(), query=query, n=len(got.docs), top_n=k,
                   component=type(self).__name__) as info:
            out, _, summary = self._rerank(qvec, got, k, fetch_k, query)
            self._fill(info, got, summary, t_fetch)
        return out

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun,
                                       k: int | None = None, fetch_k: int | None = None,
                                       **search_kwargs: Any) -> list[Document]:
        k, fetch_k = self._counts(k, fetch_k)
        t0 = time.perf_counter()
        qvec = await self.embeddings.aembed_query(query)
        got = await afetch(self.vectorstore, qvec, query, fetch_k, {**self.search_kwargs, **search_kwargs})
        if not got.docs:
            return []
        if got.vectors is None:
            rows = await self.embeddings.aembed_documents([d.page_content for d in got.docs])
            got.vectors = as_matrix(rows, "passage embeddings")
        t_fetch = 1e3 * (time.perf_counter() - t0)
        async with atrace(run_manager.get_child(), query=query, n=len(got.docs), top_n=k,
                          component=type(self).__name__) as info:
            out, _, summary = await asyncio.to_thread(self._rerank, qvec, got, k, fetch_k, query)
            self._fill(info, got, summary, t_fetch)
        return out
