"""Labelled queries: one query with its candidates, relevance and traps, and builders from
BEIR-style qrels, rows and JSONL (see the package docstring)."""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_embeddings, check_ids, check_query, check_query_text, check_texts


def _check_id(v: Any, what: str) -> Hashable:
    if isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{what} {v!r} is a bool; ids must be str or int")
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, str):
        return v
    raise ValueError(f"{what} {v!r} has type {type(v).__name__}; ids must be str or int")


@dataclass(frozen=True, eq=False)
class LabelledQuery:
    """One labelled query: embeddings, candidate ids, graded relevance and traps.

    Parameters
    ----------
    query : (D,) query embedding.
    candidates : (N, D) first-stage candidate embeddings, in first-stage order.
    ids : N unique str/int ids (default ``0..N-1``).
    relevance : mapping id -> gain; gain > 0 means relevant. Ids that are not candidates are
        allowed (they still count in the ideal DCG and in recall).
    traps : ids of trap candidates (ids that are not candidates are ignored).
    qid : optional query id, carried into reports.
    texts, query_text : optional candidate texts (N strings) and the query's text; with both, the
        tuner ranks with the text screening signals, as ``rerank(..., texts=, query_text=)`` does.

    Arrays are validated and copied to float32; bad shapes, NaN or zero rows raise ValueError.

    Examples
    --------
    >>> import numpy as np
    >>> q = LabelledQuery(np.ones(3), np.eye(3), ids=["a", "b", "c"], relevance={"a": 1})
    >>> q.n, q.ids, q.relevant
    (3, ('a', 'b', 'c'), frozenset({'a'}))
    """

    query: Any
    candidates: Any
    ids: Sequence[Hashable] | None = None
    relevance: Mapping[Hashable, float] = field(default_factory=dict)
    traps: Iterable[Hashable] = frozenset()
    qid: Hashable | None = None
    texts: Sequence[str] | None = None
    query_text: str | None = None

    def __post_init__(self) -> None:
        Y = check_embeddings(self.candidates, name="candidates")
        if self.texts is not None:
            object.__setattr__(self, "texts", tuple(check_texts(self.texts, Y.shape[0])))
        check_query_text(self.query_text, name="query_text")
        psi = check_query(self.query, Y.shape[1], name="query")
        ids = tuple(check_ids(self.ids, Y.shape[0]))
        if not isinstance(self.relevance, Mapping):
            if isinstance(self.relevance, (str, bytes)):
                raise ValueError("relevance must be a mapping {id: gain} or a collection of ids, not a string")
            rel_in = {r: 1.0 for r in self.relevance}
        else:
            rel_in = dict(self.relevance)
        rel = {}
        for key, gain in rel_in.items():
            key = _check_id(key, "relevance id")
            if isinstance(gain, (bool, np.bool_)):
                gain = float(gain)
            if not isinstance(gain, (int, float, np.integer, np.floating)) or not math.isfinite(gain):
                raise ValueError(f"relevance gain of {key!r} must be a finite number; got {gain!r}")
            if gain > 0:
                rel[key] = float(gain)
        if isinstance(self.traps, (str, bytes)):
            raise ValueError("traps must be a collection of ids, not a string")
        traps = frozenset(_check_id(t, "trap id") for t in self.traps)
        object.__setattr__(self, "candidates", Y)
        object.__setattr__(self, "query", psi)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "relevance", rel)
        object.__setattr__(self, "traps", traps)

    @property
    def n(self) -> int:
        """Number of candidates."""
        return int(self.candidates.shape[0])

    @property
    def relevant(self) -> frozenset:
        """Ids with gain > 0."""
        return frozenset(self.relevance)


def _lookup_vectors(lookup: Any, keys: Sequence[Hashable], what: str) -> np.ndarray:
    if callable(lookup) and not isinstance(lookup, Mapping):
        out = np.asarray(lookup(list(keys)))
        if out.ndim != 2 or out.shape[0] != len(keys):
            raise ValueError(f"{what} callable must return an array of shape ({len(keys)}, D); got {out.shape}")
        return out
    if not isinstance(lookup, Mapping):
        raise ValueError(f"{what} must be a mapping id -> vector or a callable ids -> (n, D) array")
    missing = [k for k in keys if k not in lookup]
    if missing:
        raise ValueError(f"{what} has no vector for {len(missing)} id(s), first {missing[0]!r}")
    return np.stack([np.asarray(lookup[k]) for k in keys])


def queries_from_qrels(qrels: Mapping[Hashable, Mapping[Hashable, float]], candidates: Mapping[Hashable, Sequence],
                       query_vectors: Any, doc_vectors: Any, *,
                       traps: Mapping[Hashable, Iterable[Hashable]] | None = None,
                       query_ids: Sequence[Hashable] | None = None) -> list[LabelledQuery]:
    """Labelled queries from BEIR-style qrels and first-stage candidate lists.

    Parameters
    ----------
    qrels : ``{qid: {doc_id: gain}}`` (gain > 0 relevant; all judged ids count, retrieved or not).
    candidates : ``{qid: [doc_id, ...]}``, the first-stage candidates of each query, best first.
    query_vectors : mapping qid -> (D,) vector, or a callable ``list[qid] -> (n, D)`` array.
    doc_vectors : mapping doc_id -> (D,) vector, or a callable ``list[doc_id] -> (n, D)`` array.
    traps : optional ``{qid: trap doc ids}``.
    query_ids : which queries, in which order (default: the qids of ``qrels`` that have
        candidates, in ``qrels`` order). A qid without candidates raises ValueError.

    Returns
    -------
    list of LabelledQuery

    Examples
    --------
    >>> import numpy as np
    >>> docs = {"d1": [1.0, 0.0], "d2": [0.0, 1.0], "d3": [1.0, 1.0]}
    >>> qs = queries_from_qrels({"q": {"d2": 1}}, {"q": ["d1", "d2", "d3"]}, {"q": [0.1, 1.0]}, docs)
    >>> qs[0].qid, qs[0].ids, qs[0].relevance
    ('q', ('d1', 'd2', 'd3'), {'d2': 1.0})
    """
    if query_ids is None:
        query_ids = [q for q in qrels if q in candidates]
    query_ids = list(query_ids)
    if not query_ids:
        raise ValueError("no query has both qrels and candidates")
    for q in query_ids:
        if q not in candidates or len(candidates[q]) == 0:
            raise ValueError(f"query {q!r} has no candidates")
    qvecs = _lookup_vectors(query_vectors, query_ids, "query_vectors")
    out = []
    for q, qv in zip(query_ids, qvecs, strict=True):
        ids = list(candidates[q])
        out.append(LabelledQuery(query=qv, candidates=_lookup_vectors(doc_vectors, ids, "doc_vectors"), ids=ids,
                                 relevance=dict(qrels.get(q, {})), traps=frozenset((traps or {}).get(q, ())), qid=q))
    return out


def _default_gain(row: Mapping[str, Any]) -> float:
    if _truthy(row.get("trap", False)):
        return 0.0
    label = row.get("label", 0)
    if label is None:
        return 0.0
    if isinstance(label, (bool, np.bool_, int, float, np.integer, np.floating)):
        return float(label) if math.isfinite(float(label)) and float(label) > 0 else 0.0
    if isinstance(label, str):
        return 1.0 if label.strip() else 0.0
    raise ValueError(f"label must be a bool, a number or a string; got {label!r}")


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() not in ("", "0", "false", "no", "none")
    return bool(v)


def queries_from_rows(rows: Iterable[Mapping[str, Any]], *, embed: Callable[[list[str]], Any] | None = None,
                      query_vectors: Mapping[Hashable, Any] | None = None,
                      gain: Callable[[Mapping[str, Any]], float] | None = None) -> list[LabelledQuery]:
    """Labelled queries from rows ``{query_id, query, id, text, label, trap}``.

    Rows are grouped by ``query_id`` (``qid`` is accepted too; rows without either form one
    query). Within a group, row order is the first-stage candidate order.

    Parameters
    ----------
    rows : iterable of dicts. Per row: ``id`` (str/int, unique within its query); the candidate
        embedding as ``vector`` or else ``text`` (embedded with ``embed``); ``label`` and
        ``trap``. The query embedding comes from ``query_vectors[query_id]``, else a row's
        ``query_vector``, else its ``query`` text (embedded with ``embed``).
    embed : function ``list[str] -> (n, D)`` array, e.g. `oscillink_core.app.embeddings.embed`;
        every distinct text is embedded once, in one call.
    query_vectors : optional mapping query_id -> (D,) vector.
    gain : optional ``row -> gain`` function. The default: 0 for a trap row (``trap`` truthy);
        otherwise a bool/number ``label`` is the gain and a non-empty string label counts as 1.

    Returns
    -------
    list of LabelledQuery, in order of each query's first row.

    Examples
    --------
    >>> rows = [{"query_id": "q1", "query_vector": [1.0, 0.0], "id": "a", "vector": [1.0, 0.1], "label": 1},
    ...         {"query_id": "q1", "id": "b", "vector": [0.9, 0.2], "label": 0, "trap": True}]
    >>> [(q.qid, q.ids, q.relevance, sorted(q.traps)) for q in queries_from_rows(rows)]
    [('q1', ('a', 'b'), {'a': 1.0}, ['b'])]
    """
    gain = gain or _default_gain
    groups: OrderedDict[Hashable, list[Mapping[str, Any]]] = OrderedDict()
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"row {i} is a {type(row).__name__}, not a dict")
        if "id" not in row:
            raise ValueError(f"row {i} has no 'id'")
        q = row.get("query_id", row.get("qid"))
        groups.setdefault(q, []).append(row)
    if not groups:
        raise ValueError("no rows given")
    texts: dict[str, None] = {}
    for q, grp in groups.items():
        for row in grp:
            if "vector" not in row:
                if not isinstance(row.get("text"), str):
                    raise ValueError(f"row {row['id']!r} of query {q!r} has neither 'vector' nor a 'text' string")
                texts[row["text"]] = None
        if not (query_vectors is not None and q in query_vectors) and not any("query_vector" in r for r in grp):
            qtext = next((r["query"] for r in grp if isinstance(r.get("query"), str)), None)
            if qtext is None:
                raise ValueError(f"query {q!r} has no vector: give query_vectors, a 'query_vector' or a 'query' text")
            texts[qtext] = None
    table: dict[str, np.ndarray] = {}
    if texts:
        if embed is None:
            raise ValueError("rows carry texts but no embed function was given")
        keys = list(texts)
        vecs = np.asarray(embed(keys))
        if vecs.ndim != 2 or vecs.shape[0] != len(keys):
            raise ValueError(f"embed must return an array of shape ({len(keys)}, D); got {vecs.shape}")
        table = dict(zip(keys, vecs, strict=True))
    out = []
    for q, grp in groups.items():
        if query_vectors is not None and q in query_vectors:
            qv = query_vectors[q]
        else:
            qv = next((r["query_vector"] for r in grp if "query_vector" in r), None)
            if qv is None:
                qv = table[next(r["query"] for r in grp if isinstance(r.get("query"), str))]
        ids = [r["id"] for r in grp]
        Y = np.stack([np.asarray(r["vector"]) if "vector" in r else table[r["text"]] for r in grp])
        rel = {}
        traps = set()
        for r in grp:
            g = float(gain(r))
            if g > 0:
                rel[r["id"]] = g
            if _truthy(r.get("trap", False)):
                traps.add(r["id"])
        texts_ = [r.get("text") for r in grp]
        qtext_ = next((r["query"] for r in grp if isinstance(r.get("query"), str)), None)
        has_texts = all(isinstance(t, str) for t in texts_) and qtext_ is not None
        out.append(LabelledQuery(query=qv, candidates=Y, ids=ids, relevance=rel, traps=traps, qid=q,
                                 texts=texts_ if has_texts else None, query_text=qtext_ if has_texts else None))
    return out


def queries_from_jsonl(path: str | os.PathLike, *, embed: Callable[[list[str]], Any] | None = None,
                       query_vectors: Mapping[Hashable, Any] | None = None,
                       gain: Callable[[Mapping[str, Any]], float] | None = None) -> list[LabelledQuery]:
    """:func:`queries_from_rows` over a JSONL file (one JSON object per line; blank lines skipped)."""
    p = Path(path)
    rows = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ValueError(f"file not found: {p}") from None
    for n, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}:{n}: not valid JSON: {exc}") from None
    return queries_from_rows(rows, embed=embed, query_vectors=query_vectors, gain=gain)
