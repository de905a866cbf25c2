"""Shared builders for the core tests: small synthetic embeddings with known structure."""

from __future__ import annotations

import numpy as np
import pytest


def clustered(n_rel: int = 20, n_noise: int = 80, d: int = 64, spread: float = 0.35, seed: int = 0):
    """Relevant items around a centre, noise items random; psi is the centre direction.

    Returns (Y, psi, relevant_index_set)."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=d)
    centre /= np.linalg.norm(centre)
    rel = centre + spread * rng.normal(size=(n_rel, d)) / np.sqrt(d)
    noise = rng.normal(size=(n_noise, d))
    Y = np.vstack([rel, noise]).astype(np.float32)
    perm = rng.permutation(len(Y))
    Y = Y[perm]
    relevant = {int(np.flatnonzero(perm == i)[0]) for i in range(n_rel)}
    return Y, centre.astype(np.float32), relevant


def dense_laplacian(W: np.ndarray, tau: float = 0.0) -> np.ndarray:
    """Independent dense construction of (D + tau)^-1/2 (D - W) (D + tau)^-1/2."""
    d = W.sum(axis=1)
    s = np.zeros_like(d)
    s[d + tau > 0] = 1.0 / np.sqrt(d[d + tau > 0] + tau)
    return (np.diag(d) - W) * s[:, None] * s[None, :]


def brute_mutual_knn(Y: np.ndarray, k: int) -> np.ndarray:
    """Dense reference mutual-kNN adjacency with symmetrised cosine weights (ties: lower index)."""
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    S = Yn.astype(np.float64) @ Yn.T.astype(np.float64)
    n = len(Y)
    np.fill_diagonal(S, -np.inf)
    nbrs = [set(np.lexsort((np.arange(n), -S[i]))[:k].tolist()) for i in range(n)]
    W = np.zeros((n, n))
    for i in range(n):
        for j in nbrs[i]:
            if i in nbrs[j] and S[i, j] > 0:
                W[i, j] = S[i, j]
    return W


def energy_dense(U, Y, psi, b, L, lamG, lamC, lamQ):
    """H(U) evaluated with dense linear algebra, independent of the package."""
    U = U.astype(np.float64)
    Y = Y.astype(np.float64)
    dq = U - psi[None, :].astype(np.float64)
    return (lamG * np.sum((U - Y) ** 2) + lamC * np.trace(U.T @ L @ U)
            + lamQ * np.sum(b[:, None] * dq * dq))


def _backends() -> list[str]:
    from oscillink_core._backend import available_backends

    return available_backends()


BACKENDS = _backends()


@pytest.fixture(autouse=True, params=BACKENDS)
def backend(request, monkeypatch):
    """Run every core test on each available backend (numba and numpy)."""
    monkeypatch.setenv("OSCILLINK_BACKEND", request.param)
    return request.param
