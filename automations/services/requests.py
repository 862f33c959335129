"""Submitting and deciding requests: submit, approve, reject, withdraw, cancel, expire."""
from __future__ import annotations

import contextlib
import datetime as dt
from functools import partial

import structlog
from django.db import transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from automations import audit, aws, policy, selectors
from automations.audit import ClientInfo
from automations.aws import inventory
from automations.runbooks import identity as run_identity
from automations.errors import (
    ContentChanged,
    ContentUnverifiable,
    DomainError,
    InvalidRequest,
    NotAllowed,
    OutOfScope,
    OverlappingRequest,
    TransitionNotAllowed,
    aws_refusal,
)
from automations.models import (
    Approval,
    AutomationRequest,
    DelegatedApproval,
    DispatchOutbox,
    FreezeOverride,
    RunbookVersion,
    Team,
    TeamRunbook,
)
from automations.services import content, dispatch, execution_preview, locations, notifications, policies
from automations.runbooks import AUTOMATION_ROLE_PARAMETER, fingerprint_for
from automations.runbooks.pattern_words import describe as describe_pattern
from automations.services.transitions import transition
from automations.runbooks.validation import (
    ALARM_NAME,
    resource_kind,
    MAX_CONCURRENCY,
    MAX_ERRORS,
    validate_alarm_name,
    validate_parameters,
    validate_target_values,
)
from automations.services import notifications, policies
from automations.services.transitions import transition

Status = AutomationRequest.Status
log = structlog.get_logger(__name__)


def _refused(*, actor, error: DomainError, action: str, client: ClientInfo | None, request=None, **context) -> DomainError:
    """Audit a refused attempt in its own transaction (the refused one never commits) and return the error."""
    with transaction.atomic():
        audit.record(
            action=action, actor=actor, request=request, client=client,
            details={"code": error.code, "detail": error.detail, **context},
            **({} if request else {k: v for k, v in context.items() if k in ("team", "runbook", "account_id", "region", "resources")}),
        )
    return error


#
# Submit
#

def _resolve_version(runbook, team_policy, choice: str) -> RunbookVersion:
    """Turn "default", "latest" or a number into the stored version the request is bound to."""
    choice = str(choice or "default").strip()
    if team_policy.version_choice == team_policy.VersionChoice.PINNED:
        if choice not in ("default", team_policy.pinned_version):
            raise InvalidRequest(f"This team may only run version {team_policy.pinned_version}.",
                                 code="version_not_offered", errors={"version": ["This version is not offered."]})
        number = team_policy.pinned_version
    elif team_policy.version_choice == team_policy.VersionChoice.LATEST and choice == "default":
        number = runbook.latest_version
    elif choice == "default":
        number = runbook.default_version
    elif choice == "latest":
        number = runbook.latest_version
    elif choice.isdigit():
        number = choice
    else:
        raise InvalidRequest("Choose the default version, the latest version or a version number.",
                             code="version_not_offered", errors={"version": ["Not a version."]})
    version = RunbookVersion.objects.filter(runbook=runbook, version=number).first()
    if version is None:
        raise InvalidRequest(f"Version {number} of this runbook is not in the catalog.", code="version_not_offered",
                             errors={"version": ["Unknown version."]})
    if version.problems:
        raise InvalidRequest("This runbook version is not offered: " + "; ".join(version.problems),
                             code="runbook_unsafe")
    return version


# The request form renders the version a submit would resolve to: one resolver for both.
resolve_version = _resolve_version


def _rate_control(schema: dict, parameters: dict, *, target_parameter_name: str, targets, max_concurrency: str,
                  max_errors: str, team: Team, region: str, role_arn: str) -> tuple[list, dict]:
    """Validate rate control; tag targets are resolved to the team's instances here, at submit."""
    if not target_parameter_name:
        if targets or max_concurrency or max_errors:
            raise InvalidRequest("Targets and rate control need a target parameter.",
                                 errors={"target_parameter_name": ["Choose the parameter the targets fill in."]})
        return [], parameters
    errors: dict[str, list[str]] = {}
    spec = schema.get(target_parameter_name)
    if spec is None or spec.get("server_owned"):
        errors["target_parameter_name"] = ["Not a parameter of this runbook."]
    if max_concurrency and not MAX_CONCURRENCY.match(max_concurrency):
        errors["max_concurrency"] = ["Use a number (e.g. 5) or a percentage (e.g. 10%)."]
    if max_errors and not MAX_ERRORS.match(max_errors):
        errors["max_errors"] = ["Use a number (0 stops at the first error) or a percentage."]
    if not isinstance(targets, list) or len(targets) != 1 or not isinstance(targets[0], dict):
        errors["targets"] = ["Give exactly one target: resource ids or a tag."]
    if errors:
        raise InvalidRequest("Rate control is not valid.", errors=errors)
    key, values = str(targets[0].get("Key", "")), targets[0].get("Values")
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and 0 < len(v) <= 163 for v in values):
        raise InvalidRequest("Targets need one or more values.", errors={"targets": ["Give one or more values."]})
    if len(values) > 50:
        raise InvalidRequest("At most 50 target values.", errors={"targets": ["At most 50 values."]})
    if key.startswith("tag:") and 4 < len(key) <= 132:
        # AWS would resolve a tag across the whole account, other teams included: resolve it
        # ourselves within the team's scope and send the ids, so the approver sees them.
        found = inventory.team_resources("instance", tag=team.scope_tag, region=region, role_arn=role_arn)
        tag_key = key[4:]
        ids = sorted(item["id"] for item in found if item["tags"].get(tag_key) in values)
        if not ids:
            raise InvalidRequest("No instance of your team carries that tag.", errors={"targets": ["Matches nothing."]})
        values = ids
    elif key != "ParameterValues":
        raise InvalidRequest("Targets are resource ids (ParameterValues) or a tag (tag:Key).",
                             errors={"targets": ["Unsupported target key."]})
    if spec is not None and key == "ParameterValues":
        # Each value becomes the target parameter of one run: it must pass that parameter's checks
        # (resource ids trimmed and in AWS's exact syntax, like any parameter value).
        values = [value.strip() for value in values]
        problems = validate_target_values(spec, values, target_parameter_name)
        if problems:
            raise InvalidRequest("Some targets are not valid.", errors={"targets": problems})
    # With rate control SSM fills the target parameter per target; it must not be sent as well.
    parameters = {name: value for name, value in parameters.items() if name != target_parameter_name}
    return [{"Key": "ParameterValues", "Values": values}], parameters


def _check_justification(team_policy: TeamRunbook, justification: str) -> None:
    """The policy's rule for the justification: required (at least a few characters)."""
    text = justification.strip()
    if team_policy.justification_required and len(text) < 3:
        raise InvalidRequest("Say why this run is needed: approvers read it.", code="justification_required",
                             errors={"justification": ["Say why this run is needed."]})


MAX_TICKET_REFERENCE = 100


def ticket_hint(team_policy: TeamRunbook) -> str:
    """The policy's ticket rule in words ("a change ticket like CHG0001234"), never the regex."""
    if team_policy.ticket_hint:
        return team_policy.ticket_hint
    words = describe_pattern(team_policy.ticket_pattern)
    return f"a ticket reference ({words})" if words else "a ticket reference"


def _check_ticket(team_policy: TeamRunbook, ticket_reference: str) -> str:
    """The ticket reference, trimmed; refused unless the whole of it matches the policy's pattern.

    The whole value must match (not a part of it), so "CHG0001234; anything" is not a ticket.
    Without a pattern a ticket is optional and free text (still bound by the fingerprint).
    """
    import re2

    ticket = (ticket_reference or "").strip()
    if len(ticket) > MAX_TICKET_REFERENCE:
        raise InvalidRequest(f"Keep the ticket reference under {MAX_TICKET_REFERENCE} characters.",
                             code="ticket_mismatch", errors={"ticket_reference": ["Too long."]})
    if not team_policy.ticket_pattern:
        return ticket
    hint = ticket_hint(team_policy)
    if not ticket:
        raise InvalidRequest(f"Give {hint}: this runbook's policy asks for one.", code="ticket_required",
                             errors={"ticket_reference": [f"Give {hint}."]})
    try:
        matches = re2.fullmatch(team_policy.ticket_pattern, ticket) is not None
    except re2.error:
        matches = True  # a broken pattern is an admin's mistake (the admin form refuses it); never block on it
    if not matches:
        raise InvalidRequest(f"{ticket} is not {hint}.", code="ticket_mismatch",
                             errors={"ticket_reference": [f"{ticket} is not {hint}."]})
    return ticket


def resource_kinds(schema: dict) -> dict[str, str]:
    """{parameter: resource kind} for the parameters that name resources (validation.resource_kind)."""
    return {name: kind for name, spec in schema.items() if (kind := resource_kind(name, spec))}


def request_submit(
    *, actor, team: Team, runbook_id: int, parameters: dict, version: str = "default",
    target_parameter_name: str = "", targets: list | None = None, max_concurrency: str = "", max_errors: str = "",
    alarm_name: str = "", justification: str = "", ticket_reference: str = "", rerun_of: AutomationRequest | None = None,
    client: ClientInfo | None = None, preview: bool = False, expected_fingerprint: str | None = None,
    run_at: dt.datetime | None = None, check_overlap: bool = False,
    location_targets: list[str] | None = None, location_regions: list[str] | None = None,
    location_max_concurrency: str = "", location_max_errors: str = "",
) -> AutomationRequest:
    """A member of `team` asks to run a runbook the team may request. With preview=True nothing is saved.

    check_overlap (the form and the API, unless the person confirmed): refuse with code
    overlapping_request while an open request of this runbook touches any of the same targets.
    The preview carries them in `overlapping` either way, so the page can warn before submit.

    The version is resolved now; roles are filled in from the account; every resource is
    checked against the team's scope. What is fingerprinted is exactly what SSM will receive.
    expected_fingerprint (the browser's preview step): refuse if the request differs from
    what the requester was shown.
    """
    team_policy = policy.team_policy(team, runbook_id)
    context = {"team": team.name}
    if team_policy is None or not policy.is_member(actor, team):
        raise _refused(actor=actor, client=client, action="request.refused",
                       error=NotAllowed("Your team may not request this runbook.", code="runbook_not_offered"),
                       runbook_id=runbook_id, **context)
    runbook = team_policy.runbook
    account = runbook.account
    context.update(runbook=runbook.name, account_id=account.account_id, region=runbook.region)
    try:
        runbook_version = _resolve_version(runbook, team_policy, version)
        schema = run_identity.effective_schema(runbook_version, team=team)
        problems = run_identity.setup_problems(runbook_version, schema)
        if problems:
            raise InvalidRequest("This runbook needs setup by an administrator first: " + "; ".join(problems) + ".",
                                 code="needs_setup")
        if not runbook_version.ssm_hash:
            raise InvalidRequest("This version's content hash is not known yet; try again after the next catalog sync.",
                                 code="content_unknown")
        wire = validate_parameters(schema, parameters, target_parameter=target_parameter_name)
        rc_targets, wire = _rate_control(
            schema, wire, target_parameter_name=target_parameter_name, targets=targets or [],
            max_concurrency=max_concurrency, max_errors=max_errors, team=team, region=runbook.region,
            role_arn=account.dispatch_role_arn,
        )
        missing = [name for name, spec in schema.items()
                   if spec.get("required") and not spec.get("server_owned") and name not in wire
                   and name != target_parameter_name]
        if missing:
            raise InvalidRequest("Some parameters are not valid.",
                                 errors={name: ["This parameter is required."] for name in missing})
        if alarm_name and not ALARM_NAME.match(alarm_name):
            raise InvalidRequest("The alarm name is not valid.", errors={"alarm_name": validate_alarm_name(alarm_name)})
        if len(justification) > 4000:
            raise InvalidRequest("Keep the justification under 4,000 characters.", errors={"justification": ["Too long."]})
        _check_justification(team_policy, justification)
        ticket_reference = _check_ticket(team_policy, ticket_reference)
        # Roles and approvers are Delegate's: the identity assumeRole names, handed-off roles,
        # the principal Delegate signals aws:approve steps as (run_identity).
        wire.update(run_identity.server_values(runbook_version, schema, account))
        by_parameter = inventory.resources_by_parameter(wire, rc_targets, kinds=resource_kinds(schema),
                                                        region=runbook.region, account_id=account.account_id,
                                                        target_parameter=target_parameter_name)
        resources = list(dict.fromkeys(r for found in by_parameter.values() for r in found))
        if len(resources) > team_policy.max_targets:
            raise InvalidRequest(f"At most {team_policy.max_targets} resources per request for this runbook.",
                                 code="too_many_targets")
    except DomainError as error:
        audited = error.code in ("server_owned_parameter", "version_not_offered")
        # A role value is never an accident (the form has no field for it): audit it even in a preview.
        if (audited and not preview) or error.code == "server_owned_parameter":
            raise _refused(actor=actor, client=client, action="request.refused", error=error,
                           fields=sorted(error.errors), **context)
        raise
    try:
        outside = inventory.out_of_scope(resources, tag=team.scope_tag, region=runbook.region,
                                         role_arn=account.dispatch_role_arn,
                                         allowlist=selectors.team_resource_allowlist(team, account)) if resources else []
    except aws.AwsError as error:
        raise DomainError("The resource inventory could not be checked; try again shortly.",
                          code="inventory_unavailable") from error
    location_sources: dict[str, list[str]] = {}
    if location_targets:
        # Multi-account: granted accounts/OUs only, resolved through Organizations (services/locations.py).
        try:
            location_sources = locations.check_submit(
                team=team, account=account, runbook_version=runbook_version, targets=location_targets,
                regions=list(location_regions or []), max_concurrency=location_max_concurrency,
                max_errors=location_max_errors,
                allowed_regions=list(team_policy.allowed_regions) or list(account.regions or []), resources=resources,
                identity_kind=run_identity.version_identity(runbook_version).get("kind", ""))
        except OutOfScope as error:
            if preview:
                raise
            raise _refused(actor=actor, client=client, action="request.refused", error=error,
                           location_targets=location_targets, **context) from None
    if outside:
        # Field errors name the parameter (the form shows them there) and `resources` lists them all.
        # (Rate-control target values are the `targets` field, not the parameter they fill.)
        fields = {("targets" if name == target_parameter_name else name):
                  [f"{r} is not in your team's scope (or does not exist here)." for r in found if r in outside]
                  for name, found in by_parameter.items() if any(r in outside for r in found)}
        error = OutOfScope(f"Not in your team's scope: {', '.join(outside)}.", errors={"resources": outside, **fields})
        if preview:
            raise error
        raise _refused(actor=actor, client=client, action="request.refused", error=error, resources=outside, **context)
    # The policy's own rules (accounts, regions, target tags and id patterns, run-at).
    error = policies.submit_refusal(team_policy=team_policy, team=team, account=account, region=runbook.region,
                                    resources=resources, requester=actor, run_at=run_at)
    if error is not None:
        raise error if preview else _refused(actor=actor, client=client, action="request.refused", error=error,
                                             resources=resources, **context)

    request = AutomationRequest(
        team=team, requester=actor, runbook=runbook, runbook_version=runbook_version, version_choice=str(version),
        account=account, region=runbook.region, parameters=wire, target_parameter_name=target_parameter_name,
        targets=rc_targets, max_concurrency=max_concurrency if target_parameter_name else "",
        max_errors=max_errors if target_parameter_name else "", alarm_name=alarm_name, resources=resources,
        justification=justification, ticket_reference=ticket_reference, rerun_of=rerun_of, run_at=run_at,
        document_hash=runbook_version.ssm_hash, run_as=run_identity.run_as_for(runbook_version, account),
        location_targets=list(location_targets or []), location_regions=list(location_regions or []) if location_targets else [],
        location_accounts=sorted(location_sources), location_sources=location_sources,
        location_max_concurrency=location_max_concurrency if location_targets else "",
        location_max_errors=location_max_errors if location_targets else "",
    )
    # What AWS says the run would touch (the form's preview shows it too), bound by the fingerprint;
    # nothing is invented when AWS says nothing.
    request.execution_preview = execution_preview.at_submit(request)
    request.fingerprint = fingerprint_for(request)
    # Enough approvers for what it covers (accounts, targets counted by the preview): known only now.
    error = policies.approvers_refusal(team_policy=team_policy, team=team, requester=actor, request=request)
    if error is not None:
        raise error if preview else _refused(actor=actor, client=client, action="request.refused", error=error,
                                             resources=resources, **context)
    try:
        request.resource_names = inventory.resource_names(resources, region=runbook.region,
                                                          role_arn=account.dispatch_role_arn) if resources else {}
    except aws.AwsError:
        request.resource_names = {}  # names are a courtesy; the ids are what runs and what is checked
    overlapping = selectors.requests_overlapping(account_id=account.pk, region=runbook.region, resources=resources,
                                                 runbook_id=runbook.pk)
    request.overlapping = overlapping
    if expected_fingerprint is not None and expected_fingerprint != request.fingerprint:
        error = InvalidRequest("The request changed since you previewed it; check the new preview and submit again.",
                               code="changed_since_preview")
        error.preview = request  # what would be sent now: the page shows it without validating everything again
        raise error
    if preview:
        return request
    if check_overlap and overlapping:
        error = OverlappingRequest(overlapping)
        error.preview = request
        raise error
    with transaction.atomic():
        request.save()
        audit.record(action="request.submitted", actor=actor, request=request, client=client, details={
            "version": runbook_version.version, "version_choice": str(version), "parameters": wire,
            "targets": rc_targets, "fingerprint": request.fingerprint, "rerun_of": rerun_of.pk if rerun_of else None,
            "run_at": run_at, "document_hash": request.document_hash, "run_as": request.run_as,
            "execution_preview": request.execution_preview,
            **({"locations": {"targets": request.location_targets, "regions": request.location_regions,
                              "accounts": request.location_accounts,
                              "max_concurrency": request.location_max_concurrency,
                              "max_errors": request.location_max_errors}} if request.location_targets else {}),
            "ticket_reference": request.ticket_reference,
            # Submitted although these open requests of the same runbook share a target (confirmed).
            **({"overlapping": [other.pk for other in overlapping]} if overlapping else {}),
        })
        notifications.notify_on_commit("request.submitted", request.pk)
        if policy.approvals_required(request) == 0:
            # Auto-approval names the rule that matched (unless a change freeze holds it).
            request = _take_effect(request, actor=None, client=None)
    return request


#
# Decisions
#

def _approve(request: AutomationRequest, *, actor, client, details: dict, action: str = "request.approved"):
    request = transition(request, to=Status.APPROVED, actor=actor, client=client, action=action,
                         details=details, approved_at=timezone.now())
    # "Approve now, run at": the outbox row waits until the run-at time; the sweeper publishes it then.
    DispatchOutbox.objects.create(request=request, next_attempt_at=max(timezone.now(), request.run_at or timezone.now()))
    # Fast path; robust=True: a broker error is logged, never raised into the response.
    # If the publish is lost, the outbox sweeper republishes the row.
    transaction.on_commit(partial(dispatch.dispatch_publish_after_approval, request.pk), robust=True)
    return request


def _take_effect(request: AutomationRequest, *, actor, client, now: dt.datetime | None = None,
                 released: bool = False, decision: policy.ApprovalDecision | None = None,
                 calendar_opened: bool = False) -> AutomationRequest:
    """Make a locked, submitted request approved if its approvals satisfy the policy now.

    Approvals count only if bound to the request's fingerprint. Inside a change freeze they take
    effect only with emergency overrides from two approvers; otherwise the request waits and
    the approvals tick releases it when the freeze ends.
    """
    # The approve path hands in the decision it already took; submit and the tick ask policy here.
    team_policy = decision.team_policy if decision else policy.policy_for(request)
    required = policy.required_approvals(team_policy, request)
    approvals = [a for a in request.approvals.select_related("approver") if a.fingerprint == request.fingerprint]
    if len(approvals) < required:
        return request
    overrides = {a.approver.get_username(): a.freeze_override.reason
                 for a in approvals if hasattr(a, "freeze_override")}
    details = {"approvals": len(approvals), "required": required,
               "approvers": [a.approver.get_username() for a in approvals]}
    action = "request.approved"
    if required == 0:
        action = "request.auto_approved"
        details.update(rule=f"team-runbook-policy:{team_policy.pk}", reason="policy requires no approval")
    frozen = decision.freeze if decision else policy.freeze_at(request.team, at=now)
    if frozen:
        window, until = frozen
        if len(overrides) < policy.FREEZE_OVERRIDE_APPROVERS:
            audit.record(action="request.approval_held", actor=actor, request=request, client=client, details={
                "reason": "change freeze", "freeze": window.as_dict(), "until": until,
                "emergency_overrides": len(overrides), "needed": policy.FREEZE_OVERRIDE_APPROVERS})
            return request
        details.update(emergency_override=True, freeze=window.as_dict(), override_reasons=overrides)
    calendars = sorted({name for a in approvals if hasattr(a, "freeze_override")
                        for name in a.freeze_override.calendars or []})
    if calendars and not frozen and not calendar_opened:
        # An approver asked to override a CLOSED change calendar: like a freeze, that takes two.
        if len(overrides) < policy.FREEZE_OVERRIDE_APPROVERS:
            audit.record(action="request.approval_held", actor=actor, request=request, client=client, details={
                "reason": policy.CALENDAR_HOLD, "calendars": calendars,
                "emergency_overrides": len(overrides), "needed": policy.FREEZE_OVERRIDE_APPROVERS})
            return request
        details.update(emergency_override=True, calendars=calendars, override_reasons=overrides)
    if released:
        details["released"] = "the change calendar opened" if calendar_opened else "the change freeze ended"
    return _approve(request, actor=actor, client=client, details=details, action=action)


def _content_still_bound(request: AutomationRequest, *, actor, client) -> None:
    """Before an approval counts, SSM must still serve the content the request bound.

    Otherwise the request is invalidated (rejected by Delegate, reason code content_changed):
    the approver is shown the new content and the requester must submit again for it. The check
    fails closed: if SSM cannot be asked (throttled, access denied, the document deleted) the
    approval is refused with content_unverifiable and nothing is recorded as approved; a request
    that bound no hash (submitted before the binding existed) is invalidated, content_unbound.
    """
    if request.status != Status.SUBMITTED or actor.pk == request.requester_id:
        return
    if not request.document_hash:
        reason = content.unbound_reason(request)
        _invalidate(request, client=client, reason=reason, code=content.CONTENT_UNBOUND,
                    details={"attempted_by": actor.get_username()})
        raise ContentUnverifiable(reason, code=content.CONTENT_UNBOUND)
    try:
        found, hash_type = content.live_hash(request)
    except aws.AwsError as error:
        log.warning("approval.content_check_unavailable", automation_request=request.pk, error=error.code)
        raise _refused(actor=actor, client=client, action="approval.refused", request=request,
                       error=ContentUnverifiable(content.unverifiable_reason(request, error)),
                       aws_error=error.code) from error
    if found == request.document_hash:
        return
    reason = content.content_changed_reason(request, found)
    content.record_changed_content(request, found=found, hash_type=hash_type, actor=actor, where="approval")
    _invalidate(request, client=client, reason=reason, code=content.CONTENT_CHANGED,
                details={"bound_hash": request.document_hash, "found_hash": found,
                         "attempted_by": actor.get_username()})
    raise ContentChanged(reason)


def _invalidate(request: AutomationRequest, *, client, reason: str, code: str, details: dict) -> None:
    """Delegate rejects a submitted request that can never be approved as it stands."""
    with transaction.atomic():
        locked = AutomationRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status == Status.SUBMITTED:
            transition(locked, to=Status.REJECTED, actor=None, client=client, action="request.invalidated",
                       details={"code": code, **details}, status_reason=reason, reason_code=code,
                       finished_at=timezone.now())


@contextlib.contextmanager
def _deciding(request: AutomationRequest, *, actor, client: ClientInfo | None, target: str, refusal: str, own: str):
    """The one opening of an approve or reject: lock the row, check it still waits for a decision
    and that the actor is not the requester; a NotAllowed raised inside is audited as `refusal`.

    Locking the row means two deciders at once count each other correctly, and exactly one of
    them makes the transition (and, for an approval, the outbox row).
    """
    try:
        with transaction.atomic():
            locked = AutomationRequest.objects.select_for_update().get(pk=request.pk)
            if locked.status != Status.SUBMITTED:
                raise TransitionNotAllowed(current=locked.status, target=target)
            if actor.pk == locked.requester_id:
                raise NotAllowed(own, code="self_approval")
            yield locked
    except NotAllowed as error:
        raise _refused(actor=actor, error=error, action=refusal, client=client, request=request)


def request_approve(*, request: AutomationRequest, actor, comment: str = "", emergency: bool = False,
                    client: ClientInfo | None = None, bulk_with: tuple[int, ...] = ()):
    """Someone in the request's approver pool, never the requester, approves once.

    Enough distinct approvals make it approved (unless a change freeze holds it). With
    `emergency`, inside a freeze, the approval also overrides the freeze; `comment` is the reason.
    `bulk_with`: the other requests approved in the same bulk action (services.bulk), for the audit.
    """
    comment = comment[:4000]
    if emergency and not comment.strip():
        raise InvalidRequest("An emergency override needs a reason.", code="reason_required",
                             errors={"comment": ["Say why this cannot wait for the freeze to end."]})
    _content_still_bound(request, actor=actor, client=client)
    # Asked of AWS before the transaction: an emergency override may also be of a change calendar
    # that is CLOSED (or cannot be read) at the run's time.
    calendar = policies.change_calendar_state(request) if emergency else None
    closed = calendar if calendar and calendar["state"] != "OPEN" else None
    with _deciding(request, actor=actor, client=client, target=Status.APPROVED, refusal="approval.refused",
                   own="You cannot approve your own request.") as request:
        decision = policy.approval_decision(actor, request)  # the one policy pass of this approval
        frozen = decision.freeze if emergency else None
        if emergency and frozen is None and closed is None:
            raise NotAllowed("No change freeze or closed change calendar applies to this request; approve it normally.",
                             code="no_freeze")
        overridden = {"freeze": frozen[0] if frozen else None, "calendars": [] if frozen else closed["calendars"]} \
            if emergency else {}
        what = ({"freeze": frozen[0].as_dict()} if frozen else
                {"calendars": closed["calendars"], "calendar_state": closed["state"]} if emergency else {})
        existing = request.approvals.filter(approver=actor).first()
        if existing is not None:
            if emergency and not hasattr(existing, "freeze_override"):
                # An approver who approved before the freeze adds their override to that approval.
                FreezeOverride.objects.create(approval=existing, reason=comment, **overridden)
                audit.record(action="request.emergency_override", actor=actor, request=request, client=client,
                             details={"reason": comment, **what})
                return _take_effect(request, actor=actor, client=client, decision=decision)
            raise NotAllowed("You have already approved this request.", code="already_approved")
        seat = decision.seat
        if seat is None:
            if decision.seats:
                raise NotAllowed("Someone already approved in the place of the person you stand in for.",
                                 code="already_approved")
            raise NotAllowed("You are not an approver for this request.", code="not_a_lead")
        approval = Approval.objects.create(request=request, approver=actor, requester_id=request.requester_id,
                                           fingerprint=request.fingerprint, comment=comment)
        if seat.delegation is not None:
            DelegatedApproval.objects.create(approval=approval, delegation=seat.delegation,
                                             on_behalf_of=seat.on_behalf_of)
        if emergency:
            FreezeOverride.objects.create(approval=approval, reason=comment, **overridden)
        count = request.approvals.filter(fingerprint=request.fingerprint).count()
        audit.record(action="request.approval_added", actor=actor, request=request, client=client, details={
            "comment": comment, "approvals": count, "required": decision.required,
            "fingerprint": request.fingerprint, **seat.as_dict(),
            **({"bulk_with": list(bulk_with)} if bulk_with else {}),
            **({"emergency_override": True, **what} if emergency else {})})
        return _take_effect(request, actor=actor, client=client, decision=decision)


def _reason_required(comment: str, what: str) -> str:
    comment = (comment or "").strip()
    if not comment:
        raise InvalidRequest(f"Say why you {what}: the requester reads it.", code="reason_required",
                             errors={"comment": ["A reason is required."]})
    return comment


def request_reject(*, request: AutomationRequest, actor, comment: str = "", client: ClientInfo | None = None):
    """Anyone who may approve may reject instead, with a reason (a freeze never blocks a rejection)."""
    with _deciding(request, actor=actor, client=client, target=Status.REJECTED, refusal="rejection.refused",
                   own="You cannot decide your own request; withdraw it instead.") as request:
        seats = policy.seats(actor, request)
        if not seats:
            raise NotAllowed("You are not an approver for this request.", code="not_a_lead")
        comment = _reason_required(comment, "reject it")
        return transition(request, to=Status.REJECTED, actor=actor, client=client,
                          details={"comment": comment[:4000], **seats[0].as_dict()}, status_reason=comment[:4000])


def request_send_back(*, request: AutomationRequest, actor, comment: str = "", client: ClientInfo | None = None):
    """An approver asks for changes instead of rejecting: the requester amends it and it is decided again."""
    try:
        with transaction.atomic():
            request = AutomationRequest.objects.select_for_update().get(pk=request.pk)
            if request.status != Status.SUBMITTED:
                raise TransitionNotAllowed(current=request.status, target=Status.CHANGES_REQUESTED)
            if actor.pk == request.requester_id:
                raise NotAllowed("You cannot decide your own request; withdraw it instead.", code="self_approval")
            seats = policy.seats(actor, request)
            if not seats:
                raise NotAllowed("You are not an approver for this request.", code="not_a_lead")
            comment = _reason_required(comment, "send it back")
            return transition(request, to=Status.CHANGES_REQUESTED, actor=actor, client=client,
                              action="request.sent_back",
                              details={"comment": comment[:4000], **seats[0].as_dict()}, status_reason=comment[:4000])
    except NotAllowed as error:
        raise _refused(actor=actor, error=error, action="send_back.refused", client=client, request=request)


def request_amend(*, request: AutomationRequest, actor, client: ClientInfo | None = None,
                  expected_fingerprint: str | None = None, **changes) -> AutomationRequest:
    """The requester changes a request sent back to them, and it goes back to the approvers.

    The new values pass every submit check (request_submit's preview); the request gets a new
    fingerprint, and approvals given to the old one are cleared (named in the audit event).
    """
    if request.status != Status.CHANGES_REQUESTED:
        raise TransitionNotAllowed(current=request.status, target=Status.SUBMITTED,
                                   detail="Only a request sent back for changes can be amended.")
    if actor.pk != request.requester_id:
        raise NotAllowed("Only the requester can amend a request.", code="not_requester")
    candidate = request_submit(actor=actor, team=request.team, runbook_id=request.runbook_id, client=client,
                               preview=True, expected_fingerprint=expected_fingerprint, **changes)
    fields = ("runbook_version", "version_choice", "parameters", "target_parameter_name", "targets",
              "max_concurrency", "max_errors", "alarm_name", "resources", "resource_names", "justification",
              "ticket_reference", "run_at", "execution_preview", "fingerprint", "location_targets", "location_regions", "location_accounts", "location_sources",
              "location_max_concurrency", "location_max_errors")
    with transaction.atomic():
        locked = AutomationRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status != Status.CHANGES_REQUESTED:
            raise TransitionNotAllowed(current=locked.status, target=Status.SUBMITTED)
        old_fingerprint = locked.fingerprint
        cleared = list(locked.approvals.values_list("approver__username", flat=True))
        # Approvals were given to what the approver saw; the request changed, so they no longer apply.
        locked.approvals.all().delete()
        AutomationRequest.objects.filter(pk=locked.pk).update(**{name: getattr(candidate, name) for name in fields})
        locked.refresh_from_db()
        request = transition(locked, to=Status.SUBMITTED, actor=actor, client=client, action="request.amended",
                             details={"old_fingerprint": old_fingerprint, "fingerprint": locked.fingerprint,
                                      "parameters": locked.parameters, "targets": locked.targets,
                                      "ticket_reference": locked.ticket_reference,
                                      "version": locked.runbook_version.version, "cleared_approvals": cleared},
                             status_reason="")
        notifications.notify_on_commit("request.submitted", request.pk)
    return request


def request_comment(*, request: AutomationRequest, actor, body: str, client: ClientInfo | None = None):
    """Add to the request's thread; anyone who may see the request may write (the view fetched it
    through selectors.requests_visible_to, so an invisible request never gets here)."""
    from automations.models import RequestComment

    body = (body or "").strip()
    if not body:
        raise InvalidRequest("Write a comment first.", code="empty_comment", errors={"body": ["Required."]})
    if len(body) > 4000:
        raise InvalidRequest("Keep a comment under 4,000 characters.", code="comment_too_long",
                             errors={"body": ["Too long."]})
    with transaction.atomic():
        comment = RequestComment.objects.create(request=request, author=actor, body=body)
        audit.record(action="request.commented", actor=actor, request=request, client=client,
                     details={"comment": body, "comment_id": comment.pk})
        notifications.notify_on_commit("request.commented", request.pk, author_id=actor.pk)
    return comment


def requests_release_held(*, now: dt.datetime | None = None) -> int:
    """Approve submitted requests whose approvals were held by a change freeze that has ended
    (and zero-approval requests submitted during one)."""
    now = now or timezone.now()
    required = TeamRunbook.objects.filter(team=OuterRef("team"), runbook=OuterRef("runbook")).values("approvals_required")
    # Only requests whose approvals already suffice: the rest wait for approvers, not for the tick.
    candidates = (AutomationRequest.objects.filter(status=Status.SUBMITTED)
                  .annotate(count=Count("approvals"), required=Coalesce(Subquery(required[:1]), 1))
                  .filter(count__gte=F("required")).values_list("pk", "team_id"))
    released = 0
    for pk, team_id in list(candidates):
        if policy.freeze_at(Team(pk=team_id), at=now):
            continue  # still frozen: nothing to do, and nothing to audit again
        opened = False
        if FreezeOverride.objects.filter(approval__request_id=pk).exclude(calendars=[]).exists():
            # Held for a second override of a CLOSED calendar: released when AWS says it is OPEN.
            request = AutomationRequest.objects.select_related("account", "team", "runbook").get(pk=pk)
            calendar = policies.change_calendar_state(request, at=now)
            if calendar is not None and calendar["state"] != "OPEN":
                continue
            opened = True
        with transaction.atomic():
            request = AutomationRequest.objects.select_for_update().get(pk=pk)
            if request.status != Status.SUBMITTED:
                continue
            if _take_effect(request, actor=None, client=None, now=now, released=True,
                            calendar_opened=opened).status == Status.APPROVED:
                released += 1
    return released


def request_withdraw(*, request: AutomationRequest, actor, client: ClientInfo | None = None):
    """The requester takes back a request nobody decided yet (waiting, or sent back to them)."""
    with transaction.atomic():
        request = AutomationRequest.objects.select_for_update().get(pk=request.pk)
        if actor.pk != request.requester_id:
            raise NotAllowed("Only the requester can withdraw a request.")
        return transition(request, to=Status.WITHDRAWN, actor=actor, client=client)


def request_cancel(*, request: AutomationRequest, actor, reason: str = "", client: ClientInfo | None = None):
    """Stop an approved request before it reaches AWS, or ask AWS to stop a running one.

    A running execution's stop is asked of AWS under a session naming the canceller; the
    request becomes cancelled when the status sync sees AWS report it.
    """
    with transaction.atomic():
        request = AutomationRequest.objects.select_for_update().get(pk=request.pk)
        if not (actor.pk == request.requester_id or policy.is_lead(actor, request.team)):
            raise NotAllowed("Only the requester or a lead of the team can cancel.")
        if request.status == Status.APPROVED:
            DispatchOutbox.objects.filter(pk=request.pk).update(state=DispatchOutbox.State.CANCELLED)
            return transition(request, to=Status.CANCELLED, actor=actor, client=client,
                              details={"reason": reason[:2000], "before_dispatch": True},
                              status_reason=reason[:2000], finished_at=timezone.now())
        if request.status == Status.DISPATCHING:
            raise TransitionNotAllowed(current=request.status, target=Status.CANCELLED,
                                       detail="The run is starting in AWS right now; cancel again in a moment.")
        if request.status != Status.RUNNING:
            raise TransitionNotAllowed(current=request.status, target=Status.CANCELLED)
        execution_id = request.execution.execution_id
    username = actor.get_username()
    # The Stop call is paced (1 call/s per account and region) inside the gateway, automations.aws.pacing.
    try:
        call = aws.stop_automation(
            region=request.region, role_arn=request.account.dispatch_role_arn,
            session_name=aws.role_session_name("delegate-cancel", str(request.pk), username),
            source_identity=aws.sts_source_identity(username),
            tags=aws.session_tags(requester=request.requester.get_username(), actor=username,
                                  team=request.team.name, **{"request-id": str(request.pk)}),
            execution_id=execution_id,
        )
    except aws.AwsError as error:
        with transaction.atomic():
            audit.record(action="request.cancel_failed", actor=actor, request=request, client=client,
                         details={"error": error.code, "message": error.message})
        raise aws_refusal(f"AWS did not accept the stop: {error.code}.", error.code) from error
    with transaction.atomic():
        audit.record(action="request.cancel_requested", actor=actor, request=request, client=client, aws=call,
                     details={"reason": reason[:2000]})
    return request


def request_expire_stale(*, now: dt.datetime | None = None) -> int:
    """Expire requests left unapproved past their policy's expiry, and approvals not dispatched
    within their validity (counted from approval or the run-at time): those need re-approval."""
    now = now or timezone.now()
    expired = 0
    policies_by_key = {(p.team_id, p.runbook_id): p for p in TeamRunbook.objects.all()}
    # A request sent back for changes runs on the same clock as one waiting for approval.
    waiting = (Status.SUBMITTED, Status.CHANGES_REQUESTED)
    candidates = AutomationRequest.objects.filter(status__in=(*waiting, Status.APPROVED))
    for request in candidates.iterator():
        request._policy_cache = policies_by_key.get((request.team_id, request.runbook_id))
        if request.status in waiting:
            hours = policy.request_expiry_hours(policy.policy_for(request))
            due = request.created_at + dt.timedelta(hours=hours) < now
        else:
            deadline = policy.dispatch_deadline(request)
            due = deadline is not None and deadline < now
        if not due:
            continue
        with transaction.atomic():
            request = AutomationRequest.objects.select_for_update().get(pk=request.pk)
            if request.status not in (*waiting, Status.APPROVED):
                continue
            reason = {Status.SUBMITTED: "not approved in time", Status.CHANGES_REQUESTED: "not amended in time"}.get(
                request.status, "approval validity ran out")
            try:
                transition(request, to=Status.EXPIRED, actor=None, details={"reason": reason},
                           status_reason=reason, finished_at=now)
            except TransitionNotAllowed:
                continue
            DispatchOutbox.objects.filter(pk=request.pk).update(state=DispatchOutbox.State.CANCELLED)
            expired += 1
    return expired


#
# The periodic tick
#

def approvals_tick(*, now: dt.datetime | None = None) -> dict:
    """Escalate stale requests, release approvals a freeze held, surface waiting aws:approve steps."""
    now = now or timezone.now()
    return {
        "escalated": policies.requests_escalate_stale(now=now),
        "released": requests_release_held(now=now),
        "steps": policies.step_approvals_sync(now=now),
    }
