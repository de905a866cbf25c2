"""Metric correctness on hand-made cases (oscillink_core.evaluation)."""

import math

import numpy as np
import pytest

from oscillink_core.evaluation import (
    any_trap_at_k,
    evaluate_rankings,
    mrr_at_k,
    ndcg_at_k,
    near_duplicate_share_at_k,
    paired_bootstrap_ci,
    precision_at_1,
    recall_at_k,
    trap_share_at_k,
)


def test_ndcg_hand_computed_graded():
    # gains 0, 2, 1 at ranks 1..3; ideal 2, 1 (+ an unretrieved grade-1 doc)
    ranked = ["a", "b", "c"]
    rel = {"b": 2, "c": 1, "z": 1, "n": 0}
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, rel, k=3) == pytest.approx(dcg / idcg)
    # cut-off 2 drops c and the third ideal term
    assert ndcg_at_k(ranked, rel, k=2) == pytest.approx((2 / math.log2(3)) / (2 + 1 / math.log2(3)))


def test_ndcg_perfect_and_zero():
    assert ndcg_at_k(["x", "y", "q"], {"x": 3, "y": 1}, k=10) == pytest.approx(1.0)
    assert ndcg_at_k(["q", "r"], {"x": 1}, k=10) == 0.0
    assert ndcg_at_k(["q", "r"], {}, k=10) == 0.0
    # set input means binary relevance
    assert ndcg_at_k(["a", "b"], {"b"}, k=10) == pytest.approx(1 / math.log2(3))


def test_ndcg_order_matters():
    rel = {"good": 1}
    assert ndcg_at_k(["good", "bad"], rel) > ndcg_at_k(["bad", "good"], rel)


def test_mrr_p1_recall():
    ranked = ["a", "b", "c", "d"]
    assert mrr_at_k(ranked, {"c": 1}, k=10) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, {"c": 1}, k=2) == 0.0
    assert mrr_at_k(ranked, {"c": 1, "b": 1}, k=10) == pytest.approx(0.5)
    assert precision_at_1(ranked, {"a"}) == 1.0
    assert precision_at_1(ranked, {"b"}) == 0.0
    assert precision_at_1([], {"b"}) == 0.0
    assert recall_at_k(ranked, {"a", "d", "z", "y"}, k=2) == pytest.approx(0.25)
    assert recall_at_k(ranked, {"a", "d", "z", "y"}, k=4) == pytest.approx(0.5)
    assert recall_at_k(ranked, {}, k=4) == 0.0


def test_zero_grades_are_not_relevant():
    assert precision_at_1(["a"], {"a": 0}) == 0.0
    assert mrr_at_k(["a", "b"], {"a": 0, "b": 1}) == 0.5


def test_trap_metrics():
    ranked = ["t1", "a", "b", "t2", "c"]
    traps = {"t1", "t2", "t9"}
    assert trap_share_at_k(ranked, traps, k=5) == pytest.approx(2 / 5)
    assert trap_share_at_k(ranked, traps, k=3) == pytest.approx(1 / 3)
    # short list: denominator is the number of items present
    assert trap_share_at_k(["t1", "a"], traps, k=10) == pytest.approx(0.5)
    assert trap_share_at_k([], traps, k=10) == 0.0
    assert any_trap_at_k(["a", "b", "t2"], traps, k=2) == 0.0
    assert any_trap_at_k(["a", "b", "t2"], traps, k=3) == 1.0
    assert any_trap_at_k(["a"], set(), k=3) == 0.0


def test_near_duplicate_share():
    e = np.eye(4)
    # rank 2 duplicates rank 1, rank 4 duplicates rank 3, rank 3 is new
    X = np.stack([e[0], e[0] * 2.0 + 0.01 * e[1], e[2], e[2] + 0.02 * e[3]])
    assert near_duplicate_share_at_k(X, k=4, threshold=0.95) == pytest.approx(0.5)
    assert near_duplicate_share_at_k(X, k=2, threshold=0.95) == pytest.approx(0.5)
    assert near_duplicate_share_at_k(X, k=1, threshold=0.95) == 0.0
    assert near_duplicate_share_at_k(np.eye(5), k=5, threshold=0.5) == 0.0
    # identical rows: all but the first count
    assert near_duplicate_share_at_k(np.ones((4, 3)), k=10) == pytest.approx(3 / 4)
    # threshold is inclusive; zero rows never count
    v = np.array([[1.0, 0.0], [0.6, 0.8]])
    assert near_duplicate_share_at_k(v, k=2, threshold=0.6) == pytest.approx(0.5)
    assert near_duplicate_share_at_k(v, k=2, threshold=0.61) == 0.0
    assert near_duplicate_share_at_k(np.zeros((3, 2)), k=3, threshold=0.0) == 0.0
    assert near_duplicate_share_at_k(np.zeros((0, 2)), k=3) == 0.0


def test_only_higher_ranked_items_count():
    # the duplicate pair is (rank 1, rank 3); rank 2 is different -> only rank 3 counts
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.001]])
    assert near_duplicate_share_at_k(X, k=3, threshold=0.99) == pytest.approx(1 / 3)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        ndcg_at_k(["a", "a"], {"a": 1})
    with pytest.raises(ValueError):
        ndcg_at_k(["a"], {"a": 1}, k=0)
    with pytest.raises(ValueError):
        mrr_at_k(["a"], "a")
    with pytest.raises(ValueError):
        near_duplicate_share_at_k(np.ones(3))
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        paired_bootstrap_ci([], [])
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1.0, np.nan], [1.0, 2.0])


def test_bootstrap_identical_methods_contains_zero():
    rng = np.random.default_rng(1)
    a = rng.random(300)
    ci = paired_bootstrap_ci(a, a.copy(), n_boot=2000, seed=3)
    assert ci.mean == 0.0 and ci.low <= 0.0 <= ci.high


def test_bootstrap_noise_only_contains_zero_and_real_gain_excludes_it():
    rng = np.random.default_rng(2)
    a = rng.random(400)
    noise = a + rng.normal(0, 0.05, size=400)
    noise -= noise.mean() - a.mean()  # exactly zero mean difference
    ci0 = paired_bootstrap_ci(a, noise, n_boot=2000, seed=0)
    assert ci0.low < 0.0 < ci0.high
    better = a + 0.05 + rng.normal(0, 0.05, size=400)
    ci1 = paired_bootstrap_ci(a, better, n_boot=2000, seed=0)
    assert ci1.low > 0.0
    assert ci1.low < ci1.mean < ci1.high
    # swapping the roles flips the sign
    ci2 = paired_bootstrap_ci(better, a, n_boot=2000, seed=0)
    assert ci2.mean == pytest.approx(-ci1.mean)
    assert ci2.high < 0.0


def test_bootstrap_width_matches_standard_error():
    rng = np.random.default_rng(5)
    d = rng.normal(0.0, 1.0, size=1000)
    ci = paired_bootstrap_ci(np.zeros(1000), d, n_boot=4000, seed=1)
    se = d.std(ddof=0) / math.sqrt(d.size)
    assert (ci.high - ci.low) == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(7)
    a, b = rng.random(50), rng.random(50)
    assert paired_bootstrap_ci(a, b, n_boot=500, seed=11) == paired_bootstrap_ci(a, b, n_boot=500, seed=11)
    assert paired_bootstrap_ci(a, b, n_boot=500, seed=11) != paired_bootstrap_ci(a, b, n_boot=500, seed=12)


def test_evaluate_rankings_matches_per_query_functions():
    rankings = {"q1": ["a", "t", "b"], "q2": ["c", "d", "e"], "q3": ["x"]}
    qrels = {"q1": {"b": 1}, "q2": {"c": 2, "e": 1}}
    traps = {"q1": ["t"], "q2": []}
    out = evaluate_rankings(rankings, qrels, traps=traps, ks=(2, 10))
    assert set(out) == {"p@1", "ndcg@2", "mrr@2", "recall@2", "trap_share@2", "any_trap@2",
                        "ndcg@10", "mrr@10", "recall@10", "trap_share@10", "any_trap@10"}
    for key in out:
        assert out[key].shape == (3,)
    assert out["ndcg@10"][0] == pytest.approx(ndcg_at_k(["a", "t", "b"], {"b": 1}, 10))
    assert out["ndcg@10"][2] == 0.0  # no qrels for q3
    assert out["mrr@2"].tolist() == [0.0, 1.0, 0.0]
    assert out["trap_share@2"].tolist() == [0.5, 0.0, 0.0]
    assert out["any_trap@10"].tolist() == [1.0, 0.0, 0.0]
    assert out["recall@2"][1] == pytest.approx(0.5)
