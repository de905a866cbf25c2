"""Online updates: feedback events and `OnlineTuner` (bounded, deterministic steps)."""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_embeddings, check_ids, check_query, check_scalar
from .._version import __version__
from ..evaluation import ndcg_at_k, trap_share_at_k
from ..lattice import Oscillink
from ..params import PROFILE_FORMAT, LatticeParams, read_profile_json, resolve_params, save_profile
from ._engine import _blas_threads, _check_blas_threads, _dedup_acts
from .queries import _check_id

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
        k = check_scalar(k, "k", int, min_val=1)
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
    ranked = [event.ids[i] for i in order]
    objective = ndcg_at_k(ranked, event.kept, k) - trap_weight * trap_share_at_k(ranked, event.rejected, k)
    return {"kept_in_top_k": float(np.mean(rk < k)),
            "objective": objective,
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
        check_scalar(learning_rate, "learning_rate", float, min_val=0, max_val=1, include_boundaries="right")
        if method not in ("coordinate", "spsa"):
            raise ValueError(f"method must be 'coordinate' or 'spsa'; got {method!r}")
        check_scalar(seed, "seed", int, min_val=0)
        check_scalar(history_limit, "history_limit", int, min_val=0)
        self.blas_threads = _check_blas_threads(blas_threads)
        scales = tuple(probe_scales)
        if not scales:
            raise ValueError(f"probe_scales must be positive numbers; got {probe_scales!r}")
        for x in scales:
            check_scalar(x, "probe_scales", float, min_val=0, include_boundaries="neither")
        self.probe_scales = tuple(float(x) for x in scales)
        self.trap_weight = check_scalar(trap_weight, "trap_weight", float, min_val=0)
        check_scalar(momentum, "momentum", float, min_val=0, max_val=1, include_boundaries="left")
        check_scalar(agreement, "agreement", float, min_val=0, max_val=1)
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
                st = check_scalar(max_step[name], f"max_step[{name!r}]", float, min_val=0,
                                  include_boundaries="neither")
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
