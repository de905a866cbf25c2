"""`create_app(settings)`: the FastAPI application of ``oscillink serve``."""

from __future__ import annotations

import json
import logging
import time
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from oscillink_core import __version__

from . import metrics as _metrics
from .compute import InputError, TooLargeError
from .keys import open_keystore
from .settings import Settings
from .state import open_state

log = logging.getLogger(__name__)

ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
               422: "invalid_request", 429: "rate_limited", 503: "unavailable"}


@dataclass
class Service:
    """What the routes share: settings, state, keystore, metrics, the optional index."""

    settings: Settings
    state: Any
    keystore: Any
    metrics: _metrics.Metrics
    index: Any = None


def error(status: int, detail: Any, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "error": ERROR_CODES.get(status, "error")}, status_code=status,
                        headers=headers)


class BodyLimit:
    """ASGI middleware: a request body above ``limit`` bytes gets a 413 before any route reads it."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        msg = f"request body exceeds the server's limit of {self.limit} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    return await error(413, msg)(scope, receive, send)
        chunks, size = [], 0
        while True:
            m = await receive()
            if m["type"] == "http.disconnect":
                return
            chunks.append(m.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await error(413, msg)(scope, receive, send)
            if not m.get("more_body"):
                break
        body, sent = b"".join(chunks), False
        if scope["path"].startswith(("/v1/", "/admin/")) and scope["method"] == "POST":
            # the API speaks JSON only: read the body as JSON whatever Content-Type says (curl -d sends
            # application/x-www-form-urlencoded)
            hs = [(n, v) for n, v in scope["headers"] if n != b"content-type"]
            scope = {**scope, "headers": [*hs, (b"content-type", b"application/json")]}

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _clean_errors(errors) -> list[dict]:
    """Validation errors without the offending input (it may be large, or private)."""
    out = []
    for e in errors[:20]:
        out.append({"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")),
                    "type": str(e.get("type", ""))})
    return out


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application for ``settings`` (default: from the ``OSCILLINK_*`` environment)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc = Service(settings=settings, state=open_state(settings.state, feedback_cap=settings.feedback_cap),
                      keystore=open_keystore(settings.state, settings.keys_file), metrics=app.state.metrics)
        if settings.index:
            from ..store import IndexStore

            svc.index = IndexStore.open(settings.index)
        # compile (or load from numba's cache) the kernels before the first request, off the event loop
        import anyio

        from oscillink_core import warmup

        info = await anyio.to_thread.run_sync(warmup)
        if settings.preload_model:
            from ..embeddings import load_model

            await anyio.to_thread.run_sync(load_model)
        app.state.svc = svc
        log.info("kernels ready (%s, %.1fs)", info["backend"], info["seconds"])
        log.info("oscillink service ready (state=%s, index=%s)", svc.state.kind, bool(svc.index))
        try:
            yield
        finally:
            svc.state.close()

    app = FastAPI(title="oscillink-core service", version=__version__, lifespan=lifespan,
                  description="Self-hosted coherence reranking: settle, bundle, receipts, text rerank, "
                              "feedback. API keys in X-API-Key.")
    app.state.metrics = _metrics.Metrics()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = _clean_errors(exc.errors())
        first = errs[0] if errs else {"loc": [], "msg": "invalid request"}
        where = ".".join(x for x in first["loc"] if x != "body") or "body"
        return JSONResponse({"detail": f"{where}: {first['msg']}", "errors": errs, "error": "invalid_request"},
                            status_code=422)

    @app.exception_handler(InputError)
    async def _input(request: Request, exc: InputError):
        return error(422, str(exc))

    @app.exception_handler(TooLargeError)
    async def _large(request: Request, exc: TooLargeError):
        return error(413, str(exc))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):  # never a traceback in a body
        log.error("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return error(500, "internal server error")

    @app.middleware("http")
    async def _observe(request: Request, call_next):
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            dt = time.perf_counter() - t0
            app.state.metrics.observe(request.method, path, status, dt)
            # no bodies and no keys in logs: method, route template, status, key id, time
            log.info("%s %s %d key=%s %.1fms", request.method, path, status,
                     getattr(request.state, "key_id", "-"), 1e3 * dt)

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    from .routes import admin_router, ops_router, v1_router

    app.include_router(ops_router)
    app.include_router(v1_router)
    if settings.admin_key:
        app.include_router(admin_router)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (each worker builds its app from the environment)."""
    warnings.filterwarnings("ignore", category=Warning, module="oscillink_core")
    return create_app(Settings())


def openapi_document(settings: Settings | None = None) -> str:
    """The OpenAPI document as committed in docs/openapi.json (default settings, no admin routes)."""
    app = create_app(settings or Settings(state="memory", keys_file="/nonexistent/keys.json"))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
