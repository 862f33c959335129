"""Server-rendered pages. Views fetch through selectors (invisible = 404) and write through services."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from automations import health, policy, selectors, services, views_approvals
from automations.audit import ClientInfo
from automations.errors import DomainError
from automations.forms import AutomationRequestForm, DecisionForm
from automations.models import AutomationRequest, RunbookVersion, TeamRunbook


@login_required
def home(request):
    return redirect("automations:catalog")


@login_required
def catalog(request):
    """The runbooks my teams may request: tabs by owner, text search."""
    policies = selectors.runbook_policies_for(request.user)
    tab = request.GET.get("tab", "all")
    if tab in ("self", "private", "amazon"):
        policies = policies.filter(runbook__owner_kind=tab)
    query = request.GET.get("q", "").strip()[:100]
    if query:
        policies = policies.filter(runbook__name__icontains=query) | policies.filter(runbook__description__icontains=query)
    return render(request, "automations/catalog.html", {"policies": policies, "tab": tab, "query": query})


def _policy_for(user, pk: int) -> TeamRunbook:
    return get_object_or_404(selectors.runbook_policies_for(user), pk=pk)


def _version_for(team_policy: TeamRunbook, choice: str) -> RunbookVersion:
    runbook = team_policy.runbook
    if team_policy.version_choice == TeamRunbook.VersionChoice.PINNED:
        number = team_policy.pinned_version
    else:
        number = {"default": runbook.default_version, "latest": runbook.latest_version}.get(choice, choice)
    return get_object_or_404(RunbookVersion, runbook=runbook, version=number)


@login_required
def request_new(request, policy_pk: int):
    """The generated form; POST with `preview` shows exactly what will be sent, then `submit` sends it."""
    team_policy = _policy_for(request.user, policy_pk)
    choice = (request.POST.get("version") or request.GET.get("version") or "default").strip()[:8]
    runbook_version = _version_for(team_policy, choice)
    initial = {"version": choice}
    rerun_of = None
    if request.GET.get("rerun"):
        rerun_of = get_object_or_404(selectors.requests_visible_to(request.user), pk=request.GET["rerun"])
        initial.update({f"param_{name}": "\n".join(values) for name, values in rerun_of.parameters.items()})
        initial["justification"] = rerun_of.justification
    form = AutomationRequestForm(request.POST or None, runbook_version=runbook_version, initial=initial)
    preview = None
    if request.method == "POST" and form.is_valid():
        arguments = form.service_arguments()
        client = ClientInfo.from_request(request)
        if request.POST.get("rerun_of"):
            rerun_of = get_object_or_404(selectors.requests_visible_to(request.user), pk=request.POST["rerun_of"])
        try:
            if "submit" in request.POST:
                created = services.request_submit(actor=request.user, team=team_policy.team,
                                                  runbook_id=team_policy.runbook_id, rerun_of=rerun_of,
                                                  client=client, **arguments)
                messages.success(request, f"Request #{created.pk} submitted.")
                return redirect(created)
            preview = services.request_submit(actor=request.user, team=team_policy.team,
                                              runbook_id=team_policy.runbook_id, client=client, preview=True,
                                              **arguments)
        except DomainError as error:
            form.add_service_errors(error.errors)
            if not error.errors or error.code != "invalid":
                form.add_error(None, error.detail)
    return render(request, "automations/request_new.html", {
        "policy": team_policy, "runbook": team_policy.runbook, "version": runbook_version, "form": form,
        "preview": preview, "rerun_of": rerun_of,
        "versions": team_policy.runbook.versions.order_by("-id"),
    })


@login_required
def request_list(request):
    visible = selectors.requests_visible_to(request.user)
    scope = request.GET.get("scope", "mine")
    if scope == "mine":
        visible = visible.filter(requester=request.user)
    status = request.GET.get("status", "")
    if status in AutomationRequest.Status.values:
        visible = visible.filter(status=status)
    page = Paginator(visible, 25).get_page(request.GET.get("page"))
    return render(request, "automations/request_list.html", {
        "page": page, "scope": scope, "status": status, "statuses": AutomationRequest.Status.choices,
    })


def _detail_context(request, automation_request):
    user = request.user
    return {
        "item": automation_request,
        "execution": getattr(automation_request, "execution", None) if _has_execution(automation_request) else None,
        "approvals": automation_request.approvals.select_related("approver"),
        "can_approve": policy.can_approve(user, automation_request),
        "can_reject": policy.can_reject(user, automation_request),
        "can_withdraw": policy.can_withdraw(user, automation_request),
        "can_cancel": policy.can_cancel(user, automation_request),
        "required": policy.approvals_required(automation_request),
        "timeline": automation_request.audit_events.order_by("sequence"),
        "decision_form": DecisionForm(),
        **views_approvals.decision_context(user, automation_request),
    }


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
    if execution is not None:
        shown += [execution.aws_status, execution.current_step, execution.failure_message,
                  [(step.get("name"), step.get("status")) for step in execution.steps or []]]
    return hashlib.sha256(repr(shown).encode()).hexdigest()[:16]


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
    return redirect(f"{team_policy_url(team_policy)}?rerun={original.pk}&version={original.runbook_version.version}")


def team_policy_url(team_policy) -> str:
    from django.urls import reverse

    return reverse("automations:request_new", args=[team_policy.pk])


#
# Operations
#

# /healthz and /readyz live in automations.health (re-exported here for portal/urls.py).
healthz = health.healthz
readyz = health.readyz


def robots(request):
    return HttpResponse("User-agent: *\nDisallow: /\n", content_type="text/plain")
