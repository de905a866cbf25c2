"""Receipts: canonical encoding, the state signature, HMAC signing and schema validation.

* ``state_sig`` = SHA-256 over a framed, canonical encoding of everything that determines
  a result: the SHA-256 of Y (float32, little-endian, C order), candidate ids, psi, gates, params, bundle
  size k, the adjacency (CSR arrays) and the chain, followed by the bundle those inputs
  produced (ids and scores). Two runs agree on it exactly when they agree on all of it.
* The receipt itself is JSON; :func:`canonical_json` is the byte form used for HMACs and
  for comparing receipts (sorted keys, no spaces, floats as rounded by the receipt builder).
* :func:`sign_receipt` adds ``signature = {"algorithm": "HMAC-SHA256", "value": hex}``
  computed over the canonical JSON of every other field; :func:`verify_receipt` checks it.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import numpy as np

__all__ = [
    "canonical_json",
    "state_signature",
    "sign_receipt",
    "verify_receipt",
    "validate_receipt",
    "receipt_schema",
    "hash_ids",
    "round_float",
    "strip_timings",
    "texts_digest",
]

SIGNATURE_ALGORITHM = "HMAC-SHA256"
RECEIPT_FORMAT = "oscillink-core/receipt"
RECEIPT_VERSION = 1


def round_float(x: float, digits: int = 12) -> float:
    """Round to ``digits`` significant digits: receipts stay byte-stable across BLAS builds."""
    x = float(x)
    if x == 0.0 or not np.isfinite(x):
        return 0.0 if x == 0.0 else x
    return float(f"{x:.{digits}g}")


def canonical_json(obj: Any) -> bytes:
    """Canonical UTF-8 JSON bytes: sorted keys, compact separators, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _frame(h: hashlib._Hash, tag: str, payload: bytes) -> None:
    t = tag.encode("ascii")
    h.update(len(t).to_bytes(2, "little") + t + len(payload).to_bytes(8, "little"))
    h.update(payload)


def _canonical_array(a: np.ndarray, dtype: str) -> tuple[bytes, np.ndarray]:
    """(header naming dtype and shape, the little-endian C-order array) of an array's canonical form."""
    arr = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
    return f"{arr.dtype.str}|{','.join(map(str, arr.shape))}|".encode("ascii"), arr


def _array_bytes(a: np.ndarray, dtype: str) -> bytes:
    header, arr = _canonical_array(a, dtype)
    return header + arr.tobytes()


def hash_ids(ids: Iterable[Any], *, ids_json: bytes | None = None) -> str:
    """SHA-256 of the canonical JSON list of candidate ids (order matters); ``ids_json`` may pass
    that encoding when already computed (``canonical_json(list(ids))``)."""
    return hashlib.sha256(ids_json if ids_json is not None else canonical_json(list(ids))).hexdigest()


def array_digest(a: np.ndarray, dtype: str = "f4") -> bytes:
    """SHA-256 digest of an array's canonical bytes (dtype, shape, little-endian C-order data)."""
    header, arr = _canonical_array(a, dtype)
    h = hashlib.sha256(header)
    if arr.size:
        h.update(memoryview(arr.reshape(-1)).cast("B"))  # no copy; hashlib releases the GIL
    return h.digest()


def state_signature(*, Y: np.ndarray | None = None, ids: list, Y_digest: bytes | None = None,
                    ids_json: bytes | None = None, psi: np.ndarray,
                    gates: np.ndarray,
                    params: Mapping[str, Any], k: int, indptr: np.ndarray, indices: np.ndarray,
                    data: np.ndarray, chain: Mapping[str, Any] | None, bundle: list | None = None,
                    texts_digest: bytes | None = None, query_text: str | None = None,
                    provenance: Mapping[str, Any] | None = None) -> str:
    """SHA-256 over the framed canonical encoding of every input that determines a result,
    and of the bundle it produced (ids and rounded scores), so the signature binds both.
    ``Y_digest`` and ``ids_json`` may be passed when already computed (``array_digest(Y)``,
    ``canonical_json(list(ids))``). The candidates' texts (``texts_digest``, see `texts_digest`)
    and the query text are framed only when given, so text-free signatures are unchanged; so is
    ``provenance`` (the digests of the candidates' sources and of the trusted set)."""
    h = hashlib.sha256()
    _frame(h, "format", f"{RECEIPT_FORMAT}/{RECEIPT_VERSION}".encode())
    _frame(h, "Y.sha256", Y_digest if Y_digest is not None else array_digest(Y))
    _frame(h, "ids", ids_json if ids_json is not None else canonical_json(list(ids)))
    _frame(h, "psi", _array_bytes(psi, "f4"))
    _frame(h, "gates", _array_bytes(gates, "f4"))
    _frame(h, "params", canonical_json(dict(params)))
    _frame(h, "k", str(int(k)).encode())
    _frame(h, "adj.indptr", _array_bytes(indptr, "i8"))
    _frame(h, "adj.indices", _array_bytes(indices, "i8"))
    _frame(h, "adj.data", _array_bytes(data, "f4"))
    _frame(h, "chain", canonical_json(chain if chain is not None else None))
    _frame(h, "bundle", canonical_json(bundle if bundle is not None else None))
    if texts_digest is not None:
        _frame(h, "texts.sha256", texts_digest)
    if query_text is not None:
        _frame(h, "query_text", query_text.encode("utf-8"))
    if provenance is not None:
        _frame(h, "provenance", canonical_json(dict(provenance)))
    return h.hexdigest()


def texts_digest(texts: Iterable[str]) -> bytes:
    """SHA-256 over the candidates' texts, each framed by its UTF-8 length (so no two lists of
    texts share a digest by re-splitting)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.digest()


def _key_bytes(key: bytes | str) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)) or len(key) == 0:
        raise ValueError("the signing key must be a non-empty str or bytes")
    return bytes(key)


def _payload(receipt: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in receipt.items() if k != "signature"}
    return canonical_json(body)


def sign_receipt(receipt: Mapping[str, Any], key: bytes | str) -> dict:
    """Return a copy of ``receipt`` with an HMAC-SHA256 ``signature`` over all other fields."""
    out = copy.deepcopy(dict(receipt))
    out.pop("signature", None)
    mac = hmac.new(_key_bytes(key), _payload(out), hashlib.sha256).hexdigest()
    out["signature"] = {"algorithm": SIGNATURE_ALGORITHM, "value": mac}
    return out


def verify_receipt(receipt: Mapping[str, Any], key: bytes | str) -> bool:
    """True when ``receipt`` carries a valid HMAC-SHA256 signature under ``key``.

    Any change to any field (timings included) after signing makes this False.
    """
    sig = receipt.get("signature") if isinstance(receipt, Mapping) else None
    if not isinstance(sig, Mapping) or sig.get("algorithm") != SIGNATURE_ALGORITHM:
        return False
    value = sig.get("value")
    if not isinstance(value, str):
        return False
    try:
        expected = hmac.new(_key_bytes(key), _payload(receipt), hashlib.sha256).hexdigest()
    except (TypeError, ValueError):
        return False
    return hmac.compare_digest(expected, value)


def strip_timings(receipt: Mapping[str, Any]) -> dict:
    """Copy of a receipt without its ``timings_ms`` and ``signature`` blocks (for comparison)."""
    return {k: v for k, v in receipt.items() if k not in ("timings_ms", "signature")}


def receipt_schema() -> dict:
    """The JSON Schema (draft 2020-12) that every receipt validates against."""
    text = resources.files("oscillink_core").joinpath("schemas/receipt.schema.json").read_text("utf-8")
    return json.loads(text)


def _non_finite(obj: Any, path: tuple = ()) -> tuple | None:
    """Path of the first NaN or infinite float in a JSON-like object (None if there is none)."""
    if isinstance(obj, float):
        return None if np.isfinite(obj) else path
    if isinstance(obj, Mapping):
        items: Iterable = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, (*path, k))
        if found is not None:
            return found
    return None


def validate_receipt(receipt: Any) -> None:
    """Raise ``ValueError`` naming the first problem when ``receipt`` does not match the schema.

    Numbers must be finite: JSON has no NaN or Infinity, but Python's ``json`` reads them, and
    JSON Schema's ``"type": "number"`` accepts them, so they are checked here explicitly.
    """
    bad = _non_finite(receipt)
    if bad is not None:
        where = "/".join(map(str, bad)) or "(root)"
        value = receipt
        for k in bad:
            value = value[k]
        raise ValueError(f"receipt does not match the schema at {where}: {value!r} is not a finite number")
    try:
        import jsonschema
    except ImportError:  # pragma: no cover
        raise ImportError("receipt validation needs jsonschema: pip install 'oscillink-core[cli]'") from None
    validator = jsonschema.Draft202012Validator(receipt_schema())
    errors = sorted(validator.iter_errors(receipt), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(map(str, e.absolute_path)) or "(root)"
        raise ValueError(f"receipt does not match the schema at {where}: {e.message}")
