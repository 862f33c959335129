"""Status sync of multi-account runs: each child execution, per account and Region.

Per running multi-account request, one cycle makes:
- while children are still unknown, the parent's step executions (one per location, 50 a page:
  DescribeAutomationStepExecutions) to learn each new child's id, account and Region; each is
  recorded (LocationExecution) and audited once;
- DescribeAutomationExecutions with ParentExecutionId and up to 10 ExecutionIds of the children
  not yet finished. Finished children cost nothing; a run whose children all finished costs no
  call at all. Calls go through the shared read-only session and the shared pacing (gateway).
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
    """One cycle for one multi-account request; returns how many children changed.

    `parent_steps`: the parent's step executions, if the status sync read them in this cycle (then
    they are not read again to discover new children)."""
    execution = getattr(request, "execution", None)
    if execution is None:
        return 0
    region, role_arn = request.region, request.account.dispatch_role_arn
    known = {child.execution_id: child for child in request.location_executions.all()}
    changed = 0
    try:
        if len(known) < request.location_count:
            changed += _discover(request, execution.execution_id, known, region=region, role_arn=role_arn,
                                 steps=parent_steps)
        unfinished = [cid for cid, child in known.items() if child.aws_status not in FINAL]
        if unfinished:
            found = aws.child_executions(region=region, role_arn=role_arn, parent_id=execution.execution_id,
                                         execution_ids=unfinished)
            for item in found:
                child = known.get(item.get("AutomationExecutionId"))
                if child is not None and _apply(child, item):
                    changed += 1
    except aws.AwsError as error:
        log.warning("location_sync.failed", automation_request=request.pk, error=str(error))
    return changed


def _discover(request: AutomationRequest, parent_id: str, known: dict, *, region: str, role_arn: str,
              steps: list[dict] | None = None) -> int:
    added = 0
    if steps is None:
        steps = aws.location_steps(region=region, role_arn=role_arn, parent_id=parent_id)
    for step in steps:
        child_id = ((step.get("Outputs") or {}).get("ExecutionId") or [""])[0]
        location = step.get("TargetLocation") or {}
        accounts, regions = location.get("Accounts") or [], location.get("Regions") or []
        if not child_id or child_id in known or len(accounts) != 1 or len(regions) != 1:
            continue
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
            continue  # another sync recorded it first: audited once, by that one
        known[child_id] = child
        added += 1
    return added


def _apply(child: LocationExecution, item: dict) -> bool:
    status = item.get("AutomationExecutionStatus", "")
    failure = item.get("FailureMessage", "") or ""
    now = timezone.now()
    if status == child.aws_status and failure == child.failure_message:
        LocationExecution.objects.filter(pk=child.pk).update(last_synced_at=now)
        return False
    child.aws_status, child.failure_message, child.last_synced_at = status, failure[:4000], now
    child.started_at = _as_dt(item.get("ExecutionStartTime")) or child.started_at
    child.ended_at = _as_dt(item.get("ExecutionEndTime")) or child.ended_at
    child.save(update_fields=["aws_status", "failure_message", "last_synced_at", "started_at", "ended_at"])
    return True
