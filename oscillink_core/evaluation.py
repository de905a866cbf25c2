"""Retrieval-quality metrics (pure functions, numpy only, no I/O).

Every per-query function takes ``ranked``: the ids of one query's result list, best first
(any hashable ids, no repeats), and either a relevance mapping ``{id: grade}`` (grades > 0
count as relevant; a set or list of ids means grade 1 for each) or a set of trap ids.
Each returns a plain ``float``. Cut-offs follow the usual conventions:

* ``ndcg_at_k`` uses linear gain ``grade / log2(rank + 1)`` and an ideal ranking built from
  *all* judged relevant ids (as ``trec_eval`` / BEIR do), so relevant documents the first stage
  never retrieved lower the score.
* Share metrics (`trap_share_at_k`, `near_duplicate_share_at_k`) divide by the number of items
  actually present in the top k (``min(k, len(ranked))``); an empty list gives 0.

`paired_bootstrap_ci` gives the 95% percentile interval of ``mean(b - a)`` over queries,
resampling queries with replacement (paired: both methods see the same resample).

Examples
--------
>>> from oscillink_core.evaluation import ndcg_at_k, mrr_at_k, trap_share_at_k
>>> ndcg_at_k(["a", "b", "c"], {"b": 1}, k=10)
0.6309297535714575
>>> mrr_at_k(["a", "b", "c"], {"b"}, k=10)
0.5
>>> trap_share_at_k(["a", "t", "c", "d"], {"t"}, k=2)
0.5
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ._validation import check_scalar

__all__ = [
    "ndcg_at_k",
    "mrr_at_k",
    "precision_at_1",
    "recall_at_k",
    "trap_share_at_k",
    "any_trap_at_k",
    "near_duplicate_share_at_k",
    "paired_bootstrap_ci",
    "BootstrapCI",
    "evaluate_rankings",
]

Relevance = Mapping[Hashable, float] | Iterable[Hashable]


def _relevance(rel: Relevance) -> dict[Hashable, float]:
    if isinstance(rel, Mapping):
        return {k: float(v) for k, v in rel.items() if float(v) > 0}
    if isinstance(rel, (str, bytes)):
        raise ValueError("relevance must be a mapping {id: grade} or a collection of ids, not a string")
    return {k: 1.0 for k in rel}


def _top(ranked: Sequence[Hashable], k: int) -> list[Hashable]:
    k = check_scalar(k, "k", int, min_val=1)
    top = list(ranked)[: int(k)]
    if len(set(top)) != len(top):
        raise ValueError("ranked list contains repeated ids")
    return top


def ndcg_at_k(ranked: Sequence[Hashable], relevance: Relevance, k: int = 10) -> float:
    """Normalised discounted cumulative gain at ``k`` (linear gain).

    Parameters
    ----------
    ranked : sequence of ids, best first.
    relevance : mapping id -> grade (grades <= 0 ignored) or a collection of relevant ids.
    k : cut-off.

    Returns
    -------
    float
        ``DCG@k / IDCG@k`` in [0, 1]; 0.0 when no id is relevant.

    Examples
    --------
    >>> ndcg_at_k(["x", "y"], {"x": 2, "y": 1}, k=2)
    1.0
    """
    top = _top(ranked, k)
    rel = _relevance(relevance)
    if not rel:
        return 0.0
    disc = 1.0 / np.log2(np.arange(2, int(k) + 2))
    gains = np.array([rel.get(d, 0.0) for d in top], dtype=np.float64)
    dcg = float(np.dot(gains, disc[: gains.size]))
    ideal = np.sort(np.fromiter(rel.values(), dtype=np.float64))[::-1][: int(k)]
    idcg = float(np.dot(ideal, disc[: ideal.size]))
    return dcg / idcg


def mrr_at_k(ranked: Sequence[Hashable], relevance: Relevance, k: int = 10) -> float:
    """Reciprocal rank of the first relevant id within the top ``k`` (0.0 if none).

    Examples
    --------
    >>> mrr_at_k(["a", "b", "c"], ["c"], k=2)
    0.0
    """
    rel = _relevance(relevance)
    for r, d in enumerate(_top(ranked, k), start=1):
        if d in rel:
            return 1.0 / r
    return 0.0


def precision_at_1(ranked: Sequence[Hashable], relevance: Relevance) -> float:
    """1.0 if the first id is relevant, else 0.0 (also 0.0 for an empty list)."""
    top = _top(ranked, 1)
    return 1.0 if top and top[0] in _relevance(relevance) else 0.0


def recall_at_k(ranked: Sequence[Hashable], relevance: Relevance, k: int = 10) -> float:
    """Share of all relevant ids that appear in the top ``k`` (0.0 when none is relevant).

    Examples
    --------
    >>> recall_at_k(["a", "b", "c"], {"a", "c", "z"}, k=2)
    0.3333333333333333
    """
    rel = _relevance(relevance)
    if not rel:
        return 0.0
    return sum(1 for d in _top(ranked, k) if d in rel) / len(rel)


def trap_share_at_k(ranked: Sequence[Hashable], traps: Iterable[Hashable], k: int = 10) -> float:
    """Share of the top ``k`` items (``min(k, len(ranked))`` of them) that are traps."""
    top = _top(ranked, k)
    if not top:
        return 0.0
    trap_set = set(traps)
    return sum(1 for d in top if d in trap_set) / len(top)


def any_trap_at_k(ranked: Sequence[Hashable], traps: Iterable[Hashable], k: int = 10) -> float:
    """1.0 if at least one trap is in the top ``k``, else 0.0.

    Examples
    --------
    >>> any_trap_at_k(["a", "b", "t"], {"t"}, k=2), any_trap_at_k(["a", "b", "t"], {"t"}, k=3)
    (0.0, 1.0)
    """
    trap_set = set(traps)
    return 1.0 if any(d in trap_set for d in _top(ranked, k)) else 0.0


def near_duplicate_share_at_k(ranked_vectors: Any, k: int = 10, threshold: float = 0.95) -> float:
    """Share of the top ``k`` items that near-duplicate a *higher-ranked* item.

    Item at rank r (r >= 2) counts when its cosine similarity to at least one item ranked
    above it is ``>= threshold``. The first item never counts, so a list of k identical
    vectors scores (k - 1) / k. The denominator is the number of items in the top k.

    Parameters
    ----------
    ranked_vectors : array (n, d), the embeddings of the ranked items, best first
        (rows are L2-normalised here; zero rows never count as duplicates).
    k : cut-off.
    threshold : cosine at or above which two items count as near-duplicates.

    Examples
    --------
    >>> import numpy as np
    >>> near_duplicate_share_at_k(np.array([[1.0, 0], [1.0, 0.01], [0, 1.0], [0, 1.0]]), k=4)
    0.5
    """
    _top(range(0), k)  # validates k
    X = np.asarray(ranked_vectors, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"ranked_vectors must be 2-D (n, d); got shape {X.shape}")
    X = X[: int(k)]
    n = X.shape[0]
    if n == 0:
        return 0.0
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    Xn = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    S = Xn @ Xn.T
    upper = np.tril(S, k=-1)  # S[r, s] for s < r (higher-ranked items)
    nonzero = norms[:, 0] > 0
    mask = np.tril(np.ones((n, n), dtype=bool), k=-1) & nonzero[:, None] & nonzero[None, :]
    dup = ((upper >= threshold) & mask).any(axis=1)
    return float(dup.sum()) / n


class BootstrapCI(NamedTuple):
    """Mean paired difference and its percentile confidence interval."""

    mean: float
    low: float
    high: float


def paired_bootstrap_ci(a: Any, b: Any, n_boot: int = 10000, seed: int = 0, alpha: float = 0.05) -> BootstrapCI:
    """Paired bootstrap ``1 - alpha`` percentile interval of ``mean(b - a)`` over queries.

    Parameters
    ----------
    a, b : per-query metric values of the baseline and the method (same length, same order).
    n_boot : number of resamples.
    seed : seed of ``numpy.random.default_rng``; equal inputs and seed give equal results.
    alpha : two-sided error level (0.05 gives the 95% interval).

    Returns
    -------
    BootstrapCI
        ``(mean, low, high)``: the observed mean difference and the interval bounds.

    Examples
    --------
    >>> ci = paired_bootstrap_ci([0.1, 0.5, 0.9], [0.1, 0.5, 0.9], n_boot=200)
    >>> ci.mean, ci.low, ci.high
    (0.0, 0.0, 0.0)
    """
    a_ = np.asarray(a, dtype=np.float64).reshape(-1)
    b_ = np.asarray(b, dtype=np.float64).reshape(-1)
    if a_.shape != b_.shape:
        raise ValueError(f"a and b must have the same length; got {a_.size} and {b_.size}")
    if a_.size == 0:
        raise ValueError("need at least one query")
    if not (np.isfinite(a_).all() and np.isfinite(b_).all()):
        raise ValueError("a and b must be finite")
    n_boot = check_scalar(n_boot, "n_boot", int, min_val=1)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}")
    d = b_ - a_
    n = d.size
    rng = np.random.default_rng(seed)
    means = np.empty(int(n_boot), dtype=np.float64)
    chunk = max(1, 2_000_000 // n)  # bound memory: chunk * n indices at a time
    for start in range(0, int(n_boot), chunk):
        stop = min(int(n_boot), start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(float(d.mean()), float(low), float(high))


def evaluate_rankings(rankings: Mapping[Hashable, Sequence[Hashable]], qrels: Mapping[Hashable, Relevance],
                      traps: Mapping[Hashable, Iterable[Hashable]] | None = None,
                      ks: Sequence[int] = (5, 10)) -> dict[str, np.ndarray]:
    """Per-query metric arrays for many queries at once.

    Parameters
    ----------
    rankings : query id -> ranked ids (best first). The query order of the output follows
        the iteration order of ``rankings``.
    qrels : query id -> relevance (mapping or collection); missing queries count as no relevant id.
    traps : optional query id -> trap ids; adds ``trap_share@k`` and ``any_trap@k``.
    ks : cut-offs for ``ndcg``, ``mrr``, ``recall`` and the trap metrics.

    Returns
    -------
    dict of str -> ndarray
        Keys like ``"ndcg@10"``, ``"mrr@10"``, ``"recall@10"``, ``"p@1"``, ``"trap_share@5"``;
        each value has one float per query, ready for `paired_bootstrap_ci`.

    Examples
    --------
    >>> out = evaluate_rankings({"q1": ["a", "b"], "q2": ["c", "d"]}, {"q1": {"a": 1}, "q2": {"d": 1}}, ks=(10,))
    >>> out["p@1"].tolist(), out["mrr@10"].tolist()
    ([1.0, 0.0], [1.0, 0.5])
    """
    out: dict[str, list[float]] = {"p@1": []}
    for k in ks:
        for name in ("ndcg", "mrr", "recall"):
            out[f"{name}@{k}"] = []
        if traps is not None:
            out[f"trap_share@{k}"] = []
            out[f"any_trap@{k}"] = []
    for q, ranked in rankings.items():
        rel = _relevance(qrels.get(q, {}))
        out["p@1"].append(precision_at_1(ranked, rel))
        tset = set(traps.get(q, ())) if traps is not None else set()
        for k in ks:
            out[f"ndcg@{k}"].append(ndcg_at_k(ranked, rel, k))
            out[f"mrr@{k}"].append(mrr_at_k(ranked, rel, k))
            out[f"recall@{k}"].append(recall_at_k(ranked, rel, k))
            if traps is not None:
                out[f"trap_share@{k}"].append(trap_share_at_k(ranked, tset, k))
                out[f"any_trap@{k}"].append(any_trap_at_k(ranked, tset, k))
    return {key: np.asarray(v, dtype=np.float64) for key, v in out.items()}
