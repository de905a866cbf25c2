"""The offline reader LLM (oscillink_core.app.llm): prompt, answer cache, and the real model.

The slow tests load the real Gemma 3 270M and generate a couple of answers (no mocks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from oscillink_core.app import llm

ROOT = Path(__file__).resolve().parents[1]

# a made-up fact: the model cannot know it, so a right answer must come from the context
CONTEXT = ["The Varnholt Prize for glassblowing was founded in 1937 in the Portuguese city of Braga.",
           "Glassblowing is a technique that inflates molten glass into a bubble with a blowpipe."]
QUESTION = "In which city was the Varnholt Prize founded?"


def test_qa_prompt_holds_examples_context_and_question_and_ends_with_answer():
    p = llm.qa_prompt(QUESTION, CONTEXT)
    assert p.endswith(f"Context: {CONTEXT[0]}\n{CONTEXT[1]}\nQuestion: {QUESTION}\nAnswer:")
    assert p.count("Answer:") == len(llm.FEW_SHOT) + 1
    assert llm.qa_template().format(context="\n".join(CONTEXT), question=QUESTION) == p


def test_qa_prompt_flattens_newlines_inside_a_passage():
    p = llm.qa_prompt("Q?", ["line one\nline two"])
    assert "line one line two" in p


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_qa_prompt_rejects_an_empty_question(bad):
    with pytest.raises(ValueError, match="question"):
        llm.qa_prompt(bad, CONTEXT)


def test_answer_cache_round_trip_and_key(tmp_path):
    c = llm.AnswerCache(tmp_path)
    assert c.get("prompt", 24) is None
    c.put("prompt", 24, "Braga")
    assert c.get("prompt", 24) == "Braga"
    assert c.get("prompt", 25) is None  # max_new_tokens is part of the key
    assert c.get("prompt ", 24) is None
    (f,) = list(tmp_path.rglob("*.json"))
    assert json.loads(f.read_text())["answer"] == "Braga"
    assert not list(tmp_path.rglob("*.tmp"))


def test_answer_cache_ignores_a_corrupt_file(tmp_path):
    c = llm.AnswerCache(tmp_path)
    c.put("p", 8, "x")
    (f,) = list(tmp_path.rglob("*.json"))
    f.write_text("{not json")
    assert c.get("p", 8) is None


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OSCILLINK_LLM_CACHE", str(tmp_path / "answers"))
    assert llm.default_cache_dir() == tmp_path / "answers"
    monkeypatch.delenv("OSCILLINK_LLM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert llm.default_cache_dir() == tmp_path / "oscillink" / "llm_answers"


def test_generate_rejects_bad_arguments_before_loading():
    with pytest.raises(ValueError, match="prompt"):
        llm.generate("", 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        llm.generate("x", 0)


def test_e2e_scoring_rules():
    sys.path.insert(0, str(ROOT / "benchmarks" / "e2e"))
    import run as e2e

    assert e2e.exact_match("The Braga.", "braga") == 1.0
    assert e2e.token_f1("city of Braga", "Braga") == pytest.approx(0.5)
    assert e2e.contains("It was Braga, Portugal", "Braga") == 1.0
    q = "Which magazine was started first, Arthur's Magazine or First for Women?"
    wrong = "First for Women was started first."  # HaluEval style: a sentence that echoes the question
    assert e2e.follows_false("First for Women", "Arthur's Magazine", wrong, q) == 0.0  # no false-only token
    assert e2e.follows_false("1844", "1844", "1901", "When was it founded?") == 0.0
    assert e2e.follows_false("1901", "1844", "1901", "When was it founded?") == 1.0
    assert e2e.follows_false("Lisbon", "Braga", "It was founded in Lisbon.", QUESTION) == 1.0
    assert e2e.follows_false("Braga, not Lisbon", "Braga", "Lisbon", QUESTION) == 0.0  # covers both equally


@pytest.mark.slow
def test_real_model_answers_from_the_context_and_the_cache_serves_the_repeat(tmp_path):
    cache = llm.AnswerCache(tmp_path)
    first = llm.answer(QUESTION, CONTEXT, cache=cache)
    assert "Braga" in first
    assert (cache.hits, cache.misses) == (0, 1)
    again = llm.answer(QUESTION, CONTEXT, cache=cache)
    assert again == first and (cache.hits, cache.misses) == (1, 1)
    # a different context changes the prompt, so the model runs again, and reads the new fact
    moved = [CONTEXT[0].replace("Braga", "Coimbra"), CONTEXT[1]]
    assert "Coimbra" in llm.answer(QUESTION, moved, cache=cache)
    assert cache.misses == 2
    # greedy: the cached answer is what the model says for that prompt
    assert llm.generate(llm.qa_prompt(QUESTION, CONTEXT)) == first
