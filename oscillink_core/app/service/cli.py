"""The ``serve`` and ``keys`` subcommands (hooked into ``oscillink``'s parser by `add_commands`)."""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys

from . import keys as keymod

APP = "oscillink_core.app.service.app:app_from_env"


def _state_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", default=None,
                   help="memory (default; keys in --keys-file) or redis://HOST:PORT/DB (keys, quotas, caches "
                        "and profiles shared by every worker and replica). Env: OSCILLINK_STATE")
    p.add_argument("--keys-file", default=None,
                   help="file keystore for memory state (default $OSCILLINK_KEYS_FILE or ~/.oscillink/keys.json)")


def _settings(a):
    from .settings import Settings

    over = {k: v for k, v in (("state", a.state), ("keys_file", a.keys_file),
                              ("index", getattr(a, "index", None))) if v is not None}
    return Settings(**over)


def cmd_serve(a) -> int:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    try:
        st = _settings(a)
    except Exception as exc:  # pydantic ValidationError: one line
        raise ValueError(str(exc).splitlines()[-1] if str(exc) else "invalid settings") from None
    if a.workers > 1 and not st.uses_redis:
        raise ValueError("--workers > 1 needs shared state: add --state redis://HOST:PORT/DB "
                         "(memory state lives in one process)")
    if st.index and not os.path.isdir(st.index):
        raise ValueError(f"--index {st.index}: no such folder (build one with `oscillink ingest`)")
    # each worker builds its app from the environment (uvicorn --factory)
    os.environ["OSCILLINK_STATE"] = st.state
    os.environ["OSCILLINK_KEYS_FILE"] = st.keys_file
    if st.index:
        os.environ["OSCILLINK_INDEX"] = os.path.abspath(st.index)
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["oscillink_core"] = {"handlers": ["default"], "level": a.log_level.upper(),
                                               "propagate": False}
    print(f"oscillink serve: http://{a.host}:{a.port} (state={'redis' if st.uses_redis else 'memory'}, "
          f"workers={a.workers}{', index=' + st.index if st.index else ''})", file=sys.stderr, flush=True)
    uvicorn.run(APP, factory=True, host=a.host, port=a.port, workers=a.workers, log_level=a.log_level,
                access_log=False, log_config=log_config, timeout_graceful_shutdown=10)
    return 0


def _store(a):
    st = _settings(a)
    return keymod.open_keystore(st.state, st.keys_file), st


def cmd_keys(a) -> int:
    store, st = _store(a)
    if a.keys_command == "create":
        limits = {"monthly_cap": a.monthly_cap, "quota_units": a.quota_units, "quota_window_s": a.quota_window,
                  "rate_capacity": a.rate_capacity, "rate_refill_per_s": a.rate_refill}
        key, rec = keymod.make_record(a.name, **limits)
        store.put(rec)
        if a.json:
            print(json.dumps({"key": key, **keymod.public(rec)}, sort_keys=True))
        else:
            print(key)
            where = st.state if st.uses_redis else st.keys_file
            print(f"created key id {rec['id']} ({a.name}) in {where}; the key is shown only now "
                  "(only its SHA-256 is stored)", file=sys.stderr)
        return 0
    if a.keys_command == "list":
        recs = [keymod.public(r) for r in store.list()]
        if a.json:
            print(json.dumps(recs, sort_keys=True))
        else:
            for r in recs:
                lim = " ".join(f"{f}={r[f]}" for f in keymod.LIMIT_FIELDS if f in r)
                print(f"{r['id']}  {'revoked' if r.get('revoked') else 'active '}  {r['name']}  {lim}".rstrip())
        return 0
    if not store.revoke(a.id):
        raise ValueError(f"no key with id {a.id!r}")
    print(f"revoked {a.id}", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    """Add ``serve`` and ``keys`` to the ``oscillink`` subparsers."""
    s = sub.add_parser("serve", help="run the HTTP reranking service (FastAPI on uvicorn)",
                       description="Serve /v1/settle, /v1/bundle, /v1/receipt, /v1/chain/receipt, /v1/rerank, "
                                   "/v1/verify, /v1/feedback, /healthz, /readyz and /metrics. API keys come from "
                                   "`oscillink keys create`. Other settings: OSCILLINK_* environment variables "
                                   "(OSCILLINK_ADMIN_KEY, OSCILLINK_SIGN_KEY, OSCILLINK_MONTHLY_CAP, ...).")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, help="processes (more than 1 needs --state redis://...)")
    _state_args(s)
    s.add_argument("--index", default=None, help="index folder from `oscillink ingest` for /v1/rerank queries")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    s.set_defaults(func=cmd_serve)

    k = sub.add_parser("keys", help="create, list or revoke API keys of the service",
                       description="Keys are stored only as SHA-256 hashes: in --keys-file (memory state) "
                                   "or in Redis (--state redis://...).")
    ks = k.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    c = ks.add_parser("create", help="create a key and print it (once)")
    c.add_argument("--name", required=True)
    c.add_argument("--monthly-cap", type=int, default=None, help="units (N x D) per calendar month; 0 = unlimited")
    c.add_argument("--quota-units", type=int, default=None, help="units per quota window (X-Quota-*)")
    c.add_argument("--quota-window", type=int, default=None, help="quota window in seconds")
    c.add_argument("--rate-capacity", type=float, default=None, help="token bucket burst, requests")
    c.add_argument("--rate-refill", type=float, default=None, help="token bucket refill, requests per second")
    c.add_argument("--json", action="store_true")
    _state_args(c)
    ls = ks.add_parser("list", help="list keys (ids, names, limits; never the keys)")
    ls.add_argument("--json", action="store_true")
    _state_args(ls)
    r = ks.add_parser("revoke", help="revoke a key by id (requests with it get 403)")
    r.add_argument("id")
    _state_args(r)
    for p in (k, c, ls, r):
        p.set_defaults(func=cmd_keys)
