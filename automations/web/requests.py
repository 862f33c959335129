"""Server-rendered pages. Views fetch through selectors (invisible = 404) and write through services."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from automations import policy, selectors, services
from automations.web import approvals as views_approvals
from automations.audit import ClientInfo
from automations.errors import DomainError
from automations.figures.progress import run_progress
from automations.web.catalog import request_url
from automations.web.paging import newest_first_page
from automations.web.forms import DecisionForm
from automations.models import AutomationRequest


@login_required
def home(request):
    """Approvers land on their queue (work waiting for them), auditors on the audit log (what they
    come for: an auditor who also approves still has work waiting first); everyone else on the runbooks."""
    from automations.web.context_processors import navigation

    shown = navigation(request)
    if shown.get("nav_is_approver"):
        return redirect("automations:approval_queue")
    if shown.get("nav_is_auditor"):
        return redirect("automations:audit_list")
    return redirect("automations:catalog")


# What a row of request_list.html shows, and nothing more: a request row carries its parameters,
# targets, execution preview and locations as JSON, which cost more to load than the page to draw.
LIST_RELATED = ("team", "requester", "runbook", "runbook_version")
LIST_FIELDS = ("id", "created_at", "status", "resources", "resource_names", *LIST_RELATED, "team__name",
               "team__display_name", "requester__username", "runbook__name", "runbook_version__version")


@login_required
def request_list(request):
    scope = request.GET.get("scope", "mine")
    visible = selectors.requests_of(request.user) if scope == "mine" else selectors.requests_visible_to(request.user)
    status = request.GET.get("status", "")
    if status in AutomationRequest.Status.values:
        visible = visible.filter(status=status)
    page = newest_first_page(visible.select_related(None).select_related(*LIST_RELATED).only(*LIST_FIELDS),
                             before=request.GET.get("before"), after=request.GET.get("after"))
    return render(request, "automations/request_list.html", {
        "page": page, "scope": scope, "status": status, "statuses": AutomationRequest.Status.choices,
    })


def _detail_context(request, automation_request):
    user = request.user
    # Policy's answer for this user and request, asked once per page: can_approve, can_reject and the
    # decision section all read it (asked one by one it was ~17 queries of the same facts).
    decision = (policy.approval_decision(user, automation_request)
                if automation_request.status == AutomationRequest.Status.SUBMITTED else None)
    return {
        "item": automation_request,
        "execution": getattr(automation_request, "execution", None) if _has_execution(automation_request) else None,
        "approvals": automation_request.approvals.select_related("approver"),
        "can_approve": decision is not None and decision.seat is not None,  # policy.can_approve
        "can_reject": decision is not None and bool(decision.seats),  # policy.can_reject
        "can_withdraw": policy.can_withdraw(user, automation_request),
        "can_amend": policy.can_amend(user, automation_request),
        "comments": automation_request.comments.select_related("author"),
        "can_cancel": policy.can_cancel(user, automation_request),
        "required": policy.approvals_required(automation_request),
        "timeline": selectors.request_timeline(automation_request),
        "progress": run_progress(automation_request),
        "decision_form": DecisionForm(),
        "locations": selectors.location_matrix(automation_request, **selectors.location_query(request.GET)),
        "execution_role_name": settings.DELEGATE_EXECUTION_ROLE_NAME,
        # A location's page is this plus its child's execution id: one reverse, not one per cell.
        "location_base": reverse("automations:request_location", args=[automation_request.pk, _ANY_ID])[:-len(_ANY_ID) - 1],
        **views_approvals.decision_context(user, automation_request, decision=decision),
    }


_ANY_ID = "00000000-0000-0000-0000-000000000000"


def _has_execution(automation_request) -> bool:
    try:
        automation_request.execution
        return True
    except AutomationRequest.execution.RelatedObjectDoesNotExist:
        return False


@login_required
def request_detail(request, pk: int):
    automation_request = get_object_or_404(selectors.requests_visible_to(request.user), pk=pk)
    return render(request, "automations/request_detail.html",
                  {**_detail_context(request, automation_request), "live_key": live_key(automation_request)})


def live_key(automation_request) -> str:
    """What the live part shows, in a few hex digits: status, the newest timeline event, AWS status and steps."""
    import hashlib

    execution = automation_request.execution if _has_execution(automation_request) else None
    last_event = automation_request.audit_events.order_by("-sequence").values_list("sequence", flat=True).first()
    shown = [automation_request.status, automation_request.status_reason, last_event]
    if automation_request.location_targets:
        shown += list(automation_request.location_executions.values_list("execution_id", "aws_status"))
    if execution is not None:
        shown += [execution.aws_status, execution.current_step, execution.failure_message,
                  [(step.get("name"), step.get("status")) for step in execution.steps or []]]
    return hashlib.sha256(repr(shown).encode()).hexdigest()[:16]


@login_required
@require_GET
def request_location(request, pk: int, execution_id):
    """One location of a multi-account run: its child execution's steps, read from AWS now."""
    automation_request = get_object_or_404(selectors.requests_visible_to(request.user), pk=pk)
    child = selectors.location_child(automation_request, str(execution_id))
    if child is None:
        raise Http404("No such location in this request.")
    steps, problem = selectors.location_child_steps(automation_request, child)
    return render(request, "automations/request_location.html",
                  {"item": automation_request, "child": child, "steps": steps, "problem": problem})


@login_required
@require_GET
def request_status_partial(request, pk: int):
    """The live part of the request page; htmx polls it until the request is final.

    The poll says which state it shows (`shown`); nothing changed answers 204, which htmx leaves
    alone, so an approver's half-typed comment survives and the inventory is not re-read.
    """
    automation_request = get_object_or_404(selectors.requests_visible_to(request.user), pk=pk)
    key = live_key(automation_request)
    if request.GET.get("shown") == key:
        return HttpResponse(status=204)
    return render(request, "partials/request_status.html",
                  {**_detail_context(request, automation_request), "live_key": key})


def _decide(request, pk: int, action):
    automation_request = get_object_or_404(selectors.requests_visible_to(request.user), pk=pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The comment is too long.")
        return redirect(automation_request)
    try:
        message = action(automation_request, form.cleaned_data["comment"], ClientInfo.from_request(request))
        messages.success(request, message)
    except DomainError as error:
        messages.error(request, error.detail)
    return redirect(automation_request)


@login_required
@require_POST
def request_approve(request, pk: int):
    def act(item, comment, client):
        result = services.request_approve(request=item, actor=request.user, comment=comment, client=client,
                                          emergency=request.POST.get("emergency") == "on")
        return views_approvals.approved_message(result)
    return _decide(request, pk, act)


@login_required
@require_POST
def request_reject(request, pk: int):
    def act(item, comment, client):
        services.request_reject(request=item, actor=request.user, comment=comment, client=client)
        return "Rejected."
    return _decide(request, pk, act)


@login_required
@require_POST
def request_send_back(request, pk: int):
    def act(item, comment, client):
        services.request_send_back(request=item, actor=request.user, comment=comment, client=client)
        return f"Sent back to {item.requester.get_username()} for changes."
    return _decide(request, pk, act)


@login_required
@require_POST
def request_comment(request, pk: int):
    """Add to the request's thread (anyone who may see the request)."""
    item = get_object_or_404(selectors.requests_visible_to(request.user), pk=pk)
    try:
        services.request_comment(request=item, actor=request.user, body=request.POST.get("body", ""),
                                 client=ClientInfo.from_request(request))
        messages.success(request, "Comment added.")
    except DomainError as error:
        messages.error(request, error.detail)
    return redirect(f"{item.get_absolute_url()}#thread")


@login_required
def request_amend(request, pk: int):
    """The requester changes a request sent back to them: the request form, filled in from it."""
    item = get_object_or_404(selectors.requests_visible_to(request.user), pk=pk)
    team_policy = selectors.runbook_policies_for(request.user).filter(team=item.team, runbook=item.runbook).first()
    if not policy.can_amend(request.user, item) or team_policy is None:
        messages.error(request, "Only the requester can amend a request that was sent back for changes.")
        return redirect(item)
    return redirect(request_url(team_policy, amend=item.pk, version=item.runbook_version.version))


@login_required
@require_POST
def request_withdraw(request, pk: int):
    def act(item, comment, client):
        services.request_withdraw(request=item, actor=request.user, client=client)
        return "Withdrawn."
    return _decide(request, pk, act)


@login_required
@require_POST
def request_cancel(request, pk: int):
    def act(item, comment, client):
        result = services.request_cancel(request=item, actor=request.user, reason=comment, client=client)
        return "Cancelled." if result.status == "cancelled" else "Stop requested; AWS is cancelling the run."
    return _decide(request, pk, act)


@login_required
def request_rerun(request, pk: int):
    """A re-run is a new request pre-filled from the old one; it needs approval again."""
    original = get_object_or_404(selectors.requests_visible_to(request.user), pk=pk)
    team_policy = selectors.runbook_policies_for(request.user).filter(
        team=original.team, runbook=original.runbook).first()
    if team_policy is None:
        messages.error(request, "Your team may no longer request this runbook.")
        return redirect(original)
    return redirect(request_url(team_policy, rerun=original.pk, version=original.runbook_version.version))


#
# Operations
#

def robots(request):
    return HttpResponse("User-agent: *\nDisallow: /\n", content_type="text/plain")
