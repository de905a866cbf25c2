"""Corroboration: a new source that is echoed only by other new sources loses (pure functions).

`oscillink_core.provenance` puts every candidate of a known, untrusted source behind the trusted
ones ("trusted first"). That is safe against plants, but a store always holds genuine pages from
sources it has not declared yet, and those pages then lose their place to weaker trusted ones.
This module asks a narrower question: *who agrees with this passage?* A campaign that fills the
context says its falsehood many times, from sources the store has not relied on before
(publishing on a trusted source is the expensive part); a genuine passage from a new source is
often agreed with by trusted pages, or by few pages at all. A small campaign is not a crowd and
passes (measured: `benchmarks/quality/provenance_select.py`).

Contract: each candidate may carry a *source* (``None`` when unknown); the caller declares the
*trusted sources*; a known source outside that set is *new*. Among the ``pool`` best-scored
candidates, a candidate's *agreeing neighbours* are the other pool candidates at cosine
>= ``threshold`` to it. `judge` flags:

* ``"trusted_source"`` (information): the candidate's source is declared trusted;
* ``"new_source_echo"`` (*decisive*): the pool holds a candidate from a trusted source, the
  candidate's source is new, at least ``min_echo`` of its agreeing neighbours come from *other*
  new sources, and they outnumber its agreeing neighbours from trusted sources. Copies from the
  candidate's own source are not counted: a source cannot corroborate itself. A pool without a
  trusted candidate is left as it is (there is nothing to prefer);
* ``"new_source"`` (information): any other candidate of a new source; it keeps its place.

Unknown sources are never flagged and never counted as support. The decision reads the
embeddings and the sources only, not the wording: an attacker who rewords the plants keeps them
agreeing (that is what makes them plants), and one who writes fewer than ``min_echo + 1`` of them
is not caught here (the loss is stated in docs/results.md). Where the pattern is normal: a story
syndicated to many sources the store has never seen is judged like a campaign; declaring the
wire's usual outlets trusted, or ``provenance="trusted_first"`` for a strict policy, are the ways
out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .provenance import ProvenanceResult

__all__ = ["judge", "CORROBORATION_DECISIVE"]

CORROBORATION_DECISIVE = ("new_source_echo",)


def judge(sources: Sequence[str | None], trusted: Iterable[str], Yn: np.ndarray, score: np.ndarray, *,
          pool: int = 20, threshold: float = 0.55, min_echo: int = 4) -> ProvenanceResult:
    """Flag the ``pool`` best-scored candidates by who agrees with them (see the module docstring).

    Parameters
    ----------
    sources : (N,) the source of each candidate, or None where unknown.
    trusted : the declared trusted sources (compared exactly).
    Yn : (N, D) unit-norm candidate embeddings.
    score : (N,) the ranking score; the pool is its top ``pool`` (ties: lower index first);
        ``-inf`` marks candidates outside the pool (already screened out).
    pool, threshold, min_echo : pool size; the cosine at which two candidates agree; how many
        agreeing candidates from other new sources make an echo.

    Examples
    --------
    Five new sites say the same thing; the trusted page and a lone new page do not:

    >>> import numpy as np
    >>> Y = np.array([[1, 0]] * 5 + [[0, 1], [0.28, 0.96]], dtype=float)
    >>> src = ["a.net", "b.net", "c.net", "d.net", "e.net", "wiki", "f.net"]
    >>> r = judge(src, {"wiki"}, Y, np.arange(7.0)[::-1].copy())
    >>> r.decisive.tolist()
    [True, True, True, True, True, False, False]
    >>> r.flags[5], r.flags[6]
    (['trusted_source'], ['new_source'])
    """
    n = len(sources)
    trusted = frozenset(trusted)
    flags: list[list[str]] = [[] for _ in range(n)]
    decisive = np.zeros(n, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    m = min(int(pool), int(np.isfinite(score).sum()))
    if m < 1 or not trusted:
        return ProvenanceResult(flags, decisive)
    top = np.lexsort((np.arange(n), -score))[:m]
    src = [sources[i] for i in top.tolist()]
    is_trusted = np.array([s is not None and s in trusted for s in src])
    is_new = np.array([s is not None and s not in trusted for s in src])
    Y = np.asarray(Yn, dtype=np.float64)[top]
    agree = (Y @ Y.T) >= threshold
    np.fill_diagonal(agree, False)
    same = np.array([[a is not None and a == b for b in src] for a in src])
    echo = (agree & ~same & is_new[None, :]).sum(axis=1)
    backing = (agree & is_trusted[None, :]).sum(axis=1)
    hit = is_new & (echo >= max(int(min_echo), 1)) & (echo > backing) & bool(is_trusted.any())
    for p, i in enumerate(top.tolist()):
        if is_trusted[p]:
            flags[i].append("trusted_source")
        elif is_new[p]:
            flags[i].append("new_source_echo" if hit[p] else "new_source")
            decisive[i] = bool(hit[p])
    return ProvenanceResult(flags, decisive)
