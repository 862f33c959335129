"""The change-control reads of AWS: change calendar state and execution previews.

GetCalendarState for a change calendar's state at a time; StartExecutionPreview, then
GetExecutionPreview until it ends, for what a run would touch.

Both run on the shared read-only session of the account's dispatch role, paced like every call
(automations.aws.pacing: the preview calls are 1 call/s per account and region). No models: the
services hand in names, bodies and times and get plain dicts back.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from automations.aws.gateway import AwsError, TransientAwsError, _call, read_client

PREVIEW_DONE = ("Success", "Failed")


def calendar_state_body(*, calendar_names: list[str], at: dt.datetime) -> dict:
    """The one builder of the GetCalendarState body: the calendars (names or ARNs) and the run's time.
    https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetCalendarState.html"""
    return {"CalendarNames": list(calendar_names),
            "AtTime": at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


@dataclass(frozen=True)
class CalendarState:
    """What AWS said: OPEN only if every calendar is open; when that changes next (None: not within
    the time AWS looks ahead)."""

    names: tuple[str, ...]
    state: str
    at: str
    next_transition: dt.datetime | None

    @property
    def closed(self) -> bool:
        return self.state == "CLOSED"

    def as_dict(self) -> dict:
        return {"calendars": list(self.names), "state": self.state, "at": self.at,
                "next_transition": self.next_transition.isoformat() if self.next_transition else None}


def _iso_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def calendar_state(*, region: str, role_arn: str, calendar_names: list[str], at: dt.datetime,
                   ssm_client=None) -> CalendarState:
    """GetCalendarState of these calendars at `at`; raises AwsError (InvalidDocument for an unknown
    calendar, InvalidDocumentType for a document that is not a ChangeCalendar)."""
    ssm = ssm_client or read_client("ssm", region=region, role_arn=role_arn)
    answer = _call(ssm.get_calendar_state, **calendar_state_body(calendar_names=calendar_names, at=at))
    return CalendarState(names=tuple(calendar_names), state=str(answer.get("State", "")), at=str(answer.get("AtTime", "")),
                         next_transition=_iso_time(answer.get("NextTransitionTime")))


def execution_preview_body(start_body: dict) -> dict:
    """The StartExecutionPreview body for a StartAutomationExecution body: the same document,
    version, parameters and targets, so the preview is of exactly what would be started.
    https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_StartExecutionPreview.html"""
    inputs = {key: start_body[key] for key in ("Parameters", "TargetParameterName", "Targets", "TargetMaps",
                                               "TargetLocations", "TargetLocationsURL") if start_body.get(key)}
    return {"DocumentName": start_body["DocumentName"], "DocumentVersion": start_body["DocumentVersion"],
            "ExecutionInputs": {"Automation": inputs}}


def execution_preview(*, region: str, role_arn: str, start_body: dict, wait_seconds: float,
                      poll_seconds: float = 0.5, ssm_client=None) -> dict:
    """Start a preview and poll it until Success or Failed; GetExecutionPreview's answer.

    Raises TransientAwsError("PreviewTimeout") when it has not ended within `wait_seconds`.
    """
    ssm = ssm_client or read_client("ssm", region=region, role_arn=role_arn)
    started = _call(ssm.start_execution_preview, **execution_preview_body(start_body))
    deadline = time.monotonic() + wait_seconds
    while True:
        answer = _call(ssm.get_execution_preview, ExecutionPreviewId=started["ExecutionPreviewId"])
        if answer.get("Status") in PREVIEW_DONE:
            return answer
        if time.monotonic() >= deadline:
            raise TransientAwsError("PreviewTimeout", f"The execution preview was still {answer.get('Status')} "
                                    f"after {wait_seconds:g} s.", operation="GetExecutionPreview")
        time.sleep(poll_seconds)


def preview_figures(answer: dict) -> dict:
    """The figures an approver reads and the fingerprint binds, in a stable shape (counts default to 0)."""
    automation = (answer.get("ExecutionPreview") or {}).get("Automation") or {}
    steps = automation.get("StepPreviews") or {}
    return {
        "steps": {kind: int(steps.get(kind, 0)) for kind in ("Mutating", "NonMutating", "Undetermined")},
        "regions": sorted(automation.get("Regions") or []),
        "total_accounts": int(automation.get("TotalAccounts") or 0),
        "targets": sorted(({"type": str(t.get("TargetType", "")), "count": int(t.get("Count", 0))}
                           for t in automation.get("TargetPreviews") or []), key=lambda t: t["type"]),
    }


__all__ = ["AwsError", "CalendarState", "calendar_state", "calendar_state_body", "execution_preview",
           "execution_preview_body", "preview_figures"]
