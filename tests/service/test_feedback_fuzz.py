"""Feedback (bounded profile updates, X-Profile-Id), the per-IP limit, and bad-input fuzzing from the
OpenAPI document: never a 500, never a traceback in a body."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oscillink_core import OnlineTuner

from .conftest import Server, create_key, vectors


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.json"
    state = ["--keys-file", str(keys)]
    s = Server(state, OSCILLINK_MAX_N="60", OSCILLINK_MAX_D="32", OSCILLINK_MAX_BODY_BYTES="200000").start()
    s.state = state
    s.key, _ = create_key(state, "fb")
    yield s
    s.stop()


def post(s, path, body, key):
    return httpx.post(s.url + path, json=body, headers={"X-API-Key": key}, timeout=120)


def clustered(seed=0):
    """Two clusters; the query sits between them, nearer to cluster A."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=8), rng.normal(size=8)
    Y = np.vstack([a + 0.35 * rng.normal(size=(12, 8)), b + 0.35 * rng.normal(size=(12, 8))]).astype("float32")
    psi = (0.6 * a + 0.4 * b).astype("float32")
    return Y.tolist(), psi.tolist()


def test_feedback_moves_the_profile_boundedly(srv):
    Y, psi = clustered(seed=2)
    ids = [f"d{i}" for i in range(len(Y))]
    body = {"Y": Y, "psi": psi, "ids": ids, "options": {"bundle_k": 6, "include_receipt": False,
                                                        "keep_for_feedback": True}}
    r = post(srv, "/v1/settle", body, srv.key)
    assert r.status_code == 200 and r.headers["X-Profile-Id"] == "default"
    rid = r.json()["meta"]["response_id"]
    shown = [b["id"] for b in r.json()["bundle"]]
    Yn = np.asarray(Y) / np.linalg.norm(Y, axis=1, keepdims=True)
    cos = Yn @ (np.asarray(psi) / np.linalg.norm(psi))
    kept = [max(shown, key=lambda i: cos[int(i[1:])])]  # the user keeps the plain-cosine favourite only
    step = OnlineTuner().max_step
    before = None
    moved, pids = {}, []
    for _ in range(8):  # the tuner's sign-agreement filter needs a few consistent events before it moves
        f = post(srv, "/v1/feedback", {"response_id": rid, "kept": kept}, srv.key)
        assert f.status_code == 200, f.text
        fb = f.json()
        assert f.headers["X-Profile-Id"] == fb["profile_id"]
        pids.append(fb["profile_id"])
        for name, (old, new) in fb["moves"].items():
            assert abs(new - old) <= step[name] + 1e-12, (name, old, new)
            moved[name] = new
        if before is not None:
            assert fb["previous_profile_id"] == before
        before = fb["profile_id"]
    assert fb["n_updates"] == 8
    assert moved, "eight consistent events moved no parameter"
    assert len(set(pids)) > 1  # the profile id follows the parameters
    # later responses use the updated profile and say so
    r2 = post(srv, "/v1/settle", {**body, "options": {"bundle_k": 6}}, srv.key)
    assert r2.headers["X-Profile-Id"] == fb["profile_id"]
    lam = r2.json()["meta"]["lam"]
    assert (lam["G"], lam["C"], lam["Q"]) == (fb["params"]["lamG"], fb["params"]["lamC"], fb["params"]["lamQ"])
    # another key's profile is untouched
    other, _ = create_key(srv.state, "other")
    assert post(srv, "/v1/settle", body, other).headers["X-Profile-Id"] == "default"
    # ... and it cannot send feedback on this key's response
    assert post(srv, "/v1/feedback", {"response_id": rid, "kept": kept}, other).status_code == 404


def test_feedback_errors(srv):
    Y, psi = vectors(10, 4)
    r = post(srv, "/v1/bundle", {"Y": Y, "psi": psi, "options": {"bundle_k": 3}}, srv.key)
    rid = r.json()["meta"]["response_id"]
    f = post(srv, "/v1/feedback", {"response_id": rid, "kept": [0]}, srv.key)
    assert f.status_code == 404 and "no response" in f.json()["detail"]  # not kept for feedback
    r = post(srv, "/v1/bundle", {"Y": Y, "psi": psi, "options": {"bundle_k": 3, "keep_for_feedback": True}},
             srv.key)
    rid = r.json()["meta"]["response_id"]
    f = post(srv, "/v1/feedback", {"response_id": rid, "kept": [99]}, srv.key)
    assert f.status_code == 422 and "99" in f.json()["detail"]
    f = post(srv, "/v1/feedback", {"response_id": rid, "kept": []}, srv.key)
    assert f.status_code == 422


def test_per_ip_token_bucket(tmp_path):
    state = ["--keys-file", str(tmp_path / "keys.json")]
    s = Server(state, OSCILLINK_IP_CAPACITY="7", OSCILLINK_IP_REFILL_PER_S="0", OSCILLINK_BACKEND="numpy").start()
    try:
        k1, _ = create_key(state, "one")
        k2, _ = create_key(state, "two")
        body = {"Y": [[1.0, 0.0], [0.0, 1.0]], "psi": [1.0, 0.2]}
        codes = [post(s, "/v1/settle", body, k1 if i % 2 else k2) for i in range(12)]
        assert [c.status_code for c in codes] == [200] * 7 + [429] * 5  # one bucket for the IP, both keys
        assert codes[6].headers["X-IPLimit-Remaining"] == "0" and codes[7].headers["Retry-After"] == "86400"
        assert codes[7].json() == {"detail": "per-IP rate limit exceeded", "error": "rate_limited"}
        assert 'oscillink_quota_rejections_total{reason="ip"} 5.0' in httpx.get(s.url + "/metrics").text
    finally:
        s.stop()


# ------------------------------------------------------------------------------------------ fuzzing
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=30)


def request_schemas(openapi: dict) -> dict[str, tuple[dict, dict]]:
    out = {}
    comps = openapi["components"]["schemas"]
    for path, ops in openapi["paths"].items():
        op = ops.get("post")
        if not op or "requestBody" not in op:
            continue
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        out[path] = (comps[ref], comps)
    return out


def from_schema(schema: dict, comps: dict, depth: int = 0):
    """Values near the schema: right field names with random, boundary or right-typed values."""
    if "$ref" in schema:
        return from_schema(comps[schema["$ref"].rsplit("/", 1)[-1]], comps, depth + 1)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, comps, depth + 1) for s in schema["anyOf"]])
    t = schema.get("type")
    if depth > 4:
        return json_values
    if t == "object" and "properties" in schema:
        props = {k: st.one_of(from_schema(v, comps, depth + 1), json_values) for k, v in schema["properties"].items()}
        return st.fixed_dictionaries({}, optional=props)
    if t == "array":
        return st.lists(from_schema(schema.get("items", {}), comps, depth + 1), max_size=8)
    if t == "number":
        edge = st.sampled_from([0.0, -1.0, 1e300, -1e300, 1e-300])
        return st.floats(allow_nan=False, allow_infinity=False, width=32) | edge
    if t == "integer":
        return st.integers(-5, 70) | st.sampled_from([-(2**63), 2**63, 10**30])
    if t == "boolean":
        return st.booleans()
    if t == "string":
        return st.text(max_size=30) | st.sampled_from(["", "full", "light", "uniform", "diffusion"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    return json_values


@pytest.fixture(scope="module")
def schemas(srv):
    return request_schemas(httpx.get(srv.url + "/openapi.json").json())


def check(resp: httpx.Response) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text[:500])
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    body = resp.json()
    if resp.status_code >= 400:
        assert isinstance(body.get("detail"), (str, list)) and body.get("error")


def test_openapi_paths_are_all_fuzzed(schemas):
    assert set(schemas) == {"/v1/settle", "/v1/receipt", "/v1/bundle", "/v1/chain/receipt", "/v1/rerank",
                            "/v1/verify", "/v1/feedback"}


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_fuzz_schema_guided_bodies(srv, schemas, data):
    """Bodies near each request schema of the served OpenAPI document (right names, odd values)."""
    path = data.draw(st.sampled_from(sorted(p for p in schemas if p != "/v1/rerank")))
    schema, comps = schemas[path]
    body = data.draw(from_schema(schema, comps))
    check(httpx.post(srv.url + path, json=body, headers={"X-API-Key": srv.key}, timeout=120))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(path=st.sampled_from(["/v1/settle", "/v1/bundle", "/v1/feedback", "/v1/verify", "/v1/rerank"]),
       raw=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
       key=st.sampled_from([None, "", "osk_", "osk_x_y", "k" * 300]))
def test_fuzz_raw_bodies_and_keys(srv, path, raw, key):
    headers = {"Content-Type": "application/json"}
    headers["X-API-Key"] = srv.key if key is None else key
    check(httpx.post(srv.url + path, content=raw, headers=headers, timeout=120))
