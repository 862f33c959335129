"""The execution preview bound to the approval: what AWS says a run would touch.

At submit Delegate asks AWS for an execution preview of exactly the Start body it will send
(StartExecutionPreview, then GetExecutionPreview until Success or Failed) and keeps the figures on
the request: steps by impact (mutating / non-mutating / undetermined), accounts, regions and
targets per type. The approver reads them; the fingerprint binds them (runbooks.fingerprint_for).
When AWS gives no preview (refused, failed, too slow) the request says so and binds no figures:
nothing is invented.

Right before Start the worker asks again (services.dispatch). Figures that differ mean what AWS
would touch changed since the approval (a child runbook changed, targets resolved differently):
nothing starts, the request fails with reason code `preview_changed` and an audit event names
both sets of figures, as the content check does for a replaced document (services/content.py).
"""
from __future__ import annotations

import structlog
from django.conf import settings
from django.db import transaction

from automations import audit, aws
from automations.aws import change_control
from automations.models import AutomationRequest
from automations.runbooks.start_body import start_body_for

log = structlog.get_logger(__name__)
PREVIEW_CHANGED = "preview_changed"


def ask(request: AutomationRequest) -> dict:
    """AWS's preview of this request's Start body: {"status": "Success", "figures"} or
    {"status": "Failed" | "Unavailable", "message"}. Raises nothing; called outside transactions."""
    try:
        answer = change_control.execution_preview(region=request.region, role_arn=request.account.dispatch_role_arn,
                                                  start_body=start_body_for(request),
                                                  wait_seconds=settings.DELEGATE_EXECUTION_PREVIEW_WAIT_SECONDS)
    except aws.AwsError as error:
        log.warning("preview.unavailable", automation_request=request.pk, error=error.code)
        return {"status": "Unavailable", "message": f"{error.code}: {error.message}".strip(": "),
                "transient": isinstance(error, aws.TransientAwsError)}
    if answer.get("Status") != "Success":
        return {"status": "Failed", "message": str(answer.get("StatusMessage") or "AWS reported the preview Failed.")}
    return {"status": "Success", "figures": change_control.preview_figures(answer)}


def at_submit(request: AutomationRequest) -> dict:
    """The preview kept on a new request (no `transient` flag: the page says what happened)."""
    found = ask(request)
    found.pop("transient", None)
    return found


def bound_figures(request: AutomationRequest) -> dict | None:
    """The figures the fingerprint binds, or None when AWS gave none at submit."""
    preview = request.execution_preview or {}
    return preview.get("figures") if preview.get("status") == "Success" else None


def describe(figures: dict | None) -> str:
    if not figures:
        return "no preview"
    steps = figures["steps"]
    targets = ", ".join(f"{t['type']}: {t['count']}" for t in figures["targets"]) or "no targets"
    return (f"{steps['Mutating']} mutating, {steps['NonMutating']} non-mutating, {steps['Undetermined']} undetermined "
            f"steps; {figures['total_accounts']} account(s); regions {', '.join(figures['regions']) or '-'}; {targets}")


def changed_reason(request: AutomationRequest, found: dict | None, message: str = "") -> str:
    now = describe(found) if found else f"AWS gave no preview ({message})"
    return (f"What AWS would touch changed after approval: the execution preview bound by the approval said "
            f"{describe(bound_figures(request))}; now it says {now}. Nothing was started; submit the request again "
            "so approvers see the new preview.")


def record_changed(request: AutomationRequest, *, found: dict | None, message: str = "") -> None:
    with transaction.atomic():
        audit.record(action="request.preview_changed", actor=None, request=request, details={
            "code": PREVIEW_CHANGED, "where": "dispatch", "bound": bound_figures(request), "found": found,
            **({"message": message} if message else {})})
    log.warning("preview.changed", automation_request=request.pk)
