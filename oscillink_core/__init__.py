"""oscillink-core: a sparse coherence reranker for retrieval-augmented generation.

Quickstart
----------
>>> import numpy as np
>>> from oscillink_core import Oscillink
>>> Y = np.random.default_rng(0).normal(size=(40, 16))
>>> lat = Oscillink(Y, kneighbors=6)
>>> lat.set_query(Y[:5].mean(axis=0))
>>> _ = lat.settle()
>>> len(lat.bundle(k=5))
5
"""

from ._backend import available_backends
from ._kernels import warmup
from ._version import __version__
from .api import RankedItem, RerankResult, rerank
from .gates import compute_diffusion_gates
from .lattice import Oscillink, OscillinkLattice, load
from .params import LatticeParams, load_profile, resolve_params, save_profile
from .persistence import save
from .receipts import (
    canonical_json,
    receipt_schema,
    sign_receipt,
    strip_timings,
    validate_receipt,
    verify_receipt,
)
from .solver import ConvergenceWarning
from .tuning import (
    FeedbackEvent,
    LabelledQuery,
    OnlineTuner,
    TuneResult,
    queries_from_jsonl,
    queries_from_qrels,
    queries_from_rows,
    tune,
)

__all__ = [
    "available_backends",
    "warmup",
    "Oscillink",
    "OscillinkLattice",
    "rerank",
    "RerankResult",
    "RankedItem",
    "LatticeParams",
    "resolve_params",
    "load_profile",
    "save_profile",
    "compute_diffusion_gates",
    "sign_receipt",
    "verify_receipt",
    "validate_receipt",
    "receipt_schema",
    "canonical_json",
    "strip_timings",
    "save",
    "load",
    "ConvergenceWarning",
    "tune",
    "TuneResult",
    "LabelledQuery",
    "OnlineTuner",
    "FeedbackEvent",
    "queries_from_qrels",
    "queries_from_rows",
    "queries_from_jsonl",
    "__version__",
]
