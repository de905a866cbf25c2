"""`GemmaLLM`: the packaged offline Gemma 3 270M (``oscillink_core.app.llm``) as a LangChain LLM.

A text-completion model (``langchain_core.language_models.llms.LLM``): greedy, one line per
answer, answers cached on disk by prompt hash. Use it with `QA_PROMPT` (the few-shot
"Context / Question / Answer" prompt the benchmark uses)::

    from langchain_oscillink.llms import QA_PROMPT, GemmaLLM
    chain = {"context": retriever | join_docs, "question": RunnablePassthrough()} | QA_PROMPT | GemmaLLM()

Needs the ``llm`` and ``langchain`` extras. Gemma is provided under and subject to the Gemma
Terms of Use (https://ai.google.dev/gemma/terms).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.llms import LLM
from langchain_core.prompts import PromptTemplate
from pydantic import Field

from oscillink_core.app import llm as _llm

__all__ = ["GemmaLLM", "QA_PROMPT"]

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
