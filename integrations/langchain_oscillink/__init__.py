"""LangChain integration for oscillink-core: coherence reranking with verifiable receipts.

* `OscillinkCompressor`: a `BaseDocumentCompressor` for ``ContextualCompressionRetriever``
  (langchain-classic) or, with langchain-core only, an LCEL runnable (``as_runnable``).
* `OscillinkRetriever`: vector-store search plus rerank, reusing the store's vectors where it can.
* `FaissCandidateSource`: a raw FAISS index and its documents as a candidate source.
* `PackagedMiniLMEmbeddings`: `Embeddings` over the packaged all-MiniLM-L6-v2 (offline convenience).

Install with ``pip install 'oscillink-core[langchain]'``.
"""

from oscillink_core import __version__

from ._vectors import FaissCandidateSource
from .compressors import OscillinkCompressor
from .embeddings import PackagedMiniLMEmbeddings
from .retrievers import OscillinkRetriever

__all__ = [
    "OscillinkCompressor",
    "OscillinkRetriever",
    "FaissCandidateSource",
    "PackagedMiniLMEmbeddings",
    "__version__",
]
