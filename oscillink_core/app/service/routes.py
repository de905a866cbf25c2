"""Routers: /v1 (the API), ops (/healthz, /readyz, /metrics) and /admin (only with an admin key)."""

from __future__ import annotations

import hmac
import json
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import APIKeyHeader

from oscillink_core import (
    FeedbackEvent,
    OnlineTuner,
    __version__,
    resolve_params,
    validate_receipt,
    verify_receipt,
)

from . import compute as calc
from . import keys as keymod
from .metrics import CONTENT_TYPE_LATEST
from .models import (
    BundleResponse,
    ChainReceiptResponse,
    Error,
    FeedbackRequest,
    FeedbackResponse,
    KeyCreate,
    ReceiptResponse,
    RerankRequest,
    RerankResponse,
    SettleRequest,
    SettleResponse,
    VerifyRequest,
    VerifyResponse,
)
from .state import Limits

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="key from `oscillink keys create`")
admin_key_header = APIKeyHeader(name="X-Admin-Key", auto_error=False, scheme_name="AdminKey")

ERRORS = {401: {"model": Error, "description": "missing or unknown API key"},
          403: {"model": Error, "description": "revoked API key"},
          413: {"model": Error, "description": "body, N, D or N x D above the server's caps"},
          422: {"model": Error, "description": "invalid request (the message names the field)"},
          429: {"model": Error, "description": "a rate limit, quota or monthly cap; see Retry-After"}}

_embed_lock = threading.Lock()


@dataclass
class KeyContext:
    id: str
    record: dict
    limits: Limits


def svc(request: Request):
    return request.app.state.svc


def require_key(request: Request, x_api_key: Annotated[str | None, Depends(api_key_header)]) -> KeyContext:
    if not x_api_key:
        raise HTTPException(401, "missing API key: send it in the X-API-Key header")
    s = svc(request)
    kid = keymod.key_id_of(x_api_key)
    rec = s.keystore.get(kid) if kid else None
    if not keymod.check(rec, x_api_key):
        raise HTTPException(401, "invalid API key")
    if rec.get("revoked"):
        raise HTTPException(403, "this API key has been revoked")
    request.state.key_id = kid
    st = s.settings

    def lim(name):
        v = rec.get(name)
        return getattr(st, name) if v is None else v

    return KeyContext(kid, rec, Limits(ip_capacity=st.ip_capacity, ip_refill_per_s=st.ip_refill_per_s,
                                       rate_capacity=lim("rate_capacity"), rate_refill_per_s=lim("rate_refill_per_s"),
                                       quota_units=lim("quota_units"), quota_window_s=lim("quota_window_s"),
                                       monthly_cap=lim("monthly_cap")))


ApiKey = Annotated[KeyContext, Depends(require_key)]


def charge(request: Request, key: KeyContext, units: int) -> dict[str, str]:
    """Count ``units`` against every limit at once, or raise 429 with Retry-After and the headers."""
    s = svc(request)
    ip = request.client.host if request.client else "unknown"
    d = s.state.consume(key.id, ip, units, key.limits)
    if not d.allowed:
        s.metrics.rejections.labels(d.reason).inc()
        msg = {"ip": "per-IP rate limit exceeded", "rate": "rate limit exceeded for this key",
               "quota": "quota exceeded for this key in the current window",
               "monthly": f"monthly cap of {key.limits.monthly_cap} units reached (this request needs {units})"}
        raise HTTPException(429, msg[d.reason], headers=d.headers)
    s.metrics.units.inc(units)
    return d.headers


def _sign_key(request: Request, wanted: bool) -> str | None:
    if not wanted:
        return None
    k = svc(request).settings.sign_key
    if not k:
        raise calc.InputError("options.sign: this server has no sign key (start it with OSCILLINK_SIGN_KEY)")
    return k


def _profile(request: Request, key: KeyContext) -> tuple[dict | None, str]:
    prof = svc(request).state.profile_get(key.id)
    return prof, calc.profile_id(key.id, prof)


def _finish(response: Response, headers: dict, pid: str) -> None:
    response.headers.update(headers)
    response.headers["X-Profile-Id"] = pid


def _stash(request: Request, key: KeyContext, rid: str, Y, psi, ids, shown) -> None:
    s = svc(request)
    s.state.stash_put(key.id, rid, calc.pack_inputs(Y, psi, ids, shown), s.settings.feedback_ttl_s)


def _dump(req) -> dict:
    return req.model_dump(mode="json")


v1_router = APIRouter(prefix="/v1", tags=["v1"], responses=ERRORS)


def _vector(request: Request, req: SettleRequest, key: KeyContext, route: str):
    st = svc(request).settings
    Y, psi = calc.matrix(req, st)
    n, d = Y.shape
    prof, pid = _profile(request, key)
    p, k_req, k_eff = calc.effective_params(prof, req.params, n)
    rid = calc.request_hash(key.id, route, _dump(req), pid)
    return Y, psi, n, d, p, k_req, k_eff, pid, rid


def _ids(req: SettleRequest, n: int) -> list:
    return list(req.ids) if req.ids is not None else list(range(n))


@v1_router.post("/settle", response_model=SettleResponse, response_model_exclude_none=False)
def settle(req: SettleRequest, request: Request, response: Response, key: ApiKey):
    """Settle the lattice; return the bundle (``options.bundle_k``) and/or the receipt."""
    Y, psi, n, d, p, k_req, k_eff, pid, rid = _vector(request, req, key, "settle")
    sign = _sign_key(request, req.options.sign)
    headers = charge(request, key, n * d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lat, info, t0 = calc.lattice(Y, psi, req, p)
        bundle = lat.bundle(req.options.bundle_k) if req.options.bundle_k else None
        receipt = lat.receipt(light=req.options.receipt_detail == "light", sign_key=sign) \
            if req.options.include_receipt else None
    state_sig = receipt["state_sig"] if receipt else lat.state_sig()
    if req.options.keep_for_feedback:
        shown = [b["id"] for b in (bundle if bundle else (receipt["bundle"] if receipt else lat.bundle(min(5, n))))]
        _stash(request, key, rid, Y, psi, _ids(req, n), shown)
    _finish(response, headers, pid)
    return {"state_sig": state_sig, "receipt": receipt, "bundle": bundle,
            "timings_ms": {"total_settle_ms": 1e3 * (time.perf_counter() - t0), "solve_ms": info["solve_ms"]},
            "meta": calc.meta(n, d, k_req, k_eff, p, pid, rid)}


@v1_router.post("/receipt", response_model=ReceiptResponse)
def receipt(req: SettleRequest, request: Request, response: Response, key: ApiKey):
    """Settle and return the receipt only."""
    Y, psi, n, d, p, k_req, k_eff, pid, rid = _vector(request, req, key, "receipt")
    sign = _sign_key(request, req.options.sign)
    headers = charge(request, key, n * d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lat, info, t0 = calc.lattice(Y, psi, req, p)
        rec = lat.receipt(k=req.options.bundle_k, light=req.options.receipt_detail == "light", sign_key=sign)
    if req.options.keep_for_feedback:
        _stash(request, key, rid, Y, psi, _ids(req, n), [b["id"] for b in rec["bundle"]])
    _finish(response, headers, pid)
    return {"state_sig": rec["state_sig"], "receipt": rec,
            "timings_ms": {"total_settle_ms": 1e3 * (time.perf_counter() - t0), "solve_ms": info["solve_ms"]},
            "meta": calc.meta(n, d, k_req, k_eff, p, pid, rid)}


@v1_router.post("/bundle", response_model=BundleResponse)
def bundle(req: SettleRequest, request: Request, key: ApiKey):
    """Settle and return the top ``options.bundle_k``; cached per key (``X-Cache: HIT|MISS``)."""
    if not req.options.bundle_k:
        raise calc.InputError("options.bundle_k must be set for /v1/bundle")
    s = svc(request)
    Y, psi, n, d, p, k_req, k_eff, pid, rid = _vector(request, req, key, "bundle")
    headers = charge(request, key, n * d)
    headers["X-Profile-Id"] = pid
    t0 = time.perf_counter()
    hit = s.state.cache_get(key.id, rid, s.settings.cache_ttl_s) if s.settings.cache_cap > 0 else None
    if hit is not None:
        body, age = hit
        s.metrics.cache.labels("hit").inc()
        headers.update({"X-Cache": "HIT", "X-Cache-Age": str(int(age))})
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lat, info, _ = calc.lattice(Y, psi, req, p)
            b = lat.bundle(req.options.bundle_k)
        out = {"state_sig": lat.state_sig(req.options.bundle_k), "bundle": b,
               "meta": calc.meta(n, d, k_req, k_eff, p, pid, rid)}
        body = json.dumps(out, separators=(",", ":"), allow_nan=False).encode()
        if s.settings.cache_cap > 0:
            s.state.cache_put(key.id, rid, body, s.settings.cache_ttl_s, s.settings.cache_cap)
        s.metrics.cache.labels("miss").inc()
        headers["X-Cache"] = "MISS"
    if req.options.keep_for_feedback:
        _stash(request, key, rid, Y, psi, _ids(req, n), [x["id"] for x in json.loads(body)["bundle"]])
    # the cached bytes, then the timings: a HIT is byte-identical to its MISS up to ',"timings_ms"'
    timings = json.dumps({"total_settle_ms": 1e3 * (time.perf_counter() - t0)}, separators=(",", ":"))
    return Response(body[:-1] + b',"timings_ms":' + timings.encode() + b"}", media_type="application/json",
                    headers=headers)


@v1_router.post("/chain/receipt", response_model=ChainReceiptResponse)
def chain_receipt(req: SettleRequest, request: Request, response: Response, key: ApiKey):
    """Settle with the chain prior and return the chain verdict (weakest link, per-link z-scores)."""
    if not req.chain:
        raise calc.InputError("chain must be provided for /v1/chain/receipt")
    Y, psi, n, d, p, k_req, k_eff, pid, rid = _vector(request, req, key, "chain")
    headers = charge(request, key, n * d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lat, info, t0 = calc.lattice(Y, psi, req, p)
        rec = lat.chain_receipt(z_th=req.options.z_th)
    _finish(response, headers, pid)
    return {"state_sig": lat.state_sig(), "chain_receipt": rec,
            "timings_ms": {"total_settle_ms": 1e3 * (time.perf_counter() - t0), "solve_ms": info["solve_ms"]},
            "meta": calc.meta(n, d, k_req, k_eff, p, pid, rid)}


@v1_router.post("/rerank", response_model=RerankResponse, response_model_exclude_none=True)
def rerank_text(req: RerankRequest, request: Request, response: Response, key: ApiKey):
    """Rerank texts (embedded with the packaged all-MiniLM-L6-v2), or query the server's ``--index``."""
    s = svc(request)
    st = s.settings
    sign = _sign_key(request, req.sign)
    prof, pid = _profile(request, key)
    rid = calc.request_hash(key.id, "rerank", _dump(req), pid)
    from ..embeddings import EMBED_DIM, embed

    if req.candidates is None:
        if s.index is None:
            raise calc.InputError("candidates are missing and this server has no --index to query")
        calc.check_sources(req.sources, None)
        n = min(req.fetch_k, len(s.index.chunks))
        d = EMBED_DIM
        calc.check_size(n, d, st)
        p, k_req, k_eff = calc.effective_params(prof, req.params, n)
        headers = charge(request, key, n * d)
        from ..store import decode_vector, run_query

        t0 = time.perf_counter()
        with _embed_lock:
            q = embed([req.query])[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = run_query(s.index, req.query, k=req.k, fetch_k=req.fetch_k, params=p, query_vec=q,
                            sign_key=sign, trusted_sources=req.trusted_sources)
        fetched, _ = s.index.search(q, req.fetch_k)
        all_ids = [s.index.chunks[int(r)]["id"] for r in fetched]
        if req.keep_for_feedback:  # the fetched candidates' vectors, in their order
            qv = decode_vector(out.receipt["provenance"]["query_embedding"])
            _stash(request, key, rid, s.index.vectors(fetched), qv, all_ids, [it["id"] for it in out.items])
        _finish(response, headers, pid)
        return {"items": out.items, "cosine": out.cosine,
                "receipt": out.receipt if req.include_receipt else None,
                "timings_ms": {"total_ms": 1e3 * (time.perf_counter() - t0)},
                "meta": calc.meta(len(all_ids), d, k_req, k_eff, p, pid, rid)}

    cands = req.candidates
    if not cands:
        raise calc.InputError("candidates is empty: give at least one text")
    if len(cands) > st.max_text_candidates:
        raise calc.TooLargeError(f"{len(cands)} candidates exceed the server's limit of {st.max_text_candidates}")
    texts = [c if isinstance(c, str) else c.text for c in cands]
    ids = list(range(len(cands))) if isinstance(cands[0], str) else [c.id for c in cands]
    if len({json.dumps(i) for i in ids}) != len(ids):
        raise calc.InputError("candidate ids must be unique")
    calc.check_sources(req.sources, len(cands))
    if max(len(t) for t in texts + [req.query]) > st.max_text_chars:
        raise calc.TooLargeError(f"a text exceeds the server's limit of {st.max_text_chars} characters")
    n, d = len(texts), EMBED_DIM
    calc.check_size(n, d, st)
    p, k_req, k_eff = calc.effective_params(prof, req.params, n)
    headers = charge(request, key, n * d)
    t0 = time.perf_counter()
    with _embed_lock:
        V = embed([req.query, *texts])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = calc.text_rerank(V[0], V[1:], ids, req.k, p, sign, light=False, texts=texts, query_text=req.query,
                               sources=req.sources, trusted_sources=req.trusted_sources)
    items = [{**it.to_dict(), "text": texts[it.index],
              **({} if req.sources is None else {"source": req.sources[it.index]})} for it in res.items]
    if req.keep_for_feedback:
        _stash(request, key, rid, V[1:], V[0], ids, res.ids)
    _finish(response, headers, pid)
    return {"items": items, "receipt": res.receipt if req.include_receipt else None,
            "timings_ms": {**{k: float(v) for k, v in res.timings.items() if k != "total_ms"},
                           "rerank_ms": float(res.timings["total_ms"]),
                           "total_ms": 1e3 * (time.perf_counter() - t0)},
            "meta": calc.meta(n, d, k_req, k_eff, p, pid, rid)}


@v1_router.post("/verify", response_model=VerifyResponse)
def verify(req: VerifyRequest, request: Request, response: Response, key: ApiKey):
    """Check a receipt: the JSON schema, and its HMAC signature under the server key."""
    headers = charge(request, key, 0)
    try:
        validate_receipt(req.receipt)
        schema_ok, schema_err = True, None
    except ValueError as exc:
        schema_ok, schema_err = False, str(exc)[:500]
    signed = isinstance(req.receipt.get("signature"), dict)
    k = svc(request).settings.sign_key
    sig_ok = verify_receipt(req.receipt, k) if k else None
    response.headers.update(headers)
    return {"schema_valid": schema_ok, "schema_error": schema_err, "signed": signed, "signature_valid": sig_ok,
            "valid": schema_ok and (sig_ok is not False) and (not signed or bool(sig_ok))}


@v1_router.post("/feedback", response_model=FeedbackResponse)
def feedback(req: FeedbackRequest, request: Request, response: Response, key: ApiKey):
    """Kept and rejected ids of an earlier response: one bounded `OnlineTuner` update of this key's profile."""
    s = svc(request)
    data = s.state.stash_get(key.id, req.response_id)
    if data is None:
        raise HTTPException(404, f"no response {req.response_id!r} is kept for this key (expired or unknown)")
    Y, psi, ids, shown = calc.unpack_inputs(data)
    try:
        ev = FeedbackEvent(psi, Y, ids=ids, kept=req.kept, rejected=req.rejected, shown=shown)
    except ValueError as exc:
        raise calc.InputError(f"feedback: {exc}") from None
    headers = charge(request, key, int(Y.shape[0] * Y.shape[1]))

    def update(old):
        tuner = OnlineTuner.from_profile(old) if old else OnlineTuner(resolve_params(None))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = tuner.update(ev)
        return tuner.to_profile(), (old, rep, tuner)

    old, rep, tuner = s.state.profile_update(key.id, update)
    new = tuner.to_profile()
    pid = calc.profile_id(key.id, new)
    _finish(response, headers, pid)
    return {"profile_id": pid, "previous_profile_id": calc.profile_id(key.id, old), "n_updates": tuner.n_updates,
            "moves": {k: [float(a), float(b)] for k, (a, b) in rep["moves"].items()},
            "params": tuner.params.to_dict()}


# ------------------------------------------------------------------------ ops
ops_router = APIRouter(tags=["ops"])


@ops_router.get("/healthz")
def healthz():
    """The process is up."""
    return {"status": "ok", "version": __version__}


@ops_router.get("/readyz", responses={503: {"model": Error}})
def readyz(request: Request):
    """The state backend and the keystore answer."""
    s = svc(request)
    try:
        s.state.ping()
        s.keystore.ping()
    except Exception as exc:
        raise HTTPException(503, f"not ready: {type(exc).__name__}") from None
    return {"status": "ready", "state": s.state.kind, "index": s.index is not None}


@ops_router.get("/metrics", response_class=Response)
def metrics(request: Request):
    """Prometheus text format: requests, latency histogram, cache hits, quota rejections."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


# ------------------------------------------------------------------------ admin (only with an admin key)
def require_admin(request: Request, x_admin_key: Annotated[str | None, Depends(admin_key_header)]) -> None:
    expected = svc(request).settings.admin_key or ""
    if not x_admin_key:
        raise HTTPException(401, "missing admin key: send it in the X-Admin-Key header")
    if not expected or not hmac.compare_digest(expected.encode(), x_admin_key.encode()):
        raise HTTPException(403, "invalid admin key")


admin_router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@admin_router.get("/keys")
def admin_list(request: Request):
    s = svc(request)
    return {"keys": [{**keymod.public(r), "month_units": s.state.usage(r["id"])} for r in s.keystore.list()]}


@admin_router.post("/keys", status_code=201)
def admin_create(body: KeyCreate, request: Request):
    key, rec = keymod.make_record(body.name, **body.model_dump(exclude={"name"}))
    svc(request).keystore.put(rec)
    return {"key": key, **keymod.public(rec)}


@admin_router.post("/keys/{kid}/revoke")
def admin_revoke(kid: str, request: Request):
    if not svc(request).keystore.revoke(kid):
        raise HTTPException(404, f"no key {kid!r}")
    return {"id": kid, "revoked": True}

