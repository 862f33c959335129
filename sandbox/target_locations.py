"""Multi-account and multi-Region automation: `TargetLocations` (aws-api.md §2).

A start with TargetLocations makes a parent execution (AutomationType `CrossAccount`) in the
central account and region. The parent runs no document steps itself: it expands each location's
Accounts (account ids, or OU ids resolved through moto's Organizations) × Regions and starts one
child execution per location, at most TargetLocationMaxConcurrency at a time, and stops queueing
once more than TargetLocationMaxErrors locations failed (children already running finish).

Each child runs the document in its account and region as the execution role assumed there
(`arn:aws:iam::<member>:role/<ExecutionRoleName>`, which must exist in that account's IAM): its
steps' AWS calls carry that session's key, so they land in the member account's moto backends
(server.py routes by the caller's account). Children carry `ParentAutomationExecutionId`; they
are answered only in their own account and Region (a session in that account, asking in that
Region), as AWS documents for the children "created in your target accounts"; the central account
neither lists nor reads them. The parent's StepExecutions hold one aws:executeAutomation entry per
location (TargetLocation, the child's status, Outputs ExecutionId and Status), which is how the
central account learns where each child ran and how it is doing (docs/multi-account.md cites AWS).
"""

from __future__ import annotations

import re
import uuid

from . import rate_control, sts, world
from .errors import AwsError, validation
from .executions import caller_of, finish, new_child, new_step, request_cancel
from .state import Caller, Request
from .statuses import is_terminal

ACCOUNT = re.compile(r"^\d{12}$")
OU = re.compile(r"^ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
ROLE_NAME = re.compile(r"^[\w+=,.@/-]{1,64}$")
DEFAULT_ROLE = "AWS-SystemsManager-AutomationExecutionRole"
FAILED = ("Failed", "TimedOut", "Cancelled")
# Actions a child in another account cannot perform in the sandbox (they run code or start
# executions through paths that are the central account's only): the step fails saying so.
CENTRAL_ONLY_ACTIONS = {
    "aws:executeScript",
    "aws:invokeLambdaFunction",
    "aws:createStack",
    "aws:deleteStack",
    "aws:runCommand",
    "aws:executeAutomation",
}


def check_shape(p: dict) -> None:
    """What botocore leaves to the server for TargetLocations (model patterns and lengths)."""
    if p.get("TargetLocationsURL"):
        raise validation(
            "TargetLocationsURL (a presigned S3 URL) is not supported by the Delegate sandbox; "
            "pass TargetLocations."
        )
    locations = p.get("TargetLocations")
    if not isinstance(locations, list) or not 1 <= len(locations) <= 100:
        raise validation("TargetLocations must contain between 1 and 100 locations.")
    if p.get("Targets") or p.get("TargetMaps"):
        raise validation(
            "Targets and TargetMaps at the top level cannot be combined with TargetLocations in the "
            "Delegate sandbox (TargetLocation.Targets is not modelled)."
        )
    if p.get("Mode", "Auto") != "Auto":
        raise validation("Multi-account and multi-Region automations run only in Auto mode.")
    for location in locations:
        accounts, regions = location.get("Accounts") or [], location.get("Regions") or []
        if not 1 <= len(accounts) <= 50 or any(not (ACCOUNT.match(a) or OU.match(a)) for a in accounts):
            raise validation(
                f"Value {accounts} at 'targetLocations.accounts' failed to satisfy constraint: 1 to 50 "
                "AWS account ids (12 digits) or organizational unit ids (ou-...)."
            )
        if not 1 <= len(regions) <= 50 or any(not REGION.match(r) for r in regions):
            raise validation(f"Value {regions} at 'targetLocations.regions' failed to satisfy constraint: 1 to 50 Regions.")
        for key, pattern, member in (
            ("TargetLocationMaxConcurrency", rate_control.MAX_CONCURRENCY, "targetLocationMaxConcurrency"),
            ("TargetLocationMaxErrors", rate_control.MAX_ERRORS, "targetLocationMaxErrors"),
        ):
            if location.get(key) is not None and not pattern.match(str(location[key])):
                raise validation(
                    f"Value '{location[key]}' at '{member}' failed to satisfy constraint: Member must "
                    f"satisfy regular expression pattern: {pattern.pattern}"
                )
        role = location.get("ExecutionRoleName")
        if role is not None and not ROLE_NAME.match(role):
            raise validation(
                f"Value '{role}' at 'executionRoleName' failed to satisfy constraint: Member must "
                "satisfy regular expression pattern: [\\w+=,.@/-]+"
            )
        for excluded in location.get("ExcludeAccounts") or []:
            if not (ACCOUNT.match(excluded) or OU.match(excluded)):
                raise validation(f"Value '{excluded}' at 'excludeAccounts' is not an account id or an OU id.")


def refuse_approval_steps(content: dict) -> None:
    """AWS: aws:approve "doesn't support multi-account and Region automations" (its action page). AWS
    documents no error for it: refusing the Start, and this code and message, are the sandbox's choice."""
    approvals = [s["name"] for s in content.get("mainSteps") or [] if s.get("action") == "aws:approve"]
    if approvals:
        raise AwsError(
            "InvalidAutomationExecutionParametersException",
            f"The runbook has aws:approve steps ({', '.join(approvals)}); the aws:approve action "
            "doesn't support multi-account and Region automations.",
        )


def _organization(state):
    """The central account's organization in moto, or None."""
    from moto.organizations.models import organizations_backends

    backend = organizations_backends[state.account_id]["aws"]
    return backend if backend.org else None


def _ou_accounts(backend, ou_id: str, include_children: bool) -> list[str]:
    accounts = [a.id for a in backend.accounts if a.parent_id == ou_id]
    if include_children:
        for ou in backend.ou:
            if ou.parent_id == ou_id:
                accounts += _ou_accounts(backend, ou.id, True)
    return accounts


def expand(state, locations: list[dict]) -> list[dict]:
    """[{Account, Region, ExecutionRoleName}] in request order; an OU must be in the organization."""
    world.ensure_organization(state.sandbox)
    backend = _organization(state)
    known_ous = {ou.id for ou in backend.ou} if backend else set()
    out, seen = [], set()
    for location in locations:
        include = bool(location.get("IncludeChildOrganizationUnits"))
        excluded: set[str] = set()
        for item in location.get("ExcludeAccounts") or []:
            excluded |= set(_ou_accounts(backend, item, include)) if OU.match(item) and backend else {item}
        accounts: list[str] = []
        for item in location["Accounts"]:
            if OU.match(item):
                if item not in known_ous:
                    raise validation(
                        f"The organizational unit {item} was not found in the organization of account "
                        f"{state.account_id}."
                    )
                accounts += _ou_accounts(backend, item, include)
            else:
                accounts.append(item)
        role = location.get("ExecutionRoleName") or DEFAULT_ROLE
        for account in accounts:
            for region in location["Regions"]:
                if account in excluded or (account, region) in seen:
                    continue
                seen.add((account, region))
                out.append({"Account": account, "Region": region, "ExecutionRoleName": role})
    if not out:
        raise validation("TargetLocations resolved to no account and Region.")
    return out


def parent_fields(state, p: dict, content: dict) -> dict:
    """The parent execution's fields (it runs no steps itself; `advance` does its work)."""
    refuse_approval_steps(content)
    locations = expand(state, p["TargetLocations"])
    first = p["TargetLocations"][0]
    steps = []
    for location in locations:
        step = new_step({"name": f"{location['Account']}-{location['Region']}", "action": "aws:executeAutomation"})
        step["TargetLocation"] = {
            "Accounts": [location["Account"]],
            "Regions": [location["Region"]],
            "ExecutionRoleName": location["ExecutionRoleName"],
        }
        steps.append(step)
    return {
        "AutomationType": "CrossAccount",
        "TargetLocations": p["TargetLocations"],
        "StepExecutions": steps,
        "_locations": locations,
        "_location_children": [],
        "_max_concurrency": str(first.get("TargetLocationMaxConcurrency") or "1"),
        "_max_errors": str(first.get("TargetLocationMaxErrors") or "0"),
    }


def _role_exists(state, account: str, role_name: str) -> bool:
    from moto.iam.models import iam_backends

    world.ensure_member(state.sandbox, account)
    try:
        iam_backends[account]["global"].get_role(role_name.rsplit("/", 1)[-1])
        return True
    except Exception:  # noqa: BLE001 - moto raises IAMNotFoundException
        return False


def _launch(region, parent: dict, location: dict, faults) -> dict:
    """One child execution in `location`, as the execution role assumed in that account."""
    account, role_name = location["Account"], location["ExecutionRoleName"]
    role_arn = f"arn:aws:iam::{account}:role/{role_name}"
    failure = None
    caller = Caller("", parent["ExecutedBy"])
    if _role_exists(region.state, account, role_name):
        central = caller_of(parent)  # chained: the human's SourceIdentity carries over
        req = Request(region.state, region, "sts", "AssumeRole",
                      {"RoleArn": role_arn, "RoleSessionName": f"Automation-{parent['AutomationExecutionId'][:36]}"[:64]},
                      central, str(uuid.uuid4()), faults=faults)
        key = sts.assume_role(req)["Credentials"]["AccessKeyId"]
        caller = sts.identify(region.state, key)
    else:
        key = ""
        failure = (
            f"Failed to assume the execution role {role_arn}: the role does not exist in account {account} "
            "(create the execution role in every target account)."
        )
    # Its steps' calls carry the execution role's key: that is who acts (Sandbox.execution RunsAs).
    child = new_child(region, parent, dict(parent["Parameters"]), caller=caller, failure=failure,
                      extra={"_location": dict(location), "_access_key": key, "_runs_as": caller.arn})
    parent["_location_children"].append(child["AutomationExecutionId"])
    step = parent["StepExecutions"][len(parent["_location_children"]) - 1]
    step["Outputs"] = {"ExecutionId": [child["AutomationExecutionId"]]}
    return child


def location_failure(execution: dict, faults) -> str | None:
    """The fault `fail_locations` ("ACCOUNT:REGION") fails every step of a child there."""
    location = execution.get("_location")
    if location and f"{location['Account']}:{location['Region']}" in faults.fail_locations:
        return "Step forced to fail by the sandbox fault fail_locations."
    return None


def advance(region, parent: dict, now: float, faults) -> None:
    locations = parent["_locations"]
    children = [region.executions[c] for c in parent["_location_children"]]
    running = [c for c in children if not is_terminal(c["AutomationExecutionStatus"])]
    failed = [c for c in children if c["AutomationExecutionStatus"] in FAILED]
    if parent.get("_cancel"):
        for child in running:
            request_cancel(child)
        if not running:
            _mirror(parent, children, now)
            finish(region, parent, "Cancelled")
        return
    max_concurrency = rate_control.limit(parent["_max_concurrency"], len(locations), round_up=True)
    max_errors = rate_control.limit(parent["_max_errors"], len(locations), round_up=False)
    stopped = len(failed) > max_errors
    while not stopped and len(running) < max_concurrency and len(children) < len(locations):
        child = _launch(region, parent, locations[len(children)], faults)
        children.append(child)
        if is_terminal(child["AutomationExecutionStatus"]):
            failed.append(child)
            stopped = len(failed) > max_errors
        else:
            running.append(child)
    _mirror(parent, children, now)
    region.state.mark_dirty()
    if running or (not stopped and len(children) < len(locations)):
        return
    if failed:
        # AWS documents no final status for this case: Failed unless a test asks for another of the
        # four its API lists (faults.parent_status_on_location_failure; docs/multi-account.md).
        reason = "TargetLocationMaxErrors was exceeded; remaining locations were not started. " if stopped else ""
        status = faults.parent_status_on_location_failure
        message = f"{reason}{len(failed)} of {len(locations)} locations failed."
        finish(region, parent, status, None if status in ("Success", "CompletedWithSuccess") else message)
    else:
        finish(region, parent, "Success")


def _mirror(parent: dict, children: list[dict], now: float) -> None:
    """Each location's step shows its child's status and times."""
    for step, child in zip(parent["StepExecutions"], children, strict=False):
        status = child["AutomationExecutionStatus"]
        step["StepStatus"] = status if status != "Cancelling" else "InProgress"
        # aws:executeAutomation's documented outputs: ExecutionId and Status of the secondary execution.
        step["Outputs"] = {"ExecutionId": [child["AutomationExecutionId"]], "Status": [status]}
        step["ExecutionStartTime"] = child["ExecutionStartTime"]
        if is_terminal(status):
            step["ExecutionEndTime"] = child.get("ExecutionEndTime", now)
            if child.get("FailureMessage"):
                step["FailureMessage"] = child["FailureMessage"]
