"""Dispatch: start an approved request's execution in AWS exactly once, paced to AWS's quotas.

The approval committed an outbox row; the Celery message only wakes a worker. The worker
claims the request (compare-and-set approved → dispatching), re-checks everything against the
database (status, fingerprint, scope), calls AWS outside any transaction with the request's
fixed ClientToken, and records the execution id. Throttling and the concurrency limit put the
request back with a delay held in the database; the sweeper republishes it when it is due.
"""
from __future__ import annotations

import datetime as dt
import random

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from automations import aws, inventory, pacing
from automations.models import AutomationRequest, DispatchOutbox, Execution
from automations.runbooks import AUTOMATION_ROLE_PARAMETER, fingerprint_for
from automations.services.transitions import transition

log = structlog.get_logger(__name__)
Status = AutomationRequest.Status
State = DispatchOutbox.State


def _refusal(request: AutomationRequest) -> str | None:
    """Why this request must not be started, judged from the database alone (never the message)."""
    if fingerprint_for(request) != request.fingerprint:
        return "The request changed after approval (fingerprint mismatch)."
    approvals = list(request.approvals.values_list("fingerprint", flat=True))
    if any(fingerprint != request.fingerprint for fingerprint in approvals):
        return "An approval was given for different content (fingerprint mismatch)."
    if any(a.approver_id == request.requester_id for a in request.approvals.all()):
        return "The requester approved their own request."
    role = request.parameters.get(AUTOMATION_ROLE_PARAMETER)
    if role is not None and role != [request.account.automation_role_arn]:
        return "AutomationAssumeRole is not the account's configured automation role."
    return None


def _running_count(request: AutomationRequest) -> int:
    return AutomationRequest.objects.filter(
        account_id=request.account_id, region=request.region, status__in=(Status.DISPATCHING, Status.RUNNING)
    ).exclude(pk=request.pk).count()


def _put_back(request_id: int, *, reason: str, details: dict, delay: float | None = None) -> None:
    """dispatching → approved with a jittered next attempt in the outbox (not a Celery countdown)."""
    base = settings.DELEGATE_DISPATCH_RETRY_SECONDS if delay is None else delay
    next_attempt = timezone.now() + dt.timedelta(seconds=base * random.uniform(1.0, 2.0))
    with transaction.atomic():
        request = AutomationRequest.objects.select_for_update().get(pk=request_id)
        if request.status != Status.DISPATCHING:
            return
        transition(request, to=Status.APPROVED, actor=None, action="dispatch.deferred",
                   details={"reason": reason, "retry_at": next_attempt, **details})
        DispatchOutbox.objects.filter(pk=request_id).update(state=State.PENDING, next_attempt_at=next_attempt,
                                                            last_error=reason[:1000])


def _fail(request_id: int, *, action: str, reason: str, details: dict | None = None, call=None) -> None:
    with transaction.atomic():
        request = AutomationRequest.objects.select_for_update().get(pk=request_id)
        if request.status != Status.DISPATCHING:
            return
        transition(request, to=Status.DISPATCH_FAILED, actor=None, action=action,
                   details={"reason": reason, **(details or {})}, aws=call,
                   status_reason=reason[:2000], finished_at=timezone.now())
        DispatchOutbox.objects.filter(pk=request_id).update(state=State.FAILED, last_error=reason[:1000])


def request_dispatch(*, request_id: int) -> None:
    """Start the SSM execution at most once per request, however often the task is delivered."""
    with transaction.atomic():
        request = AutomationRequest.objects.select_for_update().select_related(
            "account", "team", "requester", "runbook", "runbook_version").filter(pk=request_id).first()
        if request is None:
            log.warning("dispatch.unknown_request", request_id=request_id)
            return
        if request.status == Status.APPROVED:
            outbox = DispatchOutbox.objects.filter(pk=request_id).first()
            if outbox is None or outbox.state in (State.CANCELLED, State.FAILED, State.STARTED):
                return
            if outbox.state == State.PENDING and outbox.next_attempt_at > timezone.now() + dt.timedelta(seconds=1):
                return  # put back for later: an early duplicate message waits; the sweeper republishes it when due
            if _running_count(request) >= settings.DELEGATE_MAX_RUNNING_PER_REGION:
                # Our own cap under AWS's concurrency quota: wait without calling AWS.
                DispatchOutbox.objects.filter(pk=request_id).update(
                    state=State.PENDING, next_attempt_at=timezone.now() + dt.timedelta(
                        seconds=settings.DELEGATE_DISPATCH_RETRY_SECONDS * random.uniform(0.5, 1.5)),
                    last_error="Delegate's running-execution cap reached")
                return
            request = transition(request, to=Status.DISPATCHING, actor=None, action="dispatch.claimed",
                                 dispatched_at=timezone.now())
            DispatchOutbox.objects.filter(pk=request_id).update(state=State.CALLING, attempts=outbox.attempts + 1)
        elif request.status != Status.DISPATCHING:
            # A duplicate or forged message for a request that is not approved: harmless, but recorded.
            if request.status == Status.SUBMITTED:
                from automations import audit

                audit.record(action="dispatch.refused", actor=None, request=request,
                             details={"reason": "not approved", "status": request.status})
            return
        # (still dispatching: redelivered after a crash mid-call; the ClientToken makes the retry safe)
        refusal = _refusal(request)
    if refusal:
        _fail(request_id, action="dispatch.refused", reason=refusal)
        return

    # Targets are re-checked now, not only at submit: tags may have changed since.
    try:
        outside = inventory.out_of_scope(request.resources, tag=request.team.scope_tag, region=request.region,
                                         role_arn=request.account.dispatch_role_arn) if request.resources else []
    except aws.TransientAwsError as error:
        _put_back(request_id, reason=f"inventory check failed: {error.code}", details={"error": error.code})
        return
    except aws.PermanentAwsError as error:
        _fail(request_id, action="dispatch.failed", reason=f"Inventory check failed: {error.code} {error.message}")
        return
    if outside:
        _fail(request_id, action="dispatch.refused", reason=f"Targets left the team's scope: {', '.join(outside)}",
              details={"resources": outside})
        return

    requester = request.requester.get_username()
    try:
        pacing.acquire("start", account_id=request.account.account_id, region=request.region)
    except pacing.PacingTimeout as error:
        _put_back(request_id, reason=str(error), details={"error": "PacingTimeout"}, delay=2.0)
        return
    # No transaction is open during the network calls. A retry reaches this line again with
    # the same client_token, which is what stops SSM starting a duplicate.
    try:
        call = aws.start_automation(
            region=request.region,
            role_arn=request.account.dispatch_role_arn,
            session_name=aws.role_session_name("delegate-req", str(request.pk), requester),
            source_identity=aws.sts_source_identity(requester),
            tags=aws.session_tags(requester=requester, team=request.team.name, **{"request-id": str(request.pk)}),
            document_name=request.runbook.name,
            document_version=request.runbook_version.version,
            parameters=request.parameters,
            client_token=request.client_token,
            target_parameter_name=request.target_parameter_name,
            targets=request.targets,
            max_concurrency=request.max_concurrency,
            max_errors=request.max_errors,
            alarm_name=request.alarm_name,
            execution_tags=aws.session_tags(**{"delegate:request-id": str(request.pk), "delegate:requester": requester,
                                               "delegate:team": request.team.name}),
        )
    except aws.TransientAwsError as error:
        _put_back(request_id, reason=f"AWS asked us to slow down: {error.code}",
                  details={"error": error.code, "aws_request_id": error.aws_request_id})
        return
    except aws.PermanentAwsError as error:
        _fail(request_id, action="dispatch.failed", reason=f"AWS refused to start the run: {error.code} {error.message}",
              details={"error": error.code, "aws_request_id": error.aws_request_id})
        return

    with transaction.atomic():
        request = AutomationRequest.objects.select_for_update().get(pk=request_id)
        if request.status != Status.DISPATCHING:
            return  # a parallel delivery got the same execution id back and recorded it first
        Execution.objects.get_or_create(request=request, defaults={"execution_id": call.execution_id,
                                                                   "aws_status": "Pending"})
        transition(request, to=Status.RUNNING, actor=None, action="dispatch.started", aws=call,
                   details={"execution_id": call.execution_id, "document": request.runbook.name,
                            "version": request.runbook_version.version, "assumed_role_arn": call.assumed_role_arn})
        DispatchOutbox.objects.filter(pk=request_id).update(state=State.STARTED, last_error="")


def request_mark_dispatch_failed(*, request_id: int, reason: str) -> None:
    """The task gave up (e.g. the database stayed away): fail a request still dispatching, nothing else."""
    _fail(request_id, action="dispatch.failed", reason=reason)


def dispatch_outbox_sweep(*, publish, limit: int = 100) -> int:
    """Republish outbox rows that are due: never published, lost by the broker, or put back for later.

    Row locks with SKIP LOCKED let several sweepers run side by side on PostgreSQL.
    """
    now = timezone.now()
    grace = dt.timedelta(seconds=settings.DELEGATE_OUTBOX_GRACE_SECONDS)
    with transaction.atomic():
        due = DispatchOutbox.objects.filter(state__in=(State.PENDING, State.ENQUEUED), next_attempt_at__lte=now,
                                            request__status=Status.APPROVED).order_by("next_attempt_at")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        rows = list(due[:limit])
        # Claim them for one grace period; if this publish is lost too, the next sweep retries.
        DispatchOutbox.objects.filter(pk__in=[row.pk for row in rows]).update(state=State.ENQUEUED,
                                                                              next_attempt_at=now + grace)
    published = 0
    for row in rows:
        try:
            publish(row.pk)
            published += 1
        except Exception as error:  # the broker is down: leave the row for the next sweep
            log.warning("outbox.publish_failed", request_id=row.pk, error=str(error))
            break
    return published
