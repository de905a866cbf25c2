"""Diffusion gates: query relevance spread over the candidate graph.

    (L + gamma I) h = s,   s_i = max(cos(Y_i, psi), 0) ** beta,

solved sparsely (conjugate gradient, L + gamma I is SPD for gamma > 0), then scaled to
[0, 1] by its maximum. A candidate whose neighbours are also query-relevant gets a higher
gate than an isolated look-alike with the same cosine.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._validation import check_embeddings, check_query
from .graph import knn, mutual_knn_graph, normalized_laplacian
from .ranking import row_cosine
from .solver import block_cg, warn_unconverged

__all__ = ["compute_diffusion_gates", "diffusion_gates_from_laplacian"]


def diffusion_gates_from_laplacian(L: sp.csr_array, cosine: np.ndarray, *, gamma: float = 0.15,
                                   beta: float = 1.0, rtol: float = 1e-6) -> np.ndarray:
    """Gates from a precomputed Laplacian and first-stage cosines (float32, in [0, 1])."""
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0; got {gamma}")
    n = L.shape[0]
    s = np.maximum(np.asarray(cosine, dtype=np.float64), 0.0) ** beta
    if not np.any(s > 0):
        return np.zeros(n, dtype=np.float32)
    A = sp.csr_array((L + gamma * sp.eye_array(n, format="csr")).astype(np.float64))
    h, info = block_cg(A, s.reshape(-1, 1), rtol=rtol, maxiter=10 * n + 100)
    warn_unconverged(info)
    h = np.maximum(h.reshape(-1), 0.0)
    top = h.max()
    return (h / top if top > 0 else h).astype(np.float32)


def compute_diffusion_gates(Y, psi, *, kneighbors: int = 6, gamma: float = 0.15, beta: float = 1.0,
                            edge_floor: float = 0.0, degree_reg: float = 0.0) -> np.ndarray:
    """Diffusion gates for candidates ``Y`` (N, D) and query ``psi`` (D,).

    Returns an (N,) float32 array in [0, 1], to pass as ``gates=`` to ``set_query`` or
    ``rerank``. The graph is the same mutual-kNN graph the lattice builds.

    Examples
    --------
    >>> import numpy as np
    >>> from oscillink_core import compute_diffusion_gates
    >>> rng = np.random.default_rng(0)
    >>> Y = rng.normal(size=(50, 16)); psi = Y[:5].mean(0)
    >>> g = compute_diffusion_gates(Y, psi, kneighbors=4)
    >>> g.shape, float(g.max())
    ((50,), 1.0)
    """
    Yc = check_embeddings(Y)
    p = check_query(psi, Yc.shape[1])
    n = Yc.shape[0]
    Yn = (Yc / np.linalg.norm(Yc.astype(np.float64), axis=1, keepdims=True)).astype(np.float32)
    k = min(kneighbors, n - 1)
    if k >= 1:
        idx, sim, _ = knn(Yn, k)
        W = mutual_knn_graph(idx, sim, n, edge_floor=edge_floor, Yn=Yn)
    else:
        W = sp.csr_array((n, n), dtype=np.float32)
    L, _ = normalized_laplacian(W, degree_reg=degree_reg)
    cos = row_cosine(Yn, p)
    return diffusion_gates_from_laplacian(L, cos, gamma=gamma, beta=beta)
