"""Mathematical invariants of the lattice: graph, Laplacian, system, solution, energy."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

from oscillink_core import ConvergenceWarning, Oscillink
from oscillink_core.energy import path_laplacian
from oscillink_core.graph import exact_knn, faiss_knn, mutual_knn_graph
from oscillink_core.solver import block_cg

from ._core_helpers import backend, brute_mutual_knn, clustered, dense_laplacian, energy_dense  # noqa: F401

PARAMS = [
    dict(),
    dict(lamC=2.0, lamQ=0.5),
    dict(lamC=1.0, lamQ=1.0, degree_reg=0.5, edge_floor=0.3),
    dict(lamC=0.0, lamQ=4.0),
    dict(lamC=3.0, lamQ=0.0, kneighbors=3),
]


@pytest.fixture(params=range(len(PARAMS)), ids=lambda i: f"params{i}")
def settled(request):
    Y, psi, _ = clustered(seed=request.param)
    lat = Oscillink(Y, params=PARAMS[request.param])
    gates = np.random.default_rng(request.param).uniform(0.2, 1.0, size=len(Y))
    lat.set_query(psi, gates=gates)
    lat.settle(rtol=1e-6)
    # the energy acts on unit rows (params.normalize defaults to True)
    X = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    return lat, X, psi / np.linalg.norm(psi), gates


def test_adjacency_matches_dense_reference():
    Y, _, _ = clustered(n_rel=15, n_noise=45, seed=3)
    lat = Oscillink(Y, kneighbors=5)
    W = lat.adjacency.toarray()
    ref = brute_mutual_knn(Y, 5)
    assert np.array_equal(W > 0, ref > 0)
    np.testing.assert_allclose(W, ref, atol=1e-5)


def test_graph_is_symmetric_sparse_and_degree_bounded():
    Y, _, _ = clustered(seed=1)
    lat = Oscillink(Y, kneighbors=6)
    W = lat.adjacency
    assert sp.issparse(W) and W.format == "csr"
    assert abs(W - W.T).max() == 0
    assert np.diff(W.indptr).max() <= 6
    assert (W.data > 0).all()
    L = lat.laplacian
    assert abs(L - L.T).max() < 1e-7


@pytest.mark.parametrize("tau", [0.0, 0.7])
def test_laplacian_matches_dense_formula_and_is_psd(tau):
    Y, _, _ = clustered(seed=2)
    lat = Oscillink(Y, kneighbors=6, degree_reg=tau)
    L = lat.laplacian.toarray().astype(np.float64)
    ref = dense_laplacian(lat.adjacency.toarray().astype(np.float64), tau)
    np.testing.assert_allclose(L, ref, atol=1e-6)
    assert np.linalg.eigvalsh(L).min() > -1e-6
    if tau == 0.0:  # L_sym: unit diagonal on non-isolated nodes, zero rows on isolated ones
        deg = np.diff(lat.adjacency.indptr)
        np.testing.assert_allclose(np.diag(L)[deg > 0], 1.0, atol=1e-6)


def test_system_matrix_matches_definition(settled):
    lat, Y, psi, gates = settled
    p = lat.params
    M, diag = lat.system()
    L = dense_laplacian(lat.adjacency.toarray(), p.degree_reg)
    ref = p.lamG * np.eye(lat.N) + p.lamC * L + p.lamQ * np.diag(gates)
    np.testing.assert_allclose(M.toarray(), ref, atol=1e-5)
    np.testing.assert_allclose(diag, np.diag(ref), atol=1e-5)
    F = lat.rhs()
    np.testing.assert_allclose(F, p.lamG * Y + p.lamQ * gates[:, None] * psi[None, :], atol=1e-5)


def test_residual_under_tolerance(settled):
    lat, *_ = settled
    M, _ = lat.system()
    F = lat.rhs().astype(np.float64)
    U = lat.U.astype(np.float64)
    res = np.linalg.norm(M.astype(np.float64) @ U - F) / np.linalg.norm(F)
    assert res <= 1.5e-6  # settle(rtol=1e-6); float32 storage of U adds ~1e-7
    receipt = lat.receipt()
    assert receipt["solver"]["converged"] is True
    assert receipt["solver"]["residual"] <= 1e-6


def test_solution_matches_dense_solve(settled):
    lat, *_ = settled
    M, _ = lat.system()
    exact = np.linalg.solve(M.toarray().astype(np.float64), lat.rhs().astype(np.float64))
    np.testing.assert_allclose(lat.U, exact, atol=2e-5)


def test_energy_terms_match_dense_and_ustar_is_the_minimum(settled):
    lat, Y, psi, gates = settled
    p = lat.params
    L = dense_laplacian(lat.adjacency.toarray().astype(np.float64), p.degree_reg)
    e = lat.energy()
    U = lat.U
    assert e["total"] == pytest.approx(energy_dense(U, Y, psi, gates, L, p.lamG, p.lamC, p.lamQ), rel=1e-6)
    assert e["coherence"] == pytest.approx(p.lamC * np.trace(U.T.astype(np.float64) @ L @ U), rel=1e-5, abs=1e-8)
    rng = np.random.default_rng(0)
    for _ in range(5):  # every perturbation raises the energy: U* is the minimiser
        V = U + 1e-2 * rng.normal(size=U.shape).astype(np.float32)
        assert lat.energy(V)["total"] > e["total"]


def test_delta_h_is_energy_drop_and_quadratic_identity(settled):
    lat, Y, *_ = settled
    r = lat.receipt()
    e_y, e_u = lat.energy(Y), lat.energy()
    assert r["energy"]["deltaH"] == pytest.approx(e_y["total"] - e_u["total"], rel=1e-6)
    assert r["energy"]["deltaH"] >= 0
    M, _ = lat.system()
    Dlt = (Y - lat.U).astype(np.float64)
    quad = float(np.sum(Dlt * (M.astype(np.float64) @ Dlt)))  # H(Y) - H(U*) = (Y-U*)^T M (Y-U*)
    assert r["energy"]["deltaH"] == pytest.approx(quad, rel=1e-4)


def test_gradient_vanishes_at_ustar(settled):
    lat, *_ = settled
    M, _ = lat.system()
    grad = 2 * (M.astype(np.float64) @ lat.U.astype(np.float64) - lat.rhs())
    assert np.linalg.norm(grad) <= 1e-5 * np.linalg.norm(lat.rhs()) * 4


def test_block_cg_against_scipy_spsolve_and_reports_maxiter():
    rng = np.random.default_rng(5)
    A = sp.random_array((60, 60), density=0.1, rng=rng)
    A = (A + A.T) + 5 * sp.eye_array(60)
    A = sp.csr_array(A.astype(np.float32))
    F = rng.normal(size=(60, 7)).astype(np.float32)
    X, info = block_cg(A, F, rtol=1e-6)
    ref = sp.linalg.spsolve(A.astype(np.float64).tocsc(), F.astype(np.float64))
    np.testing.assert_allclose(X, ref, atol=1e-4)
    assert info.converged and info.residual <= 1e-6
    _, info = block_cg(A, F, rtol=1e-12, maxiter=1)  # the solver reports; the lattice warns
    assert not info.converged and info.iterations == 1


def test_settle_warns_once_when_the_solve_stops_at_maxiter():
    Y, psi, _ = clustered(n_rel=10, n_noise=50, d=16, seed=2)
    lat = Oscillink(Y)  # the autouse backend fixture pins OSCILLINK_BACKEND to each backend
    assert lat.backend == os.environ["OSCILLINK_BACKEND"]
    lat.set_query(psi)
    with pytest.warns(ConvergenceWarning) as caught:
        info = lat.settle(rtol=1e-12, maxiter=1)
    assert len([w for w in caught if issubclass(w.category, ConvergenceWarning)]) == 1
    assert caught[0].filename == __file__  # points at the caller's line
    assert not info["converged"] and lat.receipt()["solver"]["converged"] is False


def test_lamc_zero_reproduces_cosine_order():
    Y, psi, _ = clustered(seed=4)
    lat = Oscillink(Y, kneighbors=6, lamC=0.0, screen="off")  # the ranking alone (screening decides separately)
    lat.set_query(psi)
    lat.settle()
    got = [b["index"] for b in lat.bundle(k=30)]
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    cos = Yn @ (psi / np.linalg.norm(psi))
    assert got == np.argsort(-cos, kind="stable")[:30].tolist()


def test_exact_knn_blocked_equals_single_block(monkeypatch):
    import oscillink_core.graph as g

    Y, _, _ = clustered(n_rel=50, n_noise=250, seed=6)
    Yn = (Y / np.linalg.norm(Y, axis=1, keepdims=True)).astype(np.float32)
    i1, s1 = exact_knn(Yn, 6)
    monkeypatch.setattr(g, "_BLOCK_BYTES", 4 * 300 * 7)  # 7 rows per block
    i2, s2 = g.exact_knn(Yn, 6)
    assert np.array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)


@pytest.mark.slow
def test_faiss_knn_recall_against_exact():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(200, 384))
    Y = centres[rng.integers(0, 200, size=12000)] + 0.6 * rng.normal(size=(12000, 384))
    Yn = (Y / np.linalg.norm(Y, axis=1, keepdims=True)).astype(np.float32)
    ie, se = exact_knn(Yn, 6)
    ia, sa = faiss_knn(Yn, 6, seed=0)
    hits = sum(len(set(a) & set(e)) for a, e in zip(ia.tolist(), ie.tolist(), strict=False))
    assert hits / ie.size >= 0.98
    We = mutual_knn_graph(ie, se, len(Yn))
    Wa = mutual_knn_graph(ia, sa, len(Yn))
    edges_e = set(zip(*We.nonzero(), strict=False))
    edges_a = set(zip(*Wa.nonzero(), strict=False))
    assert len(edges_e & edges_a) / len(edges_e) >= 0.97


def test_large_n_uses_faiss_and_keeps_no_dense_matrix():
    rng = np.random.default_rng(8)
    Y = rng.normal(size=(3000, 32)).astype(np.float32)
    lat = Oscillink(Y, kneighbors=6, knn="faiss")
    lat.set_query(Y[0])
    lat.settle()
    r = lat.receipt(k=5)
    assert r["graph"]["method"] == "faiss-ivf"
    assert r["bundle"][0]["id"] == 0
    for name, value in vars(lat).items():  # nothing N x N is kept
        if isinstance(value, np.ndarray):
            assert value.size < 3000 * 3000 // 10, name


def test_path_laplacian_touches_chain_nodes_only():
    Lp = path_laplacian(10, np.array([7, 2, 5]), np.array([1.0, 2.0]))
    rows = set(Lp.nonzero()[0].tolist()) | set(Lp.nonzero()[1].tolist())
    assert rows == {2, 5, 7}
    x = np.arange(10, dtype=float)
    assert float(x @ (Lp @ x)) == pytest.approx(1.0 * (7 - 2) ** 2 + 2.0 * (2 - 5) ** 2)
