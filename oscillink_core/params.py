"""Lattice parameters and tuning profiles.

`LatticeParams` is a frozen dataclass holding every knob that changes a result.
A *profile* is the JSON form written by :func:`oscillink_core.tune` and
accepted everywhere ``params=`` is: a `LatticeParams`, a plain dict of
parameter overrides, a profile dict (``{"format": "oscillink-core/profile", "params": {...}}``)
or the path of a profile JSON file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._validation import check_scalar

__all__ = ["LatticeParams", "resolve_params", "PROFILE_FORMAT", "load_profile", "save_profile", "read_profile_json"]

PROFILE_FORMAT = "oscillink-core/profile"

_GATINGS = ("uniform", "diffusion")
_KNN = ("auto", "exact", "faiss")
_SCREENS = ("off", "flag", "demote", "drop")
_PROVENANCE = ("corroboration", "trusted_first")


@dataclass(frozen=True)
class LatticeParams:
    """Every parameter that determines a lattice result.

    Energy
    ------
    normalize : scale the rows of Y and psi to unit norm before anything else (cosine
        semantics; with it, lamC = 0 and screen = "off" reproduce the cosine order exactly).
    kneighbors : neighbours per node before the mutual filter (graph degree <= kneighbors).
    lamG : anchor weight, pulls U toward the embeddings Y (must be > 0: keeps M SPD).
    lamC : coherence weight on tr(U^T L U), L the (degree-regularised) normalised Laplacian.
    lamQ : query weight on tr((U - 1 psi^T)^T B (U - 1 psi^T)).
    lamP : chain-prior weight (used only when a chain is added).
    edge_floor : edge weight is max(0, (cos - edge_floor) / (1 - edge_floor)); 0 keeps raw cosine.
    degree_reg : tau in L = (D + tau)^-1/2 (D - W) (D + tau)^-1/2; 0 gives L_sym exactly.
        tau > 0 weakens the coupling of nodes whose edges are all weak.

    Gates
    -----
    gating : "uniform" (B = I) or "diffusion" (B from compute_diffusion_gates).
    gate_gamma, gate_beta : screening and sharpness of the diffusion gates.

    Ranking
    -------
    coh_weight : score = align + coh_weight * (align - cosine), where align is the cosine of
        the settled U*_i with psi and cosine that of Y_i; 0 ranks by settled alignment alone,
        -1 by cosine alone. Values > 0 amplify the shift, which on real embeddings is dominated
        by the query pull every node gets (it correlates about -0.9 with cosine), so they invert
        the ranking; the quality benchmark measured none > 0 that helps.
    coh_scope : "local" (default): with screening on, the lattice reshapes the whole order only
        when the cosine-ordered pool holds a flag that is evidence of structure (a tight group, a
        query-targeted or query-echoing candidate, a twin conflict). A near-duplicate pair inside
        the pool without such a flag: with texts and the question (text twin rule on,
        dup_action "reorder") the text rules found no conflicting edit between the copies, and
        the cosine order stands; without texts (or under dup_action "demote") only the members of
        near-duplicate groups move, among the places they held in the cosine order, and every
        other candidate keeps its cosine place. Otherwise the result is the cosine order.
        "evidence": the earlier rule, where a near-duplicate pair alone lets the lattice reshape
        the whole order (on train it changed about three times as many clean contexts, with no
        gain). "always": the lattice ranks every query. On clean data the lattice's reordering
        was a coin toss with a slight loss (quality benchmark), so without evidence the first
        stage's order stands.
    mmr_lambda : MMR trade-off in (0, 1]; 1 disables diversification.
    dedup_threshold : cosine at or above which two candidates count as near-duplicates;
        None disables the near-duplicate rule.
    dup_keep : how the members of a near-duplicate group are ordered: "support" (mean
        similarity to the kNN neighbours outside the group: the member the rest of the
        evidence agrees with most comes first), "consensus" (largest shift align - cosine of the
        settled state; in practice this nearly always means the member with the lowest cosine)
        or "best" (score).
    dup_action : "reorder" (members exchange places inside the group; nothing is dropped) or
        "demote" (all but the first member go behind every other candidate).

    Screening (decisions, see `oscillink_core.screening`)
    -----------------------------------------------------
    screen : what happens to a candidate with a decisive flag ("query_targeted",
        "twin_conflict"): "demote" (behind every unflagged candidate; it leaves a short context
        but stays in the ranking), "drop" (removed from the bundle), "flag" (flags recorded,
        nothing moves) or "off" (no screening, no flags).
    screen_pool : how many of the best-ranked candidates are screened.
    screen_group_threshold, screen_group_min : a tight group is a connected set of at least
        ``screen_group_min`` pool candidates at pairwise cosine >= ``screen_group_threshold``.
    screen_group_max : larger groups are a consensus of the candidates, never screened (an
        attack plants a few passages).
    screen_target_margin : a tight group is suspicious when its most targeted member (cosine to
        the query minus support from candidates outside the group) is at least this much more
        targeted than every pool candidate outside the groups.
    screen_echo_delta : in a suspicious group, members whose cosine to the query is within this
        of the group's highest are flagged "query_targeted".
    screen_twin_threshold, screen_twin_margin : of two pool candidates at cosine >=
        ``screen_twin_threshold``, the one more query-similar by >= ``screen_twin_margin`` is
        flagged "twin_conflict"; None disables the twin signal. (Embedding form, used only when
        no texts are given.)
    screen_text : use the candidates' and the question's texts when they are given
        (`rerank(..., texts=, query_text=)`): the "query_echo" flag and the text form of
        "twin_conflict" (see `oscillink_core.textsignals`).
    screen_query_echo : flag "query_echo" (a passage that restates the question).
    screen_text_twin_threshold, screen_edit_max, screen_edit_max_tokens : two pool candidates at
        cosine >= ``screen_text_twin_threshold`` whose texts differ by a substitution whose smaller
        side is at most ``screen_edit_max`` of the shorter text and at most
        ``screen_edit_max_tokens`` tokens (None: no token cap; a counterfactual edit replaces a
        short answer span, while two genuine passages that share a paragraph differ by more): the
        side edited toward the question is flagged "twin_conflict"; a threshold of None disables
        the text twin rule.
    screen_twin_lean : which changed question words make a text twin lean: "shared" (default;
        only those the other passage also holds: a counterfactual copy repeats the question's
        words, while of two genuine pages from one template the one the question names holds a
        word the other lacks) or "any" (every changed question word).
    screen_group_defer : with texts, a tight group in which some member restates the question
        ("query_echo") or is the edited twin ("twin_conflict") is explained by those members; the
        other members are not flagged "query_targeted" (planted passages written from the truth
        put the true passage in their group).
    screen_lone_echo, screen_lone_echo_rest : a restatement that is the only one in the pool and
        outside any tight group is decisive under "off_topic" only when the passage echoes it and
        speaks of something else (outside the restated stretch at least as many tokens as the
        stretch, holding at most ``screen_lone_echo_rest`` of the question's content words); a
        passage that poses the question (an FAQ page) is not decisive for that alone; otherwise it is flagged
        "lone_echo" (information). "decisive": every restatement decides; "info": a lone one never.
        An attack plants several passages; a lone restatement is often the genuine passage the
        question was written from.
    screen_untexted_group_margin : with texts, a tight group in which no member restates the
        question or edits a twin stays suspicious only when its most targeted member is at least
        this much more targeted than the rest (None: ``screen_target_margin``).
    screen_untexted_questions : with texts and a question query, judge such a group by the
        embedding rule too (default True; False leaves a question's groups to the echo rule).
        It catches plants that restate the question in other words (test, robustness.py: planted
        share@5 of synonym plants 0.814 -> 0.324, against 0.726 with False); copies of one text,
        such as a page and its revised edition, count once in the group (`oscillink_core.screening`),
        so editions and FAQ pages keep their place.

    Provenance (with ``sources`` and ``trusted_sources``; decisions under ``screen``)
    ---------------------------------------------------------------------------------
    provenance : "corroboration" (default, `oscillink_core.corroboration`): a candidate from a
        source outside the trusted set loses its place only when other new sources echo it and
        trusted ones do not (flag "new_source_echo"); "trusted_first"
        (`oscillink_core.provenance`): every candidate of a known untrusted source goes behind
        the trusted ones (flag "untrusted_source"), stricter and costlier on clean data.
    provenance_threshold : the cosine at which two candidates agree ("corroboration").
    provenance_min_echo : how many agreeing candidates from other new sources make an echo.

    Solver and graph construction
    -----------------------------
    rtol : relative residual tolerance ||M U - F||_F <= rtol ||F||_F.
    maxiter : conjugate-gradient iteration cap.
    knn : "exact" (blocked products), "faiss" (IVF approximate) or "auto" (exact up to
        exact_max_n nodes).
    exact_max_n : node count above which "auto" switches to FAISS.
    seed : seed for the FAISS quantiser training (no other randomness exists).
    """

    normalize: bool = True
    kneighbors: int = 6
    lamG: float = 1.0
    lamC: float = 2.0
    lamQ: float = 1.0
    lamP: float = 0.0
    edge_floor: float = 0.0
    degree_reg: float = 0.0
    gating: str = "uniform"
    gate_gamma: float = 0.15
    gate_beta: float = 1.0
    coh_weight: float = -0.75
    coh_scope: str = "local"
    mmr_lambda: float = 1.0
    dedup_threshold: float | None = 0.9
    dup_keep: str = "support"
    dup_action: str = "reorder"
    screen: str = "demote"
    screen_pool: int = 20
    screen_group_threshold: float = 0.8
    screen_group_min: int = 3
    screen_group_max: int = 8
    screen_target_margin: float = 0.1
    screen_echo_delta: float = 0.2
    screen_twin_threshold: float | None = None
    screen_twin_margin: float = 0.02
    screen_text: bool = True
    screen_query_echo: bool = True
    screen_text_twin_threshold: float | None = 0.85
    screen_edit_max: float = 0.2
    screen_edit_max_tokens: int | None = 6
    screen_twin_lean: str = "shared"
    screen_group_defer: bool = True
    screen_lone_echo: str = "off_topic"
    screen_lone_echo_rest: float = 0.0
    screen_untexted_group_margin: float | None = 0.3
    screen_untexted_questions: bool = True
    provenance: str = "corroboration"
    provenance_threshold: float = 0.55
    provenance_min_echo: int = 4
    rtol: float = 1e-5
    maxiter: int = 500
    knn: str = "auto"
    exact_max_n: int = 8192
    seed: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        def num(name: str, **bounds: Any) -> float:
            return check_scalar(getattr(self, name), name, float, **bounds)

        if not isinstance(self.normalize, bool):
            raise ValueError(f"normalize must be True or False; got {self.normalize!r}")
        check_scalar(self.kneighbors, "kneighbors", int, min_val=0)
        num("lamG", min_val=0, include_boundaries="neither", hint=" (it keeps the system positive definite)")
        for name in ("lamC", "lamQ", "lamP", "degree_reg", "gate_beta"):
            num(name, min_val=0)
        num("edge_floor", min_val=0, max_val=1, include_boundaries="left")
        num("gate_gamma", min_val=0, include_boundaries="neither")
        num("coh_weight")
        num("mmr_lambda", min_val=0, max_val=1, include_boundaries="right")
        if self.dedup_threshold is not None:
            num("dedup_threshold", min_val=-1, max_val=1, allow_none=True)
        if self.coh_scope not in ("evidence", "local", "always"):
            raise ValueError(f"coh_scope must be 'evidence', 'local' or 'always'; got {self.coh_scope!r}")
        if self.dup_keep not in ("support", "consensus", "best"):
            raise ValueError(f"dup_keep must be 'support', 'consensus' or 'best'; got {self.dup_keep!r}")
        if self.dup_action not in ("reorder", "demote"):
            raise ValueError(f"dup_action must be 'reorder' or 'demote'; got {self.dup_action!r}")
        if self.screen not in _SCREENS:
            raise ValueError(f"screen must be one of {_SCREENS}; got {self.screen!r}")
        for name in ("screen_pool", "screen_group_min", "screen_group_max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                raise ValueError(f"{name} must be an int >= 2; got {v!r}")
        if self.screen_group_max < self.screen_group_min:
            raise ValueError(f"screen_group_max must be >= screen_group_min; got {self.screen_group_max}")
        if not -1 <= num("screen_group_threshold") <= 1:
            raise ValueError(f"screen_group_threshold must lie in [-1, 1]; got {self.screen_group_threshold}")
        for name in ("screen_target_margin", "screen_echo_delta", "screen_twin_margin"):
            if num(name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if self.screen_twin_threshold is not None and not -1 <= num("screen_twin_threshold") <= 1:
            raise ValueError(f"screen_twin_threshold must lie in [-1, 1] or be None; got {self.screen_twin_threshold}")
        for name in ("screen_text", "screen_query_echo", "screen_group_defer", "screen_untexted_questions"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False; got {getattr(self, name)!r}")
        if self.screen_text_twin_threshold is not None and not -1 <= num("screen_text_twin_threshold") <= 1:
            raise ValueError("screen_text_twin_threshold must lie in [-1, 1] or be None; "
                             f"got {self.screen_text_twin_threshold}")
        if not 0 <= num("screen_edit_max") <= 1:
            raise ValueError(f"screen_edit_max must lie in [0, 1]; got {self.screen_edit_max}")
        if self.screen_edit_max_tokens is not None:
            check_scalar(self.screen_edit_max_tokens, "screen_edit_max_tokens", int, min_val=1)
        if self.screen_twin_lean not in ("shared", "any"):
            raise ValueError(f"screen_twin_lean must be 'shared' or 'any'; got {self.screen_twin_lean!r}")
        if self.screen_lone_echo not in ("off_topic", "decisive", "info"):
            raise ValueError("screen_lone_echo must be 'off_topic', 'decisive' or 'info'; "
                             f"got {self.screen_lone_echo!r}")
        if not 0 <= num("screen_lone_echo_rest") <= 1:
            raise ValueError(f"screen_lone_echo_rest must lie in [0, 1]; got {self.screen_lone_echo_rest}")
        if self.screen_untexted_group_margin is not None and num("screen_untexted_group_margin") < 0:
            raise ValueError(f"screen_untexted_group_margin must be >= 0 or None; "
                             f"got {self.screen_untexted_group_margin}")
        if self.provenance not in _PROVENANCE:
            raise ValueError(f"provenance must be one of {_PROVENANCE}; got {self.provenance!r}")
        if not -1 <= num("provenance_threshold") <= 1:
            raise ValueError(f"provenance_threshold must lie in [-1, 1]; got {self.provenance_threshold}")
        check_scalar(self.provenance_min_echo, "provenance_min_echo", int, min_val=1)
        if self.gating not in _GATINGS:
            raise ValueError(f"gating must be one of {_GATINGS}; got {self.gating!r}")
        if self.knn not in _KNN:
            raise ValueError(f"knn must be one of {_KNN}; got {self.knn!r}")
        num("rtol", min_val=0, max_val=1, include_boundaries="neither")
        for name in ("maxiter", "exact_max_n", "seed"):
            check_scalar(getattr(self, name), name, int, min_val=1 if name != "seed" else 0)
        # normalise numeric types so that equal params encode identically
        for name in ("lamG", "lamC", "lamQ", "lamP", "edge_floor", "degree_reg", "gate_gamma",
                     "gate_beta", "coh_weight", "mmr_lambda", "rtol", "screen_group_threshold",
                     "screen_target_margin", "screen_echo_delta", "screen_twin_margin", "screen_edit_max",
                     "screen_lone_echo_rest", "provenance_threshold"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("dedup_threshold", "screen_twin_threshold", "screen_text_twin_threshold",
                     "screen_untexted_group_margin"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))

    # -- conversions -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every parameter (the canonical form; a fresh copy)."""
        cached = self.__dict__.get("_as_dict")
        if cached is None:  # frozen: computed once per instance
            cached = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
            object.__setattr__(self, "_as_dict", cached)
        return dict(cached)

    def replace(self, **changes: Any) -> LatticeParams:
        """Return a copy with ``changes`` applied (validated)."""
        return from_mapping({**self.to_dict(), **changes})

    def to_profile(self, **meta: Any) -> dict[str, Any]:
        """Profile dict (see :func:`save_profile`)."""
        return {"format": PROFILE_FORMAT, "version": 1, "params": self.to_dict(), "meta": dict(meta)}


_FIELDS = {f.name for f in dataclasses.fields(LatticeParams)} - {"extra"}


def from_mapping(m: Mapping[str, Any], base: LatticeParams | None = None) -> LatticeParams:
    unknown = sorted(set(m) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown lattice parameter(s) {unknown}; known: {sorted(_FIELDS)}")
    start = base.to_dict() if base is not None else {}
    return LatticeParams(**{**start, **dict(m)})


def read_profile_json(path: str | os.PathLike) -> Any:
    """The parsed JSON of a profile file; ValueError (naming the file) when missing or invalid."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"profile file not found: {p}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"profile file {p} is not valid JSON: {exc}") from None


def load_profile(path: str | os.PathLike) -> LatticeParams:
    """Read a profile JSON file written by :func:`save_profile` or ``tune``."""
    return resolve_params(read_profile_json(path))


def save_profile(params: LatticeParams, path: str | os.PathLike, **meta: Any) -> Path:
    """Write ``params`` as a profile JSON (atomically: temp file then rename)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(params.to_profile(**meta), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p


def resolve_params(params: Any = None, **overrides: Any) -> LatticeParams:
    """Turn any accepted ``params=`` value into a `LatticeParams`.

    Accepts None (defaults), a `LatticeParams`, a dict of parameters, a profile dict, or a
    path (str / PathLike) of a profile JSON file. ``overrides`` are applied last.
    """
    if params is None:
        base = _default_params()
    elif isinstance(params, LatticeParams):
        base = params
    elif isinstance(params, (str, os.PathLike)):
        base = load_profile(params)
    elif isinstance(params, Mapping):
        if "format" in params or "params" in params:
            if params.get("format") != PROFILE_FORMAT:
                raise ValueError(f"not an oscillink-core profile: format is {params.get('format')!r}, "
                                 f"expected {PROFILE_FORMAT!r}")
            inner = params.get("params")
            if not isinstance(inner, Mapping):
                raise ValueError("profile has no 'params' object")
            base = from_mapping(inner)
        else:
            base = from_mapping(params)
    else:
        raise ValueError(f"params must be None, LatticeParams, a dict, a profile dict or a path; "
                         f"got {type(params).__name__}")
    if overrides:
        base = from_mapping(overrides, base)
    return base


_DEFAULT: LatticeParams | None = None


def _default_params() -> LatticeParams:
    """The default `LatticeParams` (immutable, so one shared instance)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = LatticeParams()
    return _DEFAULT
