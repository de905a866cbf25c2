"""The service over real HTTP with memory state: auth, the published request shapes, caps, cache, verify."""

from __future__ import annotations

import json

import httpx
import pytest

from oscillink_core import strip_timings, validate_receipt, verify_receipt

from .conftest import ROOT, Server, cli, create_key, vectors

SIGN_KEY = "test-server-sign-key"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.json"
    state = ["--keys-file", str(keys)]
    s = Server(state, OSCILLINK_SIGN_KEY=SIGN_KEY, OSCILLINK_MAX_N="300", OSCILLINK_MAX_UNITS="40000",
               OSCILLINK_MAX_BODY_BYTES="2000000").start()
    key, rec = create_key(state, "alice")
    s.key, s.rec, s.state = key, rec, state
    yield s
    s.stop()


def post(s, path, body, key=None, **kw):
    headers = {"X-API-Key": key} if key else {}
    return httpx.post(s.url + path, json=body, headers=headers, timeout=60, **kw)


def test_published_python_example_works_unchanged(srv):
    # the published README's client snippet (oscillink 0.1.x "Cloud API"), with our base URL and key
    r = httpx.post(f"{srv.url}/v1/settle",
                   json={"Y": [[0.1, 0.2]], "psi": [0.1, 0.2], "options": {"bundle_k": 1, "include_receipt": True}},
                   headers={"X-API-Key": srv.key})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"state_sig", "receipt", "bundle", "timings_ms", "meta"}
    assert body["bundle"][0]["id"] == 0 and body["receipt"]["state_sig"] == body["state_sig"]
    validate_receipt(body["receipt"])
    assert body["meta"]["N"] == 1 and body["meta"]["D"] == 2 and body["meta"]["usage"]["node_dim_units"] == 2
    assert r.headers["X-Profile-Id"] == "default"
    assert r.headers["X-Monthly-Period"] and int(r.headers["X-Monthly-Used"]) >= 2


def test_every_vector_endpoint(srv):
    Y, psi = vectors(30, 8)
    b = post(srv, "/v1/bundle", {"Y": Y, "psi": psi, "options": {"bundle_k": 4}}, srv.key)
    assert b.status_code == 200 and len(b.json()["bundle"]) == 4 and b.json()["bundle"][0]["id"] == 0
    rc = post(srv, "/v1/receipt", {"Y": Y, "psi": psi, "options": {"bundle_k": 3, "receipt_detail": "light"}},
              srv.key)
    assert rc.status_code == 200 and set(rc.json()) == {"state_sig", "receipt", "timings_ms", "meta"}
    assert "null_points" not in rc.json()["receipt"] and len(rc.json()["receipt"]["bundle"]) == 3
    ch = post(srv, "/v1/chain/receipt", {"Y": Y, "psi": psi, "chain": [0, 1, 2]}, srv.key)
    assert ch.status_code == 200
    cr = ch.json()["chain_receipt"]
    assert isinstance(cr["verdict"], bool) and len(cr["links"]) == 2
    ids = [f"doc-{i}" for i in range(30)]
    st = post(srv, "/v1/settle", {"Y": Y, "psi": psi, "ids": ids, "params": {"kneighbors": 4, "lamC": 1.0},
                                  "options": {"bundle_k": 2, "include_receipt": False}}, srv.key)
    assert st.status_code == 200 and st.json()["receipt"] is None
    assert st.json()["bundle"][0]["id"] == "doc-0" and st.json()["meta"]["lam"]["C"] == 1.0
    assert st.json()["meta"]["kneighbors_effective"] == 4


def test_auth_401_403(srv):
    body = {"Y": [[1.0, 0.0]], "psi": [1.0, 0.0]}
    for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "nonsense"}, {"X-API-Key": srv.key + "x"},
                    {"X-API-Key": "osk_000000000000_" + "a" * 32}):
        r = httpx.post(srv.url + "/v1/settle", json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"] == "unauthorized" and "key" in r.json()["detail"]
    key, rec = create_key(srv.state, "bob")
    assert post(srv, "/v1/settle", body, key).status_code == 200  # the server re-reads the keystore
    r = cli("keys", "revoke", rec["id"], *srv.state)
    assert r.returncode == 0, r.stderr
    r = post(srv, "/v1/settle", body, key)
    assert r.status_code == 403 and r.json() == {"detail": "this API key has been revoked", "error": "forbidden"}
    listing = cli("keys", "list", "--json", *srv.state)
    recs = json.loads(listing.stdout)
    assert {r["name"] for r in recs} >= {"alice", "bob"} and all("hash" not in r for r in recs)
    assert [r["revoked"] for r in recs if r["id"] == rec["id"]] == [True]
    # keys are stored only as hashes
    text = open(srv.state[1]).read()
    assert key not in text and srv.key not in text
    # and never logged
    assert key not in srv.read_log() and srv.key not in srv.read_log()


def test_admin_routes_are_off_without_an_admin_key(srv):
    assert httpx.get(srv.url + "/admin/keys", headers={"X-Admin-Key": "x"}).status_code == 404
    assert not [p for p in httpx.get(srv.url + "/openapi.json").json()["paths"] if p.startswith("/admin")]


def test_ranking_scope_and_screen_per_request(srv):
    Y, psi = vectors(30, 8)
    ranking = {}
    for scope in ("local", "evidence", "always"):
        r = post(srv, "/v1/settle", {"Y": Y, "psi": psi, "params": {"coh_scope": scope},
                                     "options": {"bundle_k": 5, "include_receipt": True}}, srv.key)
        assert r.status_code == 200, r.text
        ranking[scope] = r.json()["receipt"]["screen"]["ranking"]
        assert r.json()["receipt"]["params"]["coh_scope"] == scope
    from oscillink_core import rerank  # the service decides as the core does on the same input

    assert ranking == {scope: rerank(psi, Y, k=5, params={"coh_scope": scope}).receipt["screen"]["ranking"]
                       for scope in ("local", "evidence", "always")}
    assert ranking["always"] == "lattice"
    r = post(srv, "/v1/settle", {"Y": Y, "psi": psi, "params": {"screen": "flag"},
                                 "options": {"bundle_k": 5, "include_receipt": True}}, srv.key)
    assert r.status_code == 200 and r.json()["receipt"]["screen"]["action"] == "flag"
    for bad in ({"coh_scope": "sometimes"}, {"screen": "purge"}):
        r = post(srv, "/v1/settle", {"Y": Y, "psi": psi, "params": bad}, srv.key)
        assert r.status_code == 422 and "params." + next(iter(bad)) in r.json()["detail"], r.text


def test_caps_413_and_shape_errors_422(srv):
    big = [[0.0] * 200 for _ in range(201)]  # 40200 units > 40000
    r = post(srv, "/v1/settle", {"Y": big}, srv.key)
    assert r.status_code == 413 and "40200 units exceed" in r.json()["detail"]
    r = post(srv, "/v1/settle", {"Y": [[1.0]] * 301}, srv.key)
    assert r.status_code == 413 and "N=301" in r.json()["detail"]
    r = httpx.post(srv.url + "/v1/settle", content=b"[" + b"1," * 1_100_000 + b"1]",
                   headers={"X-API-Key": srv.key, "Content-Type": "application/json"})
    assert r.status_code == 413 and "2000000 bytes" in r.json()["detail"]
    cases = [({"Y": [[1.0, 2.0], [3.0]]}, "row 1 has 1"), ({"Y": [[1.0, 2.0]], "psi": [1.0]}, "psi has 1"),
             ({"Y": []}, "Y is empty"), ({"Y": [[1.0, 0.0]], "psi": [0.0, 0.0]}, "zero vector"),
             ({"Y": [[1.0, 0.0], [0.0, 1.0]], "gates": [2.0, 0.0]}, "gates must lie"),
             ({"Y": [[1.0, 0.0], [0.0, 1.0]], "ids": ["a", "a"]}, "unique"),
             ({"Y": [[1.0, 0.0]], "params": {"lamG": -1}}, "params.lamG"),
             ({"Y": [[1.0, 0.0]], "nope": 1}, "nope"), ({"Y": "x"}, "Y")]
    for body, msg in cases:
        r = post(srv, "/v1/settle", body, srv.key)
        assert r.status_code == 422 and msg in r.json()["detail"], (body, r.text)
    r = post(srv, "/v1/bundle", {"Y": [[1.0, 0.0]]}, srv.key)
    assert r.status_code == 422 and "bundle_k" in r.json()["detail"]
    r = httpx.post(srv.url + "/v1/settle", content=b"{not json", headers={"X-API-Key": srv.key})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    assert "Traceback" not in srv.read_log()


def test_bundle_cache_hit_is_byte_identical_to_the_miss(srv):
    Y, psi = vectors(40, 16, seed=3)
    body = {"Y": Y, "psi": psi, "options": {"bundle_k": 5}}
    a = post(srv, "/v1/bundle", body, srv.key)
    b = post(srv, "/v1/bundle", body, srv.key)
    assert (a.headers["X-Cache"], b.headers["X-Cache"]) == ("MISS", "HIT")
    cut = b',"timings_ms":'
    assert a.content.index(cut) > 0 and a.content[:a.content.index(cut)] == b.content[:b.content.index(cut)]
    assert a.headers["X-Profile-Id"] == b.headers["X-Profile-Id"]
    # another key does not see alice's entry; different request content misses
    key2, _ = create_key(srv.state, "carol")
    assert post(srv, "/v1/bundle", body, key2).headers["X-Cache"] == "MISS"
    body2 = {**body, "options": {"bundle_k": 6}}
    assert post(srv, "/v1/bundle", body2, srv.key).headers["X-Cache"] == "MISS"
    m = httpx.get(srv.url + "/metrics").text
    assert 'oscillink_cache_total{result="hit"}' in m and "oscillink_request_seconds_bucket" in m


def test_signed_receipt_verifies_and_tampering_is_caught(srv):
    Y, psi = vectors(20, 8, seed=5)
    r = post(srv, "/v1/receipt", {"Y": Y, "psi": psi, "options": {"sign": True}}, srv.key)
    rec = r.json()["receipt"]
    assert verify_receipt(rec, SIGN_KEY)
    v = post(srv, "/v1/verify", {"receipt": rec}, srv.key).json()
    assert v == {"schema_valid": True, "schema_error": None, "signed": True, "signature_valid": True, "valid": True}
    bad = json.loads(json.dumps(rec))
    bad["bundle"][0]["score"] += 0.5
    v = post(srv, "/v1/verify", {"receipt": bad}, srv.key).json()
    assert v["signature_valid"] is False and v["valid"] is False
    v = post(srv, "/v1/verify", {"receipt": {"format": "x"}}, srv.key).json()
    assert v["schema_valid"] is False and v["schema_error"]
    # an unsigned receipt from the same request has the same content apart from timings and the signature
    u = post(srv, "/v1/receipt", {"Y": Y, "psi": psi}, srv.key).json()["receipt"]
    assert strip_timings(u) == strip_timings(rec)


def test_ops_endpoints(srv):
    assert httpx.get(srv.url + "/healthz").json()["status"] == "ok"
    assert httpx.get(srv.url + "/readyz").json() == {"status": "ready", "state": "memory", "index": False}
    m = httpx.get(srv.url + "/metrics")
    assert m.headers["content-type"].startswith("text/plain")
    assert 'oscillink_requests_total{method="POST",route="/v1/settle",status="401"}' in m.text


def test_committed_openapi_document_is_current():
    from oscillink_core.app.service.app import openapi_document

    committed = (ROOT / "docs" / "openapi.json").read_text("utf-8")
    assert committed == openapi_document(), "regenerate: python -m oscillink_core.app.service.openapi docs/openapi.json"
