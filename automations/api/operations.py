"""Operations endpoints: liveness and readiness probes (/healthz, /readyz) and Prometheus /metrics.

/healthz answers without touching anything: the process is up and serving (restart it if not).
/readyz checks what a request needs, each with a bounded wait: PostgreSQL (connect_timeout,
then SELECT 1) and the broker (one connection attempt; the transport's socket timeouts). A
load balancer takes the instance out of rotation on 503 rather than restarting it. The outbox
lag is reported for operators but never makes the instance unready: dispatch catches up by
itself once the broker or the workers are back.
"""
from __future__ import annotations

import hmac
import os
import time

from django.db import connection
from django.http import JsonResponse
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily


def _no_store(response: JsonResponse) -> JsonResponse:
    response["Cache-Control"] = "no-store"
    return response


def healthz(request):
    return _no_store(JsonResponse({"status": "ok"}))


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_broker() -> str:
    from portal.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=0, timeout=2)
        if conn.transport.driver_type == "redis":
            conn.default_channel.client.ping()  # connected is not enough: a hung Redis must fail here
    return "ok"


def _outbox_overdue_seconds() -> float | None:
    from django.db.models import Min
    from django.utils import timezone

    from automations.models import DispatchOutbox

    waiting = (DispatchOutbox.State.PENDING, DispatchOutbox.State.ENQUEUED, DispatchOutbox.State.CALLING)
    first = DispatchOutbox.objects.filter(state__in=waiting, next_attempt_at__lte=timezone.now()).aggregate(
        first=Min("next_attempt_at"))["first"]
    return round((timezone.now() - first).total_seconds(), 3) if first else 0.0


def readyz(request):
    """200 when the database answers and the broker accepts a connection, else 503."""
    checks: dict[str, dict] = {}
    for name, check in (("database", _check_database), ("broker", _check_broker)):
        started = time.monotonic()
        try:
            status = check()
        except Exception as error:  # noqa: BLE001 - any failure means not ready; the type says which
            status = f"error: {type(error).__name__}"
        checks[name] = {"status": status, "ms": round((time.monotonic() - started) * 1000, 1)}
    ready = all(check["status"] == "ok" for check in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    if checks["database"]["status"] == "ok":
        try:
            body["outbox_overdue_seconds"] = _outbox_overdue_seconds()
        except Exception:  # noqa: BLE001 - informational only
            pass
    return _no_store(JsonResponse(body, status=200 if ready else 503))


#
# /metrics: the counters of automations.ops.metrics plus gauges read from the database at scrape time
#

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
