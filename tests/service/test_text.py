"""/v1/rerank with the real packaged model: candidate texts, and queries against an `oscillink ingest` index."""

from __future__ import annotations

import json

import httpx
import pytest

from oscillink_core import validate_receipt
from oscillink_core.app.cli import main

from .conftest import ROOT, Server, create_key

CORPUS = ROOT / "examples" / "data" / "demo_corpus.jsonl"
QUESTION = "How do honeybees tell other bees where flowers are?"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    rows = [json.loads(line) for line in CORPUS.read_text("utf-8").splitlines()]
    rows = [r for r in rows if r["id"].startswith(("bees-", "moon-0"))]
    src = tmp_path_factory.mktemp("src") / "tiny.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    index = tmp_path_factory.mktemp("idx") / "index"
    assert main(["ingest", str(src), "--index", str(index), "-q"]) == 0
    state = ["--keys-file", str(tmp_path_factory.mktemp("keys") / "keys.json")]
    s = Server(state, "--index", str(index), OSCILLINK_PRELOAD_MODEL="1").start()
    s.key, _ = create_key(state, "text")
    s.rows = rows
    yield s
    s.stop()


def post(s, body):
    return httpx.post(s.url + "/v1/rerank", json=body, headers={"X-API-Key": s.key}, timeout=300)


def test_rerank_candidate_texts(srv):
    texts = ["Paris is the capital of France.", "Bananas are rich in potassium.",
             "The capital city of France is Paris, on the Seine.", "Tokyo is in Japan."]
    r = post(srv, {"query": "What is the capital of France?", "candidates": texts, "k": 2, "keep_for_feedback": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {it["id"] for it in body["items"]} == {0, 2} and body["items"][0]["text"] in texts
    assert body["meta"]["D"] == 384 and r.headers["X-Monthly-Used"] == str(4 * 384)
    validate_receipt(body["receipt"])
    cands = [{"id": "fr", "text": texts[0]}, {"id": "ba", "text": texts[1]}, {"id": "tk", "text": texts[3]}]
    r2 = post(srv, {"query": "What is the capital of France?", "candidates": cands, "k": 1,
                    "include_receipt": False})
    assert r2.json()["items"][0]["id"] == "fr" and "receipt" not in r2.json()
    f = httpx.post(srv.url + "/v1/feedback", json={"response_id": body["meta"]["response_id"], "kept": [2]},
                   headers={"X-API-Key": srv.key}, timeout=300)
    assert f.status_code == 200 and f.json()["n_updates"] == 1


def test_rerank_against_the_index_with_provenance(srv):
    r = post(srv, {"query": QUESTION, "k": 3, "fetch_k": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [it["rank"] for it in body["items"]] == [1, 2, 3]
    assert all(it["id"].startswith("bees-") for it in body["items"])
    prov = body["receipt"]["provenance"]
    assert prov["question"] == QUESTION and prov["retrieval"]["fetch_k"] == 20
    assert len(body["cosine"]) == 3 and body["meta"]["N"] == 20
    # the CLI's `query` gives the same bundle for the same question (the same provenance code path)
    from oscillink_core.app.store import IndexStore, run_query

    out = run_query(IndexStore.open(srv.args[1]), QUESTION, k=3, fetch_k=20)
    assert [it["id"] for it in out.items] == [it["id"] for it in body["items"]]


def test_text_errors(srv):
    assert post(srv, {"query": "", "candidates": ["a"]}).status_code == 422
    r = post(srv, {"query": "q", "candidates": []})
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = post(srv, {"query": "q", "candidates": [{"id": 1, "text": "a"}, {"id": 1, "text": "b"}]})
    assert r.status_code == 422 and "unique" in r.json()["detail"]
