"""The ``oscillink`` CLI: ingest -> query -> verify, bad input, determinism, chunking.

Tests marked ``slow`` use the real packaged model on a ~25-passage slice of the demo corpus;
the index is built once per module.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oscillink_core.app.cli import main
from oscillink_core.app.ingest import SourceError, chunk_text, read_sources
from oscillink_core.app.store import hash_ingest_receipt
from oscillink_core.receipts import canonical_json, strip_timings

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "data" / "demo_corpus.jsonl"
QUESTION = "How do honeybees tell other bees where flowers are?"
KEY_VAR = "OSCILLINK_TEST_KEY"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("oscillink")
    assert "Traceback" not in err


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def data_file(d: Path, part: str) -> Path:
    """The file the index's receipt names for ``part`` ("index" or "store")."""
    return d / json.loads((d / "ingest_receipt.json").read_text("utf-8"))[part]["file"]


# ------------------------------------------------------------------------------ chunking (fast)
def test_chunk_text_respects_size_and_overlap():
    text = " ".join(f"w{i:03d}" for i in range(200))  # 200 words of 4 chars
    chunks = chunk_text(text, chunk_size=50, chunk_overlap=10)
    assert all(len(c) <= 50 for c in chunks)
    assert chunks[0].split()[0] == "w000" and chunks[-1].split()[-1] == "w199"
    for a, b in zip(chunks, chunks[1:], strict=False):
        shared = [w for w in b.split() if w in a.split()]
        assert shared == b.split()[: len(shared)]  # overlap is a prefix of the next chunk
        assert 0 < len(" ".join(shared)) <= 10
    assert chunk_text(text, chunk_size=50, chunk_overlap=0)[1].split()[0] == "w010"


def test_chunk_text_cuts_overlong_words_and_rejects_bad_params():
    assert chunk_text("abcdefghij", chunk_size=4, chunk_overlap=0) == ["abcd", "efgh", "ij"]
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("x y", chunk_size=10, chunk_overlap=10)
    with pytest.raises(ValueError, match="chunk size"):
        chunk_text("x y", chunk_size=0, chunk_overlap=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10), min_size=1, max_size=60), st.integers(0, 30), st.integers(0, 40))
def test_chunk_text_covers_every_word_in_order(extras, size_extra, overlap):
    words = [f"{i}" + "x" * e for i, e in enumerate(extras)]  # unique words
    size = max(map(len, words)) + size_extra
    overlap = min(overlap, size - 1)
    chunks = chunk_text(" ".join(words), chunk_size=size, chunk_overlap=overlap)
    assert all(0 < len(c) <= size for c in chunks)
    rebuilt = chunks[0].split()
    for prev, cur in zip(chunks, chunks[1:], strict=False):
        p, c = prev.split(), cur.split()
        n = max(j for j in range(len(c)) if j == 0 or p[len(p) - j:] == c[:j])
        assert len(" ".join(c[:n])) <= overlap and n < len(p)
        rebuilt.extend(c[n:])
    assert rebuilt == words


# ------------------------------------------------------------------------------ reading (fast)
def test_read_sources_csv_jsonl_and_txt(tmp_path):
    (tmp_path / "a.csv").write_text("doc,body,trap\nx1,first passage,true\nx2,second passage,false\n", "utf-8")
    (tmp_path / "b.jsonl").write_text('{"id": "j1", "text": "json passage", "label": "q1"}\n\n'
                                      '{"text": "no id here"}\n{"id": "j3", "text": "  "}\n', "utf-8")
    (tmp_path / "c.md").write_text("# Title\n\nsome markdown text that is long enough to split " * 3, "utf-8")
    chunks, infos = read_sources([tmp_path / "a.csv"], text_field="body", id_field="doc")
    assert [(c.id, c.text, c.meta) for c in chunks] == [("x1", "first passage", {"trap": True}),
                                                       ("x2", "second passage", {"trap": False})]
    chunks, infos = read_sources([tmp_path / "b.jsonl", tmp_path / "c.md"], chunk_size=60, chunk_overlap=10)
    ids = [c.id for c in chunks]
    assert ids[:2] == ["j1", "b.jsonl:3"] and all(i.startswith("c.md#") for i in ids[2:]) and len(ids) > 3
    assert chunks[0].meta == {"label": "q1"}
    assert infos[0].skipped_empty == 1 and infos[0].records == 3


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", b"", "file is empty"),
    ("blank.md", b" \n\t\n", "no text"),
    ("latin1.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"), "cannot decode as utf-8"),
    ("bad.jsonl", b'{"id": 1, "text": "ok"}\n{not json}\n', ":2: not valid JSON"),
    ("notext.jsonl", b'{"id": 1, "body": "ok"}\n', "no 'text' field"),
    ("nocol.csv", b"id,body\n1,hello\n", "no 'text' column"),
    ("dup.jsonl", b'{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n', "duplicate chunk id"),
    ("data.pdf", b"%PDF-1.4", "unsupported file type"),
])
def test_read_sources_rejects_bad_input(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(SourceError, match=message):
        read_sources([tmp_path / name])


def test_read_sources_latin1_with_explicit_encoding(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    chunks, _ = read_sources([tmp_path / "latin1.txt"], encoding="latin-1")
    assert chunks[0].text == "caf\u00e9 cr\u00e8me"


def test_usage_errors_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "query")
    assert code == 2 and "required" in err
    assert_one_line_error(err)
    code, _, err = run(capsys, "verify", tmp_path / "missing.json")
    assert code == 2
    assert_one_line_error(err)
    code, _, err = run(capsys, "ingest", CORPUS, "--index", tmp_path / "i", "--chunk-size", "0")
    assert code == 2
    code, _, err = run(capsys, "ingest", CORPUS, "--index", tmp_path / "i", "--chunk-size", "50",
                       "--chunk-overlap", "50")
    assert code == 2 and "--chunk-overlap" in err
    code, _, err = run(capsys, "ingest", CORPUS, "--index", tmp_path / "i", "--key-env", "OSCILLINK_UNSET_VAR_X")
    assert code == 2 and "OSCILLINK_UNSET_VAR_X" in err
    assert not (tmp_path / "i").exists()


def test_verify_rejects_non_json_and_schema_violations(capsys, tmp_path):
    p = tmp_path / "r.json"
    p.write_text("{not json", "utf-8")
    code, out, _ = run(capsys, "verify", p)
    assert code == 1 and "FAIL  json" in out
    p.write_text(json.dumps({"format": "oscillink-core/receipt"}), "utf-8")
    code, out, _ = run(capsys, "verify", p)
    assert code == 1 and "FAIL  schema" in out


# ------------------------------------------------------------------------------ real model (slow)
@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    rows = [json.loads(line) for line in CORPUS.read_text("utf-8").splitlines()]
    rows = [r for r in rows if r["id"].startswith(("bees-", "moon-0"))]  # 24 passages, 2 topics, traps included
    src = tmp_path_factory.mktemp("src") / "tiny.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return src


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, tiny_corpus):
    src = tiny_corpus
    d = tmp_path_factory.mktemp("idx") / "index"
    assert main(["ingest", str(src), "--index", str(d), "-q"]) == 0
    return d


@pytest.fixture(scope="module")
def signed_index_dir(tiny_corpus, tmp_path_factory):
    """The same corpus, ingested with --key-env (query and verify with a key refuse unsigned indexes)."""
    import os

    d = tmp_path_factory.mktemp("idx") / "signed"
    os.environ[KEY_VAR] = "test-key-123"
    try:
        assert main(["ingest", str(tiny_corpus), "--index", str(d), "-q", "--key-env", KEY_VAR]) == 0
    finally:
        del os.environ[KEY_VAR]
    return d


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_VAR, "test-key-123")
    return "test-key-123"


@pytest.mark.slow
def test_ingest_receipt_records_what_was_built(index_dir):
    rec = json.loads((index_dir / "ingest_receipt.json").read_text("utf-8"))
    import hashlib

    from oscillink_core.app.embeddings import MODEL_NAME, model_fingerprint

    assert rec["chunks"] == 24 == rec["index"]["ntotal"] == rec["store"]["count"]
    assert rec["model"] == {"name": MODEL_NAME, "fingerprint": model_fingerprint(), "dim": 384, "normalized": True}
    assert rec["index"]["sha256"] == hashlib.sha256(data_file(index_dir, "index").read_bytes()).hexdigest()
    assert rec["store"]["sha256"] == hashlib.sha256(data_file(index_dir, "store").read_bytes()).hexdigest()
    assert rec["index"]["file"] == f"index.{rec['index']['sha256'][:16]}.faiss"
    assert sorted(p.name for p in index_dir.iterdir()) == sorted([rec["index"]["file"], rec["store"]["file"],
                                                                 "ingest_receipt.json"])
    assert rec["receipt_sha256"] == hash_ingest_receipt(rec)
    assert rec["chunking"]["chunk_size"] == 800 and rec["chunking"]["chunk_overlap"] == 100
    assert "signature" not in rec


@pytest.mark.slow
def test_round_trip_ingest_query_verify(capsys, signed_index_dir, tmp_path, key):
    index_dir = signed_index_dir
    out_file = tmp_path / "receipt.json"
    code, out, err = run(capsys, "query", index_dir, QUESTION, "-k", "4", "--key-env", KEY_VAR,
                         "--receipt-out", out_file)
    assert code == 0, err
    receipt = json.loads(out_file.read_text("utf-8"))
    ingest = json.loads((index_dir / "ingest_receipt.json").read_text("utf-8"))
    prov = receipt["provenance"]
    assert prov["parent_ingest_sig"] == ingest["index"]["sha256"]
    assert prov["candidate_set_hash"] == receipt["inputs"]["candidate_set_hash"]
    assert prov["question"] == QUESTION and prov["retrieval"]["fetched"] == 24
    assert len(receipt["bundle"]) == 4 and receipt["bundle"][0]["id"] in out
    code, out, err = run(capsys, "verify", out_file, "--index", index_dir, "--key-env", KEY_VAR)
    assert code == 0, out + err
    assert "ok    signature" in out and "ok    reproduce" in out and "receipt verified" in out


@pytest.mark.slow
@pytest.mark.parametrize("made_by", ["numpy", "numba"])
def test_verify_reruns_on_the_backend_the_receipt_records(capsys, index_dir, tmp_path, monkeypatch, made_by):
    from oscillink_core import available_backends

    if made_by not in available_backends():
        pytest.skip(f"{made_by} backend not available")
    f = tmp_path / "r.json"
    monkeypatch.setenv("OSCILLINK_BACKEND", made_by)
    assert run(capsys, "query", index_dir, QUESTION, "--receipt-out", f)[0] == 0
    assert json.loads(f.read_text("utf-8"))["solver"]["backend"] == made_by
    other = "numpy" if made_by == "numba" else "auto"
    monkeypatch.setenv("OSCILLINK_BACKEND", other)  # the verifier's default differs: verify must not care
    code, out, err = run(capsys, "verify", f, "--index", index_dir)
    assert code == 0 and "ok    reproduce" in out, out + err


def test_warmup_command(capsys, monkeypatch):
    from oscillink_core import available_backends

    code, out, err = run(capsys, "warmup")
    assert code == 0, err
    expected = "kernels ready" if "numba" in available_backends() else "nothing to compile"
    assert expected in out
    code, out, err = run(capsys, "warmup", "--backend", "numpy")
    assert code == 0 and "nothing to compile" in out
    code, out, err = run(capsys, "warmup", "--backend", "cuda")
    assert code == 2 and "backend must be" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_query_receipt_is_deterministic(capsys, index_dir, tmp_path):
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    for f in files:
        assert run(capsys, "query", index_dir, QUESTION, "--fetch-k", "20", "--receipt-out", f)[0] == 0
    a, b = (json.loads(f.read_text("utf-8")) for f in files)
    assert canonical_json(strip_timings(a)) == canonical_json(strip_timings(b))
    assert "timings_ms" in a and "signature" not in a


@pytest.mark.slow
def test_tampered_receipt_and_wrong_key_fail(capsys, index_dir, tmp_path, key, monkeypatch):
    f = tmp_path / "r.json"
    assert run(capsys, "query", index_dir, QUESTION, "--receipt-out", f)[0] == 0
    good = json.loads(f.read_text("utf-8"))
    from oscillink_core import sign_receipt  # a receipt of the unsigned index, signed as `query --key-env` would

    f.write_text(json.dumps(sign_receipt(good, key)), "utf-8")
    good = json.loads(f.read_text("utf-8"))
    # swap the first two bundle entries: still schema-valid, but no longer what was computed
    bad = json.loads(json.dumps(good))
    bad["bundle"][0]["id"], bad["bundle"][1]["id"] = bad["bundle"][1]["id"], bad["bundle"][0]["id"]
    f.write_text(json.dumps(bad), "utf-8")
    code, out, _ = run(capsys, "verify", f, "--key-env", KEY_VAR)
    assert code == 1 and "FAIL  signature" in out and "FAILED: signature" in out
    # without the key, re-running against the index still catches it
    unsigned = {k: v for k, v in bad.items() if k != "signature"}
    f.write_text(json.dumps(unsigned), "utf-8")
    code, out, _ = run(capsys, "verify", f, "--index", index_dir)
    assert code == 1 and "FAIL  reproduce" in out and "bundle" in out
    # the untouched receipt under the wrong key
    f.write_text(json.dumps(good), "utf-8")
    monkeypatch.setenv(KEY_VAR, "not-the-key")
    code, out, _ = run(capsys, "verify", f, "--key-env", KEY_VAR)
    assert code == 1 and "FAIL  signature" in out


@pytest.mark.slow
def test_json_and_compare_output(capsys, index_dir):
    code, out, _ = run(capsys, "query", index_dir, QUESTION, "-k", "3", "--json", "--compare")
    assert code == 0
    doc = json.loads(out)
    assert len(doc["items"]) == 3 and len(doc["cosine"]) == 3
    assert [i["id"] for i in doc["items"]] == [b["id"] for b in doc["receipt"]["bundle"]]
    cos = [c["cosine"] for c in doc["cosine"]]
    assert cos == sorted(cos, reverse=True)
    traps = {r["id"] for r in map(json.loads, CORPUS.read_text("utf-8").splitlines()) if r["trap"]}
    assert doc["trap_counts"] == {"oscillink": sum(i["id"] in traps for i in doc["items"]),
                                  "cosine": sum(c["id"] in traps for c in doc["cosine"])}
    code, out, _ = run(capsys, "query", index_dir, QUESTION, "-k", "3", "--compare")
    assert code == 0 and "cosine top-3" in out and "traps in top-k" in out


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupted_index_fails_cleanly(capsys, index_dir, tmp_path, damage):
    d = tmp_path / "copy"
    shutil.copytree(index_dir, d)
    f = data_file(d, "index")
    data = bytearray(f.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        f.write_bytes(bytes(data))
    elif damage == "truncate":
        f.write_bytes(bytes(data[: len(data) // 3]))
    else:
        f.unlink()
    before = snapshot(d)
    code, out, err = run(capsys, "query", d, QUESTION)
    assert code == 1 and out == ""
    assert_one_line_error(err)
    assert ("SHA-256 does not match" in err) if damage != "delete" else (f"no {f.name}" in err)
    assert snapshot(d) == before


@pytest.mark.slow
def test_index_from_another_model_or_dimension_is_refused(capsys, index_dir, tmp_path):
    for field, value, message in (("fingerprint", "0" * 64, "another embedding model"),
                                  ("dim", 768, "768-dimensional")):
        d = tmp_path / field
        shutil.copytree(index_dir, d)
        rec = json.loads((d / "ingest_receipt.json").read_text("utf-8"))
        rec["model"][field] = value
        rec["receipt_sha256"] = hash_ingest_receipt(rec)
        (d / "ingest_receipt.json").write_text(json.dumps(rec), "utf-8")
        code, _, err = run(capsys, "query", d, QUESTION)
        assert code == 1 and message in err
        assert_one_line_error(err)
    # an edited receipt whose hash was not updated is caught too
    rec["chunks"] = 3
    (d / "ingest_receipt.json").write_text(json.dumps(rec), "utf-8")
    code, _, err = run(capsys, "query", d, QUESTION)
    assert code == 1 and "receipt_sha256" in err


@pytest.mark.slow
def test_failed_ingest_leaves_existing_index_intact(capsys, index_dir, tmp_path):
    d = tmp_path / "keep"
    shutil.copytree(index_dir, d)
    before = snapshot(d)
    bad = tmp_path / "bad.txt"
    bad.write_bytes("\u00e9t\u00e9".encode("latin-1"))
    empty = tmp_path / "empty.md"
    empty.write_bytes(b"")
    for src in (bad, empty, tmp_path / "missing.txt"):
        code, out, err = run(capsys, "ingest", src, "--index", d, "--overwrite", "-q")
        assert code == 1
        assert_one_line_error(err)
    code, _, err = run(capsys, "ingest", CORPUS, "--index", d, "-q")  # exists, no --overwrite
    assert code == 1 and "--overwrite" in err
    assert snapshot(d) == before
    code, out, err = run(capsys, "query", d, QUESTION, "--json")
    assert code == 0


@pytest.mark.slow
def test_verify_against_another_index_fails(capsys, index_dir, tmp_path):
    f = tmp_path / "r.json"
    assert run(capsys, "query", index_dir, QUESTION, "--receipt-out", f)[0] == 0
    other = tmp_path / "other"
    src = tmp_path / "o.txt"
    src.write_text("A completely different corpus about tides and harbours.", "utf-8")
    assert run(capsys, "ingest", src, "--index", other, "-q")[0] == 0
    code, out, _ = run(capsys, "verify", f, "--index", other)
    assert code == 1 and "FAIL  index" in out and "another index" in out


@pytest.mark.slow
def test_tune_on_index_writes_a_profile_that_query_and_verify_use(capsys, index_dir, tmp_path):
    spec = json.loads((CORPUS.parent / "demo_questions.json").read_text("utf-8"))
    qs = tmp_path / "questions.json"
    qs.write_text(json.dumps({"questions": [q for q in spec["questions"] if q["id"] in ("q1", "q2")]}), "utf-8")
    prof = tmp_path / "profile.json"
    code, out, err = run(capsys, "tune", "--index", index_dir, "--questions", qs, "--out", prof, "-k", "5",
                         "--fetch-k", "20")
    assert code == 0, err
    profile = json.loads(prof.read_text("utf-8"))
    assert profile["format"] == "oscillink-core/profile" and profile["meta"]["n_queries"] == 2
    assert "held-out objective" in out and str(prof) in out
    f = tmp_path / "r.json"
    assert run(capsys, "query", index_dir, QUESTION, "--params", prof, "--receipt-out", f)[0] == 0
    receipt = json.loads(f.read_text("utf-8"))
    assert {k: receipt["params"][k] for k in profile["params"]} == profile["params"]
    code, out, _ = run(capsys, "verify", f, "--index", index_dir)
    assert code == 0 and "ok    reproduce" in out


def test_tune_usage_errors(capsys, tmp_path):
    code, _, err = run(capsys, "tune", "--out", tmp_path / "p.json")
    assert code == 2 and "either DATA.jsonl or --index" in err
    code, _, err = run(capsys, "tune", tmp_path / "missing.jsonl", "--out", tmp_path / "p.json")
    assert code == 2 and "no such file" in err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.slow
def test_tune_on_labelled_jsonl_prints_profile_json(capsys, tmp_path):
    rows = [json.loads(line) for line in CORPUS.read_text("utf-8").splitlines()]
    spec = {q["id"]: q for q in json.loads((CORPUS.parent / "demo_questions.json").read_text("utf-8"))["questions"]}
    data = tmp_path / "rows.jsonl"
    with data.open("w", encoding="utf-8") as f:
        for qid, prefix in (("q1", "bees-"), ("q2", "moon-")):
            for r in rows:
                if r["id"].startswith(prefix):
                    f.write(json.dumps({"query_id": qid, "query": spec[qid]["question"], "id": r["id"],
                                        "text": r["text"], "label": int(r["id"] in spec[qid]["relevant"]),
                                        "trap": r["trap"]}) + "\n")
    prof = tmp_path / "p.json"
    code, out, err = run(capsys, "tune", data, "--out", prof, "--folds", "2", "-k", "5", "--json")
    assert code == 0, err
    printed = json.loads(out)
    assert printed == json.loads(prof.read_text("utf-8"))
    assert printed["meta"]["n_queries"] == 2 and printed["meta"]["folds"] == 2


@pytest.mark.slow
def test_make_demo_runs_end_to_end(capsys, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("oscillink_demo", ROOT / "examples" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.main(["--index-dir", str(tmp_path / "demo-index")]) == 0
    out = capsys.readouterr().out
    assert out.count("cosine top-5") == 3 and "traps in top-k" in out
    assert "receipt verified" in out and "verification FAILED: signature" in out
    assert "fewer traps with oscillink on" in out
    # step 5, the real LLM: every variant's context is counted, and the totals add up
    per = re.findall(r"^  (cosine|oscillink|oscillink screen=drop) +context .*\((\d+) planted\)$", out, re.M)
    assert len(per) == 9
    total = re.search(r"^planted passages in the contexts \(15 context slots\): cosine (\d+), oscillink (\d+), "
                      r"oscillink screen=drop (\d+)$", out, re.M)
    assert total, out[-2000:]
    for name, got in zip(("cosine", "oscillink", "oscillink screen=drop"), total.groups(), strict=True):
        assert int(got) == sum(int(n) for v, n in per if v == name)
    verdicts = re.search(r"changed the verdict of the answer in (\d+) of 6 .* pairs: (\d+) to right, (\d+) from "
                         r"right; the wording alone in (\d+)\.", out)
    assert verdicts and int(verdicts[1]) >= int(verdicts[2]) + int(verdicts[3])
    assert int(verdicts[1]) + int(verdicts[4]) + out.count("the same answer as cosine") == 6


def test_verify_receipts_written_outside_the_cli(capsys, tmp_path, key):
    import numpy as np

    from oscillink_core import rerank, sign_receipt

    rng = np.random.default_rng(0)
    Y = rng.normal(size=(12, 8))
    receipt = dict(rerank(Y[0] + 0.1, Y, k=3, ids=[f"d{i}" for i in range(12)]).receipt)
    receipt["provenance"] = {"source": "an integration", "fetch_k": 12}
    f = tmp_path / "r.json"
    f.write_text(json.dumps(sign_receipt(receipt, key)), "utf-8")
    code, out, _ = run(capsys, "verify", f, "--key-env", KEY_VAR)
    assert code == 0 and "skip  provenance" in out and "ok    signature" in out
    receipt["provenance"]["candidate_set_hash"] = "0" * 64
    f.write_text(json.dumps(receipt), "utf-8")
    code, out, _ = run(capsys, "verify", f)
    assert code == 1 and "FAIL  provenance" in out and "candidate_set_hash" in out
