"""A retrieval chain with LangChain and oscillink-core over the bundled demo corpus (offline).

    python examples/langchain_rag.py                 # the demo questions
    python examples/langchain_rag.py --question "How does sourdough rise?" --k 3

What it does:
1. embeds the 90 passages of ``examples/data/demo_corpus.jsonl`` with the packaged
   all-MiniLM-L6-v2 (no network) into a langchain-core ``InMemoryVectorStore``;
2. builds the chain ``OscillinkRetriever | format_context | ChatPromptTemplate``: the store's
   top ``fetch_k`` candidates are reranked by the coherence lattice, reusing the vectors the store
   holds (no re-embedding), and the best ``k`` become the context of the prompt;
3. prints, per question, the plain cosine top-k next to the reranked top-k (with each passage's
   label from the corpus: relevant, TRAP or off-question), the receipt summary and the prompt;
4. verifies one signed receipt with ``oscillink_core.verify_receipt`` and shows that a modified
   copy fails.

5. (unless ``--no-llm``) the chain ends in a real LLM: the oscillink context goes through
   ``langchain_oscillink.llms.QA_PROMPT`` to ``GemmaLLM`` (Gemma 3 270M, offline, greedy, answers
   cached in ``~/.cache/oscillink/llm_answers``), and its one-line answer is printed. It is a
   270M base model: short factual answers only; the printout shows what it says.

Whether the rerank helps or hurts on these questions is whatever the printout shows: nothing here
is hand-picked. Gemma is provided under and subject to the Gemma Terms of Use
(https://ai.google.dev/gemma/terms).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableLambda, RunnablePassthrough  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from langchain_oscillink import OscillinkRetriever, PackagedMiniLMEmbeddings  # noqa: E402
from oscillink_core import verify_receipt  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
SIGNING_KEY = "demo-key-not-secret"

PROMPT = ChatPromptTemplate.from_messages([
    ("system", "Answer the question using only the context. Cite passage ids in brackets.\n\nContext:\n{context}"),
    ("human", "{question}"),
])


def load_corpus() -> tuple[list[Document], dict]:
    rows = [json.loads(line) for line in (DATA / "demo_corpus.jsonl").read_text("utf-8").splitlines() if line.strip()]
    docs = [Document(page_content=r["text"], id=r["id"], metadata={"label": r["label"], "trap": r["trap"]})
            for r in rows]
    questions = json.loads((DATA / "demo_questions.json").read_text("utf-8"))
    return docs, questions


def tag(doc: Document, qid: str | None) -> str:
    if qid is None:
        return ""
    if doc.metadata.get("label") != qid:
        return "off-question"
    return "TRAP" if doc.metadata.get("trap") else "relevant"


def format_context(docs: list[Document]) -> str:
    return "\n".join(f"[{d.id}] {d.page_content}" for d in docs)


def show(question: str, qid: str | None, store: InMemoryVectorStore, chain, k: int) -> dict:
    plain = store.similarity_search_with_score(question, k=k)
    t0 = time.perf_counter()
    out = chain.invoke(question)
    ms = 1e3 * (time.perf_counter() - t0)
    docs, prompt = out["docs"], out["prompt"]
    print(f"\n=== {qid or 'question'}: {question}")
    print(f"  plain cosine top-{k}:")
    for rank, (d, s) in enumerate(plain, 1):
        print(f"    {rank}. {d.id:<14} cos={s:.3f}  {tag(d, qid)}")
    print(f"  oscillink top-{k} (chain {ms:.0f} ms incl. query embedding):")
    for d in docs:
        m = d.metadata
        print(f"    {m['oscillink_rank']}. {d.id:<14} score={m['oscillink_score']:.3f} "
              f"cos={m['retrieval_score']:.3f} (was #{m['retrieval_rank']})  {tag(d, qid)}")
    rec = docs[0].metadata["oscillink_receipt"]
    print(f"  receipt: state_sig={rec['state_sig'][:16]}...  n={rec['inputs']['n']}  "
          f"deltaH={rec['energy']['deltaH']:.4g}  cg_iters={rec['solver']['iterations']}  "
          f"converged={rec['solver']['converged']}  vectors={rec['provenance']['vectors']} "
          f"({rec['provenance'].get('vector_access', rec['provenance'].get('reason'))})")
    print("  chat prompt built from the context (for a chat model):")
    for msg in prompt.to_messages():
        text = msg.content if len(msg.content) < 600 else msg.content[:600] + " ..."
        print("    " + f"{msg.type}: {text}".replace("\n", "\n    "))
    if "answer" in out:
        print(f"  answer of GemmaLLM (Gemma 3 270M, greedy) from the oscillink context: {out['answer']!r}")
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--question", help="ask this instead of the demo questions")
    ap.add_argument("--k", type=int, default=4, help="passages in the context (default 4)")
    ap.add_argument("--fetch-k", type=int, default=30, help="candidates reranked (default 30)")
    ap.add_argument("--no-llm", action="store_true", help="stop at the prompt (no GemmaLLM answer)")
    args = ap.parse_args(argv)

    docs, qfile = load_corpus()
    t0 = time.perf_counter()
    emb = PackagedMiniLMEmbeddings()
    store = InMemoryVectorStore(emb)
    store.add_documents(docs)
    print(f"indexed {len(docs)} passages with the packaged {type(emb).__name__} in {time.perf_counter() - t0:.1f} s")

    retriever = OscillinkRetriever(vectorstore=store, k=args.k, fetch_k=args.fetch_k, signing_key=SIGNING_KEY)
    chain = (
        {"docs": retriever, "question": RunnablePassthrough()}
        | RunnablePassthrough.assign(context=RunnableLambda(lambda x: format_context(x["docs"])))
        | RunnablePassthrough.assign(prompt=PROMPT)
    )
    if not args.no_llm:
        from langchain_core.output_parsers import StrOutputParser

        from langchain_oscillink.llms import QA_PROMPT, GemmaLLM

        reader = (RunnableLambda(lambda x: {"context": "\n".join(d.page_content for d in x["docs"]),
                                            "question": x["question"]})
                  | QA_PROMPT | GemmaLLM() | StrOutputParser())
        chain = chain | RunnablePassthrough.assign(answer=reader)

    if args.question:
        asked = [(None, args.question)]
    else:
        by_id = {q["id"]: q for q in qfile["questions"]}
        asked = [(qid, by_id[qid]["question"]) for qid in qfile["demo_questions"]]
    receipts = [show(question, qid, store, chain, args.k) for qid, question in asked]

    rec = receipts[0]
    tampered = copy.deepcopy(rec)
    tampered["bundle"][0]["score"] += 1e-6
    ok, bad = verify_receipt(rec, SIGNING_KEY), verify_receipt(tampered, SIGNING_KEY)
    print(f"\nverify_receipt(first receipt, key) = {ok}; after changing one bundle score: {bad}")
    return 0 if ok and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
