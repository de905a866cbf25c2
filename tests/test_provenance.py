"""Provenance (oscillink_core.provenance, the ``provenance="trusted_first"`` policy): `judge` on its
own, then through `rerank`: an untrusted candidate yields to trusted ones under each screen
action, the receipt binds the sources and the trusted set (and a call without them keeps the
signature it had), bad input is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from oscillink_core import Oscillink, rerank, sign_receipt, validate_receipt, verify_receipt
from oscillink_core.provenance import PROVENANCE_DECISIVE, judge

D = 32
STRICT = {"provenance": "trusted_first"}  # the policy under test (the default is "corroboration")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def candidates(seed: int = 0, n_other: int = 20):
    """Query q; candidate 0 the closest (cos ~0.95), 1-4 close (~0.8), the rest unrelated.
    Returns (Y, q)."""
    rng = np.random.default_rng(seed)
    q = _unit(rng.normal(size=D))
    top = _unit(0.95 * q + 0.31 * _unit(rng.normal(size=D)))
    near = [_unit(0.8 * q + 0.6 * _unit(rng.normal(size=D))) for _ in range(4)]
    other = [_unit(rng.normal(size=D)) for _ in range(n_other)]
    return np.stack([top, *near, *other]).astype(np.float32), q.astype(np.float32)


def sources_for(n: int, first: str = "blog") -> list[str | None]:
    """Candidate 0 from ``first``, 1-4 from "wiki", the rest of unknown source."""
    return [first] + ["wiki"] * 4 + [None] * (n - 5)


# ------------------------------------------------------------------------------ judge
def test_judge_flags_trusted_and_untrusted_and_leaves_unknown_alone():
    r = judge(["wiki", "blog", None, "wiki", "news"], {"wiki"}, np.array([0.9, 0.95, 0.99, 0.7, 0.1]))
    assert r.flags == [["trusted_source"], ["untrusted_source"], [], ["trusted_source"], ["untrusted_source"]]
    assert r.decisive.tolist() == [False, True, False, False, True]
    assert PROVENANCE_DECISIVE == ("untrusted_source",)


def test_judge_without_a_trusted_candidate_in_the_pool_only_informs():
    r = judge(["blog", "news", None], {"wiki"}, np.array([0.9, 0.8, 0.7]))
    assert r.flags == [["untrusted_no_alternative"], ["untrusted_no_alternative"], []]
    assert not r.decisive.any()
    # min_trusted: one trusted candidate is not enough when two are required
    r = judge(["wiki", "blog"], {"wiki"}, np.array([0.9, 0.8]), min_trusted=2)
    assert r.flags == [["trusted_source"], ["untrusted_no_alternative"]] and not r.decisive.any()


def test_judge_looks_at_the_pool_only():
    score = np.array([0.1, 0.9, 0.8, 0.7])
    r = judge(["blog", "wiki", "blog", "wiki"], {"wiki"}, score, pool=2)  # the pool is candidates 1 and 2
    assert r.flags == [[], ["trusted_source"], ["untrusted_source"], []]
    assert r.decisive.tolist() == [False, False, True, False]
    # a trusted candidate outside the pool does not make the pool's untrusted ones yield
    r = judge(["blog", "news", "wiki"], {"wiki"}, np.array([0.9, 0.8, 0.1]), pool=2)
    assert r.flags == [["untrusted_no_alternative"], ["untrusted_no_alternative"], []]
    # ties in the score: the lower index enters the pool first
    r = judge(["blog", "wiki", "news"], {"wiki"}, np.array([0.5, 0.5, 0.5]), pool=2)
    assert r.flags == [["untrusted_source"], ["trusted_source"], []]


def test_judge_without_a_trusted_set_or_pool_flags_nothing():
    for trusted, pool in (((), 20), ({"wiki"}, 0)):
        r = judge(["wiki", "blog"], trusted, np.array([0.9, 0.8]), pool=pool)
        assert r.flags == [[], []] and not r.decisive.any()
    assert judge([], {"wiki"}, np.array([])).flags == []


def test_judge_compares_sources_exactly():
    r = judge(["Wiki", "wiki ", "wiki"], ["wiki"], np.array([0.9, 0.8, 0.7]))
    assert r.flags == [["untrusted_source"], ["untrusted_source"], ["trusted_source"]]


# ------------------------------------------------------------------------------ through rerank
def test_untrusted_candidate_is_pushed_out_of_the_top_k():
    Y, q = candidates()
    src = sources_for(len(Y))
    plain = rerank(q, Y, k=3)
    assert 0 in plain.indices, "precondition: the untrusted candidate is in the plain top 3"
    res = rerank(q, Y, k=3, sources=src, trusted_sources={"wiki"}, params=STRICT)
    assert 0 not in res.indices
    assert all(it.flags == ("trusted_source",) and it.action == "kept" for it in res.items)
    (out,) = [s for s in res.screened if s["index"] == 0]
    assert out["flags"] == ["untrusted_source"] and out["action"] == "demoted"
    assert res.receipt["screen"]["screened"] == [{k: v for k, v in out.items() if k != "index"}]
    # demoted, not removed: with every candidate returned it comes after the others
    every = rerank(q, Y, k=len(Y), sources=src, trusted_sources={"wiki"}, params=STRICT)
    assert every.indices[-1] == 0 and every.items[-1].action == "demoted"


def test_screen_actions_flag_drop_and_off():
    Y, q = candidates()
    src = sources_for(len(Y))
    plain = rerank(q, Y, k=3)
    flagged = rerank(q, Y, k=3, sources=src, trusted_sources=["wiki"], params={**STRICT, "screen": "flag"})
    assert flagged.indices == plain.indices
    assert flagged.items[flagged.indices.index(0)].flags == ("untrusted_source",)
    dropped = rerank(q, Y, k=len(Y), sources=src, trusted_sources=["wiki"], params={**STRICT, "screen": "drop"})
    assert 0 not in dropped.indices and len(dropped) == len(Y) - 1
    assert [s["action"] for s in dropped.screened if s["index"] == 0] == ["dropped"]
    off = rerank(q, Y, k=3, sources=src, trusted_sources=["wiki"], params={**STRICT, "screen": "off"})
    assert off.indices == rerank(q, Y, k=3, params={"screen": "off"}).indices
    assert all(not it.flags for it in off.items)


def test_no_trusted_candidate_leaves_the_ranking_alone():
    Y, q = candidates()
    src = ["blog"] + ["news"] * 4 + [None] * (len(Y) - 5)
    plain = rerank(q, Y, k=3)
    res = rerank(q, Y, k=3, sources=src, trusted_sources={"wiki"}, params=STRICT)
    assert res.indices == plain.indices and not res.screened
    assert res.items[res.indices.index(0)].flags == ("untrusted_no_alternative",)


def test_unknown_sources_are_never_flagged():
    Y, q = candidates()
    src = [None] + ["wiki"] * 4 + [None] * (len(Y) - 5)
    res = rerank(q, Y, k=3, sources=src, trusted_sources={"wiki"}, params=STRICT)
    assert res.indices == rerank(q, Y, k=3).indices
    assert res.items[res.indices.index(0)].flags == ()


# ------------------------------------------------------------------------------ receipt binding
def test_receipt_binds_sources_and_trusted_set():
    Y, q = candidates()
    src = sources_for(len(Y))
    base = rerank(q, Y, k=3)
    res = rerank(q, Y, k=3, sources=src, trusted_sources={"wiki", "docs"})
    inputs = res.receipt["inputs"]
    assert len(inputs["sources_sha256"]) == 64 and len(inputs["trusted_sources_sha256"]) == 64
    assert inputs["trusted_sources_count"] == 2
    validate_receipt(res.receipt)
    signed = sign_receipt(res.receipt, "k")
    assert verify_receipt(signed, "k")
    signed["inputs"]["trusted_sources_count"] = 1
    assert not verify_receipt(signed, "k")

    sig = res.receipt["state_sig"]
    assert sig != base.receipt["state_sig"]
    # another source for one candidate, or another trusted set: another signature
    other_src = list(src)
    other_src[7] = "elsewhere"
    assert rerank(q, Y, k=3, sources=other_src, trusted_sources={"wiki", "docs"}).receipt["state_sig"] != sig
    assert rerank(q, Y, k=3, sources=src, trusted_sources={"wiki"}).receipt["state_sig"] != sig
    assert rerank(q, Y, k=3, sources=src, trusted_sources={"wiki", "docs", "x"}).receipt["state_sig"] != sig
    # the trusted set is a set: its order and repeats do not matter
    again = rerank(q, Y, k=3, sources=src, trusted_sources=["docs", "wiki", "docs"])
    assert again.receipt["state_sig"] == sig
    assert again.receipt["inputs"]["trusted_sources_sha256"] == inputs["trusted_sources_sha256"]


def test_without_sources_the_signature_is_unchanged():
    Y, q = candidates()
    base = rerank(q, Y, k=3)
    explicit = rerank(q, Y, k=3, sources=None, trusted_sources=None)
    assert explicit.receipt["state_sig"] == base.receipt["state_sig"]
    assert explicit.receipt["inputs"] == base.receipt["inputs"]
    assert not {"sources_sha256", "trusted_sources_sha256", "trusted_sources_count"} & set(base.receipt["inputs"])
    lat = Oscillink(Y)
    lat.set_query(q)
    lat.settle()
    assert lat.receipt(k=3)["state_sig"] == base.receipt["state_sig"]
    # sources alone, or a trusted set alone, are bound (and change nothing in the ranking)
    only_src = rerank(q, Y, k=3, sources=sources_for(len(Y)))
    only_trusted = rerank(q, Y, k=3, trusted_sources={"wiki"})
    assert only_src.indices == only_trusted.indices == base.indices
    assert len({base.receipt["state_sig"], only_src.receipt["state_sig"], only_trusted.receipt["state_sig"]}) == 3
    assert "sources_sha256" in only_src.receipt["inputs"] and "trusted_sources_sha256" not in only_src.receipt["inputs"]


def test_state_round_trip_keeps_the_sources(tmp_path):
    Y, q = candidates()
    lat = Oscillink(Y, sources=sources_for(len(Y)), trusted_sources={"wiki"}, params=STRICT)
    lat.set_query(q)
    lat.settle()
    path = tmp_path / "lattice.npz"
    lat.save(path)
    back = Oscillink.load(path)
    back.settle()
    assert [b["id"] for b in back.bundle(3)] == [b["id"] for b in lat.bundle(3)]
    assert 0 not in [b["index"] for b in back.bundle(3)]
    assert back.receipt(k=3)["state_sig"] == lat.receipt(k=3)["state_sig"]


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, message", [
    ({"sources": ["wiki"] * 3, "trusted_sources": ["wiki"]}, "sources has 3 entries but there are N = 25"),
    ({"sources": "wiki", "trusted_sources": ["wiki"]}, "not a single string"),
    ({"sources": [""] + [None] * 24, "trusted_sources": ["wiki"]}, r"sources\[0\] is ''"),
    ({"sources": [3] + [None] * 24, "trusted_sources": ["wiki"]}, r"sources\[0\] is 3"),
    ({"trusted_sources": "wiki"}, "trusted_sources must be a collection of source names, not a single string"),
    ({"trusted_sources": ["wiki", ""]}, "every trusted source is a non-empty str"),
    ({"trusted_sources": [None]}, "every trusted source is a non-empty str"),
    ({"trusted_sources": 5}, "trusted_sources must be a collection of str"),
])
def test_bad_sources_are_clear_errors(kwargs, message):
    Y, q = candidates()
    with pytest.raises(ValueError, match=message):
        rerank(q, Y, k=3, **kwargs)
