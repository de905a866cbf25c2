"""Shared machinery of the compressor and the retriever: ids, the rerank call, output documents,
provenance and tracing. Pure translation between LangChain objects and `oscillink_core.rerank`."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import numpy as np
from langchain_core.callbacks import AsyncCallbackManager, CallbackManager, Callbacks
from langchain_core.documents import Document

from oscillink_core import LatticeParams, rerank, resolve_params, sign_receipt

__all__ = ["candidate_ids", "rerank_documents", "trace", "atrace", "check_params", "DEFAULT_RECEIPT_KEY"]

DEFAULT_RECEIPT_KEY = "oscillink_receipt"
RUN_NAME = "OscillinkRerank"


def check_params(value: Any) -> LatticeParams:
    """Resolve ``params`` once, at construction: a bad profile fails early with the core's message."""
    return resolve_params(value)


def candidate_ids(docs: Sequence[Document]) -> list[str]:
    """Candidate ids for the core: ``Document.id`` when set and unique, else ``"pos<i>:<sha256(text)[:16]>"``.

    The fallback is stable for the same documents in the same order, and always unique because it
    contains the position. The receipt's ``state_sig`` binds these ids.

    >>> candidate_ids([Document("x", id="a"), Document("y"), Document("z", id="a")])
    ['a', 'pos1:a1fce4363854ff88', 'pos2:594e519ae499312b']
    """
    out: list[str] = []
    seen: set[str] = set()
    for i, d in enumerate(docs):
        cid = d.id if d.id not in (None, "") else None
        if cid is None or cid in seen:
            cid = f"pos{i}:{hashlib.sha256(d.page_content.encode('utf-8')).hexdigest()[:16]}"
            while cid in seen:  # only if a caller's id happens to look like our fallback
                cid += "'"
        seen.add(cid)
        out.append(cid)
    return out


def _unit_rows(Y: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(Y, axis=1, keepdims=True)
    return np.divide(Y, norms, out=np.array(Y, dtype=np.float32, copy=True), where=norms > 0)


def rerank_documents(*, query_vector: Any, vectors: np.ndarray, docs: Sequence[Document],
                     retrieval_scores: Sequence[float | None] | None, top_n: int, params: LatticeParams,
                     receipt_key: str, signing_key: str | bytes | None, light_receipt: bool,
                     provenance: dict) -> tuple[list[Document], dict, dict]:
    """Rerank ``docs`` (with their ``vectors``) against ``query_vector``; return new documents,
    the receipt and timings.

    Vectors and query are scaled to unit length first (the lattice parameters are tuned for unit
    embeddings; the ranking is by cosine anyway); the receipt's provenance says so.
    """
    n = len(docs)
    Y = np.asarray(vectors, dtype=np.float32)
    q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
    if Y.shape[0] != n:
        raise ValueError(f"got {Y.shape[0]} candidate vectors for {n} documents")
    if Y.shape[1] != q.shape[0]:
        raise ValueError(f"embedding size mismatch: the query embedding has {q.shape[0]} dimensions but the "
                         f"candidate vectors ({provenance.get('vectors', '?')}, from "
                         f"{provenance.get('source') or 'the embeddings'}) have {Y.shape[1]}; use the same "
                         "embedding model for the query and the passages")
    qn = float(np.linalg.norm(q))
    if qn > 0:
        q = q / qn
    ids = candidate_ids(docs)
    t0 = time.perf_counter()
    res = rerank(q, _unit_rows(Y), k=top_n, ids=ids, params=params, light_receipt=light_receipt)
    core_ms = 1e3 * (time.perf_counter() - t0)
    receipt = dict(res.receipt)
    receipt["provenance"] = {**provenance, "normalized": True,
                             "ids": "Document.id (fallback pos<i>:sha256(text)[:16] when missing or repeated)"}
    if signing_key is not None:
        receipt = sign_receipt(receipt, signing_key)
    frozen = json.dumps(receipt)  # each document gets its own copy (cheaper than deepcopy)
    out = []
    for it in res.items:
        src = docs[it.index]
        first = retrieval_scores[it.index] if retrieval_scores is not None else it.cosine
        meta = {**src.metadata,
                "oscillink_score": float(it.score),
                "oscillink_rank": int(it.rank),
                "retrieval_score": None if first is None else float(first),
                "retrieval_rank": int(it.index) + 1,
                receipt_key: json.loads(frozen)}
        out.append(Document(page_content=src.page_content, id=src.id, metadata=meta))
    timings = {"rerank_ms": 1e3 * (time.perf_counter() - t0), "core_ms": core_ms,
               "solve_ms": res.timings.get("solve_ms"), "cg_iterations": res.timings.get("cg_iterations")}
    return out, receipt, timings


def _run_inputs(query: str, n: int, top_n: int, component: str) -> dict:
    return {"query": query, "n_candidates": n, "top_n": top_n, "component": component}


def _run_outputs(info: dict) -> dict:
    return {key: info[key] for key in ("n_candidates", "n_returned", "vectors", "embed_ms", "fetch_ms", "rerank_ms",
                                       "core_ms", "total_ms", "cg_iterations", "state_sig") if key in info}


@contextmanager
def trace(callbacks: Callbacks, *, query: str, n: int, top_n: int, component: str):
    """A child chain run named ``OscillinkRerank`` in LangChain tracing, with the number of
    candidates on start and the timings, candidate count and ``state_sig`` on end
    (``core_ms``: `oscillink_core.rerank` alone; ``rerank_ms``: plus building the documents;
    ``total_ms``: the whole traced block, embedding / vector lookup included).

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
async def atrace(callbacks: Callbacks, *, query: str, n: int, top_n: int, component: str):
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
