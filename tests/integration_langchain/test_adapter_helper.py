"""`oscillink_core.app.adapters`, the helper both adapters share: trace summaries pass the bundle's
per-item ``flags`` / ``action`` and the screened candidates through, and sign after provenance."""

from __future__ import annotations

import copy

import numpy as np

from oscillink_core import verify_receipt
from oscillink_core.app.adapters import rerank_candidates, trace_summary


def _ranked(**kw):
    rng = np.random.default_rng(3)
    Y = rng.normal(size=(12, 8))
    return rerank_candidates(Y[0] + 0.1, Y, ids=[f"c{i}" for i in range(12)], top_n=4, params=None,
                             provenance={"vectors": "test"}, **kw)


def test_flags_actions_and_screened_pass_through():
    ranked = _ranked()
    ranked.receipt = copy.deepcopy(ranked.receipt)
    for entry in ranked.receipt["bundle"]:  # the core writes flags/action on every item: start from none
        entry.pop("flags", None)
        entry.pop("action", None)
    ranked.receipt["bundle"][0]["flags"] = ["near_duplicate"]
    ranked.receipt["bundle"][0]["action"] = "kept"
    ranked.receipt["screen"] = {"action": "flag", "screened": [{"id": "c9", "flags": ["off_topic"],
                                                               "action": "dropped"}]}
    s = trace_summary(ranked, n_in=14, n_ranked=12)
    first = s["items"][0]
    assert first["flags"] == ["near_duplicate"] and first["action"] == "kept"
    assert all("flags" not in it for it in s["items"][1:])
    assert s["bundle_flags"] == {first["id"]: {"flags": ["near_duplicate"], "action": "kept"}}
    assert s["screened"] == [{"id": "c9", "flags": ["off_topic"], "action": "dropped"}]
    assert s["duplicates_dropped"] == 2 and s["n_returned"] == 4
    s["screened"][0]["flags"].append("x")  # copies, not the receipt's own lists
    assert ranked.receipt["screen"]["screened"][0]["flags"] == ["off_topic"]


def test_what_the_core_puts_in_the_bundle_reaches_the_trace():
    ranked = _ranked()
    s = trace_summary(ranked, n_in=12, n_ranked=12)
    bundle = {b["id"]: b for b in ranked.receipt["bundle"]}
    for it in s["items"]:
        for key in ("flags", "action"):
            assert (key in it) == (key in bundle[it["id"]])
            if key in it:
                assert it[key] == bundle[it["id"]][key]


def test_signature_covers_the_provenance():
    ranked = _ranked(sign_key="k", score_threshold=-1e9)
    rec = ranked.receipt
    assert rec["provenance"]["vectors"] == "test" and rec["provenance"]["score_threshold"] == -1e9
    assert verify_receipt(rec, "k")
    forged = copy.deepcopy(rec)
    forged["provenance"]["vectors"] = "store"
    assert not verify_receipt(forged, "k")
