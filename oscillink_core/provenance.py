"""Provenance: decisions from where the candidates come from (pure functions).

Screening (`oscillink_core.screening`) reads the shape of the candidate set and, with texts, the
passages' wording; an attacker who has read it can write around both. Where a passage came from
is evidence the attacker does not control by rewording: a planted passage has to be published
somewhere, and a store that ingested its sources knows which of them it has relied on before.

Contract: each candidate may carry a *source* (a string the store keeps with the passage: a
domain, a collection, a feed; ``None`` when unknown) and the caller may declare a set of
*trusted sources*. `judge` then flags, among the ``pool`` best-ranked candidates:

* ``"trusted_source"`` (information): the candidate's source is declared trusted;
* ``"untrusted_source"`` (*decisive*): the candidate's source is known and not trusted, and the
  pool holds at least ``min_trusted`` candidates from trusted sources. Under the screen action
  ``"demote"`` such candidates go behind the trusted ones and the candidates of unknown source:
  the context is filled from trusted sources first, the rest follow in their order;
* ``"untrusted_no_alternative"`` (information): the same, in a pool without ``min_trusted``
  trusted candidates, which is left as it is (provenance then has nothing to prefer).

A candidate of unknown source (``None``) is never flagged: missing provenance is the normal case
of a store that does not record it, and guessing would punish it. Whether the pool's trusted
candidates agree with each other is not judged here; that is the screening's and the reader's
work. The sources and the trusted set are bound by the receipt (``inputs.sources_sha256``,
``inputs.trusted_sources_sha256`` and the state signature), so an auditor sees which policy chose
the context.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ProvenanceResult", "judge", "PROVENANCE_DECISIVE"]

PROVENANCE_DECISIVE = ("untrusted_source",)


@dataclass(frozen=True)
class ProvenanceResult:
    """Flags per candidate (lists of str) and the decisive mask (N,) bool."""

    flags: list[list[str]]
    decisive: np.ndarray


def judge(sources: Sequence[str | None], trusted: Iterable[str], score: np.ndarray, *, pool: int = 20,
          min_trusted: int = 1) -> ProvenanceResult:
    """Flag the ``pool`` best-scored candidates by the trust of their source (see the module docstring).

    Parameters
    ----------
    sources : (N,) the source of each candidate, or None where unknown.
    trusted : the declared trusted sources (compared exactly).
    score : (N,) the ranking score; the pool is its top ``pool`` (ties: lower index first).
    pool, min_trusted : pool size, and how many trusted candidates the pool needs before the
        untrusted ones yield to them.

    Examples
    --------
    >>> import numpy as np
    >>> r = judge(["wiki", "blog", None, "wiki"], {"wiki"}, np.array([0.9, 0.95, 0.8, 0.7]))
    >>> r.flags
    [['trusted_source'], ['untrusted_source'], [], ['trusted_source']]
    >>> r.decisive.tolist()
    [False, True, False, False]
    """
    n = len(sources)
    trusted = frozenset(trusted)
    flags: list[list[str]] = [[] for _ in range(n)]
    decisive = np.zeros(n, dtype=bool)
    m = min(int(pool), n)
    if m < 1 or not trusted:
        return ProvenanceResult(flags, decisive)
    top = np.lexsort((np.arange(n), -np.asarray(score, dtype=np.float64)))[:m].tolist()
    is_trusted = [sources[i] is not None and sources[i] in trusted for i in top]
    enough = sum(is_trusted) >= max(int(min_trusted), 1)
    for i, ok in zip(top, is_trusted, strict=True):
        if ok:
            flags[i].append("trusted_source")
        elif sources[i] is not None:
            flags[i].append("untrusted_source" if enough else "untrusted_no_alternative")
            decisive[i] = enough
    return ProvenanceResult(flags, decisive)
