"""Input validation, done once and up front (the scipy ``make_system`` pattern).

Every public entry point funnels its arrays through these helpers, so the
messages are uniform and name what was expected and what was received.
The helpers never modify the caller's arrays: they return fresh, C-contiguous
float32 copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["row_norms", "check_embeddings", "check_query", "check_gates", "check_ids", "check_k", "check_scalar",
           "check_texts"]

_BRACKETS = {"both": "[]", "left": "[)", "right": "(]", "neither": "()"}


def check_scalar(x: Any, name: str, target_type: type, *, min_val: float | None = None,
                 max_val: float | None = None, include_boundaries: str = "both", allow_none: bool = False,
                 hint: str = "") -> Any:
    """Validate one scalar parameter and return it as ``target_type`` (scikit-learn's
    ``check_scalar`` pattern).

    Parameters
    ----------
    x : the value.
    name : the parameter's name, used in the message.
    target_type : ``int`` (Python or numpy integers) or ``float`` (any real number, finite).
        Booleans are never accepted as numbers.
    min_val, max_val : bounds (None: unbounded on that side).
    include_boundaries : "both", "left", "right" or "neither": which bounds are allowed values.
    allow_none : accept (and return) None.
    hint : appended to the message (why the bound exists).

    Returns
    -------
    ``int(x)`` or ``float(x)`` (or None when allowed).

    Raises
    ------
    ValueError
        naming the parameter, what was expected and what was got (the package raises ValueError
        for every bad input, so callers catch one type).

    Examples
    --------
    >>> check_scalar(3, "k", int, min_val=1)
    3
    >>> check_scalar(0.0, "rtol", float, min_val=0, max_val=1, include_boundaries="neither")
    Traceback (most recent call last):
    ...
    ValueError: rtol must lie in (0, 1); got 0.0
    >>> check_scalar(True, "k", int, min_val=1)
    Traceback (most recent call last):
    ...
    ValueError: k must be an int >= 1; got True
    """
    if x is None and allow_none:
        return None
    lo_in = include_boundaries in ("both", "left")
    hi_in = include_boundaries in ("both", "right")
    if include_boundaries not in _BRACKETS:
        raise ValueError(f"include_boundaries must be one of {sorted(_BRACKETS)}; got {include_boundaries!r}")
    kind = "an int" if target_type is int else "a finite number"
    if min_val is not None and max_val is not None:
        b = _BRACKETS[include_boundaries]
        want = f"lie in {b[0]}{min_val:g}, {max_val:g}{b[1]}"
    elif min_val is not None:
        want = f"be {kind} {'>=' if lo_in else '>'} {min_val:g}"
    elif max_val is not None:
        want = f"be {kind} {'<=' if hi_in else '<'} {max_val:g}"
    else:
        want = f"be {kind}"
    if allow_none:
        want += " or None"
    msg = f"{name} must {want}{hint}; got {x!r}"
    if isinstance(x, (bool, np.bool_)):
        raise ValueError(msg)
    if target_type is int:
        if not isinstance(x, (int, np.integer)):
            raise ValueError(msg)
        v: Any = int(x)
    else:
        if not isinstance(x, (int, float, np.integer, np.floating)) or not np.isfinite(x):
            raise ValueError(msg)
        v = float(x)
    if min_val is not None and (v < min_val or (v == min_val and not lo_in)):
        raise ValueError(msg)
    if max_val is not None and (v > max_val or (v == max_val and not hi_in)):
        raise ValueError(msg)
    return v


def _as_float_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise ValueError(f"{name} must be a numeric array; got {type(x).__name__} ({exc})") from None
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool
    ):
        raise ValueError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    return arr


def check_embeddings(Y: Any, *, name: str = "Y") -> np.ndarray:
    """Validate candidate embeddings and return a float32 C-contiguous copy.

    Raises ``ValueError`` when ``Y`` is not 2-D, has no rows or no columns,
    holds NaN/inf, or has an all-zero row (its direction is undefined).
    """
    arr = _as_float_array(Y, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (N, D); got {arr.ndim}-D array of shape {arr.shape}")
    n, d = arr.shape
    if n == 0:
        raise ValueError(f"{name} has no rows (N = 0): there is nothing to rank")
    if d == 0:
        raise ValueError(f"{name} has no columns (D = 0)")
    out = np.array(arr, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(np.einsum("ij->", out)):  # one pass; a non-finite total triggers the exact check
        finite = np.isfinite(out)
        if not finite.all():
            bad = np.flatnonzero(~finite.all(axis=1))
            raise ValueError(f"{name} contains NaN or inf in {bad.size} row(s), first at row {int(bad[0])}")
    norms = row_norms(out)
    zero = np.flatnonzero(norms == 0.0)
    if zero.size:
        raise ValueError(f"{name} has {zero.size} all-zero row(s), first at row {int(zero[0])}; "
                         "a zero vector has no direction")
    return out


def row_norms(X: np.ndarray) -> np.ndarray:
    """Euclidean row norms (float64) of a float32 array: a float32 pass, redone in float64 for
    the rows where squares under- or overflow float32."""
    sq = np.einsum("ij,ij->i", X, X).astype(np.float64)
    bad = ~np.isfinite(sq) | (sq < 1e-30)
    if bad.any():
        sq[bad] = np.einsum("ij,ij->i", X[bad].astype(np.float64), X[bad].astype(np.float64))
    return np.sqrt(sq)


def check_query(psi: Any, d: int, *, name: str = "psi") -> np.ndarray:
    """Validate a query vector of length ``d``; return a float32 copy."""
    arr = _as_float_array(psi, name)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector of length D = {d}; got shape {arr.shape}")
    if arr.shape[0] != d:
        raise ValueError(f"dimension mismatch: {name} has length {arr.shape[0]} but the candidates have D = {d}")
    out = np.array(arr, dtype=np.float32, copy=True)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf")
    if not np.any(out):
        raise ValueError(f"{name} is all zeros; a zero query has no direction")
    return out


def check_gates(gates: Any, n: int, *, name: str = "gates") -> np.ndarray:
    """Validate per-candidate query gates: length ``n``, finite, in [0, 1]."""
    arr = _as_float_array(gates, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector of length N = {n}; got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has length {arr.shape[0]} but there are N = {n} candidates")
    out = np.array(arr, dtype=np.float32, copy=True)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf")
    if (out < 0).any() or (out > 1).any():
        raise ValueError(f"{name} must lie in [0, 1]; got min {float(out.min()):.4g}, max {float(out.max()):.4g}")
    return out


def check_ids(ids: Sequence[Any] | None, n: int) -> list:
    """Validate candidate ids: ``n`` unique str or int values (default ``0..n-1``)."""
    if ids is None:
        return list(range(n))
    if isinstance(ids, (str, bytes)):
        raise ValueError("ids must be a sequence of ids, not a single string")
    out = list(ids)
    if len(out) != n:
        raise ValueError(f"ids has {len(out)} entries but there are N = {n} candidates")
    norm = []
    for i, v in enumerate(out):
        if isinstance(v, (bool, np.bool_)):
            raise ValueError(f"ids[{i}] is a bool; ids must be str or int")
        if isinstance(v, (int, np.integer)):
            norm.append(int(v))
        elif isinstance(v, str):
            norm.append(v)
        else:
            raise ValueError(f"ids[{i}] has type {type(v).__name__}; ids must be str or int")
    if len(set(norm)) != n:
        seen: set = set()
        dup = next(v for v in norm if v in seen or seen.add(v))  # type: ignore[func-returns-value]
        raise ValueError(f"ids must be unique; {dup!r} occurs more than once")
    return norm


def check_k(k: Any, n: int, *, name: str = "k") -> int:
    """Validate a bundle size: an int >= 1 (values above ``n`` are clipped to ``n``)."""
    return min(check_scalar(k, name, int, min_val=1), int(n))


def check_query_text(text: Any, *, name: str = "the query text") -> str | None:
    """Validate a query's text: None or a str."""
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{name} must be a str or None; got {type(text).__name__}")
    return text


def check_texts(texts: Sequence[Any] | None, n: int) -> list[str] | None:
    """Validate candidate texts: None, or ``n`` str values (one per candidate, in order)."""
    if texts is None:
        return None
    if isinstance(texts, (str, bytes)):
        raise ValueError("texts must be a sequence of strings (one per candidate), not a single string")
    out = list(texts)
    if len(out) != n:
        raise ValueError(f"texts has {len(out)} entries but there are N = {n} candidates")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ValueError(f"texts[{i}] has type {type(t).__name__}; texts must be str")
    return out


def check_sources(sources: Sequence[Any] | None, n: int) -> list[str | None] | None:
    """Validate candidate sources: None, or ``n`` entries, each a non-empty str or None (unknown)."""
    if sources is None:
        return None
    if isinstance(sources, (str, bytes)):
        raise ValueError("sources must be a sequence (one source or None per candidate), not a single string")
    out = list(sources)
    if len(out) != n:
        raise ValueError(f"sources has {len(out)} entries but there are N = {n} candidates")
    for i, s in enumerate(out):
        if s is not None and (not isinstance(s, str) or not s):
            raise ValueError(f"sources[{i}] is {s!r}; a source is a non-empty str, or None when unknown")
    return out


def check_trusted_sources(trusted: Any) -> frozenset[str] | None:
    """Validate the declared trusted sources: None, or an iterable of non-empty str (not one str)."""
    if trusted is None:
        return None
    if isinstance(trusted, (str, bytes)):
        raise ValueError("trusted_sources must be a collection of source names, not a single string")
    try:
        out = frozenset(trusted)
    except TypeError:
        raise ValueError(f"trusted_sources must be a collection of str; got {type(trusted).__name__}") from None
    for s in out:
        if not isinstance(s, str) or not s:
            raise ValueError(f"trusted_sources holds {s!r}; every trusted source is a non-empty str")
    return out
