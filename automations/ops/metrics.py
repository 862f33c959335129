"""Prometheus metrics: the counters and histograms every process increments (served by api/operations.py at /metrics).

Two kinds of numbers:
- events counted where they happen (dispatch latency, AWS calls by operation and outcome,
  throttles, pacing waits, broker publishes), in whichever process they happen: web,
  Celery pool child, beat;
- state read from PostgreSQL at scrape time (outbox rows and the age of the oldest, active
  requests), so they are right whichever process scrapes and need no cross-process gauge;
  that collector lives with the /metrics view in automations/api/operations.py, so this
  module stays a leaf that imports nothing of the portal.

Multiprocess: Celery's prefork children and gunicorn's workers are separate processes. When
PROMETHEUS_MULTIPROC_DIR names a directory shared by the web and worker processes of a host,
prometheus-client writes every process's counters there and /metrics adds them all up
(MultiProcessCollector). Without it, /metrics shows only the answering process's own
counters plus the database-derived gauges. See docs/operations.md.
"""
from __future__ import annotations


from prometheus_client import Counter, Histogram

_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

DISPATCH_LATENCY = Histogram(
    "delegate_dispatch_latency_seconds",
    "From the approval that made a request approved to AWS accepting its StartAutomationExecution.",
    buckets=_LATENCY_BUCKETS,
)
DISPATCH_OUTCOMES = Counter(
    "delegate_dispatch_outcomes_total",
    "Dispatch attempts by outcome: started, deferred (put back), uncertain (retried with the same "
    "ClientToken), failed, refused, capped (waiting under Delegate's running cap), skipped (duplicate).",
    ["outcome"],
)
AWS_CALLS = Counter(
    "delegate_aws_calls_total",
    "HTTP attempts to AWS (botocore retries included) by service, operation and outcome.",
    ["service", "operation", "outcome"],
)
AWS_THROTTLES = Counter(
    "delegate_aws_throttles_total", "AWS answers that were throttling errors.", ["service", "operation"],
)
PACING_WAIT = Histogram(
    "delegate_pacing_wait_seconds", "Time a call waited for its slot in the shared schedule.", ["api_class"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
PACING_TIMEOUTS = Counter(
    "delegate_pacing_timeouts_total", "Calls given up because their slot was too far away.", ["api_class"],
)
BROKER_PUBLISH = Counter(
    "delegate_broker_publish_total", "Dispatch messages published to the broker, by source and outcome.",
    ["source", "outcome"],
)
BROKER_PUBLISH_SECONDS = Histogram(
    "delegate_broker_publish_seconds", "Time one publish took (bounded by the broker timeouts).",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5),
)
OUTBOX_REPUBLISHED = Counter(
    "delegate_outbox_republished_total",
    "Rows the sweeper republished: pending/enqueued (message lost or due again) or calling (a worker "
    "died mid-dispatch).", ["state"],
)
AUDIT_STREAM = Counter(
    "delegate_audit_stream_total",
    "Audit stream lines by outcome: sent, dropped (queue full or send failed: a gap, recovered from the database),"
    " recovered (re-sent from the database), error (a send attempt failed; retried).", ["outcome"],
)
STATUS_SYNC_CYCLES = Counter(
    "delegate_status_sync_cycles_total", "Status sync runs by outcome (ran, idle, busy).", ["outcome"],
)

_THROTTLE_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
                             "SlowDown"})


def outcome_of(response_dict, parsed_response, exception) -> str:
    if exception is not None:
        return "not_sent" if type(exception).__name__ == "PacingTimeout" else "network_error"
    status = (response_dict or {}).get("status_code", 0)
    if status < 300:
        return "ok"
    code = str(((parsed_response or {}).get("Error") or {}).get("Code", ""))
    if code in _THROTTLE_CODES:
        return "throttled"
    if code == "AutomationExecutionLimitExceededException":
        return "limit_exceeded"
    return "server_error" if status >= 500 else "client_error"


def observe_aws_response(event_name: str = "", response_dict=None, parsed_response=None, exception=None, **kwargs):
    """botocore `response-received` handler: one count per HTTP attempt."""
    _, service, operation = (event_name.split(".", 2) + ["", ""])[:3]
    outcome = outcome_of(response_dict, parsed_response, exception)
    if outcome == "not_sent":
        return
    AWS_CALLS.labels(service=service, operation=operation, outcome=outcome).inc()
    if outcome == "throttled":
        AWS_THROTTLES.labels(service=service, operation=operation).inc()
