"""Helpers shared by the LangChain integration tests (not tests themselves)."""

from __future__ import annotations

import json
import threading
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.vectorstores import InMemoryVectorStore, VectorStore

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "data" / "demo_corpus.jsonl"
QUESTIONS = ROOT / "examples" / "data" / "demo_questions.json"


class CountingEmbeddings(DeterministicFakeEmbedding):
    """``DeterministicFakeEmbedding`` that counts the passages and queries it embedded."""

    n_documents: int = 0
    n_queries: int = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.n_documents += len(texts)
        return super().embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        self.n_queries += 1
        return super().embed_query(text)

    def reset(self) -> None:
        self.n_documents = 0
        self.n_queries = 0


class MemoEmbeddings(Embeddings):
    """Wraps an `Embeddings` and remembers vectors by text, so the corpus is embedded once per session."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner = inner
        self._memo: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if todo:
            rows = self.inner.embed_documents(todo)
            with self._lock:
                self._memo.update(zip(todo, rows, strict=True))
        return [self._memo[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


class TextOnlyStore(VectorStore):
    """A store that searches by text only and never exposes vectors (the generic re-embed path)."""

    def __init__(self, inner: InMemoryVectorStore) -> None:
        self.inner = inner

    @property
    def embeddings(self) -> Embeddings:
        return self.inner.embeddings

    def add_texts(self, texts, metadatas=None, **kwargs: Any) -> list[str]:
        return self.inner.add_texts(texts, metadatas, **kwargs)

    @classmethod
    def from_texts(cls, texts, embedding, metadatas=None, **kwargs: Any) -> TextOnlyStore:
        return cls(InMemoryVectorStore.from_texts(texts, embedding, metadatas, **kwargs))

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        return self.inner.similarity_search_with_score(query, k=k, **kwargs)


class RecordingHandler(BaseCallbackHandler):
    """Records chain and retriever runs (name, inputs/outputs, run ids) from any thread."""

    def __init__(self) -> None:
        self.starts: list[dict] = []
        self.ends: list[dict] = []
        self.retriever_runs: list[dict] = []
        self._lock = threading.Lock()

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kwargs: Any) -> None:
        with self._lock:
            self.starts.append({"name": kwargs.get("name"), "inputs": inputs, "run_id": run_id,
                                "parent_run_id": parent_run_id})

    def on_chain_end(self, outputs, *, run_id, parent_run_id=None, **kwargs: Any) -> None:
        with self._lock:
            self.ends.append({"outputs": outputs, "run_id": run_id, "parent_run_id": parent_run_id})

    def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, **kwargs: Any) -> None:
        with self._lock:
            self.retriever_runs.append({"run_id": run_id, "parent_run_id": parent_run_id})

    def rerank_runs(self) -> list[tuple[dict, dict]]:
        """(start, end) pairs of the ``OscillinkRerank`` runs."""
        out = []
        for s in self.starts:
            if s["name"] == "OscillinkRerank":
                end = next(e for e in self.ends if e["run_id"] == s["run_id"])
                out.append((s, end))
        return out


def corpus_rows() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def questions() -> dict[str, dict]:
    return {q["id"]: q for q in json.loads(QUESTIONS.read_text(encoding="utf-8"))["questions"]}


@lru_cache(maxsize=1)
def real_stores():
    """(embeddings, langchain-community FAISS store, InMemoryVectorStore, rows) over the demo corpus."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # langchain-community announces its sunset
        from langchain_community.vectorstores import FAISS

    from langchain_oscillink import PackagedMiniLMEmbeddings

    emb = MemoEmbeddings(PackagedMiniLMEmbeddings())
    rows = corpus_rows()
    docs = [Document(page_content=r["text"], id=r["id"], metadata={"label": r["label"], "trap": r["trap"]})
            for r in rows]
    faiss_store = FAISS.from_documents(docs, emb, ids=[d.id for d in docs])
    memory = InMemoryVectorStore(emb)
    memory.add_documents(docs)
    return emb, faiss_store, memory, rows
