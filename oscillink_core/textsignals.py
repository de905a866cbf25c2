"""Text signals for screening: a passage that restates the question, and the edit between two near-copies.

Embeddings tell that two passages are near-copies; they do not tell which of the two was edited
toward the question. These pure functions read the texts (plain Python, no tokenizer model):

* `restates`: for a question (`is_question`), the passage holds every content word of the
  question (at least ``min_terms`` distinct ones) inside one stretch of tokens no longer than the
  question itself. Corpus-poisoning
  passages are written to be retrieved for a question and usually carry it (PoisonedRAG prefixes
  the question; keyword stuffing lists its words); a genuine passage spreads those words over its
  sentences. An attacker who paraphrases the question is not caught by this signal. A statement
  query (a claim to check) is different: the passages that support it contain it, so the signal
  is off for queries that are not questions.
* `edit_lean`: two token sequences that differ by a small substitution (each side has changed
  tokens and the smaller change is at most ``max_tokens`` tokens and at most ``max_change`` of
  the shorter text) are one passage and an edited copy; the side whose changed tokens hold more
  of the question's content words is the copy edited toward the question (a counterfactual edit
  puts the asserted answer, phrased with the question's words, where the original value stood).
  With ``shared=True`` (the default) only question words that the *other* passage also holds
  count: a counterfactual copy repeats words its original already has, while two genuine pages
  written from one template (a team's 1926 and 1976 seasons) differ by a question word that the
  page about something else lacks, and the page that holds it is the answer, not an edit.
  A copy that only re-inflects its original (is -> was, a -> the) and adds text does not
  disagree with it (a revised edition with a note appended): the edit needs each side to change
  something beyond inflection, as a pure addition already does not count. An attacker who wants
  the copy to assert another answer has to remove the original's answer, which is a change of
  content. Returns None when the two are not such an edit, and "tie" when neither side leans.

Tokens are lower-case runs of letters and digits; content words are tokens of two or more
characters outside a small English stop list.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Sequence

__all__ = ["tokens", "content_terms", "is_question", "restates", "asks", "beyond_restatement",
           "speaks_of_something_else", "edit_lean", "siblings", "STOP_WORDS", "INFLECTION_WORDS"]

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
# On ASCII text _TOKEN's class [^\W_] is exactly [A-Za-z0-9] (str.isalnum of the 128 ASCII characters), and
# the lower-cased text holds no A-Z: the same tokens, found without Unicode category look-ups.
_ASCII_TOKEN = re.compile(r"[a-z0-9]+")

STOP_WORDS = frozenset("""
a about above after again against all also am an and another any are as at be because been before being
below between both but by can could did do does doing down during each either few first for from further
had has have having he her here hers herself him himself his how i if in into is it its itself known last
least less many may me might more most much must my myself name named neither no nor not of off on once one
only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up upon very was we were what when
where which while who whom whose why will with would you your yours yourself
""".split())


# Inflection: the words a revised edition changes without changing what it says (tense, articles).
# A change limited to these is no disagreement about the answer (`edit_lean`).
INFLECTION_WORDS = frozenset("a an the is was are were am be been being has have had do does did".split())


def tokens(text: str) -> list[str]:
    """Lower-case word tokens.

    >>> tokens("Arthur's Magazine (1844-1846)")
    ['arthur', 's', 'magazine', '1844', '1846']
    """
    low = text.lower()
    return _ASCII_TOKEN.findall(low) if low.isascii() else _TOKEN.findall(low)


def content_terms(question: str) -> list[str]:
    """Distinct content words of ``question``, in order.

    >>> content_terms("Which magazine was started first, Arthur's Magazine or First for Women?")
    ['magazine', 'started', 'arthur', 'women']
    """
    return _content_terms(tokens(question))


def _content_terms(question_tokens: Sequence[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for t in question_tokens:
        if len(t) < 2 or t in STOP_WORDS or t in seen:
            continue
        seen.add(t)
        out.append(t)
    return out


_ASKING = frozenset("""who whom whose what which when where why how is are was were do does did can could
will would should has have had""".split())


_EMBEDDED = frozenset("who whom whose what which".split())


def is_question(text: str) -> bool:
    """A question: ends with "?", starts with an interrogative or auxiliary word, or, without a
    closing full stop, asks in mid-sentence ("Dune was written by who", "the capital of what
    country"): a claim ends with a full stop, and its "who" or "which" opens a relative clause.

    >>> is_question("Who wrote Dune"), is_question("ALDH1 expression predicts poor outcome.")
    (True, False)
    >>> is_question("Dune was written by who"), is_question("The author who wrote Dune was born in 1920.")
    (True, False)
    """
    t = text.strip()
    first = tokens(t[:40])
    if t.endswith("?") or bool(first) and first[0] in _ASKING:
        return True
    return not t.endswith((".", "!", '"', "'")) and not _EMBEDDED.isdisjoint(tokens(t))


def _shortest_cover(terms: set[str], toks: Sequence[str]) -> tuple[int, int] | None:
    """(start, stop) of the shortest stretch of ``toks`` holding every term (None when some is absent);
    of equally short stretches the first.

    The window slides over the positions of the terms only: a shortest stretch starts and ends
    with a term, so the tokens between them need no visit.
    """
    hits = [(i, t) for i, t in enumerate(toks) if t in terms]
    need = len(terms)
    if need == 0 or len({t for _, t in hits}) < need:
        return None
    count: Counter[str] = Counter()
    have = 0
    best: tuple[int, int] | None = None
    left = 0
    for right, t in hits:
        count[t] += 1
        if count[t] == 1:
            have += 1
        while have == need:
            start, u = hits[left]
            if best is None or right + 1 - start < best[1] - best[0]:
                best = (start, right + 1)
            count[u] -= 1
            if count[u] == 0:
                have -= 1
            left += 1
    return best


def restates(question_tokens: Sequence[str], terms: Sequence[str], passage_tokens: Sequence[str], *,
             min_terms: int = 3) -> bool:
    """True when the passage holds all ``terms`` (the question's content words, >= ``min_terms``)
    within a stretch no longer than the question (``len(question_tokens)`` tokens).

    >>> q = "Which magazine was started first, Arthur's Magazine or First for Women?"
    >>> restates(tokens(q), content_terms(q), tokens("Question: " + q + " Arthur's came first."))
    True
    >>> restates(tokens(q), content_terms(q), tokens("Arthur's Magazine (1844-1846) was an American "
    ...          "literary periodical. First for Women is a woman's magazine started in 1989."))
    False
    """
    if len(terms) < min_terms:
        return False
    span = _shortest_cover(set(terms), passage_tokens)
    return span is not None and span[1] - span[0] <= len(question_tokens)


_ASKED = re.compile(r"[^.?!]*\?")


def asks(terms: Sequence[str], text: str) -> bool:
    """True when some question sentence of ``text`` (a stretch ending with "?") holds every one of
    ``terms``: the passage poses the question itself, as PoisonedRAG-style passages do.

    >>> t = content_terms("Who built the locomotive Rocket?")
    >>> asks(t, "Who built the locomotive Rocket? It was built by a man from Shildon.")
    True
    >>> asks(t, "The locomotive Rocket was built in 1829. Who drove it first?")
    False
    """
    need = set(terms)
    return bool(need) and any(need <= set(tokens(m.group(0))) for m in _ASKED.finditer(text))


def speaks_of_something_else(terms: Sequence[str], passage_tokens: Sequence[str], *, max_share: float = 0.0) -> bool:
    """True when the passage restates the question in a stretch and then speaks of something else:
    outside the shortest stretch holding all ``terms`` it has at least as many tokens as the
    stretch, and holds at most ``max_share`` of the terms there (`beyond_restatement`). A short
    genuine passage that is little more than its restatement is not "something else".

    >>> t = content_terms("Which magazine was started first, Arthur's Magazine or First for Women?")
    >>> speaks_of_something_else(t, tokens("magazine started arthur women. Dune is a science fiction "
    ...                          "novel by Frank Herbert, published in 1965."))
    True
    >>> speaks_of_something_else(t, tokens("Arthur's Magazine started before First for Women did."))
    False
    """
    span = _shortest_cover(set(terms), passage_tokens) if terms else None
    if span is None:
        return False
    rest = len(passage_tokens) - (span[1] - span[0])
    return rest >= span[1] - span[0] and _share_outside(set(terms), passage_tokens, span) <= max_share


def beyond_restatement(terms: Sequence[str], passage_tokens: Sequence[str]) -> float:
    """Share of the question's content words that the passage also holds outside the shortest
    stretch holding them all (1.0 when there is no such stretch): how much more of the question
    the passage speaks about than its restatement.

    >>> q = "Which magazine was started first, Arthur's Magazine or First for Women?"
    >>> beyond_restatement(content_terms(q), tokens("magazine started arthur women. Dune is a novel."))
    0.0
    >>> beyond_restatement(content_terms(q), tokens("Arthur's Magazine was started before First for "
    ...                    "Women. Arthur's Magazine was an American magazine."))
    0.5
    """
    span = _shortest_cover(set(terms), passage_tokens) if terms else None
    return 1.0 if span is None else _share_outside(set(terms), passage_tokens, span)


def _share_outside(terms: set[str], toks: Sequence[str], span: tuple[int, int]) -> float:
    rest = set(toks[:span[0]]) | set(toks[span[1]:])
    return len(rest & terms) / len(terms)


def edit_lean(a: Sequence[str], b: Sequence[str], terms: Sequence[str], *, max_change: float = 0.2,
              max_tokens: int | None = 6, shared: bool = True) -> str | None:
    """Which of two near-copies was edited toward the question: "a", "b", "tie", or None when
    they do not differ by a small substitution (see the module docstring; ``shared``: count only
    the changed question words that the other side also holds).

    >>> t = content_terms("Who wrote the novel Dune?")
    >>> a = tokens("Dune is a novel written by Frank Herbert in 1965.")
    >>> b = tokens("Dune is a novel written by the novel Dune was written by Isaac Asimov in 1965.")
    >>> edit_lean(a, b, t)
    'b'
    >>> edit_lean(a, tokens("Something else entirely, about a different book and its author."), t) is None
    True
    >>> t = content_terms("Where did the 1926 Navy team play?")
    >>> a = tokens("The 1926 Navy team played its home games in Annapolis, Maryland.")
    >>> b = tokens("The 1976 Navy team played its home games in Annapolis, Maryland.")
    >>> edit_lean(a, b, t), edit_lean(a, b, t, shared=False)
    ('tie', 'a')
    >>> t = content_terms("Which team won the second division title?")
    >>> a = tokens("The team was promoted and won the second division title in 1990.")
    >>> b = tokens("The team is promoted and won the second division title in 1990. Second edition.")
    >>> edit_lean(a, b, t) is None  # an edition: re-inflected, a note added
    True
    """
    return _lean_of(a, b, _small_substitution(a, b, max_change, max_tokens), set(terms), shared)


def _lean_of(a: Sequence[str], b: Sequence[str], change: tuple[set[str], set[str]] | None, q: set[str],
             shared: bool) -> str | None:
    """`edit_lean` from the result of `_small_substitution` (``q``: the question's content words)."""
    if change is None or not change[0] - INFLECTION_WORDS or not change[1] - INFLECTION_WORDS:
        return None  # identical up to inflection on one side: that side states nothing else
    return _lean(a, b, *change, q, shared)


def _small_substitution(a: Sequence[str], b: Sequence[str], max_change: float, max_tokens: int | None
                        ) -> tuple[set[str], set[str]] | None:
    """The changed tokens of each side when a and b differ by a small substitution, else None."""
    if not a or not b:
        return None
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    changed_a: list[str] = []
    changed_b: list[str] = []
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op != "equal":
            changed_a.extend(a[i1:i2])
            changed_b.extend(b[j1:j2])
    if not changed_a or not changed_b:  # identical, or only text added on one side: no conflict
        return None
    smaller = min(len(changed_a), len(changed_b))
    if smaller > max_change * min(len(a), len(b)) or max_tokens is not None and smaller > max_tokens:
        return None
    return set(changed_a), set(changed_b)


def _lean(a: Sequence[str], b: Sequence[str], changed_a: set[str], changed_b: set[str], q: set[str],
          shared: bool) -> str:
    if shared:
        qa, qb = len(changed_a & q & set(b)), len(changed_b & q & set(a))
    else:
        qa, qb = len(changed_a & q), len(changed_b & q)
    return "a" if qa > qb else "b" if qb > qa else "tie"


def siblings(a: Sequence[str], b: Sequence[str], terms: Sequence[str], *, max_change: float = 0.2,
             max_tokens: int | None = 6) -> bool:
    """Are two near-copies two genuine pages from one template rather than a passage and its
    edited copy? They differ by a small substitution, and the field that differs is the page's
    subject, which the question names, not the answer. True when either

    * one side's changed content words are all question words, at most one more than the other
      side's, and the other side's changed words hold none (the question names one page's subject;
      the other page is about something else, even where it still mentions the name elsewhere, as
      in "Irvine (stylised as LOUDspeakers)"), or
    * no side leans by the shared rule (`edit_lean` with ``shared=True`` gives "tie") while a
      changed question word is held by one side only (``shared=False`` leans).

    A counterfactual copy changes the answer: its changed words hold the asserted value, which the
    question does not hold, or a phrase of the question's words where a shorter answer stood, so it
    is not a sibling of its original.

    >>> t = content_terms("Where did the 1926 Navy team play?")
    >>> page = tokens("The 1926 Navy team played in Annapolis.")
    >>> siblings(page, tokens("The 1976 Navy team played in Annapolis."), t)
    True
    >>> siblings(page, tokens("The 1926 Navy team played in Baltimore."), t)
    False
    >>> t = content_terms("Who starred in McLeod's Daughters?")
    >>> siblings(tokens("McLeod's Daughters starred Lisa Chappell."),
    ...          tokens("Christian Daughters starred Lisa Chappell."), t)
    True
    >>> t = content_terms("When was the band Loudspeakers formed?")
    >>> siblings(tokens("Loudspeakers (stylised LOUDspeakers) is a band formed in 2009."),
    ...          tokens("Irvine (stylised LOUDspeakers) is a band formed in 2009."), t)
    True
    """
    return _siblings_of(a, b, _small_substitution(a, b, max_change, max_tokens), set(terms))


def _siblings_of(a: Sequence[str], b: Sequence[str], change: tuple[set[str], set[str]] | None, q: set[str]
                 ) -> bool:
    """`siblings` from the result of `_small_substitution` (``q``: the question's content words)."""
    if change is None:
        return False
    ca, cb = set(_content_terms(change[0])), set(_content_terms(change[1]))  # the changed content words
    # a field swap is like for like (a name for a name, at most one word longer); a copy that puts a
    # phrase of the question's words where a one-word answer stood is an edit toward the question
    if ca and cb and ((ca <= q and not cb & q and len(ca) <= len(cb) + 1)
                      or (cb <= q and not ca & q and len(cb) <= len(ca) + 1)):
        return True
    return _lean(a, b, *change, q, True) == "tie" and _lean(a, b, *change, q, False) != "tie"


class _TextMemo:
    """The text work on one candidate set and one question, shared by the screening calls of one
    ranking (`ranking.rank_and_screen` screens up to twice and splits template siblings; each
    of them reads the same passages and diffs the same near-copies).

    Holds the question's tokens, content words and `is_question`, and per candidate index its
    tokens and `restates`; `_small_substitution` per *ordered* pair of indices (difflib's
    alignment is not symmetric, so (a, b) and (b, a) are separate entries). Results equal the
    direct calls of the module's functions. One memo belongs to one call: it is not shared
    between threads or across candidate sets.
    """

    __slots__ = ("texts", "query_text", "q_tokens", "terms", "term_set", "asking", "_tokens", "_restates",
                 "_change")

    def __init__(self, texts: Sequence[str], query_text: str):
        self.texts = texts
        self.query_text = query_text
        self.q_tokens = tokens(query_text)
        self.terms = _content_terms(self.q_tokens)
        self.term_set = set(self.terms)
        self.asking = is_question(query_text)
        self._tokens: dict[int, list[str]] = {}
        self._restates: dict[int, bool] = {}
        self._change: dict[tuple, tuple[set[str], set[str]] | None] = {}

    def holds(self, texts: Sequence[str], query_text: str) -> bool:
        """Is this the memo of these texts (the same object) and this question?"""
        return texts is self.texts and query_text == self.query_text

    def tokens(self, i: int) -> list[str]:
        """`tokens` of candidate ``i``'s text (the list is shared: do not modify it)."""
        t = self._tokens.get(i)
        if t is None:
            t = self._tokens[i] = tokens(self.texts[i])
        return t

    def restates(self, i: int) -> bool:
        """`restates` of candidate ``i`` (default ``min_terms``)."""
        r = self._restates.get(i)
        if r is None:
            r = self._restates[i] = restates(self.q_tokens, self.terms, self.tokens(i))
        return r

    def change(self, i: int, j: int, max_change: float, max_tokens: int | None
               ) -> tuple[set[str], set[str]] | None:
        """`_small_substitution` of candidates ``i`` and ``j`` in this order."""
        key = (i, j, max_change, max_tokens)
        if key in self._change:
            return self._change[key]
        c = self._change[key] = _small_substitution(self.tokens(i), self.tokens(j), max_change, max_tokens)
        return c

    def edit_lean(self, i: int, j: int, *, max_change: float = 0.2, max_tokens: int | None = 6,
                  shared: bool = True) -> str | None:
        """`edit_lean` of candidates ``i`` and ``j`` (in this order) for the question."""
        return _lean_of(self.tokens(i), self.tokens(j), self.change(i, j, max_change, max_tokens), self.term_set,
                        shared)

    def siblings(self, i: int, j: int, *, max_change: float = 0.2, max_tokens: int | None = 6) -> bool:
        """`siblings` of candidates ``i`` and ``j`` (in this order) for the question."""
        return _siblings_of(self.tokens(i), self.tokens(j), self.change(i, j, max_change, max_tokens),
                            self.term_set)
