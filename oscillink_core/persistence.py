"""Lattice files: a lattice's `state_dict` as a single .npz (no pickle), written atomically.

This module knows nothing of the lattice's internals: `save` asks the object for its
``state_dict()`` and `load_state` returns the same plain structure, which
`Oscillink.from_state` (and `oscillink_core.load`) turns back into a lattice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["save", "save_state", "load_state"]


def _npz_path(path) -> Path:
    p = Path(path)
    return p if p.suffix == ".npz" else p.with_name(p.name + ".npz")


def save_state(state: dict, path) -> Path:
    """Write ``{"meta": JSON-serialisable dict, "arrays": {name: ndarray}}`` to ``path`` (.npz
    added when missing): to a temporary file in the same folder, then one rename."""
    p = _npz_path(path)
    arrays: dict[str, Any] = dict(state["arrays"])
    if "meta" in arrays:
        raise ValueError("an array may not be named 'meta'")
    arrays["meta"] = np.frombuffer(json.dumps(state["meta"]).encode("utf-8"), dtype=np.uint8)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def save(lattice, path) -> Path:
    """Write ``lattice`` (anything with ``state_dict()``, e.g. `Oscillink`) to ``path`` (.npz);
    `oscillink_core.load` restores it exactly: graph, query, gates, chain, kNN lists, backend."""
    return save_state(lattice.state_dict(), path)


def load_state(path) -> dict:
    """Read a file written by `save` / `save_state`; returns ``{"meta", "arrays"}``."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise ValueError(f"lattice file not found: {p}") from None
    except Exception as exc:
        raise ValueError(f"{p} is not a readable lattice file: {exc}") from None
    try:
        meta = json.loads(bytes(arrays.pop("meta")).decode("utf-8"))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{p} has no valid lattice metadata: {exc}") from None
    if not isinstance(meta, dict) or not str(meta.get("format", "")).startswith("oscillink-core/lattice"):
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{p} is not an oscillink-core lattice file (format {fmt!r})")
    return {"meta": meta, "arrays": arrays}
