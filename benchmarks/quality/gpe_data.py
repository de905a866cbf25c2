"""GPE, a published poisoning benchmark for fact-checking retrieval (PyPI package ``gpe-eval``).

The package is installed with ``pip install --no-deps gpe-eval`` (the Makefile does) and located
with ``importlib.util.find_spec``; it is never imported. Each of its 638 rows is a claim with an
evidence environment: benign evidence (fact-checks, encyclopedia and news pages), related
distractors (search snippets about the same entities) and, per attack, 5 to 10 planted passages:

* ``poisonedrag``: fabricated news written to be retrieved for the claim and to support it;
* ``ata``: fabricated rewrites of one benign page that support the claim;
* ``fakegpt``: LLM-written fake news articles that support the claim;
* ``ignore``: the claim quoted verbatim inside an instruction-injection "directive".

Protocol (one pool for every claim, as a store holds it): the corpus is every claim's benign
evidence and distractors, plus for an attack family every claim's planted passages of that
family. The query is the claim (a statement, not a question); relevant = the claim's own benign
evidence (grade 1); traps = the planted passages. Passage text = title + ". " + contents (the
distractors have no contents: title + ". " + snippet). The benign evidence's ``summary`` is the
benchmark's annotation of the page relative to the claim, so it is left out.

Claims are split by a seeded permutation: TRAIN = the first half, TEST = the second half.
Each document also carries its provenance as the store would have it: the URL's host
(``sources``) and, for the planted passages, the attacker's publication date.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

try:
    from .data import Dataset, Split
except ImportError:  # pragma: no cover - script-style import
    from data import Dataset, Split

GPE_SEED = 20261206
ATTACKS = ("poisonedrag", "ata", "fakegpt", "ignore")
VARIANTS = ("gpe_clean",) + tuple(f"gpe_{a}" for a in ATTACKS)


def gpe_path() -> Path:
    spec = importlib.util.find_spec("gpe")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("gpe-eval is not installed (pip install --no-deps gpe-eval)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "gpe.jsonl"


def load_rows() -> list[dict]:
    with open(gpe_path(), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def host(url: str | None) -> str:
    h = urlparse(url or "").netloc.lower()
    return h[4:] if h.startswith("www.") else h


def _text(item: dict, *, snippet: bool = False) -> str:
    title = (item.get("title") or "").strip()
    if snippet:
        body = (item.get("summary") or "").strip()
    else:
        c = item.get("contents") or []
        body = " ".join(str(s).strip() for s in (c if isinstance(c, list) else [c]) if str(s).strip())
    return f"{title}. {body}".strip(". ") if title else body


def corpus(rows: list[dict]) -> dict[str, dict]:
    """Every document once, in a fixed order: id -> {"text", "kind", "claim", "source", "published"}.
    ``kind`` is "benign", "distractor" or an attack name; ``claim`` is the first claim it is listed
    under (claims about one subject share pages)."""
    out: dict[str, dict] = {}
    for r in rows:
        env = r["evidence_environment"]
        cid = r["claim_id"]
        for b in env.get("benign") or []:
            out.setdefault(b["evidence_id"], {"text": _text(b), "kind": "benign", "claim": cid,
                                             "source": host(b.get("url")), "published": None})
        for d in env.get("related_distractor") or []:
            out.setdefault(d["evidence_id"], {"text": _text(d, snippet=True), "kind": "distractor", "claim": cid,
                                             "source": host(d.get("url")), "published": None})
        for attack in ATTACKS:
            for p in (env.get("poisoned") or {}).get(attack) or []:
                out.setdefault(p["evidence_id"], {"text": _text(p), "kind": attack, "claim": cid,
                                                 "source": host(p.get("url")),
                                                 "published": p.get("published_at")})
    return out


def claim_split(rows: list[dict], seed: int = GPE_SEED) -> tuple[list[int], list[int]]:
    """(train row indices, test row indices): a seeded permutation cut in half."""
    perm = np.random.default_rng(seed).permutation(len(rows)).tolist()
    half = len(rows) // 2
    return sorted(perm[:half]), sorted(perm[half:])


def load_gpe(variant: str, rows: list[dict] | None = None) -> tuple[Dataset, dict[str, dict]]:
    """(Dataset, the full corpus' metadata) for ``variant`` in VARIANTS."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown GPE variant {variant!r}; expected one of {VARIANTS}")
    rows = rows if rows is not None else load_rows()
    meta = corpus(rows)
    attack = None if variant == "gpe_clean" else variant[len("gpe_"):]
    keep = [d for d, m in meta.items() if m["kind"] in ("benign", "distractor") or m["kind"] == attack]
    relevant: dict[str, dict[str, float]] = {}  # a benign page may be evidence of several claims
    for r in rows:
        for b in r["evidence_environment"].get("benign") or []:
            relevant.setdefault(r["claim_id"], {})[b["evidence_id"]] = 1.0
    tr, te = claim_split(rows)

    def split(idx: list[int]) -> Split:
        use = [i for i in idx if rows[i]["claim_id"] in relevant]
        qids = [rows[i]["claim_id"] for i in use]
        return Split(qids, [rows[i]["original_claim"].strip() for i in use], {q: relevant[q] for q in qids})

    traps = {d for d in keep if meta[d]["kind"] == attack} if attack else set()
    ds = Dataset(variant, keep, [meta[d]["text"] for d in keep], split(tr), split(te), traps=traps,
                 trap_kind={d: attack for d in traps}, sources={d: meta[d]["source"] for d in keep},
                 description=f"GPE ({len(rows)} claims, gpe-eval package): one pool of every claim's benign "
                             f"evidence and distractors" + (f" plus every claim's {attack} passages" if attack else "")
                             + "; query = the claim; relevant = its benign evidence; claims split in half "
                               "(seeded)")
    return ds, meta


def host_breadth(rows: list[dict] | None = None, min_claims: int = 5) -> dict[str, float]:
    """Share of each kind's passages ("benign", each attack) whose host serves at least
    ``min_claims`` claims in the one-store corpus: how far "a source seen across the store" tells
    planted from genuine (the attacker chooses hosts, so it is measured, not used)."""
    rows = rows if rows is not None else load_rows()
    claims: dict[tuple[str, str], set[str]] = {}
    listed: list[tuple[str, str]] = []
    for r in rows:
        env = r["evidence_environment"]
        groups = [("benign", env.get("benign") or []), ("benign", env.get("related_distractor") or [])]
        groups += [(a, (env.get("poisoned") or {}).get(a) or []) for a in ATTACKS]
        for kind, docs in groups:
            for d in docs:
                key = (kind, host(d.get("url")))
                claims.setdefault(key, set()).add(r["claim_id"])
                listed.append(key)
    out: dict[str, float] = {}
    for kind in ("benign", *ATTACKS):
        keys = [k for k in listed if k[0] == kind]
        out[kind] = sum(len(claims[k]) >= min_claims for k in keys) / max(len(keys), 1)
    return out


if __name__ == "__main__":  # .venv/bin/python benchmarks/quality/gpe_data.py: the host-breadth figures
    for m in (2, 5):
        print(f"passages whose host serves >= {m} claims:",
              ", ".join(f"{k} {v:.2f}" for k, v in host_breadth(min_claims=m).items()))
