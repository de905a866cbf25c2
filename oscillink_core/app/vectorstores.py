"""Stored vectors from served vector stores (Chroma, Qdrant), read by id instead of re-embedding.

Framework-free: these functions take the stores' own client objects (a ``chromadb`` collection, a
``qdrant_client.QdrantClient``), so the LangChain and LlamaIndex adapters and the CLI share them.

* Chroma: ``collection.get(ids=..., include=["embeddings"])``. Chroma returns the rows in its own
  order and silently leaves out ids it does not hold; we map them back by id and report the
  missing ones. Chroma keeps float32 (in a ``cosine`` space it re-normalises each vector when it
  is added, so what comes back is the stored, normalised vector). Every Chroma
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

from .store import IndexInfo, chunk_store_bytes

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


# ====================================================================== the CLI on a Chroma server
# `oscillink ingest SRC --store chroma://HOST:PORT/COLLECTION` writes the chunks into a collection of a
# running Chroma server; `query` and `verify` take the same URL in place of the index folder.

STORE_SCHEME = "chroma://"
RECEIPT_METADATA_KEY = "oscillink:ingest_receipt"
_PAGE = 256
NOT_PINNED = [
    "the server's search structure (Chroma HNSW, approximate): which candidates a query returns is re-checked by "
    "verify re-running it, not pinned by a hash",
    "the server itself (its version is recorded, its code is not)",
    "records added to the collection after ingest are refused by count; their content is not hashed",
]


def is_store_url(target: Any) -> bool:
    return isinstance(target, str) and target.startswith(STORE_SCHEME)


def parse_store_url(url: str) -> tuple[str, int, str]:
    """``chroma://HOST:PORT/COLLECTION`` -> (host, port, collection).

    >>> parse_store_url("chroma://127.0.0.1:8000/docs")
    ('127.0.0.1', 8000, 'docs')
    """
    if not is_store_url(url):
        raise ValueError(f"{url}: a served store is given as chroma://HOST:PORT/COLLECTION")
    rest = url[len(STORE_SCHEME):]
    hostport, _, name = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not name or "/" in name:
        raise ValueError(f"{url}: expected chroma://HOST:PORT/COLLECTION (e.g. chroma://127.0.0.1:8000/docs)")
    return host, int(port), name


def _client(host: str, port: int):
    try:
        import chromadb
        from chromadb.config import Settings
    except ImportError:
        raise ValueError("a chroma:// store needs the chromadb package: pip install 'oscillink-core[chroma]'") from None
    try:
        client = chromadb.HttpClient(host=host, port=port, settings=Settings(anonymized_telemetry=False))
        client.heartbeat()
    except Exception as exc:
        raise ValueError(f"chroma://{host}:{port}: no Chroma server answers ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})") from None
    return client


def _vectors_sha256(ids: Sequence[str], vecs: np.ndarray) -> str:
    """SHA-256 binding each id to its vector: canonical JSON of the ids, then the float32 LE rows."""
    import hashlib

    from oscillink_core import canonical_json

    h = hashlib.sha256(canonical_json(list(ids)))
    h.update(np.ascontiguousarray(vecs, dtype="<f4").tobytes())
    return h.hexdigest()


def _read_all(collection: Any, n: int) -> tuple[list[dict], np.ndarray]:
    """Every record, back from the server, as (chunks in ingest row order, float32 vectors)."""
    import json

    rows: dict[int, tuple[dict, np.ndarray]] = {}
    for offset in range(0, max(n, 1), _PAGE):
        got = collection.get(limit=_PAGE, offset=offset, include=["embeddings", "documents", "metadatas"])
        for cid, text, meta, vec in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"],
                                        strict=True):
            meta = meta or {}
            row = meta.get("oscillink_row")
            if not isinstance(row, int) or row in rows:
                raise ValueError(f"record {cid!r} has no valid oscillink_row: not written by oscillink ingest")
            chunk = {"id": cid, "text": text, "source": meta.get("source"),
                     "meta": json.loads(meta.get("oscillink_meta", "{}"))}
            rows[row] = (chunk, np.asarray(vec, dtype=np.float32))
    if sorted(rows) != list(range(len(rows))):
        raise ValueError("the collection's rows are not 0..n-1: records were removed or added")
    ordered = [rows[i] for i in range(len(rows))]
    vecs = np.stack([v for _, v in ordered]) if ordered else np.zeros((0, 0), np.float32)
    return [c for c, _ in ordered], vecs


def build_chroma_index(paths: Sequence[Any], url: str, *, chunk_size: int, chunk_overlap: int, text_field: str = "text",
                       id_field: str = "id", encoding: str = "utf-8", overwrite: bool = False,
                       sign_key: bytes | str | None = None, progress: bool | None = None, log: Any = None) -> dict:
    """Read, chunk and embed ``paths`` (as `ingest.build_index` does) into a collection of a Chroma
    server; return the ingest receipt, which is also stored in the collection's metadata.

    The receipt hashes what was *fetched back* from the server after writing: the chunk store
    (ids, texts, sources, metadata; the same JSONL form as a FAISS index folder's chunks.jsonl) and
    the vectors bound to their ids (``index.sha256``, the ``parent_ingest_sig`` of query receipts).
    What cannot be pinned by a hash is listed under ``not_pinned``.
    """
    import json
    import sys
    import time

    from oscillink_core import sign_receipt

    from .embeddings import EMBED_DIM, MODEL_NAME
    from .ingest import EMBED_BATCH, _embed_all, published_ingest_fields, read_sources, receipt_head
    from .store import IndexDirError, hash_ingest_receipt, sha256_bytes

    host, port, name = parse_store_url(url)
    t0 = time.perf_counter()
    chunks, infos = read_sources(paths, chunk_size=chunk_size, chunk_overlap=chunk_overlap, text_field=text_field,
                                 id_field=id_field, encoding=encoding)
    client = _client(host, port)
    existing = {getattr(c, "name", c) for c in client.list_collections()}
    if name in existing:
        old = client.get_collection(name, embedding_function=None)
        if RECEIPT_METADATA_KEY not in (old.metadata or {}):
            raise IndexDirError(f"{url}: the collection exists and was not written by oscillink ingest; "
                                "refusing to replace it")
        if not overwrite:
            raise IndexDirError(f"{url}: already holds an index; pass --overwrite to replace it")
    if log:
        log(f"read {len(infos)} file(s): {len(chunks)} chunk(s) (chunk size {chunk_size}, overlap {chunk_overlap})")
    t1 = time.perf_counter()
    vecs = _embed_all([c.text for c in chunks], progress)
    if not np.isfinite(vecs).all():
        raise IndexDirError("the embedding model returned non-finite vectors")
    t2 = time.perf_counter()
    if name in existing:
        client.delete_collection(name)
    # "ip", not "cosine": Chroma re-normalises vectors stored in a cosine space (changing them by an ulp), and
    # on our unit vectors the inner-product distance 1 - <q, y> is the cosine distance
    collection = client.create_collection(name, embedding_function=None, metadata={"hnsw:space": "ip"})
    for i in range(0, len(chunks), _PAGE):
        part = chunks[i:i + _PAGE]
        collection.add(ids=[c.id for c in part], embeddings=vecs[i:i + _PAGE].tolist(),
                       documents=[c.text for c in part],
                       metadatas=[{"oscillink_row": i + j, "source": c.source,
                                   "oscillink_meta": json.dumps(c.meta, sort_keys=True, ensure_ascii=False)}
                                  for j, c in enumerate(part)])
    back, back_vecs = _read_all(collection, len(chunks))
    sent = [c.to_json() for c in chunks]
    if back != sent or back_vecs.shape != vecs.shape or not np.array_equal(back_vecs, vecs):
        raise IndexDirError(f"{url}: the records read back differ from those written (server changed them?)")
    store_bytes = chunk_store_bytes(back)
    torch = sys.modules.get("torch")
    receipt: dict = {
        **receipt_head(infos, len(chunks), chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                       text_field=text_field, id_field=id_field, encoding=encoding),
        "index": {"type": "chroma", "url": url, "collection": name, "collection_id": str(collection.id),
                  "space": chroma_space(collection), "server_version": client.get_version(),
                  "metric": "inner-product distance (1 - cosine on unit vectors)", "ntotal": len(chunks),
                  "dim": EMBED_DIM,
                  "sha256": _vectors_sha256([c["id"] for c in back], back_vecs),
                  "hashes": "sha256(canonical_json(ids in row order) + float32 little-endian vectors), as fetched "
                            "back from the server"},
        "store": {"format": "chroma documents + metadatas, hashed as chunks.jsonl", "count": len(back),
                  "sha256": sha256_bytes(store_bytes), "bytes": len(store_bytes)},
        "not_pinned": NOT_PINNED,
        "determinism": {"device": "cpu", "dtype": "float32", "embed_batch_size": EMBED_BATCH,
                        "torch_version": getattr(torch, "__version__", None),
                        "search": "approximate (Chroma HNSW, ip space); verify re-runs the query",
                        "chunk_order": "sources in the order given (directories sorted), records in file order"},
        "timings_ms": {"read_ms": round(1e3 * (t1 - t0), 3), "embed_ms": round(1e3 * (t2 - t1), 3)},
    }
    # the published flat names (the same values as the nested fields above)
    receipt.update(published_ingest_fields(MODEL_NAME, EMBED_DIM, receipt["index"]["sha256"],
                                           receipt["store"]["sha256"], len(chunks)))
    receipt["receipt_sha256"] = hash_ingest_receipt(receipt)
    if sign_key is not None:
        receipt = sign_receipt(receipt, sign_key)
    collection.modify(metadata={RECEIPT_METADATA_KEY: json.dumps(receipt, sort_keys=True, ensure_ascii=False)})
    return receipt


class _Info:
    def __init__(self, ntotal: int, d: int) -> None:
        self.ntotal, self.d = ntotal, d


class ChromaIndexStore(IndexInfo):
    """An index on a Chroma server, with the interface `store.run_query` / `reproduce` use.

    `open` checks the receipt (its hash, the signature under ``key``, the model) and re-hashes every
    record read back from the server (ids, texts, metadata, vectors) against it, so an edited,
    added or removed record is reported before any query. Queries then search on the server
    (``collection.query``) and read the candidates' vectors with ``collection.get(ids=...,
    include=["embeddings"])``; each must equal the vector hashed at open.
    """

    def __init__(self, url: str, receipt: dict, collection: Any, chunks: list[dict], vecs: np.ndarray) -> None:
        self.path = url
        self.receipt = receipt
        self._collection = collection
        self.chunks = chunks
        self._vecs = vecs
        self._row_of = {c["id"]: i for i, c in enumerate(chunks)}
        self.index = _Info(len(chunks), int(receipt["model"]["dim"]))

    @classmethod
    def open(cls, url: str, *, key: bytes | str | None = None, check_model: bool = True) -> ChromaIndexStore:
        import json

        from .store import INGEST_FORMAT, IndexDirError, hash_ingest_receipt, sha256_bytes

        host, port, name = parse_store_url(url)
        client = _client(host, port)
        try:
            collection = client.get_collection(name, embedding_function=None)
        except Exception:
            raise IndexDirError(f"{url}: no such collection on the server") from None
        raw = (collection.metadata or {}).get(RECEIPT_METADATA_KEY)
        if raw is None:
            raise IndexDirError(f"{url}: the collection holds no oscillink ingest receipt (not written by "
                                "oscillink ingest --store)")
        try:
            receipt = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise IndexDirError(f"{url}: the stored ingest receipt is not valid JSON ({exc})") from None
        if not isinstance(receipt, dict) or receipt.get("format") != INGEST_FORMAT or \
                receipt.get("index", {}).get("type") != "chroma":
            raise IndexDirError(f"{url}: not an oscillink ingest receipt for a Chroma collection")
        if hash_ingest_receipt(receipt) != receipt.get("receipt_sha256"):
            raise IndexDirError(f"{url}: the ingest receipt does not match its receipt_sha256 (edited or damaged)")
        if key is not None:
            from oscillink_core import verify_receipt

            if "signature" not in receipt:
                raise IndexDirError(f"{url}: a key was given but the ingest receipt is not signed; refusing an "
                                    "unsigned index")
            if not verify_receipt(receipt, key):
                raise IndexDirError(f"{url}: the ingest receipt's HMAC signature does not verify under the given key")
        if check_model:
            from .embeddings import MODEL_NAME, model_fingerprint

            model = receipt.get("model", {})
            if model.get("fingerprint") != model_fingerprint() or model.get("name") != MODEL_NAME:
                raise IndexDirError(f"{url}: indexed with another embedding model ({model.get('name')}) than this "
                                    f"install's {MODEL_NAME}. Re-run oscillink ingest")
        n = collection.count()
        if n != receipt.get("chunks"):
            raise IndexDirError(f"{url}: the collection holds {n} records, the ingest receipt {receipt.get('chunks')}")
        try:
            chunks, vecs = _read_all(collection, n)
        except ValueError as exc:
            raise IndexDirError(f"{url}: {exc}") from None
        if sha256_bytes(chunk_store_bytes(chunks)) != receipt["store"]["sha256"]:
            raise IndexDirError(f"{url}: the records' ids, texts or metadata do not match the ingest receipt's "
                                "store.sha256 (edited on the server). Re-run oscillink ingest")
        if _vectors_sha256([c["id"] for c in chunks], vecs) != receipt["index"]["sha256"]:
            raise IndexDirError(f"{url}: the stored vectors do not match the ingest receipt's index.sha256 (edited on "
                                "the server). Re-run oscillink ingest")
        return cls(url, receipt, collection, chunks, vecs)

    def search(self, q: np.ndarray, fetch_k: int) -> tuple[np.ndarray, np.ndarray]:
        """The server's top ``fetch_k``: (rows, cosine similarities = 1 - inner-product distance)."""
        fk = min(int(fetch_k), self.index.ntotal)
        got = self._collection.query(query_embeddings=[np.asarray(q, dtype=np.float32).tolist()], n_results=fk,
                                     include=["distances"])
        ids, dists = got["ids"][0], got["distances"][0]
        unknown = [i for i in ids if i not in self._row_of]
        if unknown:
            raise ValueError(f"{self.path}: the server returned id {unknown[0]!r}, which the index does not hold")
        rows = np.asarray([self._row_of[i] for i in ids], dtype=np.int64)
        return rows, (1.0 - np.asarray(dists, dtype=np.float32)).astype(np.float32)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The candidates' vectors fetched back from the server by id; each must equal the hashed one."""
        ids = [self.chunks[int(r)]["id"] for r in rows]
        got, prov = chroma_vectors(self._collection, ids)
        if got is None:
            raise ValueError(f"{self.path}: {prov.get('reason')}")
        if not np.array_equal(got, self._vecs[np.asarray(rows, dtype=np.int64)]):
            raise ValueError(f"{self.path}: a candidate's vector changed on the server since the index was checked")
        return got

    def query_provenance(self, rows: np.ndarray, vectors: np.ndarray) -> dict:
        """What a query receipt adds for a served store: the hash of the candidates as fetched (ids,
        texts and vectors) and what could not be pinned."""
        from .store import sha256_bytes

        cands = [self.chunks[int(r)] for r in rows]
        return {"store_url": self.path,
                "candidates_sha256": sha256_bytes(chunk_store_bytes(cands) + bytes.fromhex(
                    _vectors_sha256([c["id"] for c in cands], vectors))),
                "candidates_hashes": "sha256(candidate chunks as JSONL + sha256(ids + float32 vectors)), as fetched",
                "not_pinned": list(self.receipt.get("not_pinned", NOT_PINNED))}


def open_index(target: str, *, key: bytes | str | None = None, check_model: bool = True) -> Any:
    """`store.IndexStore` for a folder, `ChromaIndexStore` for a ``chroma://`` URL."""
    if is_store_url(target):
        return ChromaIndexStore.open(target, key=key, check_model=check_model)
    from .store import IndexStore

    return IndexStore.open(target, key=key, check_model=check_model)
