"""The auditor pages: search, one event, a request's timeline, a resource's history. Read-only.

Auditors (and superusers) see the whole log; team leads see their teams' events (the audit
selector scopes every query). Everything user-supplied is rendered through autoescaping only.
"""
from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from automations import audit, policy, selectors
from automations.audit import ClientInfo
from automations.audit.search import AuditEventFilter, keyset_page, with_resource
from automations.models import AuditEvent

MAX_RESOURCE_ID = 256

# Where each action sits in a request's story (docs/audit.md lists the actions).
_SUBMITTED = {"request.submitted", "request.refused"}
_APPROVALS = {"request.approval_added", "request.approved", "request.auto_approved", "approval.refused",
              "rejection.refused"}
_OUTCOME = {"request.rejected", "request.withdrawn", "request.expired", "request.cancelled",
            "execution.succeeded", "execution.failed", "execution.cancelled", "execution.timed_out"}


def _phase(action: str) -> str:
    if action in _OUTCOME:
        return "Outcome"
    if action.startswith("dispatch."):
        return "Dispatch"
    if action.startswith(("execution.", "request.cancel")):
        return "Execution"
    if action in _APPROVALS:
        return "Approvals"
    if action in _SUBMITTED:
        return "Submitted"
    return "Access and other"


def _require_auditor_or_lead(request) -> None:
    """The audit pages are for auditors and team leads; anyone else is refused, and that is audited."""
    user = request.user
    if user.is_superuser or policy.is_auditor(user) or selectors.teams_led_by(user).exists():
        return
    with transaction.atomic():
        audit.record(action="authz.denied", actor=user, client=ClientInfo.from_request(request),
                     details={"status": 403, "method": request.method, "path": request.path[:500],
                              "route": request.resolver_match.view_name if request.resolver_match else ""})
    raise PermissionDenied


def _with_json(events):
    """Attach a readable JSON rendering of details (escaped in the template like any text), and
    each resource's label ("web-1 (i-…)") from the names its request stored at submit (one query)."""
    from automations.models import AutomationRequest

    request_ids = {event.request_id for event in events if event.request_id and event.resources}
    names: dict[str, str] = {}
    for stored in AutomationRequest.objects.filter(pk__in=request_ids).values_list("resource_names", flat=True):
        names.update(stored or {})
    for event in events:
        event.details_json = json.dumps(event.details, sort_keys=True, ensure_ascii=False)
        event.resource_rows = [(resource, f"{names[resource]} ({resource})" if names.get(resource) else resource)
                               for resource in event.resources or []]
    return events


def _query_without(request, *names) -> str:
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    # Blank fields are dropped: the export API refuses a blank filter (it would widen the search).
    for name in [key for key, values in query.lists() if not any(values)]:
        query.pop(name)
    return query.urlencode()


@login_required
@require_GET
def audit_list(request):
    """Search the log (actor, action, team, runbook, resource, account/region, request, time); keyset pages."""
    _require_auditor_or_lead(request)
    events = AuditEventFilter(request.GET, queryset=selectors.audit_events_visible_to(request.user))
    queryset = events.qs if events.is_valid() else AuditEvent.objects.none()
    page = keyset_page(queryset, before=request.GET.get("before"), after=request.GET.get("after"))
    _with_json(page.events)
    return render(request, "automations/audit_list.html", {
        "filter": events, "page": page, "query": _query_without(request, "before", "after"),
    })


@login_required
@require_GET
def audit_event(request, sequence: int):
    """One event with every field, its hashes and its CloudTrail join keys."""
    _require_auditor_or_lead(request)
    event = get_object_or_404(selectors.audit_events_visible_to(request.user), sequence=sequence)
    return render(request, "automations/audit_event.html", {
        "e": event, "details_json": json.dumps(event.details, sort_keys=True, indent=2, ensure_ascii=False),
    })


@login_required
@require_GET
def audit_request_timeline(request, pk: int):
    """submitted → approvals → dispatch → steps → outcome, from the log and AWS's step record."""
    _require_auditor_or_lead(request)
    item = get_object_or_404(selectors.requests_visible_to(request.user), pk=pk)
    events = list(selectors.audit_events_visible_to(request.user).filter(request_id=pk).order_by("sequence"))
    _with_json(events)
    phases: list[dict] = []
    for event in events:
        name = _phase(event.action)
        if not phases or phases[-1]["name"] != name:
            phases.append({"name": name, "events": []})
        phases[-1]["events"].append(event)
    execution = getattr(item, "execution", None)  # the reverse one-to-one raises an AttributeError subclass
    return render(request, "automations/audit_request.html", {
        "item": item, "phases": phases, "execution": execution, "steps": execution.steps if execution else [],
    })


@login_required
@require_GET
def audit_resource_history(request, resource_id: str):
    """Everything ever asked, refused or run against one resource, newest first."""
    _require_auditor_or_lead(request)
    resource_id = resource_id[:MAX_RESOURCE_ID]
    visible = with_resource(selectors.audit_events_visible_to(request.user), resource_id)
    page = keyset_page(visible, before=request.GET.get("before"), after=request.GET.get("after"))
    _with_json(page.events)
    submitted = list(visible.filter(action="request.submitted").order_by("-sequence")
                     .values_list("request_id", flat=True)[:100])
    runs = {run.pk: run for run in selectors.requests_visible_to(request.user).filter(pk__in=submitted)}
    return render(request, "automations/audit_resource.html", {
        "resource_id": resource_id, "page": page, "query": _query_without(request, "before", "after"),
        "runs": [runs[pk] for pk in submitted if pk in runs],
    })
