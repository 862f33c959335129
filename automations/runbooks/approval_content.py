"""What the approver reads: the steps of the content a request bound, and how they differ.

In full: the steps of the exact content a request bound, a diff against the last content this
team ran of that runbook, and, if the catalog has since seen other content under the same
version, those steps too (such a request can no longer be approved).
"""
from __future__ import annotations

from automations.models import AutomationRequest, ContentRevision
from automations.runbooks.documents import content_diff, step_details

_RAN = ("running", "succeeded", "failed", "cancelled", "timed_out")


def bound_content(request: AutomationRequest) -> tuple[str, str] | None:
    """(content, format) of exactly what the request bound (by its SSM hash), if Delegate has it."""
    version = request.runbook_version
    if version.ssm_hash and version.ssm_hash == request.document_hash:
        return version.content, version.document_format
    revision = ContentRevision.objects.filter(runbook_version=version, ssm_hash=request.document_hash).first()
    if revision is not None:
        return revision.content, revision.document_format
    return None


def last_run(request: AutomationRequest) -> AutomationRequest | None:
    """The newest earlier request of this team for this runbook that reached AWS."""
    return (AutomationRequest.objects.filter(team_id=request.team_id, runbook_id=request.runbook_id, status__in=_RAN)
            .exclude(pk=request.pk).filter(created_at__lte=request.created_at)
            .select_related("runbook_version").order_by("-created_at", "-id").first()) if request.pk else None


def approval_view(request: AutomationRequest) -> dict:
    """Steps (name, action, service/API, inputs, code collapsed) of the bound content, the diff
    against the last content this team ran, and whether the catalog now holds other content."""
    bound = bound_content(request)
    view = {"steps": step_details(*bound) if bound else [], "content_known": bound is not None,
            "diff": "", "diff_against": None, "same_as_last_run": False,
            "changed_since_submit": False, "current_steps": []}
    previous = last_run(request)
    if bound and previous is not None:
        earlier = bound_content(previous)
        if earlier is not None:
            view["diff_against"] = previous
            view["diff"] = content_diff(earlier[0], bound[0])
            view["same_as_last_run"] = not view["diff"]
    version = request.runbook_version
    if version.ssm_hash and request.document_hash and version.ssm_hash != request.document_hash:
        view["changed_since_submit"] = True
        view["current_steps"] = step_details(version.content, version.document_format)
    return view
