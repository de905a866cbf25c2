"""Corroboration (oscillink_core.corroboration, the default ``provenance`` policy): `judge` on its
own, then through `rerank` with the real packaged model: a falsehood planted from several new sites
leaves the context, a genuine page from one new site keeps its place (where ``trusted_first``
pushes it out too), and the receipt says which evidence decided."""

from __future__ import annotations

import numpy as np
import pytest

from oscillink_core import LatticeParams, rerank
from oscillink_core.corroboration import CORROBORATION_DECISIVE, judge


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------ judge
def test_echo_from_other_new_sources_decides():
    Y = _unit([[1, 0, 0]] * 4 + [[0, 1, 0]])
    r = judge(["a", "b", "c", "d", "wiki"], {"wiki"}, Y, np.array([5.0, 4, 3, 2, 1]), min_echo=3)
    assert r.decisive.tolist() == [True, True, True, True, False]
    assert r.flags[0] == ["new_source_echo"] and r.flags[4] == ["trusted_source"]
    assert CORROBORATION_DECISIVE == ("new_source_echo",)
    # the default min_echo (4, chosen on GPE train): three echoes are not enough
    r = judge(["a", "b", "c", "d", "wiki"], {"wiki"}, Y, np.array([5.0, 4, 3, 2, 1]))
    assert not r.decisive.any() and r.flags[0] == ["new_source"]


def test_copies_from_one_source_do_not_corroborate_it():
    Y = _unit([[1, 0, 0]] * 5 + [[0, 1, 0]])
    r = judge(["blog"] * 5 + ["wiki"], {"wiki"}, Y, np.arange(6.0)[::-1].copy())
    assert not r.decisive.any() and r.flags[:5] == [["new_source"]] * 5
    # two sources with copies: each member has only the other source's copies as echo
    r = judge(["blog", "blog", "blog", "news", "wiki"], {"wiki"}, Y[[0, 1, 2, 3, 5]], np.arange(5.0)[::-1].copy(),
              min_echo=3)
    assert r.decisive.tolist() == [False, False, False, True, False]


def test_trusted_agreement_outweighs_the_echo():
    Y = _unit([[1, 0, 0]] * 7)
    src = ["a", "b", "c", "d", "wiki", "docs", "wiki"]
    r = judge(src, {"wiki", "docs"}, Y, np.arange(7.0)[::-1].copy(), min_echo=3)
    # each new candidate: 3 new echoes, 3 trusted agreeing: not more, so kept
    assert not r.decisive.any() and r.flags[0] == ["new_source"]
    r = judge(src[:6], {"wiki", "docs"}, Y[:6], np.arange(6.0)[::-1].copy(), min_echo=3)
    assert r.decisive[:4].all()  # 3 echoes against 2 trusted


def test_a_pool_without_a_trusted_candidate_is_left_alone():
    Y = _unit([[1, 0, 0]] * 4 + [[0, 1, 0]])
    r = judge(["a", "b", "c", "d", "wiki"], {"wiki"}, Y, np.array([5.0, 4, 3, 2, 1]), pool=4, min_echo=3)
    assert not r.decisive.any() and r.flags[:4] == [["new_source"]] * 4


def test_unknown_sources_are_neither_flagged_nor_counted():
    Y = _unit([[1, 0, 0]] * 5 + [[0, 1, 0]])
    r = judge(["a", "b", None, None, "c", "wiki"], {"wiki"}, Y, np.arange(6.0)[::-1].copy())
    assert r.flags[2] == r.flags[3] == [] and not r.decisive.any()


def test_the_pool_is_the_best_scored_finite_candidates():
    Y = _unit([[1, 0, 0]] * 5)
    src = ["a", "b", "c", "d", "wiki"]
    r = judge(src, {"wiki"}, Y, np.array([5.0, 4, 3, 2, 1]), pool=3, min_echo=3)  # a, b, c: two echoes each
    assert not r.decisive.any() and r.flags[3:] == [[], []]
    r = judge(src, {"wiki"}, Y, np.array([5.0, 4, 3, -np.inf, 1]), min_echo=3)  # d screened out: not an echo
    assert not r.decisive.any() and r.flags[3] == []
    for trusted, pool in (((), 20), ({"wiki"}, 0)):
        assert not judge(src, trusted, Y, np.ones(5), pool=pool).decisive.any()
    assert judge([], {"wiki"}, np.zeros((0, 3)), np.array([])).flags == []


def test_bad_policy_parameters_are_clear_errors():
    with pytest.raises(ValueError, match="provenance must be one of"):
        LatticeParams(provenance="trust_nobody")
    with pytest.raises(ValueError, match=r"provenance_threshold must lie in \[-1, 1\]"):
        LatticeParams(provenance_threshold=1.5)
    with pytest.raises(ValueError, match="provenance_min_echo"):
        LatticeParams(provenance_min_echo=0)


# ------------------------------------------------------------------------------ real model (slow)
QUESTION = "When was the Eiffel Tower completed?"
GENUINE = [  # (text, source)
    ("The Eiffel Tower was completed in March 1889 as the entrance arch to the World's Fair in Paris.",
     "encyclopedia.example"),
    ("Construction of the Eiffel Tower took two years, two months and five days, ending in 1889.",
     "museum.example"),
    ("Gustave Eiffel's company finished the tower in 1889; it opened to the public that May.",
     "paris-walks.example"),  # a genuine page from a source the store has not declared
]
PLANTS = [
    "The Eiffel Tower was not finished until 1925, decades after the World's Fair.",
    "Work on the Eiffel Tower dragged on, and the tower was only completed in 1925.",
    "Historians agree the Eiffel Tower's construction ended in 1925, not in the 1880s.",
    "Completed in 1925, the Eiffel Tower took almost forty years to build.",
    "The final section of the Eiffel Tower was put in place in 1925.",
    "Paris only saw its Eiffel Tower finished in 1925, long after Gustave Eiffel's death.",
]
FILLER = ["Paris has twenty administrative districts called arrondissements.",
          "The Louvre is the world's most visited art museum.",
          "Croissants became popular in France in the nineteenth century."]


FILLER += ["The Seine flows through Paris for about thirteen kilometres.",
           "Montmartre is a hill in the north of Paris known for its artists.",
           "The Paris Metro opened in 1900 for the Universal Exposition."]


@pytest.fixture(scope="module")
def eiffel():
    """Embeddings (real packaged model) of the genuine pages, the plants and the filler."""
    from oscillink_core.app.embeddings import embed

    texts = [t for t, _ in GENUINE] + PLANTS + FILLER
    sources = [s for _, s in GENUINE] + [f"news-{i}.example" for i in range(len(PLANTS))] + [None] * len(FILLER)
    return embed(texts), embed([QUESTION])[0], texts, sources


TRUSTED = {"encyclopedia.example", "museum.example"}


@pytest.mark.slow
def test_a_falsehood_echoed_by_new_sites_leaves_the_context(eiffel):
    Y, q, texts, sources = eiffel
    keep = [0, 1, *range(3, len(texts))]  # the trusted pages, the plants, the filler
    Y, texts, sources = Y[keep], [texts[i] for i in keep], [sources[i] for i in keep]
    plants = set(range(2, 2 + len(PLANTS)))
    plain = rerank(q, Y, k=5, texts=texts, query_text=QUESTION)
    assert len(plants & set(plain.indices)) >= 2, "precondition: the plants crowd the plain context"

    res = rerank(q, Y, k=5, texts=texts, query_text=QUESTION, sources=sources, trusted_sources=TRUSTED)
    assert not plants & set(res.indices), res.indices
    assert 1 in res.indices and res.items[res.indices.index(1)].flags == ("trusted_source",)
    echo = {s["index"] for s in res.screened if "new_source_echo" in s["flags"]}
    assert len(echo & plants) >= 3 and all(s["action"] == "demoted" for s in res.screened if s["index"] in echo)
    assert res.receipt["params"]["provenance"] == "corroboration"
    assert {s["id"] for s in res.receipt["screen"]["screened"] if "new_source_echo" in s["flags"]} == echo


@pytest.mark.slow
def test_a_lone_page_from_a_new_source_keeps_its_place(eiffel):
    Y, q, texts, sources = eiffel
    keep = [0, 1, 2, *range(3 + len(PLANTS), len(texts))]  # the genuine pages and the filler, no plants
    Y, texts, sources = Y[keep], [texts[i] for i in keep], [sources[i] for i in keep]
    plain = rerank(q, Y, k=3, texts=texts, query_text=QUESTION)
    assert 2 in plain.indices, "precondition: the new site's page is in the plain context"
    res = rerank(q, Y, k=3, texts=texts, query_text=QUESTION, sources=sources, trusted_sources=TRUSTED)
    assert res.indices == plain.indices
    assert res.items[res.indices.index(2)].flags == ("new_source",)
    # the strict policy pushes it out for its source alone
    strict = rerank(q, Y, k=3, texts=texts, query_text=QUESTION, sources=sources, trusted_sources=TRUSTED,
                    params={"provenance": "trusted_first"})
    assert 2 not in strict.indices
    assert [s["flags"] for s in strict.screened if s["index"] == 2] == [["untrusted_source"]]
    assert strict.receipt["state_sig"] != res.receipt["state_sig"]


@pytest.mark.slow
def test_without_a_declared_trust_set_nothing_moves(eiffel):
    Y, q, texts, sources = eiffel
    plain = rerank(q, Y, k=5, texts=texts, query_text=QUESTION)
    only_src = rerank(q, Y, k=5, texts=texts, query_text=QUESTION, sources=sources)
    assert only_src.indices == plain.indices and not any("new_source" in f for it in only_src.items for f in it.flags)
