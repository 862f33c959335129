"""What the approval queue asks of policy: bulk-approval groups and escalation reminders.

Which requests may be approved together, and when a waiting request escalates (shown beforehand,
as a reminder).

"Identical" for bulk approval, on purpose narrow: two requests are identical when an approval of
one would approve exactly the same change as the other, apart from which resources it touches.
Their bulk_key() covers everything else the fingerprint binds:

- the team (so the same policy row, the same approver pool and approvals required),
- the runbook, its version and the SSM content hash (the exact document),
- the account, region and the identity it runs as,
- every parameter value that is not a resource the request acts on (a resource id stored in
  `resources` at submit is a target; any other value, a command, a flag, a count, must be equal),
- the rate-control settings (target parameter, concurrency, error threshold), the alarm and the
  run-at time.

Requester, justification, ticket reference and the targets themselves may differ: the queue shows
each request's own on its row. Only a policy an admin rated low risk offers it at all.
"""
from __future__ import annotations

import datetime as dt
import hashlib

from django.utils import timezone

from automations.canonical import canonical_json
from automations.models import AutomationRequest, TeamRunbook
from automations.policy.rules import policy_for

# A reminder is "due soon" in its last quarter, or in its last hour, whichever is longer.
REMINDER_SHARE = 0.25
REMINDER_AT_LEAST = dt.timedelta(hours=1)
MAX_BULK = 50


def bulk_key(request: AutomationRequest) -> str | None:
    """A digest equal for identical requests (module docstring); None when bulk approval is not offered."""
    team_policy = policy_for(request)
    if (team_policy is None or team_policy.risk != TeamRunbook.Risk.LOW
            or request.status != AutomationRequest.Status.SUBMITTED):
        return None
    targets = set(request.resources)
    parameters = {name: values for name, values in sorted(request.parameters.items())
                  if not (isinstance(values, list) and values and all(value in targets for value in values))}
    return hashlib.sha256(canonical_json({
        "team": request.team_id,
        "runbook": request.runbook_id,
        "version": request.runbook_version.version,
        "document_hash": request.document_hash,
        "account": request.account_id,
        "region": request.region,
        "run_as": request.run_as,
        "parameters": parameters,
        "target_parameter_name": request.target_parameter_name,
        "max_concurrency": request.max_concurrency,
        "max_errors": request.max_errors,
        "alarm": request.alarm_name,
        "run_at": request.run_at.isoformat() if request.run_at else "",
    })).hexdigest()


def escalation_due(request: AutomationRequest, *, now: dt.datetime | None = None) -> dict | None:
    """When a waiting request escalates and to whom, for the queue's reminder; None if it never will
    (no escalation rule, already escalated, or no longer waiting)."""
    team_policy = policy_for(request)
    if (team_policy is None or not team_policy.escalate_after_hours or not team_policy.escalation_group_id
            or request.status != AutomationRequest.Status.SUBMITTED or hasattr(request, "escalation")):
        return None
    now = now or timezone.now()
    window = dt.timedelta(hours=team_policy.escalate_after_hours)
    at = request.created_at + window
    return {"at": at, "group": team_policy.escalation_group.name, "overdue": at <= now,
            "soon": at - now <= max(window * REMINDER_SHARE, REMINDER_AT_LEAST)}
