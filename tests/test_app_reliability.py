"""Reliability and security of the app layer (issue 14 items 1-6, 12, 13; issue 16's receipt names).

Behaviour that depends on the process (locks, kills, signals, pipes, argv bytes, stderr) is
tested through real subprocesses of the ``oscillink`` console script; the rest in-process.
Processes are synchronised with the fault-injection hook (``OSCILLINK_FAULT_AT``: the process
SIGSTOPs or SIGKILLs itself at a named step) and ``waitpid``, never with sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oscillink_core.app.cli import main
from oscillink_core.app.ingest import SourceError, read_sources
from oscillink_core.app.store import FAULT_ENV, IndexStore, hash_ingest_receipt, sha256_bytes

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "data" / "demo_corpus.jsonl"
QUESTION = "How do honeybees tell other bees where flowers are?"
KEY_VAR = "OSCILLINK_TEST_KEY"
KEY = "reliability-test-key"
OSCILLINK = Path(sys.executable).with_name("oscillink")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def env(**extra: str) -> dict:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
         "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    e.pop(FAULT_ENV, None)
    e.update(extra)
    return e


def cli(*argv, **kw) -> subprocess.CompletedProcess:
    """Run the real console script to completion."""
    return subprocess.run([str(OSCILLINK), *map(str, argv)], capture_output=True, env=kw.pop("env", env()),
                          timeout=600, **kw)


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def receipt_of(d: Path) -> dict:
    return json.loads((d / "ingest_receipt.json").read_text("utf-8"))


def expected_files(d: Path) -> list[str]:
    rec = receipt_of(d)
    return sorted(["ingest_receipt.json", rec["index"]["file"], rec["store"]["file"]])


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Two small corpora: bees+moon (24 passages) and a 3-passage one about tides."""
    rows = [json.loads(line) for line in CORPUS.read_text("utf-8").splitlines()]
    src = tmp_path_factory.mktemp("src")
    a = src / "tiny.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"].startswith(("bees-", "moon-0"))), "utf-8")
    b = src / "tides.jsonl"
    b.write_text("".join(json.dumps({"id": f"t{i}", "text": f"Tide note {i}: the harbour floods at spring tide."})
                         + "\n" for i in range(3)), "utf-8")
    return a, b


@pytest.fixture(scope="module")
def signed_index(corpora, tmp_path_factory):
    d = tmp_path_factory.mktemp("idx") / "signed"
    os.environ[KEY_VAR] = KEY
    try:
        assert main(["ingest", str(corpora[0]), "--index", str(d), "-q", "--key-env", KEY_VAR]) == 0
    finally:
        del os.environ[KEY_VAR]
    return d


@pytest.fixture(scope="module")
def plain_index(corpora, tmp_path_factory):
    d = tmp_path_factory.mktemp("idx") / "plain"
    assert main(["ingest", str(corpora[0]), "--index", str(d), "-q"]) == 0
    return d


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_VAR, KEY)
    return KEY


# ------------------------------------------------------------------------------ 1. downgrade
def forge(src: Path, dst: Path, *, keep_signature: bool) -> str:
    """Copy an index, replace one passage's text and re-hash everything an attacker can re-hash."""
    shutil.copytree(src, dst)
    rec = receipt_of(dst)
    store = dst / rec["store"]["file"]
    rows = [json.loads(line) for line in store.read_text("utf-8").splitlines()]
    forged = "FORGED: bees navigate by reading newspapers."
    rows[0]["text"] = forged
    data = b"".join(json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
                    for r in rows)
    store.write_bytes(data)
    rec["store"]["sha256"], rec["store"]["bytes"] = sha256_bytes(data), len(data)
    rec["receipt_sha256"] = hash_ingest_receipt(rec)
    if not keep_signature:
        del rec["signature"]
    (dst / "ingest_receipt.json").write_text(json.dumps(rec), "utf-8")
    return forged


@pytest.mark.slow
@pytest.mark.parametrize("keep_signature", [False, True], ids=["signature-deleted", "signature-stale"])
def test_a_key_refuses_an_unsigned_or_wrongly_signed_index(capsys, signed_index, tmp_path, key, keep_signature):
    d = tmp_path / "forged"
    forge(signed_index, d, keep_signature=keep_signature)
    code, out, err = run(capsys, "query", d, QUESTION, "--key-env", KEY_VAR)
    assert code == 1 and out == ""
    assert ("is not signed" in err) if not keep_signature else ("does not verify" in err)
    # a receipt from the genuine index, verified against the forged one with the key: refused
    f = tmp_path / "r.json"
    assert run(capsys, "query", signed_index, QUESTION, "--key-env", KEY_VAR, "--receipt-out", f)[0] == 0
    code, out, _ = run(capsys, "verify", f, "--index", d, "--key-env", KEY_VAR)
    assert code == 1 and "FAIL  index" in out and "receipt verified" not in out
    # the genuine index still passes with the key
    code, out, _ = run(capsys, "verify", f, "--index", signed_index, "--key-env", KEY_VAR)
    assert code == 0 and "receipt verified" in out


@pytest.mark.slow
def test_an_unsigned_index_is_refused_with_a_key_and_served_without(capsys, plain_index, key):
    code, _, err = run(capsys, "query", plain_index, QUESTION, "--key-env", KEY_VAR)
    assert code == 1 and "not signed" in err and "--key-env" in err
    assert run(capsys, "query", plain_index, QUESTION)[0] == 0


# ------------------------------------------------------------------------------ 2. verify verdicts
@pytest.mark.slow
def test_verify_without_key_does_not_call_a_signed_receipt_verified(capsys, signed_index, tmp_path, key):
    f = tmp_path / "r.json"
    assert run(capsys, "query", signed_index, QUESTION, "--key-env", KEY_VAR, "--receipt-out", f)[0] == 0
    receipt = json.loads(f.read_text("utf-8"))
    receipt["params"]["lamC"] = receipt["params"]["lamC"] * 2  # tampered, still schema-valid
    f.write_text(json.dumps(receipt), "utf-8")
    code, out, _ = run(capsys, "verify", f)
    assert code == 3 and "NOT VERIFIED" in out and "signature was not checked" in out
    assert "receipt verified" not in out
    code, out, _ = run(capsys, "verify", f, "--key-env", KEY_VAR)
    assert code == 1 and "FAIL  signature" in out
    # an unsigned receipt: exit 3 with nothing but the schema, 0 once the re-run reproduces it
    g = tmp_path / "u.json"
    assert run(capsys, "query", signed_index, QUESTION, "--receipt-out", g)[0] == 0
    code, out, _ = run(capsys, "verify", g)
    assert code == 3 and "unsigned" in out and "NOT VERIFIED" in out
    code, out, _ = run(capsys, "verify", g, "--index", signed_index)
    assert code == 0 and "receipt verified" in out


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_rejected(capsys, tmp_path, constant):
    from oscillink_core import rerank, validate_receipt

    rng = np.random.default_rng(0)
    Y = rng.normal(size=(10, 8))
    receipt = dict(rerank(Y[0], Y, k=3, ids=[f"d{i}" for i in range(10)]).receipt)
    validate_receipt(receipt)
    bad = json.loads(json.dumps(receipt))
    bad["bundle"][0]["score"] = float(constant.replace("Infinity", "inf"))
    with pytest.raises(ValueError, match="bundle/0/score.*not a finite number"):
        validate_receipt(bad)
    score = '"score": ' + json.dumps(receipt["bundle"][0]["score"])
    text = json.dumps(receipt)
    assert score in text
    text = text.replace(score, '"score": ' + constant, 1)
    f = tmp_path / "r.json"
    f.write_text(text, "utf-8")
    code, out, _ = run(capsys, "verify", f)
    assert code == 1 and "FAIL  json" in out and f"non-finite number {constant}" in out


# ------------------------------------------------------------------------------ 3. concurrent ingests
def stop_at(step: str, *argv) -> subprocess.Popen:
    """Start the console script and return once it has stopped itself (SIGSTOP) at ``step``."""
    p = subprocess.Popen([str(OSCILLINK), *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env(**{FAULT_ENV: f"{step}:stop"}))
    _, status = os.waitpid(p.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), f"process ended instead of stopping at {step}"
    return p


def resume(p: subprocess.Popen) -> tuple[int, str, str]:
    os.kill(p.pid, signal.SIGCONT)
    out, err = p.communicate(timeout=600)
    return p.returncode, out.decode(), err.decode()


@pytest.mark.slow
def test_two_ingests_into_one_new_folder_the_second_gets_a_clear_error(corpora, tmp_path):
    d = tmp_path / "new"
    first = stop_at("locked", "ingest", corpora[0], "--index", d, "-q")  # holds the lock, stopped
    second = cli("ingest", corpora[1], "--index", d, "-q")
    assert second.returncode == 1
    err = second.stderr.decode()
    assert "another oscillink ingest is writing this index" in err and len(err.strip().splitlines()) == 1
    code, _, err = resume(first)
    assert code == 0, err
    store = IndexStore.open(d)
    assert len(store.chunks) == 24 and store.chunks[0]["id"].startswith("bees-")
    assert sorted(p.name for p in d.iterdir()) == expected_files(d)


@pytest.mark.slow
def test_a_killed_ingest_leaves_no_stale_lock(corpora, tmp_path):
    d = tmp_path / "new"
    killed = cli("ingest", corpora[0], "--index", d, "-q", env=env(**{FAULT_ENV: "locked"}))
    assert killed.returncode == -signal.SIGKILL
    again = cli("ingest", corpora[1], "--index", d, "-q")
    assert again.returncode == 0, again.stderr.decode()
    assert len(IndexStore.open(d).chunks) == 3


# ------------------------------------------------------------------------------ 4. atomic commit
STEPS = ["locked", "embedding", "embedded", "store-written", "index-written", "receipt-written", "committed",
         "cleaned"]


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_kill_at_each_step_of_an_overwrite_leaves_a_whole_index(capsys, plain_index, corpora, tmp_path, step):
    d = tmp_path / "idx"
    shutil.copytree(plain_index, d)
    old = snapshot(d)
    p = cli("ingest", corpora[1], "--index", d, "--overwrite", "-q", env=env(**{FAULT_ENV: step}))
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()
    store = IndexStore.open(d)  # whole: every hash checks
    committed = STEPS.index(step) >= STEPS.index("committed")
    assert len(store.chunks) == (3 if committed else 24)
    if not committed:
        assert {k: v for k, v in snapshot(d).items() if k in old} == old  # the old files untouched
    code, out, err = run(capsys, "query", d, QUESTION, "--json")
    assert code == 0, err
    # the next ingest removes whatever the killed one left behind
    code, _, err = run(capsys, "ingest", corpora[1], "--index", d, "--overwrite", "-q")
    assert code == 0, err
    assert sorted(p.name for p in d.iterdir()) == expected_files(d)


@pytest.mark.slow
def test_stale_temporaries_are_removed_and_reported(capsys, plain_index, corpora, tmp_path):
    d = tmp_path / "idx"
    shutil.copytree(plain_index, d)
    (d / ".chunks.jsonl.0123456789ab.tmp").write_bytes(b"x" * 1000)
    (d / ".ingest_receipt.json.a1b2c3d4e5f6.tmp").write_bytes(b"{}")
    (d / "chunks.0123456789abcdef.jsonl").write_bytes(b"orphan\n")
    (d / "notes.txt").write_text("not ours", "utf-8")
    code, _, err = run(capsys, "ingest", corpora[1], "--index", d, "--overwrite")
    assert code == 0, err
    assert "removed 3 file(s) left by an interrupted ingest" in err
    assert sorted(p.name for p in d.iterdir()) == sorted(expected_files(d) + ["notes.txt"])


@pytest.mark.slow
def test_ctrl_c_during_embedding_stops_at_once_and_keeps_the_old_index(plain_index, corpora, tmp_path):
    """The hook blocks embedding forever and swallows KeyboardInterrupt where it runs (as a long
    torch call does); SIGINT must still end the process, with exit 130 and nothing changed."""
    d = tmp_path / "idx"
    shutil.copytree(plain_index, d)
    old = snapshot(d)
    # PYTHONFAULTHANDLER: should the process hang, SIGABRT makes it print every thread's stack.
    # The child gets Ctrl-C as a terminal gives it: a test run started in the background
    # (`make test &`) ignores SIGINT, the child would inherit that, and Python would then never
    # raise KeyboardInterrupt.
    p = subprocess.Popen([str(OSCILLINK), "ingest", str(corpora[1]), "--index", str(d), "--overwrite", "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env(**{FAULT_ENV: "embedding:hang", "PYTHONFAULTHANDLER": "1"}),
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in p.stderr:  # blocks until the process is inside the embedding step
        if b"oscillink-fault: hanging at embedding" in line:
            break
    p.send_signal(signal.SIGINT)
    try:
        # communicate drains both pipes, so a chatty child cannot block on a full pipe
        _, err_b = p.communicate(timeout=300)  # a bound for a hung test run, not a timing assertion
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGABRT)
        _, err_b = p.communicate()
        pytest.fail("SIGINT did not end the ingest; its threads:\n" + err_b.decode(errors="replace")[-6000:])
    err = err_b.decode()
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert snapshot(d) == old
    assert cli("ingest", corpora[1], "--index", d, "--overwrite", "-q").returncode == 0  # lock released


# ------------------------------------------------------------------------------ 5. relative paths
def test_same_file_name_in_two_subfolders(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / "c3" / sub).mkdir(parents=True)
        (tmp_path / "c3" / sub / "bees.txt").write_text(f"bees of folder {sub} dance", "utf-8")
    chunks, infos = read_sources([tmp_path / "c3"])
    assert [c.id for c in chunks] == ["c3/a/bees.txt#0", "c3/b/bees.txt#0"]
    assert [c.source for c in chunks] == ["c3/a/bees.txt", "c3/b/bees.txt"]
    assert [i.source for i in infos] == ["c3/a/bees.txt", "c3/b/bees.txt"]
    # a file argument keeps its plain name (ids of existing single-file indexes do not change)
    chunks, _ = read_sources([tmp_path / "c3" / "a" / "bees.txt"])
    assert chunks[0].id == "bees.txt#0"
    with pytest.raises(SourceError, match="pass their common folder"):
        read_sources([tmp_path / "c3" / "a" / "bees.txt", tmp_path / "c3" / "b" / "bees.txt"])


# ------------------------------------------------------------------------------ 6. strict CSV
@pytest.mark.parametrize("body, message", [
    ('1,"unclosed quote\n2,second row\n3,third row\n4,fourth row\n', r"rows.csv:2: malformed CSV.*never closed"),
    ("1,ok\n2,ragged,extra field\n3,ok\n", r"rows.csv:3: row has 3 field\(s\), the header has 2"),
    ("1,ok\n2\n", r"rows.csv:3: row has 1 field\(s\)"),
    ('1,ok\n2,a "stray" quote\n3,"x"y\n', r"rows.csv:4: malformed CSV"),
])
def test_malformed_csv_is_an_error_naming_the_line(tmp_path, body, message):
    f = tmp_path / "rows.csv"
    f.write_text("id,text\n" + body, "utf-8")
    with pytest.raises(SourceError, match=message):
        read_sources([f])


def test_csv_multiline_fields_are_kept_and_counted(tmp_path):
    f = tmp_path / "rows.csv"
    f.write_text('id,text\n1,"line one\nline two"\n2,plain\n', "utf-8")
    chunks, infos = read_sources([f])
    assert [(c.id, c.text) for c in chunks] == [("1", "line one line two"), ("2", "plain")]
    assert infos[0].multiline_records == 1 and infos[0].to_json()["multiline_records"] == 1


# ------------------------------------------------------------------------------ 12. CLI messages
@pytest.mark.slow
def test_non_utf8_question_gets_a_clear_error(plain_index):
    p = subprocess.run([os.fsencode(OSCILLINK), b"query", os.fsencode(plain_index), b"caf\xe9 bees?"],
                       capture_output=True, env=env(), timeout=600)
    err = p.stderr.decode()
    assert p.returncode == 2 and "not valid UTF-8 (byte 0xe9" in err and "TypeError" not in err
    assert len(err.strip().splitlines()) == 1 and p.stdout == b""


@pytest.mark.slow
def test_params_receipt_out_and_k_messages(capsys, plain_index, tmp_path):
    binary = tmp_path / "profile.bin"
    binary.write_bytes(bytes(range(256)))
    code, _, err = run(capsys, "query", plain_index, QUESTION, "--params", binary)
    assert code == 2 and str(binary) in err and "binary" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "query", plain_index, QUESTION, "--receipt-out", tmp_path)
    assert code == 2 and "is a directory" in err
    if Path("/sys").is_dir():  # a folder nobody can write to, even root
        code, out, err = run(capsys, "query", plain_index, QUESTION, "--receipt-out", "/sys/oscillink-r.json")
        assert code == 1 and "cannot write in /sys" in err and ".tmp" not in err and "Errno" not in err
    code, out, _ = run(capsys, "query", plain_index, QUESTION, "-k", "1000", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["k"] == len(doc["items"]) == 24 and doc["k_requested"] == 1000
    code, out, _ = run(capsys, "query", plain_index, QUESTION, "-k", "1000")
    assert code == 0 and "k = 24 (asked for 1000" in out


@pytest.mark.slow
def test_query_into_a_closed_pipe_exits_0_quietly(plain_index):
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write: `| head -1` at its most abrupt
    try:
        p = subprocess.run([str(OSCILLINK), "query", str(plain_index), QUESTION], stdout=w,
                           stderr=subprocess.PIPE, env=env(), timeout=600)
    finally:
        os.close(w)
    err = p.stderr.decode()
    assert p.returncode == 0 and "Broken pipe" not in err and err.strip() == "", err


@pytest.mark.slow
def test_tune_rejects_ids_not_in_the_index(capsys, plain_index, tmp_path):
    qs = tmp_path / "q.json"
    qs.write_text(json.dumps({"questions": [
        {"id": "q1", "question": QUESTION, "relevant": ["bees-01", "no-such-id"]},
        {"id": "q2", "question": "moon?", "relevant": ["moon-01"], "traps": ["ghost"]}]}), "utf-8")
    code, _, err = run(capsys, "tune", "--index", plain_index, "--questions", qs, "--out", tmp_path / "p.json")
    assert code == 1 and "'q1'" in err and "'no-such-id'" in err and str(qs) in err
    assert not (tmp_path / "p.json").exists()


# ------------------------------------------------------------------------------ 13. no loading bar
@pytest.mark.slow
def test_embedding_prints_no_loading_bar():
    code = "from oscillink_core.app.embeddings import embed; print(embed(['bees']).shape)"
    fresh = env()  # as a user's process starts: the CLI's main() (run in this test process) set this one
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        fresh.pop(var, None)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, env=fresh, timeout=600)
    assert p.returncode == 0 and b"(1, 384)" in p.stdout
    assert b"Loading weights" not in p.stderr and p.stderr.strip() == b"", p.stderr.decode()


# ------------------------------------------------------------------------------ issue 16: receipt names
@pytest.mark.slow
def test_published_names_and_query_json_accepted_by_verify(capsys, signed_index, corpora, tmp_path, key):
    ingest = receipt_of(signed_index)
    assert ingest["index_sha256"] == ingest["index"]["sha256"] and ingest["store_sha256"] == ingest["store"]["sha256"]
    assert ingest["embed_model"] == ingest["model"]["name"] and ingest["embed_dim"] == 384
    assert ingest["chunks"] == 24 and ingest["deterministic"] is True
    code, out, _ = run(capsys, "query", signed_index, QUESTION, "--json", "--key-env", KEY_VAR)
    assert code == 0
    f = tmp_path / "query.json"
    f.write_text(out, "utf-8")
    settle = json.loads(out)["receipt"]
    assert ingest["index_sha256"] == settle["meta"]["parent_ingest_sig"]  # the published auditor check
    assert settle["meta"]["candidate_set_hash"] == settle["inputs"]["candidate_set_hash"]
    code, out, _ = run(capsys, "verify", f, "--index", signed_index, "--key-env", KEY_VAR)
    assert code == 0 and "nested under \"receipt\"" in out and "ok    reproduce" in out
    # deterministic: the same sources, ingested again, give the same index bytes
    d = tmp_path / "again"
    assert run(capsys, "ingest", corpora[0], "--index", d, "-q")[0] == 0
    assert receipt_of(d)["index_sha256"] == ingest["index_sha256"]
