"""One kernel interface, two implementations: the compiled (numba) and the numpy/scipy path.

`Oscillink` picks a `Kernels` object once, in its constructor (`kernels_for`), and from then on
calls only its methods; it never asks which backend it holds. The pattern is scikit-learn's
``_fit_method`` and scipy's ``LinearOperator``: the choice is made once and hidden behind one
interface that returns plain results.

The interface (every method is a pure function of its arguments; the objects hold no state):

``prepare_rows(Y, transient)`` -> ``(Y32, Yn)``
    validated float32 rows and the unit rows (``transient``: Y may be read in place).
``knn(Yn, k, params)`` -> ``(idx, sim, method)``
    the directed kNN lists.
``graph(idx, Yn, params)`` / ``graph_from_adjacency(W, params)`` -> `Graph`
    the symmetric mutual-kNN graph in CSR form with its degree scaling.
``system(graph, X, psi, gates, params, chain)`` -> `System`
    M = lamG I + lamC L + lamQ B (+ lamP L_P) and F = lamG X + lamQ B 1 psi^T.
``solve(system, rtol, maxiter)`` -> ``(U, CGInfo)``
    never warns: the caller (`Oscillink.settle`) raises the one `ConvergenceWarning`.
``state_stats(graph, U, X, psi, gates, params, at_u)`` -> `StateStats`
    alignment with psi, per-node tension and the anchor, coherence and query energy terms.
``graph_stats(graph)`` -> `GraphStats`; ``dup_labels(idx, sim, threshold)`` -> labels or None.

Both compute the same quantities; they agree to the CG tolerance, not bit for bit (see `_jit`),
so receipts record ``Kernels.name`` and ``Kernels.solver_method``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import _backend
from ._validation import check_embeddings, row_norms
from .energy import edge_tension, energy_terms, path_laplacian, rhs, system_matrix, upper_edges
from .graph import GraphStats, csr_graph_stats, graph_stats, knn, mutual_knn_graph, normalized_laplacian
from .params import LatticeParams, resolve_params
from .ranking import row_cosine
from .solver import CGInfo, block_cg

logger = logging.getLogger(__name__)

__all__ = ["resolve_backend", "kernels_for", "warmup", "Kernels", "NumbaKernels", "NumpyKernels", "Graph", "System",
           "StateStats"]


class Graph:
    """The symmetric mutual-kNN graph as CSR arrays (int32, int32, float32) and its degree
    scaling s = (d + tau)^-1/2; the scipy views (W, the normalised Laplacian L, the upper
    edge list) are built on first use and kept."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, scale: np.ndarray, *,
                 degree_reg: float, deg: np.ndarray | None = None, W: sp.csr_array | None = None,
                 L: sp.csr_array | None = None, edges: tuple | None = None) -> None:
        self.indptr, self.indices, self.data = indptr, indices, data
        self.scale = scale
        self.deg = deg
        self.degree_reg = float(degree_reg)
        self._W, self._L, self._edges = W, L, edges

    @property
    def n(self) -> int:
        return self.indptr.size - 1

    @property
    def W(self) -> sp.csr_array:
        if self._W is None:
            self._W = sp.csr_array((self.data, self.indices, self.indptr), shape=(self.n, self.n))
        return self._W

    @property
    def L(self) -> sp.csr_array:
        if self._L is None:
            self._L, _ = normalized_laplacian(self.W, degree_reg=self.degree_reg)
        return self._L

    @property
    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._edges is None:
            self._edges = upper_edges(self.W)
        return self._edges

    @property
    def degree(self) -> np.ndarray:
        """Number of neighbours per node."""
        return np.diff(self.indptr)


@dataclass(frozen=True)
class System:
    """M X = F in CSR form: ``indptr, indices, data`` of M (float32), its diagonal (float64), F."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    diag: np.ndarray
    F: np.ndarray
    M: sp.csr_array | None = None  # the scipy matrix, when the system was built with scipy


@dataclass(frozen=True)
class StateStats:
    """Statistics of a state U (anchors X): cos(U_i, psi), per-node tension (lamC-weighted,
    summed over incident edges) and the energy terms, each times its lambda."""

    align: np.ndarray
    tension: np.ndarray
    anchor: float
    coherence: float
    query: float


Chain = tuple  # (nodes int64 array, weights float64 array, lamP float)


class Kernels:
    """The interface; see the module docstring. Subclasses set `name` and `solver_method`."""

    name = ""
    solver_method = ""

    def prepare_rows(self, Y: Any, transient: bool = False) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def knn(self, Yn: np.ndarray, k: int, params: LatticeParams) -> tuple[np.ndarray, np.ndarray, str]:
        raise NotImplementedError

    def graph(self, idx: np.ndarray, sim: np.ndarray, Yn: np.ndarray, params: LatticeParams) -> Graph:
        raise NotImplementedError

    def graph_from_adjacency(self, W: sp.csr_array, params: LatticeParams) -> Graph:
        raise NotImplementedError

    def system(self, graph: Graph, X: np.ndarray, psi: np.ndarray, gates: np.ndarray, params: LatticeParams,
               chain: Chain | None) -> System:
        raise NotImplementedError

    def solve(self, system: System, *, rtol: float, maxiter: int) -> tuple[np.ndarray, CGInfo]:
        raise NotImplementedError

    def state_stats(self, graph: Graph, U: np.ndarray, X: np.ndarray, psi: np.ndarray, gates: np.ndarray,
                    params: LatticeParams, at_u: bool) -> StateStats:
        raise NotImplementedError

    def graph_stats(self, graph: Graph) -> GraphStats:
        raise NotImplementedError

    def dup_labels(self, idx: np.ndarray, sim: np.ndarray, threshold: float) -> np.ndarray | None:
        """Near-duplicate labels, or None to let `ranking` compute them."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _scipy_system(graph: Graph, X, psi, gates, p: LatticeParams, chain: Chain | None) -> System:
    if chain is not None:
        nodes, weights, lamP = chain
        M, diag = system_matrix(graph.L, gates, lamG=p.lamG, lamC=p.lamC, lamQ=p.lamQ, lamP=lamP,
                                Lp=path_laplacian(graph.n, nodes, weights))
    else:
        M, diag = system_matrix(graph.L, gates, lamG=p.lamG, lamC=p.lamC, lamQ=p.lamQ)
    F = rhs(X, psi, gates, lamG=p.lamG, lamQ=p.lamQ)
    return System(M.indptr, M.indices, M.data, diag, F, M)


def _unit_rows(Y: np.ndarray, norms: np.ndarray, divide=None) -> np.ndarray:
    n, d = Y.shape
    if norms.max() < 1e30 and norms.min() > 1e-30:  # float32 division is exact enough and cheaper
        n32 = norms.astype(np.float32)
        if divide is not None:
            return divide(Y, n32, np.empty((n, d), np.float32))
        return Y / n32[:, None]
    return (Y / norms[:, None]).astype(np.float32)


class NumpyKernels(Kernels):
    """The vectorised numpy/scipy functions of `graph`, `energy`, `solver` and `ranking`."""

    name = "numpy"
    solver_method = "block-pcg-jacobi"

    def prepare_rows(self, Y, transient=False):
        out = check_embeddings(Y)
        return out, _unit_rows(out, row_norms(out))

    def knn(self, Yn, k, params):
        return knn(Yn, k, method=params.knn, exact_max_n=params.exact_max_n, seed=params.seed)

    def graph(self, idx, sim, Yn, params):
        W = mutual_knn_graph(idx, sim, Yn.shape[0], edge_floor=params.edge_floor, Yn=Yn)
        return self.graph_from_adjacency(W, params)

    def graph_from_adjacency(self, W, params):
        W.indptr = W.indptr.astype(np.int32, copy=False)
        W.indices = W.indices.astype(np.int32, copy=False)
        W.data = W.data.astype(np.float32, copy=False)
        # the numpy path builds L (and its degree scaling) and the edge list up front
        L, scale = normalized_laplacian(W, degree_reg=params.degree_reg)
        return Graph(W.indptr, W.indices, W.data, scale, degree_reg=params.degree_reg, W=W, L=L,
                     edges=upper_edges(W))

    def system(self, graph, X, psi, gates, params, chain):
        return _scipy_system(graph, X, psi, gates, params, chain)

    def solve(self, system, *, rtol, maxiter):
        return block_cg(system.M, system.F, rtol=rtol, maxiter=maxiter, inv_diag=1.0 / system.diag)

    def state_stats(self, graph, U, X, psi, gates, params, at_u):
        p = params
        e = energy_terms(U, X, psi, gates, graph.edges, graph.scale, lamG=p.lamG, lamC=p.lamC, lamQ=p.lamQ)
        i, j, w = graph.edges
        t = p.lamC * edge_tension(U, i, j, w, graph.scale)
        n = graph.n
        node_t = np.bincount(i, weights=t, minlength=n) + np.bincount(j, weights=t, minlength=n)
        return StateStats(row_cosine(U, psi), node_t, e["anchor"], e["coherence"], e["query"])

    def graph_stats(self, graph):
        return graph_stats(graph.W)


class NumbaKernels(Kernels):
    """The compiled kernels of `_jit` (``pip install 'oscillink-core[fast]'``)."""

    name = "numba"
    solver_method = "block-pcg-neumann2"

    def __init__(self) -> None:
        J = _backend._jit()
        if J is None:
            raise ValueError(f"backend='numba' needs numba: pip install 'oscillink-core[fast]' "
                             f"({_backend._JIT_ERROR})")
        self._J = J

    def prepare_rows(self, Y, transient=False):
        J = self._J
        if isinstance(Y, np.ndarray) and Y.ndim == 2 and Y.size and Y.dtype.kind in "fiub":
            if transient and Y.dtype == np.float32 and Y.flags.c_contiguous and Y.flags.writeable:
                out = Y  # (writeable: a read-only array would compile another kernel type)
            else:
                out = np.array(Y, dtype=np.float32, order="C", copy=True)
            sq, finite = J.prepare_rows(out)  # one pass: squared norms in float64, finiteness
            if finite and sq.min() > 0:
                return out, _unit_rows(out, np.sqrt(sq), J.divide_rows)
        out = check_embeddings(Y)  # the numpy checks, which name the problem
        return out, _unit_rows(out, row_norms(out), J.divide_rows)

    def knn(self, Yn, k, params):
        return knn(Yn, k, method=params.knn, exact_max_n=params.exact_max_n, seed=params.seed,
                   topk=_backend.compiled_topk)

    def graph(self, idx, sim, Yn, params):
        indptr, indices, data = self._J.mutual_graph(idx, Yn, float(params.edge_floor))
        deg, scale = self._J.degree_scale(indptr, data, float(params.degree_reg))
        return Graph(indptr, indices, data, scale, degree_reg=params.degree_reg, deg=deg)

    def graph_from_adjacency(self, W, params):
        indptr = W.indptr.astype(np.int32, copy=False)
        indices = W.indices.astype(np.int32, copy=False)
        data = W.data.astype(np.float32, copy=False)
        deg, scale = self._J.degree_scale(indptr, data, float(params.degree_reg))
        W = sp.csr_array((data, indices, indptr), shape=W.shape)
        return Graph(indptr, indices, data, scale, degree_reg=params.degree_reg, deg=deg, W=W)

    def system(self, graph, X, psi, gates, params, chain):
        if chain is not None:  # the chain adds entries outside the graph's pattern: build M with scipy
            s = _scipy_system(graph, X, psi, gates, params, chain)
            return System(s.indptr.astype(np.int32), s.indices.astype(np.int32), s.data, s.diag, s.F, s.M)
        p = params
        J = self._J
        dvals = p.lamG + p.lamQ * gates.astype(np.float64)
        mp, mc, md, diag = J.system_arrays(graph.indptr, graph.indices, graph.data, graph.deg, graph.scale,
                                           dvals, float(p.lamC))
        F = J.rhs(X, psi, gates, float(p.lamG), float(p.lamQ), np.empty(X.shape, np.float32))
        return System(mp, mc, md, diag, F)

    def solve(self, system, *, rtol, maxiter):
        return compiled_cg(system.indptr, system.indices, system.data, system.diag, system.F,
                           rtol=rtol, maxiter=maxiter)

    def state_stats(self, graph, U, X, psi, gates, params, at_u):
        p = params
        out = self._J.state_stats(U, X, psi, gates, graph.indptr, graph.indices, graph.data, graph.scale,
                                  float(p.lamG), float(p.lamC), float(p.lamQ), at_u)
        return StateStats(*out)

    def graph_stats(self, graph):
        return csr_graph_stats(graph.indptr, self._J.n_components(graph.indptr, graph.indices))

    def dup_labels(self, idx, sim, threshold):
        if not idx.size:
            return None
        return self._J.dup_labels(idx, sim, np.float32(threshold))


def _cg_part(indptr, indices, data, dinv, pdata, F, X, c0: int, c1: int, rtol: float, maxiter: int):
    """The compiled CG on columns c0:c1 of F into X: contiguous copies when a part, and every
    array allocated by numpy (numba's allocator paid page faults on each call in some states)."""
    whole = c0 == 0 and c1 == F.shape[1]
    Fb = F if whole else np.ascontiguousarray(F[:, c0:c1])
    Xb = X if whole else np.empty_like(Fb)
    W = np.empty((4, *Fb.shape), np.float32)
    out = _backend._jit().cg_columns(indptr, indices, data, dinv, pdata, Fb, Xb, W, rtol, maxiter)
    if not whole:
        X[:, c0:c1] = Xb
    return out


def compiled_cg(indptr, indices, data, diag: np.ndarray, F: np.ndarray, *, rtol: float,
                maxiter: int) -> tuple[np.ndarray, CGInfo]:
    """Solve M X = F (M as CSR arrays) with the compiled CG; from N x D >= 2^21 on, the columns
    in two fixed halves, each with its own step lengths (the second half on the helper thread).

    Returns ``(X, CGInfo)`` like `solver.block_cg` (iterations: the larger of the two halves;
    residual: the true relative residual ||F - M X||_F / ||F||_F). Does not warn.
    """
    n, d = F.shape
    F = np.ascontiguousarray(F, dtype=np.float32)
    X = np.empty_like(F)
    dinv = (1.0 / diag).astype(np.float32)
    pdata = np.empty(data.shape, np.float32)
    if _backend._jit().neumann_matrix(indptr, indices, data, dinv, pdata) != n:
        raise RuntimeError("block_cg: every row of M must store its diagonal entry (got a pattern without)")
    h = d // 2 if (n * d >= _backend._SPLIT_MIN and d >= 2) else d
    args = (indptr, indices, data, dinv, pdata, F, X)
    if h == d:
        parts = [_cg_part(*args, 0, d, rtol, maxiter)]
    else:
        parts = list(_backend._two_way(_cg_part, (*args, 0, h, rtol, maxiter), (*args, h, d, rtol, maxiter),
                                       parallel=n * d >= _backend._PARALLEL_MIN))
    ff = sum(p[2] for p in parts)
    res = float(np.sqrt(sum(p[1] for p in parts) / ff)) if ff > 0 else 0.0
    iters = max(p[0] for p in parts)
    return X, CGInfo(iterations=int(iters), residual=res, converged=bool(res <= rtol), rtol=rtol)


_NUMPY = NumpyKernels()
_NUMBA: NumbaKernels | None = None
_STATE_LOCK = threading.Lock()
_READY = threading.Event()  # every compiled kernel is loaded: "auto" uses them from now on
_COMPILER: threading.Thread | None = None
_COMPILE_ERROR: str | None = None


def _numba_kernels() -> NumbaKernels:
    global _NUMBA
    if _NUMBA is None:
        with _STATE_LOCK:
            if _NUMBA is None:
                _NUMBA = NumbaKernels()
    return _NUMBA


def compile_now() -> None:
    """Compile (or load from numba's cache) every compiled kernel in this thread, and wait."""
    _exercise(_numba_kernels())
    _READY.set()


def _compile_in_background() -> None:
    global _COMPILE_ERROR
    try:
        if _backend._jit() is not None:
            compile_now()
    except Exception as exc:  # pragma: no cover - the numpy path keeps answering
        _COMPILE_ERROR = f"{type(exc).__name__}: {exc}"
        logger.warning("compiling the numba kernels failed; staying on numpy: %s", _COMPILE_ERROR)


def start_background_compile() -> threading.Thread | None:
    """Start compiling the kernels on a daemon thread (once per process); returns the thread."""
    global _COMPILER
    if _READY.is_set():
        return _COMPILER
    with _STATE_LOCK:
        if _COMPILER is None:
            _COMPILER = threading.Thread(target=_compile_in_background, name="oscillink-compile", daemon=True)
            _COMPILER.start()
    return _COMPILER


def compiled_ready() -> bool:
    """Have the compiled kernels been loaded in this process (so "auto" uses them)?"""
    return _READY.is_set()


def resolve_backend(backend: str | None = None, *, wait: bool = False) -> str:
    """The backend a lattice created now runs on: "numba" or "numpy".

    ``"numpy"`` and ``"numba"`` are taken as asked (``"numba"`` raises a clear error when numba
    does not import; its first call compiles or loads the kernels and waits for them).
    ``"auto"`` (the default, and ``OSCILLINK_BACKEND`` unset) never waits for compilation: it
    answers "numba" once every kernel is loaded in this process, and until then "numpy" while a
    background thread loads them (from numba's cache, or compiling into it). ``wait=True``
    makes "auto" wait for them instead (as `warmup` does).
    """
    choice = _backend.requested_backend(backend)
    if choice == "numpy":
        return "numpy"
    if choice == "numba":
        _numba_kernels()  # the clear error when numba is missing
        return "numba"
    if _READY.is_set():
        return "numba"
    if _backend._JIT_ERROR is not None:
        return "numpy"
    if wait:
        if _backend._jit() is None:
            return "numpy"
        compile_now()
        return "numba"
    start_background_compile()
    return "numpy"


def kernels_for(backend: str | None = None) -> Kernels:
    """The kernel object for ``backend`` (see `resolve_backend`)."""
    return _NUMPY if resolve_backend(backend) == "numpy" else _numba_kernels()


def _exercise(K: Kernels) -> None:
    """Run every kernel of ``K`` once on small inputs, with the argument types real calls use:
    a lattice with a near-duplicate group (transient and copied rows), a solve, the statistics
    at U and at the anchors, the graph statistics, and a chained solve."""
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(48, 16)).astype(np.float32)
    Y[1] = Y[0]  # a near-duplicate group
    psi = Y[2].copy()
    p = resolve_params(None)
    for transient in (True, False):
        Y32, Yn = K.prepare_rows(Y, transient)
    idx, sim, _ = K.knn(Yn, 6, p)
    g = K.graph(idx, sim, Yn, p)
    gates = np.ones(48, np.float32)
    for chain in (None, (np.array([0, 3, 5], np.int64), np.ones(2), 0.2)):
        U, _ = K.solve(K.system(g, Yn, psi, gates, p, chain), rtol=p.rtol, maxiter=p.maxiter)
        K.state_stats(g, U, Yn, psi, gates, p, True)
        K.state_stats(g, Yn, Yn, psi, gates, p, False)
    K.graph_stats(g)
    K.dup_labels(idx, sim, 0.9)
    K.graph_from_adjacency(g.W, p)


def warmup(backend: str | None = None) -> dict:
    """Compile (or load from numba's cache) every kernel the compiled backend uses, now, and
    wait for it. With the default ``backend="auto"`` the first calls of a process never wait
    for compilation (they run on numpy while the kernels compile on a background thread, see
    `_backend`); call ``warmup()`` to switch to the compiled kernels at a point of your choosing
    (e.g. at service start). Returns ``{"backend", "seconds", "kernels"}``; with the numpy
    backend it returns at once.
    """
    import time as _time

    t0 = _time.perf_counter()
    name = resolve_backend(backend, wait=True)
    if name == "numba":
        compile_now()
    J = _backend._jit() if name == "numba" else None
    kernels = sorted(k for k, v in vars(J).items() if hasattr(v, "signatures")) if J is not None else []
    return {"backend": name, "seconds": _time.perf_counter() - t0, "kernels": kernels}
