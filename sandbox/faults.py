"""Fault injection: the knobs tests and the demo turn to make the sandbox misbehave like AWS.

All knobs may change while the server runs. Plain attributes (`latency`, `concurrency_limit`,
`rate_limits`, `fail_step`) are read afresh on every call, so assigning them is enough; the
queued errors, token buckets and blocks live behind a lock. `engine_paused` freezes the
automation engine (AWS's side of a run stalls) while every API keeps answering.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from .errors import AwsError

# The throttling error each protocol uses (aws-api.md §15 item 14); EC2 answers 503.
THROTTLE = {
    "ssm": ("ThrottlingException", 400),
    "sts": ("Throttling", 400),
    "ec2": ("RequestLimitExceeded", 503),
}
DEFAULT_CONCURRENCY_LIMIT = 100  # running automations per account and region (aws-api.md §9)
# Pausing waits for a tick in flight to end; a step held by `block()` could hold it for ever.
ENGINE_PAUSE_WAIT_SECONDS = 5.0


class Block:
    """What `Faults.block(op)` returns: calls of that operation wait until `release()`.

    Event-like (`set`, `is_set`, `wait`); `arrived` is set as soon as a call is being held, so a
    test can wait for the moment "the worker is inside StartAutomationExecution".
    """

    def __init__(self, operation: str):
        self.operation = operation
        self._released = threading.Event()
        self.arrived = threading.Event()
        self.held = 0  # calls waiting right now

    def release(self) -> None:
        self._released.set()

    set = release

    def is_set(self) -> bool:
        return self._released.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._released.wait(timeout)

    def hold(self) -> None:
        self.held += 1
        self.arrived.set()
        try:
            self._released.wait()
        finally:
            self.held -= 1


class _Bucket:
    """Token bucket: `rate` calls per second, bursts up to max(1, rate)."""

    def __init__(self, rate: float):
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Faults:
    def __init__(self):
        self._lock = threading.Lock()
        self._queued: dict[str, deque] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._blocks: dict[str, Block] = {}
        # Held by the engine while it advances executions (engine.py), so pausing can wait for
        # the tick in flight: once `engine_paused = True` returns, no execution moves.
        self.engine_gate = threading.Lock()
        self._engine_paused = False
        self.reset()

    def reset(self) -> None:
        """Back to a well-behaved AWS: no limits beyond the default quota, nothing queued or blocked."""
        self.release_all()  # never leave a server thread hanging after a reset
        with self._lock:
            self._queued.clear()
            self._buckets.clear()
        self.concurrency_limit = DEFAULT_CONCURRENCY_LIMIT
        self.rate_limits: dict[str, float] = {}
        self.latency = 0.0
        self.fail_step: set[str] = set()
        # "ACCOUNT:REGION" of multi-account locations whose child executions fail every step.
        self.fail_locations: set[str] = set()
        # The status a multi-account parent ends in when some locations failed. AWS documents none
        # (its API lists Failed, CompletedWithFailure, Success, CompletedWithSuccess): tests play each.
        self.parent_status_on_location_failure = "Failed"
        # AWS lets only the listed Approvers approve or reject, and so does the sandbox by default.
        # Tests may turn it off explicitly (and say why).
        self.enforce_approvers = True
        self.engine_paused = False

    @property
    def engine_paused(self) -> bool:
        """True: the engine advances no execution (none starts, none finishes a step, sleeps and
        waits do not end) until set back to False. Every API still answers: Start is accepted
        (the run stays Pending), Get/Describe show where each run stands, signals and stops are
        recorded and take effect on resume. The clock does not stop: a sleep or timeout that
        ran out while paused ends at the first tick after the resume."""
        return self._engine_paused

    @engine_paused.setter
    def engine_paused(self, paused: bool) -> None:
        self._engine_paused = bool(paused)
        if paused and self.engine_gate.acquire(timeout=ENGINE_PAUSE_WAIT_SECONDS):
            self.engine_gate.release()  # the tick in flight (if any) has ended

    # Knobs -------------------------------------------------------------------------------

    def throttle_next(self, operation: str, n: int = 1) -> None:
        """Answer the next n calls of `operation` with the protocol's throttling error."""
        self._queue(operation, [("throttle",)] * n)

    def error_next(
        self, operation: str, code: str, n: int = 1, status: int = 400, message: str | None = None
    ):
        """Answer the next n calls of `operation` with an arbitrary error."""
        text = message or f"Injected by the Delegate sandbox (error_next {code})"
        self._queue(operation, [("error", code, status, text)] * n)

    def block(self, operation: str) -> Block:
        with self._lock:
            old = self._blocks.get(operation)
            handle = self._blocks[operation] = Block(operation)
        if old:
            old.release()
        return handle

    def release(self, operation: str) -> None:
        with self._lock:
            handle = self._blocks.pop(operation, None)
        if handle:
            handle.release()

    def release_all(self) -> None:
        with self._lock:
            blocks = list(self._blocks.values())
            self._blocks.clear()
        for block in blocks:
            block.release()

    def _queue(self, operation: str, items: list) -> None:
        with self._lock:
            self._queued.setdefault(operation, deque()).extend(items)

    # Applied by the server to every call, outside the state lock ---------------------------

    def before_call(self, service: str, operation: str, region: str) -> None:
        with self._lock:
            block = self._blocks.get(operation)
        if block is not None and not block.is_set():
            block.hold()
        if self.latency:
            time.sleep(float(self.latency))
        with self._lock:
            queue = self._queued.get(operation)
            item = queue.popleft() if queue else None
            if item is None:
                rate = self.rate_limits.get(operation)
                if rate is not None and not self._take(region, operation, float(rate)):
                    item = ("throttle",)
        if item is None:
            return
        if item[0] == "throttle":
            code, status = THROTTLE.get(service, THROTTLE["ssm"])
            raise AwsError(code, "Rate exceeded", status=status)
        _, code, status, text = item
        raise AwsError(code, text, status=status)

    def _take(self, region: str, operation: str, rate: float) -> bool:
        if rate <= 0:
            return False
        bucket = self._buckets.get((region, operation))
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[(region, operation)] = _Bucket(rate)
        return bucket.take()

    # The same knobs as JSON, for POST /_sandbox/faults ----------------------------------------

    def snapshot(self) -> dict:
        with self._lock:
            queued = {op: len(items) for op, items in self._queued.items() if items}
            blocked = sorted(op for op, handle in self._blocks.items() if not handle.is_set())
        return {
            "concurrency_limit": self.concurrency_limit,
            "rate_limits": dict(self.rate_limits),
            "latency": self.latency,
            "fail_step": sorted(self.fail_step),
            "fail_locations": sorted(self.fail_locations),
            "parent_status_on_location_failure": self.parent_status_on_location_failure,
            "enforce_approvers": self.enforce_approvers,
            "engine_paused": self.engine_paused,
            "queued_errors": queued,
            "blocked": blocked,
        }

    def apply(self, body: dict) -> None:
        """Apply a JSON body such as {"rate_limits": {"StartAutomationExecution": 1}, "latency": 0.2}.

        `throttle_next` is {op: n}; `error_next` is a list of {operation, code, n, status, message};
        `block` and `release` are lists of operation names; `engine_paused` is true or false.
        """
        known = {
            "concurrency_limit",
            "rate_limits",
            "latency",
            "fail_step",
            "fail_locations",
            "parent_status_on_location_failure",
            "enforce_approvers",
            "engine_paused",
            "throttle_next",
            "error_next",
            "block",
            "release",
        }
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown fault knobs: {sorted(unknown)}; known: {sorted(known)}")
        if "engine_paused" in body and not isinstance(body["engine_paused"], bool):
            raise ValueError("engine_paused must be true or false")  # before anything changes
        if "concurrency_limit" in body:
            self.concurrency_limit = int(body["concurrency_limit"])
        if "rate_limits" in body:
            self.rate_limits = {op: float(rate) for op, rate in (body["rate_limits"] or {}).items()}
        if "latency" in body:
            self.latency = float(body["latency"])
        if "fail_step" in body:
            self.fail_step = set(body["fail_step"] or [])
        if "fail_locations" in body:
            self.fail_locations = set(body["fail_locations"] or [])
        if "parent_status_on_location_failure" in body:
            status = str(body["parent_status_on_location_failure"])
            if status not in ("Failed", "CompletedWithFailure", "Success", "CompletedWithSuccess"):
                raise ValueError("parent_status_on_location_failure: Failed, CompletedWithFailure, Success or "
                                 "CompletedWithSuccess")
            self.parent_status_on_location_failure = status
        if "enforce_approvers" in body:
            self.enforce_approvers = bool(body["enforce_approvers"])
        for operation, n in (body.get("throttle_next") or {}).items():
            self.throttle_next(operation, int(n))
        for spec in body.get("error_next") or []:
            self.error_next(
                spec["operation"],
                spec["code"],
                int(spec.get("n", 1)),
                int(spec.get("status", 400)),
                spec.get("message"),
            )
        for operation in body.get("block") or []:
            self.block(operation)
        for operation in body.get("release") or []:
            self.release(operation)
        if "engine_paused" in body:  # last: pausing waits for a tick a released call may be holding up
            self.engine_paused = body["engine_paused"]
