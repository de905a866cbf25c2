"""The public API: ranking quality on easy cases, bad input, edge cases, threads, fuzzing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oscillink_core import LatticeParams, Oscillink, OscillinkLattice, rerank, strip_timings

from ._core_helpers import backend, clustered  # noqa: F401


def cosine_order(Y, psi):
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    return np.argsort(-(Yn @ (psi / np.linalg.norm(psi))), kind="stable")


@pytest.mark.parametrize("seed", range(5))
def test_where_cosine_is_perfect_the_default_bundle_is_perfect(seed):
    # 20 relevant items among 80 random ones; the published package scored P@10 = 0.01 here
    Y, psi, relevant = clustered(n_rel=20, n_noise=80, d=128, seed=seed)
    assert set(cosine_order(Y, psi)[:10].tolist()) <= relevant  # cosine: P@10 = 1
    lat = Oscillink(Y, kneighbors=6)
    lat.set_query(psi)
    lat.settle()
    got = [b["index"] for b in lat.bundle(k=10)]
    assert set(got) <= relevant
    res = rerank(psi, Y, k=20)
    assert set(res.indices) == relevant  # P@20 = 1 too


def test_published_quickstart_runs_with_the_alias():
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(80, 128)).astype("float32")
    psi = (Y[:10].mean(0) / np.linalg.norm(Y[:10].mean(0))).astype("float32")
    lat = OscillinkLattice(Y, kneighbors=6, lamG=1.0, lamC=0.5, lamQ=4.0)
    lat.set_query(psi)
    lat.settle()
    bundle = lat.bundle(k=5)
    assert {b["index"] for b in bundle} <= set(range(10))
    assert all(isinstance(b["score"], float) and isinstance(b["id"], int) for b in bundle)
    assert lat.receipt()["energy"]["deltaH"] > 0


def test_bundle_is_sorted_and_components_are_plain():
    Y, psi, _ = clustered(seed=1)
    res = rerank(psi, Y, k=8, ids=[f"doc-{i}" for i in range(len(Y))])
    assert [it.rank for it in res] == list(range(1, 9))
    assert res.scores == sorted(res.scores, reverse=True)
    assert all(type(it.score) is float and type(it.index) is int for it in res)
    assert res[0].id == f"doc-{res[0].index}"
    assert len(res.top_k(3)) == 3 and res.receipt["bundle"][0]["id"] == res[0].id


def test_dedup_demotes_exact_duplicates_and_mmr_diversifies():
    Y, psi, _ = clustered(seed=2)
    Yd = np.vstack([Y, Y[cosine_order(Y, psi)[0]][None, :]])  # an exact copy of the best item
    pair = {int(cosine_order(Y, psi)[0]), len(Y)}
    plain = rerank(psi, Yd, k=3, params={"lamC": 0.0})
    assert {plain[0].index, plain[1].index} == pair
    dedup = rerank(psi, Yd, k=3, params={"lamC": 0.0, "dedup_threshold": 0.99, "dup_action": "demote"})
    assert len({it.index for it in dedup} & pair) == 1
    reorder = rerank(psi, Yd, k=3, params={"lamC": 0.0, "dedup_threshold": 0.99, "dup_action": "reorder"})
    assert {reorder[0].index, reorder[1].index} == pair  # nothing leaves the ranking
    assert reorder[1].near_duplicate_of == reorder[0].id
    mmr = rerank(psi, Yd, k=3, params={"lamC": 0.0, "mmr_lambda": 0.5})
    assert len({it.index for it in mmr} & pair) == 1
    # with every candidate a duplicate of another, the demoted ones still fill the bundle
    Y2 = np.vstack([Y[:3], Y[:3]])
    r = rerank(psi, Y2, k=6, params={"dedup_threshold": 0.99, "dup_action": "demote"})
    assert sorted(r.indices) == list(range(6))
    assert sum(it.near_duplicate_of is not None for it in r) == 3


def test_near_duplicate_group_is_reordered_by_outside_support():
    # two near-identical candidates: the one whose other neighbours are the relevant cluster
    # (supported by the rest of the evidence) moves ahead of its twin, which sits among noise
    rng = np.random.default_rng(11)
    d = 64
    topic = rng.normal(size=d)
    topic /= np.linalg.norm(topic)
    cluster = topic + 0.5 * rng.normal(size=(12, d)) / np.sqrt(d)
    noise = rng.normal(size=(60, d))
    base = topic + 0.45 * rng.normal(size=d) / np.sqrt(d)
    other = rng.normal(size=d)
    other /= np.linalg.norm(other)
    supported = base
    isolated = base + 0.2 * other  # a near-copy (cosine 0.985) drifting toward the query's other part
    Y = np.vstack([cluster, noise, supported, isolated])
    i_sup, i_iso = len(Y) - 2, len(Y) - 1
    psi = topic + 0.5 * other
    plain = rerank(psi, Y, k=len(Y), params={"lamC": 0.0, "dedup_threshold": None}).indices
    assert plain.index(i_iso) < plain.index(i_sup)  # cosine puts the drifting twin first
    res = rerank(psi, Y, k=len(Y), params={"lamC": 0.0, "dedup_threshold": 0.95, "dup_keep": "support"})
    got = res.indices
    assert got.index(i_sup) < got.index(i_iso)
    assert sorted([got.index(i_sup), got.index(i_iso)]) == sorted([plain.index(i_sup), plain.index(i_iso)])
    assert [i for i in got if i not in (i_sup, i_iso)] == [i for i in plain if i not in (i_sup, i_iso)]


def test_resolve_groups_vectorised_rules():
    from oscillink_core.ranking import near_duplicate_groups, outside_support, resolve_groups

    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([0, -1, 0, 1, 1])
    priority = np.array([0.1, 0.0, 0.5, 0.2, 0.9])
    new, dem, rep = resolve_groups(score, labels, priority, "reorder")
    assert new.tolist() == [0.7, 0.8, 0.9, 0.5, 0.6]
    assert rep.tolist() == [2, -1, 2, 4, 4] and not dem.any()
    new, dem, rep = resolve_groups(score, labels, priority, "demote")
    assert dem.tolist() == [True, False, False, True, False]
    assert new[2] == 0.9 and new[4] == 0.6
    idx = np.array([[2, 1], [0, 3], [0, 4], [4, 1], [3, 0]])
    sim = np.array([[0.95, 0.3], [0.3, 0.2], [0.95, 0.1], [0.97, 0.4], [0.97, 0.6]])
    labs = near_duplicate_groups(idx, sim, 0.9)
    assert labs[0] == labs[2] != labs[3] == labs[4] and labs[1] == -1
    np.testing.assert_allclose(outside_support(idx, sim, labs), [0.3, 0.25, 0.1, 0.4, 0.6])


def test_lattice_changes_order_when_coherence_is_strong():
    # guard against a ranking that ignores the graph: with strong coupling an item whose
    # neighbours are all relevant overtakes an isolated item of slightly higher cosine
    Y, psi, _ = clustered(seed=3)
    base = rerank(psi, Y, k=30, params={"lamC": 0.0}).indices
    strong = rerank(psi, Y, k=30, params={"lamC": 20.0, "lamQ": 0.5, "coh_weight": 1.0}).indices
    assert base != strong


# ------------------------------------------------------------------ bad input
BAD = [
    (lambda Y, q: (Y[0], q), "2-D"),
    (lambda Y, q: (Y[:0], q), "N = 0"),
    (lambda Y, q: (Y, q[:-1]), "dimension mismatch"),
    (lambda Y, q: (np.where(np.arange(Y.size).reshape(Y.shape) == 5, np.nan, Y), q), "NaN or inf"),
    (lambda Y, q: (np.where(np.arange(Y.size).reshape(Y.shape) == 5, np.inf, Y), q), "NaN or inf"),
    (lambda Y, q: (np.vstack([Y, np.zeros((1, Y.shape[1]))]), q), "all-zero"),
    (lambda Y, q: (Y, np.zeros_like(q)), "all zeros"),
    (lambda Y, q: (Y, q * np.nan), "psi contains NaN"),
    (lambda Y, q: (Y.astype(str), q), "real numbers"),
]


@pytest.mark.parametrize("make,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_raises_value_error_naming_the_problem(make, message):
    Y, psi, _ = clustered(n_rel=5, n_noise=10, d=8)
    Yb, qb = make(Y, psi)
    with pytest.raises(ValueError, match=message):
        rerank(qb, Yb, k=3)


@pytest.mark.parametrize("kwargs,message", [
    ({"kneighbors": 15}, "kneighbors=15 must be < N=15"),
    ({"lamC": -1.0}, "lamC must be a finite number >= 0"),
    ({"lamQ": -0.1}, "lamQ must be a finite number >= 0"),
    ({"lamG": 0.0}, "lamG must be a finite number > 0"),
    ({"params": {"lamX": 1}}, "unknown lattice parameter"),
    ({"params": {"mmr_lambda": 0}}, "mmr_lambda"),
])
def test_bad_parameters(kwargs, message):
    Y, _, _ = clustered(n_rel=5, n_noise=10, d=8)
    with pytest.raises(ValueError, match=message):
        Oscillink(Y, **kwargs)


def test_bad_gates_ids_k_and_call_order():
    Y, psi, _ = clustered(n_rel=5, n_noise=10, d=8)
    lat = Oscillink(Y)
    with pytest.raises(ValueError, match="set_query"):
        lat.settle()
    with pytest.raises(ValueError, match="gates has length 3 but there are N = 15"):
        lat.set_query(psi, gates=np.ones(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lat.set_query(psi, gates=np.full(15, 2.0))
    lat.set_query(psi)
    with pytest.raises(ValueError, match="settle"):
        lat.bundle(3)
    lat.settle()
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        lat.bundle(0)
    assert len(lat.bundle(100)) == 15  # k above N returns all
    with pytest.raises(ValueError, match="unique"):
        rerank(psi, Y, k=2, ids=["a"] * 15)
    with pytest.raises(ValueError, match="ids has 2 entries"):
        rerank(psi, Y, k=2, ids=["a", "b"])


# ------------------------------------------------------------------ edge cases
def test_single_candidate():
    res = rerank(np.ones(4), np.array([[1.0, 2.0, 3.0, 4.0]]), k=5)
    assert len(res) == 1 and res[0].index == 0
    assert res.receipt["graph"]["edges"] == 0 and res.receipt["solver"]["converged"]


def test_duplicates_isolated_nodes_and_components_solve():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 16))
    block1 = a + 0.01 * rng.normal(size=(5, 16))
    block2 = -a + 0.01 * rng.normal(size=(5, 16))
    dup = np.vstack([block1[:1]] * 3)
    lone = rng.normal(size=(1, 16)) * 0 + np.eye(16)[:1] * 3
    Y = np.vstack([block1, block2, dup, lone])
    lat = Oscillink(Y, kneighbors=3)
    lat.set_query(a[0])
    info = lat.settle()
    r = lat.receipt(k=4)
    assert info["converged"] and r["graph"]["components"] >= 2
    assert r["graph"]["isolated"] >= 1
    assert np.isfinite(lat.U).all()


def test_callers_arrays_are_never_modified():
    Y, psi, _ = clustered(d=16)
    Y64 = Y.astype(np.float64)
    gates = np.linspace(0.1, 1, len(Y))
    Y32 = np.ascontiguousarray(Y, dtype=np.float32)  # the compiled rerank reads this one in place
    copies = [Y64.copy(), psi.copy(), gates.copy(), Y32.copy()]
    lat = Oscillink(Y64, dedup_threshold=0.9, mmr_lambda=0.7)
    lat.set_query(psi, gates=gates)
    lat.add_chain([0, 1, 2])
    lat.settle()
    lat.bundle(10)
    lat.receipt()
    rerank(psi, Y64, k=5, gates=gates)
    rerank(psi, Y32, k=5, gates=gates)
    for original, now in zip(copies, [Y64, psi, gates, Y32], strict=True):
        assert np.array_equal(original, now)
    assert Y64.flags.writeable and Y32.flags.writeable


def test_params_objects_profiles_and_kwargs_agree(tmp_path):
    from oscillink_core import save_profile

    Y, psi, _ = clustered(d=16)
    p = LatticeParams(lamC=1.5, kneighbors=4, dedup_threshold=0.95)
    path = save_profile(p, tmp_path / "profile.json", note="test")
    a = rerank(psi, Y, k=5, params=p)
    b = rerank(psi, Y, k=5, params=str(path))
    c = rerank(psi, Y, k=5, params={"lamC": 1.5, "kneighbors": 4, "dedup_threshold": 0.95})
    d = rerank(psi, Y, k=5, params=p.to_profile())
    sigs = {x.receipt["state_sig"] for x in (a, b, c, d)}
    assert len(sigs) == 1
    assert rerank(psi, Y, k=5).receipt["state_sig"] not in sigs


# ------------------------------------------------------------------ concurrency
def test_rerank_from_eight_threads_matches_serial():
    rng = np.random.default_rng(0)
    jobs = []
    for s in range(24):
        Y, psi, _ = clustered(n_rel=10 + s, n_noise=60, d=32, seed=s)
        jobs.append((psi, Y, dict(lamC=0.2 * (s % 4), dedup_threshold=0.95 if s % 2 else None)))
    serial = [strip_timings(rerank(q, Y, k=7, params=p).receipt) for q, Y, p in jobs]
    barrier = threading.Barrier(8)

    def run(job):
        q, Y, p = job
        try:
            barrier.wait(timeout=5)
        except threading.BrokenBarrierError:
            pass
        return strip_timings(rerank(q, Y, k=7, params=p).receipt)

    with ThreadPoolExecutor(max_workers=8) as ex:
        threaded = list(ex.map(run, jobs))
    assert threaded == serial
    del rng


# ------------------------------------------------------------------ property-based
finite = st.one_of(st.floats(min_value=-1e3, max_value=1e3, width=32),
                   st.sampled_from([0.0, 1e-30, np.nan, np.inf, -np.inf, 1e30]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 12), d=st.integers(0, 6), k=st.integers(-1, 15), data=st.data())
def test_fuzz_rerank_only_raises_value_error(n, d, k, data):
    Y = np.array(data.draw(st.lists(st.lists(finite, min_size=d, max_size=d), min_size=n, max_size=n)),
                 dtype=np.float64).reshape(n, d)
    qd = data.draw(st.sampled_from([d, max(d - 1, 0), d + 1]))
    q = np.array(data.draw(st.lists(finite, min_size=qd, max_size=qd)), dtype=np.float64)
    params = data.draw(st.sampled_from([None, {"lamC": 2.0}, {"dedup_threshold": 0.9, "mmr_lambda": 0.5},
                                        {"gating": "diffusion"}, {"kneighbors": 1}]))
    try:
        res = rerank(q, Y, k=k, params=params)
    except ValueError:
        return
    assert 1 <= len(res) <= n
    assert all(np.isfinite(it.score) for it in res)
