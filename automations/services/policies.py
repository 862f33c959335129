"""Writes around approval policy: scope checks, holds, delegations, escalations and aws:approve steps.

In full: submit-time scope checks, dispatch holds, delegations, escalations, approvals released
when a freeze ends, and aws:approve steps answered from the portal.

The rules themselves are in automations.policy; request decisions (approve, reject, expire) are
in automations.services.requests. Everything here audits in the transaction that makes the change.
"""
from __future__ import annotations

import datetime as dt

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from automations import audit, aws, policy, selectors
from automations.audit import ClientInfo
from automations.aws import pacing
from automations.errors import (
    DomainError,
    InvalidRequest,
    NotAllowed,
    OutOfScope,
    TransitionNotAllowed,
    aws_refusal,
)
from automations.models import (
    ApprovalDelegation,
    AutomationRequest,
    DispatchOutbox,
    Escalation,
    Execution,
    StepApproval,
    StepDecision,
    Team,
    TeamRunbook,
)
from automations.services import notifications

log = structlog.get_logger(__name__)
Status = AutomationRequest.Status
APPROVE_ACTION = "aws:approve"
PAUSE_ACTION = "aws:pause"
# Which signals answer a waiting step of each action (SendAutomationSignal SignalType).
STEP_SIGNALS = {APPROVE_ACTION: ("Approve", "Reject"), PAUSE_ACTION: ("Resume",)}
# AWS reports a step waiting on aws:approve as Waiting (older consoles: PendingApproval).
WAITING_STEP_STATUSES = frozenset({"Waiting", "PendingApproval"})


#
# Submit and dispatch
#

def submit_refusal(*, team_policy: TeamRunbook, team: Team, account, region: str, resources: list[str],
                   requester, run_at: dt.datetime | None) -> DomainError | None:
    """The first policy rule a new request breaks, as the error to raise, or None.

    Scope (accounts, regions, id patterns, required tags) is enforced here and again at dispatch;
    whether enough people can approve is approvers_refusal, once the request's preview is known.
    """
    problems = policy.scope_problems(team_policy, team=team, account=account, region=region, resources=resources)
    if "account" in problems or "region" in problems:
        rule = "account" if "account" in problems else "region"
        return OutOfScope(problems[rule], code=f"{rule}_not_allowed", errors={rule: [problems[rule]]})
    if "target_id_patterns" in problems:
        return OutOfScope(problems["target_id_patterns"], code="target_not_allowed",
                          errors={"resources": policy.ids_not_matching(team_policy, resources)})
    if "max_targets" in problems:
        return InvalidRequest(problems["max_targets"], code="too_many_targets")
    try:
        missing = policy.targets_missing_tags(team_policy, resources=resources, region=region,
                                              role_arn=account.dispatch_role_arn)
    except aws.AwsError:
        return DomainError("The resource inventory could not be checked; try again shortly.", code="inventory_unavailable")
    if missing:
        wanted = "; ".join(f"{key} = {' or '.join(values)}" for key, values in sorted(team_policy.target_tags.items()))
        return OutOfScope(f"These targets lack the tags this runbook requires ({wanted}): {', '.join(missing)}.",
                          code="target_not_allowed", errors={"resources": missing})
    if run_at is not None:
        now = timezone.now()
        if run_at.tzinfo is None:
            return InvalidRequest("Give the run-at time with a time zone.", code="invalid_run_at",
                                  errors={"run_at": ["Needs a time zone."]})
        if run_at < now - dt.timedelta(minutes=1):
            return InvalidRequest("The run-at time is in the past.", code="invalid_run_at",
                                  errors={"run_at": ["In the past."]})
        if run_at > now + dt.timedelta(days=settings.DELEGATE_MAX_SCHEDULE_DAYS):
            return InvalidRequest(f"Schedule at most {settings.DELEGATE_MAX_SCHEDULE_DAYS:g} days ahead.",
                                  code="invalid_run_at", errors={"run_at": ["Too far ahead."]})
    return None


def approvers_refusal(*, team_policy: TeamRunbook, team: Team, requester, request: AutomationRequest) -> DomainError | None:
    """NotAllowed (not_enough_approvers) when fewer people than the request needs could approve it.

    Asked once the request knows what it covers (its member accounts, its resolved targets and
    AWS's execution preview): the multi-account and multi-target rules may ask for more approvers
    (policy.required_approvals, the one rule), and their reasons head the message.
    """
    required = policy.required_approvals(team_policy, request)
    if not required:
        return None
    eligible = policy.eligible_approver_count(team, team_policy, requester)
    if eligible >= required:
        return None
    # A lead's own request goes to the other leads (or the named pool); if there are not enough
    # of them it could never be approved, so say so now instead of letting it expire.
    why = " ".join(required.reasons)
    return NotAllowed((why + " " if why else "") + f"This runbook needs {required} approvers other than you, "
                      f"but only {eligible} can approve.", code="not_enough_approvers")


def change_calendar_state(request: AutomationRequest, *, at: dt.datetime | None = None) -> dict | None:
    """What AWS says of the change calendars gating this request at its run's time (the selector, also
    shown on the request page); called outside any transaction."""
    return selectors.change_calendar_state(request, at=at)


def dispatch_held(request: AutomationRequest, outbox: DispatchOutbox, *, calendar: dict | None = None) -> bool:
    """Inside the dispatch transaction: keep an approved request waiting (run-at time, change
    freeze, CLOSED change calendar) by moving its outbox row to when it may go. True = do not
    dispatch now. A calendar hold is audited once per message (its calendars and next OPEN time),
    however often the row comes back to look again."""
    hold = policy.dispatch_hold(request, calendar=calendar)
    if hold is None:
        return False
    reason, until, details = hold
    message = f"held: {reason}" if reason != policy.CALENDAR_HOLD else details["message"]
    fresh = outbox.last_error != message[:1000]
    if fresh or outbox.state != DispatchOutbox.State.PENDING or outbox.next_attempt_at < until:
        DispatchOutbox.objects.filter(pk=request.pk).update(state=DispatchOutbox.State.PENDING, next_attempt_at=until,
                                                            last_error=message[:1000])
        if fresh or reason != policy.CALENDAR_HOLD:
            audit.record(action="dispatch.held", actor=None, request=request,
                         details={"reason": reason, "until": until, **details})
    return True


#
# Delegation
#

def delegation_create(*, actor, team: Team, delegate, ends_at: dt.datetime, starts_at: dt.datetime | None = None,
                      reason: str = "", client: ClientInfo | None = None) -> ApprovalDelegation:
    """A pool member hands their approvals for `team` to another member of the team for a period."""
    now = timezone.now()
    starts_at = starts_at or now
    if not policy.can_delegate(actor, team):
        raise NotAllowed("Only someone who approves for this team can delegate approvals.", code="not_a_lead")
    if delegate.pk == actor.pk:
        raise InvalidRequest("Delegate to someone else.", code="delegate_self", errors={"delegate": ["Not yourself."]})
    if not delegate.is_active or not policy.is_member(delegate, team):
        raise InvalidRequest("The delegate must be an active member of the team.", code="delegate_not_member",
                             errors={"delegate": ["Not a member of this team."]})
    if ends_at <= starts_at or ends_at <= now:
        raise InvalidRequest("The delegation must end in the future, after it starts.", code="invalid_period",
                             errors={"ends_at": ["Must be in the future."]})
    if ends_at - starts_at > dt.timedelta(days=settings.DELEGATE_MAX_DELEGATION_DAYS):
        raise InvalidRequest(f"Delegate for at most {settings.DELEGATE_MAX_DELEGATION_DAYS:g} days.",
                             code="invalid_period",
                             errors={"ends_at": [f"At most {settings.DELEGATE_MAX_DELEGATION_DAYS:g} days."]})
    with transaction.atomic():
        delegation = ApprovalDelegation.objects.create(delegator=actor, delegate=delegate, team=team,
                                                       starts_at=starts_at, ends_at=ends_at, reason=reason[:500])
        audit.record(action="delegation.created", actor=actor, client=client, team=team.name, details={
            "delegation": delegation.pk, "delegator": actor.get_username(), "delegate": delegate.get_username(),
            "starts_at": starts_at, "ends_at": ends_at, "reason": reason[:500]})
    return delegation


def delegation_revoke(*, actor, delegation: ApprovalDelegation, client: ClientInfo | None = None) -> ApprovalDelegation:
    if actor.pk != delegation.delegator_id and not actor.is_superuser:
        raise NotAllowed("Only the person who delegated can revoke it.", code="not_allowed")
    with transaction.atomic():
        delegation = ApprovalDelegation.objects.select_for_update().get(pk=delegation.pk)
        if delegation.revoked_at is None:
            delegation.revoked_at = timezone.now()
            delegation.save(update_fields=["revoked_at"])
            audit.record(action="delegation.revoked", actor=actor, client=client, team=delegation.team.name,
                         details={"delegation": delegation.pk, "delegator": delegation.delegator.get_username(),
                                  "delegate": delegation.delegate.get_username()})
    return delegation


#
# Escalation
#

def requests_escalate_stale(*, now: dt.datetime | None = None) -> int:
    """Escalate requests pending longer than their policy allows: the next pool hears and may approve."""
    now = now or timezone.now()
    escalated = 0
    policies = TeamRunbook.objects.filter(escalate_after_hours__isnull=False, escalation_group__isnull=False)
    for team_policy in policies.select_related("escalation_group"):
        cutoff = now - dt.timedelta(hours=team_policy.escalate_after_hours)
        stale = AutomationRequest.objects.filter(team_id=team_policy.team_id, runbook_id=team_policy.runbook_id,
                                                 status=Status.SUBMITTED, created_at__lt=cutoff,
                                                 escalation__isnull=True).values_list("pk", flat=True)
        for pk in list(stale):
            with transaction.atomic():
                request = AutomationRequest.objects.select_for_update().get(pk=pk)
                if request.status != Status.SUBMITTED or Escalation.objects.filter(request=request).exists():
                    continue
                group = team_policy.escalation_group
                Escalation.objects.create(request=request, group=group, escalated_at=now)
                audit.record(action="request.escalated", actor=None, request=request, details={
                    "group": group.name, "waited_hours": round((now - request.created_at).total_seconds() / 3600, 2),
                    "rule": f"team-runbook-policy:{team_policy.pk}", "escalate_after_hours": team_policy.escalate_after_hours})
                notifications.notify_on_commit("request.escalated", request.pk, group=group.name, group_id=group.pk)
                escalated += 1
    return escalated


#
# aws:approve steps inside running runbooks
#

def _waiting_approve_steps(execution: Execution) -> list[dict]:
    """Steps that wait for a person: aws:approve (Approve/Reject) and aws:pause (Resume)."""
    return [step for step in execution.steps or []
            if step.get("action") in STEP_SIGNALS and step.get("status") in WAITING_STEP_STATUSES
            and step.get("step_execution_id")]


def step_approvals_sync(*, now: dt.datetime | None = None) -> int:
    """Turn waiting aws:approve steps (from the status sync's Execution.steps) into queue entries,
    notify the pool once per step, and close entries whose step stopped waiting."""
    now = now or timezone.now()
    opened = 0
    for execution in Execution.objects.select_related("request").filter(request__status=Status.RUNNING):
        waiting = {step["step_execution_id"]: step for step in _waiting_approve_steps(execution)}
        for step_id, step in waiting.items():
            with transaction.atomic():
                entry, created = StepApproval.objects.get_or_create(
                    execution=execution, step_execution_id=step_id[:64],
                    defaults={"step_name": str(step.get("name", ""))[:128], "first_seen_at": now,
                              "action": step.get("action", APPROVE_ACTION)})
                if created:
                    audit.record(action="step.waiting", actor=None, request=execution.request,
                                 aws=aws.AwsCall(operation="DescribeAutomationStepExecutions",
                                                 execution_id=execution.execution_id),
                                 details={"step": entry.step_name, "step_execution_id": step_id,
                                          "step_action": entry.action})
                    notifications.notify_on_commit("step.waiting", execution.request_id, step=entry.step_name,
                                                   step_action=entry.action)
                    opened += 1
        StepApproval.objects.filter(execution=execution, state=StepApproval.State.WAITING).exclude(
            step_execution_id__in=list(waiting)).update(state=StepApproval.State.CLOSED, closed_at=now)
    StepApproval.objects.filter(state=StepApproval.State.WAITING).exclude(
        execution__request__status=Status.RUNNING).update(state=StepApproval.State.CLOSED, closed_at=now)
    return opened


def _min_required(request: AutomationRequest) -> int:
    """How many distinct approvers an aws:approve step needs: Delegate's policy for the request
    (at least one). AWS itself is told MinRequiredApprovals=1 and gets one signal from Delegate's
    principal once the portal's quorum is reached (run_identity.server_values)."""
    return max(1, policy.approvals_required(request))


class _NoSignalYet(Exception):
    pass


def _step_content_check(request: AutomationRequest, *, actor, client, step: str) -> None:
    """A step signal acts on the approval too: refuse it if SSM no longer serves the bound content,
    and fail closed when that cannot be confirmed (content_unverifiable, content_unbound)."""
    from automations.errors import ContentChanged, ContentUnverifiable
    from automations.services import content

    if not request.document_hash:
        error = ContentUnverifiable(content.unbound_reason(request), code=content.CONTENT_UNBOUND)
    else:
        try:
            found, hash_type = content.live_hash(request)
        except aws.AwsError as failure:  # throttled, denied, or the document is gone: nothing is signalled
            error = ContentUnverifiable(content.unverifiable_reason(request, failure))
        else:
            if found == request.document_hash:
                return
            content.record_changed_content(request, found=found, hash_type=hash_type, actor=actor, where="step")
            error = ContentChanged(content.content_changed_reason(request, found))
    with transaction.atomic():
        audit.record(action="step.refused", actor=actor, request=request, client=client,
                     details={"code": error.code, "step": step})
    raise error


def step_decide(*, step_approval: StepApproval, actor, decision: str, comment: str = "",
                client: ClientInfo | None = None) -> StepDecision:
    """A pool member answers a waiting step: Approve/Reject an aws:approve step, Resume an aws:pause
    step; SendAutomationSignal under a session naming them.

    The same rules as request approval: in the pool, never the requester, once per person. A
    rejection is signalled at once; approvals are counted here and the Approve signal goes to
    AWS when the policy's N distinct approvers have answered. Before any signal, SSM must still
    serve the content the request bound (services/content.py).
    """
    allowed = STEP_SIGNALS.get(step_approval.action, ())
    if decision not in allowed:
        raise InvalidRequest(f"A {step_approval.action} step is answered with {' or '.join(allowed)}.",
                             code="invalid_decision")
    request = step_approval.execution.request
    try:
        with transaction.atomic():
            entry = StepApproval.objects.select_for_update().select_related("execution").get(pk=step_approval.pk)
            request = AutomationRequest.objects.select_related("team", "account", "requester").get(pk=request.pk)
            if entry.state != StepApproval.State.WAITING or request.status != Status.RUNNING:
                raise TransitionNotAllowed(current=entry.state, target=decision.lower(),
                                           detail="This step is no longer waiting for approval.")
            if actor.pk == request.requester_id:
                raise NotAllowed("You cannot approve a step of your own request.", code="self_approval")
            if not policy.seats(actor, request):
                raise NotAllowed("Only the request's approvers can answer this step.", code="not_a_lead")
            if entry.decisions.filter(approver=actor).exists():
                raise NotAllowed("You have already answered this step.", code="already_approved")
            execution_id = entry.execution.execution_id
            approvals = entry.decisions.filter(decision=StepDecision.Decision.APPROVE).count()
            signal_now = decision != StepDecision.Decision.APPROVE or approvals + 1 >= _min_required(request)
    except NotAllowed as error:
        with transaction.atomic():
            audit.record(action="step.refused", actor=actor, request=request, client=client,
                         details={"code": error.code, "detail": error.detail, "step": step_approval.step_name})
        raise
    username = actor.get_username()
    if signal_now:
        _step_content_check(request, actor=actor, client=client, step=entry.step_name)
    call = None
    try:
        if not signal_now:
            raise _NoSignalYet
        # Paced inside the gateway (every attempt of every AWS call), so no acquire() here.
        call = aws.send_signal(
            region=request.region, role_arn=request.account.dispatch_role_arn,
            session_name=aws.role_session_name(
                "delegate-resume" if decision == StepDecision.Decision.RESUME else "delegate-approve",
                str(request.pk), username),
            source_identity=aws.sts_source_identity(username),
            tags=aws.session_tags(requester=request.requester.get_username(), approver=username, team=request.team.name,
                                  **{"request-id": str(request.pk)}),
            execution_id=execution_id, signal=decision,
            # Resume takes no payload; Approve/Reject carry the comment AWS shows in the step's outputs.
            payload=None if decision == StepDecision.Decision.RESUME
            else {"Comment": [comment[:1000] or f"{decision} by {username}"]},
        )
    except _NoSignalYet:
        pass  # more approvers needed before AWS hears anything
    except (aws.AwsError, pacing.PacingTimeout) as error:
        with transaction.atomic():
            audit.record(action="step.signal_failed", actor=actor, request=request, client=client,
                         details={"step": entry.step_name, "decision": decision,
                                  "error": getattr(error, "code", type(error).__name__)})
        aws_code = getattr(error, "code", "timeout")
        raise aws_refusal(f"AWS did not accept the answer: {aws_code}.", aws_code) from error
    with transaction.atomic():
        made = StepDecision.objects.create(step_approval=entry, approver=actor, requester_id=request.requester_id,
                                           decision=decision, comment=comment[:4000])
        if decision == StepDecision.Decision.RESUME:
            StepApproval.objects.filter(pk=entry.pk).update(state=StepApproval.State.RESUMED, closed_at=timezone.now())
        elif decision == StepDecision.Decision.REJECT:
            StepApproval.objects.filter(pk=entry.pk).update(state=StepApproval.State.REJECTED, closed_at=timezone.now())
        elif signal_now:
            StepApproval.objects.filter(pk=entry.pk).update(state=StepApproval.State.APPROVED, closed_at=timezone.now())
        action = ("step.approval_added" if decision == StepDecision.Decision.APPROVE and not signal_now
                  else {"Approve": "step.approved", "Reject": "step.rejected", "Resume": "step.resumed"}[decision])
        audit.record(action=action, actor=actor, request=request, client=client, aws=call,
                     details={"step": entry.step_name, "step_execution_id": entry.step_execution_id,
                              "comment": comment[:4000], "signal": decision if signal_now else None,
                              "approvals": approvals + (decision == StepDecision.Decision.APPROVE),
                              "required": _min_required(request)})
    return made


def delegate_candidates(team: Team, actor):
    """Who `actor` may delegate to: active members of the team other than themselves."""
    return (get_user_model().objects.filter(is_active=True, memberships__team=team)
            .exclude(pk=actor.pk).order_by("username").distinct())
