"""What the LangChain and LlamaIndex adapters do the same way, in one place, without framework imports.

Both adapters translate their framework's objects into ``(id, text)`` pairs plus vectors, call
`rerank_candidates`, and translate the result back. Everything that decides *what* is ranked and
*what the caller gets* lives here, so the same profile ranks the same candidates identically
through either adapter and through `oscillink_core.rerank` itself:

* **Vectors go to the core as they are.** The lattice's ``normalize`` parameter (default True)
  decides whether rows and query are scaled to unit length; an adapter never normalises on its own.
* **Repeated inputs** (`dedupe`): an input with the same id as an earlier one is the same
  candidate and is dropped after its first occurrence (first-stage order is kept); an input
  without an id repeats an earlier id-less input with the same text. The receipt's
  ``provenance.duplicates_dropped`` counts them. Two inputs with one id but different texts are
  an error (`ValueError` naming the id): they cannot both be that candidate.
* **How many come back**: ``top_n=None`` returns every candidate, an int the best ``top_n``;
  ``score_threshold`` then drops items whose ``relevance_score`` is below it (the receipt
  records the threshold and the ids it dropped).
* **Provenance, then signature**: the adapter's ``provenance`` block is added to the receipt and
  *then* the receipt is signed, so the signature covers where the vectors came from.
* **Metadata keys** (`result_metadata`): ``relevance_score`` (the score the ranking used, the
  frameworks' reranker key), ``oscillink_score`` (same value), ``oscillink_rank`` (1 = best),
  and the first-stage value under a name that says what it is: ``retrieval_score`` for a
  similarity (higher is closer) or a score of unknown kind, ``retrieval_distance`` for a distance
  (lower is closer, e.g. FAISS L2 or Chroma), never both; ``retrieval_rank`` (1-based first-stage
  position). Stale values of these keys on the incoming item are replaced, never kept.
* **Sources** (`metadata_source`, `check_trusted_sources`): with ``trusted_sources`` set, each
  item's source is read from its metadata under one key (``None`` when the key is missing or
  empty, ``str()`` of a value that is not a str) and both go to the core, which judges them
  under the ``provenance`` policy of the params (default ``"corroboration"``, flag
  ``"new_source_echo"``; ``"trusted_first"``, flag ``"untrusted_source"``). Without
  ``trusted_sources`` no sources are passed, so the ranking and the receipt (``state_sig``
  included) are those of a call without them.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "SCORE_KEY", "RANK_KEY", "RELEVANCE_KEY", "RETRIEVAL_SCORE_KEY", "RETRIEVAL_DISTANCE_KEY",
    "RETRIEVAL_RANK_KEY", "DEFAULT_RECEIPT_KEY", "OUR_KEYS", "SIMILARITY", "DISTANCE", "UNKNOWN",
    "check_top_n", "check_score_threshold", "check_trusted_sources", "check_source_key", "metadata_source",
    "dedupe", "fallback_ids", "Ranked", "rerank_candidates",
    "result_metadata", "trace_summary",
]

SCORE_KEY = "oscillink_score"
RANK_KEY = "oscillink_rank"
RELEVANCE_KEY = "relevance_score"
RETRIEVAL_SCORE_KEY = "retrieval_score"
RETRIEVAL_DISTANCE_KEY = "retrieval_distance"
RETRIEVAL_RANK_KEY = "retrieval_rank"
DEFAULT_RECEIPT_KEY = "oscillink_receipt"
OUR_KEYS = (RELEVANCE_KEY, SCORE_KEY, RANK_KEY, RETRIEVAL_SCORE_KEY, RETRIEVAL_DISTANCE_KEY, RETRIEVAL_RANK_KEY)

SIMILARITY, DISTANCE, UNKNOWN = "similarity", "distance", "unknown"


def check_top_n(value: Any) -> int | None:
    """``None`` (return all) or an int >= 1.

    >>> check_top_n(None), check_top_n(3)
    (None, 3)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"top_n must be None (return every candidate) or an int >= 1; got {value!r}")
    return value


def check_score_threshold(value: Any) -> float | None:
    """``None`` (keep all) or a finite number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"score_threshold must be None or a finite number; got {value!r}")
    return float(value)


def check_trusted_sources(value: Any) -> frozenset[str] | None:
    """``None`` (no trust policy) or the trusted sources as a frozenset of non-empty str.

    A single string is refused (it would otherwise read as a set of characters).

    >>> sorted(check_trusted_sources(["wiki", "docs"])), check_trusted_sources(None)
    (['docs', 'wiki'], None)
    >>> check_trusted_sources("wiki")
    Traceback (most recent call last):
    ...
    ValueError: trusted_sources must be a collection of source names, not a single string
    """
    from oscillink_core._validation import check_trusted_sources as core_check

    return core_check(value)


def check_source_key(value: Any) -> str:
    """The metadata key that holds an item's source: a non-empty str."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"source_key must be a non-empty str (the metadata key holding the source); got {value!r}")
    return value


def metadata_source(metadata: Mapping[str, Any] | None, key: str) -> str | None:
    """The source an item's ``metadata`` records under ``key``: None when missing, None or empty,
    ``str()`` of a value that is not a str.

    >>> metadata_source({"source": "https://a.org/x"}, "source"), metadata_source({}, "source")
    ('https://a.org/x', None)
    >>> metadata_source({"collection": 7}, "collection"), metadata_source({"source": ""}, "source")
    ('7', None)
    """
    if not metadata:
        return None
    value = metadata.get(key)
    if value is None:
        return None
    value = value if isinstance(value, str) else str(value)
    return value or None


def dedupe(ids: Sequence[str | None], texts: Sequence[str]) -> tuple[list[int], int]:
    """Positions to keep (first occurrences, in order) and how many repeats were dropped.

    >>> dedupe(["a", "a", "b", None, None], ["x", "x", "y", "z", "z"])
    ([0, 2, 3], 2)
    >>> dedupe(["a", "a"], ["x", "other"])
    Traceback (most recent call last):
    ...
    ValueError: two inputs share the id 'a' but have different texts; ids must identify one candidate
    """
    keep: list[int] = []
    by_id: dict[str, str] = {}
    by_text: set[str] = set()
    for i, (cid, text) in enumerate(zip(ids, texts, strict=True)):
        if cid not in (None, ""):
            if cid in by_id:
                if by_id[cid] != text:
                    raise ValueError(f"two inputs share the id {cid!r} but have different texts; "
                                     "ids must identify one candidate")
                continue
            by_id[cid] = text
        else:
            if text in by_text:
                continue
            by_text.add(text)
        keep.append(i)
    return keep, len(ids) - len(keep)


def fallback_ids(ids: Sequence[str | None], texts: Sequence[str]) -> list[str]:
    """Candidate ids for the core: the given id, else ``"pos<i>:<sha256(text)[:16]>"`` (unique).

    >>> fallback_ids(["a", None], ["x", "y"])
    ['a', 'pos1:a1fce4363854ff88']
    """
    out: list[str] = []
    seen: set[str] = set()
    for i, (cid, text) in enumerate(zip(ids, texts, strict=True)):
        if cid in (None, "") or cid in seen:
            cid = f"pos{i}:{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"
            while cid in seen:  # only if a caller's id happens to look like our fallback
                cid += "'"
        seen.add(cid)
        out.append(cid)
    return out


@dataclass
class Ranked:
    """The outcome of `rerank_candidates`: kept items (best first), the signed receipt, timings."""

    items: list  # oscillink_core.RankedItem, index = position in the candidates given
    receipt: dict
    timings: dict = field(default_factory=dict)
    below_threshold: list = field(default_factory=list)


def _as_rows(vectors: Any, n: int) -> np.ndarray:
    try:
        Y = np.asarray(vectors, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"candidate vectors are not a rectangular array of numbers (embedding sizes differ?): "
                         f"{exc}") from None
    if Y.ndim != 2 or Y.shape[0] != n:
        raise ValueError(f"got candidate vectors of shape {Y.shape} for {n} candidates")
    return Y


def rerank_candidates(query_vector: Any, vectors: Any, *, ids: Sequence[str], top_n: int | None, params: Any,
                      provenance: Mapping[str, Any], score_threshold: float | None = None,
                      sign_key: str | bytes | None = None, light_receipt: bool = False,
                      texts: Sequence[str] | None = None, query_text: str | None = None,
                      sources: Sequence[str | None] | None = None, trusted_sources: Any = None) -> Ranked:
    """Rerank ``vectors`` (one row per id) against ``query_vector``; add provenance, then sign.

    ``texts`` (one per id) and ``query_text`` go to the core, which then runs its text screening
    signals and binds both in the receipt (see `oscillink_core.screening`). So do ``sources`` (one
    per id, None where unknown) and ``trusted_sources`` (see `oscillink_core.provenance`); an
    adapter passes ``sources`` only with a trust policy (``trusted_sources`` not None), so that a
    call without one gives the receipt it gave before the feature existed.

    ``params`` is a resolved ``LatticeParams`` (or anything `resolve_params` takes). The query
    must be non-empty and have the candidates' dimension (a clear `ValueError` otherwise).
    """
    from oscillink_core import rerank, resolve_params, sign_receipt

    p = resolve_params(params)
    n = len(ids)
    Y = _as_rows(vectors, n)
    q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
    if q.shape[0] != Y.shape[1]:
        raise ValueError(f"embedding size mismatch: the query embedding has {q.shape[0]} dimensions but the "
                         f"candidate vectors ({provenance.get('vectors', '?')}) have {Y.shape[1]}; the query and "
                         "the passages must come from the same embedding model")
    k = n if top_n is None else min(top_n, n)
    t0 = time.perf_counter()
    res = rerank(q, Y, k=k, ids=list(ids), params=p, light_receipt=light_receipt,
                 texts=texts, query_text=query_text, sources=sources, trusted_sources=trusted_sources)
    core_ms = 1e3 * (time.perf_counter() - t0)
    items = list(res.items)
    dropped: list = []
    if score_threshold is not None:
        dropped = [it.id for it in items if it.score < score_threshold]
        items = [it for it in items if it.score >= score_threshold]
    prov = {**provenance, "normalized": bool(p.normalize), "top_n": top_n}
    if score_threshold is not None:
        prov["score_threshold"] = score_threshold
        prov["below_threshold"] = dropped
    receipt = {**res.receipt, "provenance": prov}
    if sign_key is not None:
        receipt = sign_receipt(receipt, sign_key)
    timings = {"core_ms": core_ms, "solve_ms": res.timings.get("solve_ms"),
               "cg_iterations": res.timings.get("cg_iterations")}
    return Ranked(items, receipt, timings, dropped)


def result_metadata(source: Mapping[str, Any], item: Any, *, first_stage: float | None, first_stage_kind: str,
                    first_stage_rank: int | None = None, receipt_key: str | None = None,
                    receipt_value: Any = None) -> dict:
    """A deep copy of ``source`` with the ranking keys set (stale ones replaced; see the module doc)."""
    meta = {k: v for k, v in source.items() if k not in OUR_KEYS and k != receipt_key}
    meta = copy.deepcopy(meta)
    meta[RELEVANCE_KEY] = float(item.score)
    meta[SCORE_KEY] = float(item.score)
    meta[RANK_KEY] = int(item.rank)
    if first_stage_kind == DISTANCE:
        meta[RETRIEVAL_DISTANCE_KEY] = None if first_stage is None else float(first_stage)
    else:
        meta[RETRIEVAL_SCORE_KEY] = None if first_stage is None else float(first_stage)
    meta[RETRIEVAL_RANK_KEY] = int(item.index) + 1 if first_stage_rank is None else int(first_stage_rank)
    if receipt_key is not None:
        meta[receipt_key] = receipt_value
    return meta


def trace_summary(ranked: Ranked, *, n_in: int, n_ranked: int) -> dict:
    """What a tracing UI shows for one rerank: counts, each kept item's id / rank / score and, when
    the bundle carries them, its ``flags`` and ``action``; ``screened`` (the candidates the core's
    screening kept out, with their flags and action, when the receipt has a ``screen`` block); the
    ids dropped by the threshold; timings."""
    bundle = {b.get("id"): b for b in ranked.receipt.get("bundle", [])}
    items = []
    for it in ranked.items:
        row = {"id": it.id, "rank": int(it.rank), "score": float(it.score)}
        b = bundle.get(it.id, {})
        for key in ("flags", "action"):
            if key in b:
                row[key] = copy.deepcopy(b[key])
        items.append(row)
    flagged = {b.get("id"): {k: copy.deepcopy(b[k]) for k in ("flags", "action") if k in b}
               for b in ranked.receipt.get("bundle", []) if "flags" in b or "action" in b}
    screen = ranked.receipt.get("screen")
    screened = copy.deepcopy(screen.get("screened", [])) if isinstance(screen, dict) else []
    return {"n_candidates": n_in, "n_ranked": n_ranked, "n_returned": len(ranked.items),
            "duplicates_dropped": n_in - n_ranked, "below_threshold": list(ranked.below_threshold),
            "items": items, "bundle_flags": flagged, "screened": screened,
            "state_sig": ranked.receipt.get("state_sig"),
            **{k: v for k, v in ranked.timings.items() if v is not None}}
