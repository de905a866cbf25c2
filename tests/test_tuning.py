"""Tests of oscillink_core.tuning: offline `tune`, labelled-query builders, `OnlineTuner`.

Synthetic embeddings only (no model). Two planted tasks have a known better setting than the
fixed starting point ``NAIVE`` (the tests pass it as ``base=`` / start explicitly, so they keep
testing the tuner rather than the current `LatticeParams()` defaults, which the quality benchmark
may change):

* ``dup_task``: a trap passage plus four near-copies of it sit above the three relevant
  passages in cosine order; near-duplicate removal / diversification should fix it.
* ``consensus_task``: five relevant passages agree with each other (a tight topic cluster)
  while five isolated look-alike traps have a higher cosine to the query; graph consensus
  (gating / coherence) should lift the cluster.

Held-out numbers are recomputed with `rerank` and `oscillink_core.evaluation`, independently
of the tuner's own cached evaluation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from oscillink_core import LatticeParams, Oscillink, load_profile, rerank
from oscillink_core.evaluation import ndcg_at_k, trap_share_at_k
from oscillink_core.tuning import (
    DEFAULT_GRID,
    ONLINE_BOUNDS,
    FeedbackEvent,
    LabelledQuery,
    OnlineTuner,
    _Engine,
    assign_folds,
    queries_from_jsonl,
    queries_from_qrels,
    queries_from_rows,
    tune,
)

#: A known-bad starting point for the planted tasks: the package defaults before the quality
#: benchmark (rank by the settled alignment, lamC 0.5, lamQ 4, no near-duplicate rule, no MMR),
#: every field that changes a ranking spelled out.
NAIVE = LatticeParams(normalize=True, kneighbors=6, lamG=1.0, lamC=0.5, lamQ=4.0, lamP=0.0, edge_floor=0.0,
                      degree_reg=0.0, gating="uniform", gate_gamma=0.15, gate_beta=1.0, coh_weight=0.0,
                      mmr_lambda=1.0, dedup_threshold=None, dup_keep="best", dup_action="demote", screen="off")


#: Online step for ``mmr_lambda`` on the duplicate flood: with MMR on rescaled scores the remedy
#: needs lambda near 0.5 (heldout from NAIVE, k=5: trap share 0.94 at 1.0, 0.81 at 0.8, 0.34 at
#: 0.5, on dup_task(30, seed=22)), which 30 events cannot reach in steps of the library's
#: general-purpose default.
DUP_STEP = {"mmr_lambda": 0.2}


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def dup_task(n_q: int, seed: int, n: int = 30, d: int = 24) -> list[LabelledQuery]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_q):
        q = _unit(rng.normal(size=d))
        Y = _unit(q + _unit(rng.normal(size=(n, d))))  # background, cosine ~0.7
        Y[0] = _unit(q + 0.45 * _unit(rng.normal(size=d)))  # trap, cosine ~0.9
        Y[1:5] = _unit(Y[0] + 0.05 * _unit(rng.normal(size=(4, d))))  # near-copies of the trap
        Y[5:8] = _unit(q + 0.6 * _unit(rng.normal(size=(3, d))))  # relevant, cosine ~0.85
        perm = rng.permutation(n)
        out.append(LabelledQuery(q, Y[perm], ids=[f"d{j}" for j in perm], relevance={"d5": 1, "d6": 1, "d7": 1},
                                 traps={f"d{j}" for j in range(5)}))
    return out


def consensus_task(n_q: int, seed: int, n: int = 30, d: int = 24) -> list[LabelledQuery]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_q):
        q = _unit(rng.normal(size=d))
        topic = _unit(q + 0.7 * _unit(rng.normal(size=d)))
        Y = _unit(q + 1.2 * _unit(rng.normal(size=(n, d))))
        Y[0:5] = _unit(topic + 0.35 * _unit(rng.normal(size=(5, d))))  # relevant, mutually close
        Y[5:10] = _unit(q + 0.55 * _unit(rng.normal(size=(5, d))))  # isolated look-alikes, higher cosine
        perm = rng.permutation(n)
        out.append(LabelledQuery(q, Y[perm], ids=[f"d{j}" for j in perm], relevance={f"d{j}": 1 for j in range(5)},
                                 traps={f"d{j}" for j in range(5, 10)}))
    return out


def heldout(queries, params, k=5):
    """Mean nDCG@k, trap share@k and objective via `rerank` (independent of the tuner)."""
    nd, tr = [], []
    for q in queries:
        ids = rerank(q.query, q.candidates, k=k, ids=list(q.ids), params=params, light_receipt=True).ids
        nd.append(ndcg_at_k(ids, q.relevance, k))
        tr.append(trap_share_at_k(ids, q.traps, k))
    nd, tr = float(np.mean(nd)), float(np.mean(tr))
    return {"ndcg": nd, "trap_share": tr, "objective": nd - tr}


@pytest.fixture(scope="module")
def dup_tuned():
    return tune(dup_task(24, seed=1), folds=3, k=5, metric="ndcg@5", seed=0, base=NAIVE)


@pytest.fixture(scope="module")
def consensus_tuned():
    return tune(consensus_task(24, seed=1), folds=3, k=5, metric="ndcg@5", seed=0, base=NAIVE)


# ------------------------------------------------------------------------------ offline tune
def test_tune_improves_heldout_on_duplicate_flood(dup_tuned):
    test = dup_task(30, seed=2)  # queries never seen by tune
    assert dup_tuned.base == NAIVE
    base, tuned = heldout(test, NAIVE), heldout(test, dup_tuned.params)
    assert base["trap_share"] > 0.5  # the start lets the copies flood the top 5
    assert tuned["ndcg"] > base["ndcg"] + 0.3
    assert tuned["trap_share"] < base["trap_share"] - 0.3
    # the planted remedy was found: some diversification is switched on
    p = dup_tuned.params
    assert p.dedup_threshold is not None or p.mmr_lambda < 1
    assert not dup_tuned.fell_back
    assert dup_tuned.cv["tuned"]["objective_mean"] > dup_tuned.cv["baseline"]["objective_mean"] + 0.3
    gain = dup_tuned.cv["gain"]["objective"]
    assert gain["mean"] == pytest.approx(dup_tuned.cv["tuned"]["objective_mean"]
                                         - dup_tuned.cv["baseline"]["objective_mean"])
    assert 0 < gain["low"] < gain["mean"] < gain["high"]
    assert "95% CI" in dup_tuned.summary()


def test_tune_improves_heldout_on_consensus_task(consensus_tuned):
    test = consensus_task(30, seed=2)
    base, tuned = heldout(test, NAIVE), heldout(test, consensus_tuned.params)
    assert tuned["ndcg"] > base["ndcg"] + 0.3
    assert tuned["trap_share"] < base["trap_share"] - 0.3
    assert consensus_tuned.params != NAIVE and not consensus_tuned.fell_back


def test_cv_scores_match_rerank(consensus_tuned):
    """The tuner's cached per-fold baseline scores equal an independent recomputation."""
    qs = consensus_task(24, seed=1)
    folds = assign_folds(len(qs), 3, seed=0)
    for f in range(3):
        sub = [q for q, g in zip(qs, folds, strict=True) if g == f]
        ref = heldout(sub, NAIVE)
        assert consensus_tuned.cv["baseline"]["metric"][f] == pytest.approx(ref["ndcg"], abs=1e-12)
        assert consensus_tuned.cv["baseline"]["trap_share"][f] == pytest.approx(ref["trap_share"], abs=1e-12)
        chosen = heldout(sub, consensus_tuned.params)
        assert consensus_tuned.cv["chosen"]["objective"][f] == pytest.approx(chosen["objective"], abs=1e-12)


def test_every_trial_matches_rerank():
    """Cached evaluation (settled states reused across ranking-only fields) == plain `rerank`."""
    qs = dup_task(4, seed=5) + consensus_task(4, seed=6)
    grid = {"lamC": [0.0, 1.0], "gating": ["uniform", "diffusion"], "mmr_lambda": [1.0, 0.7],
            "dedup_threshold": [None, 0.95], "dup_keep": ["support", "consensus", "best"],
            "dup_action": ["reorder", "demote"], "coh_weight": [0.0, 2.0]}
    res = tune(qs, grid=grid, folds=2, k=5, metric="ndcg@5", search="grid", base=NAIVE)
    # settings equal in effect are scored once: dup_keep and dup_action only matter with a
    # threshold, and dup_keep="best" with dup_action="reorder" gives every member its own score
    # back (5 distinct rules + off). The first trial is the base (lamC=0.5), which is not on the grid.
    assert len(res.trials) == 1 + 2 * 2 * 2 * (1 + 5) * 2
    for t in res.trials:
        ref = heldout(qs, NAIVE.replace(**t["params"]))
        assert t["metric"] == pytest.approx(ref["ndcg"], abs=1e-12), t["params"]
        assert t["trap_share"] == pytest.approx(ref["trap_share"], abs=1e-12), t["params"]
    best = max(res.trials, key=lambda t: t["objective"])
    assert res.searched == NAIVE.replace(**best["params"])
    # the equal-in-effect claim itself, on plain rerank: best + reorder ranks exactly as no rule
    off, noop = NAIVE.replace(lamC=1.0), NAIVE.replace(lamC=1.0, dedup_threshold=0.95, dup_action="reorder")
    groups = 0
    for q in qs:
        ids = [rerank(q.query, q.candidates, k=q.n, ids=list(q.ids), params=p, light_receipt=True).ids
               for p in (off, noop, noop.replace(dup_action="demote"))]
        assert ids[0] == ids[1]
        groups += ids[0] != ids[2]
    assert groups > 0  # the threshold does find groups here (demote changes the order)


def test_shared_states_keep_their_own_knn_lists():
    """With lamC=0 the graph does not enter the solve, so settings that differ only in kneighbors
    share one settled state; the near-duplicate rule must still read each setting's own kNN lists
    (outside support with 2 vs 12 neighbours orders the groups differently here)."""
    qs = dup_task(4, seed=5)
    start = NAIVE.replace(lamC=0.0, dedup_threshold=0.9, dup_keep="support")
    engine = _Engine(qs)
    tops = {}
    for kn in (2, 12):
        for action in ("reorder", "demote"):
            p = start.replace(kneighbors=kn, dup_action=action)
            ref = [[q.ids.index(i) for i in rerank(q.query, q.candidates, k=5, ids=list(q.ids), params=p,
                                                   light_receipt=True).ids] for q in qs]
            tops[kn, action] = engine.rankings(p, 5)
            assert tops[kn, action] == ref, (kn, action)
    assert tops[2, "reorder"] != tops[12, "reorder"] and tops[2, "demote"] != tops[12, "demote"]
    res = tune(qs, grid={"kneighbors": [2, 12]}, folds=2, k=5, metric="ndcg@5", search="grid", base=start)
    for t in res.trials:
        assert t["metric"] == pytest.approx(heldout(qs, start.replace(**t["params"]))["ndcg"], abs=1e-12)


def test_fold_assignment_is_seeded_and_balanced():
    a, b = assign_folds(23, 5, seed=3), assign_folds(23, 5, seed=3)
    assert a.tolist() == b.tolist()
    assert sorted(np.bincount(a).tolist()) == [4, 4, 5, 5, 5]
    assert assign_folds(23, 5, seed=4).tolist() != a.tolist()


def test_tune_is_deterministic():
    qs = dup_task(9, seed=7)
    grid = {"lamC": [0.0, 1.0], "dedup_threshold": [None, 0.95]}
    r1 = tune(qs, grid=grid, folds=3, k=5, seed=11, base=NAIVE)
    r2 = tune(qs, grid=grid, folds=3, k=5, seed=11, base=NAIVE)
    assert r1.to_profile() == r2.to_profile()
    r3 = tune(qs, grid=grid, folds=3, k=5, seed=12, base=NAIVE)
    assert r3.cv["baseline"]["objective"] != r1.cv["baseline"]["objective"]  # other folds


def cosine_task(n_q: int, seed: int, n: int = 20, d: int = 24) -> list[LabelledQuery]:
    """The three nearest candidates are the relevant ones and nearly identical: cosine order is
    ideal and diversification can only push two of them down."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_q):
        q = _unit(rng.normal(size=d))
        Y = _unit(q + 1.5 * _unit(rng.normal(size=(n, d))))
        Y[0] = _unit(q + 0.2 * _unit(rng.normal(size=d)))
        Y[1:3] = _unit(Y[0] + 0.05 * _unit(rng.normal(size=(2, d))))
        out.append(LabelledQuery(q, Y, relevance={0: 1, 1: 1, 2: 1}))
    return out


def test_blas_threads_do_not_change_results_and_are_restored():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [(i["user_api"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    qs = dup_task(6, seed=13)
    grid = {"lamC": [0.0, 1.0], "mmr_lambda": [1.0, 0.7]}
    one = tune(qs, grid=grid, folds=2, k=5, blas_threads=1)
    assert [(i["user_api"], i["num_threads"]) for i in threadpoolctl.threadpool_info()] == before
    assert tune(qs, grid=grid, folds=2, k=5, blas_threads=None).to_profile() == one.to_profile()
    with pytest.raises(ValueError, match="blas_threads"):
        tune(qs, grid=grid, folds=2, blas_threads=0)
    with pytest.raises(ValueError, match="blas_threads"):
        OnlineTuner(None, blas_threads=True)


def test_fallback_when_nothing_helps():
    qs = dup_task(6, seed=8)
    res = tune(qs, grid={"lamP": [0.0, 1.0]}, folds=2, k=5)  # lamP has no effect without a chain
    assert len(res.trials) == 1
    assert res.fell_back and res.params == LatticeParams() and res.changed == {}  # base=None: the defaults
    # a grid that only makes things worse: the search keeps the baseline (cosine order, lamC=0,
    # which is ideal on this task)
    start = NAIVE.replace(lamC=0.0)
    worse = tune(cosine_task(6, seed=8), grid={"mmr_lambda": [0.3]}, folds=2, k=3, metric="ndcg@3",
                 adopt="always", base=start)
    assert worse.trials[0]["metric"] == 1.0
    assert worse.trials[1]["params"] == {"mmr_lambda": 0.3}
    assert worse.trials[1]["objective"] < worse.trials[0]["objective"]
    assert worse.searched == start == worse.params


def test_adopt_rules():
    """Two queries gain from dedup, eight random ones are unaffected: the mean gain is positive
    but the bootstrap interval reaches 0, so adopt='ci' keeps the base and 'mean' does not."""
    rng = np.random.default_rng(14)
    neutral = [LabelledQuery(rng.normal(size=24), rng.normal(size=(30, 24)), relevance={0: 1}, traps={1})
               for _ in range(8)]
    qs = dup_task(2, seed=15) + neutral
    seed = next(s for s in range(100) if len(set(assign_folds(10, 2, seed=s)[:2].tolist())) == 2)
    grid = {"dedup_threshold": [None, 0.95]}
    by_mean = tune(qs, grid=grid, folds=2, k=5, seed=seed, adopt="mean", base=NAIVE)
    gain = by_mean.cv["gain"]["objective"]
    assert gain["mean"] > 0 and gain["low"] == 0.0
    assert not by_mean.fell_back and by_mean.params.dedup_threshold == 0.95
    by_ci = tune(qs, grid=grid, folds=2, k=5, seed=seed, base=NAIVE)  # adopt="ci" is the default
    assert by_ci.fell_back and by_ci.params == NAIVE and by_ci.searched == by_mean.params
    assert "does not meet adopt='ci'" in by_ci.summary()
    assert by_ci.to_profile()["meta"]["fell_back_to_base"] is True
    with pytest.raises(ValueError, match="adopt"):
        tune(qs, grid=grid, folds=2, adopt="maybe")


def test_near_duplicate_fields_are_searched_jointly():
    """dedup_threshold, dup_keep and dup_action act only together. From a start whose rule cannot
    act (no threshold; dup_keep="best" with dup_action="reorder" would be a no-op anyway) neither
    field alone changes the ranking, so coordinate search finds the planted remedy (demote the
    copies of the trap) only by moving them as one group."""
    start = NAIVE.replace(dup_action="reorder")
    qs = dup_task(12, seed=16)
    for change in ({"dedup_threshold": 0.95}, {"dup_action": "demote"}):
        assert heldout(qs, start.replace(**change)) == heldout(qs, start)
    res = tune(qs, grid={"dedup_threshold": [None, 0.95], "dup_action": ["reorder", "demote"]}, folds=3, k=5,
               metric="ndcg@5", base=start)
    assert res.changed == {"dedup_threshold": 0.95, "dup_action": "demote"} and not res.fell_back
    assert heldout(qs, res.params)["objective"] > heldout(qs, start)["objective"] + 0.3


def test_profile_round_trip(dup_tuned, tmp_path):
    path = dup_tuned.save(tmp_path / "profile.json")
    data = json.loads(path.read_text())
    assert data["format"] == "oscillink-core/profile"
    meta = data["meta"]
    for key in ("metric", "folds", "n_queries", "seed", "cv", "package_version", "k", "trap_weight", "changed"):
        assert key in meta
    assert meta["metric"] == "ndcg@5" and meta["folds"] == 3 and meta["n_queries"] == 24
    assert meta["cv"]["tuned"]["objective_mean"] == dup_tuned.cv["tuned"]["objective_mean"]
    assert load_profile(path) == dup_tuned.params
    assert data == dup_tuned.to_profile()
    q = dup_task(1, seed=9)[0]
    ref = rerank(q.query, q.candidates, k=5, params=dup_tuned.params).receipt["state_sig"]
    assert rerank(q.query, q.candidates, k=5, params=str(path)).receipt["state_sig"] == ref
    assert rerank(q.query, q.candidates, k=5, params=dup_tuned.to_profile()).receipt["state_sig"] == ref
    assert Oscillink(q.candidates, params=path).params == dup_tuned.params


def test_to_dict_is_json(dup_tuned):
    d = dup_tuned.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["params"] == dup_tuned.params.to_dict() and len(d["trials"]) == len(dup_tuned.trials)
    assert d["trials"][0]["params"] == {}  # the base is scored first


def test_profile_path_argument(tmp_path):
    qs = dup_task(4, seed=10)
    res = tune(qs, grid={"dedup_threshold": [None, 0.95]}, folds=2, k=5, profile_path=tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text()) == res.to_profile()


@pytest.mark.parametrize("kwargs, match", [
    ({"grid": {"lamc": [1.0]}}, "unknown grid key"),
    ({"grid": {"lamC": []}}, "empty"),
    ({"grid": {"lamG": [0.0]}}, "invalid value"),
    ({"grid": {"gating": "diffusion"}}, "list of values"),
    ({"folds": 1}, "folds must be"),
    ({"folds": 7}, "at least folds=7"),
    ({"metric": "ndcg"}, "unknown metric"),
    ({"k": 0}, "k must be"),
    ({"trap_weight": -1}, "trap_weight"),
    ({"search": "random"}, "search must be"),
    ({"base": {"nope": 1}}, "unknown lattice parameter"),
])
def test_tune_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tune(dup_task(6, seed=0), **kwargs)


def test_tune_bad_queries():
    with pytest.raises(ValueError, match="empty"):
        tune([])
    with pytest.raises(ValueError, match="not a LabelledQuery"):
        tune([{"query": [1.0]}] * 3)


def test_labelled_query_validation():
    Y = np.eye(4)
    with pytest.raises(ValueError, match="dimension mismatch"):
        LabelledQuery(np.ones(3), Y)
    with pytest.raises(ValueError, match="2-D"):
        LabelledQuery(np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match="ids has 3 entries"):
        LabelledQuery(np.ones(4), Y, ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="NaN"):
        LabelledQuery(np.ones(4), np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="not a string"):
        LabelledQuery(np.ones(4), Y, relevance="a")
    with pytest.raises(ValueError, match="finite number"):
        LabelledQuery(np.ones(4), Y, relevance={0: float("nan")})
    q = LabelledQuery(np.ones(4), Y, relevance={0: 2, 1: 0, 9: 1}, traps=[2])
    assert q.relevance == {0: 2.0, 9: 1.0} and q.traps == frozenset({2})


# ------------------------------------------------------------------------------ builders
def _fake_embed(calls):
    def embed(texts):
        calls.append(list(texts))
        out = []
        for t in texts:
            rng = np.random.default_rng(sum(map(ord, t)) + 7 * len(t))
            out.append(rng.normal(size=6))
        return np.asarray(out, dtype=np.float32)
    return embed


def test_queries_from_rows_groups_and_labels():
    rows = [
        {"query_id": "q1", "query": "bees dance", "id": "a", "text": "waggle dance", "label": 1, "trap": False},
        {"query_id": "q2", "query": "moon phases", "id": "x", "text": "sunlight on the moon", "label": True},
        {"query_id": "q1", "query": "bees dance", "id": "b", "text": "flower dance", "label": 0, "trap": True},
        {"query_id": "q1", "query": "bees dance", "id": "c", "text": "changed fact", "label": "q1", "trap": "true"},
        {"query_id": "q2", "query": "moon phases", "id": "y", "text": "waggle dance", "label": 2.5},
    ]
    calls: list = []
    qs = queries_from_rows(rows, embed=_fake_embed(calls))
    assert len(calls) == 1  # one batched call, every distinct text once
    assert sorted(calls[0]) == sorted({r["text"] for r in rows} | {r["query"] for r in rows})
    assert [q.qid for q in qs] == ["q1", "q2"]
    q1, q2 = qs
    assert q1.ids == ("a", "b", "c") and q1.relevance == {"a": 1.0} and q1.traps == {"b", "c"}
    assert q2.ids == ("x", "y") and q2.relevance == {"x": 1.0, "y": 2.5} and q2.traps == frozenset()
    emb = _fake_embed([])
    np.testing.assert_array_equal(q1.candidates[0], emb(["waggle dance"])[0])
    np.testing.assert_array_equal(q2.candidates[1], emb(["waggle dance"])[0])
    np.testing.assert_array_equal(q2.query, emb(["moon phases"])[0])


def test_queries_from_rows_custom_gain_and_errors():
    rows = [{"query_id": "q1", "query_vector": [1.0, 0.0], "id": "a", "vector": [1.0, 0.2], "label": "q1"},
            {"query_id": "q1", "id": "b", "vector": [0.3, 1.0], "label": ""}]
    (q,) = queries_from_rows(rows, gain=lambda r: 3.0 if r["label"] == "q1" else 0.0)
    assert q.relevance == {"a": 3.0}
    with pytest.raises(ValueError, match="no embed function"):
        queries_from_rows([{"query_id": 1, "query": "t", "id": 1, "text": "u"}])
    with pytest.raises(ValueError, match="neither 'vector' nor a 'text'"):
        queries_from_rows([{"query_id": 1, "query_vector": [1.0], "id": 1}])
    with pytest.raises(ValueError, match="has no 'id'"):
        queries_from_rows([{"query_id": 1}])
    with pytest.raises(ValueError, match="no rows"):
        queries_from_rows([])
    with pytest.raises(ValueError, match="unique"):
        queries_from_rows([{"query_vector": [1.0, 0.0], "id": "a", "vector": [1.0, 0.0]},
                           {"id": "a", "vector": [0.0, 1.0]}])


def test_queries_from_jsonl(tmp_path):
    rows = [{"query_id": "q", "query": "alpha", "id": i, "text": f"doc {i}", "label": int(i == 2), "trap": i == 0}
            for i in range(5)]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (q,) = queries_from_jsonl(path, embed=_fake_embed([]))
    assert q.ids == (0, 1, 2, 3, 4) and q.relevance == {2: 1.0} and q.traps == {0}
    path.write_text("{not json}\n")
    with pytest.raises(ValueError, match="rows.jsonl:1"):
        queries_from_jsonl(path, embed=_fake_embed([]))


def test_queries_from_qrels_counts_unretrieved_relevant():
    rng = np.random.default_rng(0)
    docs = {f"d{i}": rng.normal(size=8) for i in range(10)}
    qvec = {"q1": docs["d3"] + 0.01, "q2": docs["d7"] + 0.01}
    qrels = {"q1": {"d3": 1, "d9": 1}, "q2": {"d7": 2}, "q3": {"d1": 1}}  # q3 has no candidates: skipped
    cands = {"q1": [f"d{i}" for i in range(6)], "q2": [f"d{i}" for i in range(4, 10)]}
    qs = queries_from_qrels(qrels, cands, qvec, docs, traps={"q2": ["d8"]})
    assert [q.qid for q in qs] == ["q1", "q2"]
    assert qs[0].relevance == {"d3": 1.0, "d9": 1.0}  # d9 is not a candidate, still judged
    assert qs[1].traps == {"d8"}
    np.testing.assert_allclose(qs[1].candidates[0], docs["d4"], rtol=1e-6)
    res = tune(qs, grid={"lamC": [0.0]}, folds=2, k=5, metric="recall@5", base=NAIVE)
    assert res.trials[0]["metric"] == pytest.approx((0.5 + 1.0) / 2)  # d9 can never be found
    by_fn = queries_from_qrels(qrels, cands, lambda ids: np.stack([qvec[i] for i in ids]),
                               lambda ids: np.stack([docs[i] for i in ids]))
    np.testing.assert_array_equal(by_fn[1].candidates, qs[1].candidates)
    with pytest.raises(ValueError, match="no candidates"):
        queries_from_qrels(qrels, cands, qvec, docs, query_ids=["q3"])
    with pytest.raises(ValueError, match="no vector for"):
        queries_from_qrels(qrels, {"q1": ["d1", "zz"]}, qvec, docs)


def test_default_grid_is_valid():
    for name, values in DEFAULT_GRID.items():
        for v in values:
            LatticeParams().replace(**{name: v})


# ------------------------------------------------------------------------------ online
def _events(queries, k=10, params=NAIVE):
    """Feedback a user would give on the top k under ``params`` (the tuner's start): keep the
    relevant ids shown, reject the traps shown (queries whose top k lacks either give no event)."""
    out = []
    for q in queries:
        res = rerank(q.query, q.candidates, k=k, ids=list(q.ids), params=params, light_receipt=True)
        kept = [i for i in res.ids if i in q.relevance]
        rejected = [i for i in res.ids if i in q.traps]
        if kept and rejected:
            out.append(FeedbackEvent.from_result(res, q.query, q.candidates, ids=q.ids, kept=kept, rejected=rejected))
    return out


def _score(event, params):
    """(share of kept ids in the top k, mean_kept 1/log2(r+2) - mean_rejected 1/log2(r+2)) under
    `rerank` with params, r the 0-based rank (independent of the tuner)."""
    ids = rerank(event.query, event.candidates, k=len(event.ids), ids=list(event.ids), params=params,
                 light_receipt=True).ids
    disc = {d: 1.0 / np.log2(r + 2) for r, d in enumerate(ids)}
    top = set(ids[:event.k])
    return (float(np.mean([d in top for d in event.kept])),
            float(np.mean([disc[d] for d in event.kept]) - np.mean([disc[d] for d in event.rejected])))


@pytest.fixture(scope="module")
def dup_events():
    return _events(dup_task(16, seed=21)), _events(dup_task(16, seed=22))


@pytest.mark.parametrize("method", ["coordinate", "spsa"])
def test_online_improves_unseen_queries_on_duplicate_flood(method):
    """30 feedback events per stream, four streams: the learned profile is scored on 30 other
    queries with their full labels. On average it must win clearly, and every stream must win."""
    gains, drops = [], []
    for s in (21, 31, 41, 51):
        tuner = OnlineTuner(NAIVE, method=method, seed=0, max_step=DUP_STEP)
        for e in _events(dup_task(30, seed=s)):
            tuner.update(e)
        test = dup_task(30, seed=s + 1)
        base, learned = heldout(test, NAIVE), heldout(test, tuner.params)
        gains.append(learned["ndcg"] - base["ndcg"])
        drops.append(base["trap_share"] - learned["trap_share"])
    assert np.mean(gains) > 0.15 and np.mean(drops) > 0.3
    assert min(gains) > 0.05 and min(drops) > 0.3


def test_online_does_no_harm_where_its_knobs_cannot_help():
    """On the consensus task the remedy (diffusion gating) is not among the online knobs: the
    tuner must not degrade the ranking (e.g. by reversing it to bury the rejected ids)."""
    tuner = OnlineTuner(NAIVE)
    for e in _events(consensus_task(30, seed=21), k=10):
        tuner.update(e)
    test = consensus_task(30, seed=22)
    assert heldout(test, tuner.params)["ndcg"] >= heldout(test, NAIVE)["ndcg"] - 0.02


def test_online_sign_agreement_filter(dup_events):
    """A parameter moves only when this event's vote agrees with the running vote average and
    that average is at least `agreement`; the first events therefore never move anything."""
    train, _ = dup_events
    tuner = OnlineTuner(NAIVE, max_step=DUP_STEP)  # momentum 0.9, agreement 0.5
    reports = [tuner.update(e) for e in train]
    assert not reports[0]["moves"] and reports[0]["votes"]
    m = dict.fromkeys(tuner.keys, 0.0)
    vals = {name: getattr(NAIVE, name) for name in tuner.keys}
    n_moves = 0
    for rep in reports:
        for name in tuner.keys:
            v = rep["votes"][name]
            m[name] = 0.9 * m[name] + 0.1 * v
            assert rep["momentum"][name] == pytest.approx(m[name], abs=1e-9)
            if name in rep["moves"]:
                n_moves += 1
                old, new = rep["moves"][name]
                assert v * m[name] >= 0.5 and (new - old) * v > 0 and old == vals[name]
                vals[name] = new
            elif v != 0 and v * m[name] >= 0.5:  # agreed: only a bound can have stopped the move
                assert vals[name] == tuner.bounds[name][0 if v < 0 else 1]
    assert vals == {name: getattr(tuner.params, name) for name in tuner.keys}
    assert n_moves > 0


def test_online_report_explains_the_move(dup_events):
    train, _ = dup_events
    reports = [OnlineTuner(NAIVE, learning_rate=1.0, agreement=0.0).update(e) for e in train]
    i = next(i for i, r in enumerate(reports) if r["moves"])  # the start is not optimal everywhere
    ev, rep = train[i], reports[i]
    tuner = OnlineTuner(NAIVE, learning_rate=1.0, agreement=0.0)
    assert tuner.update(ev) == rep
    cur = _score(ev, NAIVE)
    assert rep["event"] == 1
    assert (rep["score"]["kept_in_top_k"], rep["score"]["margin"]) == pytest.approx(cur, abs=1e-12)
    for name, (old, new) in rep["moves"].items():
        assert getattr(NAIVE, name) == old
        # some probe in the direction of the move scored better than the current setting
        side = [p for p in rep["probes"] if list(p["params"]) == [name]
                and (p["params"][name] - old) * (new - old) > 0]
        assert rep["votes"][name] == (1 if new > old else -1)
        best = max(side, key=lambda p: (p["score"]["kept_in_top_k"], p["score"]["objective"], p["score"]["margin"]))
        got = (best["score"]["kept_in_top_k"], best["score"]["margin"])
        assert (best["score"]["kept_in_top_k"], best["score"]["objective"], best["score"]["margin"]) > tuple(
            rep["score"][key] for key in ("kept_in_top_k", "objective", "margin"))
        assert got == pytest.approx(_score(ev, NAIVE.replace(**best["params"])), abs=1e-12)
    for name in tuner.keys:
        if name not in rep["moves"]:
            assert getattr(tuner.params, name) == getattr(NAIVE, name)


@pytest.mark.parametrize("method", ["coordinate", "spsa"])
def test_online_updates_are_bounded(method):
    rng = np.random.default_rng(3)
    bounds = {"lamC": (0.3, 0.8), "lamQ": (3.0, 6.0), "coh_weight": (0.0, 0.5), "mmr_lambda": (0.8, 1.0),
              "kneighbors": (3, 9)}
    steps = {"lamC": 0.2, "lamQ": 2.0, "coh_weight": 0.3, "mmr_lambda": 0.1, "kneighbors": 2}
    tuner = OnlineTuner(NAIVE, learning_rate=1.0, bounds=bounds, max_step=steps, method=method, seed=5,
                        keys=list(bounds))
    prev = tuner.params
    hit_bound = False
    for _ in range(25):
        Y = rng.normal(size=(15, 6))
        kept, rejected = rng.choice(15, size=2, replace=False).tolist(), rng.choice(15, size=1).tolist()
        rejected = [r for r in rejected if r not in kept] or [next(i for i in range(15) if i not in kept)]
        rep = tuner.update({"query": rng.normal(size=6), "candidates": Y, "kept": kept, "rejected": rejected})
        cur = tuner.params
        for name, (lo, hi) in bounds.items():
            v = getattr(cur, name)
            assert lo <= v <= hi
            assert abs(v - getattr(prev, name)) <= steps[name] + 1e-9
            hit_bound |= v in (lo, hi)
        for probe in rep["probes"]:
            for name, v in probe["params"].items():
                assert bounds[name][0] <= v <= bounds[name][1]
        prev = cur
    assert tuner.n_updates == 25
    assert isinstance(tuner.params.kneighbors, int)
    assert hit_bound  # the clipping was exercised


@pytest.mark.parametrize("method", ["coordinate", "spsa"])
def test_online_is_deterministic(dup_events, method):
    train, _ = dup_events
    a, b = OnlineTuner(NAIVE, method=method, seed=7), OnlineTuner(NAIVE, method=method, seed=7)
    for e in train[:6]:
        a.update(e)
        b.update(e)
    assert a.params == b.params and a.history == b.history
    if method == "spsa":
        c = OnlineTuner(NAIVE, method=method, seed=8)
        for e in train[:6]:
            c.update(e)
        assert [h["probes"] for h in c.history] != [h["probes"] for h in a.history]


@pytest.mark.parametrize("method", ["coordinate", "spsa"])
def test_online_save_load_resumes_exactly(dup_events, tmp_path, method):
    train, _ = dup_events
    # agreement 0.15: a move needs two agreeing votes in a row, so the saved momentum matters
    kw = {"method": method, "seed": 3, "learning_rate": 0.4, "max_step": DUP_STEP, "agreement": 0.15}
    full, half = OnlineTuner(NAIVE, **kw), OnlineTuner(NAIVE, **kw)
    for e in train[:4]:
        full.update(e)
        half.update(e)
    path = half.save(tmp_path / "online.json")
    resumed = OnlineTuner.load(path)
    assert resumed.state() == half.state() and resumed.params == half.params
    assert OnlineTuner.from_profile(half.to_profile()).state() == half.state()
    for e in train[4:8]:
        full.update(e)
        resumed.update(e)
    assert resumed.params == full.params and resumed.state() == full.state()
    assert any(h["moves"] for h in full.history[4:])  # the resumed part did move parameters
    # the saved file is an ordinary profile
    assert load_profile(path) == half.params
    q = train[0]
    assert rerank(q.query, q.candidates, k=3, params=str(path)).ids == rerank(q.query, q.candidates, k=3,
                                                                             params=half.params).ids


def test_online_skips_knobs_without_effect(dup_events):
    """dedup_threshold is not probed while the near-duplicate rule cannot act: no threshold, or
    dup_keep="best" with dup_action="reorder" (members get their own scores back)."""
    ev = dup_events[0][0]
    for start in (NAIVE, NAIVE.replace(dedup_threshold=0.95, dup_action="reorder")):
        rep = OnlineTuner(start, keys=["dedup_threshold"]).update(ev)
        assert rep["probes"] == [] and rep["votes"] == {} and rep["moves"] == {}
    rep = OnlineTuner(NAIVE.replace(dedup_threshold=0.95), keys=["dedup_threshold"]).update(ev)  # demote acts
    assert {p["params"]["dedup_threshold"] for p in rep["probes"]} >= {0.94, 0.96}


def test_online_starts_from_a_tune_profile(dup_tuned):
    prof = dup_tuned.to_profile()
    tuner = OnlineTuner(prof)
    assert tuner.params == dup_tuned.params
    assert tuner.to_profile()["meta"]["origin"]["metric"] == "ndcg@5"
    with pytest.raises(ValueError, match="no online-tuner state"):
        OnlineTuner.from_profile(prof)


def test_online_bad_inputs():
    Y = np.eye(4)
    with pytest.raises(ValueError, match="learning_rate"):
        OnlineTuner(None, learning_rate=0)
    with pytest.raises(ValueError, match="cannot move"):
        OnlineTuner(None, keys=["rtol"])
    with pytest.raises(ValueError, match="outside its bounds"):
        OnlineTuner({"lamC": 5.0}, bounds={"lamC": (0.0, 1.0)})
    with pytest.raises(ValueError, match="low <= high"):
        OnlineTuner(None, bounds={"lamC": (1.0, 0.0)})
    with pytest.raises(ValueError, match="not valid values"):
        OnlineTuner(None, keys=["mmr_lambda"], bounds={"mmr_lambda": (0.0, 1.0)})
    with pytest.raises(ValueError, match="max_step"):
        OnlineTuner(None, max_step={"lamC": 0})
    with pytest.raises(ValueError, match="method"):
        OnlineTuner(None, method="adam")
    with pytest.raises(ValueError, match="momentum"):
        OnlineTuner(None, momentum=1.0)
    with pytest.raises(ValueError, match="agreement"):
        OnlineTuner(None, agreement=1.5)
    with pytest.raises(ValueError, match="probe_scales"):
        OnlineTuner(None, probe_scales=[])
    with pytest.raises(ValueError, match="trap_weight"):
        OnlineTuner(None, trap_weight=-1)
    tuner = OnlineTuner(None)
    with pytest.raises(ValueError, match="not among"):
        tuner.update({"query": np.ones(4), "candidates": Y, "kept": [0], "rejected": [7]})
    with pytest.raises(ValueError, match="both kept and rejected"):
        tuner.update({"query": np.ones(4), "candidates": Y, "kept": [0], "rejected": [0, 1]})
    with pytest.raises(ValueError, match="at least one kept and one rejected"):
        tuner.update({"query": np.ones(4), "candidates": Y, "kept": [0, 1, 2, 3], "shown": [0, 1, 2, 3]})
    with pytest.raises(ValueError, match="unknown feedback event key"):
        tuner.update({"query": np.ones(4), "candidates": Y, "kept": [0], "rejected": [1], "score": 1})
    with pytest.raises(ValueError, match="dimension mismatch"):
        tuner.update({"query": np.ones(3), "candidates": Y, "kept": [0], "rejected": [1]})
    assert tuner.n_updates == 0 and tuner.params == LatticeParams()
    ev = FeedbackEvent(np.ones(4), Y, kept=[0], shown=[0, 2, 3])
    assert ev.rejected == (2, 3) and ev.k == 3
    assert FeedbackEvent(np.ones(4), Y, kept=[0], rejected=[1]).k == 2
    assert FeedbackEvent(np.ones(4), Y, kept=[0], rejected=[1], k=9).k == 4  # clipped to N
    with pytest.raises(ValueError, match="k must be"):
        FeedbackEvent(np.ones(4), Y, kept=[0], rejected=[1], k=0)
    with pytest.raises(ValueError, match="shown id 8"):
        FeedbackEvent(np.ones(4), Y, kept=[0], shown=[0, 8])
    res = rerank(np.array([1.0, 0.2, 0.1, 0.0]), Y, k=3, ids=["a", "b", "c", "d"])
    ev = FeedbackEvent.from_result(res, np.array([1.0, 0.2, 0.1, 0.0]), Y, ids=["a", "b", "c", "d"], kept=["b"])
    assert ev.kept == ("b",) and set(ev.rejected) == set(res.ids) - {"b"}


def test_online_bounds_table_is_valid():
    for name, (lo, hi, step) in ONLINE_BOUNDS.items():
        LatticeParams().replace(**{name: lo})
        LatticeParams().replace(**{name: hi})
        assert step > 0 and lo < hi
    # every default (and the naive start) lies inside the default bounds: any key can start there
    for start in (None, NAIVE):
        tuner = OnlineTuner(start, keys=list(ONLINE_BOUNDS))
        assert tuner.bounds == {name: (lo, hi) for name, (lo, hi, _) in ONLINE_BOUNDS.items()}
