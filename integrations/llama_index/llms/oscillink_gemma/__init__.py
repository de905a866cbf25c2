"""`GemmaLLM`: the packaged offline Gemma 3 270M (``oscillink_core.app.llm``) as a LlamaIndex LLM.

A ``CustomLLM`` (completion model): greedy, one line per answer, answers cached on disk by prompt
hash. For a query engine, pass `QA_PROMPT` as the text-QA template (the few-shot "Context /
Question / Answer" prompt the benchmark uses; the default LlamaIndex template asks a small base
model for more than it can do)::

    from llama_index.llms.oscillink_gemma import QA_PROMPT, GemmaLLM
    engine = index.as_query_engine(llm=GemmaLLM(), text_qa_template=QA_PROMPT, similarity_top_k=5)

Needs the ``llm`` and ``llamaindex`` extras. Gemma is provided under and subject to the Gemma
Terms of Use (https://ai.google.dev/gemma/terms).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.prompts import PromptTemplate
from pydantic import Field

from oscillink_core.app import llm as _llm

__all__ = ["GemmaLLM", "QA_PROMPT"]

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
