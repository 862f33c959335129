"""Status sync: mirror AWS's view of running executions, with as few calls as AWS's quotas want.

One DescribeAutomationExecutions call covers up to 10 executions; step details are fetched only
for executions whose status or current step changed. Nothing running means no calls at all.
Every call goes through the shared read-only session (aws.read_client) and is paced by the
shared schedule (3 calls/s per account and region, automations.aws.pacing) in the gateway.
Only one sync runs at a time across all workers (an advisory lock): overlapping beat ticks
would double the calls for nothing.
"""
from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict

import structlog
from django.db import transaction
from django.utils import timezone

from automations import aws, locks
from automations.ops import metrics
from automations.models import AutomationRequest, Execution
from automations.services import location_status
from automations.services.transitions import transition

log = structlog.get_logger(__name__)
Status = AutomationRequest.Status

# The mapping of AWS's 19 statuses onto ours (docs/operations.md); anything else is still running.
FINAL_STATUS = {
    "Success": Status.SUCCEEDED, "CompletedWithSuccess": Status.SUCCEEDED,
    "Failed": Status.FAILED, "CompletedWithFailure": Status.FAILED, "Rejected": Status.FAILED,
    "Exited": Status.FAILED, "ChangeCalendarOverrideRejected": Status.FAILED,
    "Cancelled": Status.CANCELLED, "TimedOut": Status.TIMED_OUT,
}


def _as_dt(value):
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return None


def _step_view(step: dict) -> dict:
    """The parts of a StepExecution the request page shows, JSON-safe."""
    return {
        "name": step.get("StepName", ""), "action": step.get("Action", ""), "status": step.get("StepStatus", ""),
        "started_at": _as_dt(step.get("ExecutionStartTime")), "ended_at": _as_dt(step.get("ExecutionEndTime")),
        "outputs": step.get("Outputs", {}), "failure_message": step.get("FailureMessage", ""),
        "response": str(step.get("Response", ""))[:2000], "step_execution_id": step.get("StepExecutionId", ""),
    }


# Step details for many new executions at 3 calls/s take a while (100 executions ≈ 35 s); past
# this much time in one cycle the rest wait for the next cycle, so a cycle stays well inside the
# task's time limit. Describe calls are always made: they are what notices a change at all.
STEP_BUDGET_SECONDS = 25.0


def execution_statuses_sync() -> int:
    """Poll every running execution once; return how many changed."""
    with locks.held_for_session(locks.STATUS_SYNC) as held:
        if not held:
            metrics.STATUS_SYNC_CYCLES.labels(outcome="busy").inc()
            return 0
        return _sync()


def _sync() -> int:
    deadline = time.monotonic() + STEP_BUDGET_SECONDS
    running = list(
        Execution.objects.select_related("request", "request__account")
        .filter(request__status=Status.RUNNING)
    )
    if not running:
        metrics.STATUS_SYNC_CYCLES.labels(outcome="idle").inc()
        return 0
    metrics.STATUS_SYNC_CYCLES.labels(outcome="ran").inc()
    changed = 0
    # The parents' step executions read in this cycle (raw), by execution id: a multi-account
    # parent's steps also say where its children run, and are read once per cycle, not twice.
    parent_steps: dict[str, list[dict]] = {}
    by_location: dict[tuple[str, str, str], list[Execution]] = defaultdict(list)
    for execution in running:
        request = execution.request
        by_location[(request.account.account_id, request.region, request.account.dispatch_role_arn)].append(execution)
    for (account_id, region, role_arn), executions in by_location.items():
        by_id = {execution.execution_id: execution for execution in executions}
        ids = list(by_id)
        metadata: list[dict] = []
        try:
            metadata = aws.describe_executions(region=region, role_arn=role_arn, execution_ids=ids)
        except aws.AwsError as error:
            log.warning("status_sync.describe_failed", account_id=account_id, region=region, error=str(error))
            continue
        for item in metadata:
            execution = by_id.get(item.get("AutomationExecutionId"))
            if execution is None:
                continue
            if _apply(execution, item, account_id=account_id, region=region, role_arn=role_arn, deadline=deadline,
                      parent_steps=parent_steps):
                changed += 1
    # Multi-account runs' children after their parent's own status: a parent that ended in this
    # cycle had its children read after it ended (they end before it), in one pass, and a parent
    # whose steps were just read lends them to the discovery of new children.
    for execution in running:
        if execution.request.location_targets:
            changed += location_status.sync_request(execution.request,
                                                    parent_steps=parent_steps.get(execution.execution_id))
    return changed


def _apply(execution: Execution, item: dict, *, account_id: str, region: str, role_arn: str,
           deadline: float | None = None, parent_steps: dict | None = None) -> bool:
    aws_status = item.get("AutomationExecutionStatus", "")
    current_step = item.get("CurrentStepName", "") or ""
    if aws_status == execution.aws_status and current_step == execution.current_step and execution.revision:
        # Nothing moved since the last look: no step call (revision 0 = never fetched).
        execution.last_synced_at = timezone.now()
        Execution.objects.filter(pk=execution.pk).update(last_synced_at=execution.last_synced_at)
        return False
    if deadline is not None and time.monotonic() > deadline:
        return False  # out of this cycle's budget: recorded nothing, so the next cycle sees the change
    try:
        raw = aws.step_executions(region=region, role_arn=role_arn, execution_id=execution.execution_id)
        if parent_steps is not None:
            parent_steps[execution.execution_id] = raw
        steps = [_step_view(step) for step in raw]
    except aws.AwsError as error:
        log.warning("status_sync.steps_failed", execution_id=execution.execution_id, error=str(error))
        if not FINAL_STATUS.get(aws_status):
            return False  # record nothing, so the next cycle sees the change again and retries the steps
        steps = execution.steps
    final = FINAL_STATUS.get(aws_status)
    reason = item.get("FailureMessage", "") or ""
    if final and execution.request.location_targets:
        final, reason = _multi_account_outcome(execution.request, final, aws_status, reason)
    outputs = item.get("Outputs", {}) or {}
    if final and "Outputs" not in item:  # Describe's metadata normally carries them; ask only if not
        try:
            outputs = aws.get_execution(region=region, role_arn=role_arn,
                                        execution_id=execution.execution_id).get("Outputs", {}) or {}
        except aws.AwsError:
            outputs = {}
    with transaction.atomic():
        locked = Execution.objects.select_for_update().select_related("request").get(pk=execution.pk)
        previous = locked.aws_status
        locked.aws_status = aws_status
        locked.current_step = current_step
        locked.steps = _json_safe(steps)
        locked.outputs = outputs
        locked.failure_message = item.get("FailureMessage", "") or ""
        locked.executed_by = item.get("ExecutedBy", "") or locked.executed_by
        locked.started_at = _as_dt(item.get("ExecutionStartTime")) or locked.started_at
        locked.ended_at = _as_dt(item.get("ExecutionEndTime")) or locked.ended_at
        locked.last_synced_at = timezone.now()
        locked.revision += 1
        locked.save()
        request = locked.request
        if final and request.status == Status.RUNNING:
            transition(request, to=final, actor=None, action=f"execution.{final}",
                       details={"aws_status": aws_status, "previous_aws_status": previous,
                                "failure_message": locked.failure_message[:2000]},
                       aws=aws.AwsCall(operation="DescribeAutomationExecutions", execution_id=locked.execution_id),
                       finished_at=locked.ended_at or timezone.now(),
                       status_reason=reason[:2000])
        elif previous != aws_status:
            from automations import audit

            audit.record(action="execution.status_changed", actor=None, request=request,
                         details={"aws_status": aws_status, "previous_aws_status": previous,
                                  "current_step": current_step},
                         aws=aws.AwsCall(operation="DescribeAutomationExecutions", execution_id=locked.execution_id))
    return True


def _multi_account_outcome(request: AutomationRequest, final: str, aws_status: str, reason: str) -> tuple[str, str]:
    """A multi-account run's outcome: AWS documents no final status for a parent whose locations
    partly failed (its API lists Success, Failed, CompletedWithSuccess, CompletedWithFailure), so the
    request never says succeeded while a location failed; the reason counts them and says what AWS
    reported. The children are read once more first: they ended before the parent."""
    from automations.selectors import LOCATION_FAILED

    if final not in (Status.SUCCEEDED, Status.FAILED):
        return final, reason  # cancelled or timed out: that is the outcome, whatever the locations did
    location_status.sync_request(request)
    children = list(request.location_executions.values_list("aws_status", flat=True))
    failed = sum(status in LOCATION_FAILED for status in children)
    if not failed:
        return final, reason
    counted = f"{failed} of {request.location_count} locations failed"
    if final == Status.SUCCEEDED:
        return Status.FAILED, f"{counted}, although AWS reported the run {aws_status}."
    return final, reason if counted in reason else f"{counted}. {reason}".strip()


def _json_safe(steps: list[dict]) -> list[dict]:
    from automations.canonical import json_roundtrip

    return json_roundtrip(steps)
