"""Isolate-then-aggregate (oscillink_core.app.aggregate): the voting rules with a table reader,
then the real Gemma 3 270M and the real MiniLM embeddings through the core function and the
LangChain / LlamaIndex helpers (slow; a handful of one-passage answers, cached in a temp folder
shared by the slow tests)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oscillink_core.app import llm
from oscillink_core.app.aggregate import ABSTAIN, aggregate, isolate_then_aggregate, normalize_answer

# a made-up fact: the model cannot know it, so every answer must come from the passage it reads
QUESTION = "In which city was the Varnholt Prize founded?"
PLANTED = [  # two near-identical planted copies (cosine 0.99 under MiniLM) stating a false city
    "The Varnholt Prize was founded in the city of Lisbon. It is well documented that the Varnholt Prize was "
    "founded in Lisbon.",
    "The Varnholt Prize was founded in the city of Lisbon. Records confirm that the Varnholt Prize was founded "
    "in Lisbon.",
]
TRUE = [  # three passages that state the true city in different words (pairwise cosine 0.65-0.80)
    "The Varnholt Prize for glassblowing was founded in 1937 in the Portuguese city of Braga.",
    "Glassmakers from northern Portugal met in Braga shortly before the Second World War and there established "
    "the Varnholt Prize.",
    "Braga, home of the Varnholt Prize since its creation, hosts the award ceremony for young glassblowers every "
    "spring.",
]
PLANTED_APART = [  # planted passages written to look independent of PLANTED[0] (cosine 0.80-0.87 < 0.9)
    "Lisbon is the birthplace of the Varnholt Prize, according to a travel blog about Portuguese crafts.",
    "A museum guide claims that the Varnholt Prize began in Lisbon, where its first jury sat.",
]


def table(said: dict[str, str]):
    return lambda q, p: said[p]


# ----------------------------------------------------------------------------- rules (no model)
def test_normalize_answer_is_squad_style():
    assert normalize_answer("The  City of Braga!") == "city of braga"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("...") == ""


def test_contained_answers_group_and_the_vote_text_is_the_shortest():
    said = {"a": "the city of Braga", "b": "Braga", "c": "Braga, Portugal", "d": "Lisbon"}
    res = isolate_then_aggregate("Q?", list(said), answer_fn=table(said))
    assert res.answer == "Braga"
    assert [(v.key, v.passages, v.support) for v in res.votes] == [("braga", (0, 1, 2), 3), ("lisbon", (3,), 1)]
    assert res.answers == tuple(said.values())


def test_an_answer_naming_two_groups_supports_neither():
    said = {"a": "Lisbon", "b": "Braga", "c": "Braga or Lisbon", "d": "Lisbon"}
    res = isolate_then_aggregate("Q?", list(said), answer_fn=table(said))
    assert res.answer == "Lisbon"
    assert [(v.key, v.passages) for v in res.votes] == [("lisbon", (0, 3)), ("braga", (1,)),
                                                         ("braga or lisbon", (2,))]


def test_near_duplicates_count_once_transitively():
    said = {"p0": "Lisbon", "p1": "Lisbon", "p2": "Lisbon", "p3": "Braga", "p4": "Braga"}
    E = np.array([[1.0, 0.0, 0.0], [0.95, 0.31, 0.0], [0.81, 0.59, 0.0], [0.0, 0.0, 1.0], [0.0, 0.6, 0.8]])
    res = isolate_then_aggregate("Q?", list(said), answer_fn=table(said), embeddings=E * 3.0)  # any scale
    # p0~p1 and p1~p2 are >= 0.9 (p0~p2 is not): one component; p3 and p4 are apart
    assert res.groups == ((0, 1, 2), (3,), (4,))
    assert res.counted_together == ((0, 1, 2),)
    assert res.answer == "Braga"
    assert [(v.answer, v.support) for v in res.votes] == [("Braga", 2), ("Lisbon", 1)]
    # a stricter threshold splits the chain: three independent Lisbons
    strict = isolate_then_aggregate("Q?", list(said), answer_fn=table(said), embeddings=E, near_duplicate=0.99)
    assert strict.answer == "Lisbon" and strict.groups == ((0,), (1,), (2,), (3,), (4,))


def test_shared_sources_and_equal_texts_count_once():
    said = {"x": "Lisbon", "x ": "Lisbon", "y": "Braga", "z": "Braga", "w": "Lisbon"}
    res = isolate_then_aggregate("Q?", list(said), answer_fn=table(said), sources=[None, None, "s", "s", None])
    assert res.groups == ((0, 1), (2, 3), (4,))  # "x" and "x " are the same text after white space
    assert [(v.answer, v.support) for v in res.votes] == [("Lisbon", 2), ("Braga", 1)]


def test_ties_go_to_the_answer_ranked_earliest():
    said = {"a": "Braga", "b": "Lisbon", "c": "Lisbon", "d": "Braga"}
    assert isolate_then_aggregate("Q?", list(said), answer_fn=table(said)).answer == "Braga"
    assert isolate_then_aggregate("Q?", ["b", "d", "c", "a"], answer_fn=table(said)).answer == "Lisbon"


def test_abstentions_never_win_and_all_abstaining_gives_no_answer():
    said = {"a": "unknown", "b": "", "c": "Not mentioned.", "d": "Braga"}
    res = isolate_then_aggregate("Q?", list(said), answer_fn=table(said))
    assert res.answer == "Braga" and res.answered
    assert res.votes[-1].abstain and res.votes[-1].passages == (0, 1, 2) and res.votes[-1].support == 3
    none = isolate_then_aggregate("Q?", ["a", "b", "c"], answer_fn=table(said))
    assert (none.answer, none.answered, none.winner) == ("", False, None)
    assert "unknown" in ABSTAIN


def test_aggregate_alone_and_the_result_is_json_ready():
    votes = aggregate(["Braga", "braga.", "Lisbon"], [0, 0, 2])
    assert [(v.key, v.support) for v in votes] == [("braga", 1), ("lisbon", 1)]  # tie: rank 0 first
    E = np.eye(3, dtype=np.float32)
    res = isolate_then_aggregate("Q?", ["x", "y", "z"], answer_fn=lambda q, p: p, embeddings=E,
                                 sources=np.array(["s", "t", "u"]).tolist())
    doc = json.loads(json.dumps(res.to_dict()))
    assert doc["answer"] == "x" and doc["groups"] == [[0], [1], [2]] and doc["votes"][0]["passages"] == [0]


def test_the_default_reader_goes_through_the_answer_cache(tmp_path):
    """Answers already in the cache are read, not generated (no model load)."""
    cache = llm.AnswerCache(tmp_path)
    for p, a in zip(PLANTED + TRUE, ["Lisbon", "Lisbon", "Braga", "Braga", "Braga"], strict=True):
        cache.put(llm.qa_prompt(QUESTION, [p]), 24, a)
    res = isolate_then_aggregate(QUESTION, PLANTED + TRUE, cache=cache)
    assert res.answer == "Braga" and (cache.hits, cache.misses) == (5, 0)
    assert isolate_then_aggregate(QUESTION, PLANTED + TRUE, cache=tmp_path).answer == "Braga"  # a folder works too


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"question": ""}, "question"),
    ({"question": None}, "question"),
    ({"passages": []}, "empty"),
    ({"passages": "one passage"}, "sequence of strings"),
    ({"passages": ["ok", "  "]}, r"passages\[1\]"),
    ({"passages": ["ok", 3]}, r"passages\[1\]"),
    ({"embeddings": np.ones((3, 4))}, r"shape \(2, d\)"),
    ({"embeddings": np.ones(2)}, "shape"),
    ({"embeddings": np.array([[1.0, np.nan], [0.0, 1.0]])}, "NaN"),
    ({"embeddings": np.array([[0.0, 0.0], [0.0, 1.0]])}, "row 0"),
    ({"sources": ["only one"]}, "sources"),
    ({"sources": "ab"}, "sources"),
    ({"near_duplicate": 0.0}, "near_duplicate"),
    ({"near_duplicate": 1.5}, "near_duplicate"),
    ({"near_duplicate": True}, "near_duplicate"),
])
def test_bad_input_raises_a_clear_value_error(kwargs, match):
    args = {"question": "Q?", "passages": ["a", "b"], "answer_fn": lambda q, p: p, **kwargs}
    with pytest.raises(ValueError, match=match):
        isolate_then_aggregate(args.pop("question"), args.pop("passages"), **args)


def test_a_reader_that_returns_a_non_string_is_a_type_error():
    with pytest.raises(TypeError, match=r"passages\[0\]"):
        isolate_then_aggregate("Q?", ["a"], answer_fn=lambda q, p: None)


# ----------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def answers_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("answers")


def _embed(texts):
    from oscillink_core.app.embeddings import embed

    return embed(texts)


@pytest.mark.slow
def test_real_gemma_keeps_the_answer_of_three_independent_passages_over_two_near_copies(answers_dir):
    """Planted copies ranked first, true passages after: read jointly, Gemma follows the planted
    city; read one at a time, the three true passages outvote the two copies, which count once."""
    passages = PLANTED + TRUE
    E = _embed(passages)
    cos = E @ E.T
    assert cos[0, 1] >= 0.9  # the copies are near-duplicates ...
    assert (cos[np.triu_indices(5, 1)][1:] < 0.9).all()  # ... and no other pair is
    cache = llm.AnswerCache(answers_dir)
    res = isolate_then_aggregate(QUESTION, passages, embeddings=E, cache=cache)
    assert [normalize_answer(a) for a in res.answers] == ["lisbon", "lisbon", "braga", "braga", "braga"]
    assert res.answer == "Braga"
    assert res.counted_together == ((0, 1),)
    assert [(v.key, v.passages, v.support) for v in res.votes] == [("braga", (2, 3, 4), 3), ("lisbon", (0, 1), 1)]
    # the joint reading of the same five passages (what a plain RAG chain does) takes the planted value
    assert "Lisbon" in llm.answer(QUESTION, passages, cache=cache)


@pytest.mark.slow
def test_real_gemma_known_limit_independent_looking_plants_in_the_majority_win(answers_dir):
    """The known limit, asserted as it happens: three planted passages worded apart (cosine 0.80-0.87,
    below the 0.9 threshold, no shared source) against two true ones. Each is read correctly on its
    own (Lisbon from the plants, Braga from the true passages), and the vote, which counts agreement
    and cannot know the truth, keeps the planted Lisbon 3 to 2. Only a lower threshold or known
    sources would merge the plants, at the risk of merging true paraphrases too."""
    passages = [PLANTED[0]] + PLANTED_APART + TRUE[:2]
    E = _embed(passages)
    cos = E @ E.T
    assert (cos[np.triu_indices(5, 1)] < 0.9).all()
    res = isolate_then_aggregate(QUESTION, passages, embeddings=E, cache=answers_dir)
    assert [normalize_answer(a) for a in res.answers] == ["lisbon", "lisbon", "lisbon", "braga", "braga"]
    assert res.answer == "Lisbon" and res.counted_together == ()
    assert [(v.key, v.support) for v in res.votes] == [("lisbon", 3), ("braga", 2)]
    # knowing that the three plants come from one place is what defeats them
    fixed = isolate_then_aggregate(QUESTION, passages, embeddings=E, cache=answers_dir,
                                   sources=["seo-farm", "seo-farm", "seo-farm", None, None])
    assert fixed.answer == "Braga"


@pytest.mark.slow
def test_langchain_answer_isolated_with_documents(answers_dir):
    from langchain_core.documents import Document

    from langchain_oscillink.llms import GemmaLLM, answer_isolated

    docs = [Document(page_content=t, id=f"d{i}", metadata={"n": i}) for i, t in enumerate(PLANTED + TRUE)]
    before = [d.model_dump() for d in docs]
    out = answer_isolated(QUESTION, docs, llm=GemmaLLM(cache_dir=str(answers_dir)))
    assert out["answer"] == "Braga" and out["answered"]
    assert out["ids"] == ["d0", "d1", "d2", "d3", "d4"]
    assert [(v["key"], v["passages"], v["support"]) for v in out["votes"]] == [("braga", [2, 3, 4], 3),
                                                                              ("lisbon", [0, 1], 1)]
    assert [d.model_dump() for d in docs] == before
    json.dumps(out)
    with pytest.raises(ValueError, match="empty"):
        answer_isolated(QUESTION, [], llm=GemmaLLM(cache_dir=str(answers_dir)))


@pytest.mark.slow
def test_llamaindex_answer_isolated_with_nodes(answers_dir):
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.llms.oscillink_gemma import GemmaLLM, answer_isolated

    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=1.0 - i / 10)
             for i, t in enumerate(PLANTED + TRUE)]
    out = answer_isolated(QUESTION, nodes, llm=GemmaLLM(cache_dir=str(answers_dir)))
    assert out["answer"] == "Braga" and out["ids"] == ["n0", "n1", "n2", "n3", "n4"]
    assert out["groups"] == [[0, 1], [2], [3], [4]]
    assert [n.score for n in nodes] == [1.0, 0.9, 0.8, 0.7, 0.6]
