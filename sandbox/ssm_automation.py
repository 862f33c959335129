"""The SSM Automation APIs: start, read, stop and signal executions (aws-api.md §2–§7).

Validation happens here, in the order AWS applies it: request shape (ValidationException),
ClientToken idempotency, document and version, parameters, then the concurrency quota.
Running the executions is the engine's job.
"""

from __future__ import annotations

import json
import re

from . import document_store, executions, parameters, rate_control, signals, target_locations
from .errors import AwsError, validation
from .executions import new_execution, request_cancel
from .paging import page
from .protocol import parse_time
from .state import Request
from .statuses import STATUSES, is_terminal

DOCUMENT_NAME = re.compile(r"^[a-zA-Z0-9_\-.:/]{3,128}$")
DOCUMENT_VERSION = re.compile(r"^([$]LATEST|[$]DEFAULT|[1-9][0-9]*)$")
CLIENT_TOKEN = re.compile(r"^[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{12}$")
TAG = re.compile(r"^[\w\s.:/=+\-@]*$")
EXECUTION_FILTERS = {
    "DocumentNamePrefix",
    "ExecutionStatus",
    "ExecutionId",
    "ParentExecutionId",
    "CurrentAction",
    "StartTimeBefore",
    "StartTimeAfter",
    "AutomationType",
    "TagKey",
    "TargetResourceGroup",
    "AutomationSubtype",
    "OpsItemId",
}
STEP_FILTERS = {
    "StartTimeBefore",
    "StartTimeAfter",
    "StepExecutionStatus",
    "StepExecutionId",
    "StepName",
    "Action",
    "ParentStepExecutionId",
    "ParentStepIteration",
    "ParentStepIteratorValue",
}
MAX_TAGS_AT_START = 5


def _shape(p: dict) -> None:
    """What botocore leaves to the server: max lengths, patterns, enums (aws-api.md §1.4)."""
    name = p.get("DocumentName") or ""
    if not DOCUMENT_NAME.match(name):
        raise validation(
            f"1 validation error detected: Value '{name}' at 'documentName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9_\\-.:/]{3,128}$"
        )
    version = p.get("DocumentVersion")
    if version is not None and not DOCUMENT_VERSION.match(version):
        raise validation(
            f"Value '{version}' at 'documentVersion' failed to satisfy constraint: Member must "
            "satisfy regular expression pattern: ([$]LATEST|[$]DEFAULT|^[1-9][0-9]*$)"
        )
    if p.get("Mode", "Auto") not in ("Auto", "Interactive"):
        raise validation(
            f"Value '{p['Mode']}' at 'mode' failed to satisfy constraint: Member must satisfy "
            "enum value set: [Auto, Interactive]"
        )
    token = p.get("ClientToken")
    if token is not None and not CLIENT_TOKEN.match(token):
        raise validation(
            f"Value '{token}' at 'clientToken' failed to satisfy constraint: Member must be a "
            "36-character UUID"
        )
    given = p.get("Parameters") or {}
    if not isinstance(given, dict) or len(given) > 200:
        raise validation("Parameters must be a map of at most 200 entries.")
    for key, values in given.items():
        if (
            not 1 <= len(key) <= 50
            or not isinstance(values, list)
            or len(values) > 50
            or any(not isinstance(v, str) or not 1 <= len(v) <= 512 for v in values)
        ):
            raise validation(
                f"Parameter {key!r}: keys are 1-50 characters and values are lists of at most 50 "
                "strings of 1-512 characters."
            )
    tags = p.get("Tags") or []
    if len(tags) > MAX_TAGS_AT_START:
        raise validation(
            f"At most {MAX_TAGS_AT_START} tags can be added when an automation starts; "
            "use AddTagsToResource for more."
        )
    for tag in tags:
        if (
            not 1 <= len(tag.get("Key", "")) <= 128
            or len(tag.get("Value", "")) > 256
            or not TAG.match(tag.get("Key", ""))
            or not TAG.match(tag.get("Value", ""))
        ):
            raise validation(f"Tag {tag!r} does not satisfy the tag key/value constraints.")
    _rate_control_shape(p)
    alarm = p.get("AlarmConfiguration")
    if alarm is not None:
        alarms = alarm.get("Alarms") or []
        if len(alarms) != 1 or not str(alarms[0].get("Name", "")).strip() or len(alarms[0]["Name"]) > 255:
            raise validation("AlarmConfiguration.Alarms takes exactly one alarm with a non-blank Name.")
    if p.get("TargetLocations") is not None or p.get("TargetLocationsURL"):
        target_locations.check_shape(p)


def _rate_control_shape(p: dict) -> None:
    targets, target_maps, target_name = p.get("Targets"), p.get("TargetMaps"), p.get("TargetParameterName")
    if targets and target_maps:
        raise validation("Targets and TargetMaps cannot be specified together.")
    if len(targets or []) > 1:
        raise validation("Targets takes at most 1 item when starting an automation.")
    if bool(targets) != bool(target_name):
        raise validation("TargetParameterName and Targets must be specified together.")
    for target in targets or []:
        if not 1 <= len(target.get("Key", "")) <= 163 or len(target.get("Values") or []) > 50:
            raise validation("A target has a Key of 1-163 characters and at most 50 Values.")
    if len(target_maps or []) > 300:
        raise validation("TargetMaps takes at most 300 maps.")
    if p.get("MaxConcurrency") is not None and not rate_control.MAX_CONCURRENCY.match(p["MaxConcurrency"]):
        raise validation(
            f"Value '{p['MaxConcurrency']}' at 'maxConcurrency' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: ^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$"
        )
    if p.get("MaxErrors") is not None and not rate_control.MAX_ERRORS.match(p["MaxErrors"]):
        raise validation(
            f"Value '{p['MaxErrors']}' at 'maxErrors' failed to satisfy constraint: Member must "
            "satisfy regular expression pattern: ^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$"
        )


def start_automation_execution(req: Request) -> dict:
    p, region = req.params, req.region
    _shape(p)
    token = p.get("ClientToken")
    fingerprint = json.dumps({k: v for k, v in p.items() if k != "ClientToken"}, sort_keys=True)
    if token:
        # Tokens are case-insensitive; the same request gets the same execution back.
        known = region.tokens.get(token.lower())
        if known:
            if known["fingerprint"] != fingerprint:
                raise AwsError(
                    "IdempotentParameterMismatch",
                    "The ClientToken was already used with different parameters.",
                )
            return {"AutomationExecutionId": known["execution_id"]}
    record = document_store.resolve(region, p["DocumentName"], "AutomationDefinitionNotFoundException")
    if record["DocumentType"] != "Automation":
        raise AwsError(
            "AutomationDefinitionNotFoundException", f"{p['DocumentName']} is not an Automation document."
        )
    version = document_store.version_of(
        record, p.get("DocumentVersion"), "AutomationDefinitionVersionNotFoundException"
    )
    content = document_store.content_of(version)
    given = p.get("Parameters") or {}
    if p.get("TargetLocations"):
        target_locations.refuse_approval_steps(content)  # before the parameters, as it is the document
        typed, wire = parameters.validate(content, given)
        extra = target_locations.parent_fields(req.state, p, content)
    elif p.get("Targets") or p.get("TargetMaps"):
        extra = _rate_control(region, p, content, given)
        typed, wire = {}, extra["_base_params"]
    else:
        extra = {}
        typed, wire = parameters.validate(content, given)
    active = sum(1 for name, _ in req.state.active if name == region.name)
    if active >= req.faults.concurrency_limit:
        raise AwsError(
            "AutomationExecutionLimitExceededException",
            f"There are {active} automation executions running in {region.name}, the limit is "
            f"{req.faults.concurrency_limit}.",
        )
    extra["AlarmConfiguration"] = p.get("AlarmConfiguration")
    execution = new_execution(
        region,
        document_name=record["Name"].split("/")[-1],
        document_version=version["DocumentVersion"],
        content=content,
        typed=typed,
        wire=wire,
        mode=p.get("Mode", "Auto"),
        caller=req.caller,
        client_token=token,
        tags=p.get("Tags"),
        extra=extra,
    )
    if token:
        region.tokens[token.lower()] = {
            "fingerprint": fingerprint,
            "execution_id": execution["AutomationExecutionId"],
        }
    return {"AutomationExecutionId": execution["AutomationExecutionId"]}


def _rate_control(region, p: dict, content: dict, given: dict) -> dict:
    """Validate a rate-control start; the parent's fields (it runs no steps itself, rate_control.py does)."""
    if p.get("Mode", "Auto") != "Auto":
        raise validation("Rate control runs only in Auto mode.")
    definitions = content.get("parameters") or {}
    target_name = p.get("TargetParameterName")
    if target_name:
        if target_name not in definitions:
            raise parameters.invalid(f"TargetParameterName {target_name} is not a parameter of the document.")
        targets = rate_control.resolve_targets(region, p["Targets"])
        resolved = targets
    else:
        targets = [{k: [str(x) for x in v] for k, v in m.items()} for m in p["TargetMaps"]]
        resolved = []
    # The targeted parameters come from the targets; check everything else now.
    targeted = {target_name} if target_name else {k for m in targets for k in m}
    base = {k: v for k, v in given.items() if k not in targeted}
    parameters.validate(
        {**content, "parameters": {k: v for k, v in definitions.items() if k not in targeted}}, base
    )
    return {
        "StepExecutions": [],
        "_base_params": base,
        "_targets": targets,
        "_children": [],
        "TargetParameterName": target_name,
        "Targets": p.get("Targets") or [],
        "TargetMaps": p.get("TargetMaps"),
        "ResolvedTargets": {"ParameterValues": resolved, "Truncated": False},
        "MaxConcurrency": p.get("MaxConcurrency") or "10",
        "MaxErrors": p.get("MaxErrors") or "0",
        "TargetsSummary": {
            "TotalCount": len(targets),
            "StartedCount": 0,
            "CompletedCount": 0,
            "SuccessfulCount": 0,
            "FailedCount": 0,
        },
    }


def _caller_account(req: Request) -> str:
    """The account the caller acts in: an assumed-role session's, else the central account."""
    return req.caller._get("Account") or req.state.account_id


def _visible(req: Request, execution: dict) -> bool:
    """Where AWS answers for an execution. A multi-account run's child lives in its target account
    and Region (AWS: "To view the output of the child automations created in your target accounts,
    be sure to specify the appropriate account, Region, and AutomationExecutionId in your request"),
    so only a caller in that account, asking in that Region, sees it; everything else is the
    central account's, in the Region it was started in."""
    location = execution.get("_location")
    if location:
        return _caller_account(req) == location["Account"] and req.region.name == location["Region"]
    return _caller_account(req) == req.state.account_id


def _candidates(req: Request):
    """The executions a caller could see: the region's own, and for a member account's caller the
    children the sandbox keeps with their parent in the central account's state."""
    if _caller_account(req) == req.state.account_id:
        return list(req.region.executions.values())
    return [e for region in list(req.state.regions.values()) for e in list(region.executions.values())
            if e.get("_location")]


def _execution(req: Request) -> dict:
    execution_id = req.params.get("AutomationExecutionId") or ""
    execution = req.region.executions.get(execution_id)
    if execution is None or not _visible(req, execution):
        execution = next((e for e in _candidates(req) if e["AutomationExecutionId"] == execution_id
                          and _visible(req, e)), None)
    if execution is None:
        raise AwsError(
            "AutomationExecutionNotFoundException", f"Automation Execution {execution_id} does not exist."
        )
    return execution


def get_automation_execution(req: Request) -> dict:
    return {"AutomationExecution": executions.view(_execution(req), req.region)}


def _filters(raw, allowed: set, max_filters: int) -> list[tuple[str, list[str]]]:
    if raw is None:
        return []
    if not 1 <= len(raw) <= max_filters:
        raise validation(f"Filters must contain between 1 and {max_filters} filters.")
    out = []
    for item in raw:
        key, values = item.get("Key"), item.get("Values") or []
        if key not in allowed:
            raise AwsError("InvalidFilterKey", f"The filter key {key} is not valid.")
        if not 1 <= len(values) <= 10 or any(not 1 <= len(str(v)) <= 150 for v in values):
            raise validation(f"Filter {key} must have 1 to 10 values of 1 to 150 characters.")
        out.append((key, [str(v) for v in values]))
    return out


def _time_value(key: str, values: list[str]) -> float:
    try:
        return parse_time(values[0])
    except ValueError:
        raise AwsError(
            "InvalidFilterValue", f"The {key} value {values[0]} is not an ISO-8601 time."
        ) from None


def _execution_matches(execution: dict, key: str, values: list[str]) -> bool:
    """Values of one key are ORed; keys are ANDed (aws-api.md §4)."""
    if key == "ExecutionId":
        return execution["AutomationExecutionId"] in values
    if key == "ExecutionStatus":
        bad = [v for v in values if v not in STATUSES]
        if bad:
            raise AwsError("InvalidFilterValue", f"{bad[0]} is not an automation execution status.")
        return execution["AutomationExecutionStatus"] in values
    if key == "DocumentNamePrefix":
        return any(execution["DocumentName"].startswith(v) for v in values)
    if key == "ParentExecutionId":
        return execution.get("ParentAutomationExecutionId") in values
    if key == "CurrentAction":
        return execution.get("CurrentAction") in values
    if key == "StartTimeBefore":
        return execution["ExecutionStartTime"] < _time_value(key, values)
    if key == "StartTimeAfter":
        return execution["ExecutionStartTime"] > _time_value(key, values)
    if key == "AutomationType":
        return execution.get("AutomationType", "Local") in values
    if key == "TagKey":
        return any(tag["Key"] in values for tag in execution.get("Tags") or [])
    return False  # TargetResourceGroup, AutomationSubtype, OpsItemId: nothing in the sandbox has them


def describe_automation_executions(req: Request) -> dict:
    p = req.params
    filters = _filters(p.get("Filters"), EXECUTION_FILTERS, 10)
    found = [
        e for e in _candidates(req) if _visible(req, e) and all(_execution_matches(e, k, v) for k, v in filters)
    ]
    found.sort(key=lambda e: (-e["ExecutionStartTime"], e["AutomationExecutionId"]))  # newest first
    chunk, token = page(
        found,
        operation="DescribeAutomationExecutions",
        max_results=p.get("MaxResults"),
        next_token=p.get("NextToken"),
    )
    return {
        "AutomationExecutionMetadataList": [executions.metadata(e) for e in chunk],
        **({"NextToken": token} if token else {}),
    }


def _step_matches(step: dict, key: str, values: list[str]) -> bool:
    if key == "StepExecutionStatus":
        return step["StepStatus"] in values
    if key == "StepExecutionId":
        return step["StepExecutionId"] in values
    if key == "StepName":
        return step["StepName"] in values
    if key == "Action":
        return step["Action"] in values
    if key == "StartTimeBefore":
        return "ExecutionStartTime" in step and step["ExecutionStartTime"] < _time_value(key, values)
    if key == "StartTimeAfter":
        return "ExecutionStartTime" in step and step["ExecutionStartTime"] > _time_value(key, values)
    return False  # Parent* keys belong to aws:loop iterations, which the sandbox does not model


def describe_automation_step_executions(req: Request) -> dict:
    p = req.params
    execution = _execution(req)
    filters = _filters(p.get("Filters"), STEP_FILTERS, 6)
    steps = [
        s
        for s in executions.view(execution, req.region)["StepExecutions"]
        if all(_step_matches(s, k, v) for k, v in filters)
    ]
    if p.get("ReverseOrder"):
        steps.reverse()
    chunk, token = page(
        steps,
        operation="DescribeAutomationStepExecutions",
        max_results=p.get("MaxResults"),
        next_token=p.get("NextToken"),
    )
    return {"StepExecutions": chunk, **({"NextToken": token} if token else {})}


def stop_automation_execution(req: Request) -> dict:
    stop_type = req.params.get("Type", "Cancel")
    if stop_type not in ("Cancel", "Complete"):
        raise validation(
            f"Value '{stop_type}' at 'type' failed to satisfy constraint: Member must satisfy enum "
            "value set: [Complete, Cancel]"
        )
    execution = _execution(req)
    if is_terminal(execution["AutomationExecutionStatus"]):
        raise AwsError(
            "InvalidAutomationStatusUpdateException",
            f"Execution {execution['AutomationExecutionId']} is already "
            f"{execution['AutomationExecutionStatus']}.",
        )
    # The sandbox treats Type=Complete like Cancel; its exact AWS semantics are unverified (aws-api.md §16).
    request_cancel(execution)
    return {}


def send_automation_signal(req: Request) -> dict:
    signal = req.params.get("SignalType")
    if signal not in signals.SIGNALS:
        raise validation(
            f"Value '{signal}' at 'signalType' failed to satisfy constraint: Member must satisfy "
            f"enum value set: {list(signals.SIGNALS)}"
        )
    execution = _execution(req)
    signals.send(req.region, execution, signal, req.params.get("Payload") or {}, req.caller, req.faults)
    return {}


OPERATIONS = {
    "StartAutomationExecution": start_automation_execution,
    "GetAutomationExecution": get_automation_execution,
    "DescribeAutomationExecutions": describe_automation_executions,
    "DescribeAutomationStepExecutions": describe_automation_step_executions,
    "StopAutomationExecution": stop_automation_execution,
    "SendAutomationSignal": send_automation_signal,
}
