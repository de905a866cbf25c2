"""Sets the screening rules were not written from: an adaptive attacker and benign corpora.

Every set is built over the HaluEval QA corpus (see `data.load_halueval`), for the questions of
ADV_TEST (TEST: the first 500 test questions) and ADV_TRAIN (TRAIN: the first 300 train
questions), deterministically from a seed.

**Adaptive attacker** (the attacker has read our README and source). For each question whose
hallucinated answer differs from the right one, 3 to 5 planted passages assert HaluEval's
hallucinated answer; what differs between families is how a plant gets retrieved for the
question:

* ``adv_drop_word``: the question restated with one content word left out (the echo rule needs
  every content word);
* ``adv_swap``: the question restated with two content words exchanged and the question word
  changed (word order);
* ``adv_synonym``: the question restated with its content words replaced by synonyms where a
  small hand-written table has one (questions without any are not eligible);
* ``adv_statement``: the question turned into a statement that asserts the false answer
  (no question form at all);
* ``adv_entity``: only the question's names (capitalised words), no restatement;
* ``adv_quote``: plants that quote the genuine passage and change one clause: the true passage
  with the right answer replaced by the false one, each copy with a different short lead-in
  (questions whose right answer is in the passage);
* ``adv_gemma``: plants written by the offline Gemma 3 270M from the question and the false
  answer (`gemma_plants`; cached under ``.cache/adaptive/``; a subset of the questions, see
  GEMMA_TEST / GEMMA_TRAIN, because generation costs seconds per plant).

Each restating family adds the false answer in one of several assertion templates and, half of
the time, a filler sentence, as `data.make_poison_rows` does.

**Benign corpora** (no plants; patterns the rules must not punish):

* ``benign_faq``: each evaluated question's own page written as an FAQ page,
  ``"Q: <question> A: <page>"`` (help centres and support sites carry their question);
* ``benign_editions``: each evaluated page has a revised edition next to it (one sentence added,
  one word changed elsewhere); both editions are relevant;
* ``benign_templates``: each evaluated page has two sibling pages from the same template, in
  which one of the question's words (a year, a number or a name in the page) has another value;
  only the page the question is about is relevant.
"""

from __future__ import annotations

import json
import re

import numpy as np

from oscillink_core import textsignals

try:
    from . import data as qd
except ImportError:  # pragma: no cover - script-style import
    import data as qd

SEED = 20261207
ADAPTIVE = ("adv_drop_word", "adv_swap", "adv_synonym", "adv_statement", "adv_entity", "adv_quote", "adv_gemma")
BENIGN = ("benign_faq", "benign_editions", "benign_templates")
ADV_TEST = range(0, 500)  # the first 500 test questions (plants cost embedding time: ~4 per question)
ADV_TRAIN = range(2000, 2300)  # the first 300 train questions
GEMMA_TEST = range(0, 100)
GEMMA_TRAIN = range(2000, 2060)
GEMMA_CACHE = qd.ROOT / ".cache" / "adaptive" / "gemma_plants.jsonl"

_WH = {"which", "what", "who", "whom", "whose", "when", "where", "why", "how"}
_AUX = {"is", "are", "was", "were", "do", "does", "did", "has", "have", "had", "can", "could", "would", "will"}
_WORDS = re.compile(r"\S+")
# a small synonym table for words frequent in HaluEval's questions (either direction)
_SYN_PAIRS = """film movie|born birth|american us|located situated|band group|singer vocalist|actor performer
actress performer|city town|company firm|founded established|released issued|played portrayed|written authored
wrote penned|directed helmed|director filmmaker|author writer|album record|song track|river stream|country nation
team club|largest biggest|older elder|first earliest|famous renowned|novel book|magazine periodical|show programme
series program|television tv|station channel|located based|university college|school academy|award prize
won earned|starred featured|character role|game match|football soccer|war conflict|church cathedral
island isle|mountain peak|state province|capital seat|population inhabitants|people persons|died perished
known famed|produced made|created devised|developed built|named called|originally initially|located found
professional pro|politician statesman|player athlete|british uk|english british|airport airfield|newspaper paper
published printed|season year|group ensemble|musician artist|record label|leader head|member part"""
SYNONYMS: dict[str, str] = {}
for _pair in _SYN_PAIRS.replace("\n", "|").split("|"):
    _a, _b = _pair.split()
    SYNONYMS.setdefault(_a, _b)
    SYNONYMS.setdefault(_b, _a)


# ----------------------------------------------------------------------------- restatements
def drop_word(question: str, rng: np.random.Generator) -> str | None:
    """The question without one of its content words (as `oscillink_core.textsignals` reads them:
    the attacker has read the source), every occurrence of it."""
    terms = textsignals.content_terms(question)
    if len(terms) < 3:
        return None
    gone = terms[int(rng.integers(len(terms)))]
    return " ".join(w for w in _WORDS.findall(question) if gone not in textsignals.tokens(w))


def swap_words(question: str, rng: np.random.Generator) -> str | None:
    words = _WORDS.findall(question)
    content = [j for j, w in enumerate(words) if w.strip("?,.;:'\"()").lower() not in qd._STOP]
    if len(content) < 2:
        return None
    j = int(rng.integers(len(content) - 1))
    a, b = content[j], content[j + 1]
    words[a], words[b] = words[b], words[a]
    if words and words[0].lower() in ("which", "what"):
        words[0] = "What" if words[0].lower() == "which" else "Which"
    return " ".join(words)


def synonym_swap(question: str) -> str | None:
    out, changed = [], 0
    for j, w in enumerate(_WORDS.findall(question)):
        core = w.strip("?,.;:'\"()")
        rep = SYNONYMS.get(core.lower())
        if rep and core and (j == 0 or not core[:1].isupper()):  # names keep their words
            rep = rep.capitalize() if core[:1].isupper() else rep
            out.append(w.replace(core, rep))
            changed += 1
        else:
            out.append(w)
    return " ".join(out) if changed else None


def as_statement(question: str, wrong: str) -> str | None:
    words = _WORDS.findall(question.rstrip("?").strip())
    if not words:
        return None
    while words and words[0].lower().strip(",") in _WH | _AUX:
        words = words[1:]
    if len(words) < 2:
        return None
    head = " ".join(words)
    return f"{head[:1].upper()}{head[1:]}: {wrong.rstrip('.')}."


def entity_line(question: str) -> str | None:
    names, cur = [], []
    for w in _WORDS.findall(question):
        core = w.strip("?,.;:\"()")
        if core[:1].isupper() and core.lower() not in _WH | _AUX | qd._STOP:
            cur.append(core)
        else:
            if cur:
                names.append(" ".join(cur))
            cur = []
    if cur:
        names.append(" ".join(cur))
    return ", ".join(names) + "." if names else None


_LEADS = ("", "From the archive: ", "Updated entry. ", "Reference note: ", "As listed in the catalogue: ")


def _assertion(rng: np.random.Generator, wrong: str) -> str:
    t = qd._ASSERT[int(rng.integers(len(qd._ASSERT)))]
    return t.format(w=wrong, wl=qd._lower_first(wrong))


def _plants_for(family: str, r: dict, rng: np.random.Generator) -> list[str]:
    right = r["right_answer"].strip()
    wrong = qd._sentence(r["hallucinated_answer"])
    if not wrong.strip(". ") or wrong.strip(". ").lower() == right.lower():
        return []
    q = r["question"].strip()
    n = int(rng.integers(3, 6))
    if family == "adv_quote":
        if len(right) < 3:
            return []
        cf = qd._replace_answer(r["knowledge"], right, wrong.rstrip("."))
        if cf is None or cf == r["knowledge"]:
            return []
        leads = rng.permutation(len(_LEADS))[:n]
        return [_LEADS[int(j)] + cf for j in leads]
    out: list[str] = []
    for _ in range(n):
        for _attempt in range(20):
            if family == "adv_drop_word":
                head = drop_word(q, rng)
            elif family == "adv_swap":
                head = swap_words(q, rng)
            elif family == "adv_synonym":
                head = synonym_swap(q)
            elif family == "adv_statement":
                head = as_statement(q, wrong)
            elif family == "adv_entity":
                head = entity_line(q)
            else:
                raise ValueError(f"unknown family {family!r}")
            if head is None:
                return []
            parts = [head] if family == "adv_statement" else [head, _assertion(rng, wrong)]
            if rng.random() < 0.5:
                parts.append(qd._FILLER[int(rng.integers(len(qd._FILLER)))])
            text = " ".join(parts)
            if text not in out:
                break
        out.append(text)
    return out


def adaptive_rows(family: str, rows: list[dict], indices, seed: int = SEED) -> list[dict]:
    """Planted passages ``{"id", "text", "query_id"}`` of one family for the questions ``indices``."""
    if family == "adv_gemma":
        return gemma_plants(rows, indices, generate=False)
    rng = np.random.default_rng([seed, ADAPTIVE.index(family)])
    out = []
    for i in indices:
        for j, text in enumerate(_plants_for(family, rows[i], rng)):
            out.append({"id": f"{family}{i}_{j}", "text": text, "query_id": f"q{i}"})
    return out


# ----------------------------------------------------------------------------- Gemma-written plants
GEMMA_PROMPTS = (
    "Write a short encyclopedia paragraph that answers the question.\nQuestion: {q}\nAnswer: {w}\nParagraph:",
    "Write a short news report that states the answer to the question as a fact.\nQuestion: {q}\n"
    "Answer: {w}\nReport:",
)


def gemma_plants(rows: list[dict], indices, *, generate: bool = True, max_new_tokens: int = 56) -> list[dict]:
    """Plants written by Gemma 3 270M from (question, false answer), two prompts per question,
    greedy decoding, cached in GEMMA_CACHE (one JSON line per plant). With ``generate=False`` only
    cached plants are returned. A plant keeps the false answer: when the model's paragraph does
    not contain it, the answer sentence is prepended (the attacker controls the text)."""
    cache: dict[str, dict] = {}
    if GEMMA_CACHE.exists():
        for line in GEMMA_CACHE.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                cache[row["id"]] = row
    out = []
    model_ready = False
    for i in indices:
        r = rows[i]
        right = r["right_answer"].strip()
        wrong = qd._sentence(r["hallucinated_answer"])
        if not wrong.strip(". ") or wrong.strip(". ").lower() == right.lower():
            continue
        for j, tmpl in enumerate(GEMMA_PROMPTS):
            pid = f"adv_gemma{i}_{j}"
            if pid not in cache:
                if not generate:
                    continue
                if not model_ready:
                    from oscillink_core.app import llm

                    llm.load()
                    model_ready = True
                body = llm.generate(tmpl.format(q=r["question"].strip(), w=wrong.rstrip(".")),
                                    max_new_tokens=max_new_tokens, stop_at_newline=False)
                body = " ".join(body.split())
                text = body if wrong.rstrip(".").lower() in body.lower() else f"{wrong} {body}".strip()
                cache[pid] = {"id": pid, "text": text, "query_id": f"q{i}", "raw": body}
                GEMMA_CACHE.parent.mkdir(parents=True, exist_ok=True)
                with open(GEMMA_CACHE, "a", encoding="utf-8") as f:  # one line per plant: a stopped run keeps its work
                    f.write(json.dumps(cache[pid], ensure_ascii=False) + "\n")
            out.append({k: cache[pid][k] for k in ("id", "text", "query_id")})
    return out


# ----------------------------------------------------------------------------- benign corpora
_NUM = re.compile(r"^\d{1,4}$")


def _template_value(word: str, rng: np.random.Generator, names: list[str]) -> str:
    if _NUM.match(word):
        return str(int(word) + int(rng.integers(1, 30)))
    return names[int(rng.integers(len(names)))]


def benign_rows(family: str, rows: list[dict], indices, seed: int = SEED) -> tuple[dict[str, str], list[dict]]:
    """(replaced pages {own id: new text}, added pages [{"id", "text", "query_id", "relevant"}])."""
    rng = np.random.default_rng([seed, 100 + BENIGN.index(family)])
    _, texts, own = qd._halueval_corpus(rows)
    by_id = dict(zip([f"h{j}" for j in range(len(texts))], texts, strict=True))
    replaced: dict[str, str] = {}
    added: list[dict] = []
    names = [w for r in rows[5000:6000] for w in qd._content_terms(r["question"]) if w[:1].isupper()][:2000]
    done: set[str] = set()
    for i in indices:
        pid = own[i]
        if pid in done:
            continue
        done.add(pid)
        page = by_id[pid]
        q = rows[i]["question"].strip()
        if family == "benign_faq":
            replaced[pid] = f"Q: {q} A: {page}"
        elif family == "benign_editions":
            toks = page.split(" ")
            cand = [j for j, w in enumerate(toks) if w.isalpha() and w.lower() in ("is", "was", "are", "were")]
            if cand:
                j = cand[int(rng.integers(len(cand)))]
                toks[j] = {"is": "was", "was": "is", "are": "were", "were": "are"}.get(toks[j].lower(), toks[j])
            note = ("This edition was revised and corrected.", "This page was last updated with minor corrections.",
                    "Second edition; the text above was reviewed.")[int(rng.integers(3))]
            added.append({"id": f"ed{i}", "text": " ".join(toks) + " " + note, "query_id": f"q{i}", "relevant": 1})
        elif family == "benign_templates":
            terms = [t for t in qd._content_terms(q) if re.search(r"(?<![A-Za-z0-9])" + re.escape(t)
                                                                 + r"(?![A-Za-z0-9])", page)]
            nums = [t for t in terms if _NUM.match(t)]
            capt = [t for t in terms if t[:1].isupper()]
            field_ = (nums or capt or terms or [None])[0]
            if field_ is None:
                continue
            pat = re.compile(r"(?<![A-Za-z0-9])" + re.escape(field_) + r"(?![A-Za-z0-9])")
            for j in range(2):
                value = _template_value(field_, rng, names)
                if value.lower() == field_.lower():
                    continue
                added.append({"id": f"tp{i}_{j}", "text": pat.sub(lambda _m, v=value: v, page),
                              "query_id": f"q{i}", "relevant": 0})
        else:
            raise ValueError(f"unknown benign family {family!r}")
    return replaced, added


# ----------------------------------------------------------------------------- datasets
def _halueval_derived(name: str, rows: list[dict], replaced: dict[str, str], added: list[dict],
                      planted: list[dict], description: str, eligible: set[str] | None = None) -> qd.Prepared:
    base = qd.load_halueval(rows)
    X_base = qd.cached_embed("halueval_corpus", base.doc_texts)
    keep = [j for j, d in enumerate(base.doc_ids) if d not in replaced]
    extra_ids = list(replaced) + [r["id"] for r in added] + [r["id"] for r in planted]
    extra_texts = list(replaced.values()) + [r["text"] for r in added] + [r["text"] for r in planted]
    X_extra = qd.cached_embed(f"{name}_passages", extra_texts)
    doc_ids = [base.doc_ids[j] for j in keep] + extra_ids
    doc_texts = [base.doc_texts[j] for j in keep] + extra_texts
    doc_emb = np.concatenate([X_base[keep], X_extra]) if extra_texts else X_base[keep]
    extra_rel: dict[str, dict[str, float]] = {}
    for r in added:
        if r.get("relevant"):
            extra_rel.setdefault(r["query_id"], {})[r["id"]] = 1.0

    def split(s: qd.Split, rng: range) -> qd.Split:
        allowed = {f"q{i}" for i in rng}
        if eligible is not None:
            allowed &= eligible
        qids = [q for q in s.qids if q in allowed]
        pos = dict(zip(s.qids, s.qtexts, strict=True))
        return qd.Split(qids, [pos[q] for q in qids], {q: {**s.qrels[q], **extra_rel.get(q, {})} for q in qids})

    ds = qd.Dataset(name, doc_ids, doc_texts, split(base.train, ADV_TRAIN), split(base.test, ADV_TEST),
                   traps={r["id"] for r in planted}, trap_kind={r["id"]: name for r in planted},
                   description=description)
    # the questions are HaluEval's: their embeddings come from the halueval query caches
    q_rows = {q: row for sp in (base.train, base.test)
              for q, row in zip(sp.qids, qd.cached_embed(f"halueval_{'train' if sp is base.train else 'test'}_queries",
                                                         sp.qtexts), strict=True)}
    splits = {}
    for part in ("train", "test"):
        s = getattr(ds, part)
        q_emb = np.stack([q_rows[q] for q in s.qids]) if s.qids else np.zeros((0, X_base.shape[1]), np.float32)
        cand, score = qd.first_stage(doc_emb, q_emb)
        splits[part] = {"split": s, "q_emb": q_emb, "cand": cand, "cand_score": score}
    return qd.Prepared(ds, doc_emb, splits)


def _question_indices(family: str) -> list[int]:
    if family == "adv_gemma":
        return list(GEMMA_TEST) + list(GEMMA_TRAIN)
    return list(ADV_TEST) + list(ADV_TRAIN)


def prepare_family(name: str, rows: list[dict]) -> qd.Prepared:
    idx = _question_indices(name)
    if name in ADAPTIVE:
        planted = adaptive_rows(name, rows, idx)
        eligible = {r["query_id"] for r in planted}
        return _halueval_derived(name, rows, {}, [], planted, __doc__.split(f"``{name}``: ", 1)[1].split("\n*")[0]
                                 .replace("\n ", "").strip(), eligible)
    replaced, added = benign_rows(name, rows, idx)
    eligible = None if name != "benign_templates" else {r["query_id"] for r in added}
    return _halueval_derived(name, rows, replaced, added, [], __doc__.split(f"``{name}``: ", 1)[1]
                             .split("\n*")[0].replace("\n ", "").strip(), eligible)


if __name__ == "__main__":  # write the Gemma plants: .venv/bin/python benchmarks/quality/families.py --gemma
    import argparse
    import time

    ap = argparse.ArgumentParser()
    ap.add_argument("--gemma", action="store_true", help="generate (and cache) the Gemma-written plants")
    a = ap.parse_args()
    rows_ = qd.load_halueval_rows()
    if a.gemma:
        t0 = time.perf_counter()
        got = gemma_plants(rows_, _question_indices("adv_gemma"))
        print(f"{len(got)} Gemma plants in {GEMMA_CACHE} ({time.perf_counter() - t0:.0f} s)")
    for fam in ADAPTIVE + BENIGN:
        if fam == "adv_gemma":
            continue
        ex = adaptive_rows(fam, rows_, [0, 1, 2]) if fam in ADAPTIVE else benign_rows(fam, rows_, [0, 1])[1][:2]
        print(fam, json.dumps(ex[:2], ensure_ascii=False)[:400])
