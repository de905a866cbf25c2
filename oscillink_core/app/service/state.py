"""Shared state behind one interface: limits, bundle cache, per-key profiles, feedback inputs.

`MemoryState` serves one process (a lock makes each decision atomic). `RedisState` serves many
processes: every limit decision is one Lua script (check all limits, then consume all or
nothing), so two servers on one Redis enforce one quota exactly.
"""

from __future__ import annotations

import calendar
import json
import math
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone


@dataclass(frozen=True)
class Limits:
    """The limits that apply to one request (0 switches a limit off)."""

    ip_capacity: float = 0
    ip_refill_per_s: float = 1.0
    rate_capacity: float = 0
    rate_refill_per_s: float = 1.0
    quota_units: int = 0
    quota_window_s: int = 3600
    monthly_cap: int = 0


@dataclass
class Decision:
    allowed: bool
    reason: str  # "" | "ip" | "rate" | "quota" | "monthly"
    retry_after: int
    headers: dict[str, str] = field(default_factory=dict)


def month_period(now: float | None = None) -> tuple[str, int]:
    """("YYYY-MM", epoch second at which the next month starts), UTC."""
    d = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return f"{d.year:04d}-{d.month:02d}", calendar.timegm((y, m, 1, 0, 0, 0))


def _bucket_reset(now: float, tokens: float, cap: float, rate: float) -> int:
    if rate <= 0:
        return 0
    return int(math.ceil(now + max(cap - tokens, 0.0) / rate))


def build_decision(lim: Limits, reason: str, ipt: float, kt: float, qused: int, qreset: float, mused: int,
                   retry: int, now: float, period: str) -> Decision:
    h: dict[str, str] = {}
    if lim.ip_capacity > 0:
        h["X-IPLimit-Limit"] = str(int(lim.ip_capacity))
        h["X-IPLimit-Remaining"] = str(max(int(math.floor(ipt)), 0))
        h["X-IPLimit-Reset"] = str(_bucket_reset(now, ipt, lim.ip_capacity, lim.ip_refill_per_s))
    if lim.rate_capacity > 0:
        h["X-RateLimit-Limit"] = str(int(lim.rate_capacity))
        h["X-RateLimit-Remaining"] = str(max(int(math.floor(kt)), 0))
        h["X-RateLimit-Reset"] = str(_bucket_reset(now, kt, lim.rate_capacity, lim.rate_refill_per_s))
    if lim.quota_units > 0:
        h["X-Quota-Limit"] = str(lim.quota_units)
        h["X-Quota-Remaining"] = str(max(lim.quota_units - qused, 0))
        h["X-Quota-Reset"] = str(int(qreset))
    if lim.monthly_cap > 0:
        h["X-Monthly-Cap"] = str(lim.monthly_cap)
        h["X-Monthly-Remaining"] = str(max(lim.monthly_cap - mused, 0))
    h["X-Monthly-Used"] = str(mused)
    h["X-Monthly-Period"] = period
    if reason:
        h["Retry-After"] = str(max(int(retry), 1))
    return Decision(not reason, reason, max(int(retry), 1) if reason else 0, h)


class MemoryState:
    """All state in this process (the embedded default)."""

    kind = "memory"

    def __init__(self, *, feedback_cap: int = 2000) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._counters: dict[str, int] = {}
        self._cache: dict[str, OrderedDict] = {}
        self._profiles: dict[str, dict] = {}
        self._profile_lock = threading.Lock()
        self._stash: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._feedback_cap = feedback_cap

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ limits
    def _bucket(self, name: str, cap: float, rate: float, now: float) -> float | None:
        if cap <= 0:
            return None
        tokens, ts = self._buckets.get(name, (cap, now))
        return min(cap, tokens + max(now - ts, 0.0) * rate)

    def consume(self, kid: str, ip: str, units: int, lim: Limits) -> Decision:
        period, m_reset = month_period()
        with self._lock:
            now = time.time()
            ipt = self._bucket(f"ip:{ip}", lim.ip_capacity, lim.ip_refill_per_s, now)
            kt = self._bucket(f"key:{kid}", lim.rate_capacity, lim.rate_refill_per_s, now)
            qkey, qused, qreset = None, 0, 0.0
            if lim.quota_units > 0:
                w = math.floor(now / lim.quota_window_s)
                qkey, qreset = f"q:{kid}:{w}", (w + 1) * lim.quota_window_s
                qused = self._counters.get(qkey, 0)
            mkey = f"m:{kid}:{period}"
            mused = self._counters.get(mkey, 0)
            reason, retry = _reject(lim, ipt, kt, qused, qreset, mused, units, now, m_reset)
            if not reason:
                if ipt is not None:
                    ipt -= 1
                    self._buckets[f"ip:{ip}"] = (ipt, now)
                if kt is not None:
                    kt -= 1
                    self._buckets[f"key:{kid}"] = (kt, now)
                if qkey:
                    qused = self._counters[qkey] = qused + units
                mused = self._counters[mkey] = mused + units
        return build_decision(lim, reason, ipt if ipt is not None else 0, kt if kt is not None else 0,
                              qused, qreset, mused, retry, now, period)

    def usage(self, kid: str) -> int:
        with self._lock:
            return self._counters.get(f"m:{kid}:{month_period()[0]}", 0)

    # ------------------------------------------------------------------ cache
    def cache_get(self, kid: str, h: str, ttl: int) -> tuple[bytes, float] | None:
        with self._lock:
            c = self._cache.get(kid)
            if not c or h not in c:
                return None
            t, body = c[h]
            if time.time() - t > ttl:
                del c[h]
                return None
            c.move_to_end(h)
            return body, time.time() - t

    def cache_put(self, kid: str, h: str, body: bytes, ttl: int, cap: int) -> None:
        with self._lock:
            c = self._cache.setdefault(kid, OrderedDict())
            c[h] = (time.time(), body)
            c.move_to_end(h)
            while len(c) > cap:
                c.popitem(last=False)

    # ------------------------------------------------------------------ profiles
    def profile_get(self, kid: str) -> dict | None:
        with self._lock:
            p = self._profiles.get(kid)
            return json.loads(json.dumps(p)) if p is not None else None

    def profile_update(self, kid: str, fn):
        """Apply ``fn(old_profile_or_None) -> (new_profile, result)`` atomically; return result."""
        with self._profile_lock:
            new, result = fn(self.profile_get(kid))
            with self._lock:
                self._profiles[kid] = new
            return result

    # ------------------------------------------------------------------ feedback inputs
    def stash_put(self, kid: str, rid: str, data: bytes, ttl: int) -> None:
        with self._lock:
            self._stash[f"{kid}:{rid}"] = (time.time() + ttl, data)
            self._stash.move_to_end(f"{kid}:{rid}")
            while len(self._stash) > self._feedback_cap:
                self._stash.popitem(last=False)

    def stash_get(self, kid: str, rid: str) -> bytes | None:
        with self._lock:
            v = self._stash.get(f"{kid}:{rid}")
            if v is None or v[0] < time.time():
                return None
            return v[1]


def _reject(lim: Limits, ipt, kt, qused, qreset, mused, units, now, m_reset) -> tuple[str, int]:
    def wait(tokens: float, rate: float) -> int:
        return 86400 if rate <= 0 else int(math.ceil((1 - tokens) / rate))

    if ipt is not None and ipt < 1:
        return "ip", wait(ipt, lim.ip_refill_per_s)
    if kt is not None and kt < 1:
        return "rate", wait(kt, lim.rate_refill_per_s)
    if lim.quota_units > 0 and qused + units > lim.quota_units:
        return "quota", int(math.ceil(qreset - now))
    if lim.monthly_cap > 0 and mused + units > lim.monthly_cap:
        return "monthly", int(m_reset - now)
    return "", 0


# KEYS: ip bucket, key bucket, quota-window prefix, monthly counter
# ARGV: units, ip_cap, ip_rate, key_cap, key_rate, quota_units, quota_window, monthly_cap, month_reset_epoch
_CONSUME = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local units = tonumber(ARGV[1])
local ip_cap, ip_rate = tonumber(ARGV[2]), tonumber(ARGV[3])
local k_cap, k_rate = tonumber(ARGV[4]), tonumber(ARGV[5])
local q_units, q_win = tonumber(ARGV[6]), tonumber(ARGV[7])
local m_cap, m_reset = tonumber(ARGV[8]), tonumber(ARGV[9])
local function bucket(k, cap, rate)
  if cap <= 0 then return nil end
  local v = redis.call('HMGET', k, 'tokens', 'ts')
  local tokens = tonumber(v[1]) or cap
  local ts = tonumber(v[2]) or now
  if now > ts then tokens = math.min(cap, tokens + (now - ts) * rate) end
  return tokens
end
local function wait(tokens, rate)
  if rate <= 0 then return 86400 end
  return math.ceil((1 - tokens) / rate)
end
local function ttl_of(cap, rate)
  if rate <= 0 then return 30 * 86400 end
  return math.ceil(cap / rate) + 60
end
local ipt = bucket(KEYS[1], ip_cap, ip_rate)
local kt = bucket(KEYS[2], k_cap, k_rate)
local qkey, qused, qreset = nil, 0, 0
if q_units > 0 then
  local w = math.floor(now / q_win)
  qkey = KEYS[3] .. ':' .. w
  qused = tonumber(redis.call('GET', qkey) or '0')
  qreset = (w + 1) * q_win
end
local mused = tonumber(redis.call('GET', KEYS[4]) or '0')
local reason, retry = '', 0
if ipt ~= nil and ipt < 1 then reason = 'ip'; retry = wait(ipt, ip_rate)
elseif kt ~= nil and kt < 1 then reason = 'rate'; retry = wait(kt, k_rate)
elseif q_units > 0 and qused + units > q_units then reason = 'quota'; retry = math.ceil(qreset - now)
elseif m_cap > 0 and mused + units > m_cap then reason = 'monthly'; retry = math.floor(m_reset - now)
end
if reason == '' then
  if ipt ~= nil then
    ipt = ipt - 1
    redis.call('HSET', KEYS[1], 'tokens', tostring(ipt), 'ts', tostring(now))
    redis.call('EXPIRE', KEYS[1], ttl_of(ip_cap, ip_rate))
  end
  if kt ~= nil then
    kt = kt - 1
    redis.call('HSET', KEYS[2], 'tokens', tostring(kt), 'ts', tostring(now))
    redis.call('EXPIRE', KEYS[2], ttl_of(k_cap, k_rate))
  end
  if qkey ~= nil then
    qused = redis.call('INCRBY', qkey, units)
    redis.call('EXPIRE', qkey, q_win + 60)
  end
  mused = redis.call('INCRBY', KEYS[4], units)
  redis.call('EXPIREAT', KEYS[4], math.floor(m_reset) + 40 * 86400)
end
return {reason, tostring(ipt or 0), tostring(kt or 0), tostring(qused), tostring(qreset), tostring(mused),
        tostring(retry), tostring(now)}
"""

# KEYS: value key, lru zset; ARGV: hash, now
_CACHE_GET = """
local v = redis.call('GET', KEYS[1])
if v then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1]) end
return v
"""

# KEYS: value key, lru zset; ARGV: hash, now, body, ttl, cap, value-key prefix
_CACHE_PUT = """
redis.call('SET', KEYS[1], ARGV[3], 'EX', tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]) * 2)
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if extra > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], extra)
  for i = 1, #old, 2 do redis.call('DEL', ARGV[6] .. old[i]) end
end
return 1
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisState:
    """State in Redis (``redis://HOST:PORT/DB``), shared by every worker and replica."""

    kind = "redis"

    def __init__(self, url: str) -> None:
        import redis

        self.r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
        self._consume = self.r.register_script(_CONSUME)
        self._cget = self.r.register_script(_CACHE_GET)
        self._cput = self.r.register_script(_CACHE_PUT)
        self._unlock = self.r.register_script(_UNLOCK)

    def ping(self) -> bool:
        return bool(self.r.ping())

    def close(self) -> None:
        self.r.close()

    def consume(self, kid: str, ip: str, units: int, lim: Limits) -> Decision:
        period, m_reset = month_period()
        out = self._consume(
            keys=[f"osk:rl:ip:{ip}", f"osk:rl:key:{kid}", f"osk:q:{kid}", f"osk:m:{kid}:{period}"],
            args=[units, lim.ip_capacity, lim.ip_refill_per_s, lim.rate_capacity, lim.rate_refill_per_s,
                  lim.quota_units, lim.quota_window_s, lim.monthly_cap, m_reset])
        s = [x.decode() if isinstance(x, bytes) else str(x) for x in out]
        return build_decision(lim, s[0], float(s[1]), float(s[2]), int(float(s[3])), float(s[4]),
                              int(float(s[5])), int(float(s[6])), float(s[7]), period)

    def usage(self, kid: str) -> int:
        return int(self.r.get(f"osk:m:{kid}:{month_period()[0]}") or 0)

    def cache_get(self, kid: str, h: str, ttl: int) -> tuple[bytes, float] | None:
        v = self._cget(keys=[f"osk:c:{kid}:{h}", f"osk:clru:{kid}"], args=[h, time.time()])
        if v is None:
            return None
        head, _, body = v.partition(b"\n")
        return body, time.time() - float(head)

    def cache_put(self, kid: str, h: str, body: bytes, ttl: int, cap: int) -> None:
        now = time.time()
        self._cput(keys=[f"osk:c:{kid}:{h}", f"osk:clru:{kid}"],
                   args=[h, now, f"{now:.6f}\n".encode() + body, ttl, cap, f"osk:c:{kid}:"])

    def profile_get(self, kid: str) -> dict | None:
        raw = self.r.get(f"osk:p:{kid}")
        return json.loads(raw) if raw else None

    def profile_update(self, kid: str, fn):
        lock, token = f"osk:plock:{kid}", secrets.token_hex(8)
        deadline = time.monotonic() + 60
        while not self.r.set(lock, token, nx=True, px=60_000):
            if time.monotonic() > deadline:
                raise TimeoutError("the profile is locked by another update")
            time.sleep(0.01)
        try:
            new, result = fn(self.profile_get(kid))
            self.r.set(f"osk:p:{kid}", json.dumps(new, sort_keys=True))
            return result
        finally:
            self._unlock(keys=[lock], args=[token])

    def stash_put(self, kid: str, rid: str, data: bytes, ttl: int) -> None:
        self.r.set(f"osk:fb:{kid}:{rid}", data, ex=ttl)

    def stash_get(self, kid: str, rid: str) -> bytes | None:
        return self.r.get(f"osk:fb:{kid}:{rid}")


def open_state(url: str, *, feedback_cap: int = 2000):
    return MemoryState(feedback_cap=feedback_cap) if url == "memory" else RedisState(url)
