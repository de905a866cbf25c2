"""Exact state round trips (save/load) and what happens when threads share a lattice."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from oscillink_core import Oscillink, available_backends, load, rerank, save, strip_timings
from oscillink_core.receipts import canonical_json

from ._core_helpers import clustered

BACKENDS = available_backends()


def _settled(Y, psi, **kw):
    lat = Oscillink(Y, **kw)
    lat.set_query(psi)
    lat.settle()
    return lat


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(6))
def test_save_load_is_exact(tmp_path, backend, seed):
    rng = np.random.default_rng(seed)
    Y, _, _ = clustered(n_rel=15, n_noise=60, d=24, seed=seed)
    psi = rng.normal(size=24) * 3.7  # an arbitrary scale: its normalisation must come back bit for bit
    kw = [{}, {"gating": "diffusion"}, {"normalize": False}][seed % 3]
    lat = Oscillink(Y, backend=backend, **kw)
    lat.set_query(psi, gates=rng.uniform(0.2, 1, len(Y)) if seed % 2 else None)
    if seed >= 3:
        lat.add_chain([1, 4, 9], lamP=0.4, weights=[1.0, 0.5])
    lat.settle()
    path = save(lat, tmp_path / "lat")
    back = load(path)
    assert back.backend == backend
    assert np.array_equal(back._psi_raw, lat._psi_raw) and np.array_equal(back._psi, lat._psi)
    assert np.array_equal(back.gates, lat.gates)
    back.settle()
    assert np.array_equal(back.U, lat.U)
    assert back.state_sig(5) == lat.state_sig(5)
    assert canonical_json(strip_timings(back.receipt(k=5))) == canonical_json(strip_timings(lat.receipt(k=5)))


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba not installed")
def test_load_keeps_the_backend_and_can_be_told_another(tmp_path):
    Y, psi, _ = clustered(seed=3)
    for made in ("numpy", "numba"):
        p = save(_settled(Y, psi, backend=made), tmp_path / made)
        assert load(p).backend == made
        assert Oscillink.load(p).backend == made
        other = "numba" if made == "numpy" else "numpy"
        assert load(p, backend=other).backend == other


def test_state_dict_round_trip_without_a_query_and_with_copies():
    Y, psi, _ = clustered(seed=1)
    lat = Oscillink(Y, backend="numpy")
    state = lat.state_dict()
    state["arrays"]["Y"][0, 0] += 1.0  # a copy: the lattice is unchanged
    assert lat._Y[0, 0] != state["arrays"]["Y"][0, 0]
    back = Oscillink.from_state(lat.state_dict())
    with pytest.raises(ValueError, match="set_query"):
        back.settle()
    back.set_query(psi)
    lat.set_query(psi)
    back.settle()
    lat.settle()
    assert back.state_sig(3) == lat.state_sig(3)


def test_a_file_that_is_not_a_lattice_is_refused_clearly(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="no valid lattice metadata"):
        load(tmp_path / "x.npz")
    with pytest.raises(ValueError, match="not found"):
        load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="incomplete lattice state"):
        Oscillink.from_state({"meta": {"format": "oscillink-core/lattice-state"}, "arrays": {}})


# ---------------------------------------------------------------- threads
def _expected(Y, psi, k=5):
    return _settled(Y, psi, backend="numpy").bundle(k)


def test_interleaved_queries_from_two_threads_raise_instead_of_a_wrong_bundle():
    """Thread A sets its query; thread B sets, settles and ranks its own; A then settles. Before
    the fix A silently got B's bundle."""
    Y, psi_a, _ = clustered(seed=5)
    psi_b = Y[7].copy()
    lat = Oscillink(Y, backend="numpy")
    a_set, b_done = threading.Event(), threading.Event()
    out: dict = {}

    def thread_a():
        lat.set_query(psi_a)
        a_set.set()
        b_done.wait(30)
        try:
            lat.settle()
            out["a"] = lat.bundle(5)
        except RuntimeError as exc:
            out["a"] = exc

    def thread_b():
        a_set.wait(30)
        lat.set_query(psi_b)
        lat.settle()
        out["b"] = lat.bundle(5)
        b_done.set()

    ts = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert out["b"] == _expected(Y, psi_b)
    assert isinstance(out["a"], RuntimeError), f"thread A got a bundle: {out['a'][:2]}"
    assert "another thread changed this lattice's query" in str(out["a"])
    assert _expected(Y, psi_a) != out["b"]  # (so a silent bundle would have been a wrong one)


class _SlowGates:
    """Gates whose conversion to an array waits for an event: holds a thread inside set_query."""

    def __init__(self, n: int, inside: threading.Event, release: threading.Event) -> None:
        self.n, self.inside, self.release = n, inside, release

    def __array__(self, dtype=None, copy=None):
        self.inside.set()
        self.release.wait(30)
        return np.full(self.n, 0.5, dtype=dtype or np.float64)


def test_a_call_while_another_thread_is_inside_a_call_raises():
    Y, psi, _ = clustered(seed=6)
    lat = _settled(Y, psi, backend="numpy")
    inside, release = threading.Event(), threading.Event()
    t = threading.Thread(target=lat.set_query, args=(Y[3], _SlowGates(len(Y), inside, release)))
    t.start()
    assert inside.wait(30)
    try:
        with pytest.raises(RuntimeError, match="another thread is inside a call"):
            lat.bundle(5)
    finally:
        release.set()
        t.join(30)
    lat.set_query(psi)  # the object is usable again once the other call is over
    lat.settle()
    assert lat.bundle(5) == _expected(Y, psi)


def test_eight_threads_on_one_lattice_never_get_a_wrong_bundle():
    Y, _, _ = clustered(n_rel=30, n_noise=170, d=32, seed=8)
    queries = [Y[i] + 0.05 for i in range(0, 80, 10)]
    want = [_expected(Y, q) for q in queries]
    lat = Oscillink(Y, backend="numpy")
    barrier = threading.Barrier(8)
    got: list = [None] * 8

    def work(i):
        barrier.wait(30)
        try:
            lat.set_query(queries[i])
            lat.settle()
            got[i] = lat.bundle(5)
        except RuntimeError as exc:
            got[i] = exc

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    for i in range(8):
        assert isinstance(got[i], RuntimeError) or got[i] == want[i], f"thread {i} got a wrong bundle"


def test_a_lattice_can_be_handed_to_another_thread():
    Y, psi, _ = clustered(seed=9)
    box: dict = {}

    def build():
        box["lat"] = _settled(Y, psi, backend="numpy")

    t = threading.Thread(target=build)
    t.start()
    t.join(30)
    assert box["lat"].bundle(5) == _expected(Y, psi)  # picked up by a thread that had not used it


@pytest.mark.parametrize("backend", BACKENDS)
def test_rerank_from_eight_threads_matches_serial_calls(backend):
    Y, _, _ = clustered(n_rel=30, n_noise=170, d=32, seed=10)
    queries = [Y[i] + 0.05 for i in range(0, 80, 10)]
    serial = [canonical_json(strip_timings(rerank(q, Y, k=5, backend=backend).receipt)) for q in queries]
    barrier = threading.Barrier(8)
    got: list = [None] * 8

    def work(i):
        barrier.wait(30)
        got[i] = canonical_json(strip_timings(rerank(queries[i], Y, k=5, backend=backend).receipt))

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert got == serial
