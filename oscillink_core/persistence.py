"""save / load of a lattice as a single .npz (no pickle), written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .params import resolve_params

__all__ = ["save", "load"]

_FORMAT = "oscillink-core/lattice"


def save(lattice, path) -> Path:
    """Write ``lattice`` to ``path`` (.npz). Restores exactly: graph, query, gates, chain order and weights."""
    p = Path(path)
    if p.suffix != ".npz":
        p = p.with_name(p.name + ".npz")
    meta = {"format": _FORMAT, "version": 1, "params": lattice._params.to_dict(), "ids": lattice._ids,
            "gate_mode": lattice._gate_mode, "lamP": lattice._lamP, "k_eff": lattice._k_eff,
            "knn_method": lattice._knn_method}
    arrays = {"Y": lattice._Y, "gates": lattice._gates, "W_indptr": lattice._W.indptr,
              "W_indices": lattice._W.indices, "W_data": lattice._W.data,
              "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
    if lattice._psi is not None:
        arrays["psi"] = lattice._psi_raw
    if lattice._chain is not None:
        arrays["chain"] = lattice._chain
        arrays["chain_weights"] = lattice._chain_w
    if lattice._knn[0] is not None:
        arrays["knn_idx"], arrays["knn_sim"] = lattice._knn
    tmp = p.with_name(p.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, p)
    return p


def load(path):
    """Read a lattice written by :func:`save`."""
    from .lattice import Oscillink

    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise ValueError(f"lattice file not found: {p}") from None
    except Exception as exc:
        raise ValueError(f"{p} is not a readable lattice file: {exc}") from None
    try:
        meta = json.loads(bytes(data["meta"]).decode("utf-8"))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{p} has no valid lattice metadata: {exc}") from None
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{p} is not an oscillink-core lattice file (format {meta.get('format')!r})")
    Y = data["Y"]
    n = Y.shape[0]
    W = sp.csr_array((data["W_data"], data["W_indices"], data["W_indptr"]), shape=(n, n))
    lat = Oscillink(Y, ids=meta["ids"], params=resolve_params(meta["params"]), _adjacency=W)
    lat._k_eff = int(meta["k_eff"])
    lat._knn_method = meta["knn_method"]
    if "knn_idx" in data:
        lat._knn = (data["knn_idx"], data["knn_sim"])
    if "chain" in data:
        lat.add_chain(data["chain"].tolist(), lamP=float(meta["lamP"]), weights=data["chain_weights"].tolist())
    if "psi" in data:
        lat._psi_raw = data["psi"].astype(np.float32)
        lat._psi = (lat._psi_raw / np.linalg.norm(lat._psi_raw)).astype(np.float32) if lat._params.normalize \
            else lat._psi_raw
        lat._gates = data["gates"].astype(np.float32)
        lat._gate_mode = meta["gate_mode"]
    return lat
