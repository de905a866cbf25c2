"""``oscillink ingest --store chroma://HOST:PORT/NAME`` against a real Chroma server (``chroma run`` on a
free loopback port): query and verify keep their provenance, edits on the server are caught.

Uses the packaged model on a 24-passage slice of the demo corpus (slow)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from oscillink_core.app.cli import main
from oscillink_core.app.store import hash_ingest_receipt
from oscillink_core.app.vectorstores import RECEIPT_METADATA_KEY, parse_store_url

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "data" / "demo_corpus.jsonl"
QUESTION = "How do honeybees tell other bees where flowers are?"
KEY_VAR = "OSCILLINK_TEST_KEY"

pytestmark = pytest.mark.slow


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    rows = [json.loads(line) for line in CORPUS.read_text("utf-8").splitlines()]
    rows = [r for r in rows if r["id"].startswith(("bees-", "moon-0"))]  # 24 passages, traps included
    src = tmp_path_factory.mktemp("src") / "tiny.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return src


@pytest.fixture(scope="module")
def faiss_dir(source, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("idx") / "index"
    assert main(["ingest", str(source), "--index", str(d), "-q"]) == 0
    return d


@pytest.fixture(autouse=True)
def _one_backend(monkeypatch):
    """One backend for the whole comparison (auto switches to numba once its kernels are loaded)."""
    monkeypatch.setenv("OSCILLINK_BACKEND", "numpy")


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_VAR, "test-key-123")
    return "test-key-123"


@pytest.fixture
def store_url(chroma_server, source, key) -> str:
    url = f"{chroma_server.url}/osc-{uuid.uuid4().hex[:10]}"
    assert main(["ingest", str(source), "--store", url, "--key-env", KEY_VAR, "-q"]) == 0
    return url


def collection(server, url):
    return server.client().get_collection(parse_store_url(url)[2], embedding_function=None)


def test_ingest_query_verify_on_a_chroma_server(capsys, chroma_server, store_url, faiss_dir, tmp_path, key):
    col = collection(chroma_server, store_url)
    ingest = json.loads(col.metadata[RECEIPT_METADATA_KEY])
    assert ingest["chunks"] == 24 == col.count() and ingest["index"]["type"] == "chroma"
    assert ingest["receipt_sha256"] == hash_ingest_receipt(ingest) and "signature" in ingest
    assert ingest["not_pinned"]  # what a hash cannot pin is said
    # the same chunk store as the FAISS folder's, byte for byte, as read back from the server
    faiss_ingest = json.loads((faiss_dir / "ingest_receipt.json").read_text("utf-8"))
    assert ingest["store"]["sha256"] == faiss_ingest["store"]["sha256"]

    out_file = tmp_path / "r.json"
    code, out, err = run(capsys, "query", store_url, QUESTION, "-k", "4", "--key-env", KEY_VAR, "--json",
                         "--receipt-out", out_file)
    assert code == 0, err
    receipt = json.loads(out_file.read_text("utf-8"))
    prov = receipt["provenance"]
    assert prov["parent_ingest_sig"] == ingest["index"]["sha256"] and prov["retrieval"]["index"] == "chroma"
    assert prov["served_store"]["store_url"] == store_url and prov["served_store"]["not_pinned"]
    assert len(prov["served_store"]["candidates_sha256"]) == 64
    # the stored vectors were used: the FAISS folder (same model, same chunks) gives the same bundle and state
    code, fout, err = run(capsys, "query", faiss_dir, QUESTION, "-k", "4", "--json")
    assert code == 0, err
    faiss_receipt = json.loads(fout)["receipt"]
    assert [b["id"] for b in receipt["bundle"]] == [b["id"] for b in faiss_receipt["bundle"]]
    assert receipt["state_sig"] == faiss_receipt["state_sig"]

    code, out, err = run(capsys, "verify", out_file, "--index", store_url, "--key-env", KEY_VAR)
    assert code == 0, out + err
    assert "ok    index" in out and "ok    reproduce" in out


def test_edits_on_the_server_are_refused(capsys, chroma_server, store_url, key):
    col = collection(chroma_server, store_url)
    victim = col.get(limit=1, include=["embeddings"])
    vid = victim["ids"][0]
    # vectors passed too: a documents-only update would make chromadb embed the text itself
    col.update(ids=[vid], documents=["a forged passage about honeybees dancing"],
               embeddings=[np.asarray(victim["embeddings"][0], dtype=np.float32).tolist()])
    code, _, err = run(capsys, "query", store_url, QUESTION, "--key-env", KEY_VAR)
    assert code == 1 and "store.sha256" in err and "Traceback" not in err


def test_vector_edit_and_unsigned_receipt_are_refused(capsys, chroma_server, store_url, source, key):
    col = collection(chroma_server, store_url)
    got = col.get(limit=1, include=["embeddings"])
    vec = np.asarray(got["embeddings"][0], dtype=np.float32)
    col.update(ids=[got["ids"][0]], embeddings=[(vec[::-1]).tolist()])
    code, _, err = run(capsys, "query", store_url, QUESTION)
    assert code == 1 and "index.sha256" in err
    # an unsigned store queried with a key: refused, not silently trusted
    url2 = store_url + "-u"
    assert main(["ingest", str(source), "--store", url2, "-q"]) == 0
    code, _, err = run(capsys, "query", url2, QUESTION, "--key-env", KEY_VAR)
    assert code == 1 and "not signed" in err
    # an existing collection is not replaced without --overwrite
    code, _, err = run(capsys, "ingest", source, "--store", url2, "-q")
    assert code == 1 and "--overwrite" in err
    assert main(["ingest", str(source), "--store", url2, "--overwrite", "-q"]) == 0


def test_bad_store_urls_are_clear(capsys, source):
    code, _, err = run(capsys, "ingest", source, "--store", "chroma://nohost/x")
    assert code == 1 and "chroma://HOST:PORT/COLLECTION" in err
    code, _, err = run(capsys, "ingest", source)
    assert code == 2 and "--store" in err
