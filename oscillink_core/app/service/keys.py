"""API keys: generated once, stored only as SHA-256 hashes, checked in constant time.

A key reads ``osk_<id>_<secret>``; ``id`` (public, 12 hex digits) finds the record, the hash of the
whole key is compared with `hmac.compare_digest`. Two stores share one interface: a JSON file
(the default, written atomically, re-read when it changes) and a Redis hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PREFIX = "osk_"
LIMIT_FIELDS = ("monthly_cap", "quota_units", "quota_window_s", "rate_capacity", "rate_refill_per_s")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> tuple[str, str]:
    """(key id, full key). The full key is shown once and never stored."""
    kid = secrets.token_hex(6)
    return kid, f"{PREFIX}{kid}_{secrets.token_urlsafe(24)}"


def key_id_of(key: str) -> str | None:
    if not key.startswith(PREFIX):
        return None
    kid, sep, _ = key[len(PREFIX):].partition("_")
    return kid if sep and len(kid) == 12 else None


def make_record(name: str, **limits: Any) -> tuple[str, dict]:
    kid, key = new_key()
    rec = {"id": kid, "name": name, "hash": hash_key(key), "created": int(time.time()), "revoked": False}
    rec.update({f: limits[f] for f in LIMIT_FIELDS if limits.get(f) is not None})
    return key, rec


def check(record: dict | None, key: str) -> bool:
    """Constant-time check of ``key`` against a stored record (a dummy comparison when there is none)."""
    expected = record["hash"] if record else "0" * 64
    return hmac.compare_digest(expected, hash_key(key)) and record is not None


def public(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k != "hash"}


class FileKeyStore:
    """Keys in a JSON file ``{"keys": {id: record}}``; re-read whenever the file's mtime changes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._keys: dict[str, dict] = {}

    def _load(self) -> dict[str, dict]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._keys = None, {}
            return self._keys
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            data = json.loads(self.path.read_text("utf-8") or "{}")
            keys = data.get("keys", {})
            if not isinstance(keys, dict):
                raise ValueError(f"{self.path}: not an oscillink keystore")
            self._keys, self._stamp = keys, stamp
        return self._keys

    def _write(self, keys: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"format": "oscillink-keystore", "version": 1, "keys": keys}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def get(self, kid: str) -> dict | None:
        with self._lock:
            return self._load().get(kid)

    def list(self) -> list[dict]:
        with self._lock:
            return sorted(self._load().values(), key=lambda r: (r["created"], r["id"]))

    def put(self, rec: dict) -> None:
        with self._lock:
            keys = dict(self._load())
            keys[rec["id"]] = rec
            self._write(keys)

    def revoke(self, kid: str) -> bool:
        with self._lock:
            keys = dict(self._load())
            if kid not in keys:
                return False
            keys[kid] = {**keys[kid], "revoked": True, "revoked_at": int(time.time())}
            self._write(keys)
            return True

    def ping(self) -> bool:
        with self._lock:
            self._load()
        return True


class RedisKeyStore:
    """Keys in the Redis hash ``osk:keys`` (id -> JSON record)."""

    HASH = "osk:keys"

    def __init__(self, client) -> None:
        self.r = client

    def get(self, kid: str) -> dict | None:
        raw = self.r.hget(self.HASH, kid)
        return json.loads(raw) if raw else None

    def list(self) -> list[dict]:
        recs = [json.loads(v) for v in self.r.hvals(self.HASH)]
        return sorted(recs, key=lambda r: (r["created"], r["id"]))

    def put(self, rec: dict) -> None:
        self.r.hset(self.HASH, rec["id"], json.dumps(rec, sort_keys=True))

    def revoke(self, kid: str) -> bool:
        # read-modify-write under WATCH so a concurrent update is not lost
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self.HASH)
                    raw = pipe.hget(self.HASH, kid)
                    if not raw:
                        pipe.unwatch()
                        return False
                    rec = {**json.loads(raw), "revoked": True, "revoked_at": int(time.time())}
                    pipe.multi()
                    pipe.hset(self.HASH, kid, json.dumps(rec, sort_keys=True))
                    pipe.execute()
                    return True
                except Exception as exc:  # redis.WatchError: retry
                    if type(exc).__name__ != "WatchError":
                        raise

    def ping(self) -> bool:
        return bool(self.r.ping())


def open_keystore(state: str, keys_file: str):
    if state == "memory":
        return FileKeyStore(keys_file)
    import redis

    return RedisKeyStore(redis.Redis.from_url(state))
