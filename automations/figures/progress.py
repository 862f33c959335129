"""A run's progress as the request page and the API show it, from what AWS and the audit log say.

Each step's duration, the step running now, an estimated finish from this runbook's past
successful runs, and links to the execution in the AWS console and to CloudTrail's event
history for Delegate's sessions.

Everything comes from what the status sync stored (AWS's own step times) and the audit log (the
session names Delegate really used); nothing is guessed. With no past successful run there is
no estimate, and the page says so.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from automations import aws
from automations.figures.percentiles import duration_between, percentile
from automations.models import AutomationRequest, Execution

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
# Which audit actions name which session (docs/audit.md, "Joining an event to CloudTrail").
SESSION_PURPOSE = {"dispatch.started": "start", "request.cancel_requested": "stop"}


@dataclass(frozen=True)
class StepProgress:
    name: str
    action: str
    status: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    is_current: bool
    outputs: dict = field(default_factory=dict)
    failure_message: str = ""

    @property
    def duration(self) -> dt.timedelta | None:
        """How long the step took; None until AWS reports both its start and its end."""
        if self.started_at and self.ended_at:
            return max(self.ended_at - self.started_at, dt.timedelta(0))
        return None


@dataclass(frozen=True)
class Estimate:
    past_runs: int  # successful runs of this runbook by this team that it is drawn from
    median: dt.timedelta | None
    finish_at: dt.datetime | None  # started_at + median, while the run is still going

    @property
    def overdue(self) -> bool:
        return self.finish_at is not None and self.finish_at < timezone.now()


@dataclass(frozen=True)
class SessionLink:
    purpose: str  # start, stop, signal
    session_name: str
    source_identity: str
    url: str


@dataclass
class RunProgress:
    execution_id: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    current_step: str
    steps: list[StepProgress] = field(default_factory=list)
    estimate: Estimate | None = None
    console_url: str = ""
    sessions: list[SessionLink] = field(default_factory=list)
    # The endpoint Delegate talks to instead of AWS (the sandbox); the console does not know these runs.
    custom_endpoint: str = ""

    @property
    def duration(self) -> dt.timedelta | None:
        if self.started_at and self.ended_at:
            return max(self.ended_at - self.started_at, dt.timedelta(0))
        return None


def _console_host(region: str) -> str:
    if region.startswith("cn-"):
        return "console.amazonaws.cn"
    if region.startswith("us-gov-"):
        return "console.amazonaws-us-gov.com"
    return f"{region}.console.aws.amazon.com"


def execution_console_url(region: str, execution_id: str) -> str:
    """The Automation execution's page in the AWS console of its region (and partition)."""
    if not _REGION.match(region or "") or not re.fullmatch(r"[0-9a-fA-F-]{36}", execution_id or ""):
        return ""
    return (f"https://{_console_host(region)}/systems-manager/automation/execution/{execution_id}"
            f"?region={region}")


def cloudtrail_lookup_url(region: str, session_name: str) -> str:
    """CloudTrail event history in the region, filtered on User name = the STS session name (an
    assumed-role session's calls are listed under its session name)."""
    if not _REGION.match(region or "") or not session_name:
        return ""
    return (f"https://{_console_host(region)}/cloudtrailv2/home?region={region}"
            f"#/events?Username={quote(session_name, safe='')}")


def _when(value) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    return parse_datetime(value) if isinstance(value, str) and value else None


def _steps(execution: Execution, *, running: bool) -> list[StepProgress]:
    return [StepProgress(name=str(step.get("name", "")), action=str(step.get("action", "")),
                         status=str(step.get("status", "")), started_at=_when(step.get("started_at")),
                         ended_at=_when(step.get("ended_at")),
                         is_current=running and bool(execution.current_step)
                         and step.get("name") == execution.current_step,
                         outputs=step.get("outputs") if isinstance(step.get("outputs"), dict) else {},
                         failure_message=str(step.get("failure_message") or ""))
            for step in execution.steps or [] if isinstance(step, dict)]


def estimate_for(request: AutomationRequest, execution: Execution | None) -> Estimate:
    """The median duration of this team's past successful runs of this runbook (AWS's start and
    end times), and when this run would finish if it took that long."""
    past = duration_between(
        Execution.objects.filter(request__runbook_id=request.runbook_id, request__team_id=request.team_id,
                                 request__status=AutomationRequest.Status.SUCCEEDED)
        .exclude(request_id=request.pk), start="started_at", end="ended_at")
    count = past.count()
    median = percentile(past, 0.5, count=count)
    finish_at = None
    if median is not None and execution is not None and execution.started_at and not request.is_terminal:
        finish_at = execution.started_at + median
    return Estimate(past_runs=count, median=median, finish_at=finish_at)


def run_progress(request: AutomationRequest) -> RunProgress | None:
    """The progress of the request's execution; None before it reached AWS."""
    try:
        execution = request.execution
    except Execution.DoesNotExist:
        return None
    running = request.status == AutomationRequest.Status.RUNNING
    sessions: dict[str, SessionLink] = {}
    for action, name, identity in (request.audit_events.exclude(role_session_name="").order_by("sequence")
                                   .values_list("action", "role_session_name", "source_identity")):
        sessions.setdefault(name, SessionLink(purpose=SESSION_PURPOSE.get(action, "signal"), session_name=name,
                                              source_identity=identity,
                                              url=cloudtrail_lookup_url(request.region, name)))
    return RunProgress(
        execution_id=execution.execution_id, started_at=execution.started_at, ended_at=execution.ended_at,
        current_step=execution.current_step if running else "", steps=_steps(execution, running=running),
        estimate=estimate_for(request, execution), console_url=execution_console_url(request.region,
                                                                                      execution.execution_id),
        sessions=list(sessions.values()), custom_endpoint=aws.custom_endpoint("ssm"),
    )
