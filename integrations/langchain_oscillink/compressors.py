"""`OscillinkCompressor`: coherence reranking of the documents a retriever returned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from pydantic import ConfigDict, Field, field_validator

from oscillink_core import LatticeParams
from oscillink_core.app.adapters import check_score_threshold, check_source_key, check_top_n, check_trusted_sources

from ._core import DEFAULT_RECEIPT_KEY, atrace, check_params, rerank_documents, trace, unique_documents
from ._vectors import as_matrix, store_vectors

__all__ = ["OscillinkCompressor"]


class OscillinkCompressor(BaseDocumentCompressor):
    """Rerank retrieved documents by coherence with the query and with each other.

    The documents and the query are embedded (or, with ``vectorstore``, the documents' vectors
    are taken from the store by ``Document.id``), a sparse mutual-kNN lattice is settled over
    them and the ``top_n`` best are returned as new `Document` objects. The caller's documents
    are never modified. Each returned document carries, in its metadata: ``relevance_score``
    and ``oscillink_score`` (the score the ranking used), ``oscillink_rank`` (int, 1 = best),
    ``retrieval_score`` (the cosine of query and
    passage vectors: LangChain retrievers do not hand their own scores to compressors),
    ``retrieval_rank`` (1-based input position) and the receipt under ``receipt_key``; the
    receipt's ``state_sig`` binds the candidate ids and the bundle, and ``provenance`` says
    where the vectors came from. The receipt's ``bundle`` gives each returned document's
    screening ``flags`` and ``action``, and ``screen.screened`` the candidates kept out.

    With ``trusted_sources``, each document's source is ``doc.metadata[source_key]`` (the file
    path or URL LangChain loaders store under ``"source"``; None when missing): when the
    screening pool holds a document from a trusted source, a document of another known source that
    other such sources echo and trusted ones do not is flagged ``"new_source_echo"`` and goes
    behind the others (``params={"provenance": "trusted_first"}``: every document of another
    known source, flag ``"untrusted_source"``); documents without a source are left as they are.

    Setup:
        .. code-block:: bash

            pip install 'oscillink-core[langchain]'       # plus langchain-classic for ContextualCompressionRetriever

    Instantiate:
        .. code-block:: python

            from langchain_oscillink import OscillinkCompressor, PackagedMiniLMEmbeddings

            compressor = OscillinkCompressor(embeddings=PackagedMiniLMEmbeddings(), top_n=4)

    Use with langchain-classic:
        .. code-block:: python

            from langchain_classic.retrievers import ContextualCompressionRetriever

            retriever = ContextualCompressionRetriever(
                base_compressor=compressor, base_retriever=store.as_retriever(search_kwargs={"k": 50}))
            docs = retriever.invoke("how do vaccines work?")

    Use in LCEL with langchain-core only:
        .. code-block:: python

            chain = compressor.as_runnable(store.as_retriever(search_kwargs={"k": 50}))
            docs = chain.invoke("how do vaccines work?")
            # or, spelled out:
            chain = {"documents": base_retriever, "query": RunnablePassthrough()} | compressor.as_runnable()

    Reuse the store's vectors instead of re-embedding the passages:
        .. code-block:: python

            compressor = OscillinkCompressor(embeddings=emb, vectorstore=store, top_n=4)
    """

    embeddings: Embeddings
    """Embeddings for the query and, unless ``vectorstore`` supplies them, for the passages.
    Must be the model the passages were indexed with when ``vectorstore`` is set."""

    top_n: int | None = 3
    """How many documents to return, best first (all of them when fewer come in); None returns all."""

    score_threshold: float | None = None
    """Drop documents whose ``relevance_score`` is below this value (None keeps all); the receipt
    lists the ids dropped (``provenance.below_threshold``)."""

    params: Any = None
    """Lattice parameters: None (defaults), an ``oscillink_core.LatticeParams``, a dict of fields, a
    tuning profile dict or the path of a profile JSON file. Resolved once, at construction."""

    vectorstore: Any = None
    """Optional store the documents came from (`InMemoryVectorStore`, langchain-community `FAISS` or
    `FaissCandidateSource`). When set, each document's vector is taken from it by ``Document.id``; if
    that fails the passages are re-embedded and ``receipt["provenance"]["reason"]`` says why."""

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

    @field_validator("top_n", mode="before")
    @classmethod
    def _top_n(cls, value: Any) -> int | None:
        return check_top_n(value)

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

    # ---------------------------------------------------------------- helpers
    def _provenance(self, extra: dict, reembedded: bool) -> dict:
        prov = {"integration": "langchain_oscillink", "component": type(self).__name__,
                "embeddings": type(self.embeddings).__name__, "score_source": "cosine(query, passage) computed here"}
        prov.update(extra)
        prov["vectors"] = "reembedded" if reembedded else "store"
        if not reembedded:
            prov.pop("reason", None)
        elif "reason" not in prov:
            prov["reason"] = "no vectorstore given"
        return prov

    def _rerank(self, qvec: Any, vectors: Any, docs: list[Document], keep: list[int], n_in: int,
                prov: dict, query: str | None = None) -> tuple[list[Document], dict, dict]:
        return rerank_documents(query_vector=qvec, vectors=vectors, docs=docs, retrieval_scores=None,
                                positions=keep, n_in=n_in, top_n=self.top_n, score_threshold=self.score_threshold,
                                params=self.params, receipt_key=self.receipt_key, signing_key=self.signing_key,
                                light_receipt=self.light_receipt, provenance=prov, query_text=query,
                                trusted_sources=self.trusted_sources, source_key=self.source_key)

    @staticmethod
    def _fill(info: dict, prov: dict, summary: dict) -> None:
        info.update(summary, vectors=prov["vectors"])

    # ---------------------------------------------------------------- BaseDocumentCompressor
    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        """Rerank ``documents`` against ``query`` and return the best ``top_n`` as new documents.

        Repeated documents (same ``Document.id``, or same text when there is no id) are ranked
        once, at their first position; the receipt's ``provenance.duplicates_dropped`` counts them.
        """
        given = list(documents)
        if not given:
            return []
        docs, keep = unique_documents(given)
        with trace(callbacks, query=query, n=len(given), top_n=self.top_n, component=type(self).__name__) as info:
            t0 = time.perf_counter()
            qvec = self.embeddings.embed_query(query)
            vecs, extra = store_vectors(self.vectorstore, docs) if self.vectorstore is not None else (None, {})
            reused = vecs is not None
            if vecs is None:
                vecs = as_matrix(self.embeddings.embed_documents([d.page_content for d in docs]), "passage embeddings")
            prov = self._provenance(extra, reembedded=not reused)
            info["embed_ms"] = 1e3 * (time.perf_counter() - t0)
            out, _, summary = self._rerank(qvec, vecs, docs, keep, len(given), prov, query)
            self._fill(info, prov, summary)
        return out

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Callbacks | None = None) -> Sequence[Document]:
        """Async `compress_documents`: embeddings through the async API, the solve in a worker thread."""
        given = list(documents)
        if not given:
            return []
        docs, keep = unique_documents(given)
        async with atrace(callbacks, query=query, n=len(given), top_n=self.top_n,
                          component=type(self).__name__) as info:
            t0 = time.perf_counter()
            qvec = await self.embeddings.aembed_query(query)
            vecs, extra = (None, {})
            if self.vectorstore is not None:
                vecs, extra = await asyncio.to_thread(store_vectors, self.vectorstore, docs)
            reused = vecs is not None
            if vecs is None:
                rows = await self.embeddings.aembed_documents([d.page_content for d in docs])
                vecs = as_matrix(rows, "passage embeddings")
            prov = self._provenance(extra, reembedded=not reused)
            info["embed_ms"] = 1e3 * (time.perf_counter() - t0)
            out, _, summary = await asyncio.to_thread(self._rerank, qvec, vecs, docs, keep, len(given), prov, query)
            self._fill(info, prov, summary)
        return out

    # ---------------------------------------------------------------- LCEL
    def as_runnable(self, retriever: Runnable | None = None) -> Runnable:
        """The compressor as an LCEL runnable (langchain-core only).

        Without ``retriever``: a runnable taking ``{"query": str, "documents": list[Document]}``.
        With ``retriever``: a runnable taking the query string, equivalent to
        ``{"documents": retriever, "query": RunnablePassthrough()} | compressor.as_runnable()``.
        Both run sync and async; the rerank shows in tracing as a child run.
        """

        def _args(inp: dict) -> tuple[list[Document], str]:
            if not isinstance(inp, dict) or "query" not in inp or "documents" not in inp:
                raise ValueError("OscillinkCompressor.as_runnable() expects {'query': str, 'documents': [...]}; "
                                 f"got {type(inp).__name__}")
            return list(inp["documents"]), inp["query"]

        def _run(inp: dict, config: RunnableConfig) -> list[Document]:
            docs, query = _args(inp)
            return list(self.compress_documents(docs, query, callbacks=config.get("callbacks")))

        async def _arun(inp: dict, config: RunnableConfig) -> list[Document]:
            docs, query = _args(inp)
            return list(await self.acompress_documents(docs, query, callbacks=config.get("callbacks")))

        rerank_step = RunnableLambda(_run, afunc=_arun, name=type(self).__name__)
        if retriever is None:
            return rerank_step

        # The retriever runs in this thread, then the rerank: the same result as the spelled-out
        # RunnableParallel form, without its per-call thread pool (starting those threads cost
        # ~3 ms per query on a 2-CPU machine, more than the rerank itself at fetch_k = 200).
        def _fetch(query: str, config: RunnableConfig) -> dict:
            return {"documents": retriever.invoke(query, config), "query": query}

        async def _afetch(query: str, config: RunnableConfig) -> dict:
            return {"documents": await retriever.ainvoke(query, config), "query": query}

        fetch = RunnableLambda(_fetch, afunc=_afetch, name="retrieve")
        return (fetch | rerank_step).with_config(run_name=f"{type(self).__name__}Chain")
