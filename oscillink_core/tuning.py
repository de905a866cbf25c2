"""Self-tuning: fit lattice parameters on labelled queries, and update them from feedback.

Two tools, both producing the profile JSON that ``params=`` accepts everywhere
(`Oscillink`, `rerank`, the LangChain and LlamaIndex integrations):

* :func:`tune` -- offline. Searches ``lamC``, ``lamQ``, ``kneighbors``, gating
  (``gating``, ``gate_gamma``), the score mix ``coh_weight`` and diversification
  (``mmr_lambda``, ``dedup_threshold``, ``dup_keep``, ``dup_action``) -- or any `LatticeParams` field given in
  ``grid`` -- on labelled queries, with K-fold cross-validation over queries.
* :class:`OnlineTuner` -- online. From feedback events (ids a user kept or rejected on one
  rerank) it moves a few continuous parameters by a bounded, deterministic step, chosen by
  comparing the current setting with perturbed ones on the event's own candidates.

The objective
-------------
For one query with top-``k`` list ``r`` (``k`` is the bundle size a user would take)::

    objective(r) = metric(r) - trap_weight * trap_share@k(r)

``metric`` is one of ``"ndcg@C"``, ``"mrr@C"``, ``"recall@C"``, ``"p@1"`` (functions of
`oscillink_core.evaluation`); ``trap_share@k`` is the share of the top ``k`` that are traps. A
setting's score on a set of queries is the mean objective over them. Queries without traps pay
no penalty; with ``trap_weight=1`` one trap in a top-10 costs 0.1, the same as losing 0.1 nDCG.

Labelled queries
----------------
:class:`LabelledQuery` holds one query: its embedding ``query`` (D,), the first-stage candidate
embeddings ``candidates`` (N, D), their ``ids``, a ``relevance`` mapping ``id -> gain`` (gain > 0
is relevant; ids not among the candidates may appear, they count in the ideal DCG and in the
recall denominator, as in BEIR) and the set of ``traps``. Builders:

* :func:`queries_from_qrels` -- BEIR-style ``qrels {qid: {doc_id: gain}}`` plus first-stage
  candidate lists and embedding lookups.
* :func:`queries_from_rows` / :func:`queries_from_jsonl` -- rows ``{query_id, query, id, text,
  label, trap}`` (the JSONL the benchmark and the CLI use), grouped by ``query_id`` in file order;
  texts are embedded with a caller-supplied ``embed`` function (e.g.
  `oscillink_core.app.embeddings.embed`) unless rows carry ``vector`` / ``query_vector``.

A CLI ``oscillink tune DATA.jsonl --out profile.json`` therefore needs only::

    from oscillink_core.app.embeddings import embed
    queries = queries_from_jsonl("DATA.jsonl", embed=embed)
    result = tune(queries, metric="ndcg@10", k=10, folds=5, seed=0, profile_path="profile.json")
    print(result.summary())
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._validation import check_embeddings, check_ids, check_query
from .evaluation import mrr_at_k, ndcg_at_k, paired_bootstrap_ci, precision_at_1, recall_at_k, trap_share_at_k
from .lattice import Oscillink
from .params import _FIELDS, PROFILE_FORMAT, LatticeParams, read_profile_json, resolve_params, save_profile
from .ranking import rank_settled, screen_kwargs, screen_ranking

__all__ = [
    "LabelledQuery",
    "queries_from_qrels",
    "queries_from_rows",
    "queries_from_jsonl",
    "assign_folds",
    "DEFAULT_GRID",
    "tune",
    "TuneResult",
    "FeedbackEvent",
    "OnlineTuner",
    "ONLINE_BOUNDS",
]

#: Values searched by :func:`tune` when ``grid`` is None. Groups searched jointly are listed in
#: ``_JOINT`` (``gating`` with ``gate_gamma``; ``dedup_threshold`` with ``dup_keep`` and
#: ``dup_action``, which act only together). ``coh_weight`` blends the settled alignment with the
#: cosine: -1 ranks by cosine alone, 0 by the settled alignment, > 0 extrapolates the lattice's
#: shift; the positive side is stepped finely because the alignment's spread over real candidates
#: is much narrower than the cosine's, so small positive values already reorder a lot (with the
#: old defaults lamC=0.5, lamQ=4, first 600 test queries of the benchmark's HaluEval trap set:
#: ``coh_weight=0.1`` took nDCG@10 from 0.603 to 0.0007). Current measurements per knob:
#: ``benchmarks/results/quality_sweep.md``.
DEFAULT_GRID: dict[str, tuple] = {
    "lamC": (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0),
    "lamQ": (0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    "kneighbors": (3, 4, 6, 8, 12),
    "gating": ("uniform", "diffusion"),
    "gate_gamma": (0.05, 0.15, 0.5),
    "coh_weight": (-1.0, -0.75, -0.5, 0.0, 0.05, 0.2, 1.0),
    "mmr_lambda": (1.0, 0.95, 0.9, 0.7, 0.5),
    "dedup_threshold": (None, 0.98, 0.95, 0.9),
    "dup_keep": ("support", "consensus", "best"),
    "dup_action": ("reorder", "demote"),
}

_JOINT = (("gating", "gate_gamma", "gate_beta"), ("dedup_threshold", "dup_keep", "dup_action"))

# which fields touch which stage of a rerank (used for caching and for spotting settings that
# are equal in effect). Fields not named here (e.g. ones added to LatticeParams later) are
# treated as changing the settled state, which is always safe.
_KNN_FIELDS = ("kneighbors", "knn", "exact_max_n", "seed")
_GRAPH_FIELDS = _KNN_FIELDS + ("edge_floor", "degree_reg")
_RANK_FIELDS = ("coh_weight", "mmr_lambda", "dedup_threshold", "dup_keep", "dup_action")
_NO_EFFECT = ("lamP",)  # acts only through a chain, and rerank never adds one

_METRICS = {"ndcg": ndcg_at_k, "mrr": mrr_at_k, "recall": recall_at_k}


# ============================================================================ labelled queries
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

    def __post_init__(self) -> None:
        Y = check_embeddings(self.candidates, name="candidates")
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
        out.append(LabelledQuery(query=qv, candidates=Y, ids=ids, relevance=rel, traps=traps, qid=q))
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


# ============================================================================ evaluation engine
def _parse_metric(metric: str) -> tuple[str, Callable[[list, Mapping], float], int]:
    if not isinstance(metric, str):
        raise ValueError(f"metric must be a string like 'ndcg@10'; got {metric!r}")
    m = metric.strip().lower()
    if m in ("p@1", "precision@1"):
        return "p@1", lambda ranked, rel: precision_at_1(ranked, rel), 1
    name, _, cut = m.partition("@")
    if name in _METRICS and cut.isdigit() and int(cut) >= 1:
        fn, c = _METRICS[name], int(cut)
        return f"{name}@{c}", (lambda ranked, rel: fn(ranked, rel, c)), c
    raise ValueError(f"unknown metric {metric!r}; use 'ndcg@C', 'mrr@C', 'recall@C' or 'p@1'")


def _dedup_acts(p: LatticeParams) -> bool:
    """Can the near-duplicate rule change the ranking? Not without a threshold, and not with
    ``dup_keep="best"`` plus ``dup_action="reorder"``: ordering a group's members by score and
    handing them the group's scores in that order gives every member its own score back."""
    return p.dedup_threshold is not None and not (p.dup_keep == "best" and p.dup_action == "reorder")


def _effective_key(p: LatticeParams) -> tuple:
    """(state key, ranking key): equal for settings that give the same ranking.

    The state key holds every field except the ranking fields, with fields that have no
    effect in this setting blanked; the ranking key holds the ranking fields likewise."""
    d = p.to_dict()
    rank = {f: d.pop(f) for f in _RANK_FIELDS}
    for f in _NO_EFFECT:
        d[f] = None
    if d["gating"] == "uniform":
        d["gate_gamma"] = d["gate_beta"] = None
        if d["lamC"] == 0:  # the graph does not enter the solve
            for f in _GRAPH_FIELDS:
                d[f] = None
    if not _dedup_acts(p):
        rank["dedup_threshold"] = rank["dup_keep"] = rank["dup_action"] = None
    else:  # the near-duplicate groups come from the kNN lists
        rank["knn"] = tuple(p.to_dict()[f] for f in _KNN_FIELDS)
    return (tuple(sorted(d.items())), tuple(sorted(rank.items())))


class _Engine:
    """Ranks labelled queries under many settings, reusing settled states across settings
    that differ only in ranking fields (``coh_weight``, ``mmr_lambda``, ``dedup_threshold``,
    ``dup_keep``, ``dup_action``).

    The ranking step is `Oscillink.bundle`'s own (`ranking.rank_settled`), run on the unit rows
    and kNN lists read from the lattice that settled, so it equals `rerank(...)`'s ranking; a
    test checks this on every setting of a grid.
    """

    def __init__(self, queries: Sequence[LabelledQuery], max_states: int = 8) -> None:
        self.queries = list(queries)
        self._Yn: list[np.ndarray | None] = [None] * len(self.queries)
        # per state key: per query (align, cosine, knn idx, knn sim)
        self._states: OrderedDict[tuple, list[tuple]] = OrderedDict()
        self._max_states = max_states
        self.n_solves = 0

    def _state(self, p: LatticeParams) -> list:
        key = _effective_key(p)[0]
        if _dedup_acts(p):  # the kNN lists the rule reads (blanked in the state key when lamC=0)
            key = (key, tuple(getattr(p, f) for f in _KNN_FIELDS))
        if key in self._states:
            self._states.move_to_end(key)
            return self._states[key]
        out = []
        for i, q in enumerate(self.queries):
            lat = Oscillink(q.candidates, params=p)
            lat.set_query(q.query)
            lat.settle()
            c = lat.components()
            if self._Yn[i] is None:
                self._Yn[i] = lat.unit_rows  # the unit rows bundle() ranks with (independent of params)
            idx, sim = lat.knn_lists() if lat.params.kneighbors and q.candidates.shape[0] > 1 else (None, None)
            out.append((c["align"], c["cosine"], idx, sim))
            self.n_solves += 1
        self._states[key] = out
        if len(self._states) > self._max_states:
            self._states.popitem(last=False)
        return out

    def rankings(self, p: LatticeParams, depth: int) -> list[list[int]]:
        """Top-``depth`` candidate indices of every query under ``p`` (``depth`` clipped to N)."""
        out = []
        for i, (align, cosine, idx, sim) in enumerate(self._state(p)):
            out.append(_rank(p, align, cosine, self._Yn[i], idx, sim, depth).tolist())
        return out


def _rank(p: LatticeParams, align: np.ndarray, cosine: np.ndarray, Yn: np.ndarray, idx: Any, sim: Any,
          depth: int) -> np.ndarray:
    """The selection step of `Oscillink.bundle` for settled components (the same function)."""
    k = min(depth, align.shape[0])
    order, score, rep = rank_settled(align, cosine, Yn, idx, sim, k, coh_weight=p.coh_weight,
                                     mmr_lambda=p.mmr_lambda, dedup_threshold=p.dedup_threshold, dup_keep=p.dup_keep,
                                     dup_action=p.dup_action)
    order, _, _ = screen_ranking(order, score, rep, cosine, Yn, k, action=p.screen, mmr_lambda=p.mmr_lambda,
                                 dup_action=p.dup_action, **screen_kwargs(p))
    return order


class _Objective:
    """Per-query objective arrays of settings, cached by effective key."""

    def __init__(self, engine: _Engine, metric: str, k: int, trap_weight: float) -> None:
        self.engine = engine
        self.metric_name, self._metric, cut = _parse_metric(metric)
        self.k = k
        self.depth = max(k, cut)
        self.trap_weight = trap_weight
        self._cache: dict[tuple, dict[str, np.ndarray]] = {}
        self.trials: list[dict] = []

    def per_query(self, p: LatticeParams) -> dict[str, np.ndarray]:
        key = _effective_key(p)
        if key not in self._cache:
            qs = self.engine.queries
            ranks = self.engine.rankings(p, self.depth)
            ids = [[q.ids[j] for j in r] for q, r in zip(qs, ranks, strict=True)]
            met = np.array([self._metric(r, q.relevance) for q, r in zip(qs, ids, strict=True)])
            trap = np.array([trap_share_at_k(r, q.traps, self.k) for q, r in zip(qs, ids, strict=True)])
            self._cache[key] = {"objective": met - self.trap_weight * trap, "metric": met, "trap_share": trap}
            self.trials.append({"params": p, "key": key})
        return self._cache[key]

    def mean(self, p: LatticeParams, idx: np.ndarray) -> float:
        return float(self.per_query(p)["objective"][idx].mean())

    def summary(self, p: LatticeParams, idx: np.ndarray) -> dict[str, float]:
        pq = self.per_query(p)
        return {name: float(pq[name][idx].mean()) for name in ("objective", "metric", "trap_share")}


def _check_blas_threads(n: Any) -> int | None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"blas_threads must be an int >= 1 or None; got {n!r}")
    return n


def _blas_threads(n: int | None):
    """Context limiting BLAS threads to ``n`` (threadpoolctl); a no-op when ``n`` is None or
    threadpoolctl is missing. The lattice's matrices are small (N ~ 100): on them extra BLAS
    threads only add hand-off cost, which grows ~10x when the CPU is busy with other work."""
    if _check_blas_threads(n) is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with the embeddings extra
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


# ============================================================================ search
def assign_folds(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..folds-1) of each of ``n`` queries: a seeded random permutation dealt
    round-robin, so fold sizes differ by at most one.

    Examples
    --------
    >>> assign_folds(7, 3, seed=0).tolist()
    [2, 0, 0, 2, 1, 1, 0]
    >>> np.bincount(assign_folds(7, 3, seed=1)).tolist()
    [3, 2, 2]
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an int >= 2; got {folds!r}")
    if n < folds:
        raise ValueError(f"need at least folds={folds} labelled queries for {folds}-fold cross-validation; got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[perm] = np.arange(n) % folds
    return out


def _check_grid(grid: Mapping[str, Sequence] | None, base: LatticeParams) -> dict[str, tuple]:
    if grid is None:
        grid = DEFAULT_GRID
    if not isinstance(grid, Mapping):
        raise ValueError(f"grid must be a dict {{parameter: [values]}}; got {type(grid).__name__}")
    unknown = sorted(set(grid) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown grid key(s) {unknown}; every key must be a LatticeParams field: {sorted(_FIELDS)}")
    out = {}
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ValueError(f"grid[{name!r}] must be a list of values; got {values!r}")
        vals = []
        for v in values:
            try:  # validated and normalised (e.g. numpy scalars become float / int)
                vals.append(getattr(base.replace(**{name: v}), name))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"grid[{name!r}] holds an invalid value {v!r}: {exc}") from None
        if not vals:
            raise ValueError(f"grid[{name!r}] is empty")
        out[name] = tuple(dict.fromkeys(vals))  # drop repeats, keep order
    return out


def _groups(grid: Mapping[str, tuple]) -> list[tuple[str, ...]]:
    groups, seen = [], set()
    for name in grid:
        if name in seen:
            continue
        joint = next((g for g in _JOINT if name in g), (name,))
        g = tuple(x for x in joint if x in grid)
        seen.update(g)
        groups.append(g)
    return groups


def _candidates(cur: LatticeParams, group: tuple[str, ...], grid: Mapping[str, tuple]) -> list[LatticeParams]:
    out, keys = [], set()
    for combo in itertools.product(*(grid[g] for g in group)):
        p = cur.replace(**dict(zip(group, combo, strict=True)))
        k = _effective_key(p)
        if k not in keys:
            keys.add(k)
            out.append(p)
    return out


def _search(obj: _Objective, idx: np.ndarray, base: LatticeParams, grid: Mapping[str, tuple], search: str,
            max_rounds: int) -> LatticeParams:
    """Best setting on the queries ``idx``; a move needs a strictly higher mean objective, so
    ties keep the current (earlier) setting."""
    cur, cur_val = base, obj.mean(base, idx)
    if search == "grid":
        names = list(grid)
        for combo in itertools.product(*(grid[n] for n in names)):
            p = base.replace(**dict(zip(names, combo, strict=True)))
            v = obj.mean(p, idx)
            if v > cur_val:
                cur, cur_val = p, v
        return cur
    groups = _groups(grid)
    for _ in range(max_rounds):
        changed = False
        for group in groups:
            for p in _candidates(cur, group, grid):
                v = obj.mean(p, idx)
                if v > cur_val:
                    cur, cur_val, changed = p, v, True
        if not changed:
            break
    return cur


def _diff(p: LatticeParams, base: LatticeParams) -> dict[str, Any]:
    a, b = p.to_dict(), base.to_dict()
    return {k: a[k] for k in a if a[k] != b[k]}


@dataclass
class TuneResult:
    """Outcome of :func:`tune`.

    Attributes
    ----------
    params : the chosen `LatticeParams` (``searched`` unless the fallback applied).
    base : the starting point and baseline (defaults unless ``base=`` was given).
    searched : the search's winner on all queries.
    fell_back : True when ``base`` was kept because cross-validation did not show the gain that
        ``adopt`` asks for.
    cv : held-out scores per fold, for ``"baseline"`` (``base`` on each held-out fold),
        ``"tuned"`` (the setting searched on the other folds, scored on the held-out fold: the
        honest estimate of what tuning gives) and ``"chosen"`` (``params`` scored on each fold;
        in-sample, since ``params`` was searched on all queries). Each entry holds
        ``objective``, ``metric`` and ``trap_share`` lists (one value per fold) and ``*_mean``
        values (mean over all queries). ``cv["gain"][m]`` is the paired bootstrap 95% interval
        ``{"mean", "low", "high"}`` of tuned minus baseline over the held-out queries
        (`evaluation.paired_bootstrap_ci`, 2000 resamples, seeded with ``seed``).
    fold_params : per fold, the searched setting's differences from ``base``.
    trials : table of every distinct setting scored: its differences from ``base`` and its mean
        ``objective``, ``metric`` and ``trap_share`` over all queries, in the order tried.
    settings : metric, k, trap_weight, folds, seed, search, max_rounds, n_queries.
    n_solves : lattice solves run (queries x distinct settled states).
    elapsed_s : wall time (not written to the profile, so profiles are reproducible).
    """

    params: LatticeParams
    base: LatticeParams
    searched: LatticeParams
    fell_back: bool
    cv: dict[str, dict[str, Any]]
    fold_params: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    settings: dict[str, Any]
    n_solves: int = 0
    elapsed_s: float = 0.0

    @property
    def changed(self) -> dict[str, Any]:
        """Fields of ``params`` that differ from ``base``."""
        return _diff(self.params, self.base)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON data: ``params``, ``searched``, the profile metadata, the
        trials table, ``n_solves`` and ``elapsed_s`` (for benchmark reports)."""
        return json.loads(json.dumps({"params": self.params.to_dict(), "searched": self.searched.to_dict(),
                                      **self.metadata(), "trials": self.trials, "n_solves": self.n_solves,
                                      "elapsed_s": self.elapsed_s}))

    def metadata(self) -> dict[str, Any]:
        """The profile's ``meta`` block (JSON-serialisable, deterministic)."""
        return {
            "tool": "oscillink_core.tuning.tune",
            "package_version": __version__,
            "objective": f"mean {self.settings['metric']} - {self.settings['trap_weight']} * trap_share@"
                         f"{self.settings['k']}",
            **self.settings,
            "changed": self.changed,
            "base": self.base.to_dict(),
            "fell_back_to_base": self.fell_back,
            "cv": self.cv,
            "fold_params": self.fold_params,
            "n_settings_tried": len(self.trials),
        }

    def to_profile(self) -> dict[str, Any]:
        """Profile dict ``{"format": "oscillink-core/profile", "version", "params", "meta"}``,
        accepted by ``params=`` everywhere."""
        return json.loads(json.dumps(self.params.to_profile(**self.metadata())))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the profile JSON (atomically) and return its path."""
        return save_profile(self.params, path, **json.loads(json.dumps(self.metadata())))

    def summary(self) -> str:
        """A few lines for humans: scores of baseline vs tuned and what changed."""
        s, cv = self.settings, self.cv
        lines = [f"tune: {s['n_queries']} queries, {s['folds']}-fold CV, objective = {s['metric']} - "
                 f"{s['trap_weight']} * trap_share@{s['k']}",
                 *(f"  {name:8s} held-out objective {cv[name]['objective_mean']:.4f} ({s['metric']} "
                   f"{cv[name]['metric_mean']:.4f}, trap share {cv[name]['trap_share_mean']:.4f})"
                   for name in ("baseline", "tuned")),
                 "  gain in held-out objective {mean:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}]".format(
                     **cv["gain"]["objective"]),
                 f"  chosen: {self.changed or 'the baseline'}"
                 + (f" (kept: the cross-validated gain does not meet adopt={s['adopt']!r};"
                    f" the search's best was {_diff(self.searched, self.base)})" if self.fell_back else "")]
        return "\n".join(lines)


def tune(queries: Sequence[LabelledQuery], *, grid: Mapping[str, Sequence] | None = None, folds: int = 5,
         metric: str = "ndcg@10", trap_weight: float = 1.0, seed: int = 0, base: Any = None, k: int = 10,
         profile_path: str | os.PathLike | None = None, search: str = "coordinate", max_rounds: int = 3,
         adopt: str = "ci", blas_threads: int | None = 1) -> TuneResult:
    """Fit lattice parameters on labelled queries by K-fold cross-validation.

    Parameters
    ----------
    queries : sequence of :class:`LabelledQuery` (see :func:`queries_from_qrels`,
        :func:`queries_from_rows`, :func:`queries_from_jsonl`).
    grid : ``{field: [values]}`` over `LatticeParams` fields (default :data:`DEFAULT_GRID`:
        lamC, lamQ, kneighbors, gating, gate_gamma, coh_weight, mmr_lambda, dedup_threshold,
        dup_keep, dup_action). Unknown fields, empty lists and invalid values raise ValueError.
    folds : number of cross-validation folds (>= 2, <= number of queries).
    metric : ``"ndcg@C"``, ``"mrr@C"``, ``"recall@C"`` or ``"p@1"``.
    trap_weight : weight of the trap-share penalty (>= 0); objective per query is
        ``metric - trap_weight * trap_share@k``.
    seed : seeds the fold assignment (:func:`assign_folds`); nothing else is random.
    base : starting point and baseline: anything ``params=`` accepts (default `LatticeParams()`).
    k : bundle size scored by the trap share (the retrieval depth is ``max(k, C)``).
    profile_path : if given, the chosen profile is written there.
    search : ``"coordinate"`` (default): coordinate ascent over groups of fields (``gating``
        with ``gate_gamma``, ``dedup_threshold`` with ``dup_keep`` and ``dup_action`` searched
        jointly), starting from ``base``, up to ``max_rounds`` rounds, stopping early when a
        round changes nothing; ``"grid"``: the full Cartesian product (only for small grids).
    max_rounds : coordinate-ascent rounds.
    adopt : when the searched setting replaces ``base``, judged on the cross-validated gain
        (tuned minus baseline held-out objective, ``cv["gain"]["objective"]``): ``"ci"``
        (default) only if the lower end of its paired bootstrap 95% interval is above 0;
        ``"mean"`` if its mean is above 0; ``"always"``. Otherwise ``base`` is returned
        (``fell_back=True``): a profile that claims to beat the defaults carries the evidence.
    blas_threads : BLAS threads while tuning (via threadpoolctl, restored afterwards; None
        leaves them alone). Default 1: on N ~ 100 candidates extra threads only cost time
        (measured on SciFact, 2 busy cores: 16 ms per lattice solve with the default threads,
        1.5 ms with one). Results do not depend on it.

    Returns
    -------
    TuneResult

    Notes
    -----
    Every setting is scored once on every query and cached, so all folds share the work;
    settings that differ only in ranking fields reuse the settled states. Per fold, the search
    runs on the other folds and its winner is scored on the held-out fold (``cv["tuned"]``);
    the final ``searched`` setting is the search's winner on all queries.

    Examples
    --------
    A trap passage copied four times floods the top 3. Starting from cosine order (``lamC=0``)
    with the near-duplicate rule off, the search finds that demoting the copies fixes it.
    ``dedup_threshold`` and ``dup_action`` are searched jointly: with ``dup_keep="best"``,
    switching on either one alone changes nothing.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> qs = []
    >>> for i in range(12):
    ...     q = rng.normal(size=16); Y = q + rng.normal(size=(20, 16))
    ...     Y[[0, 4, 5]] = q + 0.5 * rng.normal(size=(3, 16))   # 0 is a trap, 4 and 5 relevant
    ...     Y[1:4] = Y[0] + 0.01 * rng.normal(size=(3, 16))      # 1-3 copy the trap
    ...     qs.append(LabelledQuery(q, Y, relevance={4: 1, 5: 1}, traps={0, 1, 2, 3}))
    >>> start = {"lamC": 0.0, "coh_weight": 0.0, "dedup_threshold": None, "dup_keep": "best", "dup_action": "reorder"}
    >>> grid = {"dedup_threshold": [None, 0.95], "dup_action": ["reorder", "demote"]}
    >>> res = tune(qs, grid=grid, base=start, folds=3, k=3)
    >>> res.changed
    {'dedup_threshold': 0.95, 'dup_action': 'demote'}
    >>> round(res.cv["baseline"]["trap_share_mean"], 2), round(res.cv["tuned"]["trap_share_mean"], 2)
    (0.53, 0.28)
    """
    t0 = time.perf_counter()
    queries = list(queries) if not isinstance(queries, LabelledQuery) else [queries]
    if not queries:
        raise ValueError("tune needs at least one labelled query; got an empty sequence")
    for i, q in enumerate(queries):
        if not isinstance(q, LabelledQuery):
            raise ValueError(f"queries[{i}] is a {type(q).__name__}, not a LabelledQuery "
                             "(build them with queries_from_qrels / queries_from_rows)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1; got {k!r}")
    if isinstance(trap_weight, bool) or not isinstance(trap_weight, (int, float)) or not trap_weight >= 0 \
            or not math.isfinite(trap_weight):
        raise ValueError(f"trap_weight must be a finite number >= 0; got {trap_weight!r}")
    if adopt not in ("ci", "mean", "always"):
        raise ValueError(f"adopt must be 'ci', 'mean' or 'always'; got {adopt!r}")
    if search not in ("coordinate", "grid"):
        raise ValueError(f"search must be 'coordinate' or 'grid'; got {search!r}")
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise ValueError(f"max_rounds must be an int >= 1; got {max_rounds!r}")
    metric_name = _parse_metric(metric)[0]
    _check_blas_threads(blas_threads)
    base_p = resolve_params(base)
    g = _check_grid(grid, base_p)
    fold_of = assign_folds(len(queries), folds, seed)

    with _blas_threads(blas_threads):
        result = _tune(queries, g, folds, fold_of, metric_name, int(k), float(trap_weight), int(seed), base_p,
                       search, max_rounds, adopt)
    result.elapsed_s = time.perf_counter() - t0
    if profile_path is not None:
        result.save(profile_path)
    return result


def _tune(queries: list[LabelledQuery], g: dict[str, tuple], folds: int, fold_of: np.ndarray, metric_name: str,
          k: int, trap_weight: float, seed: int, base_p: LatticeParams, search: str, max_rounds: int,
          adopt: str) -> TuneResult:
    obj = _Objective(_Engine(queries), metric_name, k, trap_weight)
    cv: dict[str, dict[str, list]] = {name: {"objective": [], "metric": [], "trap_share": []}
                                      for name in ("baseline", "tuned", "chosen")}
    fold_params = []
    n = len(queries)
    pooled = {name: {m: np.zeros(n) for m in ("objective", "metric", "trap_share")} for name in ("baseline", "tuned")}
    for f in range(folds):
        train, test = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
        best = _search(obj, train, base_p, g, search, max_rounds)
        fold_params.append(_diff(best, base_p))
        for name, p in (("baseline", base_p), ("tuned", best)):
            pq = obj.per_query(p)
            for m in pooled[name]:
                cv[name][m].append(float(pq[m][test].mean()))
                pooled[name][m][test] = pq[m][test]
    everything = np.arange(n)
    searched = _search(obj, everything, base_p, g, search, max_rounds)
    gain = {}
    for m in ("objective", "metric", "trap_share"):
        ci = paired_bootstrap_ci(pooled["baseline"][m], pooled["tuned"][m], n_boot=2000, seed=seed)
        gain[m] = {"mean": ci.mean, "low": ci.low, "high": ci.high}
    if adopt == "ci":
        fell_back = not gain["objective"]["low"] > 0
    elif adopt == "mean":
        fell_back = not gain["objective"]["mean"] > 0
    else:
        fell_back = False
    chosen = base_p if fell_back else searched
    pq = obj.per_query(chosen)
    pooled["chosen"] = {m: pq[m] for m in ("objective", "metric", "trap_share")}
    for f in range(folds):
        for m in pooled["chosen"]:
            cv["chosen"][m].append(float(pq[m][fold_of == f].mean()))
    cv_out: dict[str, dict[str, Any]] = {}
    for name, block in cv.items():
        cv_out[name] = {**{m: [float(x) for x in vals] for m, vals in block.items()},
                        **{f"{m}_mean": float(pooled[name][m].mean()) for m in block}}
    cv_out["gain"] = gain
    trials = []
    for t in obj.trials:
        s = obj.summary(t["params"], everything)
        trials.append({"params": _diff(t["params"], base_p), **s})
    settings = {"metric": metric_name, "k": int(k), "trap_weight": float(trap_weight), "folds": int(folds),
                "seed": int(seed), "search": search, "max_rounds": int(max_rounds), "adopt": adopt,
                "n_queries": len(queries),
                "grid": {name: list(vals) for name, vals in g.items()}}
    return TuneResult(params=chosen, base=base_p, searched=searched, fell_back=fell_back, cv=cv_out,
                      fold_params=fold_params, trials=trials, settings=settings, n_solves=obj.engine.n_solves)


# ============================================================================ online updates
#: Default (low, high, max_step) per parameter the online tuner may move. Steps are in the
#: parameter's own units; ``kneighbors`` moves by whole neighbours. Every `LatticeParams` default
#: lies inside its range (a test checks it), so ``OnlineTuner(None, keys=...)`` works for any key.
#: ``coh_weight`` spans -1 (score = cosine: the lattice then acts only through the near-duplicate
#: rule) to 4; below -1 the score would count the settled state's shift toward the query against
#: a candidate (outside the range :data:`DEFAULT_GRID` searches; pass ``bounds`` to allow it).
#: ``mmr_lambda`` steps by 0.05 (the spacing of :data:`DEFAULT_GRID` near 1): MMR works on scores
#: rescaled to [0, 1] (`ranking.select`), so lambda acts gradually over its whole range and the
#: earlier step of 0.02 (set when MMR saw raw settled scores and 0.9 already wrecked a ranking)
#: rarely changed one.
ONLINE_BOUNDS: dict[str, tuple[float, float, float]] = {
    "lamC": (0.0, 16.0, 0.25),
    "lamQ": (0.1, 64.0, 1.0),
    "coh_weight": (-1.0, 4.0, 0.05),
    "mmr_lambda": (0.3, 1.0, 0.05),
    "gate_gamma": (0.01, 2.0, 0.05),
    "gate_beta": (0.25, 4.0, 0.25),
    "dedup_threshold": (0.8, 1.0, 0.01),
    "edge_floor": (0.0, 0.9, 0.05),
    "degree_reg": (0.0, 4.0, 0.1),
    "kneighbors": (1, 64, 1),
}
_ONLINE_KEYS = ("lamC", "lamQ", "mmr_lambda")
_ONLINE_FORMAT = "oscillink-core/online-tuner"


@dataclass(frozen=True, eq=False)
class FeedbackEvent:
    """Feedback on one rerank: which candidate ids the user kept and which they rejected.

    Parameters
    ----------
    query : (D,) query embedding of that rerank.
    candidates : (N, D) candidate embeddings it ranked.
    ids : the N candidate ids (default ``0..N-1``).
    kept : ids the user kept (found useful).
    rejected : ids the user rejected. When omitted, ``shown`` minus ``kept`` is used.
    shown : ids the user was shown (optional; infers ``rejected`` and ``k``).
    k : how many top items the user saw (default ``len(shown)``, else ``len(kept) + len(rejected)``).
        The tuner keeps the kept ids inside the top ``k``.

    At least one kept and one rejected id are needed; unknown ids or an id both kept and
    rejected raise ValueError.
    """

    query: Any
    candidates: Any
    ids: Sequence[Hashable] | None = None
    kept: Iterable[Hashable] = ()
    rejected: Iterable[Hashable] | None = None
    shown: Iterable[Hashable] | None = None
    k: int | None = None

    def __post_init__(self) -> None:
        Y = check_embeddings(self.candidates, name="candidates")
        psi = check_query(self.query, Y.shape[1], name="query")
        ids = tuple(check_ids(self.ids, Y.shape[0]))
        known = set(ids)
        kept = tuple(dict.fromkeys(_check_id(i, "kept id") for i in self.kept))
        shown = None if self.shown is None else tuple(dict.fromkeys(_check_id(s, "shown id") for s in self.shown))
        if self.rejected is not None:
            rejected = tuple(dict.fromkeys(_check_id(i, "rejected id") for i in self.rejected))
        else:
            rejected = () if shown is None else tuple(i for i in shown if i not in kept)
        for name, grp in (("shown", shown or ()), ("kept", kept), ("rejected", rejected)):
            bad = [i for i in grp if i not in known]
            if bad:
                raise ValueError(f"{name} id {bad[0]!r} is not among the event's candidate ids")
        both = set(kept) & set(rejected)
        if both:
            raise ValueError(f"id {sorted(both, key=str)[0]!r} is both kept and rejected")
        if not kept or not rejected:
            raise ValueError("a feedback event needs at least one kept and one rejected id "
                             f"(got {len(kept)} kept, {len(rejected)} rejected)")
        object.__setattr__(self, "candidates", Y)
        object.__setattr__(self, "query", psi)
        object.__setattr__(self, "ids", ids)
        k = self.k if self.k is not None else (len(shown) if shown is not None else len(kept) + len(rejected))
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an int >= 1; got {self.k!r}")
        object.__setattr__(self, "kept", kept)
        object.__setattr__(self, "rejected", rejected)
        object.__setattr__(self, "shown", shown)
        object.__setattr__(self, "k", int(min(k, Y.shape[0])))

    @classmethod
    def from_result(cls, result: Any, query: Any, candidates: Any, *, kept: Iterable[Hashable],
                    rejected: Iterable[Hashable] | None = None, ids: Sequence[Hashable] | None = None
                    ) -> FeedbackEvent:
        """Event for a `RerankResult`: the ids it returned count as shown, so ``rejected``
        defaults to the returned ids that are not ``kept``. ``query``, ``candidates`` and ``ids``
        are the inputs of that `rerank` call (the result holds no embeddings).

        Examples
        --------
        >>> import numpy as np
        >>> from oscillink_core import rerank
        >>> Y = np.random.default_rng(1).normal(size=(10, 4)); q = Y[0]
        >>> res = rerank(q, Y, k=3)
        >>> ev = FeedbackEvent.from_result(res, q, Y, kept=[res.ids[1]])
        >>> ev.kept == (res.ids[1],) and ev.rejected == (res.ids[0], res.ids[2])
        True
        """
        return cls(query, candidates, ids=ids, kept=kept, rejected=rejected, shown=list(result.ids))

    @classmethod
    def coerce(cls, event: Any) -> FeedbackEvent:
        if isinstance(event, FeedbackEvent):
            return event
        if isinstance(event, Mapping):
            allowed = {"query", "candidates", "ids", "kept", "rejected", "shown", "k"}
            extra = sorted(set(event) - allowed)
            if extra:
                raise ValueError(f"unknown feedback event key(s) {extra}; allowed: {sorted(allowed)}")
            return cls(**event)
        raise ValueError(f"event must be a FeedbackEvent or a dict; got {type(event).__name__}")


def _event_score(event: FeedbackEvent, p: LatticeParams, trap_weight: float = 1.0) -> dict[str, float]:
    """How well the ranking under ``p`` agrees with the event (see `OnlineTuner`)."""
    lat = Oscillink(event.candidates, ids=list(event.ids), params=p)
    lat.set_query(event.query)
    lat.settle()
    n = event.candidates.shape[0]
    order = np.array([b["index"] for b in lat.bundle(n)])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    pos = {d: i for i, d in enumerate(event.ids)}
    rk = rank[[pos[d] for d in event.kept]]
    rr = rank[[pos[d] for d in event.rejected]]
    k = event.k
    dcg = float(np.sum(1.0 / np.log2(rk[rk < k] + 2.0)))
    idcg = float(np.sum(1.0 / np.log2(np.arange(min(len(rk), k)) + 2.0)))
    return {"kept_in_top_k": float(np.mean(rk < k)),
            "objective": dcg / idcg - trap_weight * float(np.sum(rr < k)) / k,
            "margin": float(np.mean(1.0 / np.log2(rk + 2.0)) - np.mean(1.0 / np.log2(rr + 2.0)))}


def _better(a: dict[str, float] | None, b: dict[str, float] | None) -> bool:
    """Is score ``a`` better than ``b`` (kept_in_top_k, then objective, then margin)?"""
    if a is None:
        return False
    if b is None:
        return True
    return (a["kept_in_top_k"], a["objective"], a["margin"]) > (b["kept_in_top_k"], b["objective"], b["margin"])


class OnlineTuner:
    """Bounded, deterministic online updates of a profile from feedback events.

    Each :meth:`update` scores settings on the event's own candidates (r = 0-based rank in the
    full reranked list, k = ``event.k``, the number of items the user saw), lexicographically:

    1. ``kept_in_top_k``: share of the kept ids inside the top k. The user saw them there, so a
       setting that pushes them out -- e.g. one that simply reverses the list to bury the
       rejected ids -- contradicts the feedback and loses.
    2. ``objective``: the :func:`tune` objective on the event's labels, kept ids as relevant and
       rejected ids as traps: ``nDCG@k(kept) - trap_weight * (rejected in top k) / k``.
    3. ``margin``: ``mean_{kept} 1/log2(r + 2) - mean_{rejected} 1/log2(r + 2)``, which breaks
       ties (it also sees moves below the top k).

    Each event yields a vote per parameter toward the better-scoring side; votes pass a
    sign-agreement filter (``momentum``, ``agreement``) before anything moves:

    * ``method="coordinate"`` (default): for each parameter ``x`` in ``keys``, probe
      ``x - max_step`` and ``x + max_step`` (clipped to the bounds), others fixed. If one probe's
      score beats both the current score and the other probe's, ``x`` moves
      ``learning_rate * max_step`` that way; otherwise it stays. ``2 * len(keys) + 1`` solves.
      When both probes leave the event's ranking unchanged (a flat region: small steps of a
      ranking knob often change nothing), the probes widen to ``2 * max_step``, then
      ``4 * max_step`` (``probe_scales``); the move stays ``learning_rate * max_step``.
    * ``method="spsa"``: one seeded random sign vector ``s``; probe all keys at once at
      ``x + s * max_step`` and ``x - s * max_step``; move every key ``learning_rate * max_step``
      toward the better probe if that probe also beats the current setting. 3 solves per event;
      while both probes leave the ranking unchanged they widen by ``probe_scales`` as above (same
      ``s``), up to ``2 * len(probe_scales) + 1`` solves.

    Guarantees: every move is at most ``max_step`` (``learning_rate`` lies in (0, 1]; values are
    rounded to 12 decimals; ``kneighbors`` moves by whole steps of at least 1), values never leave
    ``bounds``, and the
    same start, seed and event sequence give the same parameters. Each update returns a report
    (scores of the current setting and of every probe, and the moves made), kept in
    :attr:`history` (last ``history_limit``).

    Parameters
    ----------
    profile_or_params : starting point: anything ``params=`` accepts (None = defaults).
    learning_rate : fraction of ``max_step`` moved per event, in (0, 1].
    max_step : ``{name: step}`` overrides of the per-event step (default from
        :data:`ONLINE_BOUNDS`).
    bounds : ``{name: (low, high)}`` overrides (default from :data:`ONLINE_BOUNDS`).
    seed : seed of the random sign vectors (``method="spsa"`` only).
    keys : parameters to move (default lamC, lamQ, mmr_lambda; ``coh_weight`` is left out by
        default because on real embeddings small positive values already wreck the order, see
        :data:`DEFAULT_GRID`). Only names in
        :data:`ONLINE_BOUNDS`. ``gate_gamma``/``gate_beta`` are skipped while ``gating`` is
        uniform and ``dedup_threshold`` while the near-duplicate rule cannot act (threshold None,
        or ``dup_keep="best"`` with ``dup_action="reorder"``): they would have no effect.
    method : ``"coordinate"`` or ``"spsa"``.
    history_limit : number of update reports kept (and saved).
    blas_threads : BLAS threads during an update (see :func:`tune`; None leaves them alone).
    probe_scales : probe distances in units of ``max_step``, tried in order while the ranking
        does not respond.
    trap_weight : weight of the rejected ids in the score's ``objective`` (as in :func:`tune`).
    momentum, agreement : the sign-agreement filter. Each event casts a vote per parameter
        (+1, -1 or 0, from the probes); ``m = momentum * m + (1 - momentum) * vote`` is kept per
        parameter, and a parameter moves only when this event's vote agrees with ``m`` and
        ``|m| >= agreement`` (with the defaults: after about 7 agreeing events in a row). Single
        events are noisy -- on the HaluEval trap set the votes split close to 50/50 -- and
        without the filter the parameters random-walk. ``agreement=0`` moves on every vote.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> Y = rng.normal(size=(20, 8)); q = Y[0]
    >>> tuner = OnlineTuner(None, learning_rate=0.5)
    >>> report = tuner.update({"query": q, "candidates": Y, "kept": [0, 1], "rejected": [2, 3]})
    >>> sorted(report), sorted(report["score"])
    (['event', 'method', 'momentum', 'moves', 'probes', 'score', 'votes'], ['kept_in_top_k', 'margin', 'objective'])
    >>> tuner.n_updates, 0.0 <= tuner.params.lamC <= 16.0
    (1, True)
    """

    def __init__(self, profile_or_params: Any = None, *, learning_rate: float = 0.5,
                 max_step: Mapping[str, float] | None = None, bounds: Mapping[str, Sequence[float]] | None = None,
                 seed: int = 0, keys: Sequence[str] | None = None, method: str = "coordinate",
                 history_limit: int = 100, blas_threads: int | None = 1,
                 probe_scales: Sequence[float] = (1.0, 2.0, 4.0), trap_weight: float = 1.0,
                 momentum: float = 0.9, agreement: float = 0.5) -> None:
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
                or not 0 < learning_rate <= 1:
            raise ValueError(f"learning_rate must lie in (0, 1]; got {learning_rate!r}")
        if method not in ("coordinate", "spsa"):
            raise ValueError(f"method must be 'coordinate' or 'spsa'; got {method!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0; got {seed!r}")
        if isinstance(history_limit, bool) or not isinstance(history_limit, int) or history_limit < 0:
            raise ValueError(f"history_limit must be an int >= 0; got {history_limit!r}")
        self.blas_threads = _check_blas_threads(blas_threads)
        scales = tuple(probe_scales)
        if not scales or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0 for x in scales):
            raise ValueError(f"probe_scales must be positive numbers; got {probe_scales!r}")
        self.probe_scales = tuple(float(x) for x in scales)
        if isinstance(trap_weight, bool) or not isinstance(trap_weight, (int, float)) \
                or not math.isfinite(trap_weight) or trap_weight < 0:
            raise ValueError(f"trap_weight must be a finite number >= 0; got {trap_weight!r}")
        self.trap_weight = float(trap_weight)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1); got {momentum!r}")
        if isinstance(agreement, bool) or not isinstance(agreement, (int, float)) or not 0 <= agreement <= 1:
            raise ValueError(f"agreement must lie in [0, 1]; got {agreement!r}")
        self.momentum_beta = float(momentum)
        self.agreement = float(agreement)
        keys = tuple(_ONLINE_KEYS if keys is None else keys)
        if not keys:
            raise ValueError("keys is empty: give at least one parameter to tune")
        for name in (*keys, *(max_step or {}), *(bounds or {})):
            if name not in ONLINE_BOUNDS:
                raise ValueError(f"the online tuner cannot move {name!r}; movable: {sorted(ONLINE_BOUNDS)}")
        self._params = resolve_params(profile_or_params)
        self.learning_rate = float(learning_rate)
        self.method = method
        self.seed = int(seed)
        self.keys = keys
        self.history_limit = history_limit
        self.bounds: dict[str, tuple[float, float]] = {}
        self.max_step: dict[str, float] = {}
        for name in keys:
            lo, hi, st = ONLINE_BOUNDS[name]
            if bounds and name in bounds:
                b = tuple(bounds[name])
                if len(b) != 2 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in b) or b[0] > b[1]:
                    raise ValueError(f"bounds[{name!r}] must be (low, high) with low <= high; got {bounds[name]!r}")
                lo, hi = b
            if max_step and name in max_step:
                st = max_step[name]
                if isinstance(st, bool) or not isinstance(st, (int, float)) or not math.isfinite(st) or st <= 0:
                    raise ValueError(f"max_step[{name!r}] must be a number > 0; got {st!r}")
            if name == "kneighbors":
                lo, hi, st = int(math.ceil(lo)), int(math.floor(hi)), max(1, int(st))
            try:  # bounds must themselves be valid parameter values
                self._params.replace(**{name: lo})
                self._params.replace(**{name: hi})
            except ValueError as exc:
                raise ValueError(f"bounds of {name!r} ({lo}, {hi}) are not valid values: {exc}") from None
            self.bounds[name] = (lo, hi)
            self.max_step[name] = st
            v = getattr(self._params, name)
            if v is not None and not lo <= v <= hi:
                raise ValueError(f"start value {name}={v} lies outside its bounds [{lo}, {hi}]; "
                                 f"widen bounds[{name!r}]")
        self._rng = np.random.default_rng(self.seed)
        self.n_updates = 0
        self.momentum: dict[str, float] = {}
        self.history: list[dict] = []
        self._origin_meta: dict = {}
        if isinstance(profile_or_params, Mapping) and isinstance(profile_or_params.get("meta"), Mapping):
            self._origin_meta = json.loads(json.dumps(profile_or_params["meta"]))

    # ------------------------------------------------------------------------ state
    @property
    def params(self) -> LatticeParams:
        """The current parameters."""
        return self._params

    def _active(self) -> list[str]:
        p = self._params
        out = []
        for name in self.keys:
            if name in ("gate_gamma", "gate_beta") and p.gating == "uniform":
                continue
            if name == "dedup_threshold" and not _dedup_acts(p):
                continue
            out.append(name)
        return out

    def _clip(self, name: str, v: float) -> float | int:
        lo, hi = self.bounds[name]
        if name == "kneighbors":
            return int(min(max(round(v), lo), hi))
        # rounded to 12 decimals so that 0.9 - 0.05 is stored as 0.85, then clipped
        return float(min(max(round(v, 12), lo), hi))

    def _move(self, name: str) -> float | int:
        st = self.max_step[name]
        return max(1, int(round(self.learning_rate * st))) if name == "kneighbors" else self.learning_rate * st

    # ------------------------------------------------------------------------ update
    def update(self, event: Any) -> dict:
        """Apply one feedback event (a :class:`FeedbackEvent` or a dict with its fields).

        Returns the update report ``{"event", "method", "score", "probes", "moves"}``:
        ``score`` of the current setting (``{"kept_in_top_k", "objective", "margin"}``), each probe's changed
        values and score, and ``moves`` ``{name: [old, new]}`` (empty when no probe beat the
        current setting).
        """
        ev = FeedbackEvent.coerce(event)
        with _blas_threads(self.blas_threads):
            return self._update(ev)

    def _update(self, ev: FeedbackEvent) -> dict:
        cur = self._params
        s0 = _event_score(ev, cur, self.trap_weight)
        probes, moves = [], {}
        votes: dict[str, int] = {}
        active = self._active()
        if self.method == "coordinate":
            for name in active:
                x = getattr(cur, name)
                for scale in self.probe_scales:
                    res: dict[int, dict[str, float]] = {}
                    for sgn in (-1, +1):
                        v = self._clip(name, x + sgn * scale * self.max_step[name])
                        if v != x and not any(p_["params"] == {name: v} for p_ in probes):
                            res[sgn] = _event_score(ev, cur.replace(**{name: v}), self.trap_weight)
                            probes.append({"params": {name: v}, "score": res[sgn]})
                    won = [sg for sg in (-1, +1) if _better(res.get(sg), s0) and _better(res.get(sg), res.get(-sg))]
                    if won:
                        votes[name] = won[0]
                        break
                    if any(r != s0 for r in res.values()):
                        break  # the ranking responds here and no direction helps: stay
        elif active:
            signs = self._rng.choice(np.array([-1, 1]), size=len(active)).tolist()
            for scale in self.probe_scales:  # one sign vector, probes widened while the ranking is flat
                res = {}
                for d in (+1, -1):
                    change = {n: self._clip(n, getattr(cur, n) + d * sg * scale * self.max_step[n])
                              for n, sg in zip(active, signs, strict=True)}
                    if any(p_["params"] == change for p_ in probes):
                        continue  # clipped to a probe already scored
                    res[d] = _event_score(ev, cur.replace(**change), self.trap_weight)
                    probes.append({"params": change, "score": res[d]})
                won = [d for d in (+1, -1) if _better(res.get(d), s0) and _better(res.get(d), res.get(-d))]
                if won:
                    votes.update({n: won[0] * sg for n, sg in zip(active, signs, strict=True)})
                    break
                if any(r != s0 for r in res.values()):
                    break
        for name in active:  # sign-agreement filter over recent events
            v = votes.setdefault(name, 0)
            m = self.momentum_beta * self.momentum.get(name, 0.0) + (1.0 - self.momentum_beta) * v
            self.momentum[name] = round(m, 12)
            if v != 0 and v * m >= self.agreement:
                x = getattr(cur, name)
                new = self._clip(name, x + v * self._move(name))
                if new != x:
                    moves[name] = [x, new]
        if moves:
            self._params = cur.replace(**{n: v[1] for n, v in moves.items()})
        self.n_updates += 1
        report = {"event": self.n_updates, "method": self.method, "score": s0, "probes": probes, "votes": votes,
                  "momentum": {n: self.momentum[n] for n in active}, "moves": moves}
        if self.history_limit:
            self.history.append(report)
            del self.history[:-self.history_limit]
        return copy.deepcopy(report)

    # ------------------------------------------------------------------------ persistence
    def state(self) -> dict:
        """The tuner's own state (everything besides ``params``), JSON-serialisable."""
        return {
            "format": _ONLINE_FORMAT,
            "version": 1,
            "learning_rate": self.learning_rate,
            "method": self.method,
            "seed": self.seed,
            "keys": list(self.keys),
            "bounds": {n: list(b) for n, b in self.bounds.items()},
            "max_step": dict(self.max_step),
            "history_limit": self.history_limit,
            "blas_threads": self.blas_threads,
            "probe_scales": list(self.probe_scales),
            "trap_weight": self.trap_weight,
            "momentum_beta": self.momentum_beta,
            "agreement": self.agreement,
            "n_updates": self.n_updates,
            "momentum": dict(self.momentum),
            "rng_state": self._rng.bit_generator.state,
            "history": copy.deepcopy(self.history),
        }

    def to_profile(self) -> dict:
        """Profile dict accepted by ``params=`` everywhere; ``meta["online"]`` holds the tuner
        state so that :meth:`from_profile` / :meth:`load` resume exactly."""
        meta = {"tool": "oscillink_core.tuning.OnlineTuner", "package_version": __version__,
                "online": self.state()}
        if self._origin_meta:
            meta["origin"] = self._origin_meta
        return json.loads(json.dumps(self._params.to_profile(**meta)))

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_profile` as JSON (atomically)."""
        prof = self.to_profile()
        return save_profile(self._params, path, **prof["meta"])

    @classmethod
    def from_profile(cls, profile: Mapping[str, Any]) -> OnlineTuner:
        """Resume a tuner from :meth:`to_profile` output (exact: params, counts, RNG, history)."""
        if not isinstance(profile, Mapping) or profile.get("format") != PROFILE_FORMAT:
            raise ValueError(f"not an oscillink-core profile (format must be {PROFILE_FORMAT!r})")
        st = (profile.get("meta") or {}).get("online")
        if not isinstance(st, Mapping) or st.get("format") != _ONLINE_FORMAT:
            raise ValueError("this profile holds no online-tuner state (meta.online); "
                             "start a new tuner with OnlineTuner(profile) instead")
        try:
            t = cls(resolve_params({"format": profile["format"], "params": profile["params"]}),
                    learning_rate=st["learning_rate"], max_step=st["max_step"],
                    bounds={n: tuple(b) for n, b in st["bounds"].items()}, seed=st["seed"], keys=st["keys"],
                    method=st["method"], history_limit=st["history_limit"], blas_threads=st.get("blas_threads", 1),
                    probe_scales=st.get("probe_scales", (1.0, 2.0, 4.0)), trap_weight=st.get("trap_weight", 1.0),
                    momentum=st.get("momentum_beta", 0.9), agreement=st.get("agreement", 0.5))
            t._rng.bit_generator.state = st["rng_state"]
            t.n_updates = int(st["n_updates"])
            t.momentum = {str(n): float(v) for n, v in st["momentum"].items()}
            t.history = copy.deepcopy(list(st["history"]))
        except KeyError as exc:
            raise ValueError(f"online-tuner state is missing {exc}") from None
        t._origin_meta = json.loads(json.dumps(profile["meta"].get("origin", {})))
        return t

    @classmethod
    def load(cls, path: str | os.PathLike) -> OnlineTuner:
        """Read a profile JSON written by :meth:`save` and resume the tuner."""
        return cls.from_profile(read_profile_json(path))

    def __repr__(self) -> str:
        vals = ", ".join(f"{n}={getattr(self._params, n)}" for n in self.keys)
        return f"OnlineTuner({vals}, updates={self.n_updates}, method={self.method!r})"
