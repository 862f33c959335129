"""Runbook step actions that really act on the sandbox (AWS calls to moto, waits, signals, branches).

Each action is a function of a `StepContext` that the engine calls on every tick until it
returns `done(...)`, raises `StepFailure`, or returns `poll(...)` (call me again later) or
`wait()` (status Waiting until a SendAutomationSignal). Progress that must survive between
ticks and restarts lives in `ctx.scratch`, a JSON dict stored on the step.
Actions on other services (stacks, Lambda, scripts, Run Command) are in `services_actions.py`;
an action the sandbox cannot perform fails its step saying so.
"""

from __future__ import annotations

from . import aws_calls, document_store, executions, parameters, services_actions, statuses, target_locations
from .errors import AwsError
from .outcome import Outcome, StepContext, StepFailure, done, poll, wait
from .protocol import parse_time
from .templating import as_text, duration_seconds, select

MAX_SLEEP_SECONDS = 604800  # aws:sleep allows at most 7 days


def _list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _required(ctx: StepContext, name: str):
    if ctx.inputs.get(name) in (None, "", []):
        raise StepFailure(f"Input {name} is required by {ctx.step['Action']}.")
    return ctx.inputs[name]


# AWS API calls from runbooks ---------------------------------------------------------------------


def call_api(ctx: StepContext, service: str, api: str, params: dict) -> dict:
    """One AWS call made by a step: boto3 against the sandbox itself (moto or Delegate's own APIs)."""
    return aws_calls.call(ctx, service, api, params)


def _api_inputs(ctx: StepContext, *reserved: str) -> tuple[str, str, dict]:
    service, api = _required(ctx, "Service"), _required(ctx, "Api")
    params = {k: v for k, v in ctx.inputs.items() if k not in ("Service", "Api", *reserved)}
    return service, api, params


def execute_aws_api(ctx: StepContext) -> Outcome:
    service, api, params = _api_inputs(ctx)
    response = call_api(ctx, service, api, params)
    return done(response=response, message=f"{service} {api} called")


def _same(actual, wanted) -> bool:
    if isinstance(actual, bool) or str(wanted).lower() in ("true", "false"):
        return str(actual).lower() == str(wanted).lower()
    return str(actual) == str(wanted)


def _check_property(ctx: StepContext) -> tuple[dict, str, object, list, bool]:
    service, api, params = _api_inputs(ctx, "PropertySelector", "DesiredValues")
    selector = _required(ctx, "PropertySelector")
    desired = _list(_required(ctx, "DesiredValues"))
    response = call_api(ctx, service, api, params)
    try:
        actual = select(response, selector)
    except KeyError:
        actual = None
    values = actual if isinstance(actual, list) else [actual]
    matched = actual is not None and all(any(_same(v, d) for d in desired) for v in values)
    return response, selector, actual, desired, matched


def assert_property(ctx: StepContext) -> Outcome:
    response, selector, actual, desired, matched = _check_property(ctx)
    if not matched:
        raise StepFailure(f"Assertion failed: {selector} is {actual!r}, expected one of {desired}.")
    return done(response=response, message=f"{selector} is {as_text(actual)}")


def wait_for_property(ctx: StepContext) -> Outcome:
    response, selector, actual, _, matched = _check_property(ctx)
    if not matched:
        return ctx.later()
    return done(response=response, message=f"{selector} reached {as_text(actual)}")


# EC2 actions -----------------------------------------------------------------------------------------

DESIRED_ACTIONS = {"running": "start", "stopped": "stop", "terminated": "terminate"}


def _instance_states(ctx: StepContext, ids: list[str]) -> dict[str, str]:
    response = call_api(ctx, "ec2", "DescribeInstances", {"InstanceIds": ids})
    return {
        i["InstanceId"]: i["State"]["Name"] for r in response.get("Reservations", []) for i in r["Instances"]
    }


def change_instance_state(ctx: StepContext) -> Outcome:
    """Ask each instance to change once it is in a stable state, then wait until all have arrived."""
    ids = _list(_required(ctx, "InstanceIds"))
    desired = _required(ctx, "DesiredState")
    if desired not in DESIRED_ACTIONS:
        raise StepFailure(f"DesiredState must be running, stopped or terminated, not {desired!r}.")
    check_only = executions.flag(ctx.inputs.get("CheckStateOnly", False))
    states = _instance_states(ctx, ids)
    remaining, to_change = [], []
    for instance_id in ids:
        current = states.get(instance_id)
        if current == desired:
            continue
        if current == "terminated":
            raise StepFailure(f"Instance {instance_id} is terminated and can never be {desired}.")
        remaining.append(instance_id)
        if not check_only and current in ("running", "stopped"):
            to_change.append(instance_id)
    if to_change:
        verb = DESIRED_ACTIONS[desired].capitalize()
        call_api(ctx, "ec2", f"{verb}Instances", {"InstanceIds": to_change})
    if remaining:
        return ctx.later()
    return done(message=f"All instances are {desired}: {', '.join(ids)}")


def _wait_for_image(ctx: StepContext) -> Outcome:
    image_id = ctx.scratch["image_id"]
    images = call_api(ctx, "ec2", "DescribeImages", {"ImageIds": [image_id]}).get("Images", [])
    if not images:
        raise StepFailure(f"Image {image_id} disappeared while it was being created.")
    state = images[0]["State"]
    if state == "failed":
        raise StepFailure(f"Image {image_id} failed: {images[0].get('StateReason', {}).get('Message', '')}")
    if state != "available":
        return ctx.later()
    return done({"ImageId": image_id, "ImageState": state}, message=f"Created image {image_id}")


def create_image(ctx: StepContext) -> Outcome:
    if "image_id" not in ctx.scratch:
        params = {
            "InstanceId": _required(ctx, "InstanceId"),
            "Name": _required(ctx, "ImageName"),
            "Description": ctx.inputs.get("ImageDescription", ""),
            "NoReboot": executions.flag(ctx.inputs.get("NoReboot")),
        }
        ctx.scratch["image_id"] = call_api(ctx, "ec2", "CreateImage", params)["ImageId"]
    return _wait_for_image(ctx)


def copy_image(ctx: StepContext) -> Outcome:
    if "image_id" not in ctx.scratch:
        params = {
            "SourceImageId": _required(ctx, "SourceImageId"),
            "SourceRegion": ctx.inputs.get("SourceRegion") or ctx.region.name,
            "Name": _required(ctx, "ImageName"),
        }
        if ctx.inputs.get("ImageDescription"):
            params["Description"] = ctx.inputs["ImageDescription"]
        ctx.scratch["image_id"] = call_api(ctx, "ec2", "CopyImage", params)["ImageId"]
    return _wait_for_image(ctx)


def delete_image(ctx: StepContext) -> Outcome:
    image_id = _required(ctx, "ImageId")
    call_api(ctx, "ec2", "DeregisterImage", {"ImageId": image_id})
    return done(message=f"Deregistered image {image_id}")


# aws:createTags resource types and the API that tags them.
TAGGABLE = {"EC2": "ec2", "ManagedInstance": "ManagedInstance", "MaintenanceWindow": "MaintenanceWindow", "Parameter": "Parameter"}


def create_tags(ctx: StepContext) -> Outcome:
    resource_type = ctx.inputs.get("ResourceType", "EC2")
    ids, tags = _list(_required(ctx, "ResourceIds")), _list(_required(ctx, "Tags"))
    if resource_type not in TAGGABLE:
        raise StepFailure(f"aws:createTags: ResourceType must be one of {sorted(TAGGABLE)}, not {resource_type!r}.")
    if resource_type == "EC2":
        call_api(ctx, "ec2", "CreateTags", {"Resources": ids, "Tags": tags})
    else:
        for resource_id in ids:
            call_api(
                ctx, "ssm", "AddTagsToResource", {"ResourceType": resource_type, "ResourceId": resource_id, "Tags": tags}
            )
    return done(message=f"Tags created on {', '.join(ids)}")


# Flow control ------------------------------------------------------------------------------------------


def sleep(ctx: StepContext) -> Outcome:
    if "until" not in ctx.scratch:
        try:
            if "Duration" in ctx.inputs:
                seconds = duration_seconds(ctx.inputs["Duration"])
            else:
                seconds = parse_time(str(_required(ctx, "Timestamp"))) - ctx.now
        except ValueError as exc:
            raise StepFailure(str(exc)) from None
        if seconds > MAX_SLEEP_SECONDS:
            raise StepFailure("aws:sleep can wait at most 7 days (604800 seconds).")
        ctx.scratch["until"] = ctx.now + ctx.region.scaled(max(0.0, seconds))
    if ctx.now >= ctx.scratch["until"]:
        return done(message="Slept")
    return poll(ctx.scratch["until"])


def pause(ctx: StepContext) -> Outcome:
    """Waiting until SendAutomationSignal Resume (signals.py sets `resumed`)."""
    return done(message="Resumed") if ctx.scratch.get("resumed") else wait()


def approve(ctx: StepContext) -> Outcome:
    """Waiting until enough distinct approvers Approve; one Reject fails the step (signals.py)."""
    approvers = _list(_required(ctx, "Approvers"))
    if len(approvers) > 10:
        raise StepFailure("aws:approve accepts at most 10 Approvers.")
    try:
        required = int(ctx.inputs.get("MinRequiredApprovals", 1))
    except (TypeError, ValueError):
        raise StepFailure("MinRequiredApprovals must be an integer.") from None
    if not 1 <= required <= len(approvers):
        raise StepFailure(
            f"MinRequiredApprovals must be between 1 and the number of approvers ({len(approvers)})."
        )
    decisions = ctx.scratch.setdefault("decisions", [])
    rejected = [d for d in decisions if d["Decision"] == "Rejected"]
    if rejected:
        comment = f": {rejected[0]['Comment']}" if rejected[0].get("Comment") else ""
        raise StepFailure(f"Step rejected by {rejected[0]['Approver']}{comment}")
    approved = {d["Approver"] for d in decisions if d["Decision"] == "Approved"}
    if len(approved) < required:
        return wait()
    return done(
        {"ApprovalStatus": "Approved", "ApproverDecisions": decisions},
        message=f"Approved by {', '.join(sorted(approved))}",
    )


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise StepFailure(f"{value!r} is not a number") from None


BRANCH_OPERATORS = {
    "StringEquals": lambda v, x: as_text(v) == str(x),
    "EqualsIgnoreCase": lambda v, x: as_text(v).lower() == str(x).lower(),
    "StartsWith": lambda v, x: as_text(v).startswith(str(x)),
    "EndsWith": lambda v, x: as_text(v).endswith(str(x)),
    "Contains": lambda v, x: str(x) in v if isinstance(v, list) else str(x) in as_text(v),
    "NumericEquals": lambda v, x: _number(v) == _number(x),
    "NumericGreater": lambda v, x: _number(v) > _number(x),
    "NumericLesser": lambda v, x: _number(v) < _number(x),
    "NumericGreaterOrEquals": lambda v, x: _number(v) >= _number(x),
    "NumericLesserOrEquals": lambda v, x: _number(v) <= _number(x),
    "BooleanEquals": lambda v, x: executions.flag(v) == executions.flag(x),
}


def _choice_matches(rule: dict) -> bool:
    if "And" in rule:
        return all(_choice_matches(r) for r in rule["And"])
    if "Or" in rule:
        return any(_choice_matches(r) for r in rule["Or"])
    if "Not" in rule:
        return not _choice_matches(rule["Not"])
    operators = [key for key in rule if key in BRANCH_OPERATORS]
    if len(operators) != 1 or "Variable" not in rule:
        raise StepFailure(f"A choice needs a Variable and exactly one operator: {rule}")
    return BRANCH_OPERATORS[operators[0]](rule["Variable"], rule[operators[0]])


def branch(ctx: StepContext) -> Outcome:
    for choice in _list(ctx.inputs.get("Choices")):
        if _choice_matches(choice):
            return done(
                message=f"Choice matched: next step {choice['NextStep']}", next_step=choice["NextStep"]
            )
    default = ctx.inputs.get("Default")
    if not default:
        raise StepFailure("No choice matched and the step has no Default.")
    return done(message=f"No choice matched: next step {default} (Default)", next_step=default)


def update_variable(ctx: StepContext) -> Outcome:
    name = str(_required(ctx, "Name"))
    name = name.removeprefix("variable:")
    if name not in ctx.execution["_variables"]:
        raise StepFailure(f"Variable {name} is not declared in the runbook.")
    ctx.execution["_variables"][name] = ctx.inputs.get("Value")
    return done(message=f"Variable {name} updated")


def execute_automation(ctx: StepContext) -> Outcome:
    """Start the named runbook as a child execution and wait for it to finish."""
    region, scratch = ctx.region, ctx.scratch
    if "child" not in scratch:
        try:
            record = document_store.resolve(
                region, _required(ctx, "DocumentName"), "AutomationDefinitionNotFoundException"
            )
            version = document_store.version_of(
                record, ctx.inputs.get("DocumentVersion"), "AutomationDefinitionVersionNotFoundException"
            )
            content = document_store.content_of(version)
            given = {
                k: [str(x) for x in _list(v)] for k, v in (ctx.inputs.get("RuntimeParameters") or {}).items()
            }
            typed, wire = parameters.validate(content, given)
        except AwsError as exc:
            raise StepFailure(f"{exc.code}: {exc.message}") from None
        child = executions.new_execution(
            region,
            document_name=record["Name"].split("/")[-1],
            document_version=version["DocumentVersion"],
            content=content,
            typed=typed,
            wire=wire,
            mode="Auto",
            caller=executions.caller_of(ctx.execution),
            parent=ctx.execution,
        )
        scratch["child"] = child["AutomationExecutionId"]
    child = region.executions[scratch["child"]]
    status = child["AutomationExecutionStatus"]
    if not statuses.is_terminal(status):
        return ctx.later()
    outputs = {"ExecutionId": child["AutomationExecutionId"], "Status": status, "Output": child["Outputs"]}
    if status != "Success":
        raise StepFailure(
            f"Child execution {child['AutomationExecutionId']} ended {status}: "
            f"{child.get('FailureMessage', '')}"
        )
    return done(outputs, message=f"Child execution {child['AutomationExecutionId']} succeeded")


ACTIONS = {
    "aws:executeAwsApi": execute_aws_api,
    "aws:assertAwsResourceProperty": assert_property,
    "aws:waitForAwsResourceProperty": wait_for_property,
    "aws:changeInstanceState": change_instance_state,
    "aws:createImage": create_image,
    "aws:copyImage": copy_image,
    "aws:deleteImage": delete_image,
    "aws:createTags": create_tags,
    "aws:sleep": sleep,
    "aws:pause": pause,
    "aws:approve": approve,
    "aws:branch": branch,
    "aws:updateVariable": update_variable,
    "aws:executeAutomation": execute_automation,
}
# Default timeouts (seconds, before time_scale) for steps that can wait a long time.
DEFAULT_TIMEOUTS = {
    "aws:approve": 604800,
    "aws:pause": 604800,
    "aws:sleep": 604800 + 60,
    "aws:changeInstanceState": 3600,
    "aws:waitForAwsResourceProperty": 3600,
    "aws:createImage": 3600,
    "aws:copyImage": 3600,
    "aws:executeAutomation": 43200,
    "aws:createStack": 3600,
    "aws:deleteStack": 3600,
    "aws:executeScript": 600,
    "aws:invokeLambdaFunction": 900,
}


def run(ctx: StepContext) -> Outcome:
    action = ctx.step["Action"]
    if ctx.execution.get("_location") and action in target_locations.CENTRAL_ONLY_ACTIONS:
        raise StepFailure(
            f"{action} is not emulated by the Delegate sandbox in a multi-account child execution, "
            "so this step did nothing."
        )
    handler = ACTIONS.get(action) or services_actions.ACTIONS.get(action, services_actions.not_emulated)
    return handler(ctx)
