"""Pacing of AWS calls, shared by every worker, per AWS account, region and API class.

AWS allows StartAutomationExecution and Stop 1 call/s and Get/Describe/Signal 3 calls/s per
account and region, console included (aws-api.md §9). Every SSM Automation call the gateway
sends passes through `pace_aws_call` just before it goes on the wire (a botocore `before-send`
hook), so botocore's own retries are paced too.

The schedule is a reservation (GCRA, "generic cell rate"): Redis keeps, per key, the earliest
time the next call may leave. A caller atomically takes that slot and moves it one interval
on, then sleeps until its slot. Slots are spaced by exactly 1/rate on Redis's clock, whichever
process or host takes them, so the rate holds across all workers with no burst; callers are
served in arrival order and nobody polls. Without Redis (the one-worker demo) the same schedule
lives in the process.
"""
from __future__ import annotations

import threading
import time

from django.conf import settings

from automations import aws

# The AWS operations we pace, by class (aws-api.md §9). Anything else is not paced here.
API_CLASS = {
    "StartAutomationExecution": "start",
    "StopAutomationExecution": "stop",
    "SendAutomationSignal": "signal",
    "GetAutomationExecution": "read",
    "DescribeAutomationExecutions": "read",
    "DescribeAutomationStepExecutions": "read",
}
# How long a caller may wait for its slot before giving up (it is then put back or retried).
# Cancels wait in a web request, so their wait is short.
MAX_WAIT = {"start": 30.0, "stop": 10.0, "signal": 10.0, "read": 30.0}

# KEYS[1]: the key. ARGV[1]: interval (s); ARGV[2]: the longest wait the caller accepts (s).
# Redis's own clock (TIME inside the script, allowed since Redis 5 with effects replication):
# every worker agrees on "now", and no caller can move the schedule backwards.
# Returns {1, wait} when a slot was reserved, {0, wait} when it would be too far away (nothing reserved).
_RESERVE = """
local interval = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local slot = tonumber(redis.call('GET', KEYS[1]) or now)
if slot < now then slot = now end
local wait = slot - now
if wait > max_wait then
  return {0, tostring(wait)}
end
local ttl = math.ceil((slot + interval - now) * 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.6f', slot + interval), 'PX', ttl)
return {1, tostring(wait)}
"""


class PacingTimeout(aws.TransientAwsError):
    """No slot within the allowed wait, or the shared schedule is unreachable: like AWS throttling,
    but nothing was sent."""

    def __init__(self, message: str, *, operation: str = "", attempt: int = 1):
        super().__init__("PacingTimeout", message, operation=operation)
        # The botocore attempt that was held back; attempt 1 means this call never reached AWS.
        self.attempt = attempt


class _LocalSchedule:
    def __init__(self):
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def reserve(self, key: str, interval: float, max_wait: float) -> tuple[bool, float]:
        with self._lock:
            now = time.monotonic()
            slot = max(self._next.get(key, now), now)
            wait = slot - now
            if wait > max_wait:
                return False, wait
            self._next[key] = slot + interval
            return True, wait


_local = _LocalSchedule()
_lock = threading.Lock()
_redis_client = None
_script = None


def _redis():
    global _redis_client, _script
    with _lock:
        if _redis_client is None:
            import redis

            # Short timeouts: a dead Redis must turn into a PacingTimeout, not a hung worker.
            _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
            _script = _redis_client.register_script(_RESERVE)
        return _script


def reset() -> None:
    """Forget the Redis client (after fork, or when tests change REDIS_URL) and the local schedule."""
    global _redis_client, _script
    with _lock:
        _redis_client = _script = None
        _local._next.clear()


def key_for(api_class: str, *, account_id: str, region: str) -> str:
    return f"delegate:pace:{account_id}:{region}:{api_class}"


def reserve(api_class: str, *, account_id: str, region: str, max_wait: float) -> tuple[bool, float]:
    """Take the next slot for (account, region, class) unless it is more than max_wait away.

    Returns (reserved, seconds until the slot). Raises PacingTimeout if Redis is unreachable.
    """
    rate = float(settings.DELEGATE_AWS_RATE_LIMITS[api_class])
    interval = 1.0 / rate if rate > 0 else float("inf")
    key = key_for(api_class, account_id=account_id, region=region)
    if not settings.REDIS_URL:
        return _local.reserve(key, interval, max_wait)
    import redis

    try:
        reserved, wait = _redis()(keys=[key], args=[interval, max_wait])
    except redis.RedisError as error:
        raise PacingTimeout(f"pacing schedule unreachable: {type(error).__name__}") from error
    return bool(int(reserved)), float(wait)


def acquire(api_class: str, *, account_id: str, region: str, timeout: float | None = None,
            operation: str = "", attempt: int = 1) -> float:
    """Wait for this call's slot; return the seconds waited. PacingTimeout if it is too far away."""
    from automations import metrics

    max_wait = MAX_WAIT.get(api_class, 30.0) if timeout is None else timeout
    reserved, wait = reserve(api_class, account_id=account_id, region=region, max_wait=max_wait)
    if not reserved:
        metrics.PACING_TIMEOUTS.labels(api_class=api_class).inc()
        raise PacingTimeout(f"no {api_class} slot for {account_id}/{region} within {max_wait:g}s "
                            f"(next in {wait:.1f}s)", operation=operation, attempt=attempt)
    if wait > 0:
        time.sleep(wait)
    metrics.PACING_WAIT.labels(api_class=api_class).observe(wait)
    return wait


def pace_aws_call(*, service: str, operation: str, region: str, role_arn: str, attempt: int) -> None:
    """The gateway's before-send hook: wait for a slot if this operation is paced."""
    api_class = API_CLASS.get(operation) if service == "ssm" else None
    if api_class is None:
        return
    acquire(api_class, account_id=aws.account_of(role_arn), region=region, operation=operation, attempt=attempt)
