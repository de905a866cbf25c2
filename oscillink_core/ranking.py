"""Scores and bundle selection (pure functions).

The score of candidate i is derived from the settled state U*:

    align_i  = cos(U*_i, psi)           (alignment of the settled state with the query)
    cosine_i = cos(Y_i, psi)            (first-stage similarity)
    score_i  = align_i + coh_weight * (align_i - cosine_i)

With lamC = 0, align_i is a strictly increasing function of cosine_i for unit rows, so the
lattice then reproduces the cosine order exactly; lamC > 0 lets the coherence term move a
candidate toward (or away from) the query according to its graph neighbours, and
``coh_weight`` scales how much that movement counts.

Selection is greedy: optional MMR diversification (``mmr_lambda < 1``) and an optional
near-duplicate rule (cosine >= ``dedup_threshold`` to an item already chosen demotes a
candidate behind every non-duplicate).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = ["row_cosine", "scores", "select", "near_duplicate_keepers"]


def row_cosine(U: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """cos(U_i, psi) for every row (float64); zero rows give 0."""
    # einsum, not BLAS gemv: the sum order then does not depend on the thread count
    norms = np.sqrt(np.einsum("ij,ij->i", U, U).astype(np.float64)) * float(np.linalg.norm(psi.astype(np.float64)))
    dots = np.einsum("ij,j->i", U, psi.astype(U.dtype)).astype(np.float64)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def scores(align: np.ndarray, cosine: np.ndarray, coh_weight: float) -> np.ndarray:
    return align + coh_weight * (align - cosine)


def near_duplicate_keepers(idx: np.ndarray, sim: np.ndarray, priority: np.ndarray, threshold: float
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Group candidates linked by kNN similarity >= threshold; in each group keep the member
    with the highest ``priority``. Returns (demoted mask, keeper index per node or -1)."""
    n = idx.shape[0]
    rows = np.repeat(np.arange(n), idx.shape[1])
    cols = idx.reshape(-1)
    ok = (cols >= 0) & (sim.reshape(-1) >= threshold)
    demoted = np.zeros(n, dtype=bool)
    keeper = np.full(n, -1, dtype=np.int64)
    if not ok.any():
        return demoted, keeper
    G = sp.coo_array((np.ones(int(ok.sum())), (rows[ok], cols[ok])), shape=(n, n)).tocsr()
    _, labels = connected_components(G, directed=False)
    sizes = np.bincount(labels)
    in_group = sizes[labels] > 1
    # best member per label: sort by (label, -priority, index)
    order = np.lexsort((np.arange(n), -priority, labels))
    first = np.ones(n, dtype=bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    best_of_label = np.empty(sizes.size, dtype=np.int64)
    best_of_label[labels[order][first]] = order[first]
    keeper[in_group] = best_of_label[labels[in_group]]
    demoted = in_group & (keeper != np.arange(n))
    return demoted, keeper


def select(score: np.ndarray, Yn: np.ndarray, k: int, *, mmr_lambda: float = 1.0,
           dedup_threshold: float | None = None, demoted: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy top-k selection. Returns (chosen indices in order, near-duplicate-of index or -1).

    Loops over the k picks only; each pick costs one (N, D) matrix-vector product.
    """
    n = score.shape[0]
    k = min(k, n)
    if mmr_lambda >= 1.0 and dedup_threshold is None and demoted is None:
        order = np.lexsort((np.arange(n), -score))[:k]  # ties: lower index first
        return order, np.full(k, -1, dtype=np.int64)
    available = np.ones(n, dtype=bool)
    max_sim = np.full(n, -np.inf)
    arg_sim = np.full(n, -1, dtype=np.int64)
    chosen = np.empty(k, dtype=np.int64)
    dup_of = np.full(k, -1, dtype=np.int64)
    penal = np.zeros(n, dtype=bool) if demoted is None else demoted.copy()
    for t in range(k):
        if mmr_lambda < 1.0:
            obj = mmr_lambda * score - (1.0 - mmr_lambda) * np.maximum(max_sim, 0.0)
        else:
            obj = score
        mask = available.copy()
        if dedup_threshold is not None:
            penal |= max_sim >= dedup_threshold
        preferred = mask & ~penal
        if preferred.any():
            mask = preferred
        cand = np.flatnonzero(mask)
        i = int(cand[np.argmax(obj[cand])])
        chosen[t] = i
        if penal[i] and arg_sim[i] >= 0 and dedup_threshold is not None and max_sim[i] >= dedup_threshold:
            dup_of[t] = arg_sim[i]
        available[i] = False
        s = np.einsum("ij,j->i", Yn, Yn[i]).astype(np.float64)
        better = s > max_sim
        max_sim = np.where(better, s, max_sim)
        arg_sim = np.where(better, i, arg_sim)
    return chosen, dup_of
