"""Automation execution records: how they are created and how the API shows them (aws-api.md §3–§7).

A record is the `AutomationExecution` shape plus internal `_` keys the engine uses (the
document content it runs, typed parameter values, step outputs, where it is in the runbook).
The extra public fields `SourceIdentity`, `SessionTags`, `RoleSessionName`, `Tags` and
`Region` record who started it; botocore ignores fields it does not know.
"""

from __future__ import annotations

import json
import re
import time
import uuid

from . import parameters
from .errors import AwsError
from .state import Caller
from .statuses import is_terminal

NO_OUTPUT = "No output available yet because the step is not successfully executed"

# AutomationExecutionMetadata members (DescribeAutomationExecutions has no Parameters or steps).
METADATA_KEYS = (
    "AutomationExecutionId",
    "DocumentName",
    "DocumentVersion",
    "AutomationExecutionStatus",
    "ExecutionStartTime",
    "ExecutionEndTime",
    "ExecutedBy",
    "LogFile",
    "Outputs",
    "Mode",
    "ParentAutomationExecutionId",
    "CurrentStepName",
    "CurrentAction",
    "FailureMessage",
    "TargetParameterName",
    "Targets",
    "TargetMaps",
    "ResolvedTargets",
    "MaxConcurrency",
    "MaxErrors",
    "Target",
    "AutomationType",
    "AlarmConfiguration",
    "SourceIdentity",
    "SessionTags",
    "RoleSessionName",
    "Tags",
)


def new_step(definition: dict) -> dict:
    on_failure = definition.get("onFailure", "Abort")
    step = {
        "StepName": definition["name"],
        "Action": definition["action"],
        "OnFailure": on_failure,
        "MaxAttempts": int(definition.get("maxAttempts", 1)),
        "IsEnd": flag(definition.get("isEnd", False)),
        # isCritical defaults to true, except that onFailure: Continue makes a step non-critical.
        "IsCritical": flag(definition.get("isCritical", on_failure != "Continue")),
        "StepExecutionId": str(uuid.uuid4()),
        "StepStatus": "Pending",
        "Inputs": {},
        "Outputs": {},
        "OverriddenParameters": {},
    }
    if "timeoutSeconds" in definition:
        step["TimeoutSeconds"] = int(definition["timeoutSeconds"])
    if definition.get("nextStep"):
        step["NextStep"] = definition["nextStep"]
    if definition["action"] == "aws:branch":
        inputs = definition.get("inputs") or {}
        choices = [c.get("NextStep") for c in inputs.get("Choices") or [] if isinstance(c, dict)]
        step["ValidNextSteps"] = [c for c in choices + [inputs.get("Default")] if c]
    return step


def flag(value) -> bool:
    return value if isinstance(value, bool) else str(value).lower() == "true"


def new_execution(
    region,
    *,
    document_name: str,
    document_version: str,
    content: dict,
    typed: dict,
    wire: dict,
    mode: str,
    caller,
    client_token: str | None = None,
    tags: list | None = None,
    parent: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """Create a Pending execution and hand it to the engine (via `state.active`)."""
    execution_id = str(uuid.uuid4())
    steps = content.get("mainSteps") or []
    runs_as = runs_as_identity(content, typed, caller, parent)
    execution = {
        "AutomationExecutionId": execution_id,
        "DocumentName": document_name,
        "DocumentVersion": document_version,
        "ExecutionStartTime": time.time(),
        "AutomationExecutionStatus": "Pending",
        "StepExecutions": [new_step(step) for step in steps],
        "StepExecutionsTruncated": False,
        "Parameters": wire,
        "Outputs": {},
        "Mode": mode,
        "ExecutedBy": caller.arn,
        "AutomationType": "Local",
        "LogFile": "",
        "Targets": [],
        "ResolvedTargets": {"ParameterValues": [], "Truncated": False},
        "SourceIdentity": caller.source_identity,
        "SessionTags": caller.session_tags,
        "RoleSessionName": caller.session_name,
        "Tags": tags or [],
        "Region": region.name,
        "_content": content,
        "_typed": typed,
        "_variables": {name: spec.get("default") for name, spec in (content.get("variables") or {}).items()},
        "_outputs": {},
        "_next": steps[0]["name"] if steps else None,
        "_current": None,
        "_client_token": client_token,
        "_runs_as": runs_as,
    }
    if parent is not None:
        execution["ParentAutomationExecutionId"] = parent["AutomationExecutionId"]
    execution.update(extra or {})
    region.executions[execution_id] = execution
    region.state.active[(region.name, execution_id)] = None
    region.state.mark_dirty()
    return execution


def runs_as_identity(content: dict, typed: dict, caller, parent: dict | None) -> str:
    """The identity the steps act as: the document's `assumeRole` after substitution; without one,
    a child runs as its parent and a top-level execution as its caller (AWS's rule).
    AWS shows this nowhere in the execution; the sandbox exposes it for tests (snapshot, control API)."""
    template = str(content.get("assumeRole") or "").strip()
    role = re.sub(r"\{\{\s*([\w:.-]+)\s*\}\}", lambda m: str(typed.get(m.group(1)) or ""), template).strip()
    if role:
        return role
    if parent is not None:
        return parent.get("_runs_as") or parent["ExecutedBy"]
    return caller.arn


def _public(value):
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not k.startswith("_") and v is not None}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def progress_counters(execution: dict, region) -> dict:
    if "_children" in execution:  # a rate-control parent counts its child executions
        statuses = [region.executions[c]["AutomationExecutionStatus"] for c in execution["_children"]]
        total = len(execution.get("_targets", []))
    else:
        statuses = [s["StepStatus"] for s in execution["StepExecutions"]]
        total = len(statuses)
    return {
        "TotalSteps": total,
        "SuccessSteps": statuses.count("Success"),
        "FailedSteps": statuses.count("Failed"),
        "CancelledSteps": statuses.count("Cancelled"),
        "TimedOutSteps": statuses.count("TimedOut"),
    }


def view(execution: dict, region) -> dict:
    """The GetAutomationExecution `AutomationExecution` shape."""
    out = _public(execution)  # builds new dicts and lists, so callers get a copy
    out["ProgressCounters"] = progress_counters(execution, region)
    return out


def metadata(execution: dict) -> dict:
    """The DescribeAutomationExecutions `AutomationExecutionMetadata` shape."""
    return _public({k: execution.get(k) for k in METADATA_KEYS})


def snapshot(execution: dict, region) -> dict:
    """What `Sandbox.executions()` returns: the API view plus the ClientToken it was started with."""
    out = view(execution, region)
    out["ClientToken"] = execution.get("_client_token")
    out["RunsAs"] = execution.get("_runs_as") or execution["ExecutedBy"]  # sandbox-only: no AWS field
    out["RunAs"] = run_as_record(execution)
    return out


def run_as_record(execution: dict) -> dict:
    """RunsAs spelled out for the portal's identity tests: the role ARN, the principal that acts,
    and whether it came from the document's assumeRole or is the caller (sandbox-only, no AWS field)."""
    caller = execution["ExecutedBy"]
    principal = execution.get("_runs_as") or caller
    if principal != caller:
        return {"RoleArn": principal, "PrincipalArn": principal, "Source": "assumeRole"}
    # arn:aws:sts::A:assumed-role/R/session -> arn:aws:iam::A:role/R (a user's ARN stays as it is)
    match = re.match(r"^arn:aws:sts::(\d{12}):assumed-role/([^/]+)/", caller)
    role = f"arn:aws:iam::{match.group(1)}:role/{match.group(2)}" if match else caller
    return {"RoleArn": role, "PrincipalArn": caller, "Source": "caller"}


# Transitions shared by the engine, rate control and the API ------------------------------------


def output_values(value) -> list[str]:
    """A typed step output as the API's list of strings (aws-api.md §15 item 21)."""
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, dict):
        return [json.dumps(value)]
    if isinstance(value, list):
        return [json.dumps(v) if isinstance(v, (dict, list)) else str(v) for v in value]
    return [str(value)]


def refresh_outputs(execution: dict) -> None:
    """The runbook's top-level `outputs` ("step.Output") from the step outputs known so far."""
    outputs = {}
    for reference in execution["_content"].get("outputs") or []:
        step, _, name = str(reference).partition(".")
        produced = execution["_outputs"].get(step, {})
        outputs[reference] = output_values(produced[name]) if name in produced else [NO_OUTPUT]
    execution["Outputs"] = outputs


def set_running(execution: dict, status: str = "InProgress") -> None:
    """InProgress or Waiting, unless a Stop already moved the execution to Cancelling."""
    if execution["AutomationExecutionStatus"] != "Cancelling":
        execution["AutomationExecutionStatus"] = status


def finish(region, execution: dict, status: str, message: str | None = None) -> None:
    execution["AutomationExecutionStatus"] = status
    execution["ExecutionEndTime"] = time.time()
    if message and status != "Success":
        execution["FailureMessage"] = message
    refresh_outputs(execution)
    execution["_next"] = None
    execution["_current"] = None
    region.state.active.pop((region.name, execution["AutomationExecutionId"]), None)
    region.state.mark_dirty()


def request_cancel(execution: dict) -> None:
    """StopAutomationExecution: Cancelling now, Cancelled once the engine has stopped the step."""
    if not is_terminal(execution["AutomationExecutionStatus"]):
        execution["AutomationExecutionStatus"] = "Cancelling"
        execution["_cancel"] = True


def caller_of(execution: dict):
    """The identity that started an execution, for the child executions it starts."""
    session = {
        "RoleSessionName": execution.get("RoleSessionName"),
        "SourceIdentity": execution.get("SourceIdentity"),
        "Tags": execution.get("SessionTags") or [],
    }
    return Caller("", execution["ExecutedBy"], session)


def new_child(region, parent: dict, given: dict, *, caller: Caller, extra: dict | None = None,
              failure: str | None = None) -> dict:
    """A child execution of `parent` (rate control's per target, TargetLocations' per location)
    running the parent's document with `given` parameters. It fails at once, saying why, when the
    parameters do not validate or `failure` names why it cannot run."""
    error = None
    try:
        typed, wire = parameters.validate(parent["_content"], given)
    except AwsError as exc:
        typed, wire, error = {}, given, exc.message
    child = new_execution(region, document_name=parent["DocumentName"], document_version=parent["DocumentVersion"],
                          content=parent["_content"], typed=typed, wire=wire, mode="Auto", caller=caller,
                          parent=parent, extra=extra)
    if failure or error:
        finish(region, child, "Failed", failure or error)
    return child
