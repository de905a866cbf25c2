"""The reader LLM through the frameworks: a real LangChain chain and a real LlamaIndex query engine
(real embeddings, real model, a couple of answers)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

PASSAGES = ["The Varnholt Prize for glassblowing was founded in 1937 in the Portuguese city of Braga.",
            "Glassblowing is a technique that inflates molten glass into a bubble with a blowpipe.",
            "Braga is one of the oldest Portuguese cities and lies in the north of the country."]
QUESTION = "In which city was the Varnholt Prize founded?"


def test_langchain_chain_with_retriever_prompt_and_gemma(tmp_path):
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.runnables import RunnablePassthrough
    from langchain_core.vectorstores import InMemoryVectorStore

    from langchain_oscillink import PackagedMiniLMEmbeddings
    from langchain_oscillink.llms import QA_PROMPT, GemmaLLM

    store = InMemoryVectorStore.from_texts(PASSAGES, PackagedMiniLMEmbeddings())
    retriever = store.as_retriever(search_kwargs={"k": 2})
    model = GemmaLLM(cache_dir=str(tmp_path))
    chain = ({"context": retriever | (lambda docs: "\n".join(d.page_content for d in docs)),
              "question": RunnablePassthrough()} | QA_PROMPT | model | StrOutputParser())
    out = chain.invoke(QUESTION)
    assert "Braga" in out
    assert list(tmp_path.rglob("*.json")), "the answer was cached"
    assert model.invoke("Question: What is 2 + 2?\nAnswer:", stop=["4"]).find("4") == -1


def test_llamaindex_query_engine_with_gemma(tmp_path):
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.llms.oscillink_gemma import QA_PROMPT, GemmaLLM
    from llama_index.postprocessor.oscillink import PackagedMiniLMEmbedding

    index = VectorStoreIndex.from_documents([Document(text=t) for t in PASSAGES],
                                            embed_model=PackagedMiniLMEmbedding())
    gemma = GemmaLLM(cache_dir=str(tmp_path))
    assert gemma.metadata.is_chat_model is False
    engine = index.as_query_engine(llm=gemma, text_qa_template=QA_PROMPT, similarity_top_k=2)
    resp = engine.query(QUESTION)
    assert "Braga" in str(resp)
    assert len(resp.source_nodes) == 2


def _load(path, name):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "examples" / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_langchain_example_answers_with_the_real_llm(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("OSCILLINK_LLM_CACHE", str(tmp_path))
    example = _load("langchain_rag.py", "lc_rag_example")
    assert example.main(["--question", "Who built Rocket?", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("answer of GemmaLLM") == 1
    assert list(tmp_path.rglob("*.json"))


def test_llamaindex_example_answers_with_the_real_llm(capsys, tmp_path, monkeypatch):
    from llama_index.core import Settings

    monkeypatch.setenv("OSCILLINK_LLM_CACHE", str(tmp_path))
    before = (Settings._llm, Settings._embed_model)
    try:
        example = _load("llamaindex_query_engine.py", "li_example_gemma")
        assert example.main(["--question", "Who built Rocket?", "--top-n", "3"]) == 0  # gemma is the default
    finally:
        Settings._llm, Settings._embed_model = before
    out = capsys.readouterr().out
    assert "answer of GemmaLLM" in out and "receipt in the LLM prompt: False" in out
