"""Request and response models (pydantic). Field names follow the published oscillink 0.1.x cloud API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Id = str | int
SourceName = Annotated[str, Field(min_length=1, max_length=2048)]


class Params(BaseModel):
    """Lattice parameters; unset fields come from the key's profile, then the defaults."""

    model_config = ConfigDict(extra="forbid")
    lamG: float | None = Field(None, gt=0, le=1e6, description="anchor weight (> 0)")
    lamC: float | None = Field(None, ge=0, le=1e6, description="coherence weight")
    lamQ: float | None = Field(None, ge=0, le=1e6, description="query weight")
    lamP: float | None = Field(None, ge=0, le=1e6, description="chain-prior weight")
    kneighbors: int | None = Field(None, ge=1, le=256, description="neighbours per node (clipped to N - 1)")
    gating: Literal["uniform", "diffusion"] | None = None
    coh_weight: float | None = Field(None, ge=-10, le=10)
    coh_scope: Literal["local", "evidence", "always"] | None = Field(
        None, description="'local': as 'evidence', but where the only structure is a near-duplicate pair "
                          "only its members move; 'evidence': the lattice reorders only when the candidates "
                          "show structure, else the cosine order; 'always': the lattice ranks every query")
    screen: Literal["off", "flag", "demote", "drop"] | None = Field(
        None, description="what happens to candidates with a decisive screening flag")
    mmr_lambda: float | None = Field(None, gt=0, le=1)
    dedup_threshold: float | None = Field(None, ge=-1, le=1)
    edge_floor: float | None = Field(None, ge=0, lt=1)
    degree_reg: float | None = Field(None, ge=0, le=1e6)
    provenance: Literal["corroboration", "trusted_first"] | None = Field(
        None, description="with sources and trusted_sources: 'corroboration' (default) moves a candidate of an "
                          "untrusted source only when other untrusted sources echo it and trusted ones do not "
                          "(flag new_source_echo); 'trusted_first' puts every candidate of a known untrusted "
                          "source behind the trusted ones (flag untrusted_source)")
    provenance_threshold: float | None = Field(None, ge=-1, le=1, description="cosine at which two candidates agree")
    provenance_min_echo: int | None = Field(None, ge=1, le=1000,
                                            description="agreeing candidates from other untrusted sources that "
                                                        "make an echo")
    deterministic_k: bool | None = Field(None, description="accepted for compatibility; the kNN graph is exact")
    neighbor_seed: int | None = Field(None, description="accepted for compatibility; ignored")


class SettleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_iters: int = Field(500, ge=1, le=10_000, description="conjugate-gradient iteration cap")
    tol: float = Field(1e-5, gt=0, lt=1, description="relative residual tolerance")
    dt: float = Field(1.0, description="accepted for compatibility; the solve is the stationary state")
    bundle_k: int | None = Field(None, ge=1, le=10_000)
    include_receipt: bool = True
    receipt_detail: Literal["full", "light"] = "full"
    sign: bool = Field(False, description="HMAC-sign the receipt with the server key")
    keep_for_feedback: bool = Field(False, description="keep this request's inputs (feedback_ttl_s) so "
                                    "/v1/feedback can name meta.response_id")
    z_th: float = Field(2.5, gt=0, le=100, description="chain verdict threshold (/v1/chain/receipt)")


class SettleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    Y: list[list[float]] = Field(..., description="candidate embeddings, N rows of D floats")
    psi: list[float] | None = Field(None, description="query embedding (D); default: the mean of Y's rows")
    gates: list[float] | None = Field(None, description="per-candidate gates in [0, 1] (N)")
    chain: list[int] | None = Field(None, description="indices of a chain of candidates")
    ids: list[Id] | None = Field(None, description="N unique candidate ids (default 0..N-1)")
    params: Params = Field(default_factory=Params)
    options: SettleOptions = Field(default_factory=SettleOptions)


class Meta(BaseModel):
    N: int
    D: int
    kneighbors_requested: int
    kneighbors_effective: int
    lam: dict[str, float]
    profile_id: str
    response_id: str = Field(..., description="pass to /v1/feedback")
    usage: dict[str, int]


class SettleResponse(BaseModel):
    state_sig: str
    receipt: dict[str, Any] | None = None
    bundle: list[dict[str, Any]] | None = None
    timings_ms: dict[str, float]
    meta: Meta


class ReceiptResponse(BaseModel):
    state_sig: str
    receipt: dict[str, Any]
    timings_ms: dict[str, float]
    meta: Meta


class BundleResponse(BaseModel):
    state_sig: str
    bundle: list[dict[str, Any]]
    timings_ms: dict[str, float]
    meta: Meta


class ChainReceiptResponse(BaseModel):
    state_sig: str
    chain_receipt: dict[str, Any]
    timings_ms: dict[str, float]
    meta: Meta


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Id
    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(..., min_length=1, description="the question")
    candidates: list[str] | list[Candidate] | None = Field(
        None, description="texts (ids 0..N-1) or {id, text}; omit to query the server's --index")
    k: int = Field(5, ge=1, le=1000)
    fetch_k: int = Field(50, ge=1, le=5000, description="candidates fetched from the index (with --index)")
    params: Params = Field(default_factory=Params)
    include_receipt: bool = True
    sign: bool = False
    keep_for_feedback: bool = Field(False, description="keep the inputs so /v1/feedback can name this response")
    sources: list[SourceName | None] | None = Field(
        None, max_length=5000,
        description="where each candidate came from (a domain, a collection, ...; null where unknown), one per "
                    "candidate and in their order; judged against trusted_sources. Not with --index queries: "
                    "the index's passages carry their own sources")
    trusted_sources: list[SourceName] | None = Field(
        None, max_length=10000,
        description="the sources you trust (compared exactly): when the screening pool holds a candidate from "
                    "one, a candidate of another known source that only other such sources echo is flagged "
                    "new_source_echo and goes behind the others (params.provenance='trusted_first': every "
                    "candidate of another known source, flag untrusted_source); the receipt binds both lists")


class RerankItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: Id
    rank: int
    score: float
    text: str


class RerankResponse(BaseModel):
    items: list[RerankItem]
    receipt: dict[str, Any] | None = None
    cosine: list[dict[str, Any]] | None = Field(None, description="plain cosine top-k (with --index)")
    timings_ms: dict[str, float]
    meta: Meta


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    receipt: dict[str, Any]


class VerifyResponse(BaseModel):
    schema_valid: bool
    schema_error: str | None = None
    signed: bool
    signature_valid: bool | None = Field(None, description="None when the server has no sign key")
    valid: bool


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    response_id: str = Field(..., min_length=1, max_length=128, description="meta.response_id of the response")
    kept: list[Id] = Field(..., min_length=1)
    rejected: list[Id] | None = Field(None, description="default: the returned ids that are not kept")


class FeedbackResponse(BaseModel):
    profile_id: str
    previous_profile_id: str
    n_updates: int
    moves: dict[str, list[float]]
    params: dict[str, Any]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=200)
    monthly_cap: int | None = Field(None, ge=0)
    quota_units: int | None = Field(None, ge=0)
    quota_window_s: int | None = Field(None, ge=1)
    rate_capacity: float | None = Field(None, ge=0)
    rate_refill_per_s: float | None = Field(None, ge=0)


class Error(BaseModel):
    detail: Any
    error: str
