"""Self-tuning: fit lattice parameters on labelled queries, and update them from feedback.

Two tools, both producing the profile JSON that ``params=`` accepts everywhere
(`Oscillink`, `rerank`, the LangChain and LlamaIndex integrations):

* :func:`tune` -- offline. Searches ``lamC``, ``lamQ``, ``kneighbors``, gating
  (``gating``, ``gate_gamma``), the score mix ``coh_weight`` and diversification
  (``mmr_lambda``, ``dedup_threshold``, ``dup_keep``, ``dup_action``) -- or any `LatticeParams` field given in
  ``grid`` -- on labelled queries, with K-fold cross-validation over queries.
* :class:`OnlineTuner` -- online. From feedback events (ids a user kept or rejected on one
  rerank) it moves a few continuous parameters by a bounded, deterministic step, chosen by
  comparing the current setting with perturbed ones on the event's own candidates.

The objective
-------------
For one query with top-``k`` list ``r`` (``k`` is the bundle size a user would take)::

    objective(r) = metric(r) - trap_weight * trap_share@k(r)

``metric`` is one of ``"ndcg@C"``, ``"mrr@C"``, ``"recall@C"``, ``"p@1"`` (functions of
`oscillink_core.evaluation`); ``trap_share@k`` is the share of the top ``k`` that are traps. A
setting's score on a set of queries is the mean objective over them. Queries without traps pay
no penalty; with ``trap_weight=1`` one trap in a top-10 costs 0.1, the same as losing 0.1 nDCG.

Labelled queries
----------------
:class:`LabelledQuery` holds one query: its embedding ``query`` (D,), the first-stage candidate
embeddings ``candidates`` (N, D), their ``ids``, a ``relevance`` mapping ``id -> gain`` (gain > 0
is relevant; ids not among the candidates may appear, they count in the ideal DCG and in the
recall denominator, as in BEIR) and the set of ``traps``. Builders:

* :func:`queries_from_qrels` -- BEIR-style ``qrels {qid: {doc_id: gain}}`` plus first-stage
  candidate lists and embedding lookups.
* :func:`queries_from_rows` / :func:`queries_from_jsonl` -- rows ``{query_id, query, id, text,
  label, trap}`` (the JSONL the benchmark and the CLI use), grouped by ``query_id`` in file order;
  texts are embedded with a caller-supplied ``embed`` function (e.g.
  `oscillink_core.app.embeddings.embed`) unless rows carry ``vector`` / ``query_vector``.

A CLI ``oscillink tune DATA.jsonl --out profile.json`` therefore needs only::

    from oscillink_core.app.embeddings import embed
    queries = queries_from_jsonl("DATA.jsonl", embed=embed)
    result = tune(queries, metric="ndcg@10", k=10, folds=5, seed=0, profile_path="profile.json")
    print(result.summary())
"""


from ._engine import _Engine  # noqa: F401  (used by the tests)
from .online import ONLINE_BOUNDS, FeedbackEvent, OnlineTuner
from .queries import LabelledQuery, queries_from_jsonl, queries_from_qrels, queries_from_rows
from .search import DEFAULT_GRID, TuneResult, assign_folds, tune

__all__ = [
    "LabelledQuery",
    "queries_from_qrels",
    "queries_from_rows",
    "queries_from_jsonl",
    "assign_folds",
    "DEFAULT_GRID",
    "tune",
    "TuneResult",
    "FeedbackEvent",
    "OnlineTuner",
    "ONLINE_BOUNDS",
]
