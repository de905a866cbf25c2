"""The `Oscillink` lattice: validates, builds the sparse graph, settles, ranks, explains.

The class holds state and orchestrates; the work is done by the pure functions of `graph`,
`energy`, `ranking` and `receipts` and by one kernel object (`_kernels.Kernels`: numba or
numpy, chosen once in the constructor). It does no I/O; `save`/`load` go through its own state
round trip (`state_dict` / `from_state`) and `persistence`.

Which state each number comes from
----------------------------------
``settle()`` computes the *stationary* state U* = argmin H (it solves M U* = F); there is
no partial or time-stepped state. Scores, the bundle, energies, null points and chain
verdicts are all evaluated at U*. ``deltaH = H(Y) - H(U*) >= 0`` is the energy released
by settling from the anchors Y to U*; it is the only deltaH this package reports.

Threads
-------
An `Oscillink` object holds one query at a time, so it belongs to one thread at a time: a
call made while another thread is inside a call on the same object, or a call that would mix
another thread's query (set after this thread's own ``set_query``) into this thread's
results, raises `RuntimeError` instead of returning a wrong bundle. Give each thread its own
lattice, or use `rerank`, which builds a fresh lattice per call and is safe to call from any
number of threads.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import _backend, _kernels, persistence
from ._validation import (
    check_gates,
    check_ids,
    check_k,
    check_query,
    check_query_text,
    check_scalar,
    check_sources,
    check_texts,
    check_trusted_sources,
)
from ._version import __version__
from .energy import edge_tension, energy_terms, path_energy, path_laplacian, rhs, system_matrix
from .gates import diffusion_gates_from_laplacian
from .params import LatticeParams, resolve_params
from .ranking import rank_and_screen, row_cosine, scores
from .receipts import (
    RECEIPT_FORMAT,
    RECEIPT_VERSION,
    array_digest,
    canonical_json,
    hash_ids,
    round_float,
    sign_receipt,
    state_signature,
    texts_digest,
)
from .solver import CGInfo, warn_unconverged

__all__ = ["Oscillink", "OscillinkLattice", "load"]

_NULL_Z = 3.0
_NULL_MAX_LISTED = 16
# inputs at least this large are hashed on the helper thread, in parallel with the graph and solve
_HASH_ASYNC_BYTES = 1 << 23
_STATE_FORMAT = "oscillink-core/lattice-state"
_STATE_VERSION = 2


class _OneThreadAtATime:
    """Detects use of one lattice by several threads, and makes it fail loudly.

    Two rules, checked on entry to every public call: no other thread is inside a call on
    the object (overlap), and no other thread changed the query, gates or chain since this
    thread last used the object (interleaving: thread A's ``set_query``, thread B's
    ``set_query``, thread A's ``settle`` would settle B's query). A thread that has not used
    the object before may pick it up (a hand-off), and a thread may always set a new query.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        self._gen = 0
        self._seen = threading.local()

    def enter(self, name: str, mutates: bool) -> None:
        me = threading.get_ident()
        with self._lock:
            if self._owner is not None and self._owner != me:
                raise RuntimeError(
                    f"Oscillink.{name}() was called while another thread is inside a call on the same lattice. "
                    "An Oscillink object holds one query at a time and belongs to one thread at a time: give "
                    "each thread its own lattice, or use rerank() (a fresh lattice per call, thread-safe).")
            if self._depth == 0 and not mutates:
                seen = getattr(self._seen, "gen", None)
                if seen is not None and seen != self._gen:
                    raise RuntimeError(
                        f"Oscillink.{name}(): another thread changed this lattice's query, gates or chain since "
                        "this thread last used it, so this call would mix two threads' queries (a wrong bundle). "
                        "Give each thread its own lattice, or use rerank() (thread-safe); call set_query() "
                        "again to take the lattice over.")
            self._owner = me
            self._depth += 1

    def exit(self, mutates: bool) -> None:
        with self._lock:
            self._depth -= 1
            if mutates:
                self._gen += 1
            self._seen.gen = self._gen
            if self._depth == 0:
                self._owner = None


def _exclusive(mutates: bool = False):
    """Wrap a public method in the one-thread-at-a-time check (``mutates``: it changes the query,
    the gates or the chain)."""
    def deco(fn):
        name = fn.__name__

        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            guard = self._guard
            guard.enter(name, mutates)
            try:
                return fn(self, *args, **kwargs)
            finally:
                guard.exit(mutates)
        return wrapper
    return deco


class Oscillink:
    """Sparse coherence lattice over N candidate embeddings.

    Parameters
    ----------
    Y : (N, D) array of candidate embeddings (any real dtype; copied, never modified).
    kneighbors, lamG, lamC, lamQ : optional overrides of the matching `LatticeParams` fields.
        An explicit ``kneighbors >= N`` is an error; the default is clipped to N - 1.
    ids : optional N unique str/int ids (default 0..N-1); they appear in bundles and receipts.
    params : `LatticeParams`, dict, profile dict or profile path (see `resolve_params`).
    backend : "auto" (default; ``OSCILLINK_BACKEND`` overrides), "numba" (compiled kernels,
        ``pip install 'oscillink-core[fast]'``) or "numpy". Both compute the same quantities
        and agree to the solver tolerance (not bit for bit); the receipt records which one ran.
        "auto" never waits for compilation: until numba's kernels are loaded in the process
        (on a background thread, or by `warmup`) it runs on numpy. "numba" waits for them.
    **overrides : any other `LatticeParams` field.

    Notes
    -----
    Not for sharing between threads: an object holds one query, so it belongs to one thread
    at a time, and misuse raises `RuntimeError` (see the module docstring). `rerank` is
    thread-safe.

    Examples
    --------
    >>> import numpy as np
    >>> from oscillink_core import Oscillink
    >>> rng = np.random.default_rng(0)
    >>> Y = rng.normal(size=(80, 32)).astype("float32")
    >>> psi = Y[:10].mean(axis=0)
    >>> lat = Oscillink(Y, kneighbors=6)
    >>> lat.set_query(psi)
    >>> info = lat.settle()
    >>> info["converged"]
    True
    >>> [b["id"] for b in lat.bundle(k=3)]  # doctest: +SKIP
    [3, 7, 0]
    >>> lat.receipt()["energy"]["deltaH"] >= 0
    True
    """

    def __init__(self, Y: Any, kneighbors: int | None = None, lamG: float | None = None,
                 lamC: float | None = None, lamQ: float | None = None, *, ids: Sequence[Any] | None = None,
                 params: Any = None, backend: str | None = None, texts: Sequence[str] | None = None,
                 sources: Sequence[str | None] | None = None, trusted_sources: Any = None,
                 _adjacency: sp.csr_array | None = None,
                 _transient: bool = False, **overrides: Any) -> None:
        t0 = time.perf_counter()
        self._guard = _OneThreadAtATime()
        self._kernels = K = _kernels.kernels_for(backend)
        explicit = {name: v for name, v in (("kneighbors", kneighbors), ("lamG", lamG), ("lamC", lamC),
                                            ("lamQ", lamQ)) if v is not None}
        self._params = p = resolve_params(params, **explicit, **overrides)
        # _transient (rerank's lattice, discarded when it returns): with the compiled backend Y is
        # read in place when it is already C-contiguous float32 (never written), not copied
        self._Y, self._Yn = K.prepare_rows(Y, bool(_transient))
        n, d = self._Y.shape
        self._ids = check_ids(ids, n)
        self._texts = check_texts(texts, n)
        self._texts_sha: bytes | None = None
        self._sources = check_sources(sources, n)
        self._trusted = check_trusted_sources(trusted_sources)
        self._query_text: str | None = None
        self._ids_json: bytes | None = None
        # SHA-256 of Y for the state signature; hashlib releases the GIL, so for large inputs
        # it runs on the helper thread while the graph is built and the system solved
        self._y_digest: bytes | None = None
        self._y_future = None
        if self._Y.nbytes >= _HASH_ASYNC_BYTES:
            self._y_future = _backend._pool().submit(array_digest, self._Y)
        else:
            self._y_digest = array_digest(self._Y)
        if kneighbors is not None and n > 1 and kneighbors >= n:
            raise ValueError(f"kneighbors={kneighbors} must be < N={n} (a node cannot have N neighbours); "
                             f"pass a smaller value or leave it unset to clip to N-1")
        self._k_eff = int(min(p.kneighbors, n - 1))
        # the state the energy acts on: unit rows (default) or Y as given
        self._X = self._Yn if p.normalize else self._Y
        t1 = time.perf_counter()
        if _adjacency is not None:
            self._knn = (None, None)
            self._knn_method = "loaded"
            self._graph = K.graph_from_adjacency(_adjacency, p)
        elif self._k_eff >= 1:
            idx, sim, method = K.knn(self._Yn, self._k_eff, p)
            self._knn = (idx, sim)
            self._knn_method = method
            self._graph = K.graph(idx, sim, self._Yn, p)
        else:
            self._knn = (np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32))
            self._knn_method = "none"
            self._graph = K.graph_from_adjacency(sp.csr_array((n, n), dtype=np.float32), p)
        t2 = time.perf_counter()
        self._psi: np.ndarray | None = None
        self._psi_raw: np.ndarray | None = None
        self._gates = np.ones(n, dtype=np.float32)
        self._gate_mode = "uniform"
        self._chain: np.ndarray | None = None
        self._chain_w: np.ndarray | None = None
        self._lamP = 0.0
        self._U: np.ndarray | None = None
        self._cg: CGInfo | None = None
        self._stats_u: _kernels.StateStats | None = None
        self._stats_x: _kernels.StateStats | None = None
        self._last_bundle: tuple[int, list[dict]] | None = None
        self._timings = {"validate_ms": 1e3 * (t1 - t0), "graph_ms": 1e3 * (t2 - t1)}

    # ---------------------------------------------------------------- scipy views of the graph
    @property
    def _W(self) -> sp.csr_array:
        return self._graph.W

    @property
    def _L(self) -> sp.csr_array:
        return self._graph.L

    @property
    def _edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._graph.edges

    # ---------------------------------------------------------------- properties
    @property
    def backend(self) -> str:
        """The backend running the hot path: "numba" or "numpy"."""
        return self._kernels.name

    @property
    def N(self) -> int:
        return self._Y.shape[0]

    @property
    def D(self) -> int:
        return self._Y.shape[1]

    @property
    def params(self) -> LatticeParams:
        return self._params

    @property
    def ids(self) -> list:
        return list(self._ids)

    @property
    def adjacency(self) -> sp.csr_array:
        """The symmetric mutual-kNN weight matrix W (a copy)."""
        return self._W.copy()

    @property
    def laplacian(self) -> sp.csr_array:
        return self._L.copy()

    @property
    def gates(self) -> np.ndarray:
        return self._gates.copy()

    @property
    def U(self) -> np.ndarray:
        """The stationary state U* (raises if `settle` has not run)."""
        return self._require_settled().copy()

    # ---------------------------------------------------------------- query and chain
    @_exclusive(mutates=True)
    def set_query(self, psi: Any, gates: Any = None, *, text: str | None = None) -> None:
        """Set the query embedding psi (D,) and optional per-candidate gates (N,) in [0, 1].

        Without gates, B = I when ``params.gating == "uniform"`` and the diffusion gates of
        `compute_diffusion_gates` when it is ``"diffusion"``. ``text``: the question itself; with
        the candidates' ``texts`` it enables the text screening signals (see
        `oscillink_core.screening`) and is bound by the state signature.
        """
        self._query_text = check_query_text(text)
        self._apply_query(check_query(psi, self.D), None if gates is None else check_gates(gates, self.N))

    def _apply_query(self, psi_raw: np.ndarray, gates: np.ndarray | None, gate_mode: str | None = None) -> None:
        """Set the validated query (float32) and gates; the one place psi is normalised.
        ``gate_mode``: the mode recorded with restored ``gates`` (default "user")."""
        self._psi_raw = psi_raw
        qn = np.linalg.norm(psi_raw.astype(np.float64))
        self._psi = (psi_raw / qn).astype(np.float32) if self._params.normalize else psi_raw
        if gates is not None:
            self._gates = gates
            self._gate_mode = gate_mode or "user"
        elif self._params.gating == "diffusion":
            cos = row_cosine(self._Yn, self._psi)
            self._gates = diffusion_gates_from_laplacian(self._L, cos, gamma=self._params.gate_gamma,
                                                         beta=self._params.gate_beta)
            self._gate_mode = "diffusion"
        else:
            self._gates = np.ones(self.N, dtype=np.float32)
            self._gate_mode = "uniform"
        self._invalidate()

    @_exclusive(mutates=True)
    def set_gates(self, gates: Any) -> None:
        """Replace the gates only (query unchanged)."""
        self._gates = check_gates(gates, self.N)
        self._gate_mode = "user"
        self._invalidate()

    @_exclusive(mutates=True)
    def add_chain(self, chain: Sequence[int], lamP: float = 0.2, weights: Sequence[float] | None = None) -> None:
        """Add a path prior lamP * sum_t w_t ||u_{c_t} - u_{c_t+1}||^2 over the chain's nodes."""
        c = np.asarray(list(chain))
        if c.ndim != 1 or c.size < 2 or not np.issubdtype(c.dtype, np.integer):
            raise ValueError("chain must be a sequence of at least two integer node indices")
        if (c < 0).any() or (c >= self.N).any():
            raise ValueError(f"chain indices must lie in [0, {self.N - 1}]; got {c.tolist()}")
        check_scalar(lamP, "lamP", float, min_val=0)
        if weights is None:
            w = np.ones(c.size - 1, dtype=np.float64)
        else:
            w = np.asarray(list(weights), dtype=np.float64)
            if w.shape != (c.size - 1,):
                raise ValueError(f"weights must have len(chain) - 1 = {c.size - 1} entries; got {w.size}")
            if not np.isfinite(w).all() or (w < 0).any():
                raise ValueError("chain weights must be finite and >= 0")
        self._chain = c.astype(np.int64)
        self._chain_w = w
        self._lamP = float(lamP)
        self._invalidate()

    @_exclusive(mutates=True)
    def clear_chain(self) -> None:
        self._chain = None
        self._chain_w = None
        self._lamP = 0.0
        self._invalidate()

    def _chain_spec(self) -> tuple | None:
        return None if self._chain is None else (self._chain, self._chain_w, self._lamP)

    # ---------------------------------------------------------------- solve
    @_exclusive()
    def settle(self, *, rtol: float | None = None, maxiter: int | None = None, tol: float | None = None,
               max_iters: int | None = None) -> dict:
        """Solve M U* = F for the stationary state (``tol``/``max_iters`` are accepted aliases).

        Returns ``{"iterations", "residual", "converged", "rtol", "solve_ms"}``; the residual is
        the true relative residual ||M U* - F||_F / ||F||_F. Warns (`ConvergenceWarning`) when
        the solve stopped at ``maxiter`` above ``rtol``.
        """
        if self._psi is None:
            raise ValueError("call set_query(psi) before settle()")
        rtol = rtol if rtol is not None else (tol if tol is not None else self._params.rtol)
        maxiter = maxiter if maxiter is not None else (max_iters if max_iters is not None else self._params.maxiter)
        t0 = time.perf_counter()
        K = self._kernels
        system = K.system(self._graph, self._X, self._psi, self._gates, self._params, self._chain_spec())
        U, info = K.solve(system, rtol=rtol, maxiter=maxiter)
        warn_unconverged(info, stacklevel=4)
        self._U, self._cg = U, info
        self._timings["solve_ms"] = 1e3 * (time.perf_counter() - t0)
        return {"iterations": info.iterations, "residual": info.residual, "converged": info.converged,
                "rtol": info.rtol, "solve_ms": self._timings["solve_ms"]}

    @_exclusive()
    def system(self) -> tuple[sp.csr_array, np.ndarray]:
        """The SPD matrix M (float32 CSR) and its diagonal for the current query, gates and chain."""
        p = self._params
        Lp = path_laplacian(self.N, self._chain, self._chain_w) if self._chain is not None else None
        return system_matrix(self._L, self._gates, lamG=p.lamG, lamC=p.lamC, lamQ=p.lamQ,
                             lamP=self._lamP, Lp=Lp)

    @_exclusive()
    def rhs(self) -> np.ndarray:
        """F = lamG Y + lamQ B 1 psi^T."""
        if self._psi is None:
            raise ValueError("call set_query(psi) first")
        return rhs(self._X, self._psi, self._gates, lamG=self._params.lamG, lamQ=self._params.lamQ)

    @_exclusive()
    def energy(self, U: Any = None) -> dict:
        """Energy terms of H at ``U`` (default U*), each multiplied by its lambda."""
        if self._psi is None:
            raise ValueError("call set_query(psi) first")
        X = self._require_settled() if U is None else np.asarray(U, dtype=np.float32)
        if X.shape != self._Y.shape:
            raise ValueError(f"U must have shape {self._Y.shape}; got {X.shape}")
        if U is None or U is self._X:
            s = self._stats(U is None)
            path = path_energy(X, self._chain, self._chain_w, self._lamP)
            return {"anchor": s.anchor, "coherence": s.coherence, "query": s.query, "path": path,
                    "total": s.anchor + s.coherence + s.query + path}
        p = self._params
        return energy_terms(X, self._X, self._psi, self._gates, self._edges, self._graph.scale,
                            lamG=p.lamG, lamC=p.lamC, lamQ=p.lamQ, lamP=self._lamP,
                            chain=self._chain, chain_weights=self._chain_w)

    # ---------------------------------------------------------------- ranking
    @_exclusive()
    def components(self) -> dict:
        """Per-candidate score components at U*: align, cosine, score, gate, degree, tension."""
        self._require_settled()
        s = self._stats(True)
        cosine = self._cosine()
        return {"align": s.align, "cosine": cosine, "score": scores(s.align, cosine, self._params.coh_weight),
                "gate": self._gates.astype(np.float64), "degree": self._graph.degree, "tension": s.tension}

    def _stats(self, at_u: bool) -> _kernels.StateStats:
        """Statistics at U* (at_u) or at the anchors X, cached until the state changes."""
        cached = self._stats_u if at_u else self._stats_x
        if cached is None:
            U = self._require_settled() if at_u else self._X
            cached = self._kernels.state_stats(self._graph, U, self._X, self._psi, self._gates, self._params, at_u)
            if at_u:
                self._stats_u = cached
            else:
                self._stats_x = cached
        return cached

    def _cosine(self) -> np.ndarray:
        """cos(Y_i, psi) for every candidate (float64)."""
        if self._params.normalize:
            return self._stats(False).align  # X is the unit rows: its alignment is the cosine
        return row_cosine(self._Yn, self._psi)

    @_exclusive()
    def bundle(self, k: int = 5) -> list[dict]:
        """Top-k candidates, best first: ``[{"id", "index", "rank", "score", "align", ...}]``.

        ``k`` larger than N returns all N. Values are plain Python floats and ints.
        ``near_duplicate_of`` names the representative of the item's near-duplicate group
        (None for representatives and items without near-duplicates). Pass the list to
        ``receipt(bundle=...)`` to record it.
        """
        k = check_k(k, self.N)
        t0 = time.perf_counter()
        c = self.components()
        p = self._params
        idx, sim = self._knn_lists() if (p.dedup_threshold is not None and self._k_eff >= 1) else (None, None)
        labels = self._kernels.dup_labels(idx, sim, p.dedup_threshold) if idx is not None else None
        use_text = p.screen_text and self._texts is not None and self._query_text is not None
        order, score, rep, flags, actions, ranking = rank_and_screen(
            c["align"], c["cosine"], self._Yn, idx, sim, k, p, texts=self._texts if use_text else None,
            query_text=self._query_text if use_text else None, labels=labels, sources=self._sources,
            trusted_sources=self._trusted)
        self._ranking = ranking
        out = []
        for r, i in enumerate(order.tolist()):
            dup = int(rep[i])
            out.append({
                "id": self._ids[i], "index": int(i), "rank": r + 1, "score": float(score[i]),
                "align": float(c["align"][i]), "cosine": float(c["cosine"][i]), "gate": float(c["gate"][i]),
                "degree": int(c["degree"][i]), "tension": float(c["tension"][i]),
                "near_duplicate_of": None if dup < 0 or dup == i else self._ids[dup],
                "flags": list(flags[i]), "action": actions[i],
            })
        chosen = set(order.tolist())
        self._screened = [{"id": self._ids[i], "flags": list(flags[i]), "action": a}
                          for i, a in enumerate(actions) if a != "kept" and i not in chosen]
        self._timings["bundle_ms"] = 1e3 * (time.perf_counter() - t0)
        self._last_bundle = (k, out)
        return out

    @property
    def unit_rows(self) -> np.ndarray:
        """The candidate embeddings scaled to unit norm (a copy)."""
        return self._Yn.copy()

    @_exclusive()
    def knn_lists(self) -> tuple[np.ndarray, np.ndarray]:
        """The directed kNN lists (indices, cosines) behind the graph, as copies."""
        idx, sim = self._knn_lists()
        return idx.copy(), sim.copy()

    def _knn_lists(self) -> tuple[np.ndarray, np.ndarray]:
        """The directed kNN lists behind the graph (recomputed if the lattice was loaded without them)."""
        if self._knn[0] is None:
            idx, sim, _ = self._kernels.knn(self._Yn, self._k_eff, self._params)
            self._knn = (idx, sim)
        return self._knn

    # ---------------------------------------------------------------- receipts
    @_exclusive()
    def null_points(self, z_threshold: float = _NULL_Z) -> dict:
        """Edges whose tension at U* is extreme among the existing edges (z-score > threshold)."""
        U = self._require_settled()
        i, j, w = self._edges
        t = self._params.lamC * edge_tension(U, i, j, w, self._graph.scale)
        if t.size < 2 or float(t.std()) == 0.0:
            return {"z_threshold": z_threshold, "count": 0, "edges": []}
        z = (t - t.mean()) / t.std()
        hit = np.flatnonzero(z > z_threshold)
        hit = hit[np.lexsort((hit, -z[hit]))]
        edges = [{"source": self._ids[int(i[e])], "target": self._ids[int(j[e])],
                  "tension": round_float(t[e]), "z": round_float(z[e])} for e in hit[:_NULL_MAX_LISTED]]
        return {"z_threshold": z_threshold, "count": int(hit.size), "edges": edges}

    @_exclusive()
    def state_sig(self, k: int | None = None, bundle: list | None = None) -> str:
        """SHA-256 over every input that determines the result, and the bundle (see
        `receipts.state_signature`)."""
        if self._psi is None:
            raise ValueError("call set_query(psi) first")
        if self._y_future is not None:
            self._y_digest = self._y_future.result()
            self._y_future = None
        g = self._graph
        return state_signature(Y_digest=self._y_digest, ids=self._ids, ids_json=self._ids_canonical(),
                               psi=self._psi_raw, gates=self._gates,
                               params=self._params.to_dict(), k=k if k is not None else 0,
                               indptr=g.indptr, indices=g.indices, data=g.data,
                               chain=self._chain_block(), bundle=bundle, texts_digest=self._texts_digest(),
                               query_text=self._query_text, provenance=self._provenance_block())

    def _provenance_block(self) -> dict | None:
        """The sources and the trusted set as the state signature and the receipt bind them."""
        if self._sources is None and self._trusted is None:
            return None
        out = {}
        if self._sources is not None:
            out["sources_sha256"] = hashlib.sha256(canonical_json(self._sources)).hexdigest()
        if self._trusted is not None:
            out["trusted_sources_sha256"] = hashlib.sha256(canonical_json(sorted(self._trusted))).hexdigest()
            out["trusted_sources_count"] = len(self._trusted)
        return out

    def _texts_digest(self) -> bytes | None:
        if self._texts is None:
            return None
        if self._texts_sha is None:
            self._texts_sha = texts_digest(self._texts)
        return self._texts_sha

    def _ids_canonical(self) -> bytes:
        if self._ids_json is None:
            self._ids_json = canonical_json(list(self._ids))
        return self._ids_json

    def _chain_block(self) -> dict | None:
        if self._chain is None:
            return None
        return {"nodes": [self._ids[int(c)] for c in self._chain], "weights": [float(x) for x in self._chain_w],
                "lamP": self._lamP}

    @_exclusive()
    def receipt(self, *, k: int | None = None, light: bool = False, sign_key: bytes | str | None = None,
                bundle: list[dict] | None = None) -> dict:
        """JSON-serialisable receipt of the settled state (see the package README and schema).

        Parameters
        ----------
        bundle : the bundle to record, as returned by `bundle` for the current state (its
            length is the recorded ``k``). Default: a fresh ``bundle(k)`` when ``k`` is given,
            else the bundle of the last `bundle` call since the state last changed, else
            ``bundle(min(5, N))``.
        k : bundle size when no bundle is passed.
        light : omit the null points (cheaper).
        sign_key : HMAC key; the receipt then carries a ``signature`` block.
        """
        self._require_settled()
        if bundle is not None:
            if k is not None and k != len(bundle):
                raise ValueError(f"k={k} does not match the bundle passed ({len(bundle)} items)")
            k_used = len(bundle)
        else:
            if k is not None or self._last_bundle is None:
                self.bundle(k if k is not None else min(5, self.N))
            k_used, bundle = self._last_bundle
        t0 = time.perf_counter()
        p = self._params
        at_u = self.energy()
        at_y = self.energy(self._X)
        stats = self._kernels.graph_stats(self._graph)
        g = self._gates
        bundle_block = [{"id": b["id"], "score": round_float(b["score"]), "flags": b["flags"], "action": b["action"]}
                        for b in bundle]
        rec: dict = {
            "format": RECEIPT_FORMAT,
            "receipt_version": RECEIPT_VERSION,
            "package_version": __version__,
            "state": "stationary U* (solution of M U* = F); all energies, scores and the bundle are at U*",
            "state_sig": self.state_sig(k_used, bundle_block),
            "params": p.to_dict(),
            "inputs": {"n": self.N, "d": self.D, "k": k_used,
                       "candidate_set_hash": hash_ids(self._ids, ids_json=self._ids_canonical()),
                       **({} if self._texts is None else {"texts_sha256": self._texts_digest().hex()}),
                       **({} if self._query_text is None else
                          {"query_text_sha256": hashlib.sha256(self._query_text.encode("utf-8")).hexdigest()}),
                       **(self._provenance_block() or {}),
                       "gates": {"mode": self._gate_mode, "min": round_float(g.min()),
                                 "max": round_float(g.max()), "mean": round_float(g.mean())}},
            "energy": {**{name: round_float(v) for name, v in at_u.items()},
                       "total_at_Y": round_float(at_y["total"]),
                       "deltaH": round_float(at_y["total"] - at_u["total"])},
            "solver": {"method": self._kernels.solver_method,
                       "backend": self._kernels.name, "dtype": "float32",
                       "iterations": self._cg.iterations,
                       "residual": round_float(self._cg.residual, 6), "rtol": self._cg.rtol,
                       "converged": self._cg.converged},
            "graph": {"method": self._knn_method, "kneighbors": self._k_eff, "mutual": True,
                      **stats.to_dict(), "mean_degree": round_float(stats.mean_degree)},
            "bundle": bundle_block,
            "screen": {"action": p.screen, "screened": getattr(self, "_screened", []),
                       "ranking": getattr(self, "_ranking", "lattice")},
        }
        if self._chain is not None:
            rec["chain"] = {**self._chain_block(), "verdict": self.chain_receipt()["verdict"]}
        if not light:
            rec["null_points"] = self.null_points()
        self._timings["receipt_ms"] = 1e3 * (time.perf_counter() - t0)
        rec["timings_ms"] = {name: round(v, 4) for name, v in sorted(self._timings.items())}
        return sign_receipt(rec, sign_key) if sign_key is not None else rec

    @_exclusive()
    def chain_receipt(self, chain: Sequence[int] | None = None, z_th: float = 2.5) -> dict:
        """Verdict on a chain of candidates: is every link as coherent as the graph around it?

        Link strength is the cosine of the settled states U*_a, U*_b after projecting out the
        query direction (the query pulls every node toward psi alike, which would hide a broken
        link). A link's z-score is (ref - strength) / std, where ref is the mean strength of the
        graph edges incident to either endpoint (all edges if there are none) and std the spread
        of all edge strengths. The verdict passes when every link has z <= ``z_th``; the weakest
        link is the one with the largest z.
        """
        U = self._require_settled()
        if chain is None:
            if self._chain is None:
                raise ValueError("no chain given and none added")
            c = self._chain
        else:
            c = np.asarray(list(chain))
            bad = c.ndim != 1 or c.size < 2 or not np.issubdtype(c.dtype, np.integer)
            if bad or (c < 0).any() or (c >= self.N).any():
                raise ValueError(f"chain must hold at least two node indices in [0, {self.N - 1}]")
        q = self._psi.astype(np.float64) / np.linalg.norm(self._psi.astype(np.float64))
        V = U.astype(np.float64)
        V = V - np.einsum("ij,j->i", V, q)[:, None] * q[None, :]
        V /= np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-30)
        i, j, _ = self._edges
        ref = np.einsum("ij,ij->i", V[i], V[j]) if i.size else np.zeros(0)
        mu = float(ref.mean()) if ref.size else 1.0
        sd = max(float(ref.std()) if ref.size > 1 else 0.0, 1e-3)
        # mean strength of the edges incident to each node (nan where a node has none)
        inc_sum = np.bincount(i, ref, self.N) + np.bincount(j, ref, self.N)
        inc_cnt = np.bincount(i, minlength=self.N) + np.bincount(j, minlength=self.N)
        a, b = c[:-1], c[1:]
        strength = np.einsum("ij,ij->i", V[a], V[b])
        is_edge = np.array([bool(self._W[int(x), int(y)] > 0) for x, y in zip(a, b, strict=False)])
        tot = inc_sum[a] + inc_sum[b] - np.where(is_edge, 2 * strength, 0.0)
        cnt = inc_cnt[a] + inc_cnt[b] - np.where(is_edge, 2, 0)
        local = np.divide(tot, cnt, out=np.full(a.size, mu), where=cnt > 0)
        z = (local - strength) / sd
        links = [{"k": t, "source": self._ids[int(a[t])], "target": self._ids[int(b[t])],
                  "strength": round_float(strength[t]), "reference": round_float(local[t]),
                  "z": round_float(z[t]), "graph_edge": bool(is_edge[t])} for t in range(a.size)]
        w = int(np.argmax(z))
        return {"verdict": bool((z <= z_th).all()), "z_threshold": z_th,
                "reference": {"edges": int(ref.size), "mean": round_float(mu), "std": round_float(sd)},
                "weakest_link": links[w], "links": links}

    # ---------------------------------------------------------------- state round trip
    @_exclusive()
    def state_dict(self) -> dict:
        """Everything that determines this lattice's results, as plain data: ``{"meta": {...}
        (JSON-serialisable), "arrays": {name: ndarray}}``. `from_state` rebuilds an equal
        lattice: the same graph, query, gates (and their mode), chain, kNN lists and backend,
        so ``settle()`` gives the same U* and ``state_sig`` bit for bit. Arrays are copies."""
        g = self._graph
        meta = {"format": _STATE_FORMAT, "version": _STATE_VERSION, "params": self._params.to_dict(),
                "ids": list(self._ids), "gate_mode": self._gate_mode, "lamP": self._lamP, "k_eff": self._k_eff,
                "knn_method": self._knn_method, "backend": self._kernels.name, "has_query": self._psi is not None}
        if self._texts is not None:
            meta["texts"] = list(self._texts)
        if self._query_text is not None:
            meta["query_text"] = self._query_text
        if self._sources is not None:
            meta["sources"] = list(self._sources)
        if self._trusted is not None:
            meta["trusted_sources"] = sorted(self._trusted)
        arrays = {"Y": self._Y.copy(), "gates": self._gates.copy(), "W_indptr": g.indptr.copy(),
                  "W_indices": g.indices.copy(), "W_data": g.data.copy()}
        if self._psi_raw is not None:
            arrays["psi"] = self._psi_raw.copy()
        if self._chain is not None:
            arrays["chain"] = self._chain.copy()
            arrays["chain_weights"] = self._chain_w.copy()
        if self._knn[0] is not None:
            arrays["knn_idx"], arrays["knn_sim"] = self._knn[0].copy(), self._knn[1].copy()
        return {"meta": meta, "arrays": arrays}

    @classmethod
    def from_state(cls, state: dict, *, backend: str | None = None) -> Oscillink:
        """The lattice `state_dict` described. ``backend``: run on another backend than the one
        recorded (default: the recorded one; "auto" for version-1 states, which did not record it)."""
        try:
            meta, arrays = state["meta"], state["arrays"]
            if meta.get("format") not in (_STATE_FORMAT, "oscillink-core/lattice"):
                raise ValueError(f"not an oscillink-core lattice state (format {meta.get('format')!r})")
            Y = arrays["Y"]
            n = Y.shape[0]
            W = sp.csr_array((arrays["W_data"], arrays["W_indices"], arrays["W_indptr"]), shape=(n, n))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"incomplete lattice state: missing {exc}") from None
        lat = cls(Y, ids=meta["ids"], params=resolve_params(meta["params"]), _adjacency=W, texts=meta.get("texts"),
                  sources=meta.get("sources"), trusted_sources=meta.get("trusted_sources"),
                  backend=backend if backend is not None else meta.get("backend", "auto"))
        lat._k_eff = int(meta["k_eff"])
        lat._knn_method = meta["knn_method"]
        if "knn_idx" in arrays:
            lat._knn = (np.asarray(arrays["knn_idx"]), np.asarray(arrays["knn_sim"]))
        if "chain" in arrays:
            lat.add_chain(np.asarray(arrays["chain"]).tolist(), lamP=float(meta["lamP"]),
                          weights=np.asarray(arrays["chain_weights"]).tolist())
        if "psi" in arrays:
            gates = check_gates(arrays["gates"], n)
            lat._query_text = meta.get("query_text")
            lat._apply_query(check_query(arrays["psi"], lat.D), gates, meta.get("gate_mode", "user"))
        return lat

    # ---------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Write the lattice (its `state_dict`) to an .npz file; `load` restores it exactly."""
        persistence.save(self, path)

    @classmethod
    def load(cls, path, *, backend: str | None = None) -> Oscillink:
        """Read a lattice written by `save` (see `from_state` for ``backend``)."""
        return cls.from_state(persistence.load_state(path), backend=backend)

    # ---------------------------------------------------------------- internals
    def _invalidate(self) -> None:
        self._U = None
        self._cg = None
        self._stats_u = None
        self._stats_x = None
        self._last_bundle = None

    def _require_settled(self) -> np.ndarray:
        if self._U is None:
            raise ValueError("call settle() first (after set_query)")
        return self._U

    def __repr__(self) -> str:
        p = self._params
        return (f"Oscillink(N={self.N}, D={self.D}, kneighbors={self._k_eff}, lamG={p.lamG}, lamC={p.lamC}, "
                f"lamQ={p.lamQ}, edges={self._graph.indices.size // 2}{', settled' if self._U is not None else ''})")


def load(path, *, backend: str | None = None) -> Oscillink:
    """Read a lattice written by `save` / `Oscillink.save`: same graph, query, gates, chain and
    backend, so ``settle()`` reproduces the saved lattice's results and ``state_sig`` exactly."""
    return Oscillink.load(path, backend=backend)


#: Name used by the published ``oscillink`` package; same class.
OscillinkLattice = Oscillink
