"""What reusing a served store's vectors saves over re-embedding the candidates, per query.

Usage:  python benchmarks/served_stores.py [--fetch-k 30] [--repeats 5]
                                          [--out benchmarks/results/served_stores.json]

Setup: the bundled demo corpus (examples/data/demo_corpus.jsonl) embedded once with the packaged
all-MiniLM-L6-v2 and written to (a) a real Chroma server (``chroma run`` on a free loopback port,
through langchain-chroma) and (b) Qdrant local mode in memory (through langchain-qdrant). For each
demo question the store's top ``fetch_k`` documents are fetched once; then, interleaved, each
repeat times ``OscillinkCompressor.compress_documents`` on those documents

* ``reuse``: with ``vectorstore=store`` (vectors read back by id: Chroma ``collection.get``, Qdrant
  ``retrieve``), the query embedded once;
* ``reembed``: without a store (the fetch_k passages and the query embedded with the model),

and checks both return the same documents. Reported: medians per store and the ratio
reembed / reuse measured in the same run. Wall-clock numbers on a shared machine are noisy; the
ratio is the figure to read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "integrations")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fetch-k", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "served_stores.json"))
    a = ap.parse_args(argv)

    from langchain_chroma import Chroma
    from langchain_core.documents import Document
    from langchain_qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient
    from qdrant_client.models import Distance, VectorParams

    from langchain_oscillink import OscillinkCompressor, PackagedMiniLMEmbeddings
    from tests._chroma_server import start_chroma

    rows = [json.loads(x) for x in (ROOT / "examples/data/demo_corpus.jsonl").read_text("utf-8").splitlines() if x]
    questions = [q["question"] for q in
                 json.loads((ROOT / "examples/data/demo_questions.json").read_text("utf-8"))["questions"]]
    emb = PackagedMiniLMEmbeddings()
    vecs = emb.embed_documents([r["text"] for r in rows])
    docs = [Document(r["text"], id=r["id"], metadata={"label": r["label"]}) for r in rows]

    server = start_chroma()
    results: dict = {"fetch_k": a.fetch_k, "repeats": a.repeats, "corpus": len(rows), "questions": len(questions),
                     "python": platform.python_version(), "machine": platform.machine(),
                     "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "stores": {}}
    try:
        chroma = Chroma(collection_name=f"bench-{uuid.uuid4().hex[:8]}", embedding_function=emb,
                        client=server.client())
        chroma._collection.add(ids=[d.id for d in docs], embeddings=vecs, documents=[d.page_content for d in docs],
                               metadatas=[d.metadata for d in docs])
        qclient = QdrantClient(location=":memory:")
        qclient.create_collection("bench", vectors_config=VectorParams(size=len(vecs[0]), distance=Distance.COSINE))
        qdrant = QdrantVectorStore(client=qclient, collection_name="bench", embedding=emb)
        qdrant.add_texts([d.page_content for d in docs], metadatas=[d.metadata for d in docs],
                         ids=[str(uuid.uuid5(uuid.NAMESPACE_URL, d.id)) for d in docs])
        for name, store in (("chroma server (langchain-chroma)", chroma), ("qdrant local (langchain-qdrant)", qdrant)):
            reuse = OscillinkCompressor(embeddings=emb, vectorstore=store, top_n=5)
            reembed = OscillinkCompressor(embeddings=emb, top_n=5)
            t_reuse, t_reembed, same = [], [], True
            for q in questions:
                cands = store.similarity_search(q, k=a.fetch_k)
                reuse.compress_documents(cands, q)  # warm
                for _ in range(a.repeats):
                    t0 = time.perf_counter()
                    r1 = reuse.compress_documents(cands, q)
                    t1 = time.perf_counter()
                    r2 = reembed.compress_documents(cands, q)
                    t2 = time.perf_counter()
                    t_reuse.append(1e3 * (t1 - t0))
                    t_reembed.append(1e3 * (t2 - t1))
                    assert r1[0].metadata["oscillink_receipt"]["provenance"]["vectors"] == "store"
                    same &= [d.page_content for d in r1] == [d.page_content for d in r2]
            m_reuse, m_reembed = statistics.median(t_reuse), statistics.median(t_reembed)
            results["stores"][name] = {"reuse_ms_median": m_reuse, "reembed_ms_median": m_reembed,
                                       "ratio_reembed_over_reuse": m_reembed / m_reuse,
                                       "same_documents": same, "reuse_ms": t_reuse, "reembed_ms": t_reembed}
        qclient.close()
    finally:
        server.stop()

    print(f"fetch_k = {a.fetch_k}, {len(questions)} questions x {a.repeats} repeats, corpus {len(rows)} passages, "
          f"load average {results['load_avg'][0]:.1f}")
    print(f"{'store':<36} {'reuse (ms)':>11} {'re-embed (ms)':>14} {'ratio':>7}  same top-5")
    for name, r in results["stores"].items():
        print(f"{name:<36} {r['reuse_ms_median']:>11.1f} {r['reembed_ms_median']:>14.1f} "
              f"{r['ratio_reembed_over_reuse']:>6.1f}x  {r['same_documents']}")
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
