"""The execution engine: one scheduler thread drives every automation execution in small ticks.

Each tick takes the state lock and advances every active execution as far as it can go
without waiting: a step that must wait (an instance still stopping, a sleep, an approval)
records when to look again and the engine moves on. So 150 concurrent executions cost 150
dict updates per tick, not 150 threads.

Per execution: `_next` names the step to run next (None = the end), `_current` indexes the
StepExecution running now. Steps follow AWS semantics: onFailure Abort / Continue / step:X,
nextStep, isEnd, maxAttempts, timeoutSeconds, onCancel, Interactive mode.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time

from . import actions, executions, rate_control, target_locations
from .executions import finish, new_step, refresh_outputs, set_running
from .outcome import StepContext, StepFailure
from .parameters import typed_default
from .statuses import is_terminal
from .templating import Unresolved, render, select

log = logging.getLogger(__name__)

TICK_SECONDS = 0.02
MAX_TRANSITIONS_PER_TICK = 25  # bounds a runbook that branches in a loop
RETRY_SECONDS = 1.0  # pause between attempts of a step with maxAttempts > 1 (before time_scale)


class Engine:
    def __init__(self, state, faults):
        self.state = state
        self.faults = faults
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sandbox-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            self.tick()

    def tick(self, now: float | None = None) -> None:
        with self.faults.engine_gate:  # see Faults.engine_paused
            if self.faults.engine_paused:
                return
            self._advance_all(now)

    def _advance_all(self, now: float | None) -> None:
        with self.state.lock:
            for key in list(self.state.active):
                region = self.state.regions.get(key[0])
                execution = region.executions.get(key[1]) if region else None
                if execution is None or is_terminal(execution["AutomationExecutionStatus"]):
                    self.state.active.pop(key, None)
                    continue
                try:
                    advance(region, execution, time.time() if now is None else now, self.faults)
                except Exception as exc:  # a sandbox bug must not stop every other execution
                    log.exception("sandbox engine failed on execution %s", key[1])
                    finish(region, execution, "Failed", f"Internal error in the Delegate sandbox: {exc!r}")


def advance(region, execution: dict, now: float, faults) -> None:
    if execution["AutomationExecutionStatus"] == "Pending":
        set_running(execution)
        region.state.mark_dirty()
    if "_children" in execution:
        rate_control.advance(region, execution, now, faults)
        return
    if "_locations" in execution:
        target_locations.advance(region, execution, now, faults)
        return
    for _ in range(MAX_TRANSITIONS_PER_TICK):
        if execution.get("_cancel") and not execution.get("_cancel_handled"):
            _handle_cancel(region, execution, now)
        if is_terminal(execution["AutomationExecutionStatus"]):
            return
        if execution["_current"] is None:
            if not _begin_next(region, execution, now, faults):
                return
            continue
        if not _run_current(region, execution, now, faults):
            return


def _definition(execution: dict, name: str) -> dict | None:
    return next((s for s in execution["_content"]["mainSteps"] if s["name"] == name), None)


def _following(execution: dict, definition: dict) -> str | None:
    """The step after `definition` when it has no explicit choice: isEnd, nextStep, or document order."""
    if executions.flag(definition.get("isEnd", False)):
        return None
    if definition.get("nextStep"):
        return definition["nextStep"]
    names = [s["name"] for s in execution["_content"]["mainSteps"]]
    index = names.index(definition["name"]) + 1
    return names[index] if index < len(names) else None


def _begin_next(region, execution: dict, now: float, faults) -> bool:
    """Start the step named by `_next`; False when the execution finished or must wait."""
    name = execution["_next"]
    if execution["Mode"] == "Interactive" and not execution.get("_cancel"):
        # Interactive: every step waits for SendAutomationSignal StartStep (or Resume).
        name = execution.pop("_go", None)
        if name is None:
            if execution["_next"] is None:
                finish(region, execution, _final_status(execution), _final_message(execution))
            elif execution["AutomationExecutionStatus"] != "Waiting":
                set_running(execution, "Waiting")
                region.state.mark_dirty()
            return False
    if name is None:
        finish(region, execution, _final_status(execution), _final_message(execution))
        return False
    definition = _definition(execution, name)
    if definition is None:
        finish(region, execution, "Failed", f"Step {name} does not exist in the runbook.")
        return False
    steps = execution["StepExecutions"]
    index = max((i for i, s in enumerate(steps) if s["StepName"] == name), default=None)
    if index is None or steps[index]["StepStatus"] != "Pending":
        steps.append(new_step(definition))  # a step that runs again (a loop) gets a new record
        index = len(steps) - 1
    step = steps[index]
    execution["_current"] = index
    execution["CurrentStepName"], execution["CurrentAction"] = name, definition["action"]
    set_running(execution)
    step.update(StepStatus="InProgress", ExecutionStartTime=now, _attempt=1)
    _start_attempt(region, step, definition, now)
    region.state.mark_dirty()
    try:
        inputs = render(definition.get("inputs") or {}, _lookup(region, execution))
    except Unresolved as exc:
        _fail(region, execution, step, str(exc), now, retryable=False)  # another attempt can't fix it
        return True
    step["_inputs"] = inputs
    step["Inputs"] = {key: json.dumps(value, default=str) for key, value in inputs.items()}
    return True


def _start_attempt(region, step: dict, definition: dict, now: float) -> None:
    step["_scratch"] = {}
    step.pop("_wake", None)
    timeout = definition.get("timeoutSeconds") or actions.DEFAULT_TIMEOUTS.get(definition["action"])
    step["_deadline"] = now + region.scaled(float(timeout)) if timeout else None


def _lookup(region, execution: dict):
    """What `{{ name }}` can refer to (aws-api.md §8.5)."""

    def lookup(name: str):
        now = dt.datetime.now(dt.UTC)
        location = execution.get("_location") or {}  # a multi-account child runs elsewhere
        fixed = {
            "automation:EXECUTION_ID": execution["AutomationExecutionId"],
            "automation:DOCUMENT_EXECUTION_ID": execution["AutomationExecutionId"],
            "global:REGION": location.get("Region") or region.name,
            "global:ACCOUNT_ID": location.get("Account") or region.account_id,
            "global:AWS_PARTITION": "aws",
            "global:URL_SUFFIX": "amazonaws.com",
            "global:DATE": now.strftime("%Y-%m-%d"),
            "global:DATE_TIME": now.strftime("%Y-%m-%d_%H.%M.%S"),
        }
        if name in fixed:
            return fixed[name]
        if name.startswith("variable:") and name[9:] in execution["_variables"]:
            spec = (execution["_content"].get("variables") or {}).get(name[9:], {})
            value = execution["_variables"][name[9:]]
            return typed_default(spec.get("type", "String"), value) if value is not None else ""
        if name in execution["_typed"]:
            return execution["_typed"][name]
        if name.startswith("ssm:"):
            raise Unresolved(f"{{{{ {name} }}}}: Parameter Store references are not modelled by the sandbox.")
        step, _, output = name.partition(".")
        produced = execution["_outputs"].get(step, {})
        if output and output in produced:
            return produced[output]
        raise Unresolved(
            f"Unable to resolve {{{{ {name} }}}}: no parameter, variable or step output of that "
            "name is available at this point."
        )

    return lookup


def _run_current(region, execution: dict, now: float, faults) -> bool:
    """Run the current step once; True if the execution can go on within this tick."""
    step = execution["StepExecutions"][execution["_current"]]
    if step.get("_deadline") and now >= step["_deadline"]:
        _fail(
            region,
            execution,
            step,
            f"Step timed out after {step.get('TimeoutSeconds', 'its default')} seconds.",
            now,
            timed_out=True,
        )
        return True
    if step.get("_wake", 0) > now:
        return False
    ctx = StepContext(region, execution, step, step["_inputs"], step["_scratch"], now, faults)
    try:
        if step["StepName"] in faults.fail_step:
            raise StepFailure("Step forced to fail by the sandbox fault fail_step.")
        forced = target_locations.location_failure(execution, faults)
        if forced:
            raise StepFailure(forced)
        outcome = actions.run(ctx)
    except StepFailure as exc:
        _fail(region, execution, step, str(exc), now)
        return True
    if outcome.kind == "poll":
        step["_wake"] = outcome.wake or now
        if step["StepStatus"] == "Waiting":
            step["StepStatus"] = "InProgress"
            set_running(execution)
        return False
    if outcome.kind == "wait":
        if step["StepStatus"] != "Waiting":
            step["StepStatus"] = "Waiting"
            set_running(execution, "Waiting")
            region.state.mark_dirty()
        return False
    _succeed(region, execution, step, outcome, now)
    return True


def _selected_outputs(definition: dict, response) -> dict:
    """The step's declared `outputs` (Name, Selector, Type), picked out of the API response."""
    values = {}
    for spec in definition.get("outputs") or []:
        try:
            value = select(response, spec["Selector"])
        except (KeyError, TypeError):
            continue  # AWS leaves an output unset when its selector matches nothing
        values[spec["Name"]] = _typed_output(spec.get("Type", "String"), value)
    return values


def _typed_output(kind: str, value):
    if kind == "Integer":
        return int(value)
    if kind == "Boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "StringList":
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if kind == "String" and not isinstance(value, str):
        return json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return value


def _succeed(region, execution: dict, step: dict, outcome, now: float) -> None:
    definition = _definition(execution, step["StepName"])
    outputs = {**outcome.outputs, **_selected_outputs(definition, outcome.response)}
    execution["_outputs"][step["StepName"]] = outputs
    step["Outputs"] = {name: executions.output_values(value) for name, value in outputs.items()}
    _end_step(step, "Success", now, response=outcome.message)
    execution["_current"] = None
    execution["_next"] = outcome.next_step if outcome.next_step else _following(execution, definition)
    set_running(execution)
    refresh_outputs(execution)
    region.state.mark_dirty()


def _end_step(step: dict, status: str, now: float, response: str = "", failure: str | None = None) -> None:
    step["StepStatus"] = status
    step["ExecutionEndTime"] = now
    if response:
        step["Response"] = response
    if failure:
        step["FailureMessage"] = failure
        step["FailureDetails"] = {
            "FailureStage": "Execution",
            "FailureType": "Verification" if status == "Failed" else status,
            "Details": {"Message": [failure]},
        }
    for key in ("_scratch", "_wake", "_deadline", "_inputs"):
        step.pop(key, None)


def _fail(
    region,
    execution: dict,
    step: dict,
    message: str,
    now: float,
    timed_out: bool = False,
    retryable: bool = True,
) -> None:
    """A failed attempt: retry while maxAttempts allows, else end the step and apply onFailure."""
    definition = _definition(execution, step["StepName"])
    attempt = step.get("_attempt", 1)
    if retryable and attempt < step["MaxAttempts"] and not execution.get("_cancel"):
        step["_attempt"] = attempt + 1
        step["Response"] = f"Attempt {attempt} of {step['MaxAttempts']} failed: {message}"
        _start_attempt(region, step, definition, now)
        step["_wake"] = now + region.scaled(RETRY_SECONDS)
        region.state.mark_dirty()
        return
    _end_step(step, "TimedOut" if timed_out else "Failed", now, failure=message)
    execution["_outputs"][step["StepName"]] = {}
    execution["_current"] = None
    set_running(execution)
    region.state.mark_dirty()
    if step["IsCritical"]:
        execution["_failed"] = {"step": step["StepName"], "message": message, "timed_out": timed_out}
    on_failure = str(definition.get("onFailure", "Abort"))
    if on_failure == "Continue":
        execution["_next"] = _following(execution, definition)
    elif on_failure.startswith("step:"):
        execution["_next"] = on_failure[5:]
    else:  # Abort
        failure = {"step": step["StepName"], "message": message, "timed_out": timed_out}
        finish(region, execution, "TimedOut" if timed_out else "Failed", _failure_text(failure))


def _failure_text(failure: dict) -> str:
    return f"Step {failure['step']} {'timed out' if failure['timed_out'] else 'failed'}: {failure['message']}"


def _final_status(execution: dict) -> str:
    if execution.get("_cancel"):
        return "Cancelled"
    failure = execution.get("_failed")
    if failure:
        return "TimedOut" if failure["timed_out"] else "Failed"
    return "Success"


def _final_message(execution: dict) -> str | None:
    failure = execution.get("_failed")
    return _failure_text(failure) if failure and not execution.get("_cancel") else None


def _handle_cancel(region, execution: dict, now: float) -> None:
    """Cancel the running step; run its onCancel step if it names one, else end Cancelled."""
    execution["_cancel_handled"] = True
    on_cancel = ""
    if execution["_current"] is not None:
        step = execution["StepExecutions"][execution["_current"]]
        child = step.get("_scratch", {}).get("child")
        if child and child in region.executions:
            executions.request_cancel(region.executions[child])
        _end_step(step, "Cancelled", now)
        on_cancel = str(_definition(execution, step["StepName"]).get("onCancel", ""))
        execution["_current"] = None
    region.state.mark_dirty()
    if on_cancel.startswith("step:"):
        execution["_next"] = on_cancel[5:]  # runs while the execution stays Cancelling
        execution.pop("_go", None)
    else:
        finish(region, execution, "Cancelled")
