"""Stored vectors from served vector stores (Chroma, Qdrant), read by id instead of re-embedding.

Framework-free: these functions take the stores' own client objects (a ``chromadb`` collection, a
``qdrant_client.QdrantClient``), so the LangChain and LlamaIndex adapters and the CLI share them.

* Chroma: ``collection.get(ids=..., include=["embeddings"])``. Chroma returns the rows in its own
  order and silently leaves out ids it does not hold; we map them back by id and report the
  missing ones. Chroma keeps float32, so the vectors come back exactly as stored. Every Chroma
  space (``l2``, ``cosine``, ``ip``) reports a *distance* (lower is closer).
* Qdrant: ``client.retrieve(collection, ids, with_vectors=True, with_payload=False)``; named
  vectors are picked by name. Qdrant reports a similarity for ``Cosine`` / ``Dot`` collections and
  a distance for ``Euclid`` / ``Manhattan``. Point ids are UUIDs or unsigned ints; a UUID given
  in another spelling (no dashes, upper case) is matched to its canonical form.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["chroma_vectors", "chroma_space", "qdrant_vectors", "qdrant_score_kind", "is_chroma_collection",
           "is_qdrant_client"]


def is_chroma_collection(obj: Any) -> bool:
    return type(obj).__module__.startswith("chromadb") and hasattr(obj, "get") and hasattr(obj, "query")


def is_qdrant_client(obj: Any) -> bool:
    return type(obj).__module__.startswith("qdrant_client") and hasattr(obj, "retrieve")


def chroma_space(collection: Any) -> str | None:
    """The collection's distance function (``"l2"``, ``"cosine"`` or ``"ip"``), or None if unknown."""
    try:
        space = (collection.configuration or {}).get("hnsw", {}) or {}
        space = space.get("space")
    except Exception:  # older clients: no configuration
        space = None
    if space is None:
        space = (collection.metadata or {}).get("hnsw:space", "l2")
    return getattr(space, "value", space)


def chroma_vectors(collection: Any, ids: Sequence[str]) -> tuple[np.ndarray | None, dict]:
    """Stored vectors for ``ids`` in that order, or (None, provenance with a reason)."""
    prov: dict = {"vector_access": "chroma collection.get(ids=..., include=['embeddings'])",
                  "chroma_collection": getattr(collection, "name", None), "chroma_space": chroma_space(collection)}
    if any(i in (None, "") for i in ids):
        return None, {**prov, "reason": "a candidate has no id, so its Chroma record cannot be looked up"}
    got = collection.get(ids=list(dict.fromkeys(ids)), include=["embeddings"])
    by_id = dict(zip(got["ids"], got["embeddings"], strict=True))
    missing = [i for i in ids if i not in by_id]
    if missing:
        return None, {**prov, "reason": f"{len(missing)} id(s) not in the Chroma collection (first {missing[0]!r})"}
    rows = np.asarray([np.asarray(by_id[i], dtype=np.float32) for i in ids], dtype=np.float32)
    return rows, prov


def _point_key(pid: Any) -> str:
    s = str(pid)
    try:
        return str(uuid.UUID(s))
    except ValueError:
        return s


def _point_id(pid: Any) -> Any:
    if isinstance(pid, int) and not isinstance(pid, bool):
        return pid
    s = str(pid)
    if s.isdigit():
        return int(s)
    return _point_key(s)


def qdrant_vectors(client: Any, collection_name: str, ids: Sequence[Any], vector_name: str | None = None
                   ) -> tuple[np.ndarray | None, dict]:
    """Stored vectors of the points ``ids`` in that order, or (None, provenance with a reason)."""
    prov: dict = {"vector_access": "qdrant client.retrieve(ids, with_vectors=True)",
                  "qdrant_collection": collection_name}
    if vector_name:
        prov["qdrant_vector_name"] = vector_name
    if any(i in (None, "") for i in ids):
        return None, {**prov, "reason": "a candidate has no point id, so its Qdrant vector cannot be looked up"}
    try:
        wanted = [_point_id(i) for i in ids]
    except ValueError as exc:
        return None, {**prov, "reason": f"not a Qdrant point id ({exc})"}
    points = client.retrieve(collection_name, ids=list(dict.fromkeys(wanted)), with_vectors=True, with_payload=False)
    by_id: dict[str, Any] = {}
    for p in points:
        vec = p.vector
        if isinstance(vec, dict):
            if vector_name in vec:
                vec = vec[vector_name]
            elif len(vec) == 1:
                vec = next(iter(vec.values()))
            else:
                return None, {**prov, "reason": f"points hold several named vectors ({sorted(vec)}) and none is "
                                                f"named {vector_name!r}"}
        by_id[_point_key(p.id)] = vec
    missing = [i for i in wanted if _point_key(i) not in by_id or by_id[_point_key(i)] is None]
    if missing:
        return None, {**prov, "reason": f"{len(missing)} point(s) not in the Qdrant collection or without a vector "
                                        f"(first {missing[0]!r})"}
    rows = np.asarray([np.asarray(by_id[_point_key(i)], dtype=np.float32) for i in wanted], dtype=np.float32)
    return rows, prov


def qdrant_score_kind(client: Any, collection_name: str, vector_name: str | None = None) -> tuple[str, str | None]:
    """(``"similarity"`` | ``"distance"`` | ``"unknown"``, Qdrant's distance name) of a collection."""
    try:
        params = client.get_collection(collection_name).config.params.vectors
        if isinstance(params, dict):
            params = params.get(vector_name) if vector_name in params else next(iter(params.values()))
        dist = getattr(params.distance, "value", str(params.distance))
    except Exception:  # unknown layout: do not guess
        return "unknown", None
    kind = "similarity" if dist.lower() in ("cosine", "dot") else "distance"
    return kind, dist
