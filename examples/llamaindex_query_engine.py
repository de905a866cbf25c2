"""A LlamaIndex query engine with OscillinkPostprocessor over the bundled demo corpus (offline).

    python examples/llamaindex_query_engine.py                 # the three demo questions, default store
    python examples/llamaindex_query_engine.py --faiss --aquery
    python examples/llamaindex_query_engine.py --question "Why does sourdough rise?" --show-receipt
    python examples/llamaindex_query_engine.py --llm mock      # MockLLM: print the context the LLM gets

Everything runs offline: passages are embedded with the packaged all-MiniLM-L6-v2
(``PackagedMiniLMEmbedding``) and a real LLM answers: ``llama_index.llms.oscillink_gemma.GemmaLLM``
(Gemma 3 270M, offline, greedy, answers cached in ``~/.cache/oscillink/llm_answers``) with its
few-shot ``QA_PROMPT`` as the text-QA template. For each question the script prints the plain
retriever order (cosine, top n) next to the reranked top n, marking passages the corpus labels as
relevant or as planted traps, then the answer and the receipt (signed with ``--sign-key`` and
verified). The receipt is attached to every returned node's metadata but excluded from the LLM
prompt; the script checks the prompt the engine formatted.

``--llm mock`` uses LlamaIndex's ``MockLLM`` instead, which echoes its prompt, so the printed
"answer" is exactly the context the LLM would see. Gemma is provided under and subject to the Gemma Terms of Use
(https://ai.google.dev/gemma/terms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from llama_index.core import Settings, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.postprocessor.oscillink import OscillinkPostprocessor, PackagedMiniLMEmbedding  # noqa: E402

from oscillink_core import verify_receipt  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def load_corpus() -> tuple[list[TextNode], dict[str, dict]]:
    """Nodes (id and text only: labels stay out of the prompt) and the labels by passage id."""
    nodes, labels = [], {}
    with open(DATA / "demo_corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            nodes.append(TextNode(id_=row["id"], text=row["text"]))
            labels[row["id"]] = {"label": row["label"], "trap": bool(row["trap"])}
    return nodes, labels


def load_questions(only: str | None) -> list[dict]:
    spec = json.loads((DATA / "demo_questions.json").read_text(encoding="utf-8"))
    if only:
        return [{"id": "custom", "question": only}]
    by_id = {q["id"]: q for q in spec["questions"]}
    return [by_id[qid] for qid in spec["demo_questions"]]


def build_index(nodes: list[TextNode], use_faiss: bool) -> VectorStoreIndex:
    if not use_faiss:
        return VectorStoreIndex(nodes)
    import faiss
    from llama_index.vector_stores.faiss import FaissVectorStore

    store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(384))  # unit vectors: inner product = cosine
    return VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store))


def mark(node_id: str, labels: dict, qid: str) -> str:
    info = labels.get(node_id, {})
    if info.get("label") == qid and info.get("trap"):
        return "TRAP"
    if info.get("label") == qid:
        return "relevant"
    return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--question", help="ask this question instead of the three demo questions")
    ap.add_argument("--top-n", type=int, default=4, help="passages kept by the reranker (default 4)")
    ap.add_argument("--candidates", type=int, default=20, help="passages retrieved before reranking (default 20)")
    ap.add_argument("--faiss", action="store_true", help="use a FAISS vector store instead of the default store")
    ap.add_argument("--aquery", action="store_true", help="run the async query path")
    ap.add_argument("--params", help="lattice params: a JSON dict or the path of a tuning profile")
    ap.add_argument("--sign-key", default="demo-key", help="HMAC key for the receipts (default: demo-key)")
    ap.add_argument("--show-receipt", action="store_true", help="print each receipt in full")
    ap.add_argument("--llm", choices=("mock", "gemma"), default="gemma",
                    help="gemma: the packaged Gemma 3 270M answers (default); mock: MockLLM echoes the prompt")
    args = ap.parse_args(argv)

    Settings.embed_model = PackagedMiniLMEmbedding()
    qa_kwargs = {}
    if args.llm == "gemma":
        from llama_index.llms.oscillink_gemma import QA_PROMPT, GemmaLLM

        Settings.llm = GemmaLLM()
        qa_kwargs = {"text_qa_template": QA_PROMPT}
    else:
        Settings.llm = MockLLM()  # echoes the prompt: the "answer" is the context the LLM would get

    nodes, labels = load_corpus()
    index = build_index(nodes, args.faiss)
    params = None
    if args.params:
        params = json.loads(args.params) if args.params.lstrip().startswith("{") else args.params
    reranker = OscillinkPostprocessor.from_index(index, top_n=args.top_n, params=params, sign_key=args.sign_key)
    engine = index.as_query_engine(similarity_top_k=args.candidates, node_postprocessors=[reranker], **qa_kwargs)
    retriever = index.as_retriever(similarity_top_k=args.candidates)

    for q in load_questions(args.question):
        qid, text = q["id"], q["question"]
        print("=" * 100)
        print(f"[{qid}] {text}")
        baseline = retriever.retrieve(text)[: args.top_n]
        response = asyncio.run(engine.aquery(text)) if args.aquery else engine.query(text)
        print(f"\n  {'retriever (cosine) top ' + str(args.top_n):<44}  oscillink top {args.top_n}")
        for b, r in zip(baseline, response.source_nodes, strict=False):
            left = f"{b.node.node_id:<10} {b.score:6.3f} {mark(b.node.node_id, labels, qid):<9}"
            right = f"{r.node.node_id:<10} {r.score:6.3f} {mark(r.node.node_id, labels, qid)}"
            print(f"  {left:<44}  {right}")
        if qid != "custom":
            for name, got in (("cosine", baseline), ("oscillink", response.source_nodes)):
                tags = [mark(n.node.node_id, labels, qid) for n in got]
                print(f"  {name:>9}: {tags.count('relevant')} relevant, {tags.count('TRAP')} traps in top {len(got)}")

        receipt = json.loads(response.source_nodes[0].node.metadata[reranker.receipt_key])
        prov = receipt["provenance"]
        if args.llm == "gemma":
            print(f"\n  answer of GemmaLLM (Gemma 3 270M, greedy): {str(response).strip()!r}")
            shown = QA_PROMPT.format(context_str="\n".join(n.node.get_content(metadata_mode="llm")
                                                           for n in response.source_nodes), query_str=text)
        else:
            print("\n  answer context (MockLLM echoes its prompt; the receipt is not in it):")
            print("    " + str(response).strip().replace("\n", "\n    "))
            shown = str(response)
        print("\n  receipt:")
        print(f"    state_sig  {receipt['state_sig']}")
        print(f"    vectors    {prov['vectors']} from {prov['vector_store']}, query vector from {prov['query_vector']}")
        print(f"    solver     {receipt['solver']['method']}, {receipt['solver']['iterations']} iterations, "
              f"converged={receipt['solver']['converged']}")
        print(f"    graph      {receipt['graph']['edges']} edges over {receipt['inputs']['n']} candidates, "
              f"{receipt['graph']['components']} component(s)")
        print(f"    bundle     {[b['id'] for b in receipt['bundle']]}")
        print(f"    signature  HMAC-SHA256 valid={verify_receipt(receipt, args.sign_key)}")
        if args.show_receipt:
            print("    " + json.dumps(receipt, indent=2, sort_keys=True).replace("\n", "\n    "))
        in_prompt = "state_sig" in shown
        print(f"    receipt in the LLM prompt: {in_prompt}")
        if in_prompt:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
