"""Fixtures for the LangChain integration tests.

Fast tests use ``CountingEmbeddings`` around langchain-core's ``DeterministicFakeEmbedding``
(random but deterministic vectors per text; it counts how many texts it embedded). Slow tests
use the packaged all-MiniLM-L6-v2 over the bundled demo corpus, embedded once per session
(``real_stores`` in ``_lc_helpers``).
"""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore

from ._lc_helpers import CountingEmbeddings, RecordingHandler, real_stores

TEXTS = [f"passage {i} on subject {i % 5} with detail {i * 7 % 11}" for i in range(40)]


@pytest.fixture
def fake_emb() -> CountingEmbeddings:
    return CountingEmbeddings(size=32)


@pytest.fixture
def docs() -> list[Document]:
    return [Document(page_content=t, id=f"d{i}", metadata={"i": i, "tags": ["x"]}) for i, t in enumerate(TEXTS)]


@pytest.fixture
def memory_store(fake_emb, docs) -> InMemoryVectorStore:
    store = InMemoryVectorStore(fake_emb)
    store.add_documents(docs)
    fake_emb.reset()
    return store


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture(scope="session")
def stores():
    """(embeddings, FAISS store, InMemoryVectorStore, corpus rows) with the real model (slow tests only)."""
    return real_stores()


@pytest.fixture(autouse=True)
def _one_backend(monkeypatch):
    """Pin the solver backend: the default ("auto") switches from numpy to numba once the kernels are
    loaded in the background, and tests here compare receipts and scores of separate calls exactly."""
    monkeypatch.setenv("OSCILLINK_BACKEND", "numpy")
