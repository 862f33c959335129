"""Liveness and readiness probes: /healthz and /readyz.

/healthz answers without touching anything: the process is up and serving (restart it if not).
/readyz checks what a request needs, each with a bounded wait: PostgreSQL (connect_timeout,
then SELECT 1) and the broker (one connection attempt; the transport's socket timeouts). A
load balancer takes the instance out of rotation on 503 rather than restarting it. The outbox
lag is reported for operators but never makes the instance unready: dispatch catches up by
itself once the broker or the workers are back.
"""
from __future__ import annotations

import time

from django.db import connection
from django.http import JsonResponse


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
