"""The work behind each endpoint: validate shapes once, then call the public core API."""

from __future__ import annotations

import hashlib
import json
import struct
import time
from typing import Any

import numpy as np

from oscillink_core import LatticeParams, Oscillink, canonical_json, rerank, resolve_params

from .models import Params, SettleRequest


class InputError(ValueError):
    """Bad input found after schema validation (shapes, ids, ...): a 422 with this message."""


class TooLargeError(ValueError):
    """N, D or N x D above the server's caps: a 413."""


def check_size(n: int, d: int, settings) -> None:
    if n > settings.max_n:
        raise TooLargeError(f"N={n} candidates exceed the server's limit of {settings.max_n}")
    if d > settings.max_d:
        raise TooLargeError(f"D={d} dimensions exceed the server's limit of {settings.max_d}")
    if n * d > settings.max_units:
        raise TooLargeError(f"N x D = {n * d} units exceed the server's per-request limit of {settings.max_units}")


def matrix(req: SettleRequest, settings) -> tuple[np.ndarray, np.ndarray]:
    """(Y, psi) as float32 after the size caps; every shape problem is an InputError."""
    n = len(req.Y)
    if n == 0:
        raise InputError("Y is empty: give at least one row")
    d = len(req.Y[0])
    check_size(n, d, settings)
    if d == 0:
        raise InputError("Y's rows are empty: give at least one dimension")
    bad = next((i for i, row in enumerate(req.Y) if len(row) != d), None)
    if bad is not None:
        raise InputError(f"Y must be N x D: row 0 has {d} values, row {bad} has {len(req.Y[bad])}")
    Y = np.asarray(req.Y, dtype=np.float64)
    if not np.isfinite(Y).all():
        raise InputError("Y holds a non-finite value (NaN or infinity)")
    if np.abs(Y).max() > 1e30:
        raise InputError("Y holds a value beyond +-1e30")
    if req.psi is None:
        psi = Y.mean(axis=0)
    else:
        if len(req.psi) != d:
            raise InputError(f"psi has {len(req.psi)} values; Y's rows have D={d}")
        psi = np.asarray(req.psi, dtype=np.float64)
        if not np.isfinite(psi).all() or np.abs(psi).max() > 1e30:
            raise InputError("psi holds a non-finite value or one beyond +-1e30")
    if not np.linalg.norm(psi) > 0:
        raise InputError("psi is the zero vector (give a query embedding with a direction)")
    if req.gates is not None:
        if len(req.gates) != n:
            raise InputError(f"gates has {len(req.gates)} values; Y has N={n} rows")
        g = np.asarray(req.gates, dtype=np.float64)
        if not np.isfinite(g).all() or (g < 0).any() or (g > 1).any():
            raise InputError("gates must lie in [0, 1]")
    if req.chain is not None:
        if len(req.chain) < 2:
            raise InputError("chain must have at least 2 node indices")
        if any(c < 0 or c >= n for c in req.chain):
            raise InputError(f"chain indices must lie in [0, {n - 1}]")
    if req.ids is not None:
        if len(req.ids) != n:
            raise InputError(f"ids has {len(req.ids)} entries; Y has N={n} rows")
        if len({json.dumps(i) for i in req.ids}) != n:
            raise InputError("ids must be unique")
    return Y.astype(np.float32), psi.astype(np.float32)


def effective_params(profile: dict | None, req_params: Params, n: int) -> tuple[LatticeParams, int, int]:
    """Defaults <- the key's profile <- the request's fields. Returns (params, k requested, k effective)."""
    base = resolve_params(profile) if profile else resolve_params(None)
    over = req_params.model_dump(exclude_none=True, exclude={"deterministic_k", "neighbor_seed"})
    try:
        p = base.replace(**over) if over else base
        p = resolve_params(p)
    except (TypeError, ValueError) as exc:
        raise InputError(f"params: {exc}") from None
    k_req = p.kneighbors
    k_eff = max(min(k_req, n - 1), 0)
    if k_eff != k_req and n > 1:
        p = p.replace(kneighbors=k_eff)
    return p, k_req, k_eff


def profile_id(kid: str, profile: dict | None) -> str:
    if not profile:
        return "default"
    return f"{kid}.{hashlib.sha256(canonical_json(profile.get('params', {}))).hexdigest()[:12]}"


def request_hash(kid: str, route: str, body: Any, pid: str) -> str:
    """Canonical hash of a request: key, route, its parsed fields (defaults filled) and the profile."""
    blob = json.dumps({"k": kid, "r": route, "b": body, "p": pid}, sort_keys=True, separators=(",", ":"),
                      allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def lattice(Y: np.ndarray, psi: np.ndarray, req: SettleRequest, p: LatticeParams) -> tuple[Oscillink, dict, float]:
    t0 = time.perf_counter()
    lat = Oscillink(Y, ids=req.ids, params=p)
    lat.set_query(psi, gates=req.gates)
    if req.chain is not None:
        lat.add_chain(req.chain, lamP=p.lamP if p.lamP > 0 else 0.2)
    info = lat.settle(rtol=req.options.tol, maxiter=req.options.max_iters)
    return lat, info, t0


def meta(n: int, d: int, k_req: int, k_eff: int, p: LatticeParams, pid: str, rid: str) -> dict:
    return {"N": n, "D": d, "kneighbors_requested": k_req, "kneighbors_effective": k_eff,
            "lam": {"G": p.lamG, "C": p.lamC, "Q": p.lamQ, "P": p.lamP}, "profile_id": pid,
            "response_id": rid, "usage": {"nodes": n, "node_dim_units": n * d}}


def check_sources(sources: list | None, n: int | None) -> None:
    """The rerank request's ``sources`` against its ``n`` candidates (None: an --index query, which
    takes no ``sources``); an InputError otherwise. Each entry's type and length are the schema's."""
    if sources is None:
        return
    if n is None:
        raise InputError("sources apply to candidates; an --index query judges the index's passages by the sources "
                         "stored with them (give trusted_sources alone)")
    if len(sources) != n:
        raise InputError(f"sources has {len(sources)} entries; candidates has {n} (one source, or null, per "
                         "candidate, in their order)")


def text_rerank(query_vec: np.ndarray, cand_vecs: np.ndarray, ids: list, k: int, p: LatticeParams,
                sign_key: str | None, light: bool, texts: list[str] | None = None, query_text: str | None = None,
                sources: list | None = None, trusted_sources: list | None = None):
    return rerank(query_vec, cand_vecs, k=min(k, len(ids)), ids=ids, params=p, sign_key=sign_key,
                  light_receipt=light, texts=texts, query_text=query_text, sources=sources,
                  trusted_sources=trusted_sources)


# ---------------------------------------------------------------- feedback inputs (binary, compact)
def pack_inputs(Y: np.ndarray, psi: np.ndarray, ids: list, shown: list) -> bytes:
    head = json.dumps({"n": int(Y.shape[0]), "d": int(Y.shape[1]), "ids": ids, "shown": shown}).encode()
    return struct.pack("<I", len(head)) + head + np.ascontiguousarray(psi, "<f4").tobytes() + \
        np.ascontiguousarray(Y, "<f4").tobytes()


def unpack_inputs(data: bytes) -> tuple[np.ndarray, np.ndarray, list, list]:
    (hl,) = struct.unpack("<I", data[:4])
    head = json.loads(data[4:4 + hl])
    n, d = head["n"], head["d"]
    off = 4 + hl
    psi = np.frombuffer(data, "<f4", d, off).astype(np.float32)
    Y = np.frombuffer(data, "<f4", n * d, off + 4 * d).reshape(n, d).astype(np.float32)
    return Y, psi, head["ids"], head["shown"]
