"""Step actions on other AWS services, for real against moto, or refused saying what is not emulated.

- aws:createStack / aws:deleteStack: moto CloudFormation stacks (their resources are created).
- aws:invokeLambdaFunction: the function's own Python (from moto's Lambda, e.g. inline `ZipFile`
  code of a CloudFormation template) runs in a subprocess with boto3 pointed at the sandbox.
- aws:executeScript: the inline Python script runs the same way, with a time limit.
- aws:runCommand: moto's Run Command records the command; nothing runs on an instance (sandbox
  instances have no agent) and the step's output says so.
- Anything else fails its step naming what is not emulated: never a Success without its effect.
"""

from __future__ import annotations

import json
import time

import yaml

from . import aws_calls, scripts
from .outcome import Outcome, StepContext, StepFailure, done

SCRIPT_TIME_LIMIT = 600  # seconds of real time; aws:executeScript's own maximum
CREATE_STACK_KEYS = (
    "StackName", "TemplateBody", "TemplateURL", "Parameters", "Capabilities", "Tags", "RoleARN",
    "OnFailure", "TimeoutInMinutes", "NotificationARNs", "DisableRollback", "StackPolicyBody",
    "StackPolicyURL", "ResourceTypes", "ClientRequestToken", "EnableTerminationProtection",
)


def _required(ctx: StepContext, name: str):
    if ctx.inputs.get(name) in (None, "", []):
        raise StepFailure(f"Input {name} is required by {ctx.step['Action']}.")
    return ctx.inputs[name]


def _template_check(body: str) -> None:
    """AWS refuses a body that is not a template; moto would crash on some of them."""
    try:
        template = json.loads(body)
    except ValueError:
        try:
            template = yaml.load(body, Loader=_CfnLoader)
        except yaml.YAMLError:
            template = None
    if not isinstance(template, dict) or not template.get("Resources"):
        raise StepFailure(
            "Template format error: the TemplateBody is not a CloudFormation template with Resources "
            f"(it is {body[:40]!r})."
        )


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form intrinsic functions (!Ref, !Sub, ...)."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def create_stack(ctx: StepContext) -> Outcome:
    if "stack_id" not in ctx.scratch:
        params = {k: ctx.inputs[k] for k in CREATE_STACK_KEYS if ctx.inputs.get(k) not in (None, "", [])}
        _required(ctx, "StackName")
        if "TemplateBody" in params:
            _template_check(params["TemplateBody"])
        elif "TemplateURL" not in params:
            raise StepFailure("aws:createStack needs TemplateBody or TemplateURL.")
        for key in ("TimeoutInMinutes",):
            if key in params:
                params[key] = int(params[key])
        ctx.scratch["stack_id"] = aws_calls.call(ctx, "cloudformation", "CreateStack", params)["StackId"]
    stack = aws_calls.call(ctx, "cloudformation", "DescribeStacks", {"StackName": ctx.scratch["stack_id"]})[
        "Stacks"
    ][0]
    status = stack["StackStatus"]
    outputs = {"StackId": stack["StackId"], "StackStatus": status, "StackStatusReason": stack.get("StackStatusReason", "")}
    if status.endswith("_IN_PROGRESS"):
        return ctx.later()
    if status != "CREATE_COMPLETE":
        raise StepFailure(f"Stack {stack['StackName']} ended {status}: {stack.get('StackStatusReason', '')}")
    return done(outputs, message=f"Stack {stack['StackName']} created ({status})")


def delete_stack(ctx: StepContext) -> Outcome:
    name = _required(ctx, "StackName")
    if "stack_id" not in ctx.scratch:
        found = aws_calls.call(ctx, "cloudformation", "DescribeStacks", {"StackName": name})["Stacks"]
        ctx.scratch["stack_id"] = found[0]["StackId"]
        aws_calls.call(ctx, "cloudformation", "DeleteStack", {"StackName": ctx.scratch["stack_id"]})
    try:
        stack = aws_calls.call(ctx, "cloudformation", "DescribeStacks", {"StackName": ctx.scratch["stack_id"]})[
            "Stacks"
        ][0]
    except StepFailure as exc:
        if "does not exist" not in str(exc):
            raise
        return done(message=f"Stack {name} deleted")
    status = stack["StackStatus"]
    if status == "DELETE_COMPLETE":
        return done(message=f"Stack {name} deleted")
    if status.endswith("_IN_PROGRESS"):
        return ctx.later()
    raise StepFailure(f"Deleting stack {name} ended {status}: {stack.get('StackStatusReason', '')}")


def _poll_run(ctx: StepContext, what: str):
    """(ok, result, logs) once the subprocess is done, or None while it runs."""
    key = ctx.step["StepExecutionId"]
    run = scripts.get(key)
    if run is None:
        raise StepFailure(f"The {what} process was lost (the sandbox restarted while it ran).")
    if not run.finished():
        if time.time() > run.deadline:
            scripts.finish(key)
            raise StepFailure(f"The {what} did not finish within {SCRIPT_TIME_LIMIT} seconds and was stopped.")
        return None
    ok, result, logs = run.result()
    scripts.finish(key)
    return ok, result, logs


def invoke_lambda(ctx: StepContext) -> Outcome:
    name = _required(ctx, "FunctionName")
    if not ctx.scratch.get("started"):
        from moto.awslambda.models import lambda_backends

        state = ctx.region.state
        try:
            function = lambda_backends[state.account_id][ctx.region.name].get_function(name, ctx.inputs.get("Qualifier"))
        except Exception as exc:  # moto's UnknownFunctionException and friends
            raise StepFailure(f"An error occurred (ResourceNotFoundException) when calling the Invoke operation: "
                              f"Function not found: {name} ({type(exc).__name__})") from None
        runtime = function.run_time or ""
        if not runtime.startswith("python"):
            raise StepFailure(f"Lambda runtime {runtime or '(image)'} is not emulated by the Delegate sandbox "
                              "(only Python functions run).")
        if not function.code_bytes:
            raise StepFailure(f"Lambda function {name} has no code the sandbox can run (S3 or image code is not emulated).")
        payload = ctx.inputs.get("Payload") or "{}"
        try:
            event = json.loads(payload) if isinstance(payload, str) else payload
        except ValueError:
            raise StepFailure("The Lambda Payload is not valid JSON.") from None
        context = {"function_name": function.function_name, "aws_request_id": ctx.step["StepExecutionId"]}
        scripts.start(ctx.step["StepExecutionId"], scripts.unzip(function.code_bytes), function.handler, event,
                      context, state.sandbox.url, ctx.region.name, time.time() + SCRIPT_TIME_LIMIT)
        ctx.scratch["started"] = True
    finished = _poll_run(ctx, f"Lambda function {name}")
    if finished is None:
        return ctx.later(0.2)
    ok, result, logs = finished
    if not ok:
        raise StepFailure(f"Lambda function {name} failed (FunctionError Unhandled): {result}")
    return done(
        {"StatusCode": 200, "Payload": json.dumps(result), "LogResult": logs[-1000:]},
        message=f"Lambda function {name} ran its Python code in the sandbox",
    )


def execute_script(ctx: StepContext) -> Outcome:
    if not ctx.scratch.get("started"):
        runtime = str(_required(ctx, "Runtime"))
        if not runtime.startswith("python"):
            raise StepFailure(f"aws:executeScript runtime {runtime} is not emulated by the Delegate sandbox (Python only).")
        if ctx.inputs.get("Attachment"):
            raise StepFailure("aws:executeScript attachments are not emulated by the Delegate sandbox.")
        script = _required(ctx, "Script")
        handler = str(_required(ctx, "Handler"))
        if "." in handler:
            raise StepFailure("aws:executeScript Handler must name a function in the inline Script.")
        scripts.start(ctx.step["StepExecutionId"], {"script.py": str(script).encode()}, f"script.{handler}",
                      ctx.inputs.get("InputPayload") or {}, {}, ctx.region.state.sandbox.url, ctx.region.name,
                      time.time() + SCRIPT_TIME_LIMIT)
        ctx.scratch["started"] = True
    finished = _poll_run(ctx, "script")
    if finished is None:
        return ctx.later(0.2)
    ok, result, logs = finished
    if not ok:
        raise StepFailure(f"The script failed: {result}")
    return done(
        {"OutputPayload": json.dumps({"Payload": result}, default=str)},
        response={"Payload": result},
        message=f"Script ran in the sandbox{': ' + logs.strip()[-300:] if logs.strip() else ''}",
    )


def run_command(ctx: StepContext) -> Outcome:
    document = _required(ctx, "DocumentName")
    params = {k: ctx.inputs[k] for k in ("DocumentName", "InstanceIds", "Targets", "Parameters", "Comment",
                                        "TimeoutSeconds", "MaxConcurrency", "MaxErrors", "DocumentVersion")
              if ctx.inputs.get(k) not in (None, "", [])}
    if "TimeoutSeconds" in params:
        params["TimeoutSeconds"] = int(params["TimeoutSeconds"])
    if isinstance(params.get("Parameters"), dict):
        params["Parameters"] = {k: v if isinstance(v, list) else [str(v)] for k, v in params["Parameters"].items()}
    command = aws_calls.call(ctx, "ssm", "SendCommand", params)["Command"]
    targets = ", ".join(command.get("InstanceIds") or []) or "its targets"
    note = (
        f"Run Command {document} was recorded by moto for sandbox instance(s) {targets}; sandbox "
        "instances have no SSM Agent, so no command ran on any machine."
    )
    return done(
        {"CommandId": command["CommandId"], "Status": command.get("Status", "Success"), "ResponseCode": 0,
         "Output": note},
        message=note,
    )


def not_emulated(ctx: StepContext) -> Outcome:
    raise StepFailure(f"{ctx.step['Action']} is not emulated by the Delegate sandbox, so this step did nothing.")


ACTIONS = {
    "aws:createStack": create_stack,
    "aws:deleteStack": delete_stack,
    "aws:invokeLambdaFunction": invoke_lambda,
    "aws:runCommand": run_command,
    "aws:executeScript": execute_script,
}
