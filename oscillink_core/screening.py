"""Screening: decisions about candidates from the structure of the candidate set (pure functions).

Ranking orders the candidates; screening decides, for the candidates near the top, whether each
one should reach a context at all. It looks for the shapes corpus-poisoning and counterfactual
attacks leave in embedding space (TrustRAG observed that planted passages form a tight cluster of
mutually similar candidates; PoisonedRAG-style passages restate the query so that they are
retrieved for it):

* **tight group**: among the ``pool`` best-ranked candidates, a connected group of at least
  ``group_min`` candidates linked at cosine >= ``group_threshold``, each of them linked so to at
  least ``group_min - 1`` other members (the ``group_min - 1`` core of the threshold graph: a
  clique-like group, not a chain) and of at most ``group_max`` members: an attacker plants a few
  passages (PoisonedRAG: 5; RobustRAG assumes a minority of the context), a larger group is a
  consensus of the candidate set, not a plant.
* **outside support** of a candidate: the mean cosine of its ``support_k`` most similar candidates
  outside its own group (all N candidates count, not only the pool): how much of the rest of the
  retrieved evidence agrees with it.
* **targeting** of a candidate: its cosine to the query minus its outside support. A passage
  written to be retrieved for the query is far closer to the query than to any independent
  evidence; a genuine passage is supported by the rest about as much as it matches the query.

Flags (strings, per candidate):

* ``"tight_group"``: member of a tight group (information only).
* ``"query_targeted"``: member of a *suspicious* tight group whose cosine to the query is within
  ``echo_delta`` of the group's most query-similar member. A group is suspicious when its most
  targeted member is at least ``target_margin`` more targeted than every pool candidate outside
  the groups (planted passages are far more query-targeted than anything independent of them).
  Inside a suspicious group only the members that echo the query as strongly as its leader are
  flagged: a genuine passage that planted passages were written from sits in their group but
  matches the query less than the restatements do, so it is not flagged with them.
* ``"twin_conflict"``: has a near-twin (cosine >= ``twin_threshold``) in the pool that is less
  query-similar by at least ``twin_margin``: of two near-copies that differ, the one whose
  difference leans toward the query is the suspect (a counterfactual edit of a passage toward the
  question's wording).

With the candidates' texts and the question's text (`rerank(..., texts=, query_text=)`, which the
LangChain and LlamaIndex adapters and the CLI pass), two text signals join them (see
`oscillink_core.textsignals`):

* ``"query_echo"``: the passage restates the question: all of its content words (three or more)
  within one stretch no longer than the question (questions only: a passage that supports a
  statement query, such as a claim, contains it). Planted passages are written to be retrieved
  for the question and carry it; a genuine passage spreads those words over its sentences.
  An attack plants several passages; a *lone* restatement (the only candidate of the pool that
  echoes, outside any tight group) is as often the genuine passage the question was copied from
  (HotpotQA questions are written from their paragraphs), or an FAQ page that carries its
  question. With ``lone_echo="off_topic"`` (default) a lone restatement is decisive only when it
  echoes the question and then speaks of something else: outside the restated stretch it has at
  least as many tokens as the stretch and none of the question's content words
  (``lone_echo_rest``: at most that share of them). The form of the page never decides alone: a
  passage that poses the question ("Q: ...?", as help centres write their pages) is judged like
  any other restatement. A short genuine paragraph that is little more than its restatement is
  not such a lure. Otherwise it is flagged ``"lone_echo"`` (information only). ``"decisive"``
  treats it like any echo, ``"info"`` never lets it decide.
* ``"twin_conflict"`` (text form, replacing the embedding form above when texts are given): of two
  pool candidates at cosine >= ``text_twin_threshold`` that differ by a small substitution, the one
  whose changed words hold more of the question's content words that the other side also holds
  (the copy edited toward the question repeats them; ``twin_lean="any"`` counts every changed
  question word, and then of two genuine pages from one template, such as a team's 1926 and 1976
  seasons, the one the question names is flagged); the other side gets ``"conflicting_twin"``
  (information only), and both get it when neither leans. A copy that only re-inflects the other
  (is -> was, a -> the) and adds text, as a revised edition with a note does, is no conflict.
* ``"template_sibling"`` (information only; texts, ``twin_lean="shared"``): two near-copies that
  are pages of one template, the field that differs being the subject the question names
  (`textsignals.siblings`): neither is an edit of the other, and the pair is no link of a tight
  group (a template's pages are not copies of one another).
* a tight group in which some member carries one of these two text flags is explained by those
  members: its other members keep ``"tight_group"`` but lose ``"query_targeted"`` (``group_defer``;
  the true passage that planted ones were written from sits in their group). A group with no text
  hit is judged by the embedding rule alone, with the stricter margin ``untexted_group_margin``
  when it is given (default 0.3 through `LatticeParams`): with texts at hand, a group that neither
  restates the question nor edits a twin needs stronger embedding evidence (related genuine
  passages, such as the pages of one subject, also form tight groups). In such a group, members
  that differ from each other by a small substitution (`textsignals.edit_lean`'s edit: a page and
  its revised edition) are variants of one text (``copies_once``): a group is suspicious only
  when it holds ``group_min`` independent texts or ``group_min`` variants of one text (a campaign
  of variants). A page, its edition and one related page are two texts and two variants, not a
  group. The price, measured (docs/results.md): two plants written as variants of each other in a
  group with the genuine passage stay in, and so would three editions of one page be judged. For a question query,
  ``untexted_questions=False`` leaves such a group unflagged (the echo rule alone judges a
  question's plants); ``True`` (the `LatticeParams` default) lets the
  embedding rule judge it, which catches plants that restate the question in other words.

Only ``"query_targeted"``, ``"query_echo"`` and ``"twin_conflict"`` are *decisive* (``"lone_echo"``,
``"tight_group"``, ``"conflicting_twin"`` and ``"template_sibling"`` are information): under
``action="demote"`` the candidates carrying one go behind every other candidate (they leave a short context but stay in
the ranking), under ``"drop"`` they are removed from the bundle, under ``"flag"`` nothing moves.

Why this and not membership: purging every member of a tight group removes planted passages
but also the true passage that they were written from, which sits in their group; the decision
therefore compares members with each other (targeting relative to the group's least-targeted
member, the twin that leans toward the query) instead of condemning the group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from . import textsignals

__all__ = ["ScreenResult", "screen", "DECISIVE_FLAGS", "SCREEN_ACTIONS"]

DECISIVE_FLAGS = ("query_targeted", "query_echo", "twin_conflict")
SCREEN_ACTIONS = ("off", "flag", "demote", "drop")


@dataclass(frozen=True)
class ScreenResult:
    """Flags per candidate (lists of str, empty for most), the decisive mask and signal values."""

    flags: list[list[str]]
    decisive: np.ndarray  # (N,) bool: carries a decisive flag
    group: np.ndarray  # (N,) int: tight-group label, -1 outside any group (and outside the pool)
    support: np.ndarray  # (N,) float: outside support (nan outside the pool)
    targeting: np.ndarray  # (N,) float: cosine - outside support (nan outside the pool)


def _tight_groups(S: np.ndarray, threshold: float, min_size: int, max_size: int) -> np.ndarray:
    m = S.shape[0]
    adj = (S >= threshold) & ~np.eye(m, dtype=bool)
    labels = np.full(m, -1, dtype=np.int64)
    # k-core: keep only nodes with >= min_size - 1 such neighbours among the kept ones (a tight
    # group is clique-like; a chain of pairwise links is not one)
    alive = np.ones(m, dtype=bool)
    while True:
        deg = (adj & alive[None, :]).sum(axis=1)
        drop = alive & (deg < min_size - 1)
        if not drop.any():
            break
        alive &= ~drop
    adj &= alive[:, None] & alive[None, :]
    if not adj.any():
        return labels
    _, comp = connected_components(sp.csr_array(adj.astype(np.int8)), directed=False)
    sizes = np.bincount(comp)
    ok = (sizes[comp] >= min_size) & (sizes[comp] <= max_size)
    labels[ok] = comp[ok]
    return labels


def _independent(members: list[int], memo: textsignals._TextMemo, edit_max: float,
                 edit_max_tokens: int | None) -> tuple[int, int]:
    """(independent texts, largest set of variants) of a group: members linked by a small
    substitution (one page and its revised edition, a passage and a copy with a word changed) are
    variants of one text (connected components of that relation)."""
    parent = list(range(len(members)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a in range(len(members)):
        for b in range(a + 1, len(members)):
            if memo.change(members[a], members[b], edit_max, edit_max_tokens) is not None:
                parent[root(a)] = root(b)
    sizes: dict[int, int] = {}
    for x in range(len(members)):
        sizes[root(x)] = sizes.get(root(x), 0) + 1
    return len(sizes), max(sizes.values())


def screen(Yn: np.ndarray, cosine: np.ndarray, score: np.ndarray, *, pool: int = 20, group_threshold: float = 0.8,
           group_min: int = 3, group_max: int = 8, support_k: int = 3, target_margin: float = 0.1,
           echo_delta: float = 0.2, twin_threshold: float = 0.9,
           twin_margin: float = 0.02, use_twins: bool = True, texts: Sequence[str] | None = None,
           query_text: str | None = None, echo: bool = True, text_twin_threshold: float | None = 0.85,
           edit_max: float = 0.2, edit_max_tokens: int | None = 6, group_defer: bool = True,
           lone_echo: str = "off_topic", lone_echo_rest: float = 0.0,
           untexted_group_margin: float | None = None, untexted_questions: bool = True,
           twin_lean: str = "shared", copies_once: bool = True,
           memo: textsignals._TextMemo | None = None) -> ScreenResult:
    """Screen the ``pool`` best-scored candidates (see the module docstring).

    Parameters
    ----------
    Yn : (N, D) unit rows of the candidates.
    cosine : (N,) cosine of each candidate to the query.
    score : (N,) the ranking score; the pool is its top ``pool`` (ties: lower index first).
    pool, group_threshold, group_min, group_max, support_k, target_margin, echo_delta, twin_threshold, twin_margin :
        see the module docstring. ``use_twins=False`` disables
        ``"twin_conflict"``.
    texts, query_text : the candidates' texts (N,) and the question; with both, the text signals
        run (``echo=False`` disables ``"query_echo"``, ``text_twin_threshold=None`` the text twin
        rule; ``edit_max`` and ``edit_max_tokens`` are `textsignals.edit_lean`'s ``max_change``
        and ``max_tokens``) and the text twin rule replaces the embedding one. With
        ``group_defer`` (default), a tight group in which some member restates the question or is
        the edited twin is explained by those members: the others lose ``"query_targeted"``
        (a true passage that planted ones were written from sits in their group).
    lone_echo, lone_echo_rest : how a lone restatement is treated ("off_topic", "decisive" or
        "info"; see the module docstring).
    untexted_group_margin : with texts, the targeting margin a tight group without a text hit
        needs to stay suspicious (None: ``target_margin``, as without texts).
    untexted_questions : with texts and a question (`textsignals.is_question`), whether a tight
        group without a text hit is judged by the embedding rule at all (``False``: it is not
        suspicious; the echo rule judges a question's groups, the embedding rule only a statement's).
    twin_lean : "shared" (default) or "any": which changed question words make a text twin lean
        (see the module docstring).
    copies_once : with texts, a tight group without a text hit counts members that differ from
        each other by a small substitution (a page and its revised edition) once; with fewer than
        ``group_min`` independent texts and fewer than ``group_min`` variants of any one text it
        is not suspicious (default True; False counts every member, the previous rule).
    memo : internal: the `textsignals._TextMemo` of ``texts`` and ``query_text`` that the calls of
        one ranking share (`ranking.rank_and_screen` passes it; None: a fresh one). It only saves
        work: the result is the same with or without it.

    Returns
    -------
    ScreenResult
        Candidates outside the pool get no flags.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> Y = rng.normal(size=(30, 16)); Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    >>> q = rng.normal(size=16); q /= np.linalg.norm(q)
    >>> r = screen(Y, Y @ q, Y @ q)
    >>> int(r.decisive.sum())
    0
    """
    if lone_echo not in ("off_topic", "decisive", "info"):
        raise ValueError(f"lone_echo must be 'off_topic', 'decisive' or 'info'; got {lone_echo!r}")
    if twin_lean not in ("shared", "any"):
        raise ValueError(f"twin_lean must be 'shared' or 'any'; got {twin_lean!r}")
    n = Yn.shape[0]
    cosine = np.asarray(cosine, dtype=np.float64)
    flags: list[list[str]] = [[] for _ in range(n)]
    group = np.full(n, -1, dtype=np.int64)
    support = np.full(n, np.nan)
    targeting = np.full(n, np.nan)
    decisive = np.zeros(n, dtype=bool)
    m = min(int(pool), n)
    if m < 2:
        return ScreenResult(flags, decisive, group, support, targeting)
    top = np.lexsort((np.arange(n), -np.asarray(score, dtype=np.float64)))[:m]
    Yp = np.asarray(Yn[top], dtype=np.float64)
    S_all = Yp @ np.asarray(Yn, dtype=np.float64).T  # (m, N)
    S = S_all[:, top]
    use_text = texts is not None and query_text is not None
    if use_text:
        if memo is None:
            memo = textsignals._TextMemo(texts, query_text)
        elif not memo.holds(texts, query_text):
            raise ValueError("screen: memo belongs to other texts or another query_text")
    # template siblings (the field that differs is the subject the question names): not copies of
    # each other, so neither a tight group's link nor a conflicting edit
    sib = np.zeros((m, m), dtype=bool)
    if use_text and text_twin_threshold is not None and twin_lean == "shared":
        for a, b in zip(*np.nonzero(np.triu(S >= min(group_threshold, text_twin_threshold), 1)), strict=True):
            if memo.siblings(int(top[a]), int(top[b]), max_change=edit_max, max_tokens=edit_max_tokens):
                sib[a, b] = sib[b, a] = True
    lab = _tight_groups(np.where(sib, -np.inf, S), group_threshold, group_min, group_max)
    group[top] = lab
    # outside support: mean of the support_k largest cosines to candidates outside the own group
    excl = (lab[:, None] >= 0) & (group[None, :] == lab[:, None])
    excl[np.arange(m), top] = True
    sims = np.where(excl, -np.inf, S_all)
    kk = min(int(support_k), n - 1)
    if kk >= 1:
        best = -np.partition(-sims, kk - 1, axis=1)[:, :kk]
        ok = np.isfinite(best).all(axis=1)
        sup = np.where(ok, np.where(ok[:, None], best, 0.0).mean(axis=1), np.nan)
        support[top] = sup
        targeting[top] = cosine[top] - sup
    t_out = targeting[top][lab < 0]
    t_out = t_out[np.isfinite(t_out)]
    ref = float(t_out.max()) if t_out.size else 0.0
    for g in np.unique(lab[lab >= 0]).tolist():
        members = top[lab == g]
        t = targeting[members]
        suspicious = bool(np.isfinite(t).any()) and float(np.nanmax(t)) - ref >= target_margin
        c_max = float(cosine[members].max())
        for i in members.tolist():
            flags[i].append("tight_group")
            if suspicious and cosine[i] >= c_max - echo_delta:
                flags[i].append("query_targeted")
    asking = False
    if use_text:
        asking = memo.asking
        terms = memo.terms
        if echo and asking:
            echoers = [i for i in top.tolist() if memo.restates(i)]
            for i in echoers:
                alone = len(echoers) == 1 and group[i] < 0
                if alone and (lone_echo == "info" or lone_echo == "off_topic"
                              and not textsignals.speaks_of_something_else(terms, memo.tokens(i),
                                                                            max_share=lone_echo_rest)):
                    flags[i].append("lone_echo")
                else:
                    flags[i].append("query_echo")
        if text_twin_threshold is not None:
            for a, b in zip(*np.nonzero(np.triu(S >= text_twin_threshold, 1)), strict=True):
                ia, ib = int(top[a]), int(top[b])
                if sib[a, b]:
                    for me in (ia, ib):
                        if "template_sibling" not in flags[me]:
                            flags[me].append("template_sibling")
                    continue
                lean = memo.edit_lean(ia, ib, max_change=edit_max, max_tokens=edit_max_tokens,
                                      shared=twin_lean == "shared")
                if lean is None:
                    continue
                for me, mine in ((ia, "a"), (ib, "b")):
                    f = "twin_conflict" if lean == mine else "conflicting_twin"
                    if f not in flags[me]:
                        flags[me].append(f)
    if use_text and group_defer:
        for g in np.unique(lab[lab >= 0]).tolist():
            members = top[lab == g].tolist()
            text_hit = [("query_echo" in flags[i]) or ("twin_conflict" in flags[i]) for i in members]
            if any(text_hit):  # explained by its text hits: the other members are cleared
                cleared = [i for i, hit in zip(members, text_hit, strict=True) if not hit]
            elif copies_once and max(_independent(members, memo, edit_max, edit_max_tokens)) < group_min:
                # a page and its edition are one text: neither group_min independent texts nor a
                # campaign of group_min variants of one text
                cleared = members
            elif asking and not untexted_questions:  # a question's group: the echo rule judged it
                cleared = members
            elif untexted_group_margin is not None:
                t = targeting[members]
                weak = not (np.isfinite(t).any() and float(np.nanmax(t)) - ref >= untexted_group_margin)
                cleared = members if weak else []
            else:
                cleared = []
            for i in cleared:
                if "query_targeted" in flags[i]:
                    flags[i].remove("query_targeted")
    if use_twins and not use_text:
        ctop = cosine[top]
        twin = (S >= twin_threshold) & ((ctop[:, None] - ctop[None, :]) >= twin_margin)
        np.fill_diagonal(twin, False)
        for a in np.flatnonzero(twin.any(axis=1)).tolist():
            flags[int(top[a])].append("twin_conflict")
    for i in top.tolist():
        decisive[i] = any(f in DECISIVE_FLAGS for f in flags[i])
    return ScreenResult(flags, decisive, group, support, targeting)
