"""Loading numba's kernels (`_jit`), the helper thread, and the name of the backend asked for.

``backend="numba"`` runs the hot path in compiled kernels (``pip install
'oscillink-core[fast]'``); ``backend="numpy"`` runs the vectorised numpy/scipy path; "auto"
(the default) uses the compiled kernels once they are ready (see `_kernels.resolve_backend`).
Both compute the same quantities; they agree to the CG tolerance, not bit for bit, so
receipts record the backend (``solver.backend``) and `verify` re-runs with the one recorded.
``OSCILLINK_BACKEND=numpy|numba|auto`` sets the process-wide default.

This module imports nothing of the package: `_kernels` builds on it.

Work is split over at most two threads, always in the same fixed pieces (two halves of the
rows for the top-k, two halves of the columns for the solve), so results do not depend on
how many threads actually run them.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["available_backends", "requested_backend", "compiled_topk"]

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


def requested_backend(backend: str | None = None) -> str:
    """The backend asked for: ``backend``, else ``OSCILLINK_BACKEND``, else "auto"; validated."""
    choice = backend if backend is not None else os.environ.get("OSCILLINK_BACKEND", "auto")
    choice = str(choice).strip().lower() or "auto"
    if choice not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'numpy'; got {choice!r}")
    return choice


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
