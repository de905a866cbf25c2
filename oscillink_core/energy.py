"""The energy H(U), its SPD system, edge tensions and chain priors (pure functions).

    H(U) = lamG ||U - Y||_F^2 + lamC tr(U^T L U)
         + lamQ tr((U - 1 psi^T)^T B (U - 1 psi^T)) + lamP tr(U^T L_P U)

Its gradient vanishes at the unique minimiser U*, the solution of

    M U* = F,   M = lamG I + lamC L + lamQ B + lamP L_P,   F = lamG Y + lamQ B 1 psi^T.

With L = S (D - W) S, S = diag((d_i + tau)^-1/2), tr(U^T L U) = sum over edges
w_ij ||s_i u_i - s_j u_j||^2: the *tension* of edge ij. L_P is the combinatorial Laplacian
of the chain, which touches chain nodes only.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = [
    "system_matrix",
    "rhs",
    "path_laplacian",
    "edge_tension",
    "energy_terms",
    "upper_edges",
    "path_energy",
]


def path_laplacian(n: int, chain: np.ndarray, weights: np.ndarray) -> sp.csr_array:
    """Combinatorial Laplacian of the path chain[0]-chain[1]-...; zero outside chain nodes."""
    a, b = chain[:-1], chain[1:]
    rows = np.concatenate([a, b, a, b])
    cols = np.concatenate([b, a, a, b])
    vals = np.concatenate([-weights, -weights, weights, weights]).astype(np.float64)
    return sp.csr_array(sp.coo_array((vals, (rows, cols)), shape=(n, n)).tocsr())


def system_matrix(L: sp.csr_array, gates: np.ndarray, *, lamG: float, lamC: float, lamQ: float,
                  lamP: float = 0.0, Lp: sp.csr_array | None = None) -> tuple[sp.csr_array, np.ndarray]:
    """M = lamG I + lamC L + lamQ B (+ lamP L_P) as float32 CSR, and its diagonal (float64).

    L carries an explicit diagonal entry in every row, so M keeps L's sparsity pattern
    (one sparse product per CG iteration covers every term).
    """
    dvals = lamG + lamQ * gates.astype(np.float64)
    if lamP > 0 and Lp is not None:
        M = sp.csr_array((lamC * L + lamP * Lp + sp.diags_array(dvals)).astype(np.float32))
        M.sort_indices()
        return M, M.diagonal().astype(np.float64)
    # fast path: L stores every diagonal entry explicitly, so M shares its structure
    M = sp.csr_array((L.data * np.float32(lamC), L.indices, L.indptr), shape=L.shape)
    rows = np.repeat(np.arange(M.shape[0]), np.diff(M.indptr))
    dpos = np.flatnonzero(rows == M.indices)
    M.data[dpos] += dvals[rows[dpos]].astype(np.float32)
    diag = np.zeros(M.shape[0], dtype=np.float64)
    diag[rows[dpos]] = M.data[dpos]
    return M, diag


def rhs(Y: np.ndarray, psi: np.ndarray, gates: np.ndarray, *, lamG: float, lamQ: float) -> np.ndarray:
    """F = lamG Y + lamQ B 1 psi^T (float32)."""
    F = Y * np.float32(lamG)
    F += (np.float32(lamQ) * gates.astype(np.float32))[:, None] * psi[None, :]
    return F


def upper_edges(W: sp.csr_array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, w) for each undirected edge once, i < j."""
    rows = np.repeat(np.arange(W.shape[0]), np.diff(W.indptr))
    cols = W.indices.astype(np.int64)
    up = rows < cols
    return rows[up], cols[up], W.data[up].astype(np.float64)


def edge_tension(U: np.ndarray, i: np.ndarray, j: np.ndarray, w: np.ndarray, scale: np.ndarray,
                 sqnorm: np.ndarray | None = None) -> np.ndarray:
    """w_ij ||s_i u_i - s_j u_j||^2 for the given edges (float64).

    Expanded as w (s_i^2 |u_i|^2 + s_j^2 |u_j|^2 - 2 s_i s_j u_i.u_j), so only the E edge
    inner products need a gather; ``sqnorm`` (|u_i|^2) may be passed when already known.
    """
    if i.size == 0:
        return np.zeros(0, dtype=np.float64)
    if sqnorm is None:
        sqnorm = np.einsum("ij,ij->i", U, U).astype(np.float64)
    g = np.einsum("ij,ij->i", U[i], U[j]).astype(np.float64)
    t = w * (scale[i] ** 2 * sqnorm[i] + scale[j] ** 2 * sqnorm[j] - 2.0 * scale[i] * scale[j] * g)
    return np.maximum(t, 0.0)  # round-off can leave tiny negatives on near-identical pairs


def path_energy(U: np.ndarray, chain: np.ndarray | None, weights: np.ndarray | None, lamP: float) -> float:
    """lamP * sum_t w_t ||u_{c_t} - u_{c_t+1}||^2 over the chain (0 without one)."""
    if lamP <= 0 or chain is None or len(chain) < 2:
        return 0.0
    d = U[chain[:-1]] - U[chain[1:]]
    return lamP * float(np.einsum("i,i->", weights, np.einsum("ij,ij->i", d, d).astype(np.float64)))


def energy_terms(U: np.ndarray, Y: np.ndarray, psi: np.ndarray, gates: np.ndarray, edges: tuple,
                 scale: np.ndarray, *, lamG: float, lamC: float, lamQ: float, lamP: float = 0.0,
                 chain: np.ndarray | None = None, chain_weights: np.ndarray | None = None) -> dict:
    """The four terms of H at U, each already multiplied by its lambda, and their total.

    Row reductions run in float32 with the per-row results summed in float64; no
    float64 copy of an (N, D) array is made.
    """
    diff = U - Y
    anchor = lamG * float(np.einsum("ij,ij->i", diff, diff).astype(np.float64).sum())
    sqnorm = np.einsum("ij,ij->i", U, U).astype(np.float64)
    coherence = lamC * float(edge_tension(U, *edges, scale, sqnorm=sqnorm).sum()) if lamC else 0.0
    up = np.einsum("ij,j->i", U, psi).astype(np.float64)
    pp = float(np.einsum("i,i->", psi.astype(np.float64), psi.astype(np.float64)))
    query = lamQ * float(np.einsum("i,i->", gates.astype(np.float64), np.maximum(sqnorm - 2 * up + pp, 0.0)))
    path = path_energy(U, chain, chain_weights, lamP)
    return {"anchor": anchor, "coherence": coherence, "query": query, "path": path,
            "total": anchor + coherence + query + path}
