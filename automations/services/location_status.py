"""Status sync of multi-account runs: each child execution, per account and Region.

AWS documents what the central account can read of a multi-account run: its automation "contains
aws:executeAutomation steps" for the target locations, and "the output of the steps for the
automation in your primary account will be the AutomationExecutionId of the child automations";
the children themselves are "created in your target accounts" and read there (docs/multi-account.md
cites the pages). So one cycle per running multi-account request reads the parent's step
executions in the central account (DescribeAutomationStepExecutions, 50 a page): each step's
TargetLocation, child ExecutionId, StepStatus, FailureMessage and times. A new child is recorded
(LocationExecution) and audited once; a known one takes the step's status. A run whose children
are all known and finished costs no call at all. Calls go through the shared read-only session and
the shared pacing (gateway).
"""
from __future__ import annotations

import datetime as dt

import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone

from automations import audit, aws
from automations.models import AutomationRequest, LocationExecution

log = structlog.get_logger(__name__)

# AWS's final statuses (services/status.py maps them onto ours).
FINAL = frozenset({"Success", "CompletedWithSuccess", "Failed", "CompletedWithFailure", "Rejected", "Exited",
                   "ChangeCalendarOverrideRejected", "Cancelled", "TimedOut"})


def _as_dt(value):
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return None


def sync_request(request: AutomationRequest, *, parent_steps: list[dict] | None = None) -> int:
    """One cycle for one multi-account request; returns how many children were added or changed.

    `parent_steps`: the parent's step executions, if the status sync read them in this cycle (then
    they are not read again to discover new children)."""
    execution = getattr(request, "execution", None)
    if execution is None:
        return 0
    known = {child.execution_id: child for child in request.location_executions.all()}
    if len(known) >= request.location_count and all(child.aws_status in FINAL for child in known.values()):
        return 0  # every location known and finished: nothing left to ask
    changed = 0
    try:
        steps = parent_steps if parent_steps is not None else aws.location_steps(
            region=request.region, role_arn=request.account.dispatch_role_arn, parent_id=execution.execution_id)
    except aws.AwsError as error:
        log.warning("location_sync.failed", automation_request=request.pk, error=str(error))
        return 0
    for step in steps:
        child_id = ((step.get("Outputs") or {}).get("ExecutionId") or [""])[0]
        if not child_id:
            continue  # not started yet: the step names no child
        child = known.get(child_id)
        if child is None:
            child = _record(request, execution.execution_id, step, child_id)
            if child is None:
                continue
            known[child_id] = child
            changed += 1
        if _apply(child, step):
            changed += 1
    return changed


def _record(request: AutomationRequest, parent_id: str, step: dict, child_id: str) -> LocationExecution | None:
    """A new child, audited once with its account and Region; None when the step does not name one
    account and one Region (AWS does not document that it always does: said in the log, not guessed)."""
    location = step.get("TargetLocation") or {}
    accounts, regions = location.get("Accounts") or [], location.get("Regions") or []
    if len(accounts) != 1 or len(regions) != 1:
        log.warning("location_sync.unplaced_step", automation_request=request.pk, child_execution_id=child_id,
                    accounts=accounts, regions=regions)
        return None
    try:
        with transaction.atomic():
            child = LocationExecution.objects.create(
                request=request, execution_id=child_id, account_id=accounts[0], region=regions[0],
                aws_status="Pending", started_at=_as_dt(step.get("ExecutionStartTime")))
            audit.record(action="execution.location_started", actor=None, request=request,
                         account_id=accounts[0], region=regions[0],
                         details={"child_execution_id": child_id, "account_id": accounts[0], "region": regions[0],
                                  "parent_execution_id": parent_id},
                         aws=aws.AwsCall(operation="DescribeAutomationStepExecutions", execution_id=child_id))
    except IntegrityError:
        # Another sync recorded it first (audited once, by that one).
        return LocationExecution.objects.filter(request=request, execution_id=child_id).first()
    return child


def _apply(child: LocationExecution, step: dict) -> bool:
    """The parent's step for this location mirrors its child: status, failure, times."""
    status = step.get("StepStatus", "") or child.aws_status
    failure = step.get("FailureMessage", "") or ""
    now = timezone.now()
    if status == child.aws_status and failure == child.failure_message:
        LocationExecution.objects.filter(pk=child.pk).update(last_synced_at=now)
        return False
    child.aws_status, child.failure_message, child.last_synced_at = status, failure[:4000], now
    child.started_at = _as_dt(step.get("ExecutionStartTime")) or child.started_at
    child.ended_at = _as_dt(step.get("ExecutionEndTime")) or child.ended_at
    child.save(update_fields=["aws_status", "failure_message", "last_synced_at", "started_at", "ended_at"])
    return True
