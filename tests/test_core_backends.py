"""The compiled (numba) backend against the numpy one, and its determinism.

Both backends compute the same quantities. They build the same graph; their solves (different
preconditioners) agree to the CG tolerance, not bit for bit.
The numba kernels must also be deterministic: the same receipt whatever the thread split.
"""

from __future__ import annotations

import numpy as np
import pytest

from oscillink_core import Oscillink, rerank
from oscillink_core._backend import available_backends
from oscillink_core._kernels import resolve_backend
from oscillink_core.graph import _topk_rows
from oscillink_core.receipts import canonical_json, strip_timings

from ._core_helpers import clustered

pytestmark = pytest.mark.skipif("numba" not in available_backends(), reason="numba not installed")


def _pair(Y, psi, **kw):
    out = []
    for b in ("numba", "numpy"):
        lat = Oscillink(Y, backend=b, **kw)
        lat.set_query(psi)
        lat.settle()
        out.append(lat)
    return out


def _inputs():
    Y, psi, _ = clustered(n_rel=30, n_noise=170, d=48, seed=3)
    dup = np.vstack([Y, Y[:5], Y[10:12] + 1e-4])  # exact and near duplicates
    far = np.random.default_rng(1).normal(size=(3, 48)).astype(np.float32) * 50  # likely isolated
    return [(Y, psi), (dup, psi), (np.vstack([Y, far]), psi)]


@pytest.mark.parametrize("case", range(3))
def test_backends_agree_on_graph_state_energy_and_ranking(case):
    Y, psi = _inputs()[case]
    a, b = _pair(Y, psi)
    ia, _ = a.knn_lists()
    ib, _ = b.knn_lists()
    assert np.array_equal(ia, ib)  # same similarity matrix, same top-k and tie order
    Wa, Wb = a.adjacency, b.adjacency
    assert np.array_equal(Wa.indptr, Wb.indptr) and np.array_equal(Wa.indices, Wb.indices)
    np.testing.assert_allclose(Wa.data, Wb.data, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.U, b.U, rtol=0, atol=2e-5)
    ea, eb = a.energy(), b.energy()
    for term in ("anchor", "coherence", "query", "total"):
        assert ea[term] == pytest.approx(eb[term], rel=1e-5, abs=1e-6)
    ca, cb = a.components(), b.components()
    for key in ("align", "cosine"):
        np.testing.assert_allclose(ca[key], cb[key], rtol=1e-5, atol=1e-6)
    # tension is a difference of near-equal squared norms: it carries the solves' 1e-5 tolerance
    np.testing.assert_allclose(ca["tension"], cb["tension"], rtol=2e-4, atol=1e-5)
    ra, rb = a.receipt(k=10), b.receipt(k=10)
    assert ra["graph"] == rb["graph"]
    # the compiled solve's two-term Neumann preconditioner needs fewer iterations than Jacobi
    assert 1 <= ra["solver"]["iterations"] <= rb["solver"]["iterations"]
    assert (ra["solver"]["method"], rb["solver"]["method"]) == ("block-pcg-neumann2", "block-pcg-jacobi")
    assert (ra["solver"]["backend"], rb["solver"]["backend"]) == ("numba", "numpy")
    # rankings agree wherever the scores are not within round-off of each other
    sa = np.array([x["score"] for x in a.bundle(10)])
    assert np.all(np.diff(sa) <= 0)
    assert [x["id"] for x in a.bundle(10)] == [x["id"] for x in b.bundle(10)]


def test_numba_solution_satisfies_the_system():
    Y, psi, _ = clustered(n_rel=40, n_noise=260, d=40, seed=5)
    lat = Oscillink(Y, backend="numba")
    lat.set_query(psi, gates=np.linspace(0.2, 1.0, len(Y)))
    info = lat.settle()
    M, _ = lat.system()
    F = lat.rhs()
    res = np.linalg.norm(F.astype(np.float64) - M.astype(np.float64) @ lat.U.astype(np.float64)) / np.linalg.norm(F)
    assert info["converged"] and res <= 2e-5
    dense = np.linalg.solve(M.toarray().astype(np.float64), F.astype(np.float64))
    np.testing.assert_allclose(lat.U, dense, atol=1e-4)


def test_compiled_sparse_product_matches_scipy_for_every_row_length():
    """The kernels' sparse product takes a row's entries four at a time, then three, two, one:
    rows of 0 to 11 entries cover every case and their combinations."""
    import scipy.sparse as sp

    from oscillink_core import _backend

    J = _backend._jit()
    rng = np.random.default_rng(7)
    n, d = 60, 37  # d not a multiple of the vector width
    rows, cols = [], []
    for i in range(n):
        m = i % 12
        c = rng.choice(n, size=m, replace=False)
        rows += [i] * m
        cols += c.tolist()
    A = sp.csr_array((rng.normal(size=len(rows)).astype(np.float32), (rows, cols)), shape=(n, n))
    A.sort_indices()
    assert set(np.diff(A.indptr)) == set(range(12))
    X = rng.normal(size=(n, d)).astype(np.float32)
    F = rng.normal(size=(n, d)).astype(np.float32)
    R = np.full((n, d), np.nan, np.float32)  # every entry must be written, empty rows included
    rr = J._residual(A.indptr.astype(np.int32), A.indices.astype(np.int32), A.data, X, F, R)
    want = F.astype(np.float64) - A.astype(np.float64) @ X.astype(np.float64)
    np.testing.assert_allclose(R, want, rtol=1e-5, atol=1e-5)
    assert rr == pytest.approx(float((want**2).sum()), rel=1e-5)


def test_compiled_preconditioner_is_the_two_term_neumann_series_and_symmetric():
    import scipy.sparse as sp

    from oscillink_core import _backend

    J = _backend._jit()
    Y, psi, _ = clustered(n_rel=20, n_noise=80, d=24, seed=4)
    lat = Oscillink(Y, backend="numba")
    lat.set_query(psi, gates=np.linspace(0.3, 1.0, len(Y)))
    M, diag = lat.system()
    M.sort_indices()
    dinv = (1.0 / diag).astype(np.float32)
    ind, ptr = M.indices.astype(np.int32), M.indptr.astype(np.int32)
    P = np.empty(M.data.shape, np.float32)
    assert J.neumann_matrix(ptr, ind, M.data, dinv, P) == M.shape[0]  # every diagonal entry stored
    Pm = M.copy()
    Pm.data = P
    Pd = Pm.toarray().astype(np.float64)
    Dinv = np.diag(dinv.astype(np.float64))
    O = M.toarray().astype(np.float64) - np.diag(np.diag(M.toarray().astype(np.float64)))
    np.testing.assert_allclose(Pd, Dinv - Dinv @ O @ Dinv, rtol=1e-6, atol=1e-9)
    assert np.array_equal(Pd, Pd.T)  # exactly symmetric, so CG's theory applies as stated
    assert np.linalg.eigvalsh(Pd).min() > 0
    no_diag = sp.csr_array(M - sp.diags_array(M.diagonal()))
    no_diag.eliminate_zeros()
    from oscillink_core._kernels import compiled_cg

    with pytest.raises(RuntimeError, match="diagonal"):
        compiled_cg(no_diag.indptr.astype(np.int32), no_diag.indices.astype(np.int32),
                    no_diag.data.astype(np.float32), diag, lat.rhs(), rtol=1e-5, maxiter=50)


def test_numba_chain_prior_uses_the_chain_system():
    Y, psi, _ = clustered(n_rel=20, n_noise=60, d=32, seed=2)
    a, b = _pair(Y, psi)
    for lat in (a, b):
        lat.add_chain([0, 5, 9, 14], lamP=1.0)
        lat.settle()
    np.testing.assert_allclose(a.U, b.U, atol=2e-5)
    assert a.energy()["path"] == pytest.approx(b.energy()["path"], rel=1e-5)
    assert a.chain_receipt()["verdict"] == b.chain_receipt()["verdict"]


def test_receipt_does_not_depend_on_the_thread_split(monkeypatch):
    from oscillink_core import _backend

    Y, psi, _ = clustered(n_rel=60, n_noise=540, d=384, seed=7)
    monkeypatch.setattr(_backend, "_SPLIT_MIN", 0)  # the column split of large inputs, at this size
    monkeypatch.setattr(_backend, "_PARALLEL_MIN", 0)  # its halves (and the top-k's) on two threads
    par = rerank(psi, Y, k=10, backend="numba", sign_key="k")
    monkeypatch.setattr(_backend, "_PARALLEL_MIN", 1 << 60)  # the same halves, one thread
    ser = rerank(psi, Y, k=10, backend="numba", sign_key="k")
    assert canonical_json(strip_timings(par.receipt)) == canonical_json(strip_timings(ser.receipt))
    monkeypatch.setattr(_backend, "_SPLIT_MIN", 1 << 60)  # one block: same answer to round-off
    one = rerank(psi, Y, k=10, backend="numba")
    assert one.ids == par.ids
    np.testing.assert_allclose(one.scores, par.scores, rtol=1e-5)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [7, 300, 1000])  # one group level, two levels
@pytest.mark.parametrize("ties", [True, False])
def test_compiled_topk_matches_repeated_argmax(seed, n, ties):
    from oscillink_core import _jit

    rng = np.random.default_rng(seed)
    if ties:
        S = rng.integers(-3, 4, size=(n, n)).astype(np.float32) / 4  # many exact ties
    else:
        S = rng.normal(size=(n, n)).astype(np.float32)
    S[np.arange(n), np.arange(n)] = -np.inf
    S[0, : n // 2] = -np.inf  # a row with fewer finite entries
    for k in (1, 6, 17):
        if k > int(np.isfinite(S).sum(axis=1).min()):  # exact_knn always has k finite entries per row
            continue
        idx = np.empty((n, k), np.int64)
        val = np.empty((n, k), np.float32)
        _jit.topk_rows(S, k, 0, n, idx, val)
        ref_i, ref_v = _topk_rows(S.copy(), k)
        assert np.array_equal(idx, ref_i) and np.array_equal(val, ref_v)


def test_backend_choice_and_errors(monkeypatch):
    assert resolve_backend("numpy") == "numpy"
    assert resolve_backend("NUMBA") == "numba"
    monkeypatch.setenv("OSCILLINK_BACKEND", "numpy")
    assert resolve_backend() == "numpy"
    assert Oscillink(np.eye(4, dtype=np.float32) + 0.1).backend == "numpy"
    monkeypatch.setenv("OSCILLINK_BACKEND", "auto")
    assert resolve_backend(wait=True) == "numba"  # waits for the kernels; from then on "auto" is numba
    assert resolve_backend() == "numba"
    with pytest.raises(ValueError, match="backend must be"):
        resolve_backend("cuda")
    with pytest.raises(ValueError, match="backend must be"):
        rerank(np.ones(3), np.eye(3) + 0.1, k=2, backend="fortran")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_numba_path_rejects_non_finite_and_zero_rows(bad):
    Y = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    Y[3, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        Oscillink(Y, backend="numba")
    Y[3, 1] = 0.0
    Y[4] = 0.0
    with pytest.raises(ValueError, match="all-zero row"):
        Oscillink(Y, backend="numba")


def test_without_numba_auto_falls_back_to_numpy(monkeypatch):
    from oscillink_core import _backend, _kernels

    monkeypatch.setattr(_backend, "_JIT", None)
    monkeypatch.setattr(_backend, "_JIT_ERROR", "No module named 'numba'")
    monkeypatch.setattr(_kernels, "_READY", __import__("threading").Event())
    monkeypatch.setattr(_kernels, "_NUMBA", None)
    monkeypatch.delenv("OSCILLINK_BACKEND", raising=False)
    assert _backend.available_backends() == ["numpy"]
    assert resolve_backend() == "numpy"
    res = rerank(np.ones(3), np.eye(3) + 0.1, k=2)
    assert res.receipt["solver"]["backend"] == "numpy"
    with pytest.raises(ValueError, match=r"oscillink-core\[fast\]"):
        resolve_backend("numba")


@pytest.mark.parametrize("seed", range(25))
def test_backends_rank_alike_on_random_inputs(seed):
    """Random shapes, spreads and parameters, no duplicate rows: the same bundle on both backends.
    (Among exact duplicate rows the order of the copies follows round-off, so it may differ.)"""
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(2, 300)), int(rng.integers(1, 80))
    centres = rng.normal(size=(max(1, n // 20), d))
    Y = centres[rng.integers(0, len(centres), n)] + rng.uniform(0.05, 1.5) * rng.normal(size=(n, d))
    q = Y[rng.integers(0, n)] + 0.3 * rng.normal(size=d)
    params = [None, {"lamC": 0.5}, {"mmr_lambda": 0.7}, {"gating": "diffusion"},
              {"kneighbors": 12, "lamQ": 3.0}][seed % 5]
    a = rerank(q, Y, k=min(n, 10), params=params, backend="numba")
    b = rerank(q, Y, k=min(n, 10), params=params, backend="numpy")
    assert a.ids == b.ids
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert a.receipt["graph"] == b.receipt["graph"]


def test_warmup_compiles_every_kernel_and_restores_settings():
    from oscillink_core import _backend, warmup

    before = (_backend._PARALLEL_MIN, _backend._SPLIT_MIN)
    info = warmup("numba")
    assert info["backend"] == "numba" and info["seconds"] >= 0
    assert {"topk_rows", "mutual_graph", "system_arrays", "cg_columns", "state_stats", "dup_labels",
            "n_components", "prepare_rows", "divide_rows", "rhs", "degree_scale",
            "neumann_matrix"} <= set(info["kernels"])
    assert (_backend._PARALLEL_MIN, _backend._SPLIT_MIN) == before
    assert warmup("numpy") == {"backend": "numpy", "seconds": pytest.approx(0, abs=0.5), "kernels": []}


def test_compiled_topk_in_blocked_exact_knn_matches_numpy(monkeypatch):
    from oscillink_core import graph
    from oscillink_core._backend import compiled_topk

    Y, _, _ = clustered(n_rel=40, n_noise=260, d=24, seed=9)
    Yn = (Y / np.linalg.norm(Y, axis=1, keepdims=True)).astype(np.float32)
    monkeypatch.setattr(graph, "_BLOCK_BYTES", 4 * len(Yn) * 37)  # blocks of 37 rows
    ref = graph.exact_knn(Yn, 6)  # same blocks: the same similarity bits to select from
    got = graph.exact_knn(Yn, 6, topk=compiled_topk)
    assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


def test_rerank_results_do_not_alias_the_callers_or_later_calls():
    (Y, psi), (Y2, psi2) = _inputs()[0], _inputs()[1]
    Y = np.ascontiguousarray(Y, dtype=np.float32)  # read in place by rerank's own lattice
    first = rerank(psi, Y, k=8, backend="numba", sign_key="k")
    kept = canonical_json(strip_timings(first.receipt)), first.scores
    rerank(psi2, Y2, k=8, backend="numba")
    assert (canonical_json(strip_timings(first.receipt)), first.scores) == kept
    lat = Oscillink(Y, backend="numba")  # a lattice the caller keeps has its own copy
    lat.set_query(psi)
    lat.settle()
    assert not np.shares_memory(lat._Y, Y)
    again = rerank(psi, Y.copy(), k=8, backend="numba", sign_key="k")  # same values, other memory
    assert canonical_json(strip_timings(again.receipt)) == kept[0]


def test_auto_answers_on_numpy_until_the_kernels_are_loaded_then_switches(monkeypatch):
    """The default never waits for compilation: before the kernels are loaded a new lattice runs
    on numpy (and the loading starts on a background thread); once loaded, on numba. Receipts
    record which one ran. (Deterministic: the thread starts inside the first call's choice.)"""
    import threading

    from oscillink_core import _kernels

    monkeypatch.delenv("OSCILLINK_BACKEND", raising=False)
    monkeypatch.setattr(_kernels, "_READY", threading.Event())
    monkeypatch.setattr(_kernels, "_COMPILER", None)
    Y, psi, _ = clustered(seed=12)
    first = rerank(psi, Y, k=5)
    assert first.receipt["solver"]["backend"] == "numpy"
    thread = _kernels._COMPILER
    assert thread is not None and thread.name == "oscillink-compile"
    thread.join(600)
    assert _kernels.compiled_ready()
    later = rerank(psi, Y, k=5)
    assert later.receipt["solver"]["backend"] == "numba"
    assert strip_timings(rerank(psi, Y, k=5, backend="numpy").receipt) == strip_timings(first.receipt)
    assert _kernels._COMPILER is thread  # started once per process


def test_explicit_numba_waits_and_auto_with_wait_loads_now(monkeypatch):
    import threading

    from oscillink_core import _kernels

    monkeypatch.setattr(_kernels, "_READY", threading.Event())
    monkeypatch.setattr(_kernels, "_COMPILER", None)
    assert Oscillink(np.eye(6, dtype=np.float32) + 0.1, backend="numba").backend == "numba"
    assert _kernels._COMPILER is None  # an explicit request compiles in the calling thread
    assert _kernels.resolve_backend("auto", wait=True) == "numba" and _kernels.compiled_ready()
