"""The evaluation engine behind `tune`: cached reranks per setting, the objective over folds
(metrics from `oscillink_core.evaluation`), and BLAS thread control."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._validation import check_scalar
from ..evaluation import mrr_at_k, ndcg_at_k, precision_at_1, recall_at_k, trap_share_at_k
from ..lattice import Oscillink
from ..params import LatticeParams
from ..ranking import rank_and_screen
from .queries import LabelledQuery

_JOINT = (("gating", "gate_gamma", "gate_beta"), ("dedup_threshold", "dup_keep", "dup_action"))

# which fields touch which stage of a rerank (used for caching and for spotting settings that
# are equal in effect). Fields not named here (e.g. ones added to LatticeParams later) are
# treated as changing the settled state, which is always safe.
_KNN_FIELDS = ("kneighbors", "knn", "exact_max_n", "seed")
_GRAPH_FIELDS = _KNN_FIELDS + ("edge_floor", "degree_reg")
_RANK_FIELDS = ("coh_weight", "coh_scope", "mmr_lambda", "dedup_threshold", "dup_keep", "dup_action")
_NO_EFFECT = ("lamP",)  # acts only through a chain, and rerank never adds one

_METRICS = {"ndcg": ndcg_at_k, "mrr": mrr_at_k, "recall": recall_at_k}


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
            q = self.queries[i]
            use_text = p.screen_text and q.texts is not None and q.query_text is not None
            out.append(_rank(p, align, cosine, self._Yn[i], idx, sim, depth, texts=q.texts if use_text else None,
                             query_text=q.query_text if use_text else None).tolist())
        return out


def _rank(p: LatticeParams, align: np.ndarray, cosine: np.ndarray, Yn: np.ndarray, idx: Any, sim: Any,
          depth: int, texts: Sequence[str] | None = None, query_text: str | None = None) -> np.ndarray:
    """The selection step of `Oscillink.bundle` for settled components (the same function)."""
    k = min(depth, align.shape[0])
    return rank_and_screen(align, cosine, Yn, idx, sim, k, p, texts=texts, query_text=query_text)[0]


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
    return check_scalar(n, "blas_threads", int, min_val=1, allow_none=True)


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
