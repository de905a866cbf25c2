"""Receipts (schema, state_sig, HMAC, determinism), chain prior, diffusion gates, save/load."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from oscillink_core import (
    Oscillink,
    canonical_json,
    compute_diffusion_gates,
    load,
    rerank,
    save,
    sign_receipt,
    strip_timings,
    validate_receipt,
    verify_receipt,
)

from ._core_helpers import backend, clustered  # noqa: F401


def settled_lattice(seed=0, **params):
    Y, psi, _ = clustered(seed=seed)
    lat = Oscillink(Y, ids=[f"p{i}" for i in range(len(Y))], **params)
    lat.set_query(psi)
    lat.settle()
    return lat, Y, psi


def test_receipt_validates_and_is_json():
    lat, *_ = settled_lattice()
    lat.add_chain([0, 1, 2])
    lat.settle()
    r = lat.receipt(k=5)
    validate_receipt(r)
    json.dumps(r, allow_nan=False)
    for key in ("anchor", "coherence", "query", "path", "total", "total_at_Y", "deltaH"):
        assert key in r["energy"]
    assert r["graph"]["edges"] > 0 and r["inputs"]["n"] == 100
    ids = [f"p{i}" for i in range(100)]
    assert r["inputs"]["candidate_set_hash"] == hashlib.sha256(canonical_json(ids)).hexdigest()
    assert [b["id"] for b in r["bundle"]] == [b["id"] for b in lat.bundle(5)]
    assert r["chain"]["nodes"] == ["p0", "p1", "p2"]


def test_schema_rejects_broken_receipts():
    lat, *_ = settled_lattice()
    r = lat.receipt(k=3)
    for mutate in (lambda x: x.pop("state_sig"), lambda x: x.__setitem__("state_sig", "xyz"),
                   lambda x: x["energy"].__setitem__("deltaH", "big"),
                   lambda x: x["solver"].__setitem__("iterations", -1)):
        bad = copy.deepcopy(r)
        mutate(bad)
        with pytest.raises(ValueError, match="schema"):
            validate_receipt(bad)


def _leaf_paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaf_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaf_paths(v, prefix + (i,))
    else:
        yield prefix


def test_hmac_detects_a_change_to_any_field():
    lat, *_ = settled_lattice()
    r = sign_receipt(lat.receipt(k=4), "secret")
    assert verify_receipt(r, "secret") and verify_receipt(r, b"secret")
    assert not verify_receipt(r, "other")
    paths = [p for p in _leaf_paths(r) if p[0] != "signature"]
    assert len(paths) > 40
    for path in paths:
        bad = copy.deepcopy(r)
        node = bad
        for key in path[:-1]:
            node = node[key]
        v = node[path[-1]]
        node[path[-1]] = (not v) if isinstance(v, bool) else (v + 1 if isinstance(v, (int, float))
                                                             else (None if v is None else str(v) + "x"))
        if v is None:
            node[path[-1]] = 0
        assert not verify_receipt(bad, "secret"), path
    extra = copy.deepcopy(r)
    extra["note"] = "added"
    assert not verify_receipt(extra, "secret")
    unsigned = {k: v for k, v in r.items() if k != "signature"}
    assert not verify_receipt(unsigned, "secret")


def test_state_sig_binds_every_input():
    Y, psi, _ = clustered(d=16)
    ids = [f"d{i}" for i in range(len(Y))]
    base = rerank(psi, Y, k=5, ids=ids).receipt["state_sig"]
    Y2 = Y.copy()
    Y2[50, 3] += 1e-3
    g = np.ones(len(Y))
    g[7] = 0.5
    variants = {
        "Y": rerank(psi, Y2, k=5, ids=ids),
        "ids": rerank(psi, Y, k=5, ids=ids[::-1]),
        "psi": rerank(psi + 1e-3, Y, k=5, ids=ids),
        "gates": rerank(psi, Y, k=5, ids=ids, gates=g),
        "params": rerank(psi, Y, k=5, ids=ids, params={"lamC": 0.51}),
        "k": rerank(psi, Y, k=6, ids=ids),
    }
    for name, res in variants.items():
        assert res.receipt["state_sig"] != base, name
    assert rerank(psi, Y, k=5, ids=ids).receipt["state_sig"] == base


def test_same_input_gives_byte_identical_receipt():
    Y, psi, _ = clustered(d=32)
    a = rerank(psi, Y, k=6, params={"dedup_threshold": 0.9})
    b = rerank(psi.copy(), Y.copy(), k=6, params={"dedup_threshold": 0.9})
    assert canonical_json(strip_timings(a.receipt)) == canonical_json(strip_timings(b.receipt))
    assert "timings_ms" in a.receipt


_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from oscillink_core import rerank, canonical_json, strip_timings
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(1500, 96)).astype(np.float32)
    res = rerank(Y[:20].mean(0), Y, k=10, params={"dedup_threshold": 0.9})
    sys.stdout.write(canonical_json(strip_timings(res.receipt)).decode())
""")


@pytest.mark.slow
def test_receipt_is_identical_across_thread_counts():
    outs = []
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        outs.append(subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True,
                                   check=True).stdout)
    assert outs[0] == outs[1] and len(outs[0]) > 500


def test_null_points_come_from_existing_edges():
    lat, *_ = settled_lattice(lamC=2.0)
    nulls = lat.null_points(z_threshold=2.0)
    W = lat.adjacency
    index = {i: n for n, i in enumerate(lat.ids)}
    assert nulls["count"] >= 1
    for e in nulls["edges"]:
        assert W[index[e["source"]], index[e["target"]]] > 0
        assert e["z"] > 2.0
    assert nulls["edges"] == sorted(nulls["edges"], key=lambda e: -e["z"])


# ------------------------------------------------------------------ chain prior
def _strong_chain(lat, length=4):
    W = lat.adjacency.tocsr()
    start = int(np.argmax(np.diff(W.indptr)))
    chain, seen = [start], {start}
    while len(chain) < length:
        row = W[[chain[-1]], :]
        nxt = [int(j) for j in row.indices[np.argsort(-row.data)] if int(j) not in seen]
        if not nxt:
            break
        chain.append(nxt[0])
        seen.add(nxt[0])
    return chain


def test_chain_along_strong_edges_passes_and_broken_link_fails():
    Y, psi, relevant = clustered(n_rel=30, n_noise=70, seed=5)
    lat = Oscillink(Y, kneighbors=6)
    lat.set_query(psi)
    good = _strong_chain(lat)
    assert len(good) == 4
    lat.add_chain(good, lamP=0.2)
    lat.settle()
    ok = lat.chain_receipt()
    assert ok["verdict"] is True
    assert all(link["graph_edge"] for link in ok["links"])
    # replace the last link by a jump to the candidate least similar to the chain's end
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    far = int(np.argmin(Yn @ Yn[good[-2]]))
    broken = good[:-1] + [far]
    lat.add_chain(broken, lamP=0.2)
    lat.settle()
    bad = lat.chain_receipt()
    assert bad["verdict"] is False
    assert bad["weakest_link"]["k"] == len(broken) - 2
    assert bad["weakest_link"]["target"] == far
    assert lat.receipt()["chain"]["verdict"] is False


def test_chain_prior_changes_only_through_the_path_term():
    lat, *_ = settled_lattice()
    before = lat.energy()
    lat.add_chain([3, 40, 77], lamP=0.5, weights=[1.0, 2.0])
    lat.settle()
    after = lat.energy()
    assert before["path"] == 0 and after["path"] > 0
    with pytest.raises(ValueError, match="weights"):
        lat.add_chain([1, 2, 3], weights=[1.0])
    with pytest.raises(ValueError, match="chain indices"):
        lat.add_chain([1, 500])


# ------------------------------------------------------------------ diffusion gates
def test_diffusion_gates_solve_the_screened_system():
    Y, psi, relevant = clustered(seed=6)
    gamma = 0.15
    g = compute_diffusion_gates(Y, psi, kneighbors=6, gamma=gamma)
    assert g.shape == (len(Y),) and g.min() >= 0 and g.max() == pytest.approx(1.0)
    lat = Oscillink(Y, kneighbors=6)
    L = lat.laplacian.toarray().astype(np.float64)
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    s = np.maximum(Yn @ (psi / np.linalg.norm(psi)), 0)
    lhs = (L + gamma * np.eye(len(Y))) @ g.astype(np.float64)
    scale = float(lhs @ s / (s @ s))  # gates are h / max(h): (L + gamma I) g = s / max(h)
    np.testing.assert_allclose(lhs, scale * s, atol=1e-4)
    assert np.mean(g[list(relevant)]) > 3 * np.mean(np.delete(g, list(relevant)))
    lat2 = Oscillink(Y, gating="diffusion")
    lat2.set_query(psi)
    lat2.settle()
    assert lat2.receipt()["inputs"]["gates"]["mode"] == "diffusion"
    np.testing.assert_allclose(lat2.gates, g, atol=1e-5)


# ------------------------------------------------------------------ persistence
def test_save_load_round_trip_exact(tmp_path):
    lat, *_ = settled_lattice(dedup_threshold=0.95)
    lat.set_gates(np.linspace(0.2, 1.0, lat.N))
    lat.add_chain([9, 3, 5, 1], lamP=0.3, weights=[0.5, 1.0, 2.0])
    lat.settle()
    r1 = lat.receipt(k=6)
    path = save(lat, tmp_path / "lat.npz")
    lat2 = load(path)
    lat2.settle()
    r2 = lat2.receipt(k=6)
    assert canonical_json(strip_timings(r1)) == canonical_json(strip_timings(r2))
    assert lat2._chain.tolist() == [9, 3, 5, 1]
    assert lat2._chain_w.tolist() == [0.5, 1.0, 2.0]
    assert np.array_equal(lat2.U, lat.U)
    lat3 = Oscillink.load(path)
    assert lat3.ids == lat.ids
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable lattice"):
        load(tmp_path / "junk.npz")
