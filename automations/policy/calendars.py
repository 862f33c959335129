"""The change-calendar gate: which SSM Change Calendars gate a request, and whether they hold it.

An admin names ChangeCalendar documents on a team (every runbook it runs) and on a runbook (every
team that runs it); a request is gated by both lists. Dispatch asks AWS (GetCalendarState, at the
run's time) and hands the answer in here: CLOSED holds the request until the next OPEN time AWS
reported, unless two approvers gave the same emergency override freeze windows take
(`FREEZE_OVERRIDE_APPROVERS`, FreezeOverride rows). A calendar AWS could not evaluate (unknown,
not a ChangeCalendar, throttled) holds it too: the gate fails closed.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from automations.models import AutomationRequest, Runbook, Team

CALENDAR_HOLD = "change calendar"


def calendars_for(team: Team, runbook: Runbook) -> list[str]:
    """The calendar names or ARNs gating runs of `runbook` by `team`, team's first, each once."""
    names = [str(n).strip() for n in [*(team.change_calendars or []), *(runbook.change_calendars or [])]]
    return list(dict.fromkeys(n for n in names if n))


def request_calendars(request: AutomationRequest) -> list[str]:
    return calendars_for(request.team, request.runbook)


def run_time(request: AutomationRequest, *, at: dt.datetime) -> dt.datetime:
    """The time the calendar is asked about: the run-at time if later, else now."""
    return max(at, request.run_at) if request.run_at else at


def calendar_hold(calendar: dict, *, at: dt.datetime, overrides: int,
                  needed: int) -> tuple[str, dt.datetime, dict] | None:
    """(reason, until, details) when the calendar answer holds the request; None when it may go.

    `calendar`: {"calendars", "state" (OPEN, CLOSED or UNKNOWN), "next_transition" (datetime or
    None), "error"}, as services.policies.change_calendar_state reads it from AWS.
    """
    if calendar is None or calendar.get("state") == "OPEN" or overrides >= needed:
        return None
    names = ", ".join(calendar.get("calendars") or [])
    recheck = at + dt.timedelta(seconds=settings.DELEGATE_CALENDAR_RECHECK_SECONDS)
    opens = calendar.get("next_transition") if calendar.get("state") == "CLOSED" else None
    until = opens or recheck
    if calendar.get("state") == "CLOSED":
        when = (f"until {opens.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M} UTC" if opens
                else "with no OPEN time within the year AWS looks ahead")
        message = f"held by change calendar {names} {when}"
    else:
        message = f"held: change calendar {names} could not be read ({calendar.get('error') or 'no answer'}); asking again"
    return CALENDAR_HOLD, until, {"calendars": calendar.get("calendars") or [], "state": calendar.get("state"),
                                  "opens_at": opens, "error": calendar.get("error") or "", "message": message}
