"""Offline tuning: the default grid, folds, coordinate search and `tune` / `TuneResult`."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_scalar
from .._version import __version__
from ..evaluation import paired_bootstrap_ci
from ..params import _FIELDS, LatticeParams, resolve_params, save_profile
from ._engine import _JOINT, _blas_threads, _check_blas_threads, _effective_key, _Engine, _Objective, _parse_metric
from .queries import LabelledQuery

#: Values searched by :func:`tune` when ``grid`` is None. Groups searched jointly are listed in
#: ``_JOINT`` (``gating`` with ``gate_gamma``; ``dedup_threshold`` with ``dup_keep`` and
#: ``dup_action``, which act only together). ``coh_weight`` blends the settled alignment with the
#: cosine: -1 ranks by cosine alone, 0 by the settled alignment, > 0 extrapolates the lattice's
#: shift; the positive side is stepped finely because the alignment's spread over real candidates
#: is much narrower than the cosine's, so small positive values already reorder a lot (with the
#: old defaults lamC=0.5, lamQ=4, first 600 test queries of the benchmark's HaluEval trap set:
#: ``coh_weight=0.1`` took nDCG@10 from 0.603 to 0.0007). Current measurements per knob:
#: ``benchmarks/results/quality_sweep.md``.
DEFAULT_GRID: dict[str, tuple] = {
    "lamC": (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0),
    "lamQ": (0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    "kneighbors": (3, 4, 6, 8, 12),
    "gating": ("uniform", "diffusion"),
    "gate_gamma": (0.05, 0.15, 0.5),
    "coh_weight": (-1.0, -0.75, -0.5, 0.0, 0.05, 0.2, 1.0),
    "mmr_lambda": (1.0, 0.95, 0.9, 0.7, 0.5),
    "dedup_threshold": (None, 0.98, 0.95, 0.9),
    "dup_keep": ("support", "consensus", "best"),
    "dup_action": ("reorder", "demote"),
}


def assign_folds(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..folds-1) of each of ``n`` queries: a seeded random permutation dealt
    round-robin, so fold sizes differ by at most one.

    Examples
    --------
    >>> assign_folds(7, 3, seed=0).tolist()
    [2, 0, 0, 2, 1, 1, 0]
    >>> np.bincount(assign_folds(7, 3, seed=1)).tolist()
    [3, 2, 2]
    """
    folds = check_scalar(folds, "folds", int, min_val=2)
    if n < folds:
        raise ValueError(f"need at least folds={folds} labelled queries for {folds}-fold cross-validation; got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[perm] = np.arange(n) % folds
    return out


def _check_grid(grid: Mapping[str, Sequence] | None, base: LatticeParams) -> dict[str, tuple]:
    if grid is None:
        grid = DEFAULT_GRID
    if not isinstance(grid, Mapping):
        raise ValueError(f"grid must be a dict {{parameter: [values]}}; got {type(grid).__name__}")
    unknown = sorted(set(grid) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown grid key(s) {unknown}; every key must be a LatticeParams field: {sorted(_FIELDS)}")
    out = {}
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ValueError(f"grid[{name!r}] must be a list of values; got {values!r}")
        vals = []
        for v in values:
            try:  # validated and normalised (e.g. numpy scalars become float / int)
                vals.append(getattr(base.replace(**{name: v}), name))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"grid[{name!r}] holds an invalid value {v!r}: {exc}") from None
        if not vals:
            raise ValueError(f"grid[{name!r}] is empty")
        out[name] = tuple(dict.fromkeys(vals))  # drop repeats, keep order
    return out


def _groups(grid: Mapping[str, tuple]) -> list[tuple[str, ...]]:
    groups, seen = [], set()
    for name in grid:
        if name in seen:
            continue
        joint = next((g for g in _JOINT if name in g), (name,))
        g = tuple(x for x in joint if x in grid)
        seen.update(g)
        groups.append(g)
    return groups


def _candidates(cur: LatticeParams, group: tuple[str, ...], grid: Mapping[str, tuple]) -> list[LatticeParams]:
    out, keys = [], set()
    for combo in itertools.product(*(grid[g] for g in group)):
        p = cur.replace(**dict(zip(group, combo, strict=True)))
        k = _effective_key(p)
        if k not in keys:
            keys.add(k)
            out.append(p)
    return out


def _search(obj: _Objective, idx: np.ndarray, base: LatticeParams, grid: Mapping[str, tuple], search: str,
            max_rounds: int) -> LatticeParams:
    """Best setting on the queries ``idx``; a move needs a strictly higher mean objective, so
    ties keep the current (earlier) setting."""
    cur, cur_val = base, obj.mean(base, idx)
    if search == "grid":
        names = list(grid)
        for combo in itertools.product(*(grid[n] for n in names)):
            p = base.replace(**dict(zip(names, combo, strict=True)))
            v = obj.mean(p, idx)
            if v > cur_val:
                cur, cur_val = p, v
        return cur
    groups = _groups(grid)
    for _ in range(max_rounds):
        changed = False
        for group in groups:
            for p in _candidates(cur, group, grid):
                v = obj.mean(p, idx)
                if v > cur_val:
                    cur, cur_val, changed = p, v, True
        if not changed:
            break
    return cur


def _diff(p: LatticeParams, base: LatticeParams) -> dict[str, Any]:
    a, b = p.to_dict(), base.to_dict()
    return {k: a[k] for k in a if a[k] != b[k]}


@dataclass
class TuneResult:
    """Outcome of :func:`tune`.

    Attributes
    ----------
    params : the chosen `LatticeParams` (``searched`` unless the fallback applied).
    base : the starting point and baseline (defaults unless ``base=`` was given).
    searched : the search's winner on all queries.
    fell_back : True when ``base`` was kept because cross-validation did not show the gain that
        ``adopt`` asks for.
    cv : held-out scores per fold, for ``"baseline"`` (``base`` on each held-out fold),
        ``"tuned"`` (the setting searched on the other folds, scored on the held-out fold: the
        honest estimate of what tuning gives) and ``"chosen"`` (``params`` scored on each fold;
        in-sample, since ``params`` was searched on all queries). Each entry holds
        ``objective``, ``metric`` and ``trap_share`` lists (one value per fold) and ``*_mean``
        values (mean over all queries). ``cv["gain"][m]`` is the paired bootstrap 95% interval
        ``{"mean", "low", "high"}`` of tuned minus baseline over the held-out queries
        (`evaluation.paired_bootstrap_ci`, 2000 resamples, seeded with ``seed``).
    fold_params : per fold, the searched setting's differences from ``base``.
    trials : table of every distinct setting scored: its differences from ``base`` and its mean
        ``objective``, ``metric`` and ``trap_share`` over all queries, in the order tried.
    settings : metric, k, trap_weight, folds, seed, search, max_rounds, n_queries.
    n_solves : lattice solves run (queries x distinct settled states).
    elapsed_s : wall time (not written to the profile, so profiles are reproducible).
    """

    params: LatticeParams
    base: LatticeParams
    searched: LatticeParams
    fell_back: bool
    cv: dict[str, dict[str, Any]]
    fold_params: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    settings: dict[str, Any]
    n_solves: int = 0
    elapsed_s: float = 0.0

    @property
    def changed(self) -> dict[str, Any]:
        """Fields of ``params`` that differ from ``base``."""
        return _diff(self.params, self.base)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON data: ``params``, ``searched``, the profile metadata, the
        trials table, ``n_solves`` and ``elapsed_s`` (for benchmark reports)."""
        return json.loads(json.dumps({"params": self.params.to_dict(), "searched": self.searched.to_dict(),
                                      **self.metadata(), "trials": self.trials, "n_solves": self.n_solves,
                                      "elapsed_s": self.elapsed_s}))

    def metadata(self) -> dict[str, Any]:
        """The profile's ``meta`` block (JSON-serialisable, deterministic)."""
        return {
            "tool": "oscillink_core.tuning.tune",
            "package_version": __version__,
            "objective": f"mean {self.settings['metric']} - {self.settings['trap_weight']} * trap_share@"
                         f"{self.settings['k']}",
            **self.settings,
            "changed": self.changed,
            "base": self.base.to_dict(),
            "fell_back_to_base": self.fell_back,
            "cv": self.cv,
            "fold_params": self.fold_params,
            "n_settings_tried": len(self.trials),
        }

    def to_profile(self) -> dict[str, Any]:
        """Profile dict ``{"format": "oscillink-core/profile", "version", "params", "meta"}``,
        accepted by ``params=`` everywhere."""
        return json.loads(json.dumps(self.params.to_profile(**self.metadata())))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the profile JSON (atomically) and return its path."""
        return save_profile(self.params, path, **json.loads(json.dumps(self.metadata())))

    def summary(self) -> str:
        """A few lines for humans: scores of baseline vs tuned and what changed."""
        s, cv = self.settings, self.cv
        lines = [f"tune: {s['n_queries']} queries, {s['folds']}-fold CV, objective = {s['metric']} - "
                 f"{s['trap_weight']} * trap_share@{s['k']}",
                 *(f"  {name:8s} held-out objective {cv[name]['objective_mean']:.4f} ({s['metric']} "
                   f"{cv[name]['metric_mean']:.4f}, trap share {cv[name]['trap_share_mean']:.4f})"
                   for name in ("baseline", "tuned")),
                 "  gain in held-out objective {mean:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}]".format(
                     **cv["gain"]["objective"]),
                 f"  chosen: {self.changed or 'the baseline'}"
                 + (f" (kept: the cross-validated gain does not meet adopt={s['adopt']!r};"
                    f" the search's best was {_diff(self.searched, self.base)})" if self.fell_back else "")]
        return "\n".join(lines)


def tune(queries: Sequence[LabelledQuery], *, grid: Mapping[str, Sequence] | None = None, folds: int = 5,
         metric: str = "ndcg@10", trap_weight: float = 1.0, seed: int = 0, base: Any = None, k: int = 10,
         profile_path: str | os.PathLike | None = None, search: str = "coordinate", max_rounds: int = 3,
         adopt: str = "ci", blas_threads: int | None = 1) -> TuneResult:
    """Fit lattice parameters on labelled queries by K-fold cross-validation.

    Parameters
    ----------
    queries : sequence of :class:`LabelledQuery` (see :func:`queries_from_qrels`,
        :func:`queries_from_rows`, :func:`queries_from_jsonl`).
    grid : ``{field: [values]}`` over `LatticeParams` fields (default :data:`DEFAULT_GRID`:
        lamC, lamQ, kneighbors, gating, gate_gamma, coh_weight, mmr_lambda, dedup_threshold,
        dup_keep, dup_action). Unknown fields, empty lists and invalid values raise ValueError.
    folds : number of cross-validation folds (>= 2, <= number of queries).
    metric : ``"ndcg@C"``, ``"mrr@C"``, ``"recall@C"`` or ``"p@1"``.
    trap_weight : weight of the trap-share penalty (>= 0); objective per query is
        ``metric - trap_weight * trap_share@k``.
    seed : seeds the fold assignment (:func:`assign_folds`); nothing else is random.
    base : starting point and baseline: anything ``params=`` accepts (default `LatticeParams()`).
    k : bundle size scored by the trap share (the retrieval depth is ``max(k, C)``).
    profile_path : if given, the chosen profile is written there.
    search : ``"coordinate"`` (default): coordinate ascent over groups of fields (``gating``
        with ``gate_gamma``, ``dedup_threshold`` with ``dup_keep`` and ``dup_action`` searched
        jointly), starting from ``base``, up to ``max_rounds`` rounds, stopping early when a
        round changes nothing; ``"grid"``: the full Cartesian product (only for small grids).
    max_rounds : coordinate-ascent rounds.
    adopt : when the searched setting replaces ``base``, judged on the cross-validated gain
        (tuned minus baseline held-out objective, ``cv["gain"]["objective"]``): ``"ci"``
        (default) only if the lower end of its paired bootstrap 95% interval is above 0;
        ``"mean"`` if its mean is above 0; ``"always"``. Otherwise ``base`` is returned
        (``fell_back=True``): a profile that claims to beat the defaults carries the evidence.
    blas_threads : BLAS threads while tuning (via threadpoolctl, restored afterwards; None
        leaves them alone). Default 1: on N ~ 100 candidates extra threads only cost time
        (measured on SciFact, 2 busy cores: 16 ms per lattice solve with the default threads,
        1.5 ms with one). Results do not depend on it.

    Returns
    -------
    TuneResult

    Notes
    -----
    Every setting is scored once on every query and cached, so all folds share the work;
    settings that differ only in ranking fields reuse the settled states. Per fold, the search
    runs on the other folds and its winner is scored on the held-out fold (``cv["tuned"]``);
    the final ``searched`` setting is the search's winner on all queries.

    Examples
    --------
    A trap passage copied four times floods the top 3. Starting from cosine order (``lamC=0``)
    with the near-duplicate rule off, the search finds that demoting the copies fixes it.
    ``dedup_threshold`` and ``dup_action`` are searched jointly: with ``dup_keep="best"``,
    switching on either one alone changes nothing.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> qs = []
    >>> for i in range(12):
    ...     q = rng.normal(size=16); Y = q + rng.normal(size=(20, 16))
    ...     Y[[0, 4, 5]] = q + 0.5 * rng.normal(size=(3, 16))   # 0 is a trap, 4 and 5 relevant
    ...     Y[1:4] = Y[0] + 0.01 * rng.normal(size=(3, 16))      # 1-3 copy the trap
    ...     qs.append(LabelledQuery(q, Y, relevance={4: 1, 5: 1}, traps={0, 1, 2, 3}))
    >>> start = {"lamC": 0.0, "coh_weight": 0.0, "dedup_threshold": None, "dup_keep": "best", "dup_action": "reorder",
    ...          "screen": "off"}
    >>> grid = {"dedup_threshold": [None, 0.95], "dup_action": ["reorder", "demote"]}
    >>> res = tune(qs, grid=grid, base=start, folds=3, k=3)
    >>> res.changed
    {'dedup_threshold': 0.95, 'dup_action': 'demote'}
    >>> round(res.cv["baseline"]["trap_share_mean"], 2), round(res.cv["tuned"]["trap_share_mean"], 2)
    (0.53, 0.28)
    """
    t0 = time.perf_counter()
    queries = list(queries) if not isinstance(queries, LabelledQuery) else [queries]
    if not queries:
        raise ValueError("tune needs at least one labelled query; got an empty sequence")
    for i, q in enumerate(queries):
        if not isinstance(q, LabelledQuery):
            raise ValueError(f"queries[{i}] is a {type(q).__name__}, not a LabelledQuery "
                             "(build them with queries_from_qrels / queries_from_rows)")
    check_scalar(k, "k", int, min_val=1)
    check_scalar(trap_weight, "trap_weight", float, min_val=0)
    if adopt not in ("ci", "mean", "always"):
        raise ValueError(f"adopt must be 'ci', 'mean' or 'always'; got {adopt!r}")
    if search not in ("coordinate", "grid"):
        raise ValueError(f"search must be 'coordinate' or 'grid'; got {search!r}")
    check_scalar(max_rounds, "max_rounds", int, min_val=1)
    metric_name = _parse_metric(metric)[0]
    _check_blas_threads(blas_threads)
    base_p = resolve_params(base)
    g = _check_grid(grid, base_p)
    fold_of = assign_folds(len(queries), folds, seed)

    with _blas_threads(blas_threads):
        result = _tune(queries, g, folds, fold_of, metric_name, int(k), float(trap_weight), int(seed), base_p,
                       search, max_rounds, adopt)
    result.elapsed_s = time.perf_counter() - t0
    if profile_path is not None:
        result.save(profile_path)
    return result


def _tune(queries: list[LabelledQuery], g: dict[str, tuple], folds: int, fold_of: np.ndarray, metric_name: str,
          k: int, trap_weight: float, seed: int, base_p: LatticeParams, search: str, max_rounds: int,
          adopt: str) -> TuneResult:
    obj = _Objective(_Engine(queries), metric_name, k, trap_weight)
    cv: dict[str, dict[str, list]] = {name: {"objective": [], "metric": [], "trap_share": []}
                                      for name in ("baseline", "tuned", "chosen")}
    fold_params = []
    n = len(queries)
    pooled = {name: {m: np.zeros(n) for m in ("objective", "metric", "trap_share")} for name in ("baseline", "tuned")}
    for f in range(folds):
        train, test = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
        best = _search(obj, train, base_p, g, search, max_rounds)
        fold_params.append(_diff(best, base_p))
        for name, p in (("baseline", base_p), ("tuned", best)):
            pq = obj.per_query(p)
            for m in pooled[name]:
                cv[name][m].append(float(pq[m][test].mean()))
                pooled[name][m][test] = pq[m][test]
    everything = np.arange(n)
    searched = _search(obj, everything, base_p, g, search, max_rounds)
    gain = {}
    for m in ("objective", "metric", "trap_share"):
        ci = paired_bootstrap_ci(pooled["baseline"][m], pooled["tuned"][m], n_boot=2000, seed=seed)
        gain[m] = {"mean": ci.mean, "low": ci.low, "high": ci.high}
    if adopt == "ci":
        fell_back = not gain["objective"]["low"] > 0
    elif adopt == "mean":
        fell_back = not gain["objective"]["mean"] > 0
    else:
        fell_back = False
    chosen = base_p if fell_back else searched
    pq = obj.per_query(chosen)
    pooled["chosen"] = {m: pq[m] for m in ("objective", "metric", "trap_share")}
    for f in range(folds):
        for m in pooled["chosen"]:
            cv["chosen"][m].append(float(pq[m][fold_of == f].mean()))
    cv_out: dict[str, dict[str, Any]] = {}
    for name, block in cv.items():
        cv_out[name] = {**{m: [float(x) for x in vals] for m, vals in block.items()},
                        **{f"{m}_mean": float(pooled[name][m].mean()) for m in block}}
    cv_out["gain"] = gain
    trials = []
    for t in obj.trials:
        s = obj.summary(t["params"], everything)
        trials.append({"params": _diff(t["params"], base_p), **s})
    settings = {"metric": metric_name, "k": int(k), "trap_weight": float(trap_weight), "folds": int(folds),
                "seed": int(seed), "search": search, "max_rounds": int(max_rounds), "adopt": adopt,
                "n_queries": len(queries),
                "grid": {name: list(vals) for name, vals in g.items()}}
    return TuneResult(params=chosen, base=base_p, searched=searched, fell_back=fell_back, cv=cv_out,
                      fold_params=fold_params, trials=trials, settings=settings, n_solves=obj.engine.n_solves)
