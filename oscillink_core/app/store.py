"""The on-disk index written by ``oscillink ingest`` and the query / verify logic on top of it.

An index directory holds three files:

* ``ingest_receipt.json``: what was indexed and how (model name and weight fingerprint,
  chunking, sources with their SHA-256, chunk count, SHA-256 of the two files below,
  determinism settings), hashed (``receipt_sha256``) and optionally HMAC-signed;
* ``index.faiss``: a FAISS ``IndexFlatIP`` over the unit-normalised chunk embeddings;
* ``chunks.jsonl``: the chunk store, one ``{"id", "text", "source", "meta"}`` per line, in
  index order.

`IndexStore.open` checks the receipt's own hash, the model (fingerprint and dimension) and the
SHA-256 of both files *before* handing any bytes to FAISS, so a corrupted, truncated or swapped
index is reported instead of loaded. `run_query` retrieves ``fetch_k`` candidates, reconstructs
their stored vectors (passages are not re-embedded), reranks them and returns the settle receipt
with a ``provenance`` block tying it to the index (``parent_ingest_sig`` = the index's SHA-256).
`reproduce` re-runs a receipt's query from its provenance alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["IndexStore", "IndexDirError", "QueryOutcome", "run_query", "reproduce", "atomic_write_bytes",
           "load_questions", "labelled_queries",
           "sha256_bytes", "hash_ingest_receipt", "INGEST_FORMAT", "PROVENANCE_FORMAT", "RECEIPT_FILE",
           "INDEX_FILE", "CHUNKS_FILE"]

INGEST_FORMAT = "oscillink-core/ingest-receipt"
PROVENANCE_FORMAT = "oscillink-core/query-provenance"
RECEIPT_FILE = "ingest_receipt.json"
INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.jsonl"


class IndexDirError(ValueError):
    """The index directory is missing, inconsistent, corrupted or built with another model."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(obj: Any) -> bytes:
    from oscillink_core import canonical_json

    return canonical_json(obj)


def hash_ingest_receipt(receipt: dict) -> str:
    """SHA-256 of the canonical JSON of an ingest receipt without its hash, signature and timings."""
    body = {k: v for k, v in receipt.items() if k not in ("receipt_sha256", "signature", "timings_ms")}
    return sha256_bytes(_canonical(body))


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, commit: bool = True):
    """Write ``data`` to a temporary file next to ``path`` (fsynced), then rename it over ``path``.

    With ``commit=False`` the rename is left to the caller: returns ``(tmp_path, final_path)``.
    """
    final = Path(path)
    while True:  # like mkstemp, but with the usual 0o666 & ~umask permissions
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # pragma: no cover
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if commit:
            os.replace(tmp, final)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return (tmp, final) if not commit else final


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IndexDirError(f"{path.parent}: no {path.name} ({what}); is this an oscillink index directory?") from None
    except OSError as exc:
        raise IndexDirError(f"{path}: cannot read ({exc.strerror or exc})") from None


# ------------------------------------------------------------------------------ index
@dataclass
class IndexStore:
    path: Path
    receipt: dict
    index: Any  # faiss.Index
    chunks: list[dict]

    @property
    def index_sha256(self) -> str:
        return self.receipt["index"]["sha256"]

    @property
    def has_traps(self) -> bool:
        return any("trap" in c.get("meta", {}) for c in self.chunks)

    @classmethod
    def open(cls, path: str | os.PathLike, *, key: bytes | str | None = None,
             check_model: bool = True) -> IndexStore:
        """Load an index directory after checking the receipt, the model and both file hashes.

        With ``key``, a signed ingest receipt must verify under it.
        """
        d = Path(path)
        if not d.is_dir():
            raise IndexDirError(f"{d}: no such index directory")
        raw = _read(d / RECEIPT_FILE, "ingest receipt")
        try:
            receipt = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexDirError(f"{d / RECEIPT_FILE}: not valid JSON ({exc}); the index is damaged") from None
        if not isinstance(receipt, dict) or receipt.get("format") != INGEST_FORMAT:
            raise IndexDirError(f"{d / RECEIPT_FILE}: not an oscillink ingest receipt")
        try:
            recorded = receipt["receipt_sha256"]
            model, idx, store = receipt["model"], receipt["index"], receipt["store"]
            dim = int(model["dim"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexDirError(f"{d / RECEIPT_FILE}: incomplete ingest receipt (missing {exc})") from None
        if hash_ingest_receipt(receipt) != recorded:
            raise IndexDirError(f"{d / RECEIPT_FILE}: contents do not match its receipt_sha256 (edited or damaged)")
        if key is not None and "signature" in receipt:
            from oscillink_core import verify_receipt

            if not verify_receipt(receipt, key):
                raise IndexDirError(f"{d / RECEIPT_FILE}: HMAC signature does not verify under the given key")
        if check_model:
            from .embeddings import EMBED_DIM, MODEL_NAME, model_fingerprint

            if dim != EMBED_DIM:
                raise IndexDirError(f"{d}: index was built with {dim}-dimensional embeddings; the packaged model "
                                  f"{MODEL_NAME} gives {EMBED_DIM}. Re-run oscillink ingest")
            if model.get("fingerprint") != model_fingerprint() or model.get("name") != MODEL_NAME:
                raise IndexDirError(f"{d}: index was built with another embedding model ({model.get('name')}, weights "
                                  f"{str(model.get('fingerprint'))[:12]}...) than this install's {MODEL_NAME} "
                                  f"(weights {model_fingerprint()[:12]}...). Re-run oscillink ingest")
        index_bytes = _read(d / idx.get("file", INDEX_FILE), "FAISS index")
        if sha256_bytes(index_bytes) != idx.get("sha256"):
            raise IndexDirError(f"{d / INDEX_FILE}: SHA-256 does not match the ingest receipt ({len(index_bytes)} "
                                f"bytes, expected {idx.get('bytes')}): corrupted, truncated or replaced. "
                                f"Re-run oscillink ingest")
        store_bytes = _read(d / store.get("file", CHUNKS_FILE), "chunk store")
        if sha256_bytes(store_bytes) != store.get("sha256"):
            raise IndexDirError(f"{d / CHUNKS_FILE}: SHA-256 does not match the ingest receipt: corrupted, truncated "
                              f"or edited. Re-run oscillink ingest")
        import faiss

        try:
            index = faiss.deserialize_index(np.frombuffer(index_bytes, dtype=np.uint8))
        except Exception as exc:  # hash matched, so this is a FAISS version problem
            raise IndexDirError(f"{d / INDEX_FILE}: FAISS cannot read it ({str(exc).splitlines()[0]})") from None
        chunks = [json.loads(line) for line in store_bytes.decode("utf-8").splitlines() if line]
        if index.d != dim or index.ntotal != len(chunks) or len(chunks) != receipt.get("chunks"):
            raise IndexDirError(f"{d}: inconsistent index (dimension {index.d} vs {dim}, {index.ntotal} vectors vs "
                              f"{len(chunks)} chunks)")
        return cls(d, receipt, index, chunks)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored (float32) vectors of the given index rows, in that order."""
        out = np.empty((len(rows), self.index.d), dtype=np.float32)
        for j, r in enumerate(rows):
            out[j] = self.index.reconstruct(int(r))
        return out

    def search(self, q: np.ndarray, fetch_k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``fetch_k`` rows by inner product: (rows, scores)."""
        fk = min(int(fetch_k), self.index.ntotal)
        scores, rows = self.index.search(np.ascontiguousarray(q, dtype=np.float32).reshape(1, -1), fk)
        keep = rows[0] >= 0
        return rows[0][keep].astype(np.int64), scores[0][keep].astype(np.float32)


# ------------------------------------------------------------------------------ query
@dataclass
class QueryOutcome:
    question: str
    k: int
    fetch_k: int
    items: list[dict]          # oscillink bundle, best first, with text/meta
    cosine: list[dict]         # plain FAISS (cosine) top-k, with text/meta
    receipt: dict


def encode_vector(v: np.ndarray) -> dict:
    b = np.ascontiguousarray(v, dtype="<f4").tobytes()
    return {"dtype": "float32", "byteorder": "little", "dim": int(v.shape[0]), "sha256": sha256_bytes(b),
            "base64": base64.b64encode(b).decode("ascii")}


def decode_vector(block: dict) -> np.ndarray:
    try:
        raw = base64.b64decode(block["base64"], validate=True)
    except Exception as exc:
        raise ValueError(f"provenance.query_embedding is not valid base64 ({exc})") from None
    if sha256_bytes(raw) != block.get("sha256"):
        raise ValueError("provenance.query_embedding does not match its sha256")
    v = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if v.shape[0] != block.get("dim"):
        raise ValueError("provenance.query_embedding has the wrong length")
    return v


def _row(store: IndexStore, row: int, **extra: Any) -> dict:
    c = store.chunks[row]
    meta = c.get("meta", {})
    out = {**extra, "id": c["id"], "text": c["text"], "source": c.get("source")}
    if "trap" in meta:
        out["trap"] = bool(meta["trap"])
    if "label" in meta:
        out["label"] = meta["label"]
    return out


def run_query(store: IndexStore, question: str, *, k: int = 5, fetch_k: int = 50, params: Any = None,
              query_vec: np.ndarray | None = None, sign_key: bytes | str | None = None,
              backend: str | None = None) -> QueryOutcome:
    """Retrieve, rerank and build the provenance-carrying settle receipt.

    ``query_vec`` replaces embedding ``question`` (used by `reproduce` with the recorded vector).
    """
    from oscillink_core import rerank, sign_receipt

    from .embeddings import MODEL_NAME

    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"-k must be a positive integer; got {k!r}")
    if isinstance(fetch_k, bool) or not isinstance(fetch_k, int) or fetch_k < 1:
        raise ValueError(f"--fetch-k must be a positive integer; got {fetch_k!r}")
    if query_vec is None:
        from .embeddings import embed

        query_vec = embed([question])[0]
    q = np.ascontiguousarray(query_vec, dtype=np.float32)
    rows, sims = store.search(q, fetch_k)
    Y = store.vectors(rows)
    ids = [store.chunks[int(r)]["id"] for r in rows]
    res = rerank(q, Y, k=min(k, len(ids)), ids=ids, params=params, backend=backend)
    receipt = dict(res.receipt)
    receipt["provenance"] = {
        "format": PROVENANCE_FORMAT,
        "version": 1,
        "parent_ingest_sig": store.index_sha256,
        "ingest_receipt_sha256": store.receipt["receipt_sha256"],
        "store_sha256": store.receipt["store"]["sha256"],
        "model": {"name": MODEL_NAME, "fingerprint": store.receipt["model"]["fingerprint"]},
        "candidate_set_hash": receipt["inputs"]["candidate_set_hash"],
        "question": question,
        "question_sha256": sha256_bytes(question.encode("utf-8")),
        "query_embedding": encode_vector(q),
        "retrieval": {"index": store.receipt["index"]["type"], "fetch_k": fetch_k, "fetched": len(ids),
                      "k": k},
    }
    served = getattr(store, "query_provenance", None)
    if served is not None:  # a served store (vectorstores.ChromaIndexStore): the candidates as fetched
        receipt["provenance"]["served_store"] = served(rows, Y)
    if sign_key is not None:
        receipt = sign_receipt(receipt, sign_key)
    items = [_row(store, int(rows[it.index]), rank=it.rank, score=it.score, cosine=it.cosine, align=it.align,
                  index=it.index) for it in res.items]
    cosine = [_row(store, int(rows[j]), rank=j + 1, cosine=float(sims[j]), index=j)
              for j in range(min(k, len(ids)))]
    return QueryOutcome(question, k, fetch_k, items, cosine, receipt)


def reproduce(receipt: dict, store: IndexStore) -> tuple[QueryOutcome, dict]:
    """Re-run the query a receipt records, from its provenance, against ``store``.

    Returns the outcome and a report ``{"question_embedding": "exact" | "close (max |diff| x)" |
    "differs (...)"}`` comparing a fresh embedding of the question with the recorded vector
    (the rerun itself uses the recorded vector, so it is exact whenever the index is the same).
    """
    prov = receipt.get("provenance")
    if not isinstance(prov, dict) or prov.get("format") != PROVENANCE_FORMAT:
        raise ValueError("the receipt has no oscillink query provenance (was it written by oscillink query?)")
    try:
        question, retrieval = prov["question"], prov["retrieval"]
        k, fetch_k = int(retrieval["k"]), int(retrieval["fetch_k"])
        vec = decode_vector(prov["query_embedding"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"the receipt's provenance is incomplete (missing {exc})") from None
    # re-run on the backend that produced the receipt (the two agree to the CG tolerance, not
    # bit for bit); receipts from before the field existed came from the numpy backend
    solver = receipt.get("solver") if isinstance(receipt.get("solver"), dict) else {}
    backend = solver.get("backend", "numpy")
    from oscillink_core import available_backends

    if backend not in available_backends():
        raise ValueError(f"the receipt was produced by the {backend!r} backend, which is not available here "
                         f"(install 'oscillink-core[fast]' for numba)")
    out = run_query(store, question, k=k, fetch_k=fetch_k, params=receipt.get("params"), query_vec=vec,
                    backend=backend)
    from .embeddings import embed

    fresh = embed([question])[0]
    diff = float(np.max(np.abs(fresh - vec)))
    cos = float(fresh @ vec / (np.linalg.norm(fresh) * np.linalg.norm(vec)))
    if diff == 0.0:
        status = "exact"
    elif cos >= 0.9999:
        status = f"close (max |diff| {diff:.2e}, cosine {cos:.6f})"
    else:
        status = f"differs (cosine {cos:.4f})"
    return out, {"question_embedding": status, "embedding_ok": cos >= 0.9999}


# ------------------------------------------------------------------------------ labelled questions
def load_questions(path: str | os.PathLike) -> list[dict]:
    """Read a questions file: ``{"questions": [...]}`` (as examples/data/demo_questions.json) or a list.

    Each question needs ``question`` (text) and ``relevant`` (ids); ``id`` and ``traps`` are optional.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p}: no such questions file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from None
    qs = doc.get("questions") if isinstance(doc, dict) else doc
    if not isinstance(qs, list) or not qs:
        raise ValueError(f"{p}: expected a non-empty list of questions (or {{\"questions\": [...]}})")
    for i, q in enumerate(qs):
        if not isinstance(q, dict) or not isinstance(q.get("question"), str) or not q["question"].strip():
            raise ValueError(f"{p}: question {i} has no 'question' text")
        if not isinstance(q.get("relevant"), list):
            raise ValueError(f"{p}: question {q.get('id', i)!r} has no 'relevant' list of ids")
        if not isinstance(q.get("traps", []), list):
            raise ValueError(f"{p}: question {q.get('id', i)!r}: 'traps' must be a list of ids")
    return qs


def labelled_queries(store: IndexStore, questions: list[dict], *, fetch_k: int = 50) -> list:
    """`tuning.LabelledQuery` objects: each question's FAISS top ``fetch_k`` from ``store``, labelled."""
    from oscillink_core import LabelledQuery

    from .embeddings import embed

    vecs = embed([q["question"] for q in questions])
    out = []
    for i, (q, v) in enumerate(zip(questions, vecs, strict=True)):
        rows, _ = store.search(v, fetch_k)
        ids = [store.chunks[int(r)]["id"] for r in rows]
        out.append(LabelledQuery(v, store.vectors(rows), ids=ids, relevance={r: 1.0 for r in q["relevant"]},
                                 traps=set(q.get("traps", [])), qid=q.get("id", i)))
    return out
