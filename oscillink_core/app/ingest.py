"""Reading, chunking and indexing documents for the ``oscillink`` CLI.

* Sources: ``.txt`` / ``.md`` (one document per file), ``.jsonl`` (one record per line) and
  ``.csv`` (one record per row; text and id columns selectable). Directories are walked for
  those extensions, in sorted order. Text is decoded strictly (UTF-8 by default, a BOM is
  accepted): an undecodable file is an error, never silently mangled.
* Chunking: windows of at most ``chunk_size`` characters cut at whitespace, consecutive chunks
  sharing at most ``chunk_overlap`` characters of whole words (runs of whitespace become one
  space). A single word longer than ``chunk_size`` is cut hard.
* Sources are named by their path relative to what was given: a file argument by its name
  (``notes.txt``), a file found in a directory argument ``D`` by ``D``'s name and its path
  inside ``D`` (``c3/a/bees.txt``), so equal file names in different folders stay apart.
* Ids: a record that fits in one chunk keeps its id (``id`` field, or ``<source>:<line>``);
  otherwise chunk ``i`` gets ``<id>#<i>``. Plain-text files always give ``<source>#<i>``.
* CSV is parsed strictly: a row with more or fewer fields than the header, a quote that is
  never closed or a stray quote is an error naming the file and line, never a silently merged
  or truncated record. Records whose quoted fields span several lines are counted in the
  receipt (``sources[].multiline_records``) and reported by the CLI.
* The index directory holds ``index.<sha16>.faiss`` (exact inner product over unit vectors,
  i.e. cosine), ``chunks.<sha16>.jsonl`` (the chunk store) and ``ingest_receipt.json``; see
  `build_index` and `store.commit_index`.

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
    chunk_store_bytes,
    clean_index_dir,
    commit_index,
    data_file_name,
    fault_point,
    hash_ingest_receipt,
    index_lock,
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
    multiline_records: int | None = None  # CSV only
    source: str = ""  # the name ids and chunk sources use

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


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
def _expand(paths: Sequence[str | os.PathLike]) -> list[tuple[Path, str]]:
    """(file, source name) for every input file: a file argument is named by its file name, a
    file under a directory argument ``D`` by ``D``'s name plus its path inside ``D`` (posix)."""
    out: list[tuple[Path, str]] = []
    named: dict[str, Path] = {}
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in SUPPORTED_SUFFIXES)
            if not found:
                raise SourceError(f"{p}: directory holds no {'/'.join(SUPPORTED_SUFFIXES)} files")
            base = p.resolve().name or "root"
            out.extend((q, f"{base}/{q.relative_to(p).as_posix()}") for q in found)
        elif p.is_file():
            if p.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise SourceError(f"{p}: unsupported file type {p.suffix or '(none)'!r}; "
                                  f"supported: {', '.join(SUPPORTED_SUFFIXES)}")
            out.append((p, p.name))
        elif p.exists():
            raise SourceError(f"{p}: not a regular file or directory")
        else:
            raise SourceError(f"{p}: no such file or directory")
    for f, name in out:
        if name in named and named[name].resolve() != f.resolve():
            raise SourceError(f"{f}: its source name {name!r} is also the name of {named[name]}; pass their "
                              f"common folder instead (sources are named by their path inside a folder argument)")
        if name in named:
            raise SourceError(f"{f}: given twice")
        named[name] = f
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


def _records_csv(p: Path, text: str, text_field: str, info: SourceInfo) -> Iterable[tuple[int, Any]]:
    """Rows of a CSV file as dicts, parsed strictly (see the module notes), with their first line."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    try:
        header = next(reader, None) or []
        if text_field not in header:
            raise SourceError(f"{p}: no {text_field!r} column (columns: {', '.join(map(repr, header))}); "
                              f"choose one with --text-field")
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup:
            raise SourceError(f"{p}:1: header names column(s) {', '.join(map(repr, dup))} more than once")
        info.multiline_records = 0
        while True:
            start = reader.line_num + 1  # the line the next record starts on (named in errors)
            row = next(reader, None)
            if row is None:
                break
            line = reader.line_num
            if not row:  # a blank line
                continue
            if len(row) != len(header):
                raise SourceError(f"{p}:{start}: row has {len(row)} field(s), the header has {len(header)}; "
                                  f"fix the row (quote fields that contain commas)")
            if line > start:
                info.multiline_records += 1
            yield start, dict(zip(header, row, strict=True))
    except csv.Error as exc:
        hint = " (a quote that is never closed?)" if "end of data" in str(exc) else ""
        raise SourceError(f"{p}:{start}: malformed CSV in the record starting on this line: {exc}{hint}") from None


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

    for p, name in files:
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise SourceError(f"{p}: cannot read ({exc.strerror or exc})") from None
        text = _decode(p, raw, encoding)
        suffix = p.suffix.lower()
        info = SourceInfo(path=str(p), format=suffix.lstrip("."), sha256=sha256_bytes(raw), bytes=len(raw), records=0,
                          source=name)
        before = len(chunks)
        if suffix in (".txt", ".md"):
            info.records = 1
            for i, piece in enumerate(chunk_text(text, chunk_size=chunk_size, chunk_overlap=chunk_overlap)):
                emit(f"{name}#{i}", piece, name, {})
        else:
            records = _records_jsonl(p, text) if suffix == ".jsonl" else _records_csv(p, text, text_field, info)
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
                rid = f"{name}:{lineno}" if rid is None or rid == "" else str(rid)
                pieces = chunk_text(body, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
                meta = _record_meta(rec, text_field, id_field)
                if len(pieces) == 1:
                    emit(rid, pieces[0], name, meta)
                else:
                    for i, piece in enumerate(pieces):
                        emit(f"{rid}#{i}", piece, name, meta)
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
    # The batches run in a worker thread and the main thread waits for it: a signal (Ctrl-C,
    # SIGTERM) is handled by the main thread at once, instead of after the current batch's torch
    # call returns (many seconds on a loaded machine). On interrupt the worker stops after its batch.
    import threading

    failure: list[BaseException] = []
    cancel = threading.Event()

    def work() -> None:
        try:
            for i in range(0, len(texts), EMBED_BATCH):
                if cancel.is_set():
                    return
                fault_point("embedding")
                out[i:i + EMBED_BATCH] = embed(texts[i:i + EMBED_BATCH], batch_size=EMBED_BATCH)
                if bar is not None:
                    bar.update(min(EMBED_BATCH, len(texts) - i))
        except BaseException as exc:  # re-raised in the main thread
            failure.append(exc)

    worker = threading.Thread(target=work, name="oscillink-embed", daemon=True)
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)  # returns to the interpreter often, so signals are handled promptly
    except BaseException:
        cancel.set()
        raise
    finally:
        if bar is not None and not worker.is_alive():
            bar.close()
    if failure:
        raise failure[0]
    return out


def build_index(paths: Sequence[str | os.PathLike], index_dir: str | os.PathLike, *,
                chunk_size: int = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
                text_field: str = "text", id_field: str = "id", encoding: str = "utf-8",
                overwrite: bool = False, sign_key: bytes | str | None = None, progress: bool | None = None,
                log: Callable[[str], None] | None = None) -> dict:
    """Read, chunk, embed and index ``paths`` into ``index_dir``; return the ingest receipt.

    The whole run holds an exclusive lock on ``index_dir`` (a second ingest into it fails at
    once with `IndexBusyError`). The new data files are written and fsynced under new names and
    ``ingest_receipt.json`` is replaced last, in one rename (`store.commit_index`): a failure or
    a kill at any point leaves the old index whole (or, after the rename, the new one). An
    existing index is replaced only with ``overwrite=True``.
    """
    import faiss
    import numpy as np

    from oscillink_core import sign_receipt

    from .embeddings import EMBED_DIM, MODEL_NAME

    t0 = time.perf_counter()
    out = Path(index_dir)
    if out.exists() and not out.is_dir():
        raise IndexDirError(f"{out}: exists and is not a directory")
    check_chunking(chunk_size, chunk_overlap)
    if not paths:
        raise SourceError("no input files given")
    with index_lock(out):
        fault_point("locked")
        legacy = [out / name for name in (INDEX_FILE, CHUNKS_FILE)]
        if not (out / RECEIPT_FILE).exists():
            foreign = [p.name for p in legacy if p.exists()]
            if foreign:
                raise IndexDirError(f"{out}: holds {', '.join(foreign)} but no {RECEIPT_FILE}; refusing to "
                                    f"overwrite files oscillink did not write")
        elif not overwrite:
            raise IndexDirError(f"{out}: already holds an index; pass --overwrite to replace it")
        stale = clean_index_dir(out)  # temporaries and orphans of an ingest that was killed
        if stale and log:
            log(f"removed {len(stale)} file(s) left by an interrupted ingest: {', '.join(sorted(stale))}")

        chunks, infos = read_sources(paths, chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                                     text_field=text_field, id_field=id_field, encoding=encoding)
        if log:
            log(f"read {len(infos)} file(s): {len(chunks)} chunk(s) (chunk size {chunk_size}, "
                f"overlap {chunk_overlap})")
            for info in infos:
                if info.multiline_records:
                    log(f"note: {info.path}: {info.multiline_records} record(s) have quoted fields spanning "
                        f"several lines; check the file if you did not expect line breaks inside fields")
        t1 = time.perf_counter()
        vecs = _embed_all([c.text for c in chunks], progress)
        if not np.isfinite(vecs).all():
            raise IndexDirError("the embedding model returned non-finite vectors")
        fault_point("embedded")
        t2 = time.perf_counter()
        index = faiss.IndexFlatIP(EMBED_DIM)
        index.add(vecs)
        index_bytes = faiss.serialize_index(index).tobytes()
        store_bytes = chunk_store_bytes(c.to_json() for c in chunks)
        index_sha, store_sha = sha256_bytes(index_bytes), sha256_bytes(store_bytes)
        index_name, store_name = data_file_name("index", index_sha), data_file_name("store", store_sha)
        torch = sys.modules.get("torch")
        receipt: dict = {
            **receipt_head(infos, len(chunks), chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                           text_field=text_field, id_field=id_field, encoding=encoding),
            "index": {"file": index_name, "type": "IndexFlatIP", "metric": "inner_product (cosine on unit vectors)",
                      "ntotal": int(index.ntotal), "dim": EMBED_DIM, "sha256": index_sha,
                      "bytes": len(index_bytes)},
            "store": {"file": store_name, "format": "jsonl", "count": len(chunks), "sha256": store_sha,
                      "bytes": len(store_bytes)},
            "determinism": {"device": "cpu", "dtype": "float32", "embed_batch_size": EMBED_BATCH,
                            "torch_version": getattr(torch, "__version__", None),
                            "torch_threads": torch.get_num_threads() if torch is not None else None,
                            "faiss_version": faiss.__version__,
                            "search": "exact (IndexFlatIP), ties by insertion order",
                            "chunk_order": "sources in the order given (directories sorted), records in file order"},
            # the published flat names (the same values as the nested fields above)
            **published_ingest_fields(MODEL_NAME, EMBED_DIM, index_sha, store_sha, len(chunks)),
            "timings_ms": {"read_ms": round(1e3 * (t1 - t0), 3), "embed_ms": round(1e3 * (t2 - t1), 3)},
        }
        receipt["receipt_sha256"] = hash_ingest_receipt(receipt)
        if sign_key is not None:
            receipt = sign_receipt(receipt, sign_key)
        receipt_bytes = (json.dumps(receipt, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        commit_index(out, index_bytes=index_bytes, store_bytes=store_bytes, receipt_bytes=receipt_bytes,
                     index_name=index_name, store_name=store_name)
    return receipt


def receipt_head(infos: Sequence[SourceInfo], n_chunks: int, *, chunk_size: int, chunk_overlap: int,
                 text_field: str | None, id_field: str | None, encoding: str) -> dict:
    """The fields every ingest receipt starts with, whatever store holds the index: format, package,
    model, chunking, sources and the chunk count."""
    from oscillink_core import __version__

    from .embeddings import EMBED_DIM, MODEL_NAME, model_fingerprint

    return {
        "format": INGEST_FORMAT,
        "version": 1,
        "package_version": __version__,
        "model": {"name": MODEL_NAME, "fingerprint": model_fingerprint(), "dim": EMBED_DIM, "normalized": True},
        "chunking": {"unit": "characters", "chunk_size": chunk_size, "chunk_overlap": chunk_overlap,
                     "boundary": "whitespace", "text_field": text_field, "id_field": id_field, "encoding": encoding},
        "sources": [i.to_json() for i in infos],
        "chunks": n_chunks,
    }


def published_ingest_fields(model: str, dim: int, index_sha: str, store_sha: str, chunks: int) -> dict:
    """The flat field names of the published oscillink receipt format, for auditors' checks such as
    ``ingest_receipt.index_sha256 == settle_receipt.meta.parent_ingest_sig``."""
    return {"index_sha256": index_sha, "store_sha256": store_sha, "embed_model": model, "embed_dim": dim,
            "chunks": chunks, "deterministic": True}
