"""Service settings: one pydantic-settings class, read from ``OSCILLINK_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_keys_file() -> str:
    """``$OSCILLINK_KEYS_FILE`` or ``~/.oscillink/keys.json`` (hashes only, never a key)."""
    return os.environ.get("OSCILLINK_KEYS_FILE") or str(Path.home() / ".oscillink" / "keys.json")


class Settings(BaseSettings):
    """Everything the service reads at start-up. Each field ``x`` is also ``OSCILLINK_X`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="OSCILLINK_", extra="forbid")

    state: str = "memory"
    """``memory`` (one process, nothing else to run) or ``redis://HOST:PORT/DB`` (shared by workers/replicas)."""
    keys_file: str = Field(default_factory=default_keys_file)
    """File keystore used with ``state=memory`` (with Redis the keys live in Redis)."""
    index: str | None = None
    """Index folder built by ``oscillink ingest``; enables ``/v1/rerank`` without candidates."""
    admin_key: str | None = None
    """Enables ``/admin/*`` (header ``X-Admin-Key``). Unset: the admin routes do not exist."""
    sign_key: str | None = None
    """Server HMAC key: receipts are signed on request (``options.sign``) and checked by ``/v1/verify``."""

    preload_model: bool = True
    """Load the embedding model at start-up (else on the first /v1/rerank)."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_n: int = 5000
    max_d: int = 4096
    max_units: int = 2_000_000
    """Largest N x D of one request (413 above)."""
    max_text_candidates: int = 1000
    max_text_chars: int = 20_000

    monthly_cap: int = 0
    """Default monthly hard cap in units (N x D) per key; 0 = unlimited. Keys may override it."""
    quota_units: int = 0
    """Default units per quota window per key (``X-Quota-*``); 0 = off."""
    quota_window_s: int = 3600
    rate_capacity: float = 0
    """Per-key token bucket: burst size in requests (``X-RateLimit-*``); 0 = off."""
    rate_refill_per_s: float = 1.0
    ip_capacity: float = 0
    """Per-IP token bucket burst (``X-IPLimit-*``); 0 = off."""
    ip_refill_per_s: float = 1.0

    cache_ttl_s: int = 600
    cache_cap: int = 256
    """Bundle-cache entries kept per key (least recently used evicted); 0 disables the cache."""
    feedback_ttl_s: int = 3600
    """How long a response's inputs are kept for ``/v1/feedback``."""
    feedback_cap: int = 2000
    """Responses kept for feedback in memory state (oldest dropped)."""

    @field_validator("state")
    @classmethod
    def _state(cls, v: str) -> str:
        if v != "memory" and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"state must be 'memory' or a redis:// URL; got {v!r}")
        return v

    @property
    def uses_redis(self) -> bool:
        return self.state != "memory"
