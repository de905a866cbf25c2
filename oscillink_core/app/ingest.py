"""Reading, chunking and indexing documents for the ``oscillink`` CLI.

* Sources: ``.txt`` / ``.md`` (one document per file), ``.jsonl`` (one record per line) and
  ``.csv`` (one record per row; text and id columns selectable). Directories are walked for
  those extensions, in sorted order. Text is decoded strictly (UTF-8 by default, a BOM is
  accepted): an undecodable file is an error, never silently mangled.
* Chunking: windows of at most ``chunk_size`` characters cut at whitespace, consecutive chunks
  sharing at most ``chunk_overlap`` characters of whole words (runs of whitespace become one
  space). A single word longer than ``chunk_size`` is cut hard.
* Ids: a record that fits in one chunk keeps its id (``id`` field, or ``<file>:<line>``);
  otherwise chunk ``i`` gets ``<id>#<i>``. Plain-text files always give ``<file name>#<i>``.
* The index directory holds ``index.faiss`` (exact inner product over unit vectors, i.e.
  cosine), ``chunks.jsonl`` (the chunk store) and ``ingest_receipt.json``; see `build_index`.

Examples
--------
>>> chunk_text("one two three four five six", chunk_size=13, chunk_overlap=5)
['one two three', 'three four', 'four five six']
>>> chunk_text("short", chunk_size=100, chunk_overlap=10)
['short']
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .store import (
    CHUNKS_FILE,
    INDEX_FILE,
    INGEST_FORMAT,
    RECEIPT_FILE,
    IndexDirError,
    atomic_write_bytes,
    hash_ingest_receipt,
    sha256_bytes,
)

__all__ = ["Chunk", "SourceError", "chunk_text", "read_sources", "build_index", "SUPPORTED_SUFFIXES",
           "DEFAULT_CHUNK_SIZE", "DEFAULT_CHUNK_OVERLAP"]

SUPPORTED_SUFFIXES = (".txt", ".md", ".jsonl", ".csv")
DEFAULT_CHUNK_SIZE = 800
DEFAULT_CHUNK_OVERLAP = 100
EMBED_BATCH = 64


class SourceError(ValueError):
    """A source file cannot be read (missing, empty, undecodable, malformed)."""


@dataclass
class Chunk:
    id: str
    text: str
    source: str
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"id": self.id, "text": self.text, "source": self.source, "meta": self.meta}


@dataclass
class SourceInfo:
    path: str
    format: str
    sha256: str
    bytes: int
    records: int
    chunks: int = 0
    skipped_empty: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


# ------------------------------------------------------------------------------ chunking
def chunk_text(text: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
               chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> list[str]:
    """Split ``text`` into whitespace-aligned windows of at most ``chunk_size`` characters.

    Consecutive chunks share the longest run of trailing whole words of at most
    ``chunk_overlap`` characters that still leaves room for a new word (so every chunk adds
    text and chunking always advances).
    """
    check_chunking(chunk_size, chunk_overlap)
    words: list[str] = []
    for w in text.split():
        words.extend(w[i:i + chunk_size] for i in range(0, len(w), chunk_size))
    chunks: list[str] = []
    start = 0
    while start < len(words):
        end, length = start + 1, len(words[start])
        while end < len(words) and length + 1 + len(words[end]) <= chunk_size:
            length += 1 + len(words[end])
            end += 1
        chunks.append(" ".join(words[start:end]))
        if end == len(words):
            break
        # the next chunk starts with the longest run of trailing words of at most chunk_overlap
        # characters that still leaves room for the next new word (every chunk adds content)
        nxt, tail, room = end, 0, chunk_size - len(words[end]) - 1
        while nxt - 1 > start:
            add = len(words[nxt - 1]) + (1 if tail else 0)
            if tail + add > min(chunk_overlap, room):
                break
            tail += add
            nxt -= 1
        start = nxt
    return chunks


def check_chunking(chunk_size: int, chunk_overlap: int) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk size must be a positive integer; got {chunk_size!r}")
    if isinstance(chunk_overlap, bool) or not isinstance(chunk_overlap, int) or not 0 <= chunk_overlap < chunk_size:
        raise ValueError(f"chunk overlap must be an integer in [0, chunk size = {chunk_size}); got {chunk_overlap!r}")


# ------------------------------------------------------------------------------ reading
def _expand(paths: Sequence[str | os.PathLike]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in SUPPORTED_SUFFIXES)
            if not found:
                raise SourceError(f"{p}: directory holds no {'/'.join(SUPPORTED_SUFFIXES)} files")
            out.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise SourceError(f"{p}: unsupported file type {p.suffix or '(none)'!r}; "
                                  f"supported: {', '.join(SUPPORTED_SUFFIXES)}")
            out.append(p)
        elif p.exists():
            raise SourceError(f"{p}: not a regular file or directory")
        else:
            raise SourceError(f"{p}: no such file or directory")
    return out


def _decode(p: Path, raw: bytes, encoding: str) -> str:
    if not raw:
        raise SourceError(f"{p}: file is empty")
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        text = raw.decode(enc, errors="strict")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{p}: cannot decode as {encoding} (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                          f"pass --encoding if the file uses another encoding") from None
    except LookupError:
        raise SourceError(f"unknown encoding {encoding!r}") from None
    if "\x00" in text:
        raise SourceError(f"{p}: contains NUL bytes; it looks like a binary file, not {encoding} text")
    if not text.strip():
        raise SourceError(f"{p}: file holds no text (only whitespace)")
    return text


def _as_bool(v: Any) -> Any:
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return v.strip().lower() in ("true", "1", "yes")
    return v


def _record_meta(rec: dict, text_field: str, id_field: str) -> dict:
    meta = {}
    for key, v in rec.items():
        if key in (text_field, id_field) or key is None:
            continue
        if isinstance(v, (str, int, float, bool)) or v is None:
            meta[str(key)] = _as_bool(v) if key == "trap" else v
    return meta


def _records_jsonl(p: Path, text: str) -> Iterable[tuple[int, Any]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{p}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise SourceError(f"{p}:{lineno}: each line must be a JSON object; got {type(rec).__name__}")
        yield lineno, rec


def _records_csv(p: Path, text: str, text_field: str) -> Iterable[tuple[int, Any]]:
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        if text_field not in header:
            raise SourceError(f"{p}: no {text_field!r} column (columns: {', '.join(map(repr, header))}); "
                              f"choose one with --text-field")
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:
        raise SourceError(f"{p}: malformed CSV ({exc})") from None


def read_sources(paths: Sequence[str | os.PathLike], *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 chunk_overlap: int = DEFAULT_CHUNK_OVERLAP, text_field: str = "text", id_field: str = "id",
                 encoding: str = "utf-8") -> tuple[list[Chunk], list[SourceInfo]]:
    """Read and chunk every source; raise `SourceError` on the first unreadable one."""
    check_chunking(chunk_size, chunk_overlap)
    if not paths:
        raise SourceError("no input files given")
    files = _expand(paths)
    chunks: list[Chunk] = []
    infos: list[SourceInfo] = []
    seen: dict[str, str] = {}

    def emit(cid: str, text: str, src: str, meta: dict) -> None:
        if cid in seen:
            raise SourceError(f"{src}: duplicate chunk id {cid!r} (first seen in {seen[cid]}); ids must be unique")
        seen[cid] = src
        chunks.append(Chunk(cid, text, src, meta))

    for p in files:
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise SourceError(f"{p}: cannot read ({exc.strerror or exc})") from None
        text = _decode(p, raw, encoding)
        suffix = p.suffix.lower()
        info = SourceInfo(path=str(p), format=suffix.lstrip("."), sha256=sha256_bytes(raw), bytes=len(raw), records=0)
        before = len(chunks)
        if suffix in (".txt", ".md"):
            info.records = 1
            for i, piece in enumerate(chunk_text(text, chunk_size=chunk_size, chunk_overlap=chunk_overlap)):
                emit(f"{p.name}#{i}", piece, p.name, {})
        else:
            records = _records_jsonl(p, text) if suffix == ".jsonl" else _records_csv(p, text, text_field)
            for lineno, rec in records:
                info.records += 1
                if text_field not in rec:
                    raise SourceError(f"{p}:{lineno}: record has no {text_field!r} field "
                                      f"(fields: {', '.join(map(repr, rec))}); choose one with --text-field")
                body = rec[text_field]
                if body is None or (isinstance(body, str) and not body.strip()):
                    info.skipped_empty += 1
                    continue
                if not isinstance(body, str):
                    raise SourceError(f"{p}:{lineno}: field {text_field!r} must be a string; got {type(body).__name__}")
                rid = rec.get(id_field)
                rid = f"{p.name}:{lineno}" if rid is None or rid == "" else str(rid)
                pieces = chunk_text(body, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
                meta = _record_meta(rec, text_field, id_field)
                if len(pieces) == 1:
                    emit(rid, pieces[0], p.name, meta)
                else:
                    for i, piece in enumerate(pieces):
                        emit(f"{rid}#{i}", piece, p.name, meta)
            if info.records == 0:
                raise SourceError(f"{p}: holds no records")
        info.chunks = len(chunks) - before
        if info.chunks == 0:
            raise SourceError(f"{p}: holds no text to index (all {info.records} record(s) empty)")
        infos.append(info)
    return chunks, infos


# ------------------------------------------------------------------------------ indexing
def _embed_all(texts: list[str], progress: bool | None) -> Any:
    import numpy as np

    from .embeddings import EMBED_DIM, embed

    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the cli extra
        tqdm = None
    out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
    bar = None
    if tqdm is not None and progress is not False:
        bar = tqdm(total=len(texts), unit="chunk", desc="embedding", file=sys.stderr,
                   disable=None if progress is None else False, leave=False)
    try:
        for i in range(0, len(texts), EMBED_BATCH):
            out[i:i + EMBED_BATCH] = embed(texts[i:i + EMBED_BATCH], batch_size=EMBED_BATCH)
            if bar is not None:
                bar.update(min(EMBED_BATCH, len(texts) - i))
    finally:
        if bar is not None:
            bar.close()
    return out


def build_index(paths: Sequence[str | os.PathLike], index_dir: str | os.PathLike, *,
                chunk_size: int = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
                text_field: str = "text", id_field: str = "id", encoding: str = "utf-8",
                overwrite: bool = False, sign_key: bytes | str | None = None, progress: bool | None = None,
                log: Callable[[str], None] | None = None) -> dict:
    """Read, chunk, embed and index ``paths`` into ``index_dir``; return the ingest receipt.

    Files are written under temporary names and renamed into place only once everything
    succeeded (store, then index, then the receipt last), so a failure never damages an
    index that was already there. An existing index is replaced only with ``overwrite=True``.
    """
    import faiss
    import numpy as np

    from oscillink_core import __version__, sign_receipt

    from .embeddings import EMBED_DIM, MODEL_NAME, model_fingerprint

    t0 = time.perf_counter()
    out = Path(index_dir)
    if out.exists() and not out.is_dir():
        raise IndexDirError(f"{out}: exists and is not a directory")
    ours = [out / name for name in (RECEIPT_FILE, INDEX_FILE, CHUNKS_FILE)]
    if out.is_dir() and any(p.exists() for p in ours):
        if not (out / RECEIPT_FILE).exists():
            names = ", ".join(p.name for p in ours if p.exists())
            raise IndexDirError(f"{out}: holds {names} but no {RECEIPT_FILE}; refusing to overwrite files "
                              f"oscillink did not write")
        if not overwrite:
            raise IndexDirError(f"{out}: already holds an index; pass --overwrite to replace it")

    chunks, infos = read_sources(paths, chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                                 text_field=text_field, id_field=id_field, encoding=encoding)
    if log:
        log(f"read {len(infos)} file(s): {len(chunks)} chunk(s) (chunk size {chunk_size}, overlap {chunk_overlap})")
    t1 = time.perf_counter()
    vecs = _embed_all([c.text for c in chunks], progress)
    if not np.isfinite(vecs).all():
        raise IndexDirError("the embedding model returned non-finite vectors")
    t2 = time.perf_counter()
    index = faiss.IndexFlatIP(EMBED_DIM)
    index.add(vecs)
    index_bytes = faiss.serialize_index(index).tobytes()
    store_bytes = b"".join(json.dumps(c.to_json(), sort_keys=True, ensure_ascii=False,
                                      separators=(",", ":")).encode("utf-8") + b"\n" for c in chunks)
    torch = sys.modules.get("torch")
    receipt: dict = {
        "format": INGEST_FORMAT,
        "version": 1,
        "package_version": __version__,
        "model": {"name": MODEL_NAME, "fingerprint": model_fingerprint(), "dim": EMBED_DIM, "normalized": True},
        "chunking": {"unit": "characters", "chunk_size": chunk_size, "chunk_overlap": chunk_overlap,
                     "boundary": "whitespace", "text_field": text_field, "id_field": id_field, "encoding": encoding},
        "sources": [i.to_json() for i in infos],
        "chunks": len(chunks),
        "index": {"file": INDEX_FILE, "type": "IndexFlatIP", "metric": "inner_product (cosine on unit vectors)",
                  "ntotal": int(index.ntotal), "dim": EMBED_DIM, "sha256": sha256_bytes(index_bytes),
                  "bytes": len(index_bytes)},
        "store": {"file": CHUNKS_FILE, "format": "jsonl", "count": len(chunks), "sha256": sha256_bytes(store_bytes),
                  "bytes": len(store_bytes)},
        "determinism": {"device": "cpu", "dtype": "float32", "embed_batch_size": EMBED_BATCH,
                        "torch_version": getattr(torch, "__version__", None),
                        "torch_threads": torch.get_num_threads() if torch is not None else None,
                        "faiss_version": faiss.__version__, "search": "exact (IndexFlatIP), ties by insertion order",
                        "chunk_order": "sources in the order given (directories sorted), records in file order"},
        "timings_ms": {"read_ms": round(1e3 * (t1 - t0), 3), "embed_ms": round(1e3 * (t2 - t1), 3)},
    }
    receipt["receipt_sha256"] = hash_ingest_receipt(receipt)
    if sign_key is not None:
        receipt = sign_receipt(receipt, sign_key)
    receipt_bytes = (json.dumps(receipt, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")

    out.mkdir(parents=True, exist_ok=True)
    tmps = []
    try:
        for name, data in ((CHUNKS_FILE, store_bytes), (INDEX_FILE, index_bytes), (RECEIPT_FILE, receipt_bytes)):
            tmps.append(atomic_write_bytes(out / name, data, commit=False))
        for tmp, final in tmps:  # every file is complete on disk before the first rename
            os.replace(tmp, final)
    finally:
        for tmp, _ in tmps:
            if tmp.exists():
                tmp.unlink()
    return receipt

