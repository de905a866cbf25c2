"""The LlamaIndex example runs offline over the bundled corpus and keeps receipts out of the prompt."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llamaindex_query_engine.py"


def load_example():
    spec = importlib.util.spec_from_file_location("li_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_runs_over_the_demo_corpus(minilm, li_settings, capsys):
    li_settings(embed_model=minilm)  # the example replaces Settings; the fixture restores them
    example = load_example()
    assert example.main(["--faiss", "--aquery", "--top-n", "3", "--sign-key", "k", "--llm", "mock"]) == 0
    out = capsys.readouterr().out
    assert out.count("receipt in the LLM prompt: False") == 3
    assert out.count("HMAC-SHA256 valid=True") == 3
    assert out.count("vector_store from FaissVectorStore, query vector from embedded") == 3
    for qid in ("q1", "q2", "q3"):
        assert f"[{qid}]" in out
    assert "Context information is below." in out and "state_sig" in out
