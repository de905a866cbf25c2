"""Rerankers compared by the quality benchmark, all over the same first-stage candidates.

Every method takes the candidate embeddings ``Y`` (n, d, unit rows), their first-stage
cosines ``cos`` (n,) and the unit query ``psi`` (d,), and returns the indices of its top ``k``.

* `cosine_topk`: first-stage order.
* `mmr_topk`: textbook MMR, ``argmax lam * cos_i - (1 - lam) * max_{j chosen} cos(Y_i, Y_j)``.
* `lattice_topk`: ``oscillink_core.rerank`` (the code users call), params as given.
* `LatticeState` + `rank_from_state`: the sweep engine. It runs the core's `Oscillink` once per
  (query, energy parameters) and then applies many ranking rules (coh_weight, MMR, the
  near-duplicate rule, `dup_keep`, and the prototype rules below) with the core's own
  `ranking.select` / `ranking.near_duplicate_keepers`, so a sweep does not re-solve per ranking
  knob. `check_engine_matches_core` asserts that it reproduces `rerank` exactly.

Prototype rules (not in the core) are added to `rank_from_state` as ``rule=...`` and described
in benchmarks/results/quality.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from oscillink_core import LatticeParams, Oscillink, rerank
from oscillink_core.graph import exact_knn

try:  # the core's own ranking step, when it exposes one (keeps the sweep engine exactly faithful)
    from oscillink_core.ranking import rank_settled as _rank_settled
except ImportError:  # pragma: no cover - older core
    _rank_settled = None
try:
    from oscillink_core.ranking import near_duplicate_keepers
except ImportError:  # newer core: same rule from its group helpers
    from oscillink_core.ranking import near_duplicate_groups as _groups

    def near_duplicate_keepers(idx, sim, priority, threshold):
        """(demoted mask, keeper per node or -1): keep the highest-priority member of each group."""
        labels = _groups(idx, sim, threshold)
        n = labels.size
        keeper = np.full(n, -1, dtype=np.int64)
        for lab in np.unique(labels[labels >= 0]):
            members = np.flatnonzero(labels == lab)
            keeper[members] = members[np.lexsort((members, -priority[members]))[0]]
        return (keeper >= 0) & (keeper != np.arange(n)), keeper

try:
    from oscillink_core.ranking import select as _core_select
except ImportError:  # pragma: no cover
    _core_select = None

PARAM_FIELDS = {f.name for f in dataclasses.fields(LatticeParams)}


def cosine_topk(cos: np.ndarray, k: int = 10) -> np.ndarray:
    return np.lexsort((np.arange(cos.size), -cos))[:k]


def mmr_topk(Y: np.ndarray, cos: np.ndarray, lam: float, k: int = 10) -> np.ndarray:
    n = cos.size
    k = min(k, n)
    if lam >= 1.0:
        return cosine_topk(cos, k)
    chosen = np.empty(k, dtype=np.int64)
    avail = np.ones(n, dtype=bool)
    max_sim = np.full(n, -np.inf)
    for t in range(k):
        red = np.maximum(max_sim, 0.0) if t else np.zeros(n)
        obj = np.where(avail, lam * cos - (1.0 - lam) * red, -np.inf)
        i = int(np.argmax(obj))
        chosen[t] = i
        avail[i] = False
        max_sim = np.maximum(max_sim, Y @ Y[i])
    return chosen


def lattice_topk(Y: np.ndarray, psi: np.ndarray, params: LatticeParams | dict | None, k: int = 10,
                 texts: list[str] | None = None, query_text: str | None = None) -> np.ndarray:
    """`rerank`'s top k; with ``texts`` and ``query_text`` the text screening signals run too."""
    res = rerank(psi, Y, k=k, params=params, texts=texts, query_text=query_text)
    return np.asarray(res.indices, dtype=np.int64)


@dataclass
class LatticeState:
    """What one settle gives, for one query: per-candidate align/cosine/degree/gate and the kNN lists."""

    align: np.ndarray
    cos: np.ndarray
    degree: np.ndarray
    gate: np.ndarray
    knn_idx: np.ndarray
    knn_sim: np.ndarray
    iterations: int
    lamG: float = 1.0
    lamQ: float = 4.0

    @property
    def lift(self) -> np.ndarray:
        """Graph-induced part of the alignment: ``align - isolated_align(cos, gate)`` (0 when lamC = 0)."""
        return self.align - isolated_align(self.cos, self.gate, self.lamG, self.lamQ)


def isolated_align(cos: np.ndarray, gate: np.ndarray, lamG: float, lamQ: float) -> np.ndarray:
    """cos(U*_i, psi) of a node without edges: U*_i is proportional to lamG y_i + lamQ g_i psi (unit y, psi),
    so its alignment is (lamG c + lamQ g) / sqrt(lamG^2 + 2 lamG lamQ g c + (lamQ g)^2), a function of the
    cosine c alone. Subtracting it from align leaves what the graph neighbours contributed."""
    g = np.asarray(gate, dtype=np.float64)
    c = np.asarray(cos, dtype=np.float64)
    num = lamG * c + lamQ * g
    den = np.sqrt(np.maximum(lamG**2 + 2 * lamG * lamQ * g * c + (lamQ * g) ** 2, 1e-300))
    return num / den


ENERGY_FIELDS = ("kneighbors", "lamG", "lamC", "lamQ", "edge_floor", "degree_reg", "gating", "gate_gamma",
                 "gate_beta", "normalize")
RANK_FIELDS = tuple(f for f in ("coh_weight", "mmr_lambda", "dedup_threshold", "dup_keep", "dup_action")
                    if f in PARAM_FIELDS)


def settle_state(Y: np.ndarray, psi: np.ndarray, params: LatticeParams, knn_k: int = 10) -> LatticeState:
    """Settle the core lattice once and collect what every ranking rule needs."""
    n = Y.shape[0]
    kk = min(params.kneighbors, n - 1)
    lat = Oscillink(Y, params=params.replace(kneighbors=kk))
    lat.set_query(psi)
    info = lat.settle()
    c = lat.components()
    idx, sim = exact_knn(np.ascontiguousarray(Y, dtype=np.float32), min(max(kk, knn_k), n - 1))
    return LatticeState(c["align"], c["cosine"], np.asarray(c["degree"]), c["gate"], idx, sim, int(info["iterations"]),
                        lamG=params.lamG, lamQ=params.lamQ)


def rank_from_state(st: LatticeState, Y: np.ndarray, k: int = 10, *, coh_weight: float = 0.0,
                    mmr_lambda: float = 1.0, dedup_threshold: float | None = None, dup_keep: str = "best",
                    dup_action: str | None = None, kneighbors: int = 6, rule: str | None = None, beta: float = 0.0,
                    twin_threshold: float | None = None, twin_mode: str = "promote",
                    twin_priority: str = "inflation", push_to: int = 5) -> np.ndarray:
    """Top-k indices under the core's ranking (same formulas as `Oscillink.bundle`) or a prototype rule.

    Prototype knobs (not in the core):

    * ``rule="lift"``: score = cos + beta * lift, lift = align - isolated_align(cos) (see `LatticeState.lift`),
      instead of the core's align + coh_weight * (align - cos).
    * ``twin_threshold``: candidates linked (within their kNN lists) by cosine >= threshold form twin
      groups. The keeper of a group is the member with the largest ``twin_priority``: "inflation" =
      align - cos (the core's ``dup_keep="consensus"`` priority: the member whose settled state moved
      most toward the query relative to its cosine, in practice the least query-similar twin) or
      "lift" (graph-induced part only), or "lowcos" (-cos: a control that uses no lattice quantity).
      ``twin_mode``:

      - "promote": the keeper takes the score of the group's best member (just above it); the other
        members keep their scores and stay in the list (nothing is removed);
      - "promote_push": as "promote", and non-keepers may not occupy the first ``push_to`` places
        (they are re-inserted right after place ``push_to``, in order);
      - "demote": non-keepers go behind every non-member (they leave the top k), keeper unchanged;
      - "promote_demote": "promote" and "demote".
    """
    kk = min(kneighbors, Y.shape[0] - 1)
    if rule is None and twin_threshold is None and _rank_settled is not None:
        use = dedup_threshold is not None and kk >= 1
        kw = {"dup_action": dup_action} if dup_action is not None else {}
        order, _, _ = _rank_settled(st.align, st.cos, Y, st.knn_idx[:, :kk] if use else None,
                                    st.knn_sim[:, :kk] if use else None, k, coh_weight=coh_weight,
                                    mmr_lambda=mmr_lambda, dedup_threshold=dedup_threshold, dup_keep=dup_keep, **kw)
        return order
    if dup_action not in (None, "demote"):
        raise NotImplementedError("this core has no rank_settled; only dup_action='demote' is emulated")
    if rule is None:
        score = st.align + coh_weight * (st.align - st.cos)
    elif rule == "lift":
        score = st.cos + beta * st.lift
    else:
        raise ValueError(f"unknown rule {rule!r}")
    demoted = None
    if dedup_threshold is not None and dup_keep == "consensus" and _rank_settled is None:
        demoted, _ = near_duplicate_keepers(st.knn_idx[:, :kk], st.knn_sim[:, :kk], st.align - st.cos,
                                            dedup_threshold)
    pushed = None
    if twin_threshold is not None:
        if twin_mode not in ("promote", "promote_push", "demote", "promote_demote"):
            raise ValueError(f"unknown twin_mode {twin_mode!r}")
        if twin_priority == "inflation":
            prio = st.align - st.cos
        elif twin_priority == "lift":
            prio = st.lift
        elif twin_priority == "lowcos":  # control without the lattice: keep the least query-similar twin
            prio = -st.cos
        else:
            raise ValueError(f"unknown twin_priority {twin_priority!r}")
        d2, keeper = near_duplicate_keepers(st.knn_idx, st.knn_sim, prio, twin_threshold)
        if twin_mode != "demote" and (keeper >= 0).any():
            score = score.copy()
            members = np.flatnonzero(keeper >= 0)
            best: dict[int, float] = {}
            for i in members:
                best[int(keeper[i])] = max(best.get(int(keeper[i]), -np.inf), float(score[i]))
            for kp, sc in best.items():
                score[kp] = max(score[kp], sc + 1e-9)
        if twin_mode in ("demote", "promote_demote"):
            demoted = d2 if demoted is None else (demoted | d2)
        if twin_mode == "promote_push":
            pushed = d2
    if pushed is None or not pushed.any():
        return _select(score, Y, k, mmr_lambda, dedup_threshold, demoted)
    long_k = min(Y.shape[0], k + push_to + int(pushed.sum()))
    order = _select(score, Y, long_k, mmr_lambda, dedup_threshold, demoted)
    head, held, tail = [], [], []
    for i in order.tolist():
        if len(head) < push_to:
            (held if pushed[i] else head).append(i)
        else:
            tail.append(i)
    return np.asarray((head + held + tail)[:k], dtype=np.int64)


def _select(score, Y, k, mmr_lambda, dedup_threshold, demoted) -> np.ndarray:
    """Greedy selection for the prototype rules: the core's `select` (old or new signature)."""
    if _rank_settled is None:  # old core: select(score, Yn, k, mmr_lambda, dedup_threshold, demoted) -> (order, dup)
        order, _ = _core_select(score, Y, k, mmr_lambda=mmr_lambda, dedup_threshold=dedup_threshold, demoted=demoted)
        return order
    return _core_select(score, Y, k, mmr_lambda=mmr_lambda, demoted=demoted)


def check_engine_matches_core(Y: np.ndarray, psi: np.ndarray, params: LatticeParams, k: int = 10) -> None:
    """Raise AssertionError unless the sweep engine returns exactly what `rerank` returns."""
    st = settle_state(Y, psi, params)
    mine = rank_from_state(st, Y, k, **{f: getattr(params, f) for f in RANK_FIELDS}, kneighbors=params.kneighbors)
    core = lattice_topk(Y, psi, params, k)
    if not np.array_equal(mine, core):
        raise AssertionError(f"sweep engine {mine.tolist()} != core rerank {core.tolist()} for {params}")
