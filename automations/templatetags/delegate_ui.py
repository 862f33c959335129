"""Small presentation helpers for the templates: words for audit actions, nothing that decides."""
from django import template

register = template.Library()

# The request page's timeline speaks to requesters; the audit pages show the raw action beside it.
ACTION_LABELS = {
    "request.submitted": "Submitted",
    "request.approval_added": "Approval added",
    "request.approval_held": "Approval held by a change freeze",
    "request.approved": "Approved",
    "request.auto_approved": "Approved automatically",
    "request.emergency_override": "Emergency override",
    "request.escalated": "Escalated",
    "request.rejected": "Rejected",
    "request.withdrawn": "Withdrawn",
    "request.expired": "Expired",
    "request.cancel_requested": "Cancellation requested",
    "request.cancelled": "Cancelled",
    "dispatch.claimed": "Picked up by a worker",
    "dispatch.deferred": "Waiting for AWS capacity",
    "dispatch.held": "Held",
    "dispatch.resumed": "Resumed",
    "dispatch.started": "Started in AWS",
    "dispatch.failed": "Could not start",
    "dispatch.refused": "Refused at dispatch",
    "execution.status_changed": "AWS status changed",
    "execution.succeeded": "Succeeded",
    "execution.failed": "Failed",
    "execution.cancelled": "Cancelled in AWS",
    "execution.timed_out": "Timed out",
    "step.waiting": "A step waits for a person",
    "step.resumed": "Paused step resumed",
    "step.approved": "Step approved",
}


@register.filter
def action_label(action: str) -> str:
    """'request.approval_added' -> 'Approval added'; unknown actions get a readable fallback."""
    if action in ACTION_LABELS:
        return ACTION_LABELS[action]
    return str(action).replace(".", " ").replace("_", " ").capitalize()
