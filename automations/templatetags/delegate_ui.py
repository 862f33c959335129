"""Small presentation helpers for the templates: words for audit actions, nothing that decides."""
import re

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
    "request.sent_back": "Sent back for changes",
    "request.amended": "Amended and resubmitted",
    "request.commented": "Commented",
    "dispatch.waiting_for_target": "Waiting for a target in use",
    "step.waiting": "A step waits for a person",
    "step.resumed": "Paused step resumed",
    "step.approved": "Step approved",
}


@register.filter
def duration(value) -> str:
    """A timedelta in words a person reads at a glance: '40 s', '3 min 5 s', '1 h 20 min'; '' for None."""
    if value is None:
        return ""
    seconds = max(0, round(value.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


@register.filter
def action_label(action: str) -> str:
    """'request.approval_added' -> 'Approval added'; unknown actions get a readable fallback."""
    if action in ACTION_LABELS:
        return ACTION_LABELS[action]
    return str(action).replace(".", " ").replace("_", " ").capitalize()



def label_for(resource_id: str, names: dict | None) -> str:
    """'web-1 (i-0abc…)' when a Name is known for the id, else the id."""
    name = (names or {}).get(resource_id, "")
    return f"{name} ({resource_id})" if name else str(resource_id)


@register.filter
def resource_label(resource_id: str, item) -> str:
    """One resource as 'web-1 (i-…)', from the names stored with the request `item` at submit."""
    return label_for(resource_id, getattr(item, "resource_names", None))


@register.filter
def resources_label(item, limit: int = 0) -> str:
    """All of a request's resources as 'web-1 (i-…), web-2 (i-…)' (the first `limit`, then '…')."""
    resources = list(getattr(item, "resources", None) or [])
    shown = resources[:int(limit)] if limit else resources
    text = ", ".join(label_for(resource, getattr(item, "resource_names", None)) for resource in shown)
    if limit and len(resources) > int(limit):
        text += f" … (+{len(resources) - int(limit)})"
    return text or "—"


@register.filter
def pattern_words(pattern) -> str:
    """An allowedPattern in plain words ("" when it cannot be said simply)."""
    from automations.runbooks import pattern_words as words

    return words.describe(pattern) or ""


_EPOCH = re.compile(r"^(\d{10})(\.\d+)?$|^(\d{13})$")  # seconds (2001–2286) or milliseconds since 1970


@register.filter
def output_values(values) -> str:
    """A step output's values as text; epoch numbers (as AWS APIs return times) become UTC times."""
    import datetime as dt

    from django.utils.html import format_html, format_html_join

    parts = []
    for value in values if isinstance(values, list) else [values]:
        text = str(value)
        match = _EPOCH.match(text)
        if match:
            seconds = int(match.group(1)) if match.group(1) else int(match.group(3)) / 1000
            when = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
            parts.append(format_html('<time datetime="{}" title="{}">{} UTC</time>', when.isoformat(), text,
                                     when.strftime("%Y-%m-%d %H:%M:%S")))
        else:
            parts.append(text)  # escaped by format_html_join below
    # format_html_join escapes plain text and keeps the <time> pieces format_html built.
    return format_html_join(", ", "{}", ((part,) for part in parts))
