"""Scores and bundle selection (pure functions).

The score of candidate i is derived from the settled state U*:

    align_i  = cos(U*_i, psi)           (alignment of the settled state with the query)
    cosine_i = cos(Y_i, psi)            (first-stage similarity)
    score_i  = align_i + coh_weight * (align_i - cosine_i)

With lamC = 0, align_i is a strictly increasing function of cosine_i for unit rows, so the
lattice then reproduces the cosine order exactly; lamC > 0 lets the coherence term move a
candidate toward (or away from) the query according to its graph neighbours, and
``coh_weight`` scales how much that movement counts.

Near-duplicate groups (kNN pairs with cosine >= ``dedup_threshold``) are then resolved: the
members are ordered by ``dup_keep`` ("support": how well the rest of the candidate set
supports each member, i.e. its mean similarity to its kNN neighbours outside the group;
"consensus": the settled state's shift toward the query, align - cosine; "best": the score)
and either exchange places within the group (``dup_action="reorder"``, nothing leaves the
ranking) or all but the first are demoted behind every other candidate ("demote").
Selection is then a stable sort, or greedy MMR when ``mmr_lambda < 1``.

Screening (`screen_ranking`, see `oscillink_core.screening`) then decides about the best-ranked
candidates: each gets flags, and candidates with a decisive flag are demoted behind every other
candidate, dropped from the bundle, or only flagged (``LatticeParams.screen``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from . import corroboration, provenance, textsignals
from .screening import screen

__all__ = ["row_cosine", "scores", "select", "near_duplicate_groups", "outside_support", "resolve_groups",
           "rank_settled", "screen_ranking", "screen_kwargs", "dup_demoted", "local_scores", "split_siblings",
           "rank_and_screen", "apply_provenance", "structure_evidence"]


def row_cosine(U: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """cos(U_i, psi) for every row (float64); zero rows give 0."""
    # einsum, not BLAS gemv: the sum order then does not depend on the thread count
    norms = np.sqrt(np.einsum("ij,ij->i", U, U).astype(np.float64)) * float(np.linalg.norm(psi.astype(np.float64)))
    dots = np.einsum("ij,j->i", U, psi.astype(U.dtype)).astype(np.float64)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def scores(align: np.ndarray, cosine: np.ndarray, coh_weight: float) -> np.ndarray:
    return align + coh_weight * (align - cosine)


def near_duplicate_groups(idx: np.ndarray, sim: np.ndarray, threshold: float) -> np.ndarray:
    """Label of each node's near-duplicate group, or -1 when it has no near-duplicate.

    A group is a connected component of the kNN pairs whose cosine is >= ``threshold``.
    """
    n = idx.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    if idx.size == 0:
        return labels
    rows = np.repeat(np.arange(n), idx.shape[1])
    cols = idx.reshape(-1)
    ok = (cols >= 0) & (sim.reshape(-1) >= threshold)
    if not ok.any():
        return labels
    G = sp.coo_array((np.ones(int(ok.sum())), (rows[ok], cols[ok])), shape=(n, n)).tocsr()
    _, comp = connected_components(G, directed=False)
    sizes = np.bincount(comp)
    grouped = sizes[comp] > 1
    labels[grouped] = comp[grouped]
    return labels


def outside_support(idx: np.ndarray, sim: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean similarity of each node to its kNN-list neighbours outside its own near-duplicate
    group: how well the rest of the candidate set supports it (-inf when nothing is left)."""
    n = idx.shape[0]
    if idx.size == 0:
        return np.full(n, -np.inf)
    valid = idx >= 0
    nb_label = np.where(valid, labels[np.maximum(idx, 0)], -2)
    outside = valid & ~((labels[:, None] >= 0) & (nb_label == labels[:, None]))
    cnt = outside.sum(axis=1)
    tot = np.where(outside, sim, 0.0).sum(axis=1, dtype=np.float64)
    return np.divide(tot, cnt, out=np.full(n, -np.inf), where=cnt > 0)


def resolve_groups(score: np.ndarray, labels: np.ndarray, priority: np.ndarray, action: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the near-duplicate rule to the scores (vectorised over all groups).

    Within each group the members are ranked by ``priority`` (ties: by score, then index).
    ``action="reorder"``: the members exchange scores so that the group's best score goes to
    the highest-priority member, the second best to the next, and so on: the group keeps the
    positions it had, only its internal order changes. ``action="demote"``: the top-priority
    member (the representative) takes the group's best score and the others are flagged
    ``demoted`` (ranked behind every candidate that is not demoted).

    Returns (new scores, demoted mask, representative index per node or -1).
    """
    n = score.shape[0]
    new = score.astype(np.float64, copy=True)
    demoted = np.zeros(n, dtype=bool)
    rep = np.full(n, -1, dtype=np.int64)
    members = np.flatnonzero(labels >= 0)
    if members.size == 0:
        return new, demoted, rep
    lab = labels[members]
    by_pri = members[np.lexsort((members, -score[members], -priority[members], lab))]
    by_score = members[np.lexsort((members, -score[members], lab))]
    first = np.ones(members.size, dtype=bool)
    first[1:] = labels[by_pri][1:] != labels[by_pri][:-1]
    head = np.maximum.accumulate(np.where(first, np.arange(members.size), 0))
    rep[by_pri] = by_pri[head]
    if action == "reorder":
        new[by_pri] = score[by_score]  # both lists are grouped by label in the same order
    else:
        new[by_pri[first]] = score[by_score[first]]
        demoted[by_pri[~first]] = True
    return new, demoted, rep


def select(score: np.ndarray, Yn: np.ndarray, k: int, *, mmr_lambda: float = 1.0,
           demoted: np.ndarray | None = None) -> np.ndarray:
    """Greedy top-k selection; returns the chosen indices in order.

    Without diversification this is a stable sort (ties: lower index first) with demoted
    candidates behind the others. With ``mmr_lambda < 1``, MMR picks
    argmax lam * s'_i - (1 - lam) * max_{j chosen} cos(Y_i, Y_j), where s' is the score
    rescaled to [0, 1] over the candidates (settled alignments span a much narrower range than
    cosines, so the raw scale would let the similarity term dominate). The loop runs over the
    k picks only; each pick costs one (N, D) matrix-vector product.
    """
    n = score.shape[0]
    k = min(k, n)
    dem = np.zeros(n, dtype=bool) if demoted is None else demoted
    if mmr_lambda >= 1.0:
        return np.lexsort((np.arange(n), -score, dem))[:k]
    lo, hi = float(score.min()), float(score.max())
    s = (score - lo) / (hi - lo) if hi > lo else np.zeros(n)
    available = np.ones(n, dtype=bool)
    max_sim = np.zeros(n)
    chosen = np.empty(k, dtype=np.int64)
    for t in range(k):
        obj = mmr_lambda * s - (1.0 - mmr_lambda) * max_sim
        mask = available & ~dem
        if not mask.any():
            mask = available
        cand = np.flatnonzero(mask)
        i = int(cand[np.argmax(obj[cand])])
        chosen[t] = i
        available[i] = False
        max_sim = np.maximum(max_sim, np.einsum("ij,j->i", Yn, Yn[i]).astype(np.float64))
    return chosen


def rank_settled(align: np.ndarray, cosine: np.ndarray, Yn: np.ndarray, idx: np.ndarray | None,
                 sim: np.ndarray | None, k: int, *, coh_weight: float = 0.0, mmr_lambda: float = 1.0,
                 dedup_threshold: float | None = None, dup_keep: str = "support",
                 dup_action: str = "reorder", labels: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole ranking step of `Oscillink.bundle` from settled quantities.

    Parameters are the ranking fields of `LatticeParams`; ``idx``/``sim`` are the directed kNN
    lists behind the graph (needed for the near-duplicate rule); ``labels`` may pass their
    near-duplicate groups when already computed (as `near_duplicate_groups` would label them). Returns (top-k indices,
    final scores of all candidates, representative index per candidate or -1).
    """
    score = scores(align, cosine, coh_weight)
    demoted, rep = None, np.full(score.shape[0], -1, dtype=np.int64)
    if dedup_threshold is not None and idx is not None and idx.size:
        if labels is None:
            labels = near_duplicate_groups(idx, sim, dedup_threshold)
        if (labels >= 0).any():
            if dup_keep == "support":
                priority = outside_support(idx, sim, labels)
            elif dup_keep == "consensus":
                priority = align - cosine
            else:
                priority = score
            score, demoted, rep = resolve_groups(score, labels, priority, dup_action)
    return select(score, Yn, k, mmr_lambda=mmr_lambda, demoted=demoted), score, rep


def screen_kwargs(params) -> dict:
    """The `screening.screen` keywords of a `LatticeParams`."""
    return {"pool": params.screen_pool, "group_threshold": params.screen_group_threshold,
            "group_min": params.screen_group_min, "group_max": params.screen_group_max,
            "target_margin": params.screen_target_margin,
            "echo_delta": params.screen_echo_delta,
            "twin_threshold": 2.0 if params.screen_twin_threshold is None else params.screen_twin_threshold,
            "twin_margin": params.screen_twin_margin, "use_twins": params.screen_twin_threshold is not None,
            "echo": params.screen_query_echo, "text_twin_threshold": params.screen_text_twin_threshold,
            "edit_max": params.screen_edit_max, "edit_max_tokens": params.screen_edit_max_tokens,
            "group_defer": params.screen_group_defer, "lone_echo": params.screen_lone_echo,
            "lone_echo_rest": params.screen_lone_echo_rest,
            "untexted_group_margin": params.screen_untexted_group_margin,
            "untexted_questions": params.screen_untexted_questions,
            "twin_lean": params.screen_twin_lean}


def dup_demoted(rep: np.ndarray, dup_action: str) -> np.ndarray:
    """Candidates the near-duplicate rule demoted: under ``dup_action="demote"`` every group member
    that is not its group's representative (``rep`` as `rank_settled` returns it)."""
    if dup_action != "demote":
        return np.zeros(rep.shape[0], dtype=bool)
    return (rep >= 0) & (rep != np.arange(rep.shape[0]))


def screen_ranking(order: np.ndarray, score: np.ndarray, rep: np.ndarray, cosine: np.ndarray, Yn: np.ndarray, k: int,
                   *, action: str = "demote", mmr_lambda: float = 1.0, dup_action: str = "reorder",
                   **screen_kw) -> tuple[np.ndarray, list[list[str]], list[str]]:
    """Screen a ranking made by `rank_settled` and apply ``action`` to the decisive flags.

    ``order``, ``score`` and ``rep`` are what `rank_settled` returned; ``screen_kw`` go to
    `screening.screen`. ``action``: "off" (no flags), "flag" (flags only, order unchanged),
    "demote" (decisive candidates behind every other one, then the same selection as before),
    "drop" (decisive candidates removed; the bundle may then hold fewer than k items when fewer
    than k candidates remain). Returns (new top-k order, flags of every candidate, action of
    every candidate: "kept", "demoted" or "dropped").
    """
    n = score.shape[0]
    actions = ["kept"] * n
    if action == "off":
        return order, [[] for _ in range(n)], actions
    res = screen(Yn, cosine, score, **screen_kw)
    if action == "flag" or not res.decisive.any():
        return order, res.flags, actions
    dup_dem = dup_demoted(rep, dup_action)
    hit = np.flatnonzero(res.decisive)
    if action == "demote":
        order = select(score, Yn, k, mmr_lambda=mmr_lambda, demoted=dup_dem | res.decisive)
        label = "demoted"
    elif action == "drop":
        rest = np.flatnonzero(~res.decisive)
        order = rest[select(score[rest], Yn[rest], k, mmr_lambda=mmr_lambda, demoted=dup_dem[rest])]
        label = "dropped"
    else:
        raise ValueError(f"screen action must be 'off', 'flag', 'demote' or 'drop'; got {action!r}")
    for i in hit.tolist():
        actions[i] = label
    return order, res.flags, actions


#: flags that count as evidence for the lattice to reshape the order under ``coh_scope="evidence"``
#: or ``"local"``. ``"conflicting_twin"`` alone is not: two near-copies whose edit leans toward neither
#: side (a revised edition of a page) are normal in a corpus; on train it cost the editions corpus
#: nDCG@10 (-0.0055 -> +0.0005 without it) and changed the twin set by -0.002 (robust_select.py).
EVIDENCE_FLAGS = ("tight_group", "query_targeted", "query_echo", "twin_conflict")


def structure_evidence(res, memo: textsignals._TextMemo | None, params) -> bool:
    """Does a screen (a `screening.ScreenResult`) find structure for the lattice to act on?

    True when some candidate carries a flag of `EVIDENCE_FLAGS`, except a bare ``"tight_group"``
    of *copies*: with the texts at hand (``memo``, and the text twin rule on), a tight group whose
    members pairwise differ by a small substitution (the edit `textsignals.edit_lean` reads) is
    one page in several editions or several pages of one template. The
    text rules have judged each of its pairs; without a decisive flag it is no more evidence than
    a near-duplicate pair (such groups of other questions' template pages made the lattice reorder
    a template corpus; docs/results.md, "Robustness").
    """
    p = params
    copies: set[int] = set()
    if memo is not None and p.screen_text_twin_threshold is not None:
        for g in np.unique(res.group[res.group >= 0]).tolist():
            members = np.flatnonzero(res.group == g).tolist()
            if all(memo.change(i, j, p.screen_edit_max, p.screen_edit_max_tokens) is not None
                   for x, i in enumerate(members) for j in members[x + 1:]):
                copies.add(g)
    for i, fl in enumerate(res.flags):
        for f in fl:
            if f in EVIDENCE_FLAGS and not (f == "tight_group" and int(res.group[i]) in copies):
                return True
    return False


def split_siblings(labels: np.ndarray, texts, query_text: str, *, max_change: float = 0.2,
                   max_tokens: int | None = 6, memo: textsignals._TextMemo | None = None) -> np.ndarray:
    """Near-duplicate labels with template siblings taken out of their groups (a copy).

    A member that is a `textsignals.siblings` page of every other member of its group (two
    genuine pages from one template, the question naming one of them: a team's 1926 and 1976
    seasons) is not a near-duplicate to be resolved by support: its label becomes -1, and a group
    left with one member dissolves. ``memo``: internal, as in `screening.screen` (the text work
    shared by the calls of one ranking; None: a fresh one).
    """
    out = np.array(labels, dtype=np.int64, copy=True)
    if memo is None:
        memo = textsignals._TextMemo(texts, query_text)
    elif not memo.holds(texts, query_text):
        raise ValueError("split_siblings: memo belongs to other texts or another query_text")
    for g in np.unique(out[out >= 0]).tolist():
        members = np.flatnonzero(out == g).tolist()
        sib = {(i, j): memo.siblings(i, j, max_change=max_change, max_tokens=max_tokens)
               for x, i in enumerate(members) for j in members[x + 1:]}
        alone = [i for i in members if all(sib[min(i, j), max(i, j)] for j in members if j != i)]
        out[alone] = -1
        if len(members) - len(alone) < 2:
            out[members] = -1
    return out


def local_scores(score: np.ndarray, cosine: np.ndarray, involved: np.ndarray) -> np.ndarray:
    """Cosine-scale scores where only the ``involved`` candidates move.

    The candidates are laid out in their cosine order (ties: lower index first); the slots held
    by involved candidates are refilled with the involved candidates in the order of ``score``
    (ties: lower index first), every other candidate keeps its slot, and the candidate in slot p
    gets the p-th largest cosine as its score. So the lattice decides among the candidates that
    show structure, and an uninvolved candidate is neither lifted nor pushed by it.
    """
    n = score.shape[0]
    cos = np.asarray(cosine, dtype=np.float64)
    by_cos = np.lexsort((np.arange(n), -cos))
    slots = np.flatnonzero(involved[by_cos])
    inv = by_cos[slots]
    new_order = by_cos.copy()
    new_order[slots] = inv[np.lexsort((inv, -np.asarray(score, dtype=np.float64)[inv]))]
    out = np.empty(n, dtype=np.float64)
    out[new_order] = cos[by_cos]
    return out


def apply_provenance(order: np.ndarray, score: np.ndarray, rep: np.ndarray, flags: list[list[str]],
                     actions: list[str], Yn: np.ndarray, k: int, params, sources, trusted_sources
                     ) -> tuple[np.ndarray, list[list[str]], list[str]]:
    """Apply the provenance policy to a screened ranking (what `rank_and_screen` returns before it).

    ``params.provenance`` picks the judge: `corroboration.judge` ("corroboration") or
    `provenance.judge` ("trusted_first"). The pool is the ``screen_pool`` best-scored candidates
    that screening kept; the decisive candidates (``"new_source_echo"``, ``"untrusted_source"``)
    are handled like screening's decisive ones under ``params.screen`` ("flag": flags only;
    "demote": behind every other candidate; "drop": removed). Nothing happens without ``sources``
    and ``trusted_sources`` or under ``screen="off"``.
    Returns (order, flags, actions), new lists.
    """
    if params.screen == "off" or sources is None or trusted_sources is None:
        return order, flags, actions
    screened = np.array([a != "kept" for a in actions], dtype=bool)
    pool_score = np.where(screened, -np.inf, score)
    if params.provenance == "trusted_first":
        res = provenance.judge(sources, trusted_sources, pool_score, pool=params.screen_pool)
    else:
        res = corroboration.judge(sources, trusted_sources, Yn, pool_score, pool=params.screen_pool,
                                  threshold=params.provenance_threshold, min_echo=params.provenance_min_echo)
    flags = [f + g for f, g in zip(flags, res.flags, strict=True)]
    actions = list(actions)
    if params.screen == "flag" or not res.decisive.any():
        return order, flags, actions
    dup_dem = dup_demoted(rep, params.dup_action)
    if params.screen == "demote":
        order = select(score, Yn, k, mmr_lambda=params.mmr_lambda, demoted=dup_dem | screened | res.decisive)
        label = "demoted"
    else:
        rest = np.flatnonzero(~(screened | res.decisive))
        order = rest[select(score[rest], Yn[rest], k, mmr_lambda=params.mmr_lambda, demoted=dup_dem[rest])]
        label = "dropped"
    for i in np.flatnonzero(res.decisive).tolist():
        actions[i] = label
    return order, flags, actions


def rank_and_screen(align: np.ndarray, cosine: np.ndarray, Yn: np.ndarray, idx: np.ndarray | None,
                    sim: np.ndarray | None, k: int, params, *, texts=None, query_text=None,
                    labels: np.ndarray | None = None, sources=None, trusted_sources=None):
    """`_rank_and_screen` (below), then `apply_provenance` with ``sources`` and ``trusted_sources``."""
    order, score, rep, flags, actions, ranking = _rank_and_screen(align, cosine, Yn, idx, sim, k, params, texts=texts,
                                                                  query_text=query_text, labels=labels)
    order, flags, actions = apply_provenance(order, score, rep, flags, actions, Yn, k, params, sources,
                                             trusted_sources)
    return order, score, rep, flags, actions, ranking


def _rank_and_screen(align: np.ndarray, cosine: np.ndarray, Yn: np.ndarray, idx: np.ndarray | None,
                     sim: np.ndarray | None, k: int, params, *, texts=None, query_text=None,
                     labels: np.ndarray | None = None):
    """`rank_settled` then `screen_ranking` under the ranking and screening fields of ``params``
    (a `LatticeParams`), with ``coh_scope``.

    Under ``coh_scope="evidence"`` or ``"local"`` (and screening on) the candidate set is screened
    in its cosine order first. When nothing in the pool is evidence of structure (no flag of
    `EVIDENCE_FLAGS`, no near-duplicate pair at ``dedup_threshold`` inside the pool), the result is
    the cosine order (score = cosine, no near-duplicate reordering) with that screen's flags.
    Under ``"local"`` a near-duplicate pair without a flag is evidence only where the texts have not
    judged it (no texts and question, the text twin rule off, or ``dup_action="demote"``); when
    such a pair is the only evidence, the lattice's order applies to the near-duplicate members
    alone (`local_scores`), then the screen runs. Otherwise the
    lattice ranks and screens as under ``"always"``. Returns (order, score, rep, flags, actions,
    ranking) with ``ranking`` "lattice", "local" or "cosine".
    """
    p = params
    kw = screen_kwargs(p)
    # the text work (tokens, restatements, near-copy diffs) done once for both screens and the sibling split
    memo = textsignals._TextMemo(texts, query_text) if texts is not None and query_text is not None else None
    has_knn = p.dedup_threshold is not None and idx is not None and idx.size > 0
    split = (texts is not None and query_text is not None and p.screen != "off" and p.screen_twin_lean == "shared"
             and p.screen_text_twin_threshold is not None and has_knn)

    def dup_labels(labels):
        # near-duplicate groups with template siblings taken out; only computed where they are used
        if labels is None and has_knn:
            labels = near_duplicate_groups(idx, sim, p.dedup_threshold)
        if split and (labels >= 0).any():
            labels = split_siblings(labels, texts, query_text, max_change=p.screen_edit_max,
                                    max_tokens=p.screen_edit_max_tokens, memo=memo)
        return labels

    resolved = None
    local = False
    if p.coh_scope in ("evidence", "local") and p.screen != "off":
        pre = screen(Yn, cosine, cosine, texts=texts, query_text=query_text, memo=memo, **kw)
        evidence = structure_evidence(pre, memo, p)
        local = not evidence and p.coh_scope == "local"
        # under "local", with the text twin rule on and members that only exchange places, the texts
        # have already judged every near-copy pair: one without a flag holds no conflicting edit
        texts_judged = (local and texts is not None and query_text is not None and p.dup_action == "reorder"
                        and p.screen_text_twin_threshold is not None)
        if not evidence and not texts_judged and has_knn:
            resolved = dup_labels(labels)
            n = cosine.shape[0]
            pool = np.lexsort((np.arange(n), -np.asarray(cosine, dtype=np.float64)))[:min(p.screen_pool, n)]
            lab = resolved[pool]
            lab = lab[lab >= 0]
            evidence = lab.size > np.unique(lab).size  # two pool members share a near-duplicate group
        if not evidence:
            # score = cosine exactly (align = cosine with coh_weight 0; -1 would round)
            order, score, rep = rank_settled(cosine, cosine, Yn, None, None, k, mmr_lambda=p.mmr_lambda)
            return order, score, rep, pre.flags, ["kept"] * cosine.shape[0], "cosine"
    labels = dup_labels(labels) if resolved is None else resolved
    order, score, rep = rank_settled(align, cosine, Yn, idx, sim, k, coh_weight=p.coh_weight,
                                     mmr_lambda=p.mmr_lambda, dedup_threshold=p.dedup_threshold,
                                     dup_keep=p.dup_keep, dup_action=p.dup_action, labels=labels)
    if local:
        # only a near-duplicate pair is evidence: its members move, every other candidate keeps its cosine slot
        score = local_scores(score, cosine, labels >= 0)
        order = select(score, Yn, k, mmr_lambda=p.mmr_lambda, demoted=dup_demoted(rep, p.dup_action))
    order, flags, actions = screen_ranking(order, score, rep, cosine, Yn, k, action=p.screen,
                                           mmr_lambda=p.mmr_lambda, dup_action=p.dup_action,
                                           texts=texts, query_text=query_text, memo=memo, **kw)
    return order, score, rep, flags, actions, "local" if local else "lattice"

