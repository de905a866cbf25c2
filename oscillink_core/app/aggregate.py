"""Isolate-then-aggregate: a reader-side defence against planted passages.

The reader answers the question from each passage *alone*, and the answer that the most
*independent* passages agree on is kept. A planted passage then has to win a vote instead of
steering one joint reading of the whole context, and copies of one planted passage count once.

The rules, in order:

1. **Answers.** ``answer_fn(question, passage)`` per passage; by default the offline Gemma
   (`oscillink_core.app.llm.answer` with that one passage, through the answer cache).
2. **Normalisation** (SQuAD style, `normalize_answer`): lower case, no punctuation, no articles
   (a, an, the), single spaces. An answer that normalises to nothing or to one of `ABSTAIN`
   ("unknown", "not mentioned", ...) is an abstention: it is recorded, and never wins over a real
   answer.
3. **Same answer.** Two real answers are the same when their normalised forms are equal, or when
   one occurs in the other as a run of whole words ("braga" in "city of braga"). Answers are
   grouped shortest first (then by rank): an answer joins the group whose *key* (its shortest
   answer) it contains; one that contains the keys of two or more groups ("braga or lisbon") is
   ambiguous and forms a group of its own, so it supports neither. The vote's text is the raw
   answer of its key.
4. **Independence.** Passages are *dependent* when their texts are equal after collapsing white
   space, when the cosine of their ``embeddings`` is ``>= near_duplicate``, or when they share a
   known ``sources`` entry (None is unknown and shares nothing). Dependence is closed
   transitively: the connected components (``groups``) are the units that vote, so a component
   supports an answer once however many of its passages gave it.
5. **Winner.** The real answer with the most supporting components; ties go to the answer whose
   best supporting passage ranks earliest (passages are given best first). When no passage gave a
   real answer, ``answer`` is ``""`` and ``answered`` is False.

What it does not do: it counts agreement, it does not know the truth. Planted passages that are
written to look independent (different wording, different claimed sources, cosine below the
threshold) and outnumber the true ones win the vote; it costs one reader call per passage.

Example (any reader works; here a lookup table stands in for the model):

>>> said = {"p1": "Braga", "p2": "the city of Braga", "p3": "Lisbon", "p4": "Lisbon."}
>>> res = isolate_then_aggregate("Where?", ["p3", "p4", "p1", "p2"], answer_fn=lambda q, p: said[p],
...                              sources=["blog", "blog", None, None])
>>> res.answer, [(v.answer, v.passages, v.support) for v in res.votes]
('Braga', [('Braga', (2, 3), 2), ('Lisbon', (0, 1), 1)])
>>> res.groups
((0, 1), (2,), (3,))

The solver core never imports this module.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import llm

__all__ = ["ABSTAIN", "AggregateResult", "Vote", "aggregate", "isolate_then_aggregate", "normalize_answer"]

#: Normalised answers that say "the passage does not tell" (an empty answer is one too).
ABSTAIN = frozenset({
    "unknown", "none", "no answer", "not known", "not mentioned", "not stated", "not given", "not specified",
    "no information", "not enough information", "i dont know", "n a", "na", "cannot be determined",
    "cannot answer", "not in context", "not in passage", "context does not say", "passage does not say",
})

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces.

    >>> normalize_answer("The city of  Braga.")
    'city of braga'
    """
    s = "".join(ch for ch in str(s).lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


@dataclass(frozen=True)
class Vote:
    """One answer and the passages that gave it."""

    answer: str
    """The raw answer of the group's key (its shortest normalised answer, earliest rank)."""
    key: str
    """The normalised key ("" for the abstentions)."""
    passages: tuple[int, ...]
    """Indices (into the passages, ascending) whose answer falls in this group."""
    support: int
    """Number of independent groups among ``passages``: the vote's weight."""
    abstain: bool = False
    """True for the vote of the abstentions (empty or `ABSTAIN` answers); it never wins over a real one."""

    def to_dict(self) -> dict:
        return {"answer": self.answer, "key": self.key, "passages": list(self.passages), "support": self.support,
                "abstain": self.abstain}


@dataclass(frozen=True)
class AggregateResult:
    """The kept answer, every vote (winner first) and how the passages were grouped."""

    answer: str
    """The winning vote's answer; ``""`` when no passage gave a real answer."""
    votes: tuple[Vote, ...]
    """Real answers by support (descending), ties by earliest supporting passage; the abstentions last."""
    answers: tuple[str, ...]
    """The raw answer read from each passage alone, in passage order."""
    groups: tuple[tuple[int, ...], ...]
    """The dependence components (passage indices counted together), singletons included, by first index."""

    @property
    def answered(self) -> bool:
        """True when some passage gave a real (non-abstaining) answer."""
        return bool(self.votes) and not self.votes[0].abstain

    @property
    def winner(self) -> Vote | None:
        """The winning vote, or None when every passage abstained."""
        return self.votes[0] if self.answered else None

    @property
    def counted_together(self) -> tuple[tuple[int, ...], ...]:
        """The groups of two or more passages (the ones whose vote was merged)."""
        return tuple(g for g in self.groups if len(g) > 1)

    def to_dict(self) -> dict:
        """JSON-ready: plain ints, strings and lists."""
        return {"answer": self.answer, "answered": self.answered, "votes": [v.to_dict() for v in self.votes],
                "answers": list(self.answers), "groups": [list(g) for g in self.groups]}


# ----------------------------------------------------------------------------- validation
def _check(question, passages, embeddings, sources, near_duplicate) -> tuple[list[str], np.ndarray | None]:
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string")
    if isinstance(passages, str) or not isinstance(passages, Sequence):
        raise ValueError(f"passages must be a sequence of strings, got {type(passages).__name__}")
    if len(passages) == 0:
        raise ValueError("passages is empty: there is nothing to answer from")
    for i, p in enumerate(passages):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"passages[{i}] must be a non-empty string, got {p!r:.40}")
    n = len(passages)
    if isinstance(near_duplicate, bool) or not isinstance(near_duplicate, int | float) \
            or not 0.0 < float(near_duplicate) <= 1.0:
        raise ValueError(f"near_duplicate must be a number in (0, 1], got {near_duplicate!r}")
    E = None
    if embeddings is not None:
        E = np.asarray(embeddings, dtype=np.float64)
        if E.ndim != 2 or E.shape[0] != n or E.shape[1] == 0:
            raise ValueError(f"embeddings must have shape ({n}, d) for {n} passages, got {E.shape}")
        if not np.isfinite(E).all():
            raise ValueError("embeddings hold NaN or infinite values")
        norms = np.linalg.norm(E, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"embeddings row {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros")
        E = E / norms
    if sources is not None:
        if isinstance(sources, str) or not isinstance(sources, Sequence) or len(sources) != n:
            got = len(sources) if isinstance(sources, Sequence) and not isinstance(sources, str) else type(sources)
            raise ValueError(f"sources must be a sequence of {n} entries (None for unknown), got {got}")
    return list(passages), E


# ----------------------------------------------------------------------------- the rules
def _components(n: int, edges: list[tuple[int, int]]) -> list[int]:
    """Union-find over ``n`` nodes; returns each node's root (the smallest index of its component)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


def _dependence(texts: list[str], E: np.ndarray | None, sources, near_duplicate: float) -> list[int]:
    n = len(texts)
    edges = []
    flat = [" ".join(t.split()) for t in texts]
    first: dict[str, int] = {}
    for i, t in enumerate(flat):
        if t in first:
            edges.append((first[t], i))
        first.setdefault(t, i)
    if E is not None:
        cos = E @ E.T
        ii, jj = np.nonzero(np.triu(cos >= float(near_duplicate) - 1e-12, k=1))
        edges += list(zip(ii.tolist(), jj.tolist(), strict=True))
    if sources is not None:
        seen: dict = {}
        for i, s in enumerate(sources):
            if s is None:
                continue
            if s in seen:
                edges.append((seen[s], i))
            seen.setdefault(s, i)
    return _components(n, edges)


def _contains(long: str, short: str) -> bool:
    return f" {short} " in f" {long} "


def _group_answers(norms: list[str]) -> tuple[list[int | None], list[str]]:
    """Rule 3: each passage's answer group (None for an abstention) and each group's key."""
    real = sorted({a for a in norms if a and a not in ABSTAIN}, key=lambda a: (len(a.split()), norms.index(a)))
    keys: list[str] = []
    group_of: dict[str, int] = {}
    for a in real:
        hits = [g for g, k in enumerate(keys) if _contains(a, k)]
        if len(hits) == 1:
            group_of[a] = hits[0]
        else:  # no group's key in it, or more than one (ambiguous): a group of its own
            group_of[a] = len(keys)
            keys.append(a)
    return [group_of.get(a) for a in norms], keys


def aggregate(answers: Sequence[str], roots: Sequence[int]) -> tuple[Vote, ...]:
    """The votes for per-passage ``answers`` given each passage's dependence component ``roots``
    (rules 2, 3 and 5; `isolate_then_aggregate` computes both). Winner first."""
    norms = [normalize_answer(a) for a in answers]
    group, keys = _group_answers(norms)
    votes = []
    for g, key in enumerate(keys):
        members = tuple(i for i, x in enumerate(group) if x == g)
        rep = next(i for i in members if norms[i] == key)
        votes.append(Vote(answer=str(answers[rep]).strip(), key=key, passages=members,
                          support=len({roots[i] for i in members})))
    votes.sort(key=lambda v: (-v.support, v.passages[0]))
    abstained = tuple(i for i, x in enumerate(group) if x is None)
    if abstained:
        votes.append(Vote(answer="", key="", passages=abstained, support=len({roots[i] for i in abstained}),
                          abstain=True))
    return tuple(votes)


def isolate_then_aggregate(question: str, passages: Sequence[str], *,
                           answer_fn: Callable[[str, str], str] | None = None,
                           embeddings=None, sources: Sequence | None = None, near_duplicate: float = 0.9,
                           cache: llm.AnswerCache | str | Path | None = None) -> AggregateResult:
    """Answer ``question`` from each passage alone and keep the answer independent passages agree on.

    Parameters
    ----------
    question : str
        The question (non-empty).
    passages : sequence of str
        The context, best ranked first (the rank breaks ties). At least one, each non-empty.
    answer_fn : callable(question, passage) -> str, optional
        The reader. Default: the offline Gemma, ``llm.answer(question, [passage], cache=cache)``.
    embeddings : array-like (n_passages, d), optional
        Passage vectors (any scale: rows are normalised here). Passages whose cosine is
        ``>= near_duplicate`` count as one. Without them only equal texts and shared sources do.
    sources : sequence, optional
        One entry per passage (a URL, a document id, ...); passages with an equal entry count as
        one; None means unknown.
    near_duplicate : float
        Cosine threshold in (0, 1] (default 0.9).
    cache : AnswerCache, folder or None
        The default reader's answer cache (None: `llm.default_cache_dir`); unused with ``answer_fn``.

    Returns
    -------
    AggregateResult
        ``answer``, ``votes`` (winner first, each with its supporting passage indices and
        independent support), the raw per-passage ``answers`` and the dependence ``groups``.

    Raises
    ------
    ValueError
        On an empty question, an empty or non-string passage list, embeddings or sources of the
        wrong length, or a threshold outside (0, 1]. TypeError when ``answer_fn`` returns a non-string.
    """
    texts, E = _check(question, passages, embeddings, sources, near_duplicate)
    if answer_fn is None:
        c = cache if isinstance(cache, llm.AnswerCache) else llm.AnswerCache(
            Path(cache) if cache else llm.default_cache_dir())

        def answer_fn(q: str, p: str) -> str:
            return llm.answer(q, [p], cache=c)

    answers = []
    for i, p in enumerate(texts):
        a = answer_fn(question, p)
        if not isinstance(a, str):
            raise TypeError(f"answer_fn returned {type(a).__name__} for passages[{i}], expected str")
        answers.append(a)
    roots = _dependence(texts, E, sources, near_duplicate)
    votes = aggregate(answers, roots)
    comps: dict[int, list[int]] = {}
    for i, r in enumerate(roots):
        comps.setdefault(r, []).append(i)
    groups = tuple(tuple(m) for _, m in sorted(comps.items()))
    answer = votes[0].answer if votes and not votes[0].abstain else ""
    return AggregateResult(answer=answer, votes=votes, answers=tuple(answers), groups=groups)
