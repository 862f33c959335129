"""The runbook detail page: one id shared with the API (/runbooks/<id>/ and /api/v1/runbooks/<id>/).

Parameters with their help, steps, versions, who may approve (per team that offers it to the
user), and this user's visible recent runs with their success rate. Reads only; no AWS calls.
"""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from automations import policy, selectors
from automations.models import AutomationRequest, Runbook
from automations.runbooks import markdown
from automations.web.approvals import policy_rules

RECENT = 10
FINISHED = (AutomationRequest.Status.SUCCEEDED, AutomationRequest.Status.FAILED,
            AutomationRequest.Status.CANCELLED, AutomationRequest.Status.TIMED_OUT,
            AutomationRequest.Status.DISPATCH_FAILED)


@login_required
def runbook_detail(request, pk: int):
    offered = list(selectors.runbook_policies_for(request.user).filter(runbook_id=pk))
    if not offered:
        raise Http404  # not offered to any of the user's teams: it does not exist for them
    runbook: Runbook = offered[0].runbook
    versions = list(runbook.versions.order_by("-id").only("id", "version", "description", "parameters", "steps",
                                                          "synced_at", "problems"))
    current = next((v for v in versions if v.version == runbook.default_version), versions[0] if versions else None)
    runs = selectors.requests_visible_to(request.user).filter(runbook=runbook)
    finished = list(runs.filter(status__in=FINISHED).values_list("status", flat=True)[:100])
    succeeded = sum(1 for status in finished if status == AutomationRequest.Status.SUCCEEDED)
    return render(request, "automations/runbook_detail.html", {
        "runbook": runbook,
        "version": current,
        "versions": versions,
        "description": markdown.render(current.description) if current else "",
        "parameters": [{"name": name, **spec} for name, spec in (current.parameters if current else {}).items()
                       if not spec.get("server_owned")],
        "offers": [{"policy": team_policy, "rules": policy_rules(team_policy, team_policy.team),
                    "approvers": sorted(user.get_username() for user in policy.pool(team_policy.team, team_policy))}
                   for team_policy in offered],
        "recent": list(runs.order_by("-created_at", "-id")[:RECENT]),
        "finished": len(finished),
        "success_rate": round(100 * succeeded / len(finished)) if finished else None,
    })
