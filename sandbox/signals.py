"""SendAutomationSignal: what each signal does to a running execution (aws-api.md §6).

Signals only record the decision on the waiting step (its `_scratch`) or tell an Interactive
execution which step to run; the engine's next tick acts on it.
"""

from __future__ import annotations

import time

from .errors import AwsError
from .executions import request_cancel
from .statuses import is_terminal

SIGNALS = ("Approve", "Reject", "StartStep", "StopStep", "Resume", "Revoke")


def _invalid(message: str) -> AwsError:
    return AwsError("InvalidAutomationSignalException", message)


def _current_step(execution: dict) -> dict | None:
    index = execution.get("_current")
    return execution["StepExecutions"][index] if index is not None else None


def _payload_value(payload: dict, key: str) -> str | None:
    values = payload.get(key) or []
    return values[0] if values else None


def send(region, execution: dict, signal: str, payload: dict, caller, faults) -> None:
    if is_terminal(execution["AutomationExecutionStatus"]) or execution.get("_cancel"):
        raise _invalid(
            f"Execution {execution['AutomationExecutionId']} is "
            f"{execution['AutomationExecutionStatus']} and accepts no signals."
        )
    step = _current_step(execution)
    if signal in ("Approve", "Reject"):
        _decide(execution, step, signal, payload, caller, faults)
    elif signal == "Resume":
        if step is not None and step["Action"] == "aws:pause" and step["StepStatus"] == "Waiting":
            step["_scratch"]["resumed"] = True
        elif execution["Mode"] == "Interactive" and step is None:
            _go(execution, _payload_value(payload, "StepName") or execution["_next"])
        else:
            raise _invalid(
                "Resume is valid only while an aws:pause step or an Interactive execution is waiting."
            )
    elif signal == "StartStep":
        if execution["Mode"] != "Interactive" or step is not None:
            raise _invalid("StartStep is valid only for an Interactive execution waiting between steps.")
        _go(execution, _payload_value(payload, "StepName"))
    elif signal == "StopStep":
        wanted = _payload_value(payload, "StepExecutionId")
        if step is None or wanted != step["StepExecutionId"]:
            raise AwsError(
                "AutomationStepNotFoundException", f"No running step has StepExecutionId {wanted}."
            )
        _stop_step(region, execution, step)
    else:  # Revoke
        raise _invalid("Revoke applies to change requests, which the sandbox does not model.")
    region.state.mark_dirty()


def _decide(execution: dict, step: dict | None, signal: str, payload: dict, caller, faults) -> None:
    if step is None or step["Action"] != "aws:approve" or step["StepStatus"] != "Waiting":
        raise _invalid(f"{signal} is valid only while an aws:approve step is waiting for approval.")
    if faults.enforce_approvers and not _is_approver(caller, step["_inputs"].get("Approvers") or []):
        raise AwsError("AccessDeniedException", f"{caller.arn} is not one of the approvers of this step.")
    decision = {
        "Approver": caller.arn,
        "Decision": "Approved" if signal == "Approve" else "Rejected",
        "Comment": _payload_value(payload, "Comment") or "",
        "DecisionTime": time.time(),
    }
    step["_scratch"].setdefault("decisions", []).append(decision)


def _is_approver(caller, approvers) -> bool:
    """Approvers name IAM users or roles, by name or ARN, or assumed-role ARNs (aws-api.md §8.5)."""
    approvers = approvers if isinstance(approvers, list) else [approvers]
    role_arn = caller.role_arn or ""
    names = {caller.arn, caller.arn.rsplit("/", 1)[-1], role_arn, role_arn.rsplit("/", 1)[-1]} - {""}
    return bool(names & set(approvers))


def _go(execution: dict, name: str | None) -> None:
    names = [s["name"] for s in execution["_content"]["mainSteps"]]
    if name not in names:
        raise AwsError("AutomationStepNotFoundException", f"Step {name} does not exist in the runbook.")
    execution["_go"] = name


def _stop_step(region, execution: dict, step: dict) -> None:
    """StopStep: the step ends Cancelled; an Auto execution then ends Cancelled too."""
    if execution["Mode"] == "Interactive":
        step.update(StepStatus="Cancelled", ExecutionEndTime=time.time())
        for key in ("_scratch", "_wake", "_deadline", "_inputs"):
            step.pop(key, None)
        execution["_current"] = None
        execution["AutomationExecutionStatus"] = "Waiting"
    else:
        request_cancel(execution)
