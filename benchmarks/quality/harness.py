"""Shared evaluation plumbing: per-query candidate views, metrics of a run, objectives."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from oscillink_core.evaluation import evaluate_rankings, near_duplicate_share_at_k, paired_bootstrap_ci

try:  # package-style and script-style imports both work
    from .data import Prepared
except ImportError:  # pragma: no cover
    from data import Prepared

K = 10
TRAP_KS = (5, 10)
NEAR_DUP_THRESHOLD = 0.9  # cosine for near_duplicate_share@k (see quality.md)
HEADLINE = ("ndcg@10", "mrr@10", "p@1", "recall@10", "trap_share@5", "any_trap@5", "trap_share@10",
            "any_trap@10", "both@5", "both@10", "near_dup@10")


@dataclass
class QueryView:
    qid: str
    Y: np.ndarray  # (n, d) unit rows of the candidates, first-stage order
    cos: np.ndarray  # (n,) float64 cosine to psi
    psi: np.ndarray  # (d,) unit query
    ids: list[str]  # candidate ids
    texts: list[str] | None = None  # candidate texts (what the adapters pass to the core)
    qtext: str | None = None  # the question


def views(prep: Prepared, part: str, limit: int | None = None) -> list[QueryView]:
    sp = prep.splits[part]
    out = []
    qids = sp["split"].qids[:limit] if limit else sp["split"].qids
    for i, q in enumerate(qids):
        cand = sp["cand"][i]
        Y = prep.doc_emb[cand]
        psi = sp["q_emb"][i]
        cos = (Y.astype(np.float64) @ psi.astype(np.float64))
        out.append(QueryView(q, Y, cos, psi, [prep.ds.doc_ids[j] for j in cand],
                             [prep.ds.doc_texts[j] for j in cand], sp["split"].qtexts[i]))
    return out


def iter_views(prep: Prepared, part: str, limit: int | None = None) -> Iterator[QueryView]:
    yield from views(prep, part, limit)


def run_metrics(prep: Prepared, part: str, vs: list[QueryView], tops: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-query metric arrays for one method's top-k index lists (one per view, same order)."""
    split = prep.splits[part]["split"]
    rankings = {v.qid: [v.ids[j] for j in t] for v, t in zip(vs, tops, strict=True)}
    traps = {v.qid: prep.ds.traps for v in vs} if prep.ds.traps else None
    out = evaluate_rankings(rankings, split.qrels, traps=traps, ks=TRAP_KS)
    if prep.ds.name == "two_hop":  # relevant = both paragraphs: are both in the top k?
        for k in (5, 10):
            out[f"both@{k}"] = np.array([float(set(split.qrels[v.qid]) <= set(v.ids[j] for j in t[:k]))
                                         for v, t in zip(vs, tops, strict=True)])
    out["near_dup@10"] = np.array([near_duplicate_share_at_k(v.Y[t], k=K, threshold=NEAR_DUP_THRESHOLD)
                                   for v, t in zip(vs, tops, strict=True)])
    return out


def objective(m: dict[str, np.ndarray]) -> float:
    """Train objective used for every tuned method: mean nDCG@10 minus mean trap share of the top 5
    (the trap term is 0 on datasets without traps)."""
    val = float(m["ndcg@10"].mean())
    if "trap_share@5" in m:
        val -= float(m["trap_share@5"].mean())
    return val


NDCG_LOSS_PENALTY = 10.0


def selection_gain(m: dict[str, np.ndarray], base: dict[str, np.ndarray]) -> float:
    """What every train-side choice maximises: objective(m) - objective(base), minus
    NDCG_LOSS_PENALTY times any loss of mean nDCG@10 against ``base`` (cosine). The penalty encodes
    the goal 'nDCG@10 at least cosine's, then fewer traps': a setting that drops relevant passages
    to remove traps is only chosen when nothing that keeps nDCG@10 does better."""
    d_ndcg = float(m["ndcg@10"].mean() - base["ndcg@10"].mean())
    return objective(m) - objective(base) - NDCG_LOSS_PENALTY * max(0.0, -d_ndcg)


def summarize(m: dict[str, np.ndarray], base: dict[str, np.ndarray] | None, n_boot: int, seed: int = 0) -> dict:
    out = {}
    for key in m:
        entry = {"mean": float(m[key].mean())}
        if base is not None:
            ci = paired_bootstrap_ci(base[key], m[key], n_boot=n_boot, seed=seed)
            entry["diff_vs_cosine"] = ci.mean
            entry["ci95"] = [ci.low, ci.high]
        out[key] = entry
    return out
