"""Fetching stored candidate vectors from a LlamaIndex vector store by node id.

Retrieved nodes usually arrive without embeddings (the docstore keeps nodes without them),
but the vector store that answered the query holds exactly the vectors the retriever scored.
Two stores are read directly:

* ``SimpleVectorStore``: ``get(vector_id)`` returns the stored embedding. ``VectorStoreIndex``
  inserts nodes under their node id, so the vector id *is* the node id.
* ``FaissVectorStore`` (``llama-index-vector-stores-faiss``; checked against 0.7.0): ``add`` appends
  each vector to the FAISS index and returns ``str(ntotal)`` before the add, i.e. the row position,
  as the vector id. The store keeps no node ids. ``VectorStoreIndex`` records the mapping in
  ``index.index_struct.nodes_dict`` as ``{vector_id: node_id}``, so the position of a node is the
  key whose value is its node id; the vector is ``faiss_index.reconstruct_batch(positions)``.
  Without the index (a bare ``FaissVectorStore``) node ids cannot be mapped to positions.
  Indexes that cannot reconstruct (IVF without a direct map, PQ codes) raise inside FAISS; the
  caller then embeds the node text instead and says so in the receipt.

* ``ChromaVectorStore`` (``llama-index-vector-stores-chroma``): records are stored under the node
  id; ``collection.get(ids=..., include=["embeddings"])`` (see `oscillink_core.app.vectorstores`).
  Its retriever reports ``exp(-distance)`` as the score, a similarity.
* ``QdrantVectorStore`` (``llama-index-vector-stores-qdrant``; a server or ``qdrant-client`` local
  mode): points are stored under the node id; ``client.retrieve(..., with_vectors=True)`` with the
  store's dense vector name. Scores are Qdrant's (similarity for Cosine / Dot collections).

Any other store returns nothing here and the caller embeds the node text.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["store_kind", "NodeIdMap", "lookup_vectors", "score_kind"]


def _named(obj: Any, name: str, module: str) -> bool:
    return any(c.__name__ == name and c.__module__.startswith(module) for c in type(obj).__mro__)


def store_kind(vector_store: Any) -> str | None:
    """``"simple"``, ``"faiss"``, ``"chroma"``, ``"qdrant"`` or None (a store this module cannot read)."""
    if vector_store is None:
        return None
    from llama_index.core.vector_stores.simple import SimpleVectorStore

    if isinstance(vector_store, SimpleVectorStore):
        return "simple"
    if _named(vector_store, "ChromaVectorStore", "llama_index.vector_stores.chroma"):
        return "chroma"
    if _named(vector_store, "QdrantVectorStore", "llama_index.vector_stores.qdrant"):
        return "qdrant"
    try:
        from llama_index.vector_stores.faiss import FaissVectorStore
    except ImportError:  # the faiss vector store package is optional
        FaissVectorStore = None
    if FaissVectorStore is not None and isinstance(vector_store, FaissVectorStore):
        return "faiss"
    return None


class NodeIdMap:
    """node id -> vector-store id, read from a live ``VectorStoreIndex``'s ``index_struct``.

    The inverse of ``index_struct.nodes_dict`` is cached and rebuilt whenever the dict object or
    its size changes (inserts) or a cached entry no longer points back at its node id (deletes).
    """

    def __init__(self, index: Any) -> None:
        self._index = index
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None
        self._inverse: dict[str, str] = {}

    def _nodes_dict(self) -> Mapping[str, str]:
        struct = getattr(self._index, "index_struct", None)
        nodes_dict = getattr(struct, "nodes_dict", None)
        if not isinstance(nodes_dict, Mapping):
            raise TypeError(f"{type(self._index).__name__} has no index_struct.nodes_dict (not a VectorStoreIndex?)")
        return nodes_dict

    def get(self, node_ids: Sequence[str]) -> list[str | None]:
        nodes_dict = self._nodes_dict()
        with self._lock:
            key = (id(nodes_dict), len(nodes_dict))
            if key != self._key:
                self._inverse = {node_id: vid for vid, node_id in nodes_dict.items()}
                self._key = key
            out = [self._inverse.get(n) for n in node_ids]
            if any(v is not None and nodes_dict.get(v) != n for v, n in zip(out, node_ids, strict=True)):
                self._inverse = {node_id: vid for vid, node_id in nodes_dict.items()}
                out = [self._inverse.get(n) for n in node_ids]
        return out


def _simple_vectors(store: Any, vector_ids: Sequence[str | None]) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    for vid in vector_ids:
        try:
            vec = store.get(vid) if vid is not None else None
        except KeyError:
            vec = None
        out.append(None if vec is None else np.asarray(vec, dtype=np.float32))
    return out


def _faiss_vectors(store: Any, vector_ids: Sequence[str | None]) -> list[np.ndarray | None]:
    index = store.client
    ntotal = int(index.ntotal)
    out: list[np.ndarray | None] = [None] * len(vector_ids)
    rows, positions = [], []
    for i, vid in enumerate(vector_ids):
        try:
            pos = int(vid) if vid is not None else -1
        except ValueError:
            pos = -1
        if 0 <= pos < ntotal:
            rows.append(i)
            positions.append(pos)
    if positions:
        vecs = index.reconstruct_batch(np.asarray(positions, dtype=np.int64))
        vecs = np.asarray(vecs, dtype=np.float32).reshape(len(positions), -1)
        for i, v in zip(rows, vecs, strict=True):
            out[i] = v
    return out


def score_kind(vector_store: Any) -> tuple[str, str | None]:
    """What the retriever's scores over ``vector_store`` are: (``"similarity"`` | ``"distance"`` |
    ``"unknown"``, a description or None)."""
    kind = store_kind(vector_store)
    if kind == "simple":
        return "similarity", "SimpleVectorStore: cosine similarity (default query mode)"
    if kind == "faiss":
        metric = getattr(vector_store.client, "metric_type", None)
        if metric == 0:  # faiss.METRIC_INNER_PRODUCT
            return "similarity", "FaissVectorStore: inner product"
        return "distance", "FaissVectorStore: squared L2 distance (lower is closer)"
    if kind == "chroma":
        return "similarity", "ChromaVectorStore: exp(-distance)"
    if kind == "qdrant":
        from oscillink_core.app.vectorstores import qdrant_score_kind

        k, dist = qdrant_score_kind(vector_store.client, vector_store.collection_name,
                                    getattr(vector_store, "dense_vector_name", None))
        return k, f"QdrantVectorStore: {dist}"
    return "unknown", None


def _served_vectors(kind: str, store: Any, node_ids: Sequence[str]) -> tuple[list[np.ndarray | None], str | None]:
    from oscillink_core.app.vectorstores import chroma_vectors, qdrant_vectors

    empty: list[np.ndarray | None] = [None] * len(node_ids)
    try:
        if kind == "chroma":
            rows, prov = chroma_vectors(store._collection, node_ids)
        else:
            rows, prov = qdrant_vectors(store.client, store.collection_name, node_ids,
                                        getattr(store, "dense_vector_name", None))
    except Exception as exc:  # a served store that fails: embed instead, and say why
        note = f"{type(store).__name__} lookup failed ({type(exc).__name__}: {str(exc)[:200]})"
        logger.warning("%s; embedding the node text instead", note)
        return empty, note
    if rows is None:
        return empty, prov.get("reason")
    return list(rows), None


def lookup_vectors(vector_store: Any, node_ids: Sequence[str], id_map: NodeIdMap | None = None
                   ) -> tuple[list[np.ndarray | None], str | None]:
    """Stored vectors for ``node_ids`` (None where the store has none) and an error note or None.

    ``id_map`` maps node ids to vector-store ids (needed for FAISS; for ``SimpleVectorStore``
    node ids are used directly when it is None).
    """
    kind = store_kind(vector_store)
    empty: list[np.ndarray | None] = [None] * len(node_ids)
    if kind is None:
        return empty, None
    if kind in ("chroma", "qdrant"):  # both store each node under its node id
        return _served_vectors(kind, vector_store, node_ids)
    if id_map is not None:
        vector_ids = id_map.get(node_ids)
    elif kind == "simple":
        vector_ids = list(node_ids)
    else:
        return empty, ("FaissVectorStore keeps vectors by position and node ids are mapped to positions by the "
                       "index: build the postprocessor with OscillinkPostprocessor.from_index(index)")
    if kind == "simple":
        return _simple_vectors(vector_store, vector_ids), None
    try:
        return _faiss_vectors(vector_store, vector_ids), None
    except RuntimeError as exc:  # e.g. IVF without a direct map cannot reconstruct
        note = f"FAISS could not reconstruct stored vectors ({str(exc).splitlines()[0][:200]})"
        logger.warning("%s; embedding the node text instead", note)
        return empty, note
