"""Shared machinery of the compressor and the retriever: ids, the rerank call, output documents,
provenance and tracing. Pure translation between LangChain objects and `oscillink_core.rerank`."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import numpy as np
from langchain_core.callbacks import AsyncCallbackManager, CallbackManager, Callbacks
from langchain_core.documents import Document

from oscillink_core import LatticeParams, resolve_params
from oscillink_core.app.adapters import (
    DEFAULT_RECEIPT_KEY,
    SIMILARITY,
    dedupe,
    fallback_ids,
    metadata_source,
    rerank_candidates,
    result_metadata,
    trace_summary,
)

__all__ = ["candidate_ids", "unique_documents", "document_sources", "rerank_documents", "trace", "atrace",
           "check_params", "DEFAULT_RECEIPT_KEY"]

RUN_NAME = "OscillinkRerank"


def check_params(value: Any) -> LatticeParams:
    """Resolve ``params`` once, at construction: a bad profile fails early with the core's message."""
    return resolve_params(value)


def candidate_ids(docs: Sequence[Document]) -> list[str]:
    """Candidate ids for the core: ``Document.id`` when set and unique, else ``"pos<i>:<sha256(text)[:16]>"``.

    The fallback is stable for the same documents in the same order, and always unique because it
    contains the position. The receipt's ``state_sig`` binds these ids.

    >>> candidate_ids([Document("x", id="a"), Document("y")])
    ['a', 'pos1:a1fce4363854ff88']
    """
    return fallback_ids([d.id for d in docs], [d.page_content for d in docs])


def unique_documents(docs: Sequence[Document]) -> tuple[list[Document], list[int]]:
    """The documents without repeats (same ``Document.id``; same text for documents without an id),
    and the input position of each one kept. One id with two different texts raises ValueError.

    >>> d0, d1 = Document("x", id="a"), Document("y", id="b")
    >>> [d.id for d in unique_documents([d0, d0, d1])[0]]
    ['a', 'b']
    """
    keep, _ = dedupe([d.id for d in docs], [d.page_content for d in docs])
    return [docs[i] for i in keep], keep


def document_sources(docs: Sequence[Document], source_key: str = "source") -> list[str | None]:
    """Each document's source: ``doc.metadata[source_key]`` (None when missing or empty, ``str()``
    of a value that is not a str). LangChain loaders put the file path or URL under ``"source"``.

    >>> document_sources([Document("x", metadata={"source": "a.txt"}), Document("y")])
    ['a.txt', None]
    """
    return [metadata_source(d.metadata, source_key) for d in docs]


def rerank_documents(*, query_vector: Any, vectors: np.ndarray, docs: Sequence[Document],
                     retrieval_scores: Sequence[float | None] | None, score_kind: str = SIMILARITY,
                     positions: Sequence[int] | None = None, n_in: int | None = None, top_n: int | None,
                     score_threshold: float | None = None, params: LatticeParams, receipt_key: str,
                     signing_key: str | bytes | None, light_receipt: bool,
                     provenance: dict, query_text: str | None = None, trusted_sources: Any = None,
                     source_key: str = "source") -> tuple[list[Document], dict, dict]:
    """Rerank ``docs`` (unique, with their ``vectors``) against ``query_vector``; return new
    documents, the receipt and the trace summary (counts, items with flags / actions, timings).

    ``positions`` are the documents' first-stage positions (before repeats were dropped) and
    ``n_in`` the number of inputs; the vectors go to the core unchanged (``params.normalize``
    decides the scaling, as in `oscillink_core.rerank`). With ``trusted_sources`` (not None) the
    documents' sources (`document_sources` under ``source_key``) go to the core too, and the
    receipt's ``provenance.sources`` names where they were read.
    """
    n = len(docs)
    n_in = n if n_in is None else n_in
    positions = list(range(n)) if positions is None else list(positions)
    prov = {**provenance, "candidates_in": n_in, "duplicates_dropped": n_in - n,
            "ids": "Document.id (fallback pos<i>:sha256(text)[:16] when missing)"}
    sources = None
    if trusted_sources is not None:
        sources = document_sources(docs, source_key)
        prov["sources"] = f"Document.metadata[{source_key!r}]"
    t0 = time.perf_counter()
    ranked = rerank_candidates(query_vector, vectors, ids=candidate_ids(docs), top_n=top_n, params=params,
                               provenance=prov, score_threshold=score_threshold, sign_key=signing_key,
                               light_receipt=light_receipt, texts=[d.page_content for d in docs],
                               query_text=query_text, sources=sources, trusted_sources=trusted_sources)
    receipt = ranked.receipt
    frozen = json.dumps(receipt)  # each document gets its own copy (cheaper than deepcopy)
    out = []
    for it in ranked.items:
        src = docs[it.index]
        if retrieval_scores is not None:
            first, kind = retrieval_scores[it.index], score_kind
        else:
            first, kind = it.cosine, SIMILARITY
        meta = result_metadata(src.metadata, it, first_stage=first, first_stage_kind=kind,
                               first_stage_rank=positions[it.index] + 1, receipt_key=receipt_key,
                               receipt_value=json.loads(frozen))
        out.append(Document(page_content=src.page_content, id=src.id, metadata=meta))
    info = trace_summary(ranked, n_in=n_in, n_ranked=n)
    info["rerank_ms"] = 1e3 * (time.perf_counter() - t0)
    return out, receipt, info


def _run_inputs(query: str, n: int, top_n: int | None, component: str) -> dict:
    return {"query": query, "n_candidates": n, "top_n": top_n, "component": component}


def _run_outputs(info: dict) -> dict:
    return {key: info[key] for key in ("n_candidates", "n_ranked", "n_returned", "duplicates_dropped",
                                       "below_threshold", "items", "bundle_flags", "screened", "vectors", "embed_ms",
                                       "fetch_ms", "rerank_ms", "core_ms", "solve_ms", "total_ms", "cg_iterations",
                                       "state_sig")
            if key in info}


@contextmanager
def trace(callbacks: Callbacks, *, query: str, n: int, top_n: int | None, component: str):
    """A child chain run named ``OscillinkRerank`` in LangChain tracing, with the number of
    candidates on start and, on end: the counts (``n_candidates`` in, ``duplicates_dropped``,
    ``n_returned``, ``below_threshold`` ids), ``items`` (id, rank, score and, when the bundle
    carries them, ``flags`` / ``action``), ``bundle_flags`` (every bundle item with flags or an
    action), ``state_sig`` and timings (``core_ms``: `oscillink_core.rerank` alone; ``rerank_ms``:
    plus building the documents; ``total_ms``: the whole traced block, embedding / vector lookup
    included).

    Yields a dict the caller fills; it becomes the run's outputs.
    """
    cm = CallbackManager.configure(inheritable_callbacks=callbacks)
    rm = cm.on_chain_start({"name": RUN_NAME}, _run_inputs(query, n, top_n, component), name=RUN_NAME)
    info: dict = {"n_candidates": n}
    t0 = time.perf_counter()
    try:
        yield info
    except BaseException as exc:
        rm.on_chain_error(exc)
        raise
    info["total_ms"] = 1e3 * (time.perf_counter() - t0)
    rm.on_chain_end(_run_outputs(info))


@asynccontextmanager
async def atrace(callbacks: Callbacks, *, query: str, n: int, top_n: int | None, component: str):
    """Async form of `trace`."""
    cm = AsyncCallbackManager.configure(inheritable_callbacks=callbacks)
    rm = await cm.on_chain_start({"name": RUN_NAME}, _run_inputs(query, n, top_n, component), name=RUN_NAME)
    info: dict = {"n_candidates": n}
    t0 = time.perf_counter()
    try:
        yield info
    except BaseException as exc:
        await rm.on_chain_error(exc)
        raise
    info["total_ms"] = 1e3 * (time.perf_counter() - t0)
    await rm.on_chain_end(_run_outputs(info))
