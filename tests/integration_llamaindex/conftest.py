"""Fixtures for the LlamaIndex integration tests.

``HashEmbedding`` is a deterministic bag-of-words hashing embedding (fast, offline): texts that
share words get similar vectors, so rankings are non-trivial. The real packaged MiniLM model is
loaded once per session by the ``minilm`` fixture (slow tests only).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from llama_index.core import Settings
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode

TOPICS = {
    "cats": ["Cats are small domesticated carnivores that purr.", "Kittens are young cats that play a lot.",
             "Lions are big cats living in prides.", "A cat sleeps most of the day and hunts mice.",
             "Tigers are the largest cats and strong swimmers.", "House cats groom their fur with rough tongues."],
    "paris": ["Paris is the capital of France.", "The Eiffel Tower stands in Paris.",
              "The Louvre museum in Paris holds the Mona Lisa.", "The Seine river flows through Paris.",
              "Paris hosts many cafes and bakeries.", "Notre-Dame is a cathedral in Paris."],
    "python": ["Python is a programming language.", "Python lists are mutable sequences.",
               "The Python interpreter runs bytecode.", "Pip installs Python packages.",
               "Python functions are defined with def.", "Python dictionaries map keys to values."],
    "space": ["The Moon orbits the Earth.", "Mars is the red planet.", "Jupiter is the largest planet.",
              "Saturn has bright rings of ice.", "The Sun is a star at the centre of the solar system.",
              "Astronauts live on the International Space Station."],
}


def corpus_nodes() -> list[TextNode]:
    """24 text nodes over four topics with stable ids and a little metadata."""
    out = []
    for topic, texts in TOPICS.items():
        for j, text in enumerate(texts):
            out.append(TextNode(id_=f"{topic}-{j}", text=text, metadata={"topic": topic}))
    return out


def hash_vector(text: str, dim: int) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float64)
    for word in re.findall(r"[a-z]+", text.lower()):
        h = hashlib.sha256(word.encode()).digest()
        v[int.from_bytes(h[:4], "little") % dim] += 1.0 if h[4] & 1 else -1.0
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v += 0.05 * np.random.default_rng(seed).normal(size=dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


class HashEmbedding(BaseEmbedding):
    """Deterministic hashing embedding; counts how many texts it embedded."""

    embed_dim: int = Field(default=64)
    model_name: str = Field(default="hash-embedding")
    text_calls: int = Field(default=0)

    def _get_query_embedding(self, query: str) -> Embedding:
        return hash_vector(query, self.embed_dim).tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        self.text_calls += 1
        return hash_vector(text, self.embed_dim).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embedding(text)


@pytest.fixture
def hash_embed() -> HashEmbedding:
    return HashEmbedding()


@pytest.fixture
def li_settings():
    """Yield a setter for Settings.embed_model / llm / callback_manager; restore them afterwards."""
    saved = (Settings._embed_model, Settings._llm, Settings._callback_manager)

    def set_(embed_model=None, llm=None, callback_manager=None):
        if embed_model is not None:
            Settings.embed_model = embed_model
        Settings.llm = llm if llm is not None else MockLLM()
        if callback_manager is not None:
            Settings.callback_manager = callback_manager

    yield set_
    Settings._embed_model, Settings._llm, Settings._callback_manager = saved


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2 as a LlamaIndex embedding model, loaded once per session."""
    from llama_index.postprocessor.oscillink import PackagedMiniLMEmbedding

    model = PackagedMiniLMEmbedding()
    model.get_text_embedding("warm up")
    return model


class Recorder(BaseEventHandler):
    """Instrumentation handler that keeps every event it sees."""

    events: list = []

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event, **kwargs):
        self.events.append(event)


@pytest.fixture
def recorder():
    root = get_dispatcher()
    rec = Recorder(events=[])
    root.add_event_handler(rec)
    yield rec
    root.event_handlers.remove(rec)


@pytest.fixture(autouse=True)
def _one_backend(monkeypatch):
    """Pin the solver backend: the default ("auto") switches from numpy to numba once the kernels are
    loaded in the background, and tests here compare receipts and scores of separate calls exactly."""
    monkeypatch.setenv("OSCILLINK_BACKEND", "numpy")
