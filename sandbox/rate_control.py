"""Rate control: a parent execution fans out into one child execution per target.

Targets come from `ParameterValues`, from EC2 tags (`tag:Key`, `tag-key`) or from TargetMaps.
The parent keeps at most MaxConcurrency children running, never pushes the region over the
concurrency quota, and stops starting new children once more than MaxErrors have failed
("3" stops at the 4th error, "0" after the first); children already running finish.
"""

from __future__ import annotations

import math
import re

from .errors import AwsError
from .executions import caller_of, finish, new_child, request_cancel
from .statuses import is_terminal

MAX_CONCURRENCY = re.compile(r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$")
MAX_ERRORS = re.compile(r"^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$")
FAILED = ("Failed", "TimedOut", "Cancelled")


def limit(spec: str, total: int, round_up: bool) -> int:
    if spec.endswith("%"):
        share = total * int(spec[:-1]) / 100
        return max(1, math.ceil(share)) if round_up else math.floor(share)
    return int(spec)


def resolve_targets(region, targets: list[dict]) -> list[str]:
    """The target values of a Targets list (at most one entry, checked by the caller)."""
    values: list[str] = []
    for target in targets:
        key, wanted = target.get("Key", ""), list(target.get("Values") or [])
        if key == "ParameterValues":
            values.extend(wanted)
        elif key.startswith("tag:") or key == "tag-key":
            for instance in sorted(region.state.sandbox.inventory(region.name), key=lambda r: r["InstanceId"]):
                if instance["State"] == "terminated":
                    continue
                instance_id, tags = instance["InstanceId"], instance["Tags"]
                if (
                    key == "tag-key"
                    and any(k in tags for k in wanted)
                    or key.startswith("tag:")
                    and tags.get(key[4:]) in wanted
                ):
                    values.append(instance_id)
        else:
            raise AwsError(
                "InvalidTarget",
                f"Target key {key} is not supported by the Delegate sandbox "
                "(use ParameterValues, tag:<key> or tag-key).",
            )
    return values


def _active_in_region(region) -> int:
    return sum(1 for name, _ in region.state.active if name == region.name)


def _launch(region, parent: dict, target) -> dict:
    """One child execution for one target value (or one TargetMaps entry)."""
    given = dict(parent["_base_params"])
    if isinstance(target, dict):
        given.update(target)
        label = None
    else:
        given[parent["TargetParameterName"]] = [target]
        label = target
    child = new_child(region, parent, given, caller=caller_of(parent), extra={"Target": label} if label else None)
    parent["_children"].append(child["AutomationExecutionId"])
    return child


def advance(region, parent: dict, now: float, faults) -> None:
    targets = parent["_targets"]
    if not targets:
        finish(region, parent, "Failed", "No targets matched the Targets of this rate-control execution.")
        return
    children = [region.executions[c] for c in parent["_children"]]
    running = [c for c in children if not is_terminal(c["AutomationExecutionStatus"])]
    failed = [c for c in children if c["AutomationExecutionStatus"] in FAILED]
    if parent.get("_cancel"):
        for child in running:
            request_cancel(child)
        if not running:
            finish(region, parent, "Cancelled")
        return
    max_concurrency = limit(parent["MaxConcurrency"], len(targets), round_up=True)
    max_errors = limit(parent["MaxErrors"], len(targets), round_up=False)
    stopped = len(failed) > max_errors
    while (
        not stopped
        and len(running) < max_concurrency
        and len(children) < len(targets)
        and _active_in_region(region) < faults.concurrency_limit
    ):
        child = _launch(region, parent, targets[len(children)])
        children.append(child)
        if is_terminal(child["AutomationExecutionStatus"]):
            failed.append(child)
            stopped = len(failed) > max_errors
        else:
            running.append(child)
    succeeded = sum(1 for c in children if c["AutomationExecutionStatus"] == "Success")
    summary = {
        "TotalCount": len(targets),
        "StartedCount": len(children),
        "SuccessfulCount": succeeded,
        "FailedCount": len(failed),
        "CompletedCount": len(children) - len(running),
    }
    if summary != parent.get("TargetsSummary"):
        parent["TargetsSummary"] = summary
        region.state.mark_dirty()
    if running or (not stopped and len(children) < len(targets)):
        return
    if failed:
        reason = "MaxErrors was exceeded; remaining targets were not started. " if stopped else ""
        finish(region, parent, "Failed", f"{reason}{len(failed)} of {len(targets)} child executions failed.")
    else:
        finish(region, parent, "Success")
