"""``oscillink query --trusted-source``: ingest records with a ``source`` field, query with a trust
policy (``--trust-policy trusted_first`` where one untrusted forum is the attacker; the default
``corroboration`` keeps a lone source's passages), verify the receipt (it records the trusted set
and re-runs with it), bad input.

The real packaged model over the demo corpus's Moon passages (three of them planted traps, which
the corpus here attributes to an untrusted forum).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oscillink_core.app.cli import main
from oscillink_core.app.store import chunk_source

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "data" / "demo_corpus.jsonl"
QUESTION = "What causes the phases of the Moon?"
TRUSTED = "textbook.example"
FORUM = "forum.example"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_chunk_source_prefers_the_record_field_then_the_file():
    assert chunk_source({"id": "a", "source": "web.jsonl", "meta": {"source": "example.org"}}) == "example.org"
    assert chunk_source({"id": "a", "source": "web.jsonl", "meta": {"source": 7}}) == "7"
    assert chunk_source({"id": "a", "source": "notes/a.txt", "meta": {"source": ""}}) == "notes/a.txt"
    assert chunk_source({"id": "a", "source": "notes/a.txt", "meta": {}}) == "notes/a.txt"
    assert chunk_source({"id": "a", "meta": {}}) is None


def test_trusted_source_usage_error(capsys, tmp_path):
    code, _, err = run(capsys, "query", tmp_path, QUESTION, "--trusted-source", "")
    assert code == 2 and "--trusted-source needs a non-empty source name" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1 and "Traceback" not in err
    code, _, err = run(capsys, "query", tmp_path, QUESTION, "--trusted-source")
    assert code == 2 and "expected one argument" in err


# ------------------------------------------------------------------------------ real model (slow)
@pytest.fixture(scope="module")
def moon_index(tmp_path_factory):
    """Moon passages: traps from the forum, moon-09 without a source field (judged by its file's
    name), the rest from the textbook; plus a plain-text file (judged by its file name)."""
    rows = [json.loads(line) for line in CORPUS.read_text("utf-8").splitlines()]
    rows = [r for r in rows if r["id"].startswith(("moon-", "bees-0"))]
    for r in rows:
        if r["id"] != "moon-09":
            r["source"] = FORUM if r["trap"] else TRUSTED
    src = tmp_path_factory.mktemp("src")
    (src / "moon.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    (src / "notes.txt").write_text("The Moon shows phases because we see different parts of its sunlit half "
                                   "as it orbits the Earth.", "utf-8")
    d = tmp_path_factory.mktemp("idx") / "index"
    assert main(["ingest", str(src / "moon.jsonl"), str(src / "notes.txt"), "--index", str(d), "-q"]) == 0
    return d, rows


def query_json(capsys, index, *extra) -> dict:
    code, out, err = run(capsys, "query", index, QUESTION, "-k", "4", "--fetch-k", "20", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.slow
def test_untrusted_passage_is_pushed_out_of_the_context(capsys, moon_index, tmp_path):
    index, rows = moon_index
    traps = {r["id"] for r in rows if r["trap"]}
    plain = query_json(capsys, index)
    assert traps & {it["id"] for it in plain["items"]}, "precondition: a planted passage is in the plain top 4"
    assert all("origin" not in it and "flags" not in it for it in plain["items"])
    assert "trust" not in plain["receipt"]["provenance"]
    assert "trusted_sources_sha256" not in plain["receipt"]["inputs"]

    out_file = tmp_path / "receipt.json"
    doc = query_json(capsys, index, "--trusted-source", TRUSTED, "--trusted-source", "notes.txt",
                     "--trust-policy", "trusted_first", "--receipt-out", out_file)
    ids = [it["id"] for it in doc["items"]]
    assert not traps & set(ids), ids
    for it in doc["items"]:
        assert it["origin"] in (TRUSTED, "notes.txt") and "trusted_source" in it["flags"], it
        assert it["action"] == "kept"
    receipt = doc["receipt"]
    assert receipt["provenance"]["trust"]["trusted_sources"] == sorted([TRUSTED, "notes.txt"])
    assert receipt["inputs"]["trusted_sources_count"] == 2
    kept_out = {s["id"]: s for s in receipt["screen"]["screened"] if "untrusted_source" in s["flags"]}
    assert traps & set(kept_out) and all(s["action"] == "demoted" for s in kept_out.values())
    # moon-09 has no source field of its own: it is judged by its file's name, which is not trusted
    assert "moon-09" not in ids and ("moon-09" in kept_out or "moon-09" not in {
        b["id"] for b in plain["receipt"]["bundle"]})
    assert receipt["state_sig"] != plain["receipt"]["state_sig"]

    # the receipt re-runs with the trusted set it records
    code, out, err = run(capsys, "verify", out_file, "--index", index)
    assert code == 0, out + err
    assert "trust" in out and "ok    reproduce" in out

    # a receipt whose recorded trusted set was edited no longer matches what the core bound
    edited = json.loads(out_file.read_text("utf-8"))
    edited["provenance"]["trust"]["trusted_sources"].append(FORUM)
    (tmp_path / "edited.json").write_text(json.dumps(edited), "utf-8")
    code, out, _ = run(capsys, "verify", tmp_path / "edited.json")
    assert code == 1 and "trusted_sources does not match inputs.trusted_sources_sha256" in out


@pytest.mark.slow
def test_text_output_names_sources_and_the_passages_kept_out(capsys, moon_index):
    index, rows = moon_index
    code, out, err = run(capsys, "query", index, QUESTION, "-k", "4", "--fetch-k", "20", "--trusted-source", TRUSTED,
                         "--trust-policy", "trusted_first")
    assert code == 0, err
    assert f"from {TRUSTED}  [trusted_source]" in out
    line = next(x for x in out.splitlines() if x.startswith("trusted sources:"))
    assert line.startswith(f"trusted sources: {TRUSTED}; ") and "kept out: " in line
    assert any(r["id"] in line for r in rows if r["trap"])


@pytest.mark.slow
def test_trusting_only_an_absent_source_changes_nothing_but_the_receipt(capsys, moon_index):
    index, _ = moon_index
    plain = query_json(capsys, index)
    doc = query_json(capsys, index, "--trusted-source", "nowhere.example")
    assert [it["id"] for it in doc["items"]] == [it["id"] for it in plain["items"]]
    assert {f for it in doc["items"] for f in it["flags"]} <= {"new_source"} | {
        f for it in plain["receipt"]["bundle"] for f in it["flags"]}
    assert doc["receipt"]["state_sig"] != plain["receipt"]["state_sig"]


# ------------------------------------------------------------------------------ trust by history
@pytest.mark.slow
def test_trusted_index_trusts_what_an_earlier_index_held(capsys, moon_index, tmp_path):
    """The store before the attack (the same corpus without the forum's passages) is an index of
    its own; ``--trusted-index`` trusts every source it holds, so the forum, new since then, yields.
    The receipt records the earlier index's SHA-256 and re-runs with the recorded set."""
    index, rows = moon_index
    traps = {r["id"] for r in rows if r["trap"]}
    src = tmp_path / "src"
    src.mkdir()
    (src / "moon.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if not r["trap"]), "utf-8")
    earlier = tmp_path / "earlier"
    assert main(["ingest", str(src / "moon.jsonl"), "--index", str(earlier), "-q"]) == 0
    capsys.readouterr()
    earlier_sha = json.loads((earlier / "ingest_receipt.json").read_text("utf-8"))["index"]["sha256"]

    out_file = tmp_path / "receipt.json"
    doc = query_json(capsys, index, "--trusted-index", earlier, "--trust-policy", "trusted_first",
                     "--receipt-out", out_file)
    ids = [it["id"] for it in doc["items"]]
    assert not traps & set(ids), ids
    trust = doc["receipt"]["provenance"]["trust"]
    assert trust["trusted_sources"] == sorted({TRUSTED, "moon.jsonl"})  # moon-09 is judged by its file
    assert trust["from_indexes"] == [{"index_sha256": earlier_sha, "sources": 2}]
    assert FORUM not in trust["trusted_sources"]
    assert {s["id"] for s in doc["receipt"]["screen"]["screened"] if "untrusted_source" in s["flags"]} & traps
    code, out, err = run(capsys, "verify", out_file, "--index", index)
    assert code == 0 and "ok    reproduce" in out, out + err

    # with --trusted-source too, the union is trusted
    both = query_json(capsys, index, "--trusted-index", earlier, "--trusted-source", "notes.txt")
    assert both["receipt"]["provenance"]["trust"]["trusted_sources"] == sorted({TRUSTED, "moon.jsonl", "notes.txt"})

    # an earlier index that is not there is a clear error, nothing written
    code, _, err = run(capsys, "query", index, QUESTION, "--trusted-index", tmp_path / "nope",
                       "--receipt-out", tmp_path / "r2.json")
    assert code != 0 and "nope" in err and "Traceback" not in err
    assert not (tmp_path / "r2.json").exists()


@pytest.mark.slow
def test_default_policy_keeps_a_lone_sources_passages_and_says_so(capsys, moon_index, tmp_path):
    """Under the default ``corroboration`` policy the forum's traps (one source, echoed by no other
    new source) keep their places and are flagged ``new_source``; the receipt records the policy
    and verifies; a bad policy is a usage error."""
    index, rows = moon_index
    traps = {r["id"] for r in rows if r["trap"]}
    plain = query_json(capsys, index)
    out_file = tmp_path / "receipt.json"
    doc = query_json(capsys, index, "--trusted-source", TRUSTED, "--receipt-out", out_file)
    assert [it["id"] for it in doc["items"]] == [it["id"] for it in plain["items"]]
    in_context = [it for it in doc["items"] if it["id"] in traps]
    assert in_context and all("new_source" in it["flags"] and it["origin"] == FORUM for it in in_context)
    assert doc["receipt"]["params"]["provenance"] == "corroboration"
    code, out, err = run(capsys, "verify", out_file, "--index", index)
    assert code == 0 and "ok    reproduce" in out, out + err
    code, _, err = run(capsys, "query", index, QUESTION, "--trusted-source", TRUSTED, "--trust-policy", "nobody")
    assert code == 2 and "invalid choice: 'nobody'" in err
