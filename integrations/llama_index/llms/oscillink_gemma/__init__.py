"""`GemmaLLM`: the packaged offline Gemma 3 270M (``oscillink_core.app.llm``) as a LlamaIndex LLM.

A ``CustomLLM`` (completion model): greedy, one line per answer, answers cached on disk by prompt
hash. For a query engine, pass `QA_PROMPT` as the text-QA template (the few-shot "Context /
Question / Answer" prompt the benchmark uses; the default LlamaIndex template asks a small base
model for more than it can do)::

    from llama_index.llms.oscillink_gemma import QA_PROMPT, GemmaLLM
    engine = index.as_query_engine(llm=GemmaLLM(), text_qa_template=QA_PROMPT, similarity_top_k=5)

`answer_isolated` is the reader-side defence (``oscillink_core.app.aggregate``): Gemma answers
from each retrieved node alone and the answer that independent nodes agree on is kept::

    from llama_index.llms.oscillink_gemma import answer_isolated
    out = answer_isolated(question, index.as_retriever(similarity_top_k=5).retrieve(question))
    out["answer"], out["votes"]

Needs the ``llm`` and ``llamaindex`` extras. Gemma is provided under and subject to the Gemma
Terms of Use (https://ai.google.dev/gemma/terms).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.llm import LLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.schema import MetadataMode, NodeWithScore
from pydantic import Field

from oscillink_core.app import aggregate as _aggregate
from oscillink_core.app import llm as _llm

__all__ = ["GemmaLLM", "QA_PROMPT", "answer_isolated"]

QA_PROMPT = PromptTemplate(_llm.qa_template("context_str", "query_str"))
CONTEXT_WINDOW = 32768  # Gemma 3 270M


class GemmaLLM(CustomLLM):
    """Gemma 3 270M (base, Q4_K_M GGUF, CPU), greedy; the completion stops at the first newline."""

    max_new_tokens: int = Field(default=24, ge=1)
    cache_dir: str | None = None
    use_cache: bool = True

    @classmethod
    def class_name(cls) -> str:
        return "OscillinkGemmaLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=CONTEXT_WINDOW, num_output=self.max_new_tokens, is_chat_model=False,
                           model_name="gemma-3-270m-q4_k_m")

    def _answer(self, prompt: str) -> str:
        if self.use_cache:
            cache = _llm.AnswerCache(Path(self.cache_dir) if self.cache_dir else _llm.default_cache_dir())
            return cache.answer(prompt, self.max_new_tokens)
        return _llm.generate(prompt, self.max_new_tokens)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._answer(prompt))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self._answer(prompt)  # greedy and cached: one chunk carrying the whole answer

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=text, delta=text)

        return gen()


def answer_isolated(question: str, nodes: Sequence[NodeWithScore], *, llm: LLM | None = None,
                    embed_model: BaseEmbedding | None = None, near_duplicate: float = 0.9,
                    source_key: str | None = None) -> dict[str, Any]:
    """Isolate-then-aggregate over ``nodes`` (best first, as a retriever or postprocessor returns
    them): the reader answers ``question`` from each node's text alone (the `QA_PROMPT` few-shot
    prompt with that one passage) and the answer with the most independent support is kept (rules:
    `oscillink_core.app.aggregate`).

    ``llm``: the reader (default ``GemmaLLM()``; any LlamaIndex LLM with ``complete``).
    ``embed_model``: embeds the passages to find near-duplicates (cosine ``>= near_duplicate``
    counts once); default the packaged MiniLM (``llama_index.postprocessor.oscillink``).
    ``source_key``: a metadata key whose equal values count once (``"ref_doc_id"`` groups the
    chunks of one source document); off by default. The nodes are not modified.

    Returns `AggregateResult.to_dict` (``answer``, ``answered``, ``votes`` with passage indices and
    support, per-passage ``answers``, ``groups``) plus ``ids``: each node's ``node_id``.
    """
    nodes = list(nodes)
    if not all(isinstance(n, NodeWithScore) for n in nodes):
        raise ValueError("nodes must be NodeWithScore objects")
    texts = [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
    reader = llm if llm is not None else GemmaLLM()
    if embed_model is None:
        from llama_index.postprocessor.oscillink import PackagedMiniLMEmbedding

        embed_model = PackagedMiniLMEmbedding()
    vecs = embed_model.get_text_embedding_batch(texts) if texts and all(t.strip() for t in texts) else None
    sources = None
    if source_key == "ref_doc_id":
        sources = [n.node.ref_doc_id for n in nodes]
    elif source_key:
        sources = [n.node.metadata.get(source_key) for n in nodes]
    res = _aggregate.isolate_then_aggregate(
        question, texts, answer_fn=lambda q, p: reader.complete(_llm.qa_prompt(q, [p])).text,
        embeddings=vecs, sources=sources, near_duplicate=near_duplicate)
    return {**res.to_dict(), "ids": [n.node.node_id for n in nodes]}
