"""Publishing Celery messages by task name, so services never import automations.tasks (tasks import services)."""
from __future__ import annotations

import time

from celery import current_app

from automations.ops import metrics

# The names the tasks in automations/tasks.py are registered under (explicit, stable across moves).
DISPATCH_TASK = "automations.dispatch_request"
NOTIFY_TASK = "automations.deliver_notification"


def send(task_name: str, *args) -> None:
    """One bounded publish, no retries (broker_connection_timeout, socket timeouts, max_retries=0)."""
    current_app.send_task(task_name, args=args, retry=False)


def publish_dispatch(request_id: int, *, source: str) -> None:
    """One bounded publish, no retries: a broker outage must not hang the caller.

    broker_connection_timeout, the transport's socket timeouts and max_retries=0 bound it
    (portal/settings.py; measured in docs/operations.md). Failures are the caller's to handle.
    """
    started = time.monotonic()
    try:
        send(DISPATCH_TASK, request_id)
    except Exception:
        metrics.BROKER_PUBLISH.labels(source=source, outcome="error").inc()
        raise
    finally:
        metrics.BROKER_PUBLISH_SECONDS.observe(time.monotonic() - started)
    metrics.BROKER_PUBLISH.labels(source=source, outcome="ok").inc()
