"""/v1/rerank with ``sources`` and ``trusted_sources`` over real HTTP (``oscillink serve`` in a
subprocess, the real packaged model): candidate texts with their sources, a query against an
``--index`` whose records carry a ``source`` field, and the 422s for bad input."""

from __future__ import annotations

import json

import httpx
import pytest

from oscillink_core import validate_receipt, verify_receipt
from oscillink_core.app.cli import main

from .conftest import ROOT, Server, create_key

CORPUS = ROOT / "examples" / "data" / "demo_corpus.jsonl"
MOON = "What causes the phases of the Moon?"
QUERY = "What is the capital of France?"
TEXTS = ["Paris is the capital of France.", "The Louvre museum in Paris holds the Mona Lisa.",
         "The capital of France is Lyon, not Paris.", "Bananas are rich in potassium.",
         "Tokyo is the capital of Japan.", "France is a country in western Europe.",
         "The capital of France, Paris, lies on the Seine river."]
SOURCES = ["wikipedia.org", "wikipedia.org", "forum.example", None, "wikipedia.org", None, "britannica.com"]
TRUSTED = ["wikipedia.org", "britannica.com"]
STRICT = {"provenance": "trusted_first"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    rows = [json.loads(line) for line in CORPUS.read_text("utf-8").splitlines()]
    rows = [r for r in rows if r["id"].startswith(("moon-", "bees-0"))]
    for r in rows:
        r["source"] = "forum.example" if r["trap"] else "textbook.example"
    src = tmp_path_factory.mktemp("src") / "moon.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    index = tmp_path_factory.mktemp("idx") / "index"
    assert main(["ingest", str(src), "--index", str(index), "-q"]) == 0
    state = ["--keys-file", str(tmp_path_factory.mktemp("keys") / "keys.json")]
    s = Server(state, "--index", str(index), OSCILLINK_PRELOAD_MODEL="1", OSCILLINK_SIGN_KEY="svc-key").start()
    s.key, _ = create_key(state, "provenance")
    s.rows = rows
    yield s
    s.stop()


def post(s, body):
    return httpx.post(s.url + "/v1/rerank", json=body, headers={"X-API-Key": s.key}, timeout=300)


def test_untrusted_candidate_is_pushed_out(srv):
    plain = post(srv, {"query": QUERY, "candidates": TEXTS, "k": 3})
    assert plain.status_code == 200, plain.text
    assert 2 in [it["id"] for it in plain.json()["items"]], "precondition: the planted text is in the plain top 3"

    # one untrusted forum is the attacker here: the strict policy (the default keeps a lone source, below)
    r = post(srv, {"query": QUERY, "candidates": TEXTS, "k": 3, "sources": SOURCES, "trusted_sources": TRUSTED,
                   "params": STRICT})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [it["id"] for it in body["items"]]
    assert 2 not in ids and len(ids) == 3
    for it in body["items"]:
        assert it["text"] == TEXTS[it["id"]]
        assert it.get("source") == SOURCES[it["id"]]  # null sources are omitted like the other nulls
        assert ("trusted_source" in it["flags"]) == (SOURCES[it["id"]] in TRUSTED)
    receipt = body["receipt"]
    validate_receipt(receipt)
    out = {s["id"]: s for s in receipt["screen"]["screened"]}
    assert out[2] == {"id": 2, "flags": ["untrusted_source"], "action": "demoted"}
    assert receipt["inputs"]["trusted_sources_count"] == 2 and len(receipt["inputs"]["sources_sha256"]) == 64
    assert receipt["state_sig"] != plain.json()["receipt"]["state_sig"]

    # {id, text} candidates, a signed receipt: the binding survives the signature check
    cands = [{"id": f"c{i}", "text": t} for i, t in enumerate(TEXTS)]
    r = post(srv, {"query": QUERY, "candidates": cands, "k": 3, "sources": SOURCES, "trusted_sources": TRUSTED,
                   "sign": True, "params": STRICT})
    assert r.status_code == 200, r.text
    assert "c2" not in [it["id"] for it in r.json()["items"]]
    signed = r.json()["receipt"]
    assert verify_receipt(signed, "svc-key")
    signed["inputs"]["trusted_sources_count"] = 3
    assert not verify_receipt(signed, "svc-key")


def test_default_policy_keeps_a_lone_untrusted_source(srv):
    """The default ``corroboration`` policy moves a candidate only when other untrusted sources echo
    it: the forum's one text keeps its place, flagged new_source; a bad policy is a 422."""
    plain = post(srv, {"query": QUERY, "candidates": TEXTS, "k": 3}).json()
    r = post(srv, {"query": QUERY, "candidates": TEXTS, "k": 3, "sources": SOURCES, "trusted_sources": TRUSTED})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [it["id"] for it in body["items"]] == [it["id"] for it in plain["items"]]
    (forum,) = [it for it in body["items"] if it["id"] == 2]
    assert "new_source" in forum["flags"] and body["receipt"]["params"]["provenance"] == "corroboration"
    bad = post(srv, {"query": QUERY, "candidates": TEXTS, "k": 3, "params": {"provenance": "nobody"}})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("params.provenance"), bad.text


def test_without_the_fields_the_receipt_is_unchanged(srv):
    a = post(srv, {"query": QUERY, "candidates": TEXTS, "k": 3}).json()
    b = post(srv, {"query": QUERY, "candidates": TEXTS, "k": 3, "sources": None, "trusted_sources": None}).json()
    assert a["receipt"]["state_sig"] == b["receipt"]["state_sig"]
    assert "sources_sha256" not in b["receipt"]["inputs"]
    assert all("source" not in it for it in b["items"])


def test_index_query_with_trusted_sources(srv):
    traps = {r["id"] for r in srv.rows if r["trap"]}
    plain = post(srv, {"query": MOON, "k": 4, "fetch_k": 20})
    assert plain.status_code == 200, plain.text
    assert traps & {it["id"] for it in plain.json()["items"]}, "precondition: a planted passage in the plain top 4"

    r = post(srv, {"query": MOON, "k": 4, "fetch_k": 20, "trusted_sources": ["textbook.example"], "params": STRICT})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not traps & {it["id"] for it in body["items"]}
    assert all(it["origin"] == "textbook.example" and "trusted_source" in it["flags"] for it in body["items"])
    prov = body["receipt"]["provenance"]
    assert prov["trust"]["trusted_sources"] == ["textbook.example"]
    kept_out = {s["id"] for s in body["receipt"]["screen"]["screened"] if "untrusted_source" in s["flags"]}
    assert traps & {it["id"] for it in plain.json()["items"]} <= kept_out
    # the same as the CLI's query path with the same trusted set
    from oscillink_core import LatticeParams
    from oscillink_core.app.store import IndexStore, run_query

    out = run_query(IndexStore.open(srv.args[1]), MOON, k=4, fetch_k=20, trusted_sources=["textbook.example"],
                    params=LatticeParams(**STRICT))
    assert [it["id"] for it in out.items] == [it["id"] for it in body["items"]]


@pytest.mark.parametrize("extra, where, message", [
    ({"sources": SOURCES[:3]}, None, "sources has 3 entries; candidates has 7"),
    ({"sources": SOURCES + ["x"]}, None, "sources has 8 entries; candidates has 7"),
    ({"trusted_sources": "wikipedia.org"}, "trusted_sources", "valid list"),
    ({"sources": "wikipedia.org"}, "sources", "valid list"),
    ({"trusted_sources": ["wikipedia.org", ""]}, "trusted_sources.1", "at least 1 character"),
    ({"sources": [""] + SOURCES[1:]}, "sources.0", "at least 1 character"),
    ({"sources": [3] + SOURCES[1:]}, "sources.0", "valid string"),
])
def test_bad_sources_are_clear_422s(srv, extra, where, message):
    r = post(srv, {"query": QUERY, "candidates": TEXTS, "k": 3, "trusted_sources": TRUSTED, **extra})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_request" and message in body["detail"], body
    if where is not None:
        assert body["detail"].startswith(where), body


def test_sources_are_refused_for_an_index_query(srv):
    r = post(srv, {"query": MOON, "k": 4, "sources": ["a"], "trusted_sources": ["a"]})
    assert r.status_code == 422 and "index query" in r.json()["detail"], r.text
