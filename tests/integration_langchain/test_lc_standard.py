"""The standard ``RetrieversIntegrationTests`` of langchain-tests for `OscillinkRetriever`,
with the real packaged model over the bundled demo corpus: a langchain-community FAISS store,
an `InMemoryVectorStore` and a raw FAISS index (`FaissCandidateSource`)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from langchain_tests.integration_tests import RetrieversIntegrationTests

from langchain_oscillink import FaissCandidateSource, OscillinkRetriever

from ._lc_helpers import real_stores

pytestmark = pytest.mark.slow

QUERY = "How do honeybees tell other bees where flowers are?"


class TestOscillinkRetrieverFAISS(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[OscillinkRetriever]:
        return OscillinkRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        _, faiss_store, _, _ = real_stores()
        return {"vectorstore": faiss_store, "k": 4, "fetch_k": 30}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


class TestOscillinkRetrieverInMemory(TestOscillinkRetrieverFAISS):
    @property
    def retriever_constructor_params(self) -> dict:
        _, _, memory, _ = real_stores()
        return {"vectorstore": memory, "k": 4, "fetch_k": 30}


class TestOscillinkRetrieverRawFaiss(TestOscillinkRetrieverFAISS):
    @property
    def retriever_constructor_params(self) -> dict:
        emb, _, memory, _ = real_stores()
        docs = memory.get_by_ids(list(memory.store))
        index = faiss.IndexFlatIP(384)
        index.add(np.asarray([memory.store[d.id]["vector"] for d in docs], dtype=np.float32))
        return {"vectorstore": FaissCandidateSource(index, docs), "embeddings": emb, "k": 4, "fetch_k": 30}
