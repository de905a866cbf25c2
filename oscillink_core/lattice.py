"""The `Oscillink` lattice: validates, builds the sparse graph, settles, ranks, explains.

The class holds state and calls the pure functions of `graph`, `energy`, `solver`,
`ranking` and `receipts`; it does no I/O except in `save`/`load`.

Which state each number comes from
----------------------------------
``settle()`` computes the *stationary* state U* = argmin H (it solves M U* = F); there is
no partial or time-stepped state. Scores, the bundle, energies, null points and chain
verdicts are all evaluated at U*. ``deltaH = H(Y) - H(U*) >= 0`` is the energy released
by settling from the anchors Y to U*; it is the only deltaH this package reports.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import __version__, _backend
from ._validation import check_embeddings, check_gates, check_ids, check_k, check_query, row_norms
from .energy import edge_tension, energy_terms, path_energy, path_laplacian, rhs, system_matrix, upper_edges
from .gates import diffusion_gates_from_laplacian
from .graph import GraphStats, csr_graph_stats, graph_stats, knn, mutual_knn_graph, normalized_laplacian
from .params import LatticeParams, resolve_params
from .ranking import rank_settled, row_cosine, scores, screen_kwargs, screen_ranking
from .receipts import (
    RECEIPT_FORMAT,
    RECEIPT_VERSION,
    array_digest,
    canonical_json,
    hash_ids,
    round_float,
    sign_receipt,
    state_signature,
)
from .solver import CGInfo, ConvergenceWarning, block_cg

__all__ = ["Oscillink", "OscillinkLattice"]

_NULL_Z = 3.0
_NULL_MAX_LISTED = 16
# inputs at least this large are hashed on the helper thread, in parallel with the graph and solve
_HASH_ASYNC_BYTES = 1 << 23


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
    **overrides : any other `LatticeParams` field.

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
                 params: Any = None, backend: str | None = None, _adjacency: sp.csr_array | None = None,
                 _transient: bool = False, **overrides: Any) -> None:
        t0 = time.perf_counter()
        self._backend = _backend.resolve_backend(backend)
        J = _backend._jit() if self._backend == "numba" else None
        explicit = {name: v for name, v in (("kneighbors", kneighbors), ("lamG", lamG), ("lamC", lamC),
                                            ("lamQ", lamQ)) if v is not None}
        self._params = resolve_params(params, **explicit, **overrides)
        # _transient (rerank's lattice, discarded when it returns): with the compiled backend Y is
        # read in place when it is already C-contiguous float32 (never written), not copied
        self._Y, norms = self._check_rows(Y, J, bool(_transient))
        n, d = self._Y.shape
        self._ids = check_ids(ids, n)
        self._ids_json: bytes | None = None
        # SHA-256 of Y for the state signature; hashlib releases the GIL, so for large inputs
        # it runs on the helper thread while the graph is built and the system solved
        self._y_digest: bytes | None = None
        self._y_future = None
        if self._Y.nbytes >= _HASH_ASYNC_BYTES:
            self._y_future = _backend._pool().submit(array_digest, self._Y)
        else:
            self._y_digest = array_digest(self._Y)
        k = self._params.kneighbors
        if kneighbors is not None and n > 1 and kneighbors >= n:
            raise ValueError(f"kneighbors={kneighbors} must be < N={n} (a node cannot have N neighbours); "
                             f"pass a smaller value or leave it unset to clip to N-1")
        self._k_eff = int(min(k, n - 1))
        if norms.max() < 1e30 and norms.min() > 1e-30:  # float32 division is exact enough and cheaper
            n32 = norms.astype(np.float32)
            if J is not None:
                self._Yn = J.divide_rows(self._Y, n32, np.empty((n, d), np.float32))
            else:
                self._Yn = self._Y / n32[:, None]
        else:
            self._Yn = (self._Y / norms[:, None]).astype(np.float32)
        # the state the energy acts on: unit rows (default) or Y as given
        self._X = self._Yn if self._params.normalize else self._Y
        t1 = time.perf_counter()
        self._Wc: sp.csr_array | None = None
        self._Lc: sp.csr_array | None = None
        self._edges_c: tuple | None = None
        if _adjacency is not None:
            W = _adjacency
            self._knn = (None, None)
            self._knn_method = "loaded"
        elif self._k_eff >= 1:
            p = self._params
            idx, sim, method = knn(self._Yn, self._k_eff, method=p.knn, exact_max_n=p.exact_max_n, seed=p.seed,
                                   topk=_backend.compiled_topk if J is not None else None)
            self._knn = (idx, sim)
            self._knn_method = method
            if J is not None:
                W = None
                self._csr = J.mutual_graph(idx, self._Yn, float(p.edge_floor))
            else:
                W = mutual_knn_graph(idx, sim, n, edge_floor=p.edge_floor, Yn=self._Yn)
        else:
            self._knn = (np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32))
            self._knn_method = "none"
            W = sp.csr_array((n, n), dtype=np.float32)
        if W is not None:
            W.indptr = W.indptr.astype(np.int32, copy=False)
            W.indices = W.indices.astype(np.int32, copy=False)
            W.data = W.data.astype(np.float32, copy=False)
            self._Wc = W
            self._csr = (W.indptr, W.indices, W.data)
        if J is not None:
            self._deg, self._scale = J.degree_scale(self._csr[0], self._csr[2], float(self._params.degree_reg))
        else:  # the numpy path builds L (and its degree scaling) up front, as it always has
            self._Lc, self._scale = normalized_laplacian(self._W, degree_reg=self._params.degree_reg)
            self._edges_c = upper_edges(self._W)
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
        self._stats_u: tuple | None = None
        self._stats_x: tuple | None = None
        self._timings = {"validate_ms": 1e3 * (t1 - t0), "graph_ms": 1e3 * (t2 - t1)}

    @staticmethod
    def _check_rows(Y: Any, J, transient: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Validated float32 copy of Y and its row norms (float64). ``transient``: Y itself when
        it is already C-contiguous, writeable float32 (read, never written)."""
        if J is not None and isinstance(Y, np.ndarray) and Y.ndim == 2 and Y.size and Y.dtype.kind in "fiub":
            if transient and Y.dtype == np.float32 and Y.flags.c_contiguous and Y.flags.writeable:
                out = Y  # (writeable: a read-only array would compile another kernel type)
            else:
                out = np.array(Y, dtype=np.float32, order="C", copy=True)
            sq, finite = J.prepare_rows(out)  # one pass: squared norms in float64, finiteness
            if finite and sq.min() > 0:
                return out, np.sqrt(sq)
        out = check_embeddings(Y)  # the numpy checks, which name the problem
        return out, row_norms(out)

    # ---------------------------------------------------------------- lazily built graph objects
    @property
    def _W(self) -> sp.csr_array:
        if self._Wc is None:
            indptr, indices, data = self._csr
            self._Wc = sp.csr_array((data, indices, indptr), shape=(self.N, self.N))
        return self._Wc

    @property
    def _L(self) -> sp.csr_array:
        if self._Lc is None:
            self._Lc, _ = normalized_laplacian(self._W, degree_reg=self._params.degree_reg)
        return self._Lc

    @property
    def _edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._edges_c is None:
            self._edges_c = upper_edges(self._W)
        return self._edges_c

    # ---------------------------------------------------------------- properties
    @property
    def backend(self) -> str:
        """The backend running the hot path: "numba" or "numpy"."""
        return self._backend

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
    def set_query(self, psi: Any, gates: Any = None) -> None:
        """Set the query embedding psi (D,) and optional per-candidate gates (N,) in [0, 1].

        Without gates, B = I when ``params.gating == "uniform"`` and the diffusion gates of
        `compute_diffusion_gates` when it is ``"diffusion"``.
        """
        self._psi_raw = check_query(psi, self.D)
        qn = np.linalg.norm(self._psi_raw.astype(np.float64))
        self._psi = (self._psi_raw / qn).astype(np.float32) if self._params.normalize else self._psi_raw
        if gates is not None:
            self._gates = check_gates(gates, self.N)
            self._gate_mode = "user"
        elif self._params.gating == "diffusion":
            cos = row_cosine(self._Yn, self._psi)
            self._gates = diffusion_gates_from_laplacian(self._L, cos, gamma=self._params.gate_gamma,
                                                         beta=self._params.gate_beta)
            self._gate_mode = "diffusion"
        else:
            self._gates = np.ones(self.N, dtype=np.float32)
            self._gate_mode = "uniform"
        self._invalidate()

    def set_gates(self, gates: Any) -> None:
        """Replace the gates only (query unchanged)."""
        self._gates = check_gates(gates, self.N)
        self._gate_mode = "user"
        self._invalidate()

    def add_chain(self, chain: Sequence[int], lamP: float = 0.2, weights: Sequence[float] | None = None) -> None:
        """Add a path prior lamP * sum_t w_t ||u_{c_t} - u_{c_t+1}||^2 over the chain's nodes."""
        c = np.asarray(list(chain))
        if c.ndim != 1 or c.size < 2 or not np.issubdtype(c.dtype, np.integer):
            raise ValueError("chain must be a sequence of at least two integer node indices")
        if (c < 0).any() or (c >= self.N).any():
            raise ValueError(f"chain indices must lie in [0, {self.N - 1}]; got {c.tolist()}")
        if isinstance(lamP, bool) or not np.isfinite(lamP) or lamP < 0:
            raise ValueError(f"lamP must be a finite number >= 0; got {lamP!r}")
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

    def clear_chain(self) -> None:
        self._chain = None
        self._chain_w = None
        self._lamP = 0.0
        self._invalidate()

    # ---------------------------------------------------------------- solve
    def settle(self, *, rtol: float | None = None, maxiter: int | None = None, tol: float | None = None,
               max_iters: int | None = None) -> dict:
        """Solve M U* = F for the stationary state (``tol``/``max_iters`` are accepted aliases).

        Returns ``{"iterations", "residual", "converged", "rtol", "solve_ms"}``; the residual is
        the true relative residual ||M U* - F||_F / ||F||_F.
        """
        if self._psi is None:
            raise ValueError("call set_query(psi) before settle()")
        rtol = rtol if rtol is not None else (tol if tol is not None else self._params.rtol)
        maxiter = maxiter if maxiter is not None else (max_iters if max_iters is not None else self._params.maxiter)
        t0 = time.perf_counter()
        if self._backend == "numba":
            J = _backend._jit()
            p = self._params
            if self._chain is None:
                dvals = p.lamG + p.lamQ * self._gates.astype(np.float64)
                indptr, indices, data = self._csr
                mp, mc, md, diag = J.system_arrays(indptr, indices, data, self._deg, self._scale, dvals,
                                                   float(p.lamC))
                F = J.rhs(self._X, self._psi, self._gates, float(p.lamG), float(p.lamQ),
                          np.empty(self._X.shape, np.float32))
            else:  # the chain adds entries outside the graph's pattern: build M with scipy
                M, diag = self.system()
                mp, mc, md = M.indptr.astype(np.int32), M.indices.astype(np.int32), M.data
                F = self.rhs()
            U, iters, res = _backend.block_cg(mp, mc, md, diag, F, rtol=rtol, maxiter=maxiter)
            info = CGInfo(iterations=int(iters), residual=res, converged=bool(res <= rtol), rtol=rtol)
            if not info.converged:
                warnings.warn(f"conjugate gradient stopped after {iters} iterations with relative residual "
                              f"{res:.3g} > rtol {rtol:.3g}", ConvergenceWarning, stacklevel=2)
        else:
            M, diag = self.system()
            F = self.rhs()
            U, info = block_cg(M, F, rtol=rtol, maxiter=maxiter, inv_diag=1.0 / diag)
        self._U, self._cg = U, info
        self._timings["solve_ms"] = 1e3 * (time.perf_counter() - t0)
        return {"iterations": info.iterations, "residual": info.residual, "converged": info.converged,
                "rtol": info.rtol, "solve_ms": self._timings["solve_ms"]}

    def system(self) -> tuple[sp.csr_array, np.ndarray]:
        """The SPD matrix M (float32 CSR) and its diagonal for the current query, gates and chain."""
        p = self._params
        Lp = path_laplacian(self.N, self._chain, self._chain_w) if self._chain is not None else None
        return system_matrix(self._L, self._gates, lamG=p.lamG, lamC=p.lamC, lamQ=p.lamQ,
                             lamP=self._lamP, Lp=Lp)

    def rhs(self) -> np.ndarray:
        """F = lamG Y + lamQ B 1 psi^T."""
        if self._psi is None:
            raise ValueError("call set_query(psi) first")
        return rhs(self._X, self._psi, self._gates, lamG=self._params.lamG, lamQ=self._params.lamQ)

    def energy(self, U: Any = None) -> dict:
        """Energy terms of H at ``U`` (default U*), each multiplied by its lambda."""
        if self._psi is None:
            raise ValueError("call set_query(psi) first")
        X = self._require_settled() if U is None else np.asarray(U, dtype=np.float32)
        if X.shape != self._Y.shape:
            raise ValueError(f"U must have shape {self._Y.shape}; got {X.shape}")
        p = self._params
        if self._backend == "numba" and (U is None or U is self._X):
            _, _, anchor, coherence, query = self._stats_u_or_x(U is None)
            path = path_energy(X, self._chain, self._chain_w, self._lamP)
            return {"anchor": anchor, "coherence": coherence, "query": query, "path": path,
                    "total": anchor + coherence + query + path}
        return energy_terms(X, self._X, self._psi, self._gates, self._edges, self._scale,
                            lamG=p.lamG, lamC=p.lamC, lamQ=p.lamQ, lamP=self._lamP,
                            chain=self._chain, chain_weights=self._chain_w)

    # ---------------------------------------------------------------- ranking
    def components(self) -> dict:
        """Per-candidate score components at U*: align, cosine, score, gate, degree, tension."""
        U = self._require_settled()
        if self._backend == "numba":
            align, node_t, _, _, _ = self._stats_u_or_x(True)
            cosine = self._cosine()
            return {"align": align, "cosine": cosine, "score": scores(align, cosine, self._params.coh_weight),
                    "gate": self._gates.astype(np.float64), "degree": np.diff(self._csr[0]), "tension": node_t}
        align = row_cosine(U, self._psi)
        cosine = row_cosine(self._Yn, self._psi)
        i, j, w = self._edges
        t = self._params.lamC * edge_tension(U, i, j, w, self._scale)
        node_t = np.bincount(i, weights=t, minlength=self.N) + np.bincount(j, weights=t, minlength=self.N)
        return {"align": align, "cosine": cosine, "score": scores(align, cosine, self._params.coh_weight),
                "gate": self._gates.astype(np.float64), "degree": np.diff(self._W.indptr),
                "tension": node_t}

    def _stats_u_or_x(self, at_u: bool) -> tuple:
        """Compiled statistics at U* (at_u) or at the anchors X: (cos with psi, node tension,
        anchor, coherence and query terms), cached until the state changes."""
        cached = self._stats_u if at_u else self._stats_x
        if cached is None:
            J = _backend._jit()
            p = self._params
            U = self._require_settled() if at_u else self._X
            indptr, indices, data = self._csr
            cached = J.state_stats(U, self._X, self._psi, self._gates, indptr, indices, data, self._scale,
                                   float(p.lamG), float(p.lamC), float(p.lamQ), at_u)
            if at_u:
                self._stats_u = cached
            else:
                self._stats_x = cached
        return cached

    def _cosine(self) -> np.ndarray:
        """cos(Y_i, psi) for every candidate (float64)."""
        if self._backend == "numba" and self._params.normalize:
            return self._stats_u_or_x(False)[0]  # X is the unit rows: its alignment is the cosine
        return row_cosine(self._Yn, self._psi)

    def bundle(self, k: int = 5) -> list[dict]:
        """Top-k candidates, best first: ``[{"id", "index", "rank", "score", "align", ...}]``.

        ``k`` larger than N returns all N. Values are plain Python floats and ints.
        ``near_duplicate_of`` names the representative of the item's near-duplicate group
        (None for representatives and items without near-duplicates).
        """
        k = check_k(k, self.N)
        t0 = time.perf_counter()
        c = self.components()
        p = self._params
        idx, sim = self._knn_lists() if (p.dedup_threshold is not None and self._k_eff >= 1) else (None, None)
        labels = None
        if self._backend == "numba" and idx is not None and idx.size:
            labels = _backend._jit().dup_labels(idx, sim, np.float32(p.dedup_threshold))
        order, score, rep = rank_settled(c["align"], c["cosine"], self._Yn, idx, sim, k, coh_weight=p.coh_weight,
                                         mmr_lambda=p.mmr_lambda, dedup_threshold=p.dedup_threshold,
                                         dup_keep=p.dup_keep, dup_action=p.dup_action, labels=labels)
        order, flags, actions = screen_ranking(order, score, rep, c["cosine"], self._Yn, k, action=p.screen,
                                               mmr_lambda=p.mmr_lambda, dup_action=p.dup_action, **screen_kwargs(p))
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

    def knn_lists(self) -> tuple[np.ndarray, np.ndarray]:
        """The directed kNN lists (indices, cosines) behind the graph, as copies."""
        idx, sim = self._knn_lists()
        return idx.copy(), sim.copy()

    def _knn_lists(self) -> tuple[np.ndarray, np.ndarray]:
        """The directed kNN lists behind the graph (recomputed if the lattice was loaded without them)."""
        if self._knn[0] is None:
            idx, sim, _ = knn(self._Yn, self._k_eff, method=self._params.knn,
                              exact_max_n=self._params.exact_max_n, seed=self._params.seed)
            self._knn = (idx, sim)
        return self._knn

    # ---------------------------------------------------------------- receipts
    def null_points(self, z_threshold: float = _NULL_Z) -> dict:
        """Edges whose tension at U* is extreme among the existing edges (z-score > threshold)."""
        U = self._require_settled()
        i, j, w = self._edges
        t = self._params.lamC * edge_tension(U, i, j, w, self._scale)
        if t.size < 2 or float(t.std()) == 0.0:
            return {"z_threshold": z_threshold, "count": 0, "edges": []}
        z = (t - t.mean()) / t.std()
        hit = np.flatnonzero(z > z_threshold)
        hit = hit[np.lexsort((hit, -z[hit]))]
        edges = [{"source": self._ids[int(i[e])], "target": self._ids[int(j[e])],
                  "tension": round_float(t[e]), "z": round_float(z[e])} for e in hit[:_NULL_MAX_LISTED]]
        return {"z_threshold": z_threshold, "count": int(hit.size), "edges": edges}

    def state_sig(self, k: int | None = None, bundle: list | None = None) -> str:
        """SHA-256 over every input that determines the result, and the bundle (see
        `receipts.state_signature`)."""
        if self._psi is None:
            raise ValueError("call set_query(psi) first")
        if self._y_future is not None:
            self._y_digest = self._y_future.result()
            self._y_future = None
        indptr, indices, data = self._csr
        return state_signature(Y_digest=self._y_digest, ids=self._ids, ids_json=self._ids_canonical(),
                               psi=self._psi_raw, gates=self._gates,
                               params=self._params.to_dict(), k=k if k is not None else 0,
                               indptr=indptr, indices=indices, data=data,
                               chain=self._chain_block(), bundle=bundle)

    def _ids_canonical(self) -> bytes:
        if self._ids_json is None:
            self._ids_json = canonical_json(list(self._ids))
        return self._ids_json

    def _chain_block(self) -> dict | None:
        if self._chain is None:
            return None
        return {"nodes": [self._ids[int(c)] for c in self._chain], "weights": [float(x) for x in self._chain_w],
                "lamP": self._lamP}

    def receipt(self, *, k: int | None = None, light: bool = False, sign_key: bytes | str | None = None) -> dict:
        """JSON-serialisable receipt of the settled state (see the package README and schema).

        The bundle recorded is that of the last `bundle` call (or a fresh ``bundle(k)`` when
        ``k`` is given or none was made). ``light=True`` omits null points (cheaper).
        """
        self._require_settled()
        if k is not None or not hasattr(self, "_last_bundle"):
            self.bundle(k if k is not None else min(5, self.N))
        k_used, bundle = self._last_bundle
        t0 = time.perf_counter()
        p = self._params
        at_u = self.energy()
        at_y = self.energy(self._X)
        stats = self._graph_stats()
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
                       "gates": {"mode": self._gate_mode, "min": round_float(g.min()),
                                 "max": round_float(g.max()), "mean": round_float(g.mean())}},
            "energy": {**{name: round_float(v) for name, v in at_u.items()},
                       "total_at_Y": round_float(at_y["total"]),
                       "deltaH": round_float(at_y["total"] - at_u["total"])},
            "solver": {"method": "block-pcg-neumann2" if self._backend == "numba" else "block-pcg-jacobi",
                       "backend": self._backend, "dtype": "float32",
                       "iterations": self._cg.iterations,
                       "residual": round_float(self._cg.residual, 6), "rtol": self._cg.rtol,
                       "converged": self._cg.converged},
            "graph": {"method": self._knn_method, "kneighbors": self._k_eff, "mutual": True,
                      **stats.to_dict(), "mean_degree": round_float(stats.mean_degree)},
            "bundle": bundle_block,
            "screen": {"action": p.screen, "screened": getattr(self, "_screened", [])},
        }
        if self._chain is not None:
            rec["chain"] = {**self._chain_block(), "verdict": self.chain_receipt()["verdict"]}
        if not light:
            rec["null_points"] = self.null_points()
        self._timings["receipt_ms"] = 1e3 * (time.perf_counter() - t0)
        rec["timings_ms"] = {name: round(v, 4) for name, v in sorted(self._timings.items())}
        return sign_receipt(rec, sign_key) if sign_key is not None else rec

    def _graph_stats(self) -> GraphStats:
        if self._backend != "numba":
            return graph_stats(self._W)
        indptr, indices, _ = self._csr
        return csr_graph_stats(indptr, _backend._jit().n_components(indptr, indices))

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

    # ---------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Write the lattice (Y, ids, params, graph, query, gates, chain) to an .npz file."""
        from .persistence import save

        save(self, path)

    @classmethod
    def load(cls, path) -> Oscillink:
        from .persistence import load

        return load(path)

    # ---------------------------------------------------------------- internals
    def _invalidate(self) -> None:
        self._U = None
        self._cg = None
        self._stats_u = None
        self._stats_x = None
        if hasattr(self, "_last_bundle"):
            del self._last_bundle

    def _require_settled(self) -> np.ndarray:
        if self._U is None:
            raise ValueError("call settle() first (after set_query)")
        return self._U

    def __repr__(self) -> str:
        p = self._params
        return (f"Oscillink(N={self.N}, D={self.D}, kneighbors={self._k_eff}, lamG={p.lamG}, lamC={p.lamC}, "
                f"lamQ={p.lamQ}, edges={self._csr[1].size // 2}{', settled' if self._U is not None else ''})")


#: Name used by the published ``oscillink`` package; same class.
OscillinkLattice = Oscillink
