"""Thin Celery tasks: take ids, call one service, own only the retry policy.

Task names are explicit so moving a module never strands messages already queued.
"""
from __future__ import annotations

import structlog
from celery import shared_task
from django.db import InterfaceError, OperationalError

log = structlog.get_logger(__name__)


def publish_dispatch(request_id: int) -> None:
    """Publish once, without retries, so a broker outage cannot hang the web request.

    broker_connection_timeout keeps the attempt short; the outbox sweeper catches up later.
    """
    try:
        dispatch_request.apply_async((request_id,), retry=False)
    except Exception as error:  # broker down: the outbox row stays pending for the sweeper
        log.warning("dispatch.publish_failed", request_id=request_id, error=str(error))


def _dispatch_request_failure(self, exc, task_id, args, kwargs, einfo):
    from automations import services

    services.request_mark_dispatch_failed(request_id=args[0], reason=f"{type(exc).__name__}: {exc}")


@shared_task(
    name="automations.dispatch_request",
    acks_late=True,  # safe: the service is idempotent (status claim + SSM ClientToken)
    reject_on_worker_lost=True,  # otherwise a SIGKILLed child's message is acked and lost
    autoretry_for=(OperationalError, InterfaceError),  # database blips; AWS throttling is handled in the service
    retry_backoff=True,
    retry_backoff_max=60,  # stays under the broker visibility timeout
    retry_jitter=True,
    max_retries=5,
    soft_time_limit=90,
    time_limit=120,
    on_failure=_dispatch_request_failure,
)
def dispatch_request(request_id: int) -> None:
    from automations import services

    structlog.contextvars.bind_contextvars(request_id=f"dispatch-{request_id}")
    try:
        services.request_dispatch(request_id=int(request_id))
    finally:
        structlog.contextvars.unbind_contextvars("request_id")


@shared_task(name="automations.sync_execution_statuses", ignore_result=True, soft_time_limit=50, time_limit=60)
def sync_execution_statuses() -> int:
    from automations import services

    return services.execution_statuses_sync()


@shared_task(name="automations.sweep_dispatch_outbox", ignore_result=True)
def sweep_dispatch_outbox() -> int:
    from automations import services

    return services.dispatch_outbox_sweep(publish=lambda pk: dispatch_request.apply_async((pk,), retry=False))


@shared_task(name="automations.expire_requests", ignore_result=True)
def expire_requests() -> int:
    from automations import services

    return services.request_expire_stale()


@shared_task(name="automations.sync_runbook_catalog", ignore_result=True, soft_time_limit=600, time_limit=660)
def sync_runbook_catalog() -> int:
    from automations import services

    return services.runbook_catalog_sync().new_versions
