"""Thin Celery tasks: take ids, call one service, own only the retry policy.

Task names are explicit so moving a module never strands messages already queued. The broker
is untrusted: a message carries only a request id, and the services re-read everything from
the database. Every task runs with a log context: the web request id that caused it (carried
in a message header) and, for dispatch, the automation request id.
"""
from __future__ import annotations

import re
import uuid

import structlog
from celery import shared_task
from celery.signals import before_task_publish, task_postrun, task_prerun, worker_process_init
from django.db import InterfaceError, OperationalError

log = structlog.get_logger(__name__)

# The message header that carries the web request id into the worker's log lines.
REQUEST_ID_HEADER = "delegate_request_id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


@before_task_publish.connect
def _carry_request_id(headers=None, **kwargs):
    """Put the current request id (web request, or the task that publishes) into the message."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if headers is not None and request_id:
        headers[REQUEST_ID_HEADER] = str(request_id)[:64]


@task_prerun.connect
def _bind_request_id(task=None, task_id=None, **kwargs):
    """Each task's log lines carry the request id that caused it, or a fresh one (beat, sweeper)."""
    carried = getattr(task.request, REQUEST_ID_HEADER, None) if task is not None else None
    if carried is None and task is not None:
        carried = (getattr(task.request, "headers", None) or {}).get(REQUEST_ID_HEADER)
    if not (isinstance(carried, str) and _SAFE_REQUEST_ID.match(carried)):
        carried = uuid.uuid4().hex  # none, or not what we would have sent: the broker is untrusted
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=carried, task=getattr(task, "name", ""), task_id=task_id)


@task_prerun.connect
def _database_ready(task=None, **kwargs):
    """Keep the worker's database connection from task to task, as the web side keeps its own.

    Celery's Django fixup closes it around every task, so each dispatch paid PostgreSQL's connect
    and authentication before its first statement (bench/dispatch.py: 14 ms median at load 3,
    1.8 ms with the connection kept; docs/benchmarks.md); CELERY_DB_REUSE_MAX (portal/settings.py)
    turns that off. What the web side's request
    signals do instead is done here: a connection older than CONN_MAX_AGE, or one that raised
    a database error and no longer answers, is closed, and CONN_HEALTH_CHECKS tests a kept one
    before its first query (a PostgreSQL restart costs a reconnect, not a failed task).
    """
    from django.db import close_old_connections, connection

    if _eager(task) or connection.in_atomic_block:  # run in the caller's process (tests): its connection
        return
    close_old_connections()


def _eager(task) -> bool:
    return bool(getattr(getattr(task, "request", None), "is_eager", False))


@task_postrun.connect
def _unbind_request_id(task=None, **kwargs):
    structlog.contextvars.clear_contextvars()
    from automations import locks

    if _eager(task):
        return
    # Nothing session-scoped outlives a task on a kept connection (dispatch's attempt lock
    # releases itself; this is the belt to its braces).
    locks.release_session_locks()


@worker_process_init.connect
def _after_fork(**kwargs):
    """A forked pool child must not share the parent's sockets (Redis for pacing, AWS pools)."""
    from automations import aws
    from automations.aws import pacing

    pacing.reset()
    aws.reset_sessions()
    _warm_aws()


def _warm_aws() -> None:
    """Start warm: service models loaded and read sessions assumed before the first task, so a
    worker's first dispatch is as fast as the rest (issue 19). Skipped when it cannot be done
    (database not migrated or unreachable yet); the first dispatch then does it, as before."""
    from django.db import DatabaseError

    from automations import aws
    from automations.models import Account

    try:
        accounts = list(Account.objects.values_list("dispatch_role_arn", "regions"))
    except DatabaseError as error:
        log.warning("worker.warm_skipped", error=type(error).__name__)
        return
    regions = sorted({region for _, listed in accounts for region in (listed or [])})
    problems = aws.warm(regions=regions, read_roles=sorted({role for role, _ in accounts if role}))
    log.info("worker.warm", regions=len(regions), roles=len(accounts), problems=problems)


def _valid_id(value) -> int | None:
    """The broker is untrusted: only a positive integer id is worth a database lookup."""
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 2**62 else None


@shared_task(
    name="automations.dispatch_request",
    acks_late=True,  # safe: the service is idempotent (attempt lock, status claim, SSM ClientToken)
    reject_on_worker_lost=True,  # otherwise a SIGKILLed child's message is acked and lost
    autoretry_for=(OperationalError, InterfaceError),  # database blips; AWS throttling is handled in the service
    retry_backoff=1,
    retry_backoff_max=30,  # a countdown far under the broker visibility timeout
    retry_jitter=True,
    max_retries=8,
    soft_time_limit=90,
    time_limit=120,
    ignore_result=True,
)
def dispatch_request(request_id, *args, **kwargs) -> str:
    """Start one approved request in AWS. Extra arguments (a forged message) are ignored.

    No on_failure handler fails the request: after an unexpected error AWS may already be
    running the execution, so the outbox lease re-drives it with the same ClientToken instead.
    """
    from automations import services

    number = _valid_id(request_id)
    if number is None:
        log.warning("dispatch.bad_message", raw=repr(request_id)[:100])
        return "refused"
    structlog.contextvars.bind_contextvars(automation_request=number)
    return services.request_dispatch(request_id=number)


@shared_task(name="automations.sync_execution_statuses", ignore_result=True, soft_time_limit=50, time_limit=60)
def sync_execution_statuses() -> int:
    from automations import services

    return services.execution_statuses_sync()


@shared_task(name="automations.sweep_dispatch_outbox", ignore_result=True, soft_time_limit=50, time_limit=60)
def sweep_dispatch_outbox() -> int:
    from automations import services

    return services.dispatch_outbox_sweep(source="sweeper")


@shared_task(name="automations.expire_requests", ignore_result=True)
def expire_requests() -> int:
    from automations import services

    return services.request_expire_stale()


@shared_task(name="automations.sync_runbook_catalog", ignore_result=True, soft_time_limit=600, time_limit=660)
def sync_runbook_catalog() -> int:
    from automations import services

    return services.runbook_catalog_sync().new_versions


@shared_task(name="automations.write_audit_digest", ignore_result=True)
def write_audit_digest() -> int:
    from automations.audit import digests as audit_digests

    return audit_digests.write_digest_if_configured()


# Notifications and the approvals tick (automations.services.notifications / policies): thin
# wrappers like the rest. Added here because services and the beat schedule name them.

@shared_task(bind=True, name="automations.deliver_notification", acks_late=True, max_retries=None,
             ignore_result=True, soft_time_limit=30, time_limit=40)
def deliver_notification(self, delivery_id, *args, **kwargs) -> str:
    from automations.services import notifications

    number = _valid_id(delivery_id)
    if number is None:
        log.warning("notify.bad_message", raw=repr(delivery_id)[:100])
        return "refused"
    try:
        return notifications.notification_deliver(delivery_id=number)
    except notifications.RetryLater as later:
        # The row is pending again with its next attempt in the database (the sweeper's safety
        # net); the countdown (capped under the visibility timeout) is only the fast path.
        raise self.retry(countdown=later.countdown, exc=None) from None


@shared_task(name="automations.sweep_notifications", ignore_result=True, soft_time_limit=50, time_limit=60)
def sweep_notifications() -> int:
    from automations.services import notifications

    return notifications.notifications_sweep()


@shared_task(name="automations.approvals_tick", ignore_result=True, soft_time_limit=50, time_limit=60)
def approvals_tick() -> dict:
    from automations import services

    return services.approvals_tick()
