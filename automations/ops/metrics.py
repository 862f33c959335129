"""Prometheus metrics, served at /metrics.

Two kinds of numbers:
- events counted where they happen (dispatch latency, AWS calls by operation and outcome,
  throttles, pacing waits, broker publishes), in whichever process they happen: web,
  Celery pool child, beat;
- state read from PostgreSQL at scrape time (outbox rows and the age of the oldest, active
  requests), so they are right whichever process scrapes and need no cross-process gauge.

Multiprocess: Celery's prefork children and gunicorn's workers are separate processes. When
PROMETHEUS_MULTIPROC_DIR names a directory shared by the web and worker processes of a host,
prometheus-client writes every process's counters there and /metrics adds them all up
(MultiProcessCollector). Without it, /metrics shows only the answering process's own
counters plus the database-derived gauges. See docs/operations.md.
"""
from __future__ import annotations

import hmac
import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily

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


class DatabaseCollector:
    """Gauges read from PostgreSQL at scrape time: they are the same whichever process answers."""

    def collect(self):
        from django.db.models import Count, Min
        from django.utils import timezone

        from automations.models import AutomationRequest, DispatchOutbox

        up = GaugeMetricFamily("delegate_metrics_database_up", "1 if the database answered this scrape.")
        rows = GaugeMetricFamily("delegate_outbox_rows", "Outbox rows not yet started, by state.", labels=["state"])
        age = GaugeMetricFamily("delegate_outbox_oldest_age_seconds",
                                "Age of the oldest outbox row not yet started (since its approval), by state.",
                                labels=["state"])
        overdue = GaugeMetricFamily("delegate_outbox_overdue_seconds",
                                    "How long the most overdue outbox row has been due (sweeper or worker lag).")
        active = GaugeMetricFamily("delegate_requests_active", "Requests approved, dispatching or running.",
                                   labels=["status"])
        try:
            now = timezone.now()
            waiting = (DispatchOutbox.State.PENDING, DispatchOutbox.State.ENQUEUED, DispatchOutbox.State.CALLING)
            by_state = {row["state"]: row for row in DispatchOutbox.objects.filter(state__in=waiting)
                        .values("state").annotate(n=Count("pk"), oldest=Min("created_at"))}
            for state in waiting:
                row = by_state.get(state)
                rows.add_metric([state], row["n"] if row else 0)
                age.add_metric([state], (now - row["oldest"]).total_seconds() if row else 0.0)
            due = DispatchOutbox.objects.filter(state__in=waiting, next_attempt_at__lte=now).aggregate(
                first=Min("next_attempt_at"))["first"]
            overdue.add_metric([], (now - due).total_seconds() if due else 0.0)
            Status = AutomationRequest.Status
            counts = dict(AutomationRequest.objects.filter(
                status__in=(Status.APPROVED, Status.DISPATCHING, Status.RUNNING))
                .values_list("status").annotate(n=Count("pk")))
            for status in (Status.APPROVED, Status.DISPATCHING, Status.RUNNING):
                active.add_metric([status], counts.get(status, 0))
            up.add_metric([], 1)
        except Exception:  # noqa: BLE001 - a scrape must answer even when the database does not
            up.add_metric([], 0)
            yield up
            return
        yield from (up, rows, age, overdue, active)


class _ProcessRegistry:
    """This process's default registry, as one collector of a per-scrape registry."""

    def collect(self):
        yield from REGISTRY.collect()


def registry() -> CollectorRegistry:
    scrape = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(scrape)
    else:
        scrape.register(_ProcessRegistry())
    scrape.register(DatabaseCollector())
    return scrape


def _allowed_address(request) -> bool:
    """The client address (trusted-proxy aware, as in the audit log) is in DELEGATE_METRICS_ALLOWED_IPS."""
    import ipaddress

    from django.conf import settings

    from automations.audit import ClientInfo

    client = ClientInfo.from_request(request).ip
    if not client:
        return False
    address = ipaddress.ip_address(client)
    for entry in getattr(settings, "DELEGATE_METRICS_ALLOWED_IPS", []):
        try:
            if address in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            continue  # a malformed entry allows nothing
    return False


def metrics_view(request):
    """GET /metrics. With DEBUG off: a bearer token (DELEGATE_METRICS_TOKEN) or an allowed client address.

    Closed by default: the numbers describe the deployment (queues, accounts' activity, failures),
    which is reconnaissance for an attacker. /healthz and /readyz stay open for probes.
    """
    from django.conf import settings
    from django.http import HttpResponse

    token = getattr(settings, "DELEGATE_METRICS_TOKEN", "")
    given = request.META.get("HTTP_AUTHORIZATION", "")
    if token and given:
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return HttpResponse("metrics need the bearer token\n", status=401, content_type="text/plain")
    elif not settings.DEBUG and not _allowed_address(request):
        if token:
            return HttpResponse("metrics need the bearer token\n", status=401, content_type="text/plain")
        return HttpResponse("metrics are not open to this address (DELEGATE_METRICS_TOKEN or"
                            " DELEGATE_METRICS_ALLOWED_IPS)\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
