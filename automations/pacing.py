"""A token bucket shared by every worker, per AWS account, region and API class.

AWS allows StartAutomationExecution and Stop 1 call/s and Get/Describe/Signal 3 calls/s per
account and region (aws-api.md §9). With Redis configured the bucket lives in Redis, so all
workers on all hosts share it; without Redis (the one-worker demo) it lives in the process.
"""
from __future__ import annotations

import threading
import time

from django.conf import settings

# KEYS[1] bucket; ARGV rate/s, capacity, now (s). Returns 0 when a token was taken, else ms to wait.
_TAKE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return wait
"""


class PacingTimeout(Exception):
    """No token within the allowed wait: treat like AWS throttling."""


class _LocalBucket:
    def __init__(self):
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str, rate: float, capacity: float, now: float) -> float:
        with self._lock:
            tokens, at = self._state.get(key, (capacity, now))
            tokens = min(capacity, tokens + max(0.0, now - at) * rate)
            if tokens >= 1:
                self._state[key] = (tokens - 1, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (1 - tokens) / rate


_local = _LocalBucket()
_redis_client = None
_script = None


def _redis():
    global _redis_client, _script
    if _redis_client is None:
        import redis

        _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        _script = _redis_client.register_script(_TAKE)
    return _redis_client, _script


def reset() -> None:
    global _redis_client, _script
    _redis_client = _script = None
    _local._state.clear()


def acquire(api_class: str, *, account_id: str, region: str, timeout: float = 30.0) -> float:
    """Block until a token for (account, region, api_class) is free; return seconds waited.

    Capacity 1 keeps bursts out: calls leave at most `rate` per second, from every worker together.
    """
    rate = float(settings.DELEGATE_AWS_RATE_LIMITS[api_class])
    key = f"delegate:pace:{account_id}:{region}:{api_class}"
    started = time.monotonic()
    while True:
        if settings.REDIS_URL:
            client, script = _redis()
            # Redis's own clock: every worker agrees on "now" even if host clocks drift.
            seconds, micros = client.time()
            wait = int(script(keys=[key], args=[rate, 1, seconds + micros / 1e6])) / 1000
        else:
            wait = _local.take(key, rate, 1.0, time.monotonic())
        waited = time.monotonic() - started
        if wait <= 0:
            return waited
        if waited + wait > timeout:
            raise PacingTimeout(f"no {api_class} token for {account_id}/{region} within {timeout}s")
        time.sleep(wait)
