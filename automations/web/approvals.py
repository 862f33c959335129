"""The approval queue, the request page's decision section, aws:approve steps and delegations.

Views fetch through selectors (a request the user may not see is a 404) and write through
services; every rule about who may decide lives in automations.policy.
"""
from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from automations import policy, selectors, services
from automations.audit import ClientInfo
from automations.errors import DomainError
from automations.models import ApprovalDelegation, AutomationRequest, FreezeWindow, StepApproval, Team
from automations.runbooks import approval_content as content_view
from automations.runbooks.undo import undo_candidates
from automations.services import content, policies
from automations.web.paging import cursor_of, parse_cursor

RECENT_RUNS = 10


#
# What the approver sees
#

def policy_rules(team_policy, team: Team) -> list[str]:
    """The policy that applies, in plain words, for the approver and the requester."""
    if team_policy is None:
        return ["No policy row exists for this team and runbook any more: it cannot be dispatched."]
    rules = []
    if not team_policy.enabled:
        rules.append("This runbook is disabled for the team: an approved request will not start.")
    required = team_policy.approvals_required
    pool = f"the group “{team_policy.approver_group.name}”" if team_policy.approver_group_id else "the team's leads"
    rules.append("Approved automatically (no approval required)." if required == 0 else
                 f"Needs {required} distinct approver{'s' if required != 1 else ''} from {pool}; never the requester.")
    if team_policy.multi_account_threshold and team_policy.multi_account_approvals > required:
        rules.append(f"A multi-account run over more than {team_policy.multi_account_threshold} accounts needs "
                     f"{team_policy.multi_account_approvals} distinct approvers.")
    if team_policy.multi_target_threshold and team_policy.multi_target_approvals > required:
        rules.append(f"A request over more than {team_policy.multi_target_threshold} targets (or whose target count "
                     f"is not known before the run) needs {team_policy.multi_target_approvals} distinct approvers.")
    accounts = policy.allowed_account_ids(team_policy, team)
    if accounts:
        rules.append(f"Accounts: {', '.join(accounts)}.")
    if team_policy.allowed_regions:
        rules.append(f"Regions: {', '.join(team_policy.allowed_regions)}.")
    rules.append(f"At most {team_policy.max_targets} targets, all tagged {team.scope_tag[0]}={team.scope_tag[1]}.")
    for key, values in sorted((team_policy.target_tags or {}).items()):
        rules.append(f"Every target must carry tag {key} = {' or '.join(values)}.")
    if team_policy.target_id_patterns:
        rules.append(f"Target ids must match: {', '.join(team_policy.target_id_patterns)}.")
    rules.append(f"Requests expire after {policy.request_expiry_hours(team_policy):g} h without approval; "
                 f"an approval is valid for {policy.approval_validity_hours(team_policy):g} h.")
    if team_policy.escalate_after_hours and team_policy.escalation_group_id:
        rules.append(f"Escalates to “{team_policy.escalation_group.name}” after {team_policy.escalate_after_hours:g} h.")
    return rules



def recent_runs(user, item: AutomationRequest) -> list[AutomationRequest]:
    """This team's earlier requests for this runbook that touched any of these targets, newest first.

    The team's (index request_team_runbook_recent): what its approvers weigh; open requests of any
    team on the same targets are shown apart, as overlaps."""
    wanted = set(item.resources)
    earlier = (selectors.requests_visible_to(user).filter(team_id=item.team_id, runbook_id=item.runbook_id)
               .exclude(pk=item.pk).order_by("-created_at", "-id"))
    if not wanted:
        return list(earlier[:RECENT_RUNS])
    # Overlap is computed here, not with a JSON containment lookup, so the demo's SQLite works too;
    # over (id, resources) pairs only, then the few matches in full (300 full rows took ~80 ms).
    matching = [pk for pk, resources in earlier.values_list("pk", "resources")[:300]
                if wanted.intersection(resources)][:RECENT_RUNS]
    found = {run.pk: run for run in earlier.filter(pk__in=matching)}
    return [found[pk] for pk in matching]


def approval_rows(item: AutomationRequest) -> list[dict]:
    """Each approval with whom it stood in for and its emergency override reason, if any."""
    rows = []
    for approval in item.approvals.select_related("approver", "delegated__on_behalf_of", "freeze_override"):
        delegated = getattr(approval, "delegated", None)
        override = getattr(approval, "freeze_override", None)
        rows.append({"approver": approval.approver.get_username(), "comment": approval.comment,
                     "created_at": approval.created_at,
                     "on_behalf_of": delegated.on_behalf_of.get_username() if delegated else "",
                     "override_reason": override.reason if override else ""})
    return rows


def decision_context(user, item: AutomationRequest, *, decision: policy.ApprovalDecision | None = None) -> dict:
    """Everything the request page's decision section needs (merged into the page context).

    `decision`: policy.approval_decision(user, item) when the caller already asked (a submitted request).
    """
    team_policy = policy.policy_for(item)
    submitted = item.status == AutomationRequest.Status.SUBMITTED
    if submitted and decision is None:
        decision = policy.approval_decision(user, item)
    seats = decision.seats if submitted else []
    if submitted:
        frozen = decision.freeze
    else:
        frozen = policy.freeze_at(item.team) if item.status == AutomationRequest.Status.APPROVED else None
    context = {
        "policy_rules": policy_rules(team_policy, item.team),
        "freeze": frozen[0] if frozen else None,
        "freeze_until": frozen[1] if frozen else None,
        "seat": decision.seat if seats else None,
        "may_decide": bool(seats),
        "escalation": getattr(item, "escalation", None),
        "approval_rows": approval_rows(item),
        "dispatch_deadline": policy.dispatch_deadline(item),
        # Side by side with Delegate's own freeze: the change calendars that gate it, and a hold.
        "change_calendars": policy.request_calendars(item),
        "calendar": (selectors.change_calendar_state(item) if item.status in (AutomationRequest.Status.SUBMITTED,
                                                                              AutomationRequest.Status.APPROVED) else None),
        "hold": selectors.request_hold(item),
        "waiting_steps": [],
        "targets": [],
        "targets_error": "",
        "recent_runs": [],
        "overlapping": [],
        "undo": [],
    }
    already = item.approvals.filter(approver=user).first() if user.is_authenticated else None
    calendar_closed = bool(context["calendar"] and context["calendar"]["state"] != "OPEN")
    context["may_add_override"] = bool((frozen or calendar_closed) and already is not None and not hasattr(already, "freeze_override")
                                       and submitted)
    if submitted:
        # Only a request still waiting needs the live inventory; the page is not polled then.
        context["targets"], context["targets_error"] = selectors.resolved_targets(item)
        context["recent_runs"] = recent_runs(user, item)
        # So the approver sees what SSM serves now, not only what was bound (or that SSM could not say).
        context["content_check_error"] = content.notice_current_content(item)
    if item.status in AFTERMATH_STATUSES:
        # A run that stopped part-way may have left targets changed: show them as they are now.
        context["targets"], context["targets_error"] = selectors.resolved_targets(item)
        context["undo"] = undo_suggestions(user, item, [row.get("state", "") for row in context["targets"]])
    if not item.is_terminal:
        others = selectors.requests_overlapping(
            account_id=item.account_id, region=item.region, resources=item.resources, runbook_id=item.runbook_id,
            exclude_pk=item.pk)
        visible = set(selectors.requests_visible_to(user).filter(pk__in=[o.pk for o in others])
                      .values_list("pk", flat=True)) if others else set()
        context["overlapping"] = [other for other in others if other.pk in visible]
    context.update(content_view.approval_view(item))
    if item.status == AutomationRequest.Status.RUNNING:
        context["waiting_steps"] = [
            {"entry": entry, "may_answer": selectors.may_answer_step(user, entry, item),
             "next": step_next_text(entry, item)}
            for entry in StepApproval.objects.filter(execution__request=item, state=StepApproval.State.WAITING)
        ]
    return context


AFTERMATH_STATUSES = (AutomationRequest.Status.FAILED, AutomationRequest.Status.CANCELLED,
                      AutomationRequest.Status.TIMED_OUT)


def undo_suggestions(user, item: AutomationRequest, states: list[str]) -> list:
    """Runbooks the user's teams may request that would undo what this run left (automations.runbooks.undo)."""
    names = undo_candidates(item.runbook.name, states)
    if not names:
        return []
    offered = {team_policy.runbook.name: team_policy for team_policy in selectors.runbook_policies_for(user).filter(
        runbook__name__in=names, runbook__account=item.account, runbook__region=item.region)}
    return [offered[name] for name in names if name in offered]


def step_next_text(entry: StepApproval, item: AutomationRequest | None = None) -> str:
    """What happens next for a waiting step, in plain words (the next step named from the runbook)."""
    item = item or entry.execution.request
    names = [step.get("name") for step in item.runbook_version.steps or [] if isinstance(step, dict)]
    following = names[names.index(entry.step_name) + 1] if entry.step_name in names[:-1] else ""
    then = f"step {following}" if following else "the rest of the runbook"
    pool = "a lead of " + str(item.team) + " (not the requester)"
    if entry.action == policies.PAUSE_ACTION:
        return (f"The run is paused here until {pool} presses Resume; then {then} runs. "
                "Cancel run stops it instead.")
    return (f"The run waits until {pool} approves this step; then {then} runs. "
            "Rejecting it fails the run; nothing after this step runs.")


#
# The queue
#

# A row names the first few requests it overlaps and counts the rest (a backlog on shared targets
# listed 50 links a row: 2,500 URL reversals on one page at 1,000,000 requests).
OVERLAPS_SHOWN = 5


@login_required
def approval_queue(request):
    user = request.user
    # Asked once for the page: the queue's candidates and the navigation both read it.
    request.navigation_roles = policy.navigation_roles(user)
    # One batch of rules for the whole queue, full rows for one page (docs/benchmarks.md).
    page = selectors.approval_queue_rows(user, after=parse_cursor(request.GET.get("after")),
                                         size=selectors.QUEUE_PAGE_SIZE, roles=request.navigation_roles)
    queued = page.rows
    queue = [item for item, _seat in queued]
    overlaps = selectors.overlaps_among(queue)
    freezes: dict = {}
    rows = []
    now = timezone.now()
    for item, seat in queued:
        if item.team_id not in freezes:
            freezes[item.team_id] = policy.freeze_at(item.team)
        frozen = freezes[item.team_id]
        rows.append({"item": item, "seat": seat, "required": policy.approvals_required(item),
                     "approvals": len(item.approvals.all()), "freeze": frozen[0] if frozen else None,
                     "escalated": hasattr(item, "escalation"), "overlaps": overlaps.get(item.pk, [])[:OVERLAPS_SHOWN],
                     "overlaps_more": max(0, len(overlaps.get(item.pk, [])) - OVERLAPS_SHOWN),
                     "escalates": policy.escalation_due(item, now=now), "bulk_key": policy.bulk_key(item)})
    steps = [{"entry": entry, "next": step_next_text(entry)} for entry in selectors.waiting_steps_for(user)]
    request.approval_queue_count = page.total + len(steps)  # requests and steps: the badge counts both
    now = timezone.now()
    delegations = ApprovalDelegation.objects.filter(delegate=user, revoked_at=None, starts_at__lte=now,
                                                    ends_at__gt=now).select_related("delegator", "team")
    return render(request, "automations/approval_queue.html", {
        "rows": rows, "steps": steps, "standing_in": delegations, "freezes": _freezes_for(user),
        "bulk_groups": bulk_groups(rows), "max_bulk": policy.MAX_BULK,
        "page": page, "last_shown": page.first + len(rows) - 1,
        "next_cursor": cursor_of(queue[-1]) if page.more and queue else None,
    })


def bulk_groups(rows: list[dict]) -> list[dict]:
    """Rows that may be approved together (policy.bulk_key), in groups of two or more, oldest first."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["bulk_key"] is not None:
            groups.setdefault(row["bulk_key"], []).append(row)
    return [{"key": key[:12], "rows": members, "first": members[0]["item"]}
            for key, members in groups.items() if len(members) >= 2]


@login_required
@require_POST
def approve_bulk(request):
    """Approve the selected identical low-risk requests, each on its own (services.requests_approve_bulk).

    Selected ids the user may not see are reported as not found, exactly like a 404 would be."""
    # Ids only, bounded: a 30-digit "id" must be a plain "not found", not a database overflow.
    wanted = [int(value) for value in request.POST.getlist("requests")
              if value.isascii() and value.isdigit() and len(value) <= 18][:policy.MAX_BULK + 1]
    comment = request.POST.get("comment", "")[:1000]
    found = {item.pk: item for item in selectors.requests_visible_to(request.user).filter(pk__in=wanted)}
    for pk in wanted:
        if pk not in found:
            messages.error(request, f"#{pk}: not found.")
    items = [found[pk] for pk in dict.fromkeys(wanted) if pk in found]
    fingerprints = {item.pk: request.POST.get(f"fingerprint_{item.pk}", "") for item in items}
    try:
        outcomes = services.requests_approve_bulk(requests=items, actor=request.user, comment=comment,
                                                  expected_fingerprints=fingerprints,
                                                  client=ClientInfo.from_request(request))
    except DomainError as error:
        messages.error(request, f"Nothing was approved: {error.detail}")
        return redirect("automations:approval_queue")
    for outcome in outcomes:
        if not outcome.ok:
            messages.error(request, f"#{outcome.request_id} not approved: {outcome.detail}")
        elif outcome.status == AutomationRequest.Status.APPROVED:
            messages.success(request, f"#{outcome.request_id} approved.")
        else:  # recorded, but more approvals are needed or a change freeze holds it: say which
            messages.success(request, f"#{outcome.request_id}: "
                                      f"{approved_message(AutomationRequest.objects.get(pk=outcome.request_id))}")
    return redirect("automations:approval_queue")


def _freezes_for(user):
    """Active freezes that concern the user: global ones and their teams'."""
    now = timezone.now()
    teams = selectors.teams_of(user).values("pk")
    return FreezeWindow.objects.filter(enabled=True, starts_at__lte=now, ends_at__gt=now).filter(
        Q(team__isnull=True) | Q(team__in=teams)).select_related("team")


class StepDecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("Approve", "Approve"), ("Reject", "Reject"), ("Resume", "Resume")])
    comment = forms.CharField(required=False, max_length=1000)


@login_required
@require_POST
def step_decide(request, pk: int):
    """Answer an aws:approve step; only the request's approvers see it (404 otherwise)."""
    visible = selectors.requests_visible_to(request.user)
    entry = get_object_or_404(StepApproval.objects.select_related("execution__request")
                              .filter(execution__request__in=visible), pk=pk)
    form = StepDecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose Approve, Reject or Resume; keep the comment under 1,000 characters.")
    else:
        try:
            policies.step_decide(step_approval=entry, actor=request.user, decision=form.cleaned_data["decision"],
                                 comment=form.cleaned_data["comment"], client=ClientInfo.from_request(request))
            messages.success(request, f"Sent “{form.cleaned_data['decision']}” for step {entry.step_name} to AWS.")
        except DomainError as error:
            messages.error(request, error.detail)
    if request.POST.get("next") == "request":
        return redirect(entry.execution.request)
    return redirect("automations:approval_queue")


#
# Delegations (out of office)
#

class DelegationForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.none())
    delegate = forms.CharField(max_length=150, help_text="Username of a member of the team.")
    ends_at = forms.DateTimeField(help_text="Until when (UTC), e.g. 2026-12-24 18:00.",
                                  widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    reason = forms.CharField(max_length=500, required=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = Team.objects.filter(pk__in=[
            team.pk for team in selectors.teams_of(user) if policy.can_delegate(user, team)])


@login_required
def delegations(request):
    user = request.user
    form = DelegationForm(request.POST or None, user=user)
    if request.method == "POST" and form.is_valid():
        team = form.cleaned_data["team"]
        delegate = get_user_model().objects.filter(username=form.cleaned_data["delegate"]).first()
        ends_at = form.cleaned_data["ends_at"]
        if timezone.is_naive(ends_at):
            ends_at = timezone.make_aware(ends_at, dt.UTC)
        if delegate is None:
            form.add_error("delegate", "No such user.")
        else:
            try:
                policies.delegation_create(actor=user, team=team, delegate=delegate, ends_at=ends_at,
                                           reason=form.cleaned_data["reason"], client=ClientInfo.from_request(request))
                messages.success(request, f"{delegate.get_username()} approves for you in {team} until {ends_at:%Y-%m-%d %H:%M} UTC.")
                return redirect("automations:delegations")
            except DomainError as error:
                for field, problems in error.errors.items():
                    form.add_error(field if field in form.fields else None, problems)
                if not error.errors:
                    form.add_error(None, error.detail)
    now = timezone.now()
    return render(request, "automations/delegations.html", {
        "form": form,
        "given": ApprovalDelegation.objects.filter(delegator=user).select_related("delegate", "team")[:50],
        "received": ApprovalDelegation.objects.filter(delegate=user).select_related("delegator", "team")[:50],
        "now": now,
    })


@login_required
@require_POST
def delegation_revoke(request, pk: int):
    delegation = get_object_or_404(ApprovalDelegation, pk=pk, delegator=request.user)
    policies.delegation_revoke(actor=request.user, delegation=delegation, client=ClientInfo.from_request(request))
    messages.success(request, "Delegation revoked.")
    return redirect("automations:delegations")


def approved_message(result: AutomationRequest) -> str:
    """What the approver is told after approving: approved, waiting for more, or held by a freeze or
    a CLOSED change calendar (asked of AWS now, as the page beside it does)."""
    overrides = policy.emergency_override_count(result)
    calendar = selectors.change_calendar_state(result) if policy.request_calendars(result) else None
    closed = calendar if calendar and calendar["state"] != "OPEN" else None
    names = ", ".join(closed["calendars"]) if closed else ""
    state = "is CLOSED" if closed and closed["state"] == "CLOSED" else "could not be read"
    opens = (f" ({closed['next_transition']:%Y-%m-%d %H:%M} UTC)" if closed and closed.get("next_transition") else "")
    if result.status == AutomationRequest.Status.APPROVED:
        if result.run_at and result.run_at > timezone.now():
            return f"Approved; the run starts at {result.run_at:%Y-%m-%d %H:%M} UTC."
        if closed and overrides < policy.FREEZE_OVERRIDE_APPROVERS:
            return f"Approved. The change calendar {names} {state}, so the run waits until it opens{opens}."
        if closed:
            return f"Approved with two emergency overrides: the run starts although the change calendar {names} {state}."
        return "Approved; the run will start shortly."
    enough = len(result.approvals.all()) >= policy.approvals_required(result)
    if enough and policy.freeze_at(result.team):
        return ("Approval recorded. A change freeze is on: it takes effect when the freeze ends, "
                "or with emergency overrides from two approvers.")
    if enough and closed and overrides:
        return (f"Approval and emergency override recorded. The change calendar {names} {state}: the request "
                f"needs a second approver's emergency override to run now; otherwise it is approved when the "
                f"calendar opens{opens}.")
    return "Approval recorded; more approvals are needed."
