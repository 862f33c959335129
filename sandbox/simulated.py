"""Step actions and AWS calls the sandbox cannot really perform: they succeed as simulations.

Nothing here pretends silently: every simulated step takes a little (scaled) time, says
"Simulated by the Delegate sandbox" in its Response and carries a `SandboxNote` output naming
what did not happen. S3 bucket encryption is the one exception with a little state of its
own, so `AWS-EnableS3BucketKeys` (Put then assert Get) runs end to end.
"""

from __future__ import annotations

import json
import uuid

from .outcome import Outcome, StepContext, StepFailure, done

SIMULATED_SECONDS = 1.5  # how long a simulated step "runs" before time_scale
PREFIX = "Simulated by the Delegate sandbox"


def simulated_step(ctx: StepContext, what_did_not_happen: str, outputs: dict | None = None) -> Outcome:
    """Take SIMULATED_SECONDS, then succeed with a note saying what was not done."""
    until = ctx.scratch.setdefault("until", ctx.now + ctx.region.scaled(SIMULATED_SECONDS))
    if ctx.now < until:
        return ctx.later(SIMULATED_SECONDS / 3)
    note = f"{PREFIX}: {what_did_not_happen}."
    return done({**(outputs or {}), "SandboxNote": note}, message=note)


def _arn(ctx: StepContext, service: str, resource: str) -> str:
    return f"arn:aws:{service}:{ctx.region.name}:{ctx.region.account_id}:{resource}"


def create_stack(ctx: StepContext) -> Outcome:
    name = ctx.inputs.get("StackName", "stack")
    return simulated_step(
        ctx,
        f"no CloudFormation stack {name} was created",
        {
            "StackId": _arn(ctx, "cloudformation", f"stack/{name}/{uuid.uuid4()}"),
            "StackStatus": "CREATE_COMPLETE",
            "StackStatusReason": PREFIX,
        },
    )


def delete_stack(ctx: StepContext) -> Outcome:
    return simulated_step(ctx, f"no CloudFormation stack {ctx.inputs.get('StackName', '')} was deleted")


def invoke_lambda(ctx: StepContext) -> Outcome:
    function = ctx.inputs.get("FunctionName", "")
    payload = {
        "simulated": True,
        "note": f"{PREFIX}: Lambda function {function} was not invoked",
        "request": ctx.inputs.get("Payload"),
    }
    return simulated_step(
        ctx,
        f"Lambda function {function} was not invoked",
        {"StatusCode": 200, "Payload": json.dumps(payload)},
    )


def run_command(ctx: StepContext) -> Outcome:
    document = ctx.inputs.get("DocumentName", "")
    return simulated_step(
        ctx,
        f"Run Command document {document} was not sent to any instance",
        {
            "CommandId": ctx.scratch.setdefault("command_id", str(uuid.uuid4())),
            "Status": "Success",
            "ResponseCode": 0,
            "Output": f"{PREFIX}: no command output",
        },
    )


def execute_script(ctx: StepContext) -> Outcome:
    return simulated_step(
        ctx, "the script was not executed", {"OutputPayload": json.dumps({"Payload": {"simulated": True}})}
    )


def execute_state_machine(ctx: StepContext) -> Outcome:
    return simulated_step(
        ctx,
        "no Step Functions execution was started",
        {
            "ExecutionArn": _arn(
                ctx, "states", f"execution:{ctx.inputs.get('stateMachineArn', 'machine')}:{uuid.uuid4()}"
            ),
            "Status": "SUCCEEDED",
        },
    )


def unknown(ctx: StepContext) -> Outcome:
    return simulated_step(ctx, f"{ctx.step['Action']} is not modelled, so nothing was done")


ACTIONS = {
    "aws:createStack": create_stack,
    "aws:deleteStack": delete_stack,
    "aws:invokeLambdaFunction": invoke_lambda,
    "aws:runCommand": run_command,
    "aws:executeScript": execute_script,
    "aws:executeStateMachine": execute_state_machine,
}
