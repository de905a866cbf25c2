"""`rerank`: the one call adapters use, and its result objects."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .lattice import Oscillink
from .params import resolve_params

__all__ = ["rerank", "RerankResult", "RankedItem"]


@dataclass(frozen=True)
class RankedItem:
    """One ranked candidate. ``index`` is its position in the input; scores are plain floats.
    ``flags`` are the screening flags (see `oscillink_core.screening`), ``action`` is "kept"
    (or "demoted" when a demoted candidate still made the top k because too few others remained)."""

    id: Any
    index: int
    rank: int
    score: float
    align: float
    cosine: float
    gate: float
    degree: int
    tension: float
    near_duplicate_of: Any = None
    flags: tuple[str, ...] = ()
    action: str = "kept"

    def to_dict(self) -> dict:
        return {**self.__dict__, "flags": list(self.flags)}


@dataclass(frozen=True)
class RerankResult:
    """Ranked items (best first), the receipt and timings. Iterable, indexable, sized.
    ``screened`` lists the candidates screening kept out of the items (``{"id", "index", "flags",
    "action"}``, action "demoted" or "dropped"), also recorded in ``receipt["screen"]``."""

    items: tuple[RankedItem, ...]
    receipt: dict
    timings: dict = field(default_factory=dict)
    screened: tuple[dict, ...] = ()

    def __iter__(self) -> Iterator[RankedItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def top_k(self, k: int) -> list[RankedItem]:
        return list(self.items[:k])

    @property
    def ids(self) -> list:
        return [it.id for it in self.items]

    @property
    def indices(self) -> list[int]:
        return [it.index for it in self.items]

    @property
    def scores(self) -> list[float]:
        return [it.score for it in self.items]

    def to_dict(self) -> dict:
        return {"items": [it.to_dict() for it in self.items], "receipt": self.receipt, "timings": self.timings,
                "screened": [dict(s) for s in self.screened]}


def rerank(query: Any, candidates: Any, *, k: int, ids: Sequence[Any] | None = None, params: Any = None,
           gates: Any = None, sign_key: bytes | str | None = None, light_receipt: bool = False,
           backend: str | None = None, texts: Sequence[str] | None = None,
           query_text: str | None = None, sources: Sequence[str | None] | None = None,
           trusted_sources: Any = None) -> RerankResult:
    """Rerank ``candidates`` (N, D) against ``query`` (D,) and return the top ``k``.

    ``params`` takes anything `resolve_params` does (None, dict, `LatticeParams`, profile dict or
    path). ``backend`` is "auto", "numba" or "numpy" (see `Oscillink`). ``kneighbors`` is
    clipped to N - 1 here, so any N >= 1 works. ``k`` > N returns N
    items. ``texts`` (one per candidate) and ``query_text`` (the question) turn on the text
    screening signals ("query_echo", the text form of "twin_conflict"; see
    `oscillink_core.screening`); the receipt then binds both (``inputs.texts_sha256``,
    ``inputs.query_text_sha256`` and the state signature). ``sources`` (one per candidate: where
    it came from, None where unknown) and ``trusted_sources`` (the sources you trust) let a
    candidate from another known source lose its place when other such sources echo it and
    trusted ones do not (flag ``"new_source_echo"``; see `oscillink_core.corroboration`; with
    ``params={"provenance": "trusted_first"}`` every such candidate goes behind the trusted
    ones, flag ``"untrusted_source"``, see `oscillink_core.provenance`); the receipt binds both.
    The function keeps no shared state: concurrent calls from many threads are safe.

    Examples
    --------
    >>> import numpy as np
    >>> from oscillink_core import rerank
    >>> rng = np.random.default_rng(0)
    >>> Y = rng.normal(size=(30, 8)); q = Y[3] + 0.1 * rng.normal(size=8)
    >>> res = rerank(q, Y, k=3)
    >>> res[0].index
    3
    >>> sorted(res.receipt)[:3]
    ['bundle', 'energy', 'format']
    """
    t0 = time.perf_counter()
    p = resolve_params(params)
    lat = Oscillink(candidates, ids=ids, params=p, backend=backend, texts=texts, sources=sources,
                    trusted_sources=trusted_sources, _transient=True)  # dropped on return
    lat.set_query(query, gates=gates, text=query_text)
    info = lat.settle()
    bundle = lat.bundle(k)
    receipt = lat.receipt(bundle=bundle, light=light_receipt, sign_key=sign_key)
    total = 1e3 * (time.perf_counter() - t0)
    items = tuple(RankedItem(**{**{key: b[key] for key in RankedItem.__dataclass_fields__}, "flags": tuple(b["flags"])})
                  for b in bundle)
    pos = {i: j for j, i in enumerate(lat.ids)}
    screened = tuple({**s, "index": pos[s["id"]]} for s in receipt["screen"]["screened"])
    timings = {**receipt["timings_ms"], "total_ms": total, "cg_iterations": info["iterations"]}
    return RerankResult(items=items, receipt=receipt, timings=timings, screened=screened)
