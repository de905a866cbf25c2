"""The ``oscillink`` command line: ingest, query and verify.

``oscillink ingest PATH... --index DIR``
    Read .txt/.md/.jsonl/.csv sources, chunk them, embed them with the packaged model and write
    a FAISS index, the chunk store and a hashed (optionally HMAC-signed) ingest receipt.
``oscillink query DIR "question" [-k 5] [--fetch-k 50] [--json] [--compare] [--trusted-source NAME]...``
    Retrieve ``fetch_k`` candidates, rerank them with oscillink and print the bundle (with
    ``--compare``, the plain cosine top-k beside it). The settle receipt carries a provenance
    block (``parent_ingest_sig`` = the index's SHA-256, ``candidate_set_hash``, the question).
    With ``--trusted-source`` (repeatable) a passage from a source outside the trusted set loses its
    place when other new sources echo it and trusted ones do not (``--trust-policy trusted_first``:
    the context is filled from the trusted sources first); a passage's source is its record's
    ``source`` field (.jsonl / .csv), else the file it was ingested from (see
    `store.chunk_source`); the trusted set is recorded in ``provenance.trust``.
    ``--trusted-index EARLIER`` (repeatable) trusts every source an earlier index of the corpus
    holds (``provenance.trust.from_indexes`` records its SHA-256 and how many sources it gave).
``oscillink verify RECEIPT.json [--index DIR] [--key-env VAR]``
    Check the receipt against the JSON Schema, its HMAC and, with ``--index``, that re-running
    its query reproduces it. Accepts a bare receipt or what ``query --json`` prints (the receipt
    nested under ``"receipt"``). Exit codes:

    * 0 ``receipt verified``: every check that ran passed, and the receipt's integrity was
      established: its HMAC verified under ``--key-env``, or (for an unsigned receipt) re-running
      it against ``--index`` reproduced it byte for byte;
    * 1 ``verification FAILED``: a check failed (JSON, schema incl. non-finite numbers, HMAC,
      provenance, index, reproduction);
    * 2 bad usage (missing file, unset key variable, ...);
    * 3 ``NOT VERIFIED``: nothing failed, but nothing established integrity either: the receipt
      carries a signature that was not checked (no ``--key-env``), or it is unsigned and was not
      re-run against an index. Its form was checked, not its contents.
``oscillink warmup``
    Compile the numba kernels now (a fresh install otherwise compiles on its first query).

Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]

PROG = "oscillink"
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNVERIFIED = 0, 1, 2, 3


class CLIError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAIL):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's default prints usage too)
        raise CLIError(f"{self.prog}: {message} (see {self.prog} --help)", EXIT_USAGE)


def _key_from_env(var: str | None) -> str | None:
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise CLIError(f"--key-env {var}: environment variable {var} is not set or empty", EXIT_USAGE)
    return value


def _print(text: str = "") -> None:
    print(text, file=sys.stdout)


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _check_out_file(path: str, flag: str = "--receipt-out") -> None:
    """Fail before any work when ``path`` cannot be a file we write."""
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"{flag} {path}: is a directory; give a file name (e.g. {p / 'receipt.json'})", EXIT_USAGE)
    if not p.parent.exists():
        raise CLIError(f"{flag} {path}: directory {p.parent} does not exist", EXIT_USAGE)
    if not p.parent.is_dir():
        raise CLIError(f"{flag} {path}: {p.parent} is not a directory", EXIT_USAGE)


def _write_json_file(path: str, obj: Any, flag: str = "--receipt-out") -> None:
    from .store import atomic_write_bytes

    _check_out_file(path, flag)
    data = (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        atomic_write_bytes(Path(path), data)
    except OSError as exc:  # the temporary file's name is ours, not the user's: do not show it
        raise CLIError(f"{flag} {path}: cannot write in {Path(path).parent} "
                       f"({exc.strerror or type(exc).__name__})") from None


def _read_params(path: str):
    """A tuning profile from ``--params PATH``, with errors that name the file."""
    from oscillink_core import resolve_params

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--params {path}: no such file" + (" (it is a directory)" if p.is_dir() else ""), EXIT_USAGE)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise CLIError(f"--params {path}: cannot read ({exc.strerror or exc})") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CLIError(f"--params {path}: not a JSON profile (byte 0x{raw[exc.start]:02x} at offset {exc.start} is "
                       f"not UTF-8; is it a binary file?)", EXIT_USAGE) from None
    except json.JSONDecodeError as exc:
        raise CLIError(f"--params {path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                       EXIT_USAGE) from None
    try:
        return resolve_params(doc)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"--params {path}: {_one_line(exc)}", EXIT_USAGE) from None


# ------------------------------------------------------------------------------ ingest
def cmd_ingest(a: argparse.Namespace) -> int:
    from .ingest import build_index

    if a.chunk_overlap >= a.chunk_size:
        raise CLIError(f"ingest: --chunk-overlap ({a.chunk_overlap}) must be smaller than --chunk-size "
                       f"({a.chunk_size})", EXIT_USAGE)
    if (a.index is None) == (a.store is None):
        raise CLIError("ingest: give either --index DIR (a FAISS index folder) or --store chroma://HOST:PORT/NAME",
                       EXIT_USAGE)
    key = _key_from_env(a.key_env)
    log = None if a.quiet else _err
    if a.store is not None:  # a served store: vectorstores.build_chroma_index
        from .vectorstores import build_chroma_index as build_index
    rec = build_index(a.paths, a.index or a.store, chunk_size=a.chunk_size, chunk_overlap=a.chunk_overlap,
                      text_field=a.text_field, id_field=a.id_field, encoding=a.encoding, overwrite=a.overwrite,
                      sign_key=key, progress=False if a.quiet else None, log=log)
    if a.json:
        _print(json.dumps(rec, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        signed = "HMAC-SHA256 signed" if "signature" in rec else "unsigned (hashed; pass --key-env to sign)"
        _print(f"indexed {rec['chunks']} chunks from {len(rec['sources'])} file(s) into {a.index or a.store}")
        _print(f"  model      {rec['model']['name']} (weights sha256 {rec['model']['fingerprint'][:16]}...)")
        _print(f"  chunking   {a.chunk_size} characters, overlap {a.chunk_overlap}")
        _print(f"  index      sha256 {rec['index']['sha256']}")
        _print(f"  store      sha256 {rec['store']['sha256']}")
        where = Path(a.index) / "ingest_receipt.json" if a.index else "the collection's metadata"
        _print(f"  receipt    {where} ({signed})")
    return EXIT_OK


# ------------------------------------------------------------------------------ query
def _snippet(text: str, width: int) -> str:
    text = _one_line(text)
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def _mark(item: dict) -> str:
    return "TRAP" if item.get("trap") else ""


def _trust_note(item: dict) -> str:
    """`` from ORIGIN [flags]`` for an item of a query with --trusted-source, else ""."""
    if "origin" not in item:
        return ""
    flags = [f for f in item.get("flags", []) if f in ("trusted_source", "untrusted_source",
                                                      "untrusted_no_alternative", "new_source", "new_source_echo")]
    return f"  from {item['origin'] or '(unknown source)'}" + (f"  [{', '.join(flags)}]" if flags else "")


def _print_query(out, store, compare: bool) -> None:
    traps = store.has_traps
    _print(f"question: {out.question}")
    fetched = out.receipt["provenance"]["retrieval"]["fetched"]
    asked = f" (asked for {out.k}; only {fetched} candidates)" if out.k > len(out.items) else ""
    _print(f"index: {store.path} ({store.index.ntotal} chunks), fetched {fetched} candidates, "
           f"k = {len(out.items)}{asked}")
    _print()
    if not compare:
        for it in out.items:
            _print(f"{it['rank']:>2}. {it['id']}  score {it['score']:.4f}  cosine {it['cosine']:.4f}"
                   + (f"  [{_mark(it)}]" if _mark(it) else "") + _trust_note(it))
            _print(textwrap.fill(_one_line(it["text"]), width=100, initial_indent="    ", subsequent_indent="    "))
    else:
        w = 54
        _print(f"{'oscillink top-' + str(len(out.items)):<{w}} | cosine top-{len(out.cosine)}")
        _print(f"{'-' * w}-+-{'-' * w}")
        for i in range(max(len(out.items), len(out.cosine))):
            left = right = ""
            if i < len(out.items):
                it = out.items[i]
                left = f"{it['rank']:>2} {it['id']:<14} {it['score']:.3f} {_mark(it):<4}"
            if i < len(out.cosine):
                c = out.cosine[i]
                right = f"{c['rank']:>2} {c['id']:<14} {c['cosine']:.3f} {_mark(c):<4}"
            _print(f"{left:<{w}} | {right}")
        if traps:
            n_o = sum(1 for it in out.items if it.get("trap"))
            n_c = sum(1 for c in out.cosine if c.get("trap"))
            _print(f"{'traps in top-k: ' + str(n_o):<{w}} | traps in top-k: {n_c}")
        _print()
        seen = set()
        for it in out.items + out.cosine:
            if it["id"] in seen:
                continue
            seen.add(it["id"])
            tag = f" [{_mark(it)}]" if _mark(it) else ""
            _print(f"  {it['id']}{tag}: {_snippet(it['text'], 110)}")
    _print()
    p = out.receipt["provenance"]
    if "trust" in p:
        behind = [s["id"] for s in out.receipt.get("screen", {}).get("screened", [])
                  if {"untrusted_source", "new_source_echo"} & set(s.get("flags", []))]
        _print(f"trusted sources: {', '.join(p['trust']['trusted_sources']) or '(none)'}; "
               + (f"{len(behind)} passage(s) from other sources kept out: {', '.join(behind)}" if behind
                  else "no passage kept out for its source"))
    signed = "signed HMAC-SHA256" if "signature" in out.receipt else "unsigned"
    _print(f"receipt: state_sig {out.receipt['state_sig'][:16]}...  parent_ingest_sig {p['parent_ingest_sig'][:16]}..."
           f"  candidate_set_hash {p['candidate_set_hash'][:16]}...  ({signed})")


def cmd_query(a: argparse.Namespace) -> int:
    from .store import run_query
    from .vectorstores import open_index

    key = _key_from_env(a.key_env)
    try:
        a.question.encode("utf-8")
    except UnicodeEncodeError as exc:  # argv bytes that are not UTF-8 arrive as lone surrogates
        bad = a.question[exc.start:exc.end].encode("utf-8", "surrogateescape")
        raise CLIError(f"query: the question is not valid UTF-8 (byte 0x{bad[0]:02x} at character {exc.start}); "
                       f"pass it as UTF-8 text", EXIT_USAGE) from None
    if a.receipt_out:
        _check_out_file(a.receipt_out)
    trusted = a.trusted_source
    if trusted is not None and not all(name.strip() for name in trusted):
        raise CLIError("query: --trusted-source needs a non-empty source name", EXIT_USAGE)
    params = _read_params(a.params) if a.params else None
    if a.trust_policy is not None:
        import dataclasses

        from oscillink_core import LatticeParams

        params = dataclasses.replace(params or LatticeParams(), provenance=a.trust_policy)
    store = open_index(a.index, key=key)
    trusted_from = None
    if a.trusted_index:
        # the sources an earlier index held: checked like the queried index (hashes; the key's signature)
        trusted = set(trusted or ())
        trusted_from = []
        for target in a.trusted_index:
            earlier = open_index(target, key=key)
            names = earlier.sources()
            if not names:
                raise CLIError(f"query: --trusted-index {target}: its passages carry no source to trust",
                               EXIT_USAGE)
            trusted |= names
            trusted_from.append({"index_sha256": earlier.index_sha256, "sources": len(names)})
    out = run_query(store, a.question, k=a.k, fetch_k=a.fetch_k, params=params, sign_key=key,
                    trusted_sources=trusted, trusted_from=trusted_from)
    if a.receipt_out:
        _write_json_file(a.receipt_out, out.receipt)
    if a.json:
        # "k" is how many items there are; "k_requested" what -k asked for (more than the index holds,
        # or than --fetch-k retrieved, gives fewer)
        doc: dict = {"question": out.question, "k": len(out.items), "k_requested": out.k, "fetch_k": out.fetch_k,
                     "fetched": out.receipt["provenance"]["retrieval"]["fetched"], "items": out.items,
                     "receipt": out.receipt}
        if a.compare:
            doc["cosine"] = out.cosine
            if store.has_traps:
                doc["trap_counts"] = {"oscillink": sum(1 for i in out.items if i.get("trap")),
                                      "cosine": sum(1 for c in out.cosine if c.get("trap"))}
        _print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        _print_query(out, store, a.compare)
        if a.receipt_out:
            _print(f"receipt written to {a.receipt_out}")
    return EXIT_OK


# ------------------------------------------------------------------------------ verify
def cmd_verify(a: argparse.Namespace) -> int:
    from oscillink_core import canonical_json, strip_timings, validate_receipt, verify_receipt

    key = _key_from_env(a.key_env)
    path = Path(a.receipt)
    if not path.is_file():
        raise CLIError(f"{path}: no such receipt file", EXIT_USAGE)
    from .vectorstores import is_store_url

    if a.index is not None and not is_store_url(a.index) and not Path(a.index).is_dir():
        raise CLIError(f"--index {a.index}: no such index directory", EXIT_USAGE)
    results: list[tuple[str, bool | None, str]] = []

    def check(name: str, ok: bool | None, detail: str = "") -> None:
        results.append((name, ok, detail))
        status = {True: "ok  ", False: "FAIL", None: "skip"}[ok]
        _print(f"{status}  {name}" + (f": {detail}" if detail else ""))

    def no_constants(name: str):
        raise ValueError(f"non-finite number {name}: JSON has no NaN or Infinity")

    try:
        receipt = json.loads(path.read_bytes().decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        check("json", False, f"{path} is not valid JSON ({_one_line(exc)})")
        return _verdict(results)
    if isinstance(receipt, dict) and "format" not in receipt and isinstance(receipt.get("receipt"), dict):
        receipt = receipt["receipt"]  # what `oscillink query --json` prints
        _print(f"note  {path} is query --json output; checking the receipt nested under \"receipt\"")
    try:
        validate_receipt(receipt)
        check("schema", True, "matches the receipt JSON Schema")
    except ValueError as exc:
        check("schema", False, _one_line(exc))
        return _verdict(results)

    if key is not None:
        if "signature" not in receipt:
            check("signature", False, "the receipt is not signed")
        elif verify_receipt(receipt, key):
            check("signature", True, f"HMAC-SHA256 verifies under ${a.key_env}")
        else:
            check("signature", False, f"HMAC-SHA256 does not verify under ${a.key_env} (wrong key or receipt modified)")
    elif "signature" in receipt:
        check("signature", None, "the receipt is signed, but no --key-env was given: the signature was NOT checked")
    else:
        check("signature", None, "the receipt is unsigned")

    prov = receipt.get("provenance")
    if isinstance(prov, dict):
        from .store import sha256_bytes

        problems, checked = [], []
        if "candidate_set_hash" in prov:  # other writers' provenance blocks (integrations) may lack it
            checked.append("candidate_set_hash")
            if prov["candidate_set_hash"] != receipt["inputs"]["candidate_set_hash"]:
                problems.append("provenance.candidate_set_hash differs from inputs.candidate_set_hash")
        meta = receipt.get("meta")
        if isinstance(meta, dict):  # the published flat names must say the same as ours
            checked.append("meta")
            for name, where, ours in (("parent_ingest_sig", "provenance", prov.get("parent_ingest_sig")),
                                      ("candidate_set_hash", "inputs", receipt["inputs"]["candidate_set_hash"])):
                if name in meta and meta[name] != ours:
                    problems.append(f"meta.{name} differs from {where}.{name}")
        trust = prov.get("trust")
        if trust is not None:  # the recorded trusted set must be the one the core bound
            import hashlib

            from oscillink_core import canonical_json

            checked.append("trust")
            names = trust.get("trusted_sources") if isinstance(trust, dict) else None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                problems.append("provenance.trust has no list of trusted_sources (str)")
            elif (hashlib.sha256(canonical_json(sorted(set(names)))).hexdigest()
                  != receipt["inputs"].get("trusted_sources_sha256")):
                problems.append("provenance.trust.trusted_sources does not match inputs.trusted_sources_sha256")
        q = prov.get("question")
        if "question_sha256" in prov:
            checked.append("question_sha256")
            if not isinstance(q, str) or prov["question_sha256"] != sha256_bytes(q.encode("utf-8")):
                problems.append("provenance.question_sha256 does not match the question")
        if checked:
            check("provenance", not problems, "; ".join(problems) or f"internally consistent ({', '.join(checked)})")
        else:
            check("provenance", None, "present, but has no fields to cross-check")
    else:
        check("provenance", None, "the receipt has no provenance block")

    if a.index is not None:
        _verify_against_index(a, receipt, key, check, canonical_json, strip_timings)
    return _verdict(results, signed="signature" in receipt)


def _verify_against_index(a, receipt, key, check, canonical_json, strip_timings) -> None:
    from .store import reproduce
    from .vectorstores import open_index

    prov = receipt.get("provenance")
    if not isinstance(prov, dict):
        check("reproduce", False, "the receipt has no provenance, so its query cannot be re-run")
        return
    try:
        store = open_index(a.index, key=key)
    except ValueError as exc:
        check("index", False, _one_line(exc))
        return
    if prov.get("parent_ingest_sig") != store.index_sha256:
        check("index", False, f"parent_ingest_sig {str(prov.get('parent_ingest_sig'))[:16]}... is not this index "
                              f"({store.index_sha256[:16]}...): the receipt came from another index")
        return
    check("index", True, f"parent_ingest_sig matches {a.index} (sha256 {store.index_sha256[:16]}...)")
    try:
        out, report = reproduce(receipt, store)
    except ValueError as exc:
        check("reproduce", False, _one_line(exc))
        return
    check("question-embedding", report["embedding_ok"], f"re-embedding the question: {report['question_embedding']}")
    mine, theirs = strip_timings(out.receipt), strip_timings(receipt)
    if "meta" not in theirs:  # receipts written before the published names were added
        mine.pop("meta", None)
    if canonical_json(mine) == canonical_json(theirs):
        check("reproduce", True, "re-running the query gives the same receipt byte for byte "
                                 "(timings and signature aside)")
    else:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        check("reproduce", False, f"re-running the query gives a different receipt (fields differ: {', '.join(diff)})")


def _verdict(results, signed: bool = False) -> int:
    failed = [name for name, ok, _ in results if ok is False]
    if failed:
        _print(f"verification FAILED: {', '.join(failed)}")
        return EXIT_FAIL
    passed = [name for name, ok, _ in results if ok]
    skipped = [name for name, ok, _ in results if ok is None]
    checked = f"checked: {', '.join(passed)}" + (f"; not checked: {', '.join(skipped)}" if skipped else "")
    if signed and "signature" not in passed:
        _print(f"NOT VERIFIED: the receipt is signed but its signature was not checked (pass --key-env VAR); "
               f"{checked}")
        return EXIT_UNVERIFIED
    if "signature" not in passed and "reproduce" not in passed:
        _print(f"NOT VERIFIED: the receipt is unsigned and was not re-run against an index (pass --index DIR), "
               f"so only its form was checked; {checked}")
        return EXIT_UNVERIFIED
    _print(f"receipt verified ({checked})")
    return EXIT_OK


# ------------------------------------------------------------------------------ tune
def cmd_tune(a: argparse.Namespace) -> int:
    from oscillink_core import queries_from_jsonl, tune

    if (a.data is None) == (a.index is None):
        raise CLIError("tune: give either DATA.jsonl or --index DIR with --questions FILE", EXIT_USAGE)
    if a.index is not None and a.questions is None:
        raise CLIError("tune: --index needs --questions FILE (labelled questions)", EXIT_USAGE)
    out = Path(a.out)
    if not out.parent.exists():
        raise CLIError(f"--out {a.out}: directory {out.parent} does not exist", EXIT_USAGE)
    if a.index is not None:
        from .store import IndexStore, labelled_queries, load_questions

        store = IndexStore.open(a.index)
        try:
            queries = labelled_queries(store, load_questions(a.questions), fetch_k=a.fetch_k)
        except ValueError as exc:
            msg = _one_line(exc)
            raise CLIError(msg if msg.startswith(str(a.questions)) else f"{a.questions}: {msg}") from None
        source = f"{len(queries)} question(s) from {a.questions} over {a.index} (top {a.fetch_k} each)"
    else:
        from .embeddings import embed

        if not Path(a.data).is_file():
            raise CLIError(f"{a.data}: no such file", EXIT_USAGE)
        queries = queries_from_jsonl(a.data, embed=embed)
        source = f"{len(queries)} labelled quer{'y' if len(queries) == 1 else 'ies'} from {a.data}"
    folds = min(a.folds, len(queries))
    if folds < 2:
        raise CLIError(f"tune: cross-validation needs at least 2 labelled queries; got {len(queries)}")
    if not a.json:
        _err(f"tuning on {source}, {folds}-fold cross-validation ...")
    res = tune(queries, metric=a.metric, k=a.k, folds=folds, trap_weight=a.trap_weight, seed=a.seed,
               base=a.base, profile_path=out)
    if a.json:
        _print(json.dumps(res.to_profile(), indent=2, sort_keys=True))
    else:
        _print(res.summary())
        _print(f"profile written to {out} (use it with: oscillink query DIR QUESTION --params {out})")
    return EXIT_OK


# ------------------------------------------------------------------------------ warmup
def cmd_warmup(a: argparse.Namespace) -> int:
    from oscillink_core import warmup

    try:
        info = warmup(a.backend)
    except ValueError as exc:
        raise CLIError(f"warmup: {exc}", EXIT_USAGE) from None
    if info["backend"] == "numpy":
        _print("backend numpy: nothing to compile")
    else:
        _print(f"backend numba: {len(info['kernels'])} kernels ready in {info['seconds']:.2f} s "
               f"(compiled now or loaded from numba's cache)")
    return EXIT_OK


# ------------------------------------------------------------------------------ parser
def _int_at_least(lo: int, what: str):
    """argparse type: an int >= ``lo`` (one-line error otherwise)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


def build_parser() -> argparse.ArgumentParser:
    from oscillink_core import __version__

    from .ingest import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE

    p = _Parser(prog=PROG, description="oscillink-core: coherence reranking for RAG with verifiable receipts.")
    p.add_argument("--version", action="version", version=f"oscillink-core {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    i = sub.add_parser("ingest", help="chunk, embed and index documents",
                       description="Read .txt/.md/.jsonl/.csv files (or directories of them), chunk, embed with the "
                                   "packaged all-MiniLM-L6-v2 and write a FAISS index, chunk store and ingest receipt. "
                                   "Each passage keeps the name of its file; a .jsonl/.csv record may also carry a "
                                   "'source' field (e.g. the domain or collection it came from), which "
                                   "query --trusted-source then judges it by.")
    i.add_argument("paths", nargs="+", metavar="PATH", help="files or directories to ingest")
    i.add_argument("--index", metavar="DIR", help="index directory to write (a FAISS index folder)")
    i.add_argument("--store", metavar="chroma://HOST:PORT/NAME",
                   help="write into this collection of a running Chroma server instead of a folder (query and "
                        "verify then take the same URL in place of DIR)")
    i.add_argument("--chunk-size", type=_positive_int, default=DEFAULT_CHUNK_SIZE, metavar="N",
                   help=f"maximum chunk length in characters, cut at whitespace (default {DEFAULT_CHUNK_SIZE}, "
                        "about 200 tokens; the model reads at most 256 tokens and truncates the rest)")
    i.add_argument("--chunk-overlap", type=_nonneg_int, default=DEFAULT_CHUNK_OVERLAP, metavar="N",
                   help=f"characters of whole words shared by consecutive chunks (default {DEFAULT_CHUNK_OVERLAP})")
    i.add_argument("--text-field", default="text", metavar="NAME", help="text field / column of .jsonl/.csv")
    i.add_argument("--id-field", default="id", metavar="NAME",
                   help="id field / column of .jsonl/.csv (default id; missing ids become FILE:LINE)")
    i.add_argument("--encoding", default="utf-8", help="text encoding of the sources (default utf-8, strict)")
    i.add_argument("--overwrite", action="store_true", help="replace an existing index in DIR")
    i.add_argument("--key-env", metavar="VAR", help="sign the ingest receipt with HMAC-SHA256 using the key in $VAR")
    i.add_argument("--json", action="store_true", help="print the ingest receipt as JSON")
    i.add_argument("-q", "--quiet", action="store_true", help="no progress bar or log lines")
    i.set_defaults(func=cmd_ingest)

    q = sub.add_parser("query", help="retrieve, rerank and print the bundle with its receipt",
                       description="Embed the question, fetch the FAISS top --fetch-k, rerank with oscillink and print "
                                   "the top -k. The settle receipt carries provenance back to the index.")
    q.add_argument("index", metavar="DIR", help="index directory written by oscillink ingest, or the "
                                              "chroma://HOST:PORT/NAME given to ingest --store")
    q.add_argument("question")
    q.add_argument("-k", type=_positive_int, default=5, help="how many passages to return (default 5)")
    q.add_argument("--fetch-k", type=_positive_int, default=50, metavar="N",
                   help="candidates retrieved by cosine before reranking (default 50)")
    q.add_argument("--compare", action="store_true", help="show the plain cosine top-k beside the oscillink bundle")
    q.add_argument("--json", action="store_true", help="print JSON (items, receipt; cosine top-k with --compare)")
    q.add_argument("--params", metavar="PROFILE", help="a tuning profile JSON (default: the built-in parameters)")
    q.add_argument("--key-env", metavar="VAR", help="sign the receipt with HMAC-SHA256 using the key in $VAR; "
                                                    "the index must then carry an ingest receipt signed with it")
    q.add_argument("--receipt-out", metavar="FILE", help="write the settle receipt to FILE")
    q.add_argument("--trusted-source", action="append", metavar="NAME",
                   help="a source you trust (repeat for several): a passage from another known source that only "
                        "other such sources echo goes behind the rest (see --trust-policy). A passage's source "
                        "is its .jsonl/.csv record's 'source' field, else the file it was ingested from, named as "
                        "ingest names it (the file name, or FOLDER/PATH for a file found in a folder argument); "
                        "names are compared exactly")
    q.add_argument("--trusted-index", action="append", metavar="DIR",
                   help="trust every source an earlier index holds (repeatable; with --trusted-source, the "
                        "union): a source that appeared since then yields to the ones the store already had. "
                        "The earlier index is checked like DIR (and must be signed under --key-env)")
    q.add_argument("--trust-policy", choices=("corroboration", "trusted_first"), default=None,
                   help="how sources outside the trusted set are judged: 'corroboration' (default) keeps a passage "
                        "from a new source unless other new sources echo it and trusted ones do not; "
                        "'trusted_first' puts every passage of another known source behind the trusted ones")
    q.set_defaults(func=cmd_query)

    v = sub.add_parser("verify", help="check a receipt (schema, HMAC, reproduction)",
                       description="Validate a settle receipt against the JSON Schema, check its HMAC (--key-env) and, "
                                   "with --index, re-run its query and check the result is identical. Accepts "
                                   "query --json output too. Exit 0: verified (every check passed, and the HMAC "
                                   "verified or the re-run reproduced it); 1: a check failed; 2: bad usage; 3: not "
                                   "verified (a signature that was not checked, or an unsigned receipt not re-run).")
    v.add_argument("receipt", metavar="RECEIPT.json")
    v.add_argument("--index", metavar="DIR", help="re-run the query against this index and compare")
    v.add_argument("--key-env", metavar="VAR", help="check the HMAC with the key in $VAR (with --index, the "
                                                    "index's ingest receipt must be signed with it too)")
    v.set_defaults(func=cmd_verify)

    t = sub.add_parser("tune", help="fit lattice parameters on labelled queries (writes a profile)",
                       description="Fit lattice parameters by K-fold cross-validation (oscillink_core.tuning.tune) and "
                                   "write a profile JSON usable with query --params. Labelled data is either a JSONL "
                                   "of rows {query_id, query, id, text, label, trap} (one row per candidate, in "
                                   "first-stage order) or an index plus a questions file listing relevant and trap ids "
                                   "(the format of examples/data/demo_questions.json).")
    t.add_argument("data", nargs="?", metavar="DATA.jsonl", help="labelled candidate rows")
    t.add_argument("--index", metavar="DIR", help="tune on this index's retrieval (with --questions)")
    t.add_argument("--questions", metavar="FILE", help="questions with relevant / trap ids (with --index)")
    t.add_argument("--fetch-k", type=_positive_int, default=50, metavar="N", help="candidates per question (--index)")
    t.add_argument("--out", required=True, metavar="PROFILE.json", help="where to write the profile")
    t.add_argument("--metric", default="ndcg@10", help="ndcg@C, mrr@C, recall@C or p@1 (default ndcg@10)")
    t.add_argument("-k", type=_positive_int, default=10, help="bundle size scored by the trap share (default 10)")
    t.add_argument("--folds", type=_positive_int, default=5, help="cross-validation folds (default 5)")
    t.add_argument("--trap-weight", type=float, default=1.0, help="objective = metric - w * trap_share@k (default 1)")
    t.add_argument("--seed", type=_nonneg_int, default=0)
    t.add_argument("--base", metavar="PROFILE", help="starting point and baseline (default: built-in parameters)")
    t.add_argument("--json", action="store_true", help="print the profile JSON instead of a summary")
    t.set_defaults(func=cmd_tune)

    w = sub.add_parser("warmup", help="compile the numba kernels now (e.g. while building an image)",
                       description="Compile (or load from numba's cache) every compiled kernel, so that the first "
                                   "query does not pay for it. With the numpy backend there is nothing to do.")
    w.add_argument("--backend", default=None, help="auto (default; OSCILLINK_BACKEND), numba or numpy")
    w.set_defaults(func=cmd_warmup)
    from .service.cli import add_commands as add_service_commands  # serve, keys (issue 15)

    add_service_commands(sub)
    return p


def _quiet_model_loading() -> None:
    """No hub progress bars ("Loading weights") on stderr; our own ingest bar stays."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    tf = sys.modules.get("transformers")
    if tf is not None:  # already imported in this process (tests, notebooks)
        try:
            tf.utils.logging.disable_progress_bar()
        except Exception:  # pragma: no cover
            pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not report the broken pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests capture it)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (the console script exits with it)."""
    _quiet_model_loading()
    parser = build_parser()
    try:
        a = parser.parse_args(list(argv) if argv is not None else None)
        if a.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        code = a.func(a)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at interpreter exit
        return code
    except CLIError as exc:
        _err(f"{PROG}: error: {_one_line(exc)}" if not str(exc).startswith(PROG) else _one_line(exc))
        return exc.code
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except KeyboardInterrupt:  # clean-up (temporaries, the index lock) ran while this unwound
        _err(f"{PROG}: interrupted")
        if argv is None:  # the console script: skip the interpreter's teardown of torch & co. (seconds)
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(130)
        return 130
    except BrokenPipeError:  # the reader went away (`oscillink query ... | head -1`): not an error
        _silence_stdout()
        return EXIT_OK
    except (ValueError, OSError) as exc:
        _err(f"{PROG}: error: {_one_line(exc)}")
        return EXIT_FAIL
    except Exception as exc:  # never a traceback
        _err(f"{PROG}: error: unexpected {type(exc).__name__}: {_one_line(exc)}")
        return EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
