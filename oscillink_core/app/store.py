"""The on-disk index written by ``oscillink ingest`` and the query / verify logic on top of it.

An index directory holds:

* ``ingest_receipt.json``: what was indexed and how (model name and weight fingerprint,
  chunking, sources with their SHA-256, chunk count, names and SHA-256 of the two files below,
  determinism settings), hashed (``receipt_sha256``) and optionally HMAC-signed. It is the
  commit point: the files it names are the index;
* ``index.<sha16>.faiss``: a FAISS ``IndexFlatIP`` over the unit-normalised chunk embeddings;
* ``chunks.<sha16>.jsonl``: the chunk store, one ``{"id", "text", "source", "meta"}`` per line,
  in index order. (``<sha16>`` = the first 16 hex digits of the file's SHA-256; indexes written
  before 0.2 name them ``index.faiss`` / ``chunks.jsonl``, and still open.)

Writing (`commit_index`, used by ``oscillink ingest``) holds an exclusive ``flock`` on the
directory itself, writes and fsyncs the two data files under new names, then replaces
``ingest_receipt.json`` with one ``rename``: a reader, or a process killed at any instant,
sees either the whole old index or the whole new one. Files of the old index and temporaries
left by a killed writer are removed afterwards (and at the start of the next ingest).

`IndexStore.open` checks the receipt's own hash, the model (fingerprint and dimension) and the
SHA-256 of both files *before* handing any bytes to FAISS, so a corrupted, truncated or swapped
index is reported instead of loaded. `run_query` retrieves ``fetch_k`` candidates, reconstructs
their stored vectors (passages are not re-embedded), reranks them and returns the settle receipt
with a ``provenance`` block tying it to the index (``parent_ingest_sig`` = the index's SHA-256).
With ``trusted_sources`` it also passes each passage's source (`chunk_source`) to the core, which
fills the context from trusted sources first (see `oscillink_core.provenance`); the trusted set
is recorded in ``provenance.trust``. `reproduce` re-runs a receipt's query from its provenance alone.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import re
import secrets
import signal
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["IndexStore", "IndexDirError", "IndexBusyError", "QueryOutcome", "run_query", "reproduce", "chunk_source",
           "atomic_write_bytes", "load_questions", "labelled_queries", "index_lock", "commit_index",
           "sha256_bytes", "hash_ingest_receipt", "INGEST_FORMAT", "PROVENANCE_FORMAT", "RECEIPT_FILE",
           "INDEX_FILE", "CHUNKS_FILE", "FAULT_ENV"]

INGEST_FORMAT = "oscillink-core/ingest-receipt"
PROVENANCE_FORMAT = "oscillink-core/query-provenance"
RECEIPT_FILE = "ingest_receipt.json"
INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.jsonl"


class IndexDirError(ValueError):
    """The index directory is missing, inconsistent, corrupted or built with another model."""


class IndexBusyError(IndexDirError):
    """Another process holds the index directory's write lock (an ingest is running there)."""


# Test hook (fault injection): OSCILLINK_FAULT_AT=STEP[:kill|stop] makes the writing process
# SIGKILL (default) or SIGSTOP itself when it reaches STEP, so tests can stop a real process
# at each step of a commit deterministically ("hang" blocks forever, ignoring Ctrl-C). Steps,
# in order: locked, embedding (before each batch, in the embedding thread), embedded,
# store-written, index-written, receipt-written, committed, cleaned.
FAULT_ENV = "OSCILLINK_FAULT_AT"
_DATA_RE = re.compile(r"^(index\.[0-9a-f]{16}\.faiss|chunks\.[0-9a-f]{16}\.jsonl)$")
_TMP_RE = re.compile(r"^\.(ingest_receipt\.json|index(\.[0-9a-f]{16})?\.faiss|chunks(\.[0-9a-f]{16})?\.jsonl)"
                     r"\.[0-9a-f]{12}\.tmp$")


def fault_point(step: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, _, action = spec.partition(":")
    if name != step:
        return
    if action == "hang":  # stand-in for a long computation that ignores Ctrl-C (a torch batch)
        print(f"oscillink-fault: hanging at {step}", file=sys.stderr, flush=True)
        import threading

        never = threading.Event()
        while True:
            try:
                never.wait()
            except KeyboardInterrupt:
                continue
    os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def index_lock(path: str | os.PathLike) -> Iterator[bool]:
    """Hold an exclusive, non-blocking ``flock`` on the index directory (created if missing).

    Yields True when this call created the directory. Raises `IndexBusyError` at once when
    another process holds the lock. The kernel releases the lock when its holder exits, however
    it exits, so a crashed ingest never leaves a stale lock. If the directory was created here
    and is still empty when the block fails, it is removed (under the lock).
    """
    import fcntl

    d = Path(path)
    for _ in range(10):
        created = False
        try:
            d.mkdir(parents=True)
            created = True
        except FileExistsError:
            if not d.is_dir():
                raise IndexDirError(f"{d}: exists and is not a directory") from None
        except OSError as exc:
            raise IndexDirError(f"{d}: cannot create the index directory ({exc.strerror or exc})") from None
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # removed between mkdir and open: start again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise IndexBusyError(f"{d}: another oscillink ingest is writing this index right now (it holds "
                                     f"the directory's lock); wait for it to finish, then run again") from None
            raise IndexDirError(f"{d}: cannot lock the index directory ({exc.strerror or exc})") from None
        try:
            same = os.stat(d).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the directory we locked was removed (by a failed first ingest): retry
            os.close(fd)
            continue
        break
    else:  # pragma: no cover
        raise IndexDirError(f"{d}: the directory keeps disappearing; cannot lock it")
    try:
        yield created
    except BaseException:
        if created:
            try:
                d.rmdir()  # only if still empty; we hold the lock, so no other writer is in there
            except OSError:
                pass
        raise
    finally:
        os.close(fd)  # releases the lock


def _referenced(d: Path) -> set[str] | None:
    """Names of the data files the current receipt of ``d`` names: empty if there is no receipt,
    None if there is one that cannot be read (then no data file is considered unreferenced)."""
    if not (d / RECEIPT_FILE).exists():
        return set()
    try:
        rec = json.loads((d / RECEIPT_FILE).read_text("utf-8"))
        return {str(rec["index"].get("file", INDEX_FILE)), str(rec["store"].get("file", CHUNKS_FILE))}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def clean_index_dir(d: Path, *, keep: set[str] | None = None) -> list[str]:
    """Remove our temporaries and the data files no receipt names (call with the lock held).

    Only names oscillink writes are touched (``.NAME.<hex>.tmp``, ``index.<sha16>.faiss``,
    ``chunks.<sha16>.jsonl``, and the pre-0.2 ``index.faiss`` / ``chunks.jsonl`` when the
    receipt names other files). Returns the names removed.
    """
    keep = _referenced(d) if keep is None else keep
    removed = []
    for p in d.iterdir():
        name = p.name
        legacy = name in (INDEX_FILE, CHUNKS_FILE) and (d / RECEIPT_FILE).exists()
        orphan = keep is not None and (_DATA_RE.match(name) or legacy) and name not in keep
        if _TMP_RE.match(name) or orphan:
            try:
                p.unlink()
                removed.append(name)
            except FileNotFoundError:  # pragma: no cover
                pass
    return removed


def data_file_name(kind: str, digest: str) -> str:
    return f"index.{digest[:16]}.faiss" if kind == "index" else f"chunks.{digest[:16]}.jsonl"


def commit_index(d: Path, *, index_bytes: bytes, store_bytes: bytes, receipt_bytes: bytes,
                 index_name: str, store_name: str) -> None:
    """Write the data files, then switch ``ingest_receipt.json`` in one rename, then clean up.

    Call with `index_lock` held. Until the rename the directory still describes the old index
    (its receipt names the old files, which are left alone); after it, the new one.
    """
    atomic_write_bytes(d / store_name, store_bytes)
    fault_point("store-written")
    atomic_write_bytes(d / index_name, index_bytes)
    fault_point("index-written")
    tmp, final = atomic_write_bytes(d / RECEIPT_FILE, receipt_bytes, commit=False)
    try:
        fault_point("receipt-written")
        os.replace(tmp, final)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    _fsync_dir(d)
    fault_point("committed")
    clean_index_dir(d, keep={index_name, store_name})
    _fsync_dir(d)
    fault_point("cleaned")


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


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name} (JSON has no NaN or Infinity)")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IndexDirError(f"{path.parent}: no {path.name} ({what}); is this an oscillink index directory?") from None
    except OSError as exc:
        raise IndexDirError(f"{path}: cannot read ({exc.strerror or exc})") from None


# ------------------------------------------------------------------------------ index
def chunk_store_bytes(chunks: Iterable[dict]) -> bytes:
    """The chunk store as hashed and written: one canonical JSON object per line (``chunks.jsonl``)."""
    return b"".join(json.dumps(c, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
                    for c in chunks)


class IndexInfo:
    """What every index store derives from its ingest receipt and chunks (FAISS folder or served store)."""

    receipt: dict
    chunks: list[dict]

    @property
    def index_sha256(self) -> str:
        return self.receipt["index"]["sha256"]

    @property
    def has_traps(self) -> bool:
        return any("trap" in c.get("meta", {}) for c in self.chunks)

    def sources(self) -> set[str]:
        """Every source (`chunk_source`) the index's passages carry. An earlier index of the same
        corpus holds the sources a store had before: ``oscillink query --trusted-index`` trusts
        them, so a source that appeared since (and agrees only with itself) yields to them."""
        return {s for s in (chunk_source(c) for c in self.chunks) if s is not None}


@dataclass
class IndexStore(IndexInfo):
    path: Path
    receipt: dict
    index: Any  # faiss.Index
    chunks: list[dict]

    @classmethod
    def open(cls, path: str | os.PathLike, *, key: bytes | str | None = None,
             check_model: bool = True) -> IndexStore:
        """Load an index directory after checking the receipt, the model and both file hashes.

        With ``key``, the ingest receipt must carry an HMAC-SHA256 signature that verifies under
        it: an unsigned receipt (e.g. one whose signature was removed after editing) is refused.
        A concurrent ``ingest --overwrite`` is tolerated: if the files the receipt named vanish
        while they are read, the (new) receipt is read again.
        """
        d = Path(path)
        if not d.is_dir():
            raise IndexDirError(f"{d}: no such index directory")
        for _attempt in range(5):
            raw = _read(d / RECEIPT_FILE, "ingest receipt")
            try:
                return cls._open(d, raw, key=key, check_model=check_model)
            except IndexDirError:
                try:
                    changed = (d / RECEIPT_FILE).read_bytes() != raw
                except OSError:
                    changed = False
                if not changed:
                    raise
        raise IndexDirError(f"{d}: the index keeps changing while it is read (an ingest is rewriting it)")

    @classmethod
    def _open(cls, d: Path, raw: bytes, *, key: bytes | str | None, check_model: bool) -> IndexStore:
        try:
            receipt = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise IndexDirError(f"{d / RECEIPT_FILE}: not valid JSON ({exc}); the index is damaged") from None
        if not isinstance(receipt, dict) or receipt.get("format") != INGEST_FORMAT:
            raise IndexDirError(f"{d / RECEIPT_FILE}: not an oscillink ingest receipt")
        try:
            recorded = receipt["receipt_sha256"]
            model, idx, store = receipt["model"], receipt["index"], receipt["store"]
            dim = int(model["dim"])
            index_name, store_name = str(idx.get("file", INDEX_FILE)), str(store.get("file", CHUNKS_FILE))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IndexDirError(f"{d / RECEIPT_FILE}: incomplete ingest receipt (missing {exc})") from None
        for name in (index_name, store_name):
            if not name or Path(name).name != name or name in (".", ".."):
                raise IndexDirError(f"{d / RECEIPT_FILE}: names a data file outside the index directory ({name!r})")
        if hash_ingest_receipt(receipt) != recorded:
            raise IndexDirError(f"{d / RECEIPT_FILE}: contents do not match its receipt_sha256 (edited or damaged)")
        if key is not None:
            from oscillink_core import verify_receipt

            if "signature" not in receipt:
                raise IndexDirError(f"{d / RECEIPT_FILE}: the ingest receipt is not signed, but a key was given: "
                                    f"refusing an index whose origin cannot be checked (re-run oscillink ingest "
                                    f"with --key-env, or query without --key-env)")
            if not verify_receipt(receipt, key):
                raise IndexDirError(f"{d / RECEIPT_FILE}: HMAC signature does not verify under the given key "
                                    f"(wrong key, or the index was modified after it was signed)")
        if check_model:
            from .embeddings import EMBED_DIM, MODEL_NAME, model_fingerprint

            if dim != EMBED_DIM:
                raise IndexDirError(f"{d}: index was built with {dim}-dimensional embeddings; the packaged model "
                                  f"{MODEL_NAME} gives {EMBED_DIM}. Re-run oscillink ingest")
            if model.get("fingerprint") != model_fingerprint() or model.get("name") != MODEL_NAME:
                raise IndexDirError(f"{d}: index was built with another embedding model ({model.get('name')}, weights "
                                  f"{str(model.get('fingerprint'))[:12]}...) than this install's {MODEL_NAME} "
                                  f"(weights {model_fingerprint()[:12]}...). Re-run oscillink ingest")
        index_bytes = _read(d / index_name, "FAISS index")
        if sha256_bytes(index_bytes) != idx.get("sha256"):
            raise IndexDirError(f"{d / index_name}: SHA-256 does not match the ingest receipt ({len(index_bytes)} "
                                f"bytes, expected {idx.get('bytes')}): corrupted, truncated or replaced. "
                                f"Re-run oscillink ingest")
        store_bytes = _read(d / store_name, "chunk store")
        if sha256_bytes(store_bytes) != store.get("sha256"):
            raise IndexDirError(f"{d / store_name}: SHA-256 does not match the ingest receipt: corrupted, truncated "
                              f"or edited. Re-run oscillink ingest")
        import faiss

        try:
            index = faiss.deserialize_index(np.frombuffer(index_bytes, dtype=np.uint8))
        except Exception as exc:  # hash matched, so this is a FAISS version problem
            raise IndexDirError(f"{d / index_name}: FAISS cannot read it ({str(exc).splitlines()[0]})") from None
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


SOURCE_RULE = "the record's 'source' field (.jsonl / .csv), else the file it was ingested from"


def chunk_source(chunk: dict) -> str | None:
    """The source a passage is judged by under a trust policy: its record's ``source`` field (a
    .jsonl key or .csv column that ingest keeps in the chunk's ``meta``), else the name of the file
    it was ingested from (``chunk["source"]``, as ingest names files); None when neither is set.

    >>> chunk_source({"source": "web.jsonl", "meta": {"source": "example.org"}})
    'example.org'
    >>> chunk_source({"source": "notes/a.txt", "meta": {}}), chunk_source({"meta": {"source": ""}})
    ('notes/a.txt', None)
    """
    meta = chunk.get("meta")
    own = meta.get("source") if isinstance(meta, dict) else None
    if own is not None and own != "":
        return own if isinstance(own, str) else str(own)
    src = chunk.get("source")
    if src is None or src == "":
        return None
    return src if isinstance(src, str) else str(src)


def run_query(store: IndexStore, question: str, *, k: int = 5, fetch_k: int = 50, params: Any = None,
              query_vec: np.ndarray | None = None, sign_key: bytes | str | None = None,
              backend: str | None = None, trusted_sources: Any = None,
              trusted_from: Sequence[dict] | None = None) -> QueryOutcome:
    """Retrieve, rerank and build the provenance-carrying settle receipt.

    ``query_vec`` replaces embedding ``question`` (used by `reproduce` with the recorded vector).
    ``trusted_sources`` (a collection of source names; None: no trust policy) passes each fetched
    passage's `chunk_source` to the core; the receipt then records the set in
    ``provenance.trust.trusted_sources`` (sorted) and each item gains ``origin`` (its source),
    ``flags`` and ``action``. ``trusted_from`` (with ``trusted_sources``): where the trusted set
    came from, recorded as ``provenance.trust.from_indexes`` (e.g. ``[{"index_sha256", "sources"}]``
    of the indexes whose sources the CLI's ``--trusted-index`` trusts).
    """
    from oscillink_core import rerank, sign_receipt

    from .embeddings import MODEL_NAME

    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:  # e.g. argv bytes that are not UTF-8 (kept as lone surrogates)
        bad = question[exc.start:exc.end].encode("utf-8", "surrogateescape")
        raise ValueError(f"the question is not valid UTF-8 (byte 0x{bad[0]:02x} at character {exc.start}); "
                         f"pass the question as UTF-8 text") from None
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"-k must be a positive integer; got {k!r}")
    if isinstance(fetch_k, bool) or not isinstance(fetch_k, int) or fetch_k < 1:
        raise ValueError(f"--fetch-k must be a positive integer; got {fetch_k!r}")
    from .adapters import check_trusted_sources

    trusted = check_trusted_sources(trusted_sources)
    if query_vec is None:
        from .embeddings import embed

        query_vec = embed([question])[0]
    q = np.ascontiguousarray(query_vec, dtype=np.float32)
    rows, sims = store.search(q, fetch_k)
    Y = store.vectors(rows)
    ids = [store.chunks[int(r)]["id"] for r in rows]
    texts = [store.chunks[int(r)]["text"] for r in rows]
    sources = None if trusted is None else [chunk_source(store.chunks[int(r)]) for r in rows]
    res = rerank(q, Y, k=min(k, len(ids)), ids=ids, params=params, backend=backend, texts=texts,
                 query_text=question, sources=sources, trusted_sources=trusted)
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
    if trusted is not None:
        receipt["provenance"]["trust"] = {"trusted_sources": sorted(trusted), "source": SOURCE_RULE}
        if trusted_from:
            receipt["provenance"]["trust"]["from_indexes"] = [dict(x) for x in trusted_from]
    # the published flat names (same values as provenance.*), for the documented auditor check
    # ingest_receipt.index_sha256 == settle_receipt.meta.parent_ingest_sig
    receipt["meta"] = {"parent_ingest_sig": store.index_sha256,
                       "candidate_set_hash": receipt["inputs"]["candidate_set_hash"]}
    served = getattr(store, "query_provenance", None)
    if served is not None:  # a served store (vectorstores.ChromaIndexStore): the candidates as fetched
        receipt["provenance"]["served_store"] = served(rows, Y)
    if sign_key is not None:
        receipt = sign_receipt(receipt, sign_key)
    items = [_row(store, int(rows[it.index]), rank=it.rank, score=it.score, cosine=it.cosine, align=it.align,
                  index=it.index) for it in res.items]
    cosine = [_row(store, int(rows[j]), rank=j + 1, cosine=float(sims[j]), index=j)
              for j in range(min(k, len(ids)))]
    if sources is not None:
        for row, it in zip(items, res.items, strict=True):
            row.update(origin=sources[it.index], flags=list(it.flags), action=it.action)
        for row in cosine:
            row["origin"] = sources[row["index"]]
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
    trust = prov.get("trust")
    if trust is not None and not (isinstance(trust, dict) and isinstance(trust.get("trusted_sources"), list)):
        raise ValueError("the receipt's provenance.trust has no list of trusted_sources")
    origins = None if trust is None else trust.get("from_indexes")
    if origins is not None and not (isinstance(origins, list) and all(isinstance(x, dict) for x in origins)):
        raise ValueError("the receipt's provenance.trust.from_indexes is not a list of objects")
    # re-run on the backend that produced the receipt (the two agree to the CG tolerance, not
    # bit for bit); receipts from before the field existed came from the numpy backend
    solver = receipt.get("solver") if isinstance(receipt.get("solver"), dict) else {}
    backend = solver.get("backend", "numpy")
    from oscillink_core import available_backends

    if backend not in available_backends():
        raise ValueError(f"the receipt was produced by the {backend!r} backend, which is not available here "
                         f"(install 'oscillink-core[fast]' for numba)")
    out = run_query(store, question, k=k, fetch_k=fetch_k, params=receipt.get("params"), query_vec=vec,
                    backend=backend, trusted_sources=None if trust is None else trust["trusted_sources"],
                    trusted_from=None if trust is None else trust.get("from_indexes"))
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

    known = {c["id"] for c in store.chunks}
    for i, q in enumerate(questions):
        for field in ("relevant", "traps"):
            missing = [str(x) for x in q.get(field, []) if str(x) not in known]
            if missing:
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                shown = ", ".join(map(repr, missing[:5])) + more
                raise ValueError(f"question {q.get('id', i)!r}: {field} id(s) not in the index {store.path}: {shown} "
                                 f"(ids in the index look like {next(iter(sorted(known)), '?')!r})")
        if not q.get("relevant"):
            raise ValueError(f"question {q.get('id', i)!r}: 'relevant' is empty; list at least one id")
    vecs = embed([q["question"] for q in questions])
    out = []
    for i, (q, v) in enumerate(zip(questions, vecs, strict=True)):
        rows, _ = store.search(v, fetch_k)
        ids = [store.chunks[int(r)]["id"] for r in rows]
        out.append(LabelledQuery(v, store.vectors(rows), ids=ids, relevance={str(r): 1.0 for r in q["relevant"]},
                                 traps={str(t) for t in q.get("traps", [])}, qid=q.get("id", i)))
    return out
