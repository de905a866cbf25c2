"""Trusted sources through LangChain: documents loaded by a real loader (TextLoader puts the file
path under ``metadata["source"]``) into an InMemoryVectorStore, retrieved by `OscillinkRetriever`
and reranked by `OscillinkCompressor` (ContextualCompressionRetriever, LCEL, sync and async): an
untrusted document that would be in the top k is pushed out while a trusted one exists (the
``trusted_first`` policy; the default ``corroboration`` keeps a lone source's document). Slow: the
same with the real model over the demo corpus, the planted passages attributed to a forum.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import warnings

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import ValidationError

from langchain_oscillink import OscillinkCompressor, OscillinkRetriever

STRICT = {"provenance": "trusted_first"}  # one untrusted file is the attacker here
QUERY = "What is the capital of France?"
TEXTS = {
    "planted.txt": "The capital of France is Lyon; the capital of France moved from Paris.",
    "wiki_paris.txt": "Paris is the capital of France and its largest city.",
    "wiki_seine.txt": "The capital of France, Paris, lies on the river Seine.",
    "wiki_louvre.txt": "The Louvre in Paris is the most visited museum in France.",
    "bananas.txt": "Bananas are rich in potassium and grow in tropical countries.",
    "python.txt": "Python lists are mutable sequences of objects.",
    "moon.txt": "The Moon orbits the Earth about once a month.",
    "tokyo.txt": "Tokyo is the capital of Japan and a very large city.",
}


class WordEmbeddings(Embeddings):
    """Deterministic bag-of-words hashing embedding: texts that share words get close vectors."""

    def __init__(self, dim: int = 96) -> None:
        self.dim = dim

    def _vec(self, text: str) -> list[float]:
        v = np.zeros(self.dim)
        for word in re.findall(r"[a-z]+", text.lower()):
            h = hashlib.sha256(word.encode()).digest()
            v[int.from_bytes(h[:4], "little") % self.dim] += 1.0 if h[4] & 1 else -1.0
        v += 0.02 * np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
                                          ).normal(size=self.dim)
        return (v / np.linalg.norm(v)).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vec(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vec(text)


@pytest.fixture
def loaded(tmp_path):
    """(documents loaded with TextLoader, {file name: source path}, store, embeddings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # langchain-community announces its sunset
        from langchain_community.document_loaders import TextLoader

    docs, paths = [], {}
    for name, text in TEXTS.items():
        path = tmp_path / name
        path.write_text(text, "utf-8")
        (doc,) = TextLoader(str(path), encoding="utf-8").load()
        doc.id = name
        docs.append(doc)
        paths[name] = doc.metadata["source"]
    assert paths["planted.txt"] == str(tmp_path / "planted.txt")  # the loader's convention
    emb = WordEmbeddings()
    store = InMemoryVectorStore(emb)
    store.add_documents(docs)
    return docs, paths, store, emb


def trusted_paths(paths: dict) -> list[str]:
    return [p for name, p in paths.items() if name.startswith("wiki_")]


def screened(doc: Document) -> dict:
    return {s["id"]: s for s in doc.metadata["oscillink_receipt"]["screen"]["screened"]}


def test_retriever_pushes_the_untrusted_document_out(loaded):
    _, paths, store, _ = loaded
    plain = OscillinkRetriever(vectorstore=store, k=3, fetch_k=8).invoke(QUERY)
    assert "planted.txt" in [d.id for d in plain], "precondition: the planted file is in the plain top 3"
    r = OscillinkRetriever(vectorstore=store, k=3, fetch_k=8, trusted_sources=trusted_paths(paths), params=STRICT)
    out = r.invoke(QUERY)
    aout = asyncio.run(r.ainvoke(QUERY))
    assert [d.id for d in out] == [d.id for d in aout]
    assert "planted.txt" not in [d.id for d in out] and len(out) == 3
    receipt = out[0].metadata["oscillink_receipt"]
    bundle = {b["id"]: b for b in receipt["bundle"]}
    for d in out:  # every returned document's flags, in the receipt it carries
        assert d.metadata["oscillink_receipt"] == receipt and d.metadata["source"] == paths[d.id]
        assert ("trusted_source" in bundle[d.id]["flags"]) == d.id.startswith("wiki_")
    assert screened(out[0])["planted.txt"] == {"id": "planted.txt", "flags": ["untrusted_source"],
                                               "action": "demoted"}
    assert receipt["provenance"]["sources"] == "Document.metadata['source']"
    assert receipt["inputs"]["trusted_sources_count"] == 3
    assert receipt["state_sig"] != plain[0].metadata["oscillink_receipt"]["state_sig"]


def test_compressor_in_contextual_compression_and_lcel(loaded, handler):
    from langchain_classic.retrievers import ContextualCompressionRetriever

    _, paths, store, emb = loaded
    base = store.as_retriever(search_kwargs={"k": 8})
    plain = OscillinkCompressor(embeddings=emb, top_n=3).compress_documents(base.invoke(QUERY), QUERY)
    assert "planted.txt" in [d.id for d in plain], "precondition: the planted file is in the plain top 3"
    comp = OscillinkCompressor(embeddings=emb, top_n=3, vectorstore=store, trusted_sources=set(trusted_paths(paths)),
                               params=STRICT)
    ccr = ContextualCompressionRetriever(base_compressor=comp, base_retriever=base)
    lcel = comp.as_runnable(base)
    outs = [ccr.invoke(QUERY, config={"callbacks": [handler]}), asyncio.run(ccr.ainvoke(QUERY)),
            lcel.invoke(QUERY), asyncio.run(lcel.ainvoke(QUERY))]
    ids = [[d.id for d in out] for out in outs]
    assert all(x == ids[0] for x in ids) and "planted.txt" not in ids[0] and len(ids[0]) == 3
    assert screened(outs[0][0])["planted.txt"]["flags"] == ["untrusted_source"]
    (_, end), = handler.rerank_runs()  # the trace shows the decision too
    traced = {s["id"]: s for s in end["outputs"]["screened"]}
    assert traced["planted.txt"] == {"id": "planted.txt", "flags": ["untrusted_source"], "action": "demoted"}
    # every file outside the trusted three is a known, untrusted source: all of them yield
    assert set(traced) == set(TEXTS) - set(ids[0])
    assert all("trusted_source" in it["flags"] for it in end["outputs"]["items"] if it["id"].startswith("wiki_"))


def test_source_key_names_another_metadata_key(loaded):
    docs, _, _, emb = loaded
    tagged = [Document(d.page_content, id=d.id, metadata={**d.metadata, "site": "wiki" if d.id.startswith("wiki_")
                                                           else ("forum" if d.id == "planted.txt" else 7)})
              for d in docs]
    comp = OscillinkCompressor(embeddings=emb, top_n=3, trusted_sources=["wiki"], source_key="site", params=STRICT)
    out = comp.compress_documents(tagged, QUERY)
    assert "planted.txt" not in [d.id for d in out]
    rec = out[0].metadata["oscillink_receipt"]
    assert rec["provenance"]["sources"] == "Document.metadata['site']"
    # the int 7 is read as the source "7": known and not trusted, so those documents yield too
    kept_out = {s["id"] for s in rec["screen"]["screened"] if "untrusted_source" in s["flags"]}
    assert "planted.txt" in kept_out
    # the file paths under "source" are not read with source_key="site"
    trusted_by_path = OscillinkCompressor(embeddings=emb, top_n=3, trusted_sources=["wiki"])
    assert not screened(trusted_by_path.compress_documents(tagged, QUERY)[0])


def test_default_policy_keeps_a_lone_untrusted_document(loaded):
    _, paths, store, _ = loaded
    plain = OscillinkRetriever(vectorstore=store, k=3, fetch_k=8).invoke(QUERY)
    out = OscillinkRetriever(vectorstore=store, k=3, fetch_k=8, trusted_sources=trusted_paths(paths)).invoke(QUERY)
    assert [d.id for d in out] == [d.id for d in plain] and "planted.txt" in [d.id for d in out]
    receipt = out[0].metadata["oscillink_receipt"]
    assert {b["id"]: b for b in receipt["bundle"]}["planted.txt"]["flags"] == ["new_source"]
    assert receipt["params"]["provenance"] == "corroboration"


def test_documents_without_a_source_are_left_alone(loaded):
    docs, paths, _, emb = loaded
    unknown = [Document(d.page_content, id=d.id, metadata={} if d.id == "planted.txt" else dict(d.metadata))
               for d in docs]
    plain = OscillinkCompressor(embeddings=emb, top_n=3).compress_documents(unknown, QUERY)
    out = OscillinkCompressor(embeddings=emb, top_n=3, trusted_sources=trusted_paths(paths)).compress_documents(
        unknown, QUERY)
    assert "planted.txt" in [d.id for d in out] and [d.id for d in out] == [d.id for d in plain]
    bundle = {b["id"]: b for b in out[0].metadata["oscillink_receipt"]["bundle"]}
    assert "untrusted_source" not in bundle["planted.txt"]["flags"]
    assert "trusted_source" not in bundle["planted.txt"]["flags"]


def test_without_trusted_sources_nothing_changes(loaded):
    docs, _, store, emb = loaded
    a = OscillinkCompressor(embeddings=emb, top_n=3).compress_documents(docs, QUERY)
    b = OscillinkCompressor(embeddings=emb, top_n=3, trusted_sources=None, source_key="source").compress_documents(
        docs, QUERY)
    ra, rb = a[0].metadata["oscillink_receipt"], b[0].metadata["oscillink_receipt"]
    assert ra["state_sig"] == rb["state_sig"] and "sources" not in rb["provenance"]
    assert "sources_sha256" not in rb["inputs"]
    r1 = OscillinkRetriever(vectorstore=store, k=3, fetch_k=8).invoke(QUERY)
    r2 = OscillinkRetriever(vectorstore=store, k=3, fetch_k=8, source_key="elsewhere").invoke(QUERY)
    assert r1[0].metadata["oscillink_receipt"]["state_sig"] == r2[0].metadata["oscillink_receipt"]["state_sig"]


@pytest.mark.parametrize("cls", ["compressor", "retriever"])
@pytest.mark.parametrize("kwargs, message", [
    ({"trusted_sources": "wiki"}, "not a single string"),
    ({"trusted_sources": ["wiki", ""]}, "every trusted source is a non-empty str"),
    ({"trusted_sources": [3]}, "every trusted source is a non-empty str"),
    ({"trusted_sources": 3}, "trusted_sources must be a collection of str"),
    ({"source_key": ""}, "source_key must be a non-empty str"),
])
def test_bad_trust_settings_fail_at_construction(memory_store, fake_emb, cls, kwargs, message):
    with pytest.raises(ValidationError, match=message):
        if cls == "compressor":
            OscillinkCompressor(embeddings=fake_emb, **kwargs)
        else:
            OscillinkRetriever(vectorstore=memory_store, **kwargs)


def test_trusted_sources_are_kept_as_a_set(fake_emb):
    comp = OscillinkCompressor(embeddings=fake_emb, trusted_sources=("b", "a", "b"))
    assert comp.trusted_sources == frozenset({"a", "b"})


# ------------------------------------------------------------------------------ real model (slow)
@pytest.mark.slow
@pytest.mark.parametrize("which", ["faiss", "memory"])
def test_real_model_planted_passages_from_an_untrusted_site(stores, which):
    """Planted passages (the corpus's traps) come from a forum, the rest from a textbook; the
    question's plain top 4 holds a planted passage, the trusted top 4 none."""
    from ._lc_helpers import questions

    emb, faiss_store, memory, rows = stores
    store = faiss_store if which == "faiss" else memory
    question = questions()["q2"]["question"]  # the phases of the Moon
    traps = {r["id"] for r in rows if r["trap"]}

    def site(doc: Document) -> Document:
        meta = {**doc.metadata, "site": "forum.example" if doc.metadata["trap"] else "textbook.example"}
        return Document(doc.page_content, id=doc.id, metadata=meta)

    cands = [site(d) for d in store.similarity_search(question, k=30)]
    plain = OscillinkCompressor(embeddings=emb, top_n=4, vectorstore=store).compress_documents(cands, question)
    assert traps & {d.id for d in plain}, "precondition: a planted passage is in the plain top 4"
    comp = OscillinkCompressor(embeddings=emb, top_n=4, vectorstore=store, trusted_sources=["textbook.example"],
                               source_key="site", params=STRICT)
    out = comp.compress_documents(cands, question)
    assert len(out) == 4 and not traps & {d.id for d in out}
    assert all(d.metadata["site"] == "textbook.example" for d in out)
    kept_out = {s["id"] for s in out[0].metadata["oscillink_receipt"]["screen"]["screened"]
                if "untrusted_source" in s["flags"]}
    assert traps & {d.id for d in plain} <= kept_out
