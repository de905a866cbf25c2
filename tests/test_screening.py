"""Screening (oscillink_core.screening) on constructed embeddings: planted groups are flagged and
demoted, a supported true passage is kept, clean random data gets no flags, receipts record it."""

from __future__ import annotations

import numpy as np
import pytest

from oscillink_core import LatticeParams, Oscillink, rerank, validate_receipt, verify_receipt
from oscillink_core.screening import screen

D = 64
DEMOTE = {"screen": "demote"}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _mix(rng, parts: list[tuple[float, np.ndarray]], noise: float) -> np.ndarray:
    v = sum(w * p for w, p in parts) + noise * rng.normal(size=D) / np.sqrt(D)
    return _unit(v)


def poisoned_set(seed: int = 0, *, from_truth: bool = False):
    """Query q; a true passage t (cos ~0.6 to q, the planted ones ~0.9) supported by four passages about its subject;
    four planted passages written for q (restate q, assert a shared wrong claim w); 60 unrelated
    candidates. With ``from_truth`` the planted passages also copy t's content (they then sit in
    t's group). Returns (Y, q, index of t, indices of the planted)."""
    rng = np.random.default_rng(seed)
    q, subj, w, top = (_unit(rng.normal(size=D)) for _ in range(4))
    t = _mix(rng, [(0.6, q), (0.8, subj)], 0.05)
    support = [_mix(rng, [(0.3, q), (0.8, subj), (0.5, _unit(rng.normal(size=D)))], 0.1) for _ in range(4)]
    tw = 0.8 if from_truth else 0.0
    planted = [_mix(rng, [(0.85, q), (0.45, w), (tw, t)], 0.25) for _ in range(4)]
    other = [_unit(rng.normal(size=D) + 0.3 * q) for _ in range(60)]
    Y = np.stack([t, *support, *planted, *other])
    return Y, q, 0, list(range(5, 9))


@pytest.mark.parametrize("seed", range(5))
def test_planted_tight_group_is_flagged_and_demoted(seed):
    Y, q, t, planted = poisoned_set(seed)
    cos = Y @ q
    assert all(cos[p] > cos[t] for p in planted)  # cosine would put every planted passage first
    r = screen(Y, cos, cos)
    for p in planted:
        assert "tight_group" in r.flags[p] and r.decisive[p]
    assert not r.decisive[t]
    res = rerank(q, Y, k=5, params=DEMOTE)
    assert res.indices[0] == t  # the true passage leads the context once the planted ones are demoted
    assert not set(planted) & set(res.indices)
    assert {s["index"] for s in res.screened} == set(planted)
    assert all(s["action"] == "demoted" and "query_targeted" in s["flags"] for s in res.screened)
    # cosine's context: every planted passage ahead of the truth
    assert set(np.argsort(-cos)[:4].tolist()) == set(planted)


@pytest.mark.parametrize("seed", range(5))
def test_true_passage_inside_the_planted_group_is_kept(seed):
    Y, q, t, planted = poisoned_set(seed, from_truth=True)
    cos = Y @ q
    r = screen(Y, cos, cos)
    assert r.group[t] >= 0 and r.group[t] == r.group[planted[0]]  # membership alone would purge it
    assert not r.decisive[t]
    assert sum(r.decisive[p] for p in planted) >= 3
    res = rerank(q, Y, k=5, params=DEMOTE)
    assert t in res.indices
    item = next(it for it in res if it.index == t)
    assert item.action == "kept" and "tight_group" in item.flags


@pytest.mark.parametrize("seed", range(3))
def test_no_flags_on_clean_random_data(seed):
    rng = np.random.default_rng(seed)
    Y = _unit(rng.normal(size=(100, 384)))
    q = _unit(Y[:8].mean(axis=0))
    r = screen(Y, Y @ q, Y @ q)
    assert all(f == [] for f in r.flags)
    res = rerank(q, Y, k=10, params=DEMOTE)
    assert all(it.flags == () and it.action == "kept" for it in res)
    off = rerank(q, Y, k=10, params={"screen": "off"})
    assert rerank(q, Y, k=10, params={**DEMOTE, "coh_scope": "always"}).indices == off.indices


@pytest.mark.parametrize("seed", range(3))
def test_without_evidence_the_cosine_order_stands(seed):
    """coh_scope="local" (default) or "evidence": no tight group, no near-duplicate pair, no flag in the pool:
    the bundle is the cosine order, and the receipt says which ranking ran."""
    rng = np.random.default_rng(seed)
    Y = _unit(rng.normal(size=(100, 384)))
    q = _unit(Y[:8].mean(axis=0) + 0.5 * _unit(rng.normal(size=384)))
    cos_order = np.lexsort((np.arange(100), -(Y.astype(np.float64) @ q)))[:40].tolist()
    res = rerank(q, Y, k=40)
    assert list(res.indices) == cos_order
    assert res.receipt["screen"]["ranking"] == "cosine"
    validate_receipt(res.receipt)
    always = rerank(q, Y, k=40, params={"coh_scope": "always"})
    assert always.receipt["screen"]["ranking"] == "lattice"
    assert list(always.indices) != cos_order  # the lattice does reorder this set


def test_structure_lets_the_lattice_rank():
    Y, q, t, planted = poisoned_set(0)
    assert rerank(q, Y, k=5).receipt["screen"]["ranking"] == "lattice"  # a tight group
    # one near-duplicate pair inside the pool is evidence too: its members move (default "local"),
    # or the whole order is the lattice's ("evidence")
    rng = np.random.default_rng(4)
    Y = _unit(rng.normal(size=(60, D)))
    q = _unit(Y[:6].mean(axis=0))
    Y[1] = _unit(Y[0] + 0.02 * rng.normal(size=D))
    assert float(Y[0] @ Y[1]) > 0.95
    assert rerank(q, Y, k=5).receipt["screen"]["ranking"] == "local"
    assert rerank(q, Y, k=5, params={"coh_scope": "evidence"}).receipt["screen"]["ranking"] == "lattice"
    assert rerank(q, Y, k=5, params={"dedup_threshold": None}).receipt["screen"]["ranking"] == "cosine"
    # screening off: no evidence is looked for, the lattice always ranks
    off = rerank(q, Y, k=5, params={"screen": "off", "dedup_threshold": None})
    assert off.receipt["screen"]["ranking"] == "lattice"


def _pair_pool(seed: int):
    """60 random candidates around a query, two of them (ranked 6th and 8th by cosine) near-copies
    of each other: a near-duplicate pair is the pool's only structure."""
    rng = np.random.default_rng(seed)
    Y = _unit(rng.normal(size=(60, D)))
    q = _unit(Y[:10].mean(axis=0))
    cos = Y.astype(np.float64) @ q
    order = np.lexsort((np.arange(60), -cos))
    a, b = int(order[5]), int(order[7])
    Y[b] = _unit(Y[a] + 0.03 * rng.normal(size=D))
    return Y, q, (a, b)


@pytest.mark.parametrize("seed", range(4))
def test_a_near_duplicate_pair_alone_moves_only_its_members(seed):
    """coh_scope="local": where a near-duplicate pair is the only structure in the pool, every other
    candidate keeps its cosine place and the pair's members share the places they held."""
    Y, q, members = _pair_pool(seed)
    cos = Y.astype(np.float64) @ q
    cos_order = np.lexsort((np.arange(60), -cos))[:20].tolist()
    res = rerank(q, Y, k=20)
    assert res.receipt["screen"]["ranking"] == "local"
    assert all(it.flags == () for it in res)
    assert set(members) <= set(cos_order)
    got = list(res.indices)
    assert [i for i in got if i not in members] == [i for i in cos_order if i not in members]
    assert {p for p, i in enumerate(got) if i in members} == {p for p, i in enumerate(cos_order) if i in members}
    validate_receipt(res.receipt)
    # the earlier rule hands the whole order to the lattice on the same input
    whole = rerank(q, Y, k=20, params={"coh_scope": "evidence"})
    assert whole.receipt["screen"]["ranking"] == "lattice"
    assert list(whole.indices) != cos_order


@pytest.mark.parametrize("seed", range(2))
def test_a_pair_the_texts_found_no_conflict_in_keeps_the_cosine_order(seed):
    """With texts and the question, a near-copy pair without a twin flag holds no conflicting edit:
    the cosine order stands; under dup_action="demote" the copy is still pushed down."""
    Y, q, (a, b) = _pair_pool(seed)
    order = np.lexsort((np.arange(60), -(Y.astype(np.float64) @ q)))
    words = np.random.default_rng(seed).choice(["harbour", "river", "castle", "market", "bridge", "tower", "valley",
                                                 "forest", "mill", "chapel", "square", "garden"], size=(60, 8))
    texts = [" ".join(w) + "." for w in words]  # unrelated passages; b is an exact copy of a
    texts[b] = texts[a]
    kw = {"texts": texts, "query_text": "Which harbour town has the longest history?"}
    res = rerank(q, Y, k=20, **kw)
    assert res.receipt["screen"]["ranking"] == "cosine"
    assert list(res.indices) == order[:20].tolist()
    assert rerank(q, Y, k=20).receipt["screen"]["ranking"] == "local"  # no texts: the pair is evidence
    dem = rerank(q, Y, k=20, params={"dup_action": "demote"}, **kw)
    assert dem.receipt["screen"]["ranking"] == "local"
    assert len({a, b} & set(dem.indices)) == 1  # one copy keeps a place, the other goes behind the 20


def test_local_scores_refill_only_the_involved_slots():
    from oscillink_core.ranking import local_scores

    cosine = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    lattice = np.array([0.1, 0.2, 0.3, 0.9, 0.8])  # the lattice would put 3 and 4 first
    out = local_scores(lattice, cosine, np.array([False, True, False, True, False]))
    # 1 and 3 are involved: they keep slots 1 and 3, in the lattice's order (3 before 1)
    assert np.lexsort((np.arange(5), -out)).tolist() == [0, 3, 2, 1, 4]
    assert sorted(out.tolist(), reverse=True) == cosine.tolist()
    assert np.array_equal(local_scores(lattice, cosine, np.zeros(5, dtype=bool)), cosine)


def test_actions_flag_drop_and_off():
    Y, q, t, planted = poisoned_set(1)
    base = rerank(q, Y, k=8, params={"screen": "off"})
    flag = rerank(q, Y, k=8, params={"screen": "flag"})
    assert flag.indices == base.indices  # flags only: the order is the unscreened one
    assert all(it.flags == () for it in base)
    flagged = [it for it in flag if "query_targeted" in it.flags]
    assert {it.index for it in flagged} == set(planted) and all(it.action == "kept" for it in flagged)
    drop = rerank(q, Y, k=8, params={"screen": "drop"})
    assert not set(planted) & set(drop.indices) and len(drop) == 8
    assert all(s["action"] == "dropped" for s in drop.screened)
    # with only the planted passages left behind the others, "demote" still fills k from the rest
    small = rerank(q, Y[:20], k=20, params=DEMOTE)
    assert [it.action for it in small][-4:] == ["demoted"] * 4 and small.screened == ()
    small_drop = rerank(q, Y[:20], k=20, params={"screen": "drop"})
    assert len(small_drop) == 16 and {s["index"] for s in small_drop.screened} == set(planted)


def test_receipt_records_flags_and_verifies():
    Y, q, t, planted = poisoned_set(2)
    res = rerank(q, Y, k=5, ids=[f"d{i}" for i in range(len(Y))], sign_key="k", params=DEMOTE)
    rec = res.receipt
    validate_receipt(rec)
    assert verify_receipt(rec, "k")
    assert rec["screen"]["action"] == "demote"
    assert rerank(q, Y, k=5).receipt["screen"]["action"] == LatticeParams().screen
    assert {s["id"] for s in rec["screen"]["screened"]} == {f"d{p}" for p in planted}
    assert all("flags" in b and b["action"] == "kept" for b in rec["bundle"])
    tampered = {**rec, "screen": {**rec["screen"], "screened": []}}
    assert not verify_receipt(tampered, "k")
    lat = Oscillink(Y, params=LatticeParams(screen="flag"))
    lat.set_query(q)
    lat.settle()
    b = lat.bundle(5)
    assert [x["action"] for x in b] == ["kept"] * 5
    assert sum("query_targeted" in x["flags"] for x in b) == 4
    validate_receipt(lat.receipt())


@pytest.mark.parametrize("bad", [{"screen": "purge"}, {"screen_pool": 1}, {"screen_group_min": True},
                                 {"screen_target_margin": -0.1}, {"screen_twin_threshold": 1.5},
                                 {"coh_scope": "sometimes"}])
def test_bad_screen_params_are_clear_errors(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        LatticeParams(**bad)
