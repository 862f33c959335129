"""Pacing of AWS calls, shared by every worker, per AWS account, region and API class.

AWS allows StartAutomationExecution and Stop 1 call/s and Get/Describe/Signal 3 calls/s per
account and region, console included (aws-api.md §9). Every SSM Automation call the gateway
sends passes through `pace_aws_call` just before it goes on the wire (a botocore `before-send`
hook), so botocore's own retries are paced too.

The schedule: Redis keeps, per key, the earliest time the next call may leave. A caller asks
"may I go now?": if that time has come, the script moves it one interval on and says yes;
otherwise it says how long to wait, and the caller sleeps and asks again. The answer is given
on Redis's clock at the moment the caller is about to send, so calls from any number of
processes and hosts leave at least 1/rate apart (no burst), however late a sleeping caller
wakes up. (Reserving future slots instead would be fairer, but a caller that oversleeps its
slot then sends right next to the following one.) Without Redis (the one-worker demo) the same
schedule lives in the process.
"""
from __future__ import annotations

import random
import threading
import time
from typing import NamedTuple

from django.conf import settings

from automations.aws import gateway as aws
from automations.ops import metrics

# The AWS operations we pace, by class (aws-api.md §9). Anything else is not paced here.
API_CLASS = {
    "StartAutomationExecution": "start",
    "StopAutomationExecution": "stop",
    "SendAutomationSignal": "signal",
    "GetAutomationExecution": "read",
    "DescribeAutomationExecutions": "read",
    "DescribeAutomationStepExecutions": "read",
    "StartExecutionPreview": "preview",
    "GetExecutionPreview": "preview_read",
}
# AWS's rate for each class when settings name none (each preview call is 1 call/s, aws-api.md §9:
# two buckets, so a dispatch's Start and Get of its preview do not halve the dispatch rate).
DEFAULT_RATES = {"start": 1.0, "stop": 1.0, "signal": 3.0, "read": 3.0, "preview": 1.0, "preview_read": 1.0}
# How long a caller may wait for its slot before giving up (it is then put back or retried).
# Cancels wait in a web request, so their wait is short.
MAX_WAIT = {"start": 30.0, "stop": 10.0, "signal": 10.0, "read": 30.0, "preview": 10.0, "preview_read": 10.0}
# Added to every interval: the few milliseconds between our "go" and AWS receiving the call vary
# from call to call, and a strict 1 call/s bucket throttles a call that lands 4 ms early
# (bench/dispatch.py measured exactly that without the guard).
GUARD_SECONDS = 0.02

# KEYS[1]: the key. ARGV[1]: interval (s). Redis's own clock (TIME inside the script, allowed
# since Redis 5 with effects replication): every worker agrees on "now".
# Returns {1, now} when the caller may send now (and the next call is pushed one interval on),
# else {0, seconds until the next call may leave}.
_TAKE = """
local interval = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local next_at = tonumber(redis.call('GET', KEYS[1]) or 0)
if now >= next_at then
  redis.call('SET', KEYS[1], string.format('%.6f', now + interval), 'PX', math.ceil(interval * 1000) + 1000)
  return {1, string.format('%.6f', now)}
end
return {0, tostring(next_at - now)}
"""


class PacingTimeout(aws.TransientAwsError):
    """No slot within the allowed wait, or the shared schedule is unreachable: like AWS throttling,
    but nothing was sent."""

    def __init__(self, message: str, *, operation: str = "", attempt: int = 1):
        super().__init__("PacingTimeout", message, operation=operation)
        # The botocore attempt that was held back; attempt 1 means this call never reached AWS.
        self.attempt = attempt


class Answer(NamedTuple):
    granted: bool
    wait: float  # seconds until a call may leave (when not granted)
    at: float  # when it was granted, on the schedule's clock (epoch seconds)


class _LocalSchedule:
    def __init__(self):
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def take(self, key: str, interval: float) -> Answer:
        with self._lock:
            now = time.monotonic()
            next_at = self._next.get(key, 0.0)
            if now >= next_at:
                self._next[key] = now + interval
                return Answer(True, 0.0, time.time())
            return Answer(False, next_at - now, 0.0)


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
            _script = _redis_client.register_script(_TAKE)
        return _script


def reset() -> None:
    """Forget the Redis client (after fork, or when tests change REDIS_URL), the local schedule and
    this thread's recorded waits."""
    global _redis_client, _script
    with _lock:
        _redis_client = _script = None
        _local._next.clear()
    _waits.by_operation = {}


def key_for(api_class: str, *, account_id: str, region: str) -> str:
    return f"delegate:pace:{account_id}:{region}:{api_class}"


def take(api_class: str, *, account_id: str, region: str) -> Answer:
    """May a call of this class leave now? If so the schedule moves on; if not, how long to wait.

    Raises PacingTimeout if Redis is unreachable.
    """
    rate = float(settings.DELEGATE_AWS_RATE_LIMITS.get(api_class, DEFAULT_RATES[api_class]))
    interval = (1.0 / rate if rate > 0 else 3600.0) + GUARD_SECONDS
    key = key_for(api_class, account_id=account_id, region=region)
    if not settings.REDIS_URL:
        return _local.take(key, interval)
    import redis

    try:
        granted, value = _redis()(keys=[key], args=[interval])
    except redis.RedisError as error:
        raise PacingTimeout(f"pacing schedule unreachable: {type(error).__name__}") from error
    if int(granted):
        return Answer(True, 0.0, float(value))
    return Answer(False, float(value), 0.0)


def acquire(api_class: str, *, account_id: str, region: str, timeout: float | None = None,
            operation: str = "", attempt: int = 1) -> float:
    """Wait until this call may leave; return the seconds waited. PacingTimeout after `timeout`."""
    max_wait = MAX_WAIT.get(api_class, 30.0) if timeout is None else timeout
    started = time.monotonic()
    while True:
        granted, wait, _ = take(api_class, account_id=account_id, region=region)
        waited = time.monotonic() - started
        if granted:
            metrics.PACING_WAIT.labels(api_class=api_class).observe(waited)
            return waited
        if waited + wait > max_wait:
            metrics.PACING_TIMEOUTS.labels(api_class=api_class).inc()
            raise PacingTimeout(f"no {api_class} slot for {account_id}/{region} within {max_wait:g}s",
                                operation=operation, attempt=attempt)
        # A little jitter: callers woken for the same moment do not all ask in the same millisecond.
        time.sleep(wait + random.uniform(0, min(wait, 0.01)))


def pace_aws_call(*, service: str, operation: str, region: str, role_arn: str, attempt: int) -> None:
    """The gateway's before-send hook: wait for a slot if this operation is paced."""
    api_class = API_CLASS.get(operation) if service == "ssm" else None
    if api_class is None:
        return
    waited = acquire(api_class, account_id=aws.account_of(role_arn), region=region, operation=operation,
                     attempt=attempt)
    _waits.by_operation = {**getattr(_waits, "by_operation", {}), operation: waited}


# This thread's last wait per operation, for a log line saying where a dispatch's time went.
_waits = threading.local()


def last_waits() -> dict[str, float]:
    """Seconds this thread last waited for a slot, per paced operation (cleared by reading)."""
    found = getattr(_waits, "by_operation", {})
    _waits.by_operation = {}
    return found
