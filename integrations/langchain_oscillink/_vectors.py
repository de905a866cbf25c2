"""Where candidate vectors come from: the store (reused) or the embedding model (re-embedded).

Store paths that reuse vectors
------------------------------
* ``langchain_core`` `InMemoryVectorStore`: ``store.store[doc.id]["vector"]``.
* ``langchain_community`` `FAISS`: the FAISS label of each document is found through
  ``index_to_docstore_id`` (inverted once and cached per store), then the vectors come from
  ``index.reconstruct_batch(labels)``. This works for flat, HNSW, IVF indexes *with* a direct
  map and `IndexIDMap2`. An IVF index without a direct map (``index.make_direct_map()`` was
  never called) and a plain `IndexIDMap` cannot reconstruct: FAISS raises, and the passages are
  re-embedded instead (the receipt's ``provenance.reason`` carries the FAISS message). We never
  call ``make_direct_map`` ourselves: that would modify the caller's index. Quantised indexes
  (PQ, SQ) reconstruct *approximate* vectors; ``provenance.faiss_index`` names the index type.
* `FaissCandidateSource`: a raw FAISS index plus the documents its labels point to (for users
  without langchain-community); same reconstruct rules.
* ``langchain_chroma`` `Chroma` (a Chroma server through ``chromadb.HttpClient``, or a local
  client): ``collection.get(ids=[Document.id ...], include=["embeddings"])``.
* ``langchain_qdrant`` `QdrantVectorStore` (a server or ``qdrant-client`` local mode):
  ``client.retrieve(collection, ids, with_vectors=True)``; the point id is ``Document.id`` or,
  as langchain-qdrant returns it, ``metadata["_id"]``.

First-stage scores: what the store's ``similarity_search_with_score`` returns, recorded with its
kind: a similarity for `InMemoryVectorStore`, FAISS inner product and Qdrant Cosine / Dot; a
distance for FAISS L2 and every Chroma space (the documents then carry ``retrieval_distance``
instead of ``retrieval_score``, see `oscillink_core.app.adapters`).

Any other store: its documents are re-embedded with the given `Embeddings`, and the receipt
says ``provenance.vectors == "reembedded"``.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from langchain_core.documents import Document

__all__ = ["FaissCandidateSource", "Fetched", "fetch", "afetch", "store_vectors", "as_matrix", "check_query_dim"]


@dataclass
class Fetched:
    """First-stage candidates: documents, their store scores, and the vectors when the store has them."""

    docs: list[Document]
    scores: list[float | None]
    vectors: np.ndarray | None
    provenance: dict = field(default_factory=dict)
    score_kind: str = "unknown"


def as_matrix(rows: Any, what: str) -> np.ndarray:
    """Rows of vectors as a float32 (n, d) array; raise a clear ValueError for ragged input."""
    try:
        arr = np.asarray(rows, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} are not a rectangular array of numbers (embedding sizes differ?): {exc}") from None
    if arr.ndim != 2:
        raise ValueError(f"{what} must form a 2-D array (n, d); got shape {arr.shape}")
    return arr


def _type_name(obj: Any) -> str:
    return type(obj).__name__


def _is_in_memory(store: Any) -> bool:
    from langchain_core.vectorstores import InMemoryVectorStore

    return isinstance(store, InMemoryVectorStore)


def _is_community_faiss(store: Any) -> bool:
    is_faiss = any(c.__name__ == "FAISS" and c.__module__.startswith("langchain_community")
                   for c in type(store).__mro__)  # subclasses too, without importing langchain-community
    return (
        is_faiss
        and hasattr(store, "index_to_docstore_id")
        and hasattr(store, "index")
        and hasattr(store, "docstore")
    )


def _faiss_index_name(index: Any) -> str:
    try:
        import faiss

        return type(faiss.downcast_index(index)).__name__
    except Exception:  # not a SWIG index or faiss missing: report the Python type
        return _type_name(index)


def _reconstruct(index: Any, labels: Sequence[int]) -> tuple[np.ndarray | None, str | None]:
    """``index.reconstruct_batch(labels)`` or (None, reason) when the index cannot reconstruct."""
    lab = np.asarray(labels, dtype=np.int64)
    try:
        out = index.reconstruct_batch(lab)
    except RuntimeError as exc:  # IVF without direct map, IndexIDMap, ...
        msg = str(exc).strip().splitlines()
        detail = msg[-1] if msg else type(exc).__name__
        return None, f"{_faiss_index_name(index)} cannot reconstruct vectors ({detail[-200:]})"
    return np.asarray(out, dtype=np.float32).reshape(len(lab), -1), None


# ------------------------------------------------------------------ InMemoryVectorStore
_mem_lock = threading.Lock()
_mem_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _in_memory_vectors(store: Any, docs: Sequence[Document]) -> tuple[np.ndarray | None, str | None]:
    """Stored vectors of ``docs``. The store keeps Python lists; their float32 rows are cached per
    store and reused while the store still holds the *same* list object under that id (a re-added
    document gets a new list, so the cache can never serve a stale vector)."""
    with _mem_lock:
        cache = _mem_cache.get(store)
        if cache is None or len(cache) > 2 * len(store.store) + 64:  # drop entries of deleted documents
            cache = _mem_cache[store] = {}
    rows = []
    for d in docs:
        rec = store.store.get(d.id) if d.id is not None else None
        if rec is None:
            return None, f"document id {d.id!r} is not in the InMemoryVectorStore"
        vec = rec["vector"]
        hit = cache.get(d.id)
        if hit is None or hit[0] is not vec:
            hit = (vec, np.asarray(vec, dtype=np.float32))
            cache[d.id] = hit
        rows.append(hit[1])
    if len({r.shape for r in rows}) != 1:
        raise ValueError("InMemoryVectorStore vectors differ in size (embedding sizes differ?)")
    return np.stack(rows), None


# ------------------------------------------------------------------ langchain-community FAISS
_rev_lock = threading.Lock()
_rev_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _faiss_labels(store: Any, docs: Sequence[Document]) -> tuple[list[int] | None, str | None]:
    """FAISS labels of ``docs`` via the inverted ``index_to_docstore_id`` map (cached per store)."""
    mapping = store.index_to_docstore_id
    if any(d.id is None for d in docs):
        return None, "a document has no id, so its FAISS label cannot be found"
    for attempt in range(2):
        with _rev_lock:
            cached = _rev_cache.get(store)
        if attempt == 1 or cached is None or cached[0] is not mapping or cached[1] != len(mapping):
            rev = {v: k for k, v in mapping.items()}
            with _rev_lock:
                _rev_cache[store] = (mapping, len(mapping), rev)
        else:
            rev = cached[2]
        labels = [rev.get(d.id) for d in docs]
        # the cached map is only trusted when every hit still points back at the same id
        if all(lab is not None and mapping.get(lab) == d.id for lab, d in zip(labels, docs, strict=True)):
            return [int(x) for x in labels], None
    missing = next(d.id for d, lab in zip(docs, labels, strict=True) if lab is None)
    return None, f"document id {missing!r} is not in index_to_docstore_id"


def _faiss_store_vectors(store: Any, docs: Sequence[Document]) -> tuple[np.ndarray | None, dict]:
    prov = {"faiss_index": _faiss_index_name(store.index)}
    labels, reason = _faiss_labels(store, docs)
    if labels is None:
        return None, {**prov, "reason": reason}
    vecs, reason = _reconstruct(store.index, labels)
    if vecs is None:
        return None, {**prov, "reason": reason}
    return vecs, {**prov, "vector_access": "index.reconstruct_batch via index_to_docstore_id"}


# ------------------------------------------------------------------ raw FAISS index
class FaissCandidateSource:
    """A raw FAISS index plus the documents its labels point to: a candidate source for
    `OscillinkRetriever` that needs neither langchain-community nor a LangChain vector store.

    Parameters
    ----------
    index : a ``faiss.Index`` (flat, HNSW, IVF, `IndexIDMap2`, ...).
    documents : a sequence aligned with the labels ``0 .. index.ntotal - 1`` (indexes built with
        ``index.add``), or a mapping ``{label: Document}`` (indexes built with ``add_with_ids``).
    metric : optional text recorded in the receipt describing what the index's scores mean
        (default: inner product for ``METRIC_INNER_PRODUCT`` indexes, else squared L2 distance).

    Notes
    -----
    Vectors come from ``index.reconstruct_batch(labels)``. An IVF index without a direct map and a
    plain `IndexIDMap` cannot reconstruct: the retriever then re-embeds the passages and says so in
    ``receipt["provenance"]``. Call ``index.make_direct_map()`` (IVF) or use `IndexIDMap2` to keep
    the reuse path.

    Examples
    --------
    >>> import faiss, numpy as np
    >>> from langchain_core.documents import Document
    >>> X = np.eye(3, dtype="float32")
    >>> index = faiss.IndexFlatIP(3); index.add(X)
    >>> src = FaissCandidateSource(index, [Document("a", id="a"), Document("b", id="b"), Document("c", id="c")])
    >>> got = src.search(np.array([0.0, 1.0, 0.1], dtype="float32"), 2)
    >>> [d.id for d in got.docs], got.provenance["vectors"]
    (['b', 'c'], 'store')
    """

    def __init__(self, index: Any, documents: Sequence[Document] | Mapping[int, Document], *,
                 metric: str | None = None) -> None:
        ntotal = int(getattr(index, "ntotal", -1))
        if ntotal < 0 or not hasattr(index, "search"):
            raise ValueError(f"index must be a faiss.Index; got {type(index).__name__}")
        if isinstance(documents, Mapping):
            self._docs: dict[int, Document] = {int(k): v for k, v in documents.items()}
        else:
            docs = list(documents)
            if len(docs) != ntotal:
                raise ValueError(f"documents has {len(docs)} entries but the index holds ntotal = {ntotal} "
                                 "vectors; pass a {label: Document} mapping for indexes built with add_with_ids")
            self._docs = dict(enumerate(docs))
        bad = [k for k, v in self._docs.items() if not isinstance(v, Document)]
        if bad:
            raise ValueError(f"documents must be langchain_core Document objects; label {bad[0]} is not")
        self.index = index
        self._id_to_label = {d.id: k for k, d in self._docs.items() if d.id is not None}
        self.score_kind = "unknown"
        if metric is None:
            ip = getattr(index, "metric_type", None) == 0  # faiss.METRIC_INNER_PRODUCT
            metric = "inner product (higher is closer)" if ip else "squared L2 distance (lower is closer)"
            self.score_kind = "similarity" if ip else "distance"
        self.metric = metric

    @property
    def dimension(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, query_vector: Any, k: int) -> Fetched:
        """The ``k`` nearest documents with their index scores and (when possible) their vectors."""
        q = np.asarray(query_vector, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self.dimension:
            raise ValueError(f"embedding size mismatch: the query vector has {q.shape[1]} dimensions but the "
                             f"FAISS index holds {self.dimension}-dimensional vectors")
        k = int(min(k, len(self)))
        prov = {"source": "FaissCandidateSource", "faiss_index": _faiss_index_name(self.index),
                "score_source": f"index.search: {self.metric}", "score_kind": self.score_kind}
        if k <= 0:
            return Fetched([], [], np.zeros((0, self.dimension), np.float32), {**prov, "vectors": "store"},
                           self.score_kind)
        scores, labels = self.index.search(q, k)
        keep = [(int(lab), float(s)) for lab, s in zip(labels[0], scores[0], strict=True) if lab != -1]
        docs = [self._docs[lab] for lab, _ in keep]
        vecs, reason = _reconstruct(self.index, [lab for lab, _ in keep])
        if vecs is None:
            prov = {**prov, "vectors": "reembedded", "reason": reason}
        else:
            prov = {**prov, "vectors": "store", "vector_access": "index.reconstruct_batch"}
        return Fetched(docs, [s for _, s in keep], vecs, prov, self.score_kind)

    def vectors_for(self, docs: Sequence[Document]) -> tuple[np.ndarray | None, dict]:
        """Vectors of ``docs`` (looked up by ``Document.id``) for the compressor."""
        prov = {"faiss_index": _faiss_index_name(self.index)}
        labels = [self._id_to_label.get(d.id) for d in docs]
        if any(lab is None for lab in labels):
            return None, {**prov, "reason": "a document id is not among the source's documents"}
        vecs, reason = _reconstruct(self.index, labels)
        if vecs is None:
            return None, {**prov, "reason": reason}
        return vecs, {**prov, "vector_access": "index.reconstruct_batch"}


# ------------------------------------------------------------------ served stores
def _is_chroma(store: Any) -> bool:
    return any(c.__name__ == "Chroma" and c.__module__.startswith("langchain_chroma") for c in type(store).__mro__)


def _is_qdrant(store: Any) -> bool:
    return any(c.__name__ == "QdrantVectorStore" and c.__module__.startswith("langchain_qdrant")
               for c in type(store).__mro__)


def _chroma_store_vectors(store: Any, docs: Sequence[Document]) -> tuple[np.ndarray | None, dict]:
    from oscillink_core.app.vectorstores import chroma_vectors

    return chroma_vectors(store._collection, [d.id for d in docs])


def _qdrant_point_id(d: Document) -> Any:
    return d.id if d.id not in (None, "") else d.metadata.get("_id")


def _qdrant_store_vectors(store: Any, docs: Sequence[Document]) -> tuple[np.ndarray | None, dict]:
    from oscillink_core.app.vectorstores import qdrant_vectors

    return qdrant_vectors(store.client, store.collection_name, [_qdrant_point_id(d) for d in docs],
                          store.vector_name or None)


def _score_kind(store: Any) -> tuple[str, str | None]:
    """(kind, description) of the scores ``similarity_search_with_score`` returns for ``store``."""
    if _is_in_memory(store):
        return "similarity", "cosine similarity"
    if _is_community_faiss(store):
        strategy = str(getattr(store.distance_strategy, "value", store.distance_strategy)).upper()
        if strategy == "MAX_INNER_PRODUCT":
            return "similarity", "inner product"
        return "distance", strategy.lower()
    if _is_chroma(store):
        from oscillink_core.app.vectorstores import chroma_space

        return "distance", f"chroma {chroma_space(store._collection)} distance"
    if _is_qdrant(store):
        from oscillink_core.app.vectorstores import qdrant_score_kind

        kind, dist = qdrant_score_kind(store.client, store.collection_name, store.vector_name or None)
        return kind, f"qdrant {dist}"
    return "unknown", None


# ------------------------------------------------------------------ dispatch
def store_vectors(store: Any, docs: Sequence[Document]) -> tuple[np.ndarray | None, dict]:
    """Vectors the store already holds for ``docs`` (by ``Document.id``), or (None, provenance with a reason)."""
    prov: dict = {"source": _type_name(store)}
    if store is None:
        return None, {"source": None, "reason": "no vector store given"}
    if isinstance(store, FaissCandidateSource):
        vecs, extra = store.vectors_for(docs)
        return vecs, {**prov, **extra}
    if _is_in_memory(store):
        vecs, reason = _in_memory_vectors(store, docs)
        if vecs is None:
            return None, {**prov, "reason": reason}
        return vecs, {**prov, "vector_access": "InMemoryVectorStore.store"}
    if _is_community_faiss(store):
        vecs, extra = _faiss_store_vectors(store, docs)
        return vecs, {**prov, **extra}
    if _is_chroma(store):
        vecs, extra = _chroma_store_vectors(store, docs)
        return vecs, {**prov, **extra}
    if _is_qdrant(store):
        vecs, extra = _qdrant_store_vectors(store, docs)
        return vecs, {**prov, **extra}
    return None, {**prov, "reason": f"{_type_name(store)} does not expose stored vectors"}


def _search_sync(store: Any, qvec: list[float], query: str, fetch_k: int,
                 search_kwargs: Mapping[str, Any]) -> tuple[list, str]:
    if _is_chroma(store):  # searches by vector under this name; the scores are Chroma's distances
        return (store.similarity_search_by_vector_with_relevance_scores(qvec, k=fetch_k, **search_kwargs),
                "similarity_search_by_vector_with_relevance_scores")
    if hasattr(store, "similarity_search_with_score_by_vector"):
        return (store.similarity_search_with_score_by_vector(qvec, k=fetch_k, **search_kwargs),
                "similarity_search_with_score_by_vector")
    try:
        return store.similarity_search_with_score(query, k=fetch_k, **search_kwargs), "similarity_search_with_score"
    except NotImplementedError:
        docs = store.similarity_search_by_vector(qvec, k=fetch_k, **search_kwargs)
        return [(d, None) for d in docs], "similarity_search_by_vector (no scores)"


def _finish(store: Any, pairs: list, method: str) -> Fetched:
    docs = [d for d, _ in pairs]
    scores = [None if s is None else float(s) for _, s in pairs]
    prov = {"source": _type_name(store), "score_source": method}
    kind, what = _score_kind(store)
    if what:
        prov["score_source"] += f" ({what})"
    prov["score_kind"] = kind
    vecs, extra = store_vectors(store, docs) if docs else (None, {"reason": "no candidates"})
    prov.update({k: v for k, v in extra.items() if k != "source"})
    prov["vectors"] = "store" if vecs is not None else "reembedded"
    return Fetched(docs, scores, vecs, prov, kind)


def _store_dim(store: Any) -> int | None:
    if _is_in_memory(store):
        first = next(iter(store.store.values()), None)
        return None if first is None else len(first["vector"])
    if _is_community_faiss(store) or isinstance(store, FaissCandidateSource):
        return int(store.index.d)
    return None


def check_query_dim(store: Any, qvec: Any) -> None:
    """Raise a clear ValueError when the query embedding and the store's vectors differ in size."""
    d = _store_dim(store)
    n = len(qvec)
    if d is not None and n != d:
        raise ValueError(f"embedding size mismatch: the query embedding has {n} dimensions but "
                         f"{_type_name(store)} holds {d}-dimensional vectors; use the model the store was built with")


def fetch(store: Any, qvec: list[float], query: str, fetch_k: int,
          search_kwargs: Mapping[str, Any] | None = None) -> Fetched:
    """First-stage search: ``fetch_k`` candidates with scores, plus their stored vectors when available.

    The query vector is reused for the search whenever the store searches by vector, so the
    query is embedded once; stores that only search by text embed it again themselves.
    """
    search_kwargs = dict(search_kwargs or {})
    check_query_dim(store, qvec)
    if isinstance(store, FaissCandidateSource):
        if search_kwargs:
            raise ValueError(f"FaissCandidateSource takes no search_kwargs; got {sorted(search_kwargs)}")
        return store.search(qvec, fetch_k)
    pairs, method = _search_sync(store, qvec, query, fetch_k, search_kwargs)
    return _finish(store, pairs, method)


async def afetch(store: Any, qvec: list[float], query: str, fetch_k: int,
                 search_kwargs: Mapping[str, Any] | None = None) -> Fetched:
    """Async `fetch`: the store's async API where it has one, else the sync call in a worker thread."""
    search_kwargs = dict(search_kwargs or {})
    check_query_dim(store, qvec)
    if isinstance(store, FaissCandidateSource) or _is_in_memory(store) or _is_chroma(store) or _is_qdrant(store):
        # no (or no client-independent) async by-vector search for these: the sync path in a thread
        return await asyncio.to_thread(fetch, store, qvec, query, fetch_k, search_kwargs)
    if hasattr(store, "asimilarity_search_with_score_by_vector"):
        pairs = await store.asimilarity_search_with_score_by_vector(qvec, k=fetch_k, **search_kwargs)
        method = "similarity_search_with_score_by_vector"
    elif hasattr(store, "similarity_search_with_score_by_vector"):
        pairs, method = await asyncio.to_thread(_search_sync, store, qvec, query, fetch_k, search_kwargs)
    else:
        try:
            pairs = await store.asimilarity_search_with_score(query, k=fetch_k, **search_kwargs)
            method = "similarity_search_with_score"
        except NotImplementedError:
            docs = await store.asimilarity_search_by_vector(qvec, k=fetch_k, **search_kwargs)
            pairs, method = [(d, None) for d in docs], "similarity_search_by_vector (no scores)"
    # reconstructing / looking up vectors is CPU work too
    return await asyncio.to_thread(_finish, store, pairs, method)
