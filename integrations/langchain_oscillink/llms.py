"""`GemmaLLM`: the packaged offline Gemma 3 270M (``oscillink_core.app.llm``) as a LangChain LLM.

A text-completion model (``langchain_core.language_models.llms.LLM``): greedy, one line per
answer, answers cached on disk by prompt hash. Use it with `QA_PROMPT` (the few-shot
"Context / Question / Answer" prompt the benchmark uses)::

    from langchain_oscillink.llms import QA_PROMPT, GemmaLLM
    chain = {"context": retriever | join_docs, "question": RunnablePassthrough()} | QA_PROMPT | GemmaLLM()

`answer_isolated` is the reader-side defence (``oscillink_core.app.aggregate``): Gemma answers
from each Document alone and the answer that independent Documents agree on is kept::

    from langchain_oscillink.llms import answer_isolated
    out = answer_isolated(question, retriever.invoke(question))
    out["answer"], out["votes"]

Needs the ``llm`` and ``langchain`` extras. Gemma is provided under and subject to the Gemma
Terms of Use (https://ai.google.dev/gemma/terms).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.llms import LLM
from langchain_core.prompts import PromptTemplate
from pydantic import Field

from oscillink_core.app import aggregate as _aggregate
from oscillink_core.app import llm as _llm

__all__ = ["GemmaLLM", "QA_PROMPT", "answer_isolated"]

QA_PROMPT = PromptTemplate.from_template(_llm.qa_template("context", "question"))


class GemmaLLM(LLM):
    """Gemma 3 270M (base, Q4_K_M GGUF, CPU), greedy; the completion stops at the first newline.

    ``cache_dir``: where answers are cached (default `oscillink_core.app.llm.default_cache_dir`);
    ``use_cache=False`` always generates. ``stop`` sequences cut the completion at their first
    occurrence.
    """

    max_new_tokens: int = Field(default=24, ge=1)
    cache_dir: str | None = None
    use_cache: bool = True

    @property
    def _llm_type(self) -> str:
        return "oscillink-gemma3-270m"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": _llm.MODEL_NAME, "max_new_tokens": self.max_new_tokens, "decoding": "greedy"}

    def _call(self, prompt: str, stop: list[str] | None = None, run_manager: CallbackManagerForLLMRun | None = None,
              **kwargs: Any) -> str:
        if kwargs:
            raise TypeError(f"GemmaLLM does not take {sorted(kwargs)}")
        if self.use_cache:
            cache = _llm.AnswerCache(Path(self.cache_dir) if self.cache_dir else _llm.default_cache_dir())
            text = cache.answer(prompt, self.max_new_tokens)
        else:
            text = _llm.generate(prompt, self.max_new_tokens)
        for s in stop or ():
            if s and s in text:
                text = text[: text.index(s)]
        return text


def answer_isolated(question: str, docs: Sequence[Document], *, llm: LLM | None = None,
                    embeddings: Embeddings | None = None, near_duplicate: float = 0.9,
                    source_key: str | None = None) -> dict[str, Any]:
    """Isolate-then-aggregate over ``docs`` (best first): the reader answers ``question`` from each
    Document alone (the `QA_PROMPT` few-shot prompt with that one passage) and the answer with the
    most independent support is kept (rules: `oscillink_core.app.aggregate`).

    ``llm``: the reader (default ``GemmaLLM()``; any LangChain LLM that completes a prompt).
    ``embeddings``: embed the passages to find near-duplicates (cosine ``>= near_duplicate``
    counts once); default `PackagedMiniLMEmbeddings`. ``source_key``: a metadata key (e.g.
    ``"source"``) whose equal values count once (off by default: loaders put the file path there,
    so every chunk of one file would share a vote). The Documents are not modified.

    Returns `AggregateResult.to_dict` (``answer``, ``answered``, ``votes`` with passage indices and
    support, per-passage ``answers``, ``groups``) plus ``ids``: each Document's ``id`` (or None).
    """
    docs = list(docs)
    if not all(isinstance(d, Document) for d in docs):
        raise ValueError("docs must be LangChain Documents")
    texts = [d.page_content for d in docs]
    reader = llm if llm is not None else GemmaLLM()
    if embeddings is None:
        from .embeddings import PackagedMiniLMEmbeddings

        embeddings = PackagedMiniLMEmbeddings()
    vecs = embeddings.embed_documents(texts) if texts and all(t.strip() for t in texts) else None
    sources = [d.metadata.get(source_key) for d in docs] if source_key else None
    res = _aggregate.isolate_then_aggregate(
        question, texts, answer_fn=lambda q, p: reader.invoke(_llm.qa_prompt(q, [p])),
        embeddings=vecs, sources=sources, near_duplicate=near_duplicate)
    return {**res.to_dict(), "ids": [d.id for d in docs]}
