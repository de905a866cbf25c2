"""The text screening's speed-ups change no result: the ASCII fast path of `textsignals.tokens`, the
sparse `_shortest_cover`, and the per-call `textsignals._TextMemo` that `ranking.rank_and_screen`
shares between its two screens and the sibling split (tokens and `restates` per candidate,
difflib per ordered pair)."""

from __future__ import annotations

import random
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from oscillink_core import rerank, textsignals
from oscillink_core.screening import screen
from oscillink_core.textsignals import _TextMemo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from speed import make_texts_case  # noqa: E402

_UNICODE_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)  # the tokenizer's definition


def _cover_full_scan(terms, toks):
    """The sliding window over every token (the implementation before the sparse one)."""
    need, have, count, best, left = len(terms), 0, Counter(), None, 0
    for right, t in enumerate(toks):
        if t in terms:
            count[t] += 1
            if count[t] == 1:
                have += 1
        while have == need:
            if best is None or right + 1 - left < best[1] - best[0]:
                best = (left, right + 1)
            u = toks[left]
            if u in terms:
                count[u] -= 1
                if count[u] == 0:
                    have -= 1
            left += 1
    return best


def test_ascii_token_class_is_the_unicode_class_on_ascii():
    for c in map(chr, range(128)):
        assert bool(_UNICODE_TOKEN.fullmatch(c)) == bool(re.fullmatch(r"[A-Za-z0-9]", c)), repr(c)
        assert c.lower().isascii() and not re.fullmatch(r"[A-Z]", c.lower())


def test_tokens_equal_the_unicode_regex():
    rng = random.Random(0)
    # ASCII, accents, a capital that lower-cases to two characters, the Kelvin sign (lower-cases to ASCII
    # "k"), non-Latin letters and digits, a superscript digit, the underscore
    alphabet = [chr(c) for c in range(128)] + list("éÉßİıKΣσçÅ日本٣²_\u00a0")
    samples = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(20000)]
    samples += ["Arthur's Magazine (1844-1846)", "KELVIN 300K", "snake_case x_1", "naïve café", ""]
    for s in samples:
        assert textsignals.tokens(s) == _UNICODE_TOKEN.findall(s.lower()), repr(s)


def test_shortest_cover_equals_the_full_scan():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(10)]
    for _ in range(20000):
        toks = [rng.choice(vocab) for _ in range(rng.randint(0, 40))]
        terms = set(rng.sample(vocab, rng.randint(1, 5)))
        assert textsignals._shortest_cover(terms, toks) == _cover_full_scan(terms, toks), (terms, toks)


def _pool(n=100, seed=0):
    Y, psi, texts, question, planted = make_texts_case(n, seed=seed)
    top = np.argsort(-(Y.astype(np.float64) @ psi.astype(np.float64)), kind="stable")[:20].tolist()
    return Y, psi, texts, question, planted, top


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_memo_equals_the_direct_calls(seed):
    Y, psi, texts, question, planted, top = _pool(seed=seed)
    memo = _TextMemo(texts, question)
    q_tokens, terms = textsignals.tokens(question), textsignals.content_terms(question)
    assert (memo.q_tokens, memo.terms, memo.asking) == (q_tokens, terms, textsignals.is_question(question))
    toks = {i: textsignals.tokens(texts[i]) for i in top}
    for i in top:
        assert memo.tokens(i) == toks[i]
        assert memo.restates(i) == textsignals.restates(q_tokens, terms, toks[i])
    family = [i for kind, idx in planted.items() if kind != "restates_question" for i in idx]
    pairs = [(i, j) for i in top for j in top if i != j and (i in family or j in family)]
    for _ in range(2):  # the second round reads the memo
        for i, j in pairs:
            for max_tokens in (6, None):
                for shared in (True, False):
                    assert memo.edit_lean(i, j, max_tokens=max_tokens, shared=shared) == textsignals.edit_lean(
                        toks[i], toks[j], terms, max_tokens=max_tokens, shared=shared)
                assert memo.siblings(i, j, max_tokens=max_tokens) == textsignals.siblings(
                    toks[i], toks[j], terms, max_tokens=max_tokens)
    # one difflib entry per ordered pair and limits: (a, b) and (b, a) are not one entry
    assert len(memo._change) == 2 * len(pairs)


def test_screen_is_the_same_with_a_shared_memo():
    Y, psi, texts, question, planted, top = _pool()
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    cos = Yn.astype(np.float64) @ psi.astype(np.float64)
    other = cos + np.random.default_rng(0).normal(scale=0.05, size=cos.shape)  # another pool order
    memo = _TextMemo(texts, question)
    for score in (cos, other, cos):
        a = screen(Yn, cos, score, texts=texts, query_text=question)
        b = screen(Yn, cos, score, texts=texts, query_text=question, memo=memo)
        assert a.flags == b.flags and np.array_equal(a.decisive, b.decisive)
    assert any("twin_conflict" in f for f in a.flags) and any("query_echo" in f for f in a.flags)
    with pytest.raises(ValueError, match="memo"):
        screen(Yn, cos, cos, texts=list(texts), query_text=question, memo=memo)
    with pytest.raises(ValueError, match="memo"):
        screen(Yn, cos, cos, texts=texts, query_text=question + " ", memo=memo)


class _Uncached(_TextMemo):
    """A memo that remembers nothing: every call does the text work again (the code before the memo)."""

    __slots__ = ()

    def tokens(self, i):
        return textsignals.tokens(self.texts[i])

    def restates(self, i):
        return textsignals.restates(self.q_tokens, self.terms, self.tokens(i))

    def change(self, i, j, max_change, max_tokens):
        return textsignals._small_substitution(self.tokens(i), self.tokens(j), max_change, max_tokens)


def _run(psi, Y, texts, question, params):
    r = rerank(psi, Y, k=len(texts), params=params, texts=texts, query_text=question, light_receipt=True)
    return r.indices, [it.flags for it in r.items], r.receipt["screen"]


@pytest.mark.parametrize("params", [None, {"coh_scope": "always"}, {"coh_scope": "evidence"},
                                    {"screen_twin_lean": "any"}, {"dup_action": "demote", "screen": "drop"}])
def test_rerank_is_the_same_without_the_memo_and_diffs_each_ordered_pair_once(monkeypatch, params):
    calls: Counter = Counter()
    real_sub, real_tokens = textsignals._small_substitution, textsignals.tokens

    def sub(a, b, *rest):
        calls[("diff", tuple(a), tuple(b), *rest)] += 1
        return real_sub(a, b, *rest)

    def tok(text):
        calls[("tokens", text)] += 1
        return real_tokens(text)

    for seed in (0, 3):
        Y, psi, texts, question, planted, top = _pool(seed=seed)
        calls.clear()
        monkeypatch.setattr(textsignals, "_small_substitution", sub)
        monkeypatch.setattr(textsignals, "tokens", tok)
        cached = _run(psi, Y, texts, question, params)
        # every candidate's text tokenized once, every ordered pair diffed once
        assert max(n for key, n in calls.items() if key[0] == "diff" or key[1] in texts) == 1
        assert sum(key[0] == "diff" for key in calls) >= 6  # the planted near-copy pairs
        monkeypatch.setattr(textsignals, "_TextMemo", _Uncached)
        uncached = _run(psi, Y, texts, question, params)
        monkeypatch.undo()
        assert cached == uncached
