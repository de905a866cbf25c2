"""Backend choice and the Python side of the compiled kernels (`_jit`).

``backend="numba"`` (the default when numba is installed: ``pip install
'oscillink-core[fast]'``) runs the hot path in compiled kernels; ``backend="numpy"`` runs
the vectorised numpy/scipy path. Both compute the same quantities; they agree to the CG
tolerance, not bit for bit, so receipts record the backend (``solver.backend``) and
`verify` re-runs with the one recorded. ``OSCILLINK_BACKEND=numpy|numba|auto`` sets the
process-wide default.

Work is split over at most two threads, always in the same fixed pieces (two halves of the
rows for the top-k, two halves of the columns for the solve), so results do not depend on
how many threads actually run them.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["available_backends", "resolve_backend", "warmup"]

_JIT = None
_JIT_ERROR: str | None = None
_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
# Below this many (N x D) elements a second thread costs more than it saves: right after the
# kNN product, BLAS worker threads keep spinning on the other core for a while, so a helper
# thread there mostly competes with them (benchmarks/backend_notes.py measures both sides).
_PARALLEL_MIN = 1 << 21
# The solve splits its columns in two halves from this many (N x D) elements on: a rule on the
# input's shape only, so the arithmetic (and the receipt) never depends on the threads available.
_SPLIT_MIN = 1 << 21

def _jit():
    """The `_jit` module, imported on first use (importing numba takes ~0.5 s)."""
    global _JIT, _JIT_ERROR
    if _JIT is None and _JIT_ERROR is None:
        with _LOCK:
            if _JIT is None and _JIT_ERROR is None:
                try:
                    from . import _jit as mod
                except Exception as exc:  # not installed, or numba cannot set up (e.g. no cache locator)
                    _JIT_ERROR = f"{type(exc).__name__}: {exc}"
                else:
                    _JIT = mod
    return _JIT


def available_backends() -> list[str]:
    """Backends usable in this environment ("numpy" always; "numba" when it imports)."""
    return ["numba", "numpy"] if _jit() is not None else ["numpy"]


def resolve_backend(backend: str | None = None) -> str:
    """Turn None / "auto" / a name into the backend to use, with a clear error when unusable."""
    choice = backend if backend is not None else os.environ.get("OSCILLINK_BACKEND", "auto")
    choice = str(choice).strip().lower() or "auto"
    if choice not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'numpy'; got {choice!r}")
    if choice == "numpy":
        return "numpy"
    if _jit() is not None:
        return "numba"
    if choice == "numba":
        raise ValueError(f"backend='numba' needs numba: pip install 'oscillink-core[fast]' ({_JIT_ERROR})")
    return "numpy"


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        with _LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oscillink")
    return _POOL


def _two_way(fn, first: tuple, second: tuple, parallel: bool):
    """fn(*first) and fn(*second), the second on the helper thread when ``parallel``."""
    if not parallel:
        return fn(*first), fn(*second)
    fut = _pool().submit(fn, *second)
    a = fn(*first)
    return a, fut.result()


def compiled_topk(S: np.ndarray, k: int, idx: np.ndarray, sim: np.ndarray) -> None:
    """The ``topk`` step of `graph.exact_knn` with the compiled kernel (same neighbours, same tie
    order): the block's rows in two halves, the second on the helper thread for large blocks."""
    J = _jit()
    b, n = S.shape
    half = b // 2
    _two_way(J.topk_rows, (S, k, 0, half, idx, sim), (S, k, half, b, idx, sim),
             parallel=b * n >= 4 * _PARALLEL_MIN)


def _cg_part(indptr, indices, data, dinv, pdata, F, X, c0: int, c1: int, rtol: float, maxiter: int):
    """The compiled CG on columns c0:c1 of F into X: contiguous copies when a part, and every
    array allocated by numpy (numba's allocator paid page faults on each call in some states)."""
    whole = c0 == 0 and c1 == F.shape[1]
    Fb = F if whole else np.ascontiguousarray(F[:, c0:c1])
    Xb = X if whole else np.empty_like(Fb)
    W = np.empty((4, *Fb.shape), np.float32)
    out = _jit().cg_columns(indptr, indices, data, dinv, pdata, Fb, Xb, W, rtol, maxiter)
    if not whole:
        X[:, c0:c1] = Xb
    return out


def block_cg(indptr, indices, data, diag: np.ndarray, F: np.ndarray, *, rtol: float, maxiter: int):
    """Solve M X = F with the compiled CG; from N x D >= 2^21 on, the columns in two fixed
    halves, each with its own step lengths (the second half on the helper thread).

    Returns (X, iterations (the larger of the two), true relative residual ||F - M X||_F / ||F||_F).
    """
    n, d = F.shape
    F = np.ascontiguousarray(F, dtype=np.float32)
    X = np.empty_like(F)
    dinv = (1.0 / diag).astype(np.float32)
    pdata = np.empty(data.shape, np.float32)
    if _jit().neumann_matrix(indptr, indices, data, dinv, pdata) != n:
        raise RuntimeError("block_cg: every row of M must store its diagonal entry (got a pattern without)")
    h = d // 2 if (n * d >= _SPLIT_MIN and d >= 2) else d
    args = (indptr, indices, data, dinv, pdata, F, X)
    if h == d:
        parts = [_cg_part(*args, 0, d, rtol, maxiter)]
    else:
        parts = list(_two_way(_cg_part, (*args, 0, h, rtol, maxiter), (*args, h, d, rtol, maxiter),
                              parallel=n * d >= _PARALLEL_MIN))
    ff = sum(p[2] for p in parts)
    res = float(np.sqrt(sum(p[1] for p in parts) / ff)) if ff > 0 else 0.0
    return X, max(p[0] for p in parts), res


def warmup(backend: str | None = None) -> dict:
    """Compile (or load from numba's cache) every kernel the compiled backend uses, now rather
    than on the first real query: a fresh environment spends about 10 s compiling on its first
    call (see the README's Speed section). One small rerank (with a near-duplicate group) and one
    chained solve reach every kernel with the argument types real calls use (the two-thread
    halves call the same kernels with the same types). Returns ``{"backend", "seconds",
    "kernels"}``; with the numpy backend it returns at once.
    """
    import time as _time

    name = resolve_backend(backend)
    t0 = _time.perf_counter()
    if name == "numba":
        from .api import rerank
        from .lattice import Oscillink

        rng = np.random.default_rng(0)
        Y = rng.normal(size=(48, 16)).astype(np.float32)
        Y[1] = Y[0]  # a near-duplicate group
        rerank(Y[0], Y, k=5, backend="numba")
        lat = Oscillink(Y, backend="numba")
        lat.set_query(Y[2])
        lat.add_chain([0, 3, 5])
        lat.settle()
    J = _jit() if name == "numba" else None
    kernels = sorted(k for k, v in vars(J).items() if hasattr(v, "signatures")) if J is not None else []
    return {"backend": name, "seconds": _time.perf_counter() - t0, "kernels": kernels}
