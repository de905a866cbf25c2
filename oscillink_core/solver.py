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
from scipy.linalg import blas as _blas

_BLAS_AXPY = {"f": _blas.saxpy, "d": _blas.daxpy}
_BLAS_MIN_SIZE = 1 << 22

try:  # scipy's CSR x dense kernel, used to multiply into preallocated memory
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # pragma: no cover - private API moved: fall back to M @ X
    _csr_matvecs = None

__all__ = ["block_cg", "CGInfo", "ConvergenceWarning", "warn_unconverged"]


class ConvergenceWarning(UserWarning):
    """The conjugate-gradient solve stopped at maxiter above its tolerance."""


@dataclass(frozen=True)
class CGInfo:
    """What a solve returns besides the solution (both backends return this one type)."""

    iterations: int
    residual: float  # true relative residual ||M X - F||_F / ||F||_F
    converged: bool
    rtol: float


def _coldot(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Column inner products (einsum: no BLAS, so the sum order never depends on threads)."""
    return np.einsum("ij,ij->j", A, B).astype(np.float64)


def _fro(A: np.ndarray) -> float:
    return float(np.sqrt(_coldot(A, A).sum()))


def _dot(A: np.ndarray, B: np.ndarray) -> float:
    """Frobenius inner product, summed per column in a fixed order (thread-count independent)."""
    return float(_coldot(A, B).sum())


def _axpy(x: np.ndarray, y: np.ndarray, a: float) -> None:
    """y += a x in place (BLAS axpy on the flat arrays: element-wise, so thread-count independent)."""
    fn = _BLAS_AXPY.get(y.dtype.char)
    # BLAS only for large arrays: below that, waking BLAS worker threads costs more than it saves
    if fn is not None and y.size >= _BLAS_MIN_SIZE and x.flags.c_contiguous and y.flags.c_contiguous:
        fn(x.reshape(-1), y.reshape(-1), a=a)
    else:
        y += y.dtype.type(a) * x  # element-wise: the same bits as BLAS axpy


def _spmm_into(M: sp.csr_array, X: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = M @ X without allocating (scipy's CSR kernel writing into ``out``)."""
    if _csr_matvecs is None or M.dtype != X.dtype or M.indices.dtype != M.indptr.dtype:
        out[...] = M @ X
        return out
    out.fill(0)
    _csr_matvecs(M.shape[0], M.shape[1], X.shape[1], M.indptr, M.indices, M.data, X.ravel(), out.ravel())
    return out


def block_cg(M: sp.csr_array, F: np.ndarray, *, x0: np.ndarray | None = None, rtol: float = 1e-5,
             maxiter: int = 500, inv_diag: np.ndarray | None = None) -> tuple[np.ndarray, CGInfo]:
    """Solve the SPD system M X = F for all columns of F at once.

    Parameters
    ----------
    M : (N, N) symmetric positive definite sparse matrix.
    F : (N, D) right-hand sides.
    x0 : (N, D) initial guess; default Jacobi guess F / diag(M).
    rtol : relative Frobenius tolerance.
    maxiter : iteration cap; when it is reached above the tolerance, ``info.converged`` is False
        (this function does not warn: the caller does, with `warn_unconverged`).
    inv_diag : (N,) inverse of diag(M) (Jacobi preconditioner); computed when None.

    Returns
    -------
    X : (N, D) solution, dtype of F.
    info : CGInfo with the iteration count and the true relative residual.

    Notes
    -----
    This is preconditioned CG on the vectorised system (I_D kron M) vec(X) = vec(F): all
    columns advance together with shared step lengths, so each iteration is one sparse
    product plus a handful of in-place passes over the (N, D) arrays. The system has the
    spectrum of M, so the convergence bound is that of a single column. Inner products are
    summed per column in a fixed order, so results do not depend on the BLAS thread count.
    When diag(M) is constant the Jacobi preconditioner is a scalar and cancels out.
    """
    if F.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[1] != F.shape[0]:
        raise ValueError(f"shapes of M {M.shape} and F {F.shape} are incompatible")
    F = np.ascontiguousarray(F)
    dtype = F.dtype
    if M.dtype != dtype:
        M = M.astype(dtype)
    if inv_diag is None:
        inv_diag = 1.0 / M.diagonal()
    dinv = np.asarray(inv_diag, dtype=dtype).reshape(-1, 1)
    scalar_pre = bool(dinv.size == 0 or np.all(dinv == dinv[0, 0]))
    fnorm = _fro(F)
    if fnorm == 0.0:
        return np.zeros_like(F), CGInfo(0, 0.0, True, rtol)
    X = (F * dinv) if x0 is None else np.array(x0, dtype=dtype, copy=True)
    R, Q = np.empty_like(F), np.empty_like(F)
    Z = R if scalar_pre else np.empty_like(F)  # constant diag: the scalar cancels out of CG
    target = rtol * fnorm
    it = 0
    for _restart in range(4):  # restarts only guard against round-off drift of the residual
        np.subtract(F, _spmm_into(M, X, Q), out=R)  # the true residual, recomputed after every CG run
        rnorm = _fro(R)
        if rnorm <= target or it >= maxiter:
            break
        if not scalar_pre:
            np.multiply(R, dinv, out=Z)
        P = Z.copy()
        rz = _dot(R, Z)
        while it < maxiter:
            it += 1
            _spmm_into(M, P, Q)
            pq = _dot(P, Q)
            alpha = rz / pq if pq > 0 else 0.0
            _axpy(P, X, alpha)
            _axpy(Q, R, -alpha)
            rr = _dot(R, R)
            rnorm = float(np.sqrt(rr))
            if rnorm <= target:
                break
            if scalar_pre:
                rz_new = rr
            else:
                np.multiply(R, dinv, out=Z)
                rz_new = _dot(R, Z)
            beta = rz_new / rz if rz > 0 else 0.0
            P *= dtype.type(beta)
            P += Z
            rz = rz_new
    else:
        rnorm = _fro(F - M @ X)
    true_res = rnorm / fnorm  # always from an explicitly computed residual F - M X
    converged = true_res <= rtol
    return X, CGInfo(iterations=it, residual=true_res, converged=bool(converged), rtol=rtol)


def warn_unconverged(info: CGInfo, *, stacklevel: int = 3) -> None:
    """Issue the one `ConvergenceWarning` when a solve stopped above its tolerance."""
    if not info.converged:
        warnings.warn(f"conjugate gradient stopped after {info.iterations} iterations with relative residual "
                      f"{info.residual:.3g} > rtol {info.rtol:.3g}", ConvergenceWarning, stacklevel=stacklevel)
