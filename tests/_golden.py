"""Fixed inputs and the receipts they produce, for the byte-for-byte golden test.

`build(case, backend)` runs one case on one backend and returns a JSON-ready dict: the
bundles, the full and the light receipt, and a signed receipt (timings are stripped from every
receipt; the signed one is re-signed over its stripped body, since the HMAC also covers the
timings, and the original signature is checked to verify). `tests/test_core_golden.py` compares
`canonical_json` of that dict with ``tests/data/golden/<case>-<backend>.json``.

Regenerate the golden files ONLY on an intended change of behaviour (a new receipt field, a
changed default), never to make a failing test pass:

    PYTHONPATH=. python -m tests._golden            # rewrites tests/data/golden/*.json
    PYTHONPATH=. python -m tests._golden --check    # compares only, exit 1 on a difference

and say in the commit message why the receipts changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

GOLDEN_DIR = Path(__file__).parent / "data" / "golden"
KEY = b"golden-test-key"


def _rows(seed: int, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=d)
    rel = centre + 0.6 * rng.normal(size=(n // 4, d))
    Y = np.vstack([rel, rng.normal(size=(n - n // 4, d))]).astype(np.float32)
    Y = Y[rng.permutation(n)]
    psi = (centre + 0.2 * rng.normal(size=d)).astype(np.float32)
    return Y, psi


def _closest(Y: np.ndarray, psi: np.ndarray, m: int) -> list[int]:
    """The m rows with the largest cosine to psi, skipping the rows the cases overwrite."""
    cos = (Y @ psi) / np.linalg.norm(Y, axis=1)
    return [int(i) for i in np.argsort(-cos) if i not in (1, 2, 7, 11, 20)][:m]


def _case_inputs(case: str) -> dict:
    """(Y, psi) and what else the case sets: ids, params, gates, chain, duplicate rows."""
    if case == "small":
        Y, psi = _rows(0, 30, 16)
        return {"Y": Y, "psi": psi}
    if case == "gates":
        Y, psi = _rows(1, 120, 64)
        gates = np.random.default_rng(11).uniform(0.2, 1.0, size=120).astype(np.float32)
        return {"Y": Y, "psi": psi, "gates": gates, "ids": [f"doc-{i}" for i in range(120)]}
    if case == "chain":
        Y, psi = _rows(2, 200, 48)
        return {"Y": Y, "psi": psi, "chain": ([0, 5, 9, 14, 3], 0.3, None)}
    if case == "chain_weighted":
        Y, psi = _rows(3, 90, 24)
        return {"Y": Y, "psi": psi, "chain": ([7, 2, 40], 0.5, [1.0, 0.25])}
    if case == "duplicates":
        Y, psi = _rows(4, 80, 32)
        top = _closest(Y, psi, 2)  # duplicates of the best candidates, so they reach the bundle
        Y[1] = Y[top[0]]
        Y[7] = Y[top[1]] * np.float32(1.0001)
        Y[20] = Y[top[1]] + np.float32(1e-4)
        return {"Y": Y, "psi": psi, "params": {"kneighbors": 5}}
    if case == "duplicates_demote":
        Y, psi = _rows(5, 64, 32)
        top = _closest(Y, psi, 1)
        Y[2] = Y[top[0]]
        Y[11] = Y[top[0]]
        return {"Y": Y, "psi": psi, "params": {"dup_action": "demote", "dup_keep": "best", "mmr_lambda": 0.3}}
    if case == "diffusion":
        Y, psi = _rows(6, 300, 96)
        return {"Y": Y, "psi": psi, "params": {"gating": "diffusion"}}
    if case == "raw_scale":
        Y, psi = _rows(7, 60, 20)
        Y *= np.linspace(0.5, 3.0, 60, dtype=np.float32)[:, None]
        return {"Y": Y, "psi": psi, "params": {"normalize": False, "lamQ": 2.0, "dedup_threshold": None}}
    raise KeyError(case)


CASES = ["small", "gates", "chain", "chain_weighted", "duplicates", "duplicates_demote", "diffusion", "raw_scale"]


def _stripped(receipt: dict) -> dict:
    from oscillink_core import strip_timings

    return strip_timings(receipt)


def build(case: str, backend: str) -> dict:
    """Run ``case`` on ``backend`` and return everything the golden file records."""
    from oscillink_core import Oscillink, rerank, sign_receipt, verify_receipt

    c = _case_inputs(case)
    lat = Oscillink(c["Y"], ids=c.get("ids"), params=c.get("params"), backend=backend)
    lat.set_query(c["psi"], gates=c.get("gates"))
    if "chain" in c:
        nodes, lamP, weights = c["chain"]
        lat.add_chain(nodes, lamP=lamP, weights=weights)
    info = lat.settle()
    b7 = lat.bundle(k=7)
    full = lat.receipt()  # the bundle of the last call: k = 7
    light = lat.receipt(k=4, light=True)
    signed = lat.receipt(k=5, sign_key=KEY)
    if not verify_receipt(signed, KEY):
        raise AssertionError("a freshly signed receipt does not verify")
    res = rerank(c["psi"], c["Y"], k=6, ids=c.get("ids"), params=c.get("params"), gates=c.get("gates"),
                 light_receipt=True, sign_key=KEY, backend=backend)
    out = {
        "case": case,
        "backend": backend,
        "settle": {k: info[k] for k in ("iterations", "residual", "converged", "rtol")},
        "bundle_k7": b7,
        "receipt_full": _stripped(full),
        "receipt_light": _stripped(light),
        "receipt_signed": sign_receipt(_stripped(signed), KEY),
        "rerank_items": [it.to_dict() for it in res],
        "rerank_receipt": sign_receipt(_stripped(res.receipt), KEY),
    }
    if "chain" in c:
        out["chain_receipt"] = lat.chain_receipt()
    return out


def golden_path(case: str, backend: str) -> Path:
    return GOLDEN_DIR / f"{case}-{backend}.json"


def encode(obj: dict) -> bytes:
    """The bytes a golden file holds: canonical JSON plus a newline."""
    from oscillink_core import canonical_json

    return canonical_json(obj) + b"\n"


def main(argv: list[str]) -> int:
    from oscillink_core import available_backends

    check = "--check" in argv
    bad = 0
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for backend in available_backends():
        for case in CASES:
            data = encode(build(case, backend))
            path = golden_path(case, backend)
            if check:
                same = path.exists() and path.read_bytes() == data
                bad += not same
                print(f"{'ok  ' if same else 'DIFF'} {path.name}")
            else:
                path.write_bytes(data)
                print(f"wrote {path.name} ({len(data)} bytes)")
    if "numba" not in available_backends():
        print("numba is not installed: its golden files were not checked/written", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
