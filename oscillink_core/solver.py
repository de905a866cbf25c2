"""Block preconditioned conjugate gradient for M X = F with many right-hand sides.

All D columns are iterated at once (one sparse-times-dense product per iteration), each
column with its own step lengths, so every column runs exactly the CG recurrence it would
run alone. Stopping rule: ||M X - F||_F <= rtol ||F||_F on the recursively updated
residual, confirmed by recomputing the true residual at the end.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["block_cg", "CGInfo", "ConvergenceWarning"]


class ConvergenceWarning(UserWarning):
    """The conjugate-gradient solve stopped at maxiter above its tolerance."""


@dataclass(frozen=True)
class CGInfo:
    iterations: int
    residual: float  # true relative residual ||M X - F||_F / ||F||_F
    converged: bool
    rtol: float


def _coldot(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Column inner products (einsum: no BLAS, so the sum order never depends on threads)."""
    return np.einsum("ij,ij->j", A, B).astype(np.float64)


def _fro(A: np.ndarray) -> float:
    return float(np.sqrt(_coldot(A, A).sum()))


def block_cg(M: sp.csr_array, F: np.ndarray, *, x0: np.ndarray | None = None, rtol: float = 1e-5,
             maxiter: int = 500, inv_diag: np.ndarray | None = None) -> tuple[np.ndarray, CGInfo]:
    """Solve the SPD system M X = F for all columns of F at once.

    Parameters
    ----------
    M : (N, N) symmetric positive definite sparse matrix.
    F : (N, D) right-hand sides.
    x0 : (N, D) initial guess; default Jacobi guess F / diag(M).
    rtol : relative Frobenius tolerance.
    maxiter : iteration cap; a ConvergenceWarning is issued when it is reached.
    inv_diag : (N,) inverse of diag(M) (Jacobi preconditioner); computed when None.

    Returns
    -------
    X : (N, D) solution, dtype of F.
    info : CGInfo with the iteration count and the true relative residual.
    """
    if F.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[1] != F.shape[0]:
        raise ValueError(f"shapes of M {M.shape} and F {F.shape} are incompatible")
    dtype = F.dtype
    if inv_diag is None:
        inv_diag = 1.0 / M.diagonal()
    dinv = np.asarray(inv_diag, dtype=dtype).reshape(-1, 1)
    fnorm = _fro(F)
    if fnorm == 0.0:
        return np.zeros_like(F), CGInfo(0, 0.0, True, rtol)
    X = (F * dinv) if x0 is None else np.array(x0, dtype=dtype, copy=True)
    target = rtol * fnorm
    it = 0
    for _restart in range(4):  # restarts only guard against round-off drift of the residual
        R = F - M @ X  # the true residual, recomputed after every CG run
        rnorm = _fro(R)
        if rnorm <= target or it >= maxiter:
            break
        Z = R * dinv
        P = Z.copy()
        rz = _coldot(R, Z)
        while it < maxiter:
            it += 1
            Q = M @ P
            pq = _coldot(P, Q)
            alpha = np.divide(rz, pq, out=np.zeros_like(rz), where=pq > 0).astype(dtype)
            X += P * alpha
            R -= Q * alpha
            rnorm = _fro(R)
            if rnorm <= target:
                break
            np.multiply(R, dinv, out=Z)
            rz_new = _coldot(R, Z)
            beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0).astype(dtype)
            P *= beta
            P += Z
            rz = rz_new
    else:
        rnorm = _fro(F - M @ X)
    true_res = rnorm / fnorm  # always from an explicitly computed residual F - M X
    converged = true_res <= rtol
    if not converged:
        warnings.warn(f"conjugate gradient stopped after {it} iterations with relative residual "
                      f"{true_res:.3g} > rtol {rtol:.3g}", ConvergenceWarning, stacklevel=2)
    return X, CGInfo(iterations=it, residual=true_res, converged=bool(converged), rtol=rtol)
