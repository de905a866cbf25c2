"""Compiled kernels (numba) for the hot path: top-k, the mutual graph, the system, CG, statistics.

Optional: installed with ``pip install 'oscillink-core[fast]'``. Without numba (or with
``OSCILLINK_BACKEND=numpy``) the lattice uses the vectorised numpy/scipy functions of
`graph`, `energy`, `solver` and `ranking`, which compute the same quantities.

Why compiled code: at the sizes a reranker sees (N = 100 to 1,000 candidates) the numpy
path spends most of its time in call overhead, a dozen array passes per CG iteration and
scipy.sparse bookkeeping. Each kernel below is one pass (or one loop) in fixed order.

Determinism: every loop runs sequentially in a fixed order and every reduction is summed
in float64 in a fixed order (row-wise dots use 8 fixed partial sums), so results do not
depend on the thread count or the run. Products of float32 values are exact in float64.
The compiled solve also uses a stronger preconditioner (two Neumann terms instead of
Jacobi: half the iterations), so results agree with the numpy backend to the CG tolerance
(relative differences ~1e-5), not bit for bit; receipts record which backend produced them
(``solver.backend``, ``solver.method``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# reassoc + contract let LLVM vectorise the float64 reductions (8x faster than strict order);
# the vectorised order is fixed by the loop trip count, so results stay deterministic run to
# run and across thread counts on a given machine. No nnan/ninf: finiteness checks still work.
_FM = {"reassoc", "contract"}
_OPTS = {"cache": True, "nogil": True, "fastmath": _FM, "error_model": "numpy", "boundscheck": False}


@njit(inline="always", **{k: v for k, v in _OPTS.items() if k != "cache"})
def _rowdot(A, i, B, j):
    """sum_t A[i, t] * B[j, t], accumulated in float64 (products of float32 are exact)."""
    s = 0.0
    for t in range(A.shape[1]):
        s += np.float64(A[i, t]) * np.float64(B[j, t])
    return s


@njit(**_OPTS)
def prepare_rows(Y):
    """(squared row norms in float64, all-finite flag) in one pass over float32 Y."""
    n = Y.shape[0]
    sq = np.empty(n, np.float64)
    finite = True
    for i in range(n):
        s = _rowdot(Y, i, Y, i)
        sq[i] = s
        if not np.isfinite(s):
            finite = False
    return sq, finite


@njit(**_OPTS)
def divide_rows(Y, norms, out):
    """out = Y / norms[:, None] in float32 (norms float32; the bits of numpy's division)."""
    n, d = Y.shape
    for i in range(n):
        c = norms[i]
        for t in range(d):
            out[i, t] = Y[i, t] / c
    return out


@njit(inline="always", **{k: v for k, v in _OPTS.items() if k != "cache"})
def _before(v, j, w, i):
    """Does (v, j) come before (w, i) in the top-k order: larger value first, then lower index
    (the order of repeated argmax)?"""
    return v > w or (v == w and j < i)


@njit(inline="always", **{k: v for k, v in _OPTS.items() if k != "cache"})
def _insert(val, idx, r, k, cnt, v, j):
    """Offer (v, j) to row r's top list, which holds cnt entries in `_before` order; returns
    the new count. Entries may be offered in any order."""
    if cnt == k:
        if not _before(v, j, val[r, k - 1], idx[r, k - 1]):
            return cnt
        t = k - 1
    else:
        t = cnt
    while t > 0 and _before(v, j, val[r, t - 1], idx[r, t - 1]):
        val[r, t] = val[r, t - 1]
        idx[r, t] = idx[r, t - 1]
        t -= 1
    val[r, t] = v
    idx[r, t] = j
    return cnt + 1 if cnt < k else k


_TOPK_LANES = 8


@njit(inline="always", **{k: v for k, v in _OPTS.items() if k != "cache"})
def _group_max(x, n, nc, out):
    """out[c] = max(x[c], x[c + nc], x[c + 2 nc], ...) over the first n entries of x: the
    interleaved groups' maxima as element-wise maxima of contiguous slices (vectorised)."""
    for c in range(nc):
        out[c] = x[c]
    for lane in range(1, _TOPK_LANES):
        base = lane * nc
        for c in range(min(nc, n - base)):
            v = x[base + c]
            out[c] = v if v > out[c] else out[c]


@njit(**_OPTS)
def topk_rows(S, k, r0, r1, idx, val):
    """Top k of rows r0..r1-1 of S into idx/val (entries to exclude, such as self, already set
    to -inf; they are never selected, and a row with fewer than k others keeps idx = -1 in its
    last slots); values descending, ties to the lower index, as with repeated argmax.

    Per row: the entries are seen as nc = ceil(n / 8) interleaved groups (group c holds
    columns c, c + nc, c + 2 nc, ...), and the group maxima come from seven element-wise
    maxima of contiguous slices (vectorised); the group maxima are grouped once more the same
    way. The k-th largest of these super-group maxima, tau, is a lower bound on the row's k-th
    value (k maxima are k distinct entries), so only entries >= tau in groups whose maximum is
    >= tau can be in the top k: typically one or two dozen groups of 8 entries are walked.
    Rows are independent, so splitting the row range over threads gives identical results.
    """
    n = S.shape[1]
    nc = (n + _TOPK_LANES - 1) // _TOPK_LANES
    nc2 = (nc + _TOPK_LANES - 1) // _TOPK_LANES
    gmax = np.empty(nc, np.float32)
    smax = np.empty(nc2, np.float32)
    topv = np.empty((1, k), np.float32)  # the k largest (super-)group maxima
    topi = np.empty((1, k), np.int64)
    for r in range(r0, r1):
        for t in range(k):
            val[r, t] = -np.inf
            idx[r, t] = -1
        cnt = 0
        if nc < k:  # short rows: offer every entry
            for j in range(n):
                v = S[r, j]
                if v > -np.inf:
                    cnt = _insert(val, idx, r, k, cnt, v, j)
            continue
        _group_max(S[r], n, nc, gmax)
        # tau: the k-th largest of the super-group maxima (the same construction one level up)
        # when there are at least k of them, else of the group maxima
        src, m = gmax, nc
        if nc2 >= k:
            _group_max(gmax, nc, nc2, smax)
            src, m = smax, nc2
        got = 0
        for c in range(m):
            got = _insert(topv, topi, 0, k, got, src[c], c)
        tau = topv[0, k - 1]
        for c in range(nc):
            if gmax[c] >= tau and gmax[c] > -np.inf:
                for j in range(c, n, nc):
                    v = S[r, j]
                    if v >= tau and v > -np.inf:
                        cnt = _insert(val, idx, r, k, cnt, v, j)


@njit(**_OPTS)
def mutual_graph(idx, Yn, edge_floor):
    """CSR (indptr, indices, data) of the mutual-kNN graph, columns sorted in each row.

    Weight of edge i-j: the float64 dot of the unit rows (the same bits from either end),
    mapped through max(0, (s - floor) / (1 - floor)); non-positive weights are dropped.
    """
    n, k = idx.shape
    indptr = np.zeros(n + 1, np.int32)
    cols = np.empty(n * k, np.int32)
    data = np.empty(n * k, np.float32)
    buf = np.empty(k, np.int64)
    pos = 0
    for i in range(n):
        m = 0
        for t in range(k):
            j = idx[i, t]
            if j < 0 or j == i:
                continue
            for u in range(k):
                if idx[j, u] == i:
                    # insertion into the sorted buffer (skip repeats)
                    q = m
                    dup = False
                    for z in range(m):
                        if buf[z] == j:
                            dup = True
                    if not dup:
                        while q > 0 and buf[q - 1] > j:
                            buf[q] = buf[q - 1]
                            q -= 1
                        buf[q] = j
                        m += 1
                    break
        for t in range(m):
            j = buf[t]
            s = _rowdot(Yn, i, Yn, j)
            if edge_floor > 0:
                s = (s - edge_floor) / (1.0 - edge_floor)
            if s > 0:
                cols[pos] = j
                data[pos] = np.float32(s)
                pos += 1
        indptr[i + 1] = pos
    return indptr, cols[:pos].copy(), data[:pos].copy()


@njit(**_OPTS)
def degree_scale(indptr, w, degree_reg):
    """Degrees d (float64, summed in column order) and s = (d + tau)^-1/2 (0 where d + tau = 0)."""
    n = indptr.size - 1
    deg = np.zeros(n, np.float64)
    scale = np.zeros(n, np.float64)
    for i in range(n):
        s = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            s += np.float64(w[p])
        deg[i] = s
        den = s + degree_reg
        if den > 0:
            scale[i] = 1.0 / np.sqrt(den)
    return deg, scale


@njit(**_OPTS)
def system_arrays(indptr, cols, w, deg, scale, dvals, lamC):
    """M = lamC L + diag(dvals) as CSR with the diagonal inserted, and diag(M) (float64).

    L = S (D - W) S with S = diag(scale); dvals = lamG + lamQ * gates (chains use the scipy
    path). Rounding follows `graph.normalized_laplacian` and `energy.system_matrix`: L in
    float32, then lamC * L in float32, then the diagonal term added in float32.
    """
    n = indptr.size - 1
    nnz = indptr[n]
    mptr = np.empty(n + 1, np.int32)
    mcols = np.empty(nnz + n, np.int32)
    mdata = np.empty(nnz + n, np.float32)
    diag = np.empty(n, np.float64)
    c32 = np.float32(lamC)
    q = 0
    for i in range(n):
        mptr[i] = q
        dii = c32 * np.float32(deg[i] * scale[i] * scale[i]) + np.float32(dvals[i])
        placed = False
        for p in range(indptr[i], indptr[i + 1]):
            j = cols[p]
            if not placed and j > i:
                mcols[q] = i
                mdata[q] = dii
                q += 1
                placed = True
            mcols[q] = j
            mdata[q] = c32 * np.float32(-(np.float64(w[p]) * scale[i] * scale[j]))
            q += 1
        if not placed:
            mcols[q] = i
            mdata[q] = dii
            q += 1
        diag[i] = dii
    mptr[n] = q
    return mptr, mcols, mdata, diag


@njit(inline="always", **{k: v for k, v in _OPTS.items() if k != "cache"})
def _spmm_row(i, indptr, cols, data, X, out):
    """out[i] = (A X)[i] for the CSR matrix (indptr, cols, data). The row's entries are taken
    four at a time (then three, two, one) in storage order, so out[i] is loaded and stored once
    per four entries rather than once per entry; the order is fixed, so results repeat exactly.
    (Written out case by case: LLVM vectorises these loops better than a generic helper's.)"""
    d = X.shape[1]
    p = indptr[i]
    end = indptr[i + 1]
    first = True
    while p < end:
        m = end - p
        if m >= 4:
            a0 = data[p]
            a1 = data[p + 1]
            a2 = data[p + 2]
            a3 = data[p + 3]
            j0 = cols[p]
            j1 = cols[p + 1]
            j2 = cols[p + 2]
            j3 = cols[p + 3]
            if first:
                for t in range(d):
                    out[i, t] = a0 * X[j0, t] + a1 * X[j1, t] + a2 * X[j2, t] + a3 * X[j3, t]
            else:
                for t in range(d):
                    out[i, t] += a0 * X[j0, t] + a1 * X[j1, t] + a2 * X[j2, t] + a3 * X[j3, t]
            p += 4
        elif m == 3:
            a0 = data[p]
            a1 = data[p + 1]
            a2 = data[p + 2]
            j0 = cols[p]
            j1 = cols[p + 1]
            j2 = cols[p + 2]
            if first:
                for t in range(d):
                    out[i, t] = a0 * X[j0, t] + a1 * X[j1, t] + a2 * X[j2, t]
            else:
                for t in range(d):
                    out[i, t] += a0 * X[j0, t] + a1 * X[j1, t] + a2 * X[j2, t]
            p += 3
        elif m == 2:
            a0 = data[p]
            a1 = data[p + 1]
            j0 = cols[p]
            j1 = cols[p + 1]
            if first:
                for t in range(d):
                    out[i, t] = a0 * X[j0, t] + a1 * X[j1, t]
            else:
                for t in range(d):
                    out[i, t] += a0 * X[j0, t] + a1 * X[j1, t]
            p += 2
        else:
            a0 = data[p]
            j0 = cols[p]
            if first:
                for t in range(d):
                    out[i, t] = a0 * X[j0, t]
            else:
                for t in range(d):
                    out[i, t] += a0 * X[j0, t]
            p += 1
        first = False
    if first:  # an empty row
        for t in range(d):
            out[i, t] = 0.0


@njit(**_OPTS)
def _residual(indptr, cols, data, X, F, R):
    """R = F - M X; returns its squared Frobenius norm (float64)."""
    n, d = F.shape
    s = 0.0
    for i in range(n):
        _spmm_row(i, indptr, cols, data, X, R)
        for t in range(d):
            r = F[i, t] - R[i, t]
            R[i, t] = r
            s += np.float64(r) * np.float64(r)
    return s


@njit(**_OPTS)
def neumann_matrix(indptr, cols, data, dinv, out):
    """The preconditioner P^-1 = D^-1 - D^-1 O D^-1 as CSR values on M's own pattern (M = D + O,
    D = diag(M)), written into ``out``: dinv_i on the diagonal, -dinv_i m_ij dinv_j off it. Each
    value is the float64 product rounded once to float32, so P^-1 is exactly symmetric when M is.
    Returns how many rows store their diagonal entry (the caller checks it is every row: the
    pattern must hold the diagonal for P^-1 to be the series above)."""
    n = indptr.shape[0] - 1
    found = 0
    for i in range(n):
        di = np.float64(dinv[i])
        for p in range(indptr[i], indptr[i + 1]):
            j = cols[p]
            if j == i:
                out[p] = dinv[i]
                found += 1
            else:
                out[p] = np.float32(-(di * np.float64(data[p]) * np.float64(dinv[j])))
    return found


@njit(**_OPTS)
def cg_columns(indptr, cols, data, dinv, pdata, F, X, W, rtol, maxiter):
    """Preconditioned CG for M X = F, all columns of the contiguous F advancing together with
    shared step lengths, as in `solver.block_cg`; four fused passes per iteration. X is
    overwritten (initial guess: Jacobi, F / diag(M)); W holds four (n, d) work arrays; ``pdata``
    holds the preconditioner's values on M's pattern (`neumann_matrix`), so applying it is one
    sparse product like M's. Every array comes from the caller (numpy allocates them: see
    `_backend.block_cg`).

    Stops when ||R||_F <= rtol ||F||_F on the recursive residual, then confirms on the
    explicitly recomputed one. Returns (iterations, ||F - M X||_F^2, ||F||_F^2).

    Preconditioner: P^-1 = D^-1 - D^-1 O D^-1 (two Neumann terms; M = D + O, D = diag(M)).
    It is SPD for every valid M: with E = D^-1/2 O D^-1/2, P^-1 = D^-1/2 (I - E) D^-1/2 and
    D - O = lamG I + (positive semidefinite: I + S for the normalised Laplacian's part, the
    signless Laplacian for a chain's, diagonal gates) is positive definite, so I - E is.
    The preconditioned spectrum is that of I - E^2, which halves the iterations of plain
    Jacobi (D^-1) on the default energy, for one extra sparse pass per iteration.
    """
    n, d = F.shape
    ff = 0.0
    for i in range(n):
        c = dinv[i]
        for t in range(d):
            f = F[i, t]
            X[i, t] = f * c
            ff += np.float64(f) * np.float64(f)
    if ff == 0.0:
        X[:, :] = 0.0
        return 0, 0.0, 0.0
    R = W[0]
    P = W[1]
    Q = W[2]
    Z = W[3]
    target2 = rtol * rtol * ff
    it = 0
    rr = 0.0
    fresh = False  # does rr hold the explicitly recomputed residual?
    for _restart in range(4):
        rr = _residual(indptr, cols, data, X, F, R)
        fresh = True
        if rr <= target2 or it >= maxiter:
            break
        fresh = False
        rz = 0.0
        for i in range(n):
            _spmm_row(i, indptr, cols, pdata, R, P)
            for t in range(d):
                rz += np.float64(R[i, t]) * np.float64(P[i, t])
        while it < maxiter:
            it += 1
            pq = 0.0
            for i in range(n):  # Q = M P and <P, Q>
                _spmm_row(i, indptr, cols, data, P, Q)
                for t in range(d):
                    pq += np.float64(P[i, t]) * np.float64(Q[i, t])
            alpha = rz / pq if pq > 0 else 0.0
            a32 = np.float32(alpha)
            rr = 0.0
            for i in range(n):  # X += a P, R -= a Q, <R, R>
                for t in range(d):
                    X[i, t] += a32 * P[i, t]
                    r = R[i, t] - a32 * Q[i, t]
                    R[i, t] = r
                    rr += np.float64(r) * np.float64(r)
            if rr <= target2:
                break
            rz_new = 0.0
            for i in range(n):  # Z = P^-1 R and <R, Z>
                _spmm_row(i, indptr, cols, pdata, R, Z)
                for t in range(d):
                    rz_new += np.float64(R[i, t]) * np.float64(Z[i, t])
            beta = rz_new / rz if rz > 0 else 0.0
            b32 = np.float32(beta)
            for i in range(n):  # P = Z + beta P
                for t in range(d):
                    P[i, t] = Z[i, t] + b32 * P[i, t]
            rz = rz_new
    if not fresh:
        rr = _residual(indptr, cols, data, X, F, R)
    return it, rr, ff


@njit(**_OPTS)
def rhs(X, psi, gates, lamG, lamQ, F):
    """F = lamG X + lamQ diag(gates) 1 psi^T in float32 (written into F)."""
    n, d = X.shape
    g32 = np.float32(lamG)
    q32 = np.float32(lamQ)
    for i in range(n):
        c = q32 * gates[i]
        for t in range(d):
            F[i, t] = X[i, t] * g32 + c * psi[t]
    return F


@njit(**_OPTS)
def state_stats(U, A, psi, gates, indptr, cols, w, scale, lamG, lamC, lamQ, with_anchor):
    """At state U (anchors A): cos(U_i, psi), per-node tension (lamC-weighted, summed over
    incident edges) and the anchor, coherence and query energy terms (each times its lambda)."""
    n, d = U.shape
    pp = 0.0
    for t in range(d):
        pp += np.float64(psi[t]) * np.float64(psi[t])
    qn = np.sqrt(pp)
    sq = np.empty(n, np.float64)
    align = np.zeros(n, np.float64)
    anchor = 0.0
    query = 0.0
    for i in range(n):
        s = 0.0
        up = 0.0
        e = 0.0
        for t in range(d):
            u = np.float64(U[i, t])
            s += u * u
            up += u * np.float64(psi[t])
        if with_anchor:
            for t in range(d):
                x = np.float64(U[i, t]) - np.float64(A[i, t])
                e += x * x
        anchor += e
        sq[i] = s
        den = np.sqrt(s) * qn
        if den > 0:
            align[i] = up / den
        query += np.float64(gates[i]) * max(s - 2.0 * up + pp, 0.0)
    tension = np.zeros(n, np.float64)
    coherence = 0.0
    if lamC != 0.0:
        for i in range(n):
            si = scale[i]
            for p in range(indptr[i], indptr[i + 1]):
                j = cols[p]
                if j <= i:
                    continue
                sj = scale[j]
                g = _rowdot(U, i, U, j)
                tt = np.float64(w[p]) * (si * si * sq[i] + sj * sj * sq[j] - 2.0 * si * sj * g)
                tt = lamC * max(tt, 0.0)
                tension[i] += tt
                tension[j] += tt
                coherence += tt
    return align, tension, lamG * anchor, coherence, lamQ * query


@njit(**_OPTS)
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@njit(**_OPTS)
def _union(parent, a, b):
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra != rb:  # the smaller index becomes the root: labels are the smallest member
        if ra < rb:
            parent[rb] = ra
        else:
            parent[ra] = rb


@njit(**_OPTS)
def n_components(indptr, cols):
    """Number of connected components of the graph with CSR structure (indptr, cols)."""
    n = indptr.size - 1
    parent = np.arange(n)
    for i in range(n):
        for p in range(indptr[i], indptr[i + 1]):
            _union(parent, i, cols[p])
    c = 0
    for i in range(n):
        if _find(parent, i) == i:
            c += 1
    return c


@njit(**_OPTS)
def dup_labels(idx, sim, threshold):
    """Near-duplicate group label per node (its group's smallest index) or -1: components of
    the kNN pairs with cosine >= threshold, singletons excluded."""
    n, k = idx.shape
    parent = np.arange(n)
    for i in range(n):
        for t in range(k):
            j = idx[i, t]
            if j >= 0 and sim[i, t] >= threshold:
                _union(parent, i, j)
    size = np.zeros(n, np.int64)
    root = np.empty(n, np.int64)
    for i in range(n):
        r = _find(parent, i)
        root[i] = r
        size[r] += 1
    labels = np.full(n, -1, np.int64)
    for i in range(n):
        if size[root[i]] > 1:
            labels[i] = root[i]
    return labels
