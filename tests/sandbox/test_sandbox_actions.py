"""Step actions with real effects on moto's state: stacks, Lambda code, scripts, Run Command; refusals.

Never a fake Success: each Success here is checked against state read back over the API.
"""

from __future__ import annotations

import json

import pytest

from sandbox.inventory import seeded_id

ROLE = "arn:aws:iam::123456789012:role/platform-automation"
LAMBDA_CODE = """
import boto3

def handler(event, context):
    ec2 = boto3.client("ec2")
    ec2.create_tags(Resources=[event["InstanceId"]], Tags=[{"Key": "TouchedBy", "Value": event["Run"]}])
    return {"tagged": event["InstanceId"]}
"""
SCRIPT = """
import boto3

def script_handler(events, context):
    ec2 = boto3.client("ec2")
    instance = ec2.describe_instances(InstanceIds=[events["InstanceId"]])["Reservations"][0]["Instances"][0]
    return {"TouchedBy": {t["Key"]: t["Value"] for t in instance["Tags"]}.get("TouchedBy")}
"""
TEMPLATE = {
    "Resources": {
        "Role": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}],
                }
            },
        },
        "Function": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "FunctionName": {"Ref": "LambdaName"},
                "Runtime": "python3.12",
                "Handler": "index.handler",
                "Role": {"Fn::GetAtt": ["Role", "Arn"]},
                "Code": {"ZipFile": LAMBDA_CODE},
            },
        },
    },
    "Parameters": {"LambdaName": {"Type": "String"}},
}


@pytest.fixture
def run(ssm, sandbox):
    def start_and_wait(name: str, steps: list[dict], parameters: dict, values: dict, assume_role: bool = True):
        content = {"schemaVersion": "0.3", "parameters": parameters, "mainSteps": steps}
        if assume_role:
            content["assumeRole"] = "{{ AutomationAssumeRole }}"
        ssm.create_document(Name=name, DocumentType="Automation", Content=json.dumps(content))
        execution_id = ssm.start_automation_execution(DocumentName=name, Parameters=values)["AutomationExecutionId"]
        return sandbox.wait_for_execution(execution_id, timeout=60)

    return start_and_wait


def test_stack_lambda_script_and_run_command_act_for_real(run, client, sandbox):
    instance = seeded_id("i", "eu-west-1", "api-1")
    steps = [
        {"name": "createStack", "action": "aws:createStack", "inputs": {
            "StackName": "Touch{{automation:EXECUTION_ID}}", "TemplateBody": json.dumps(TEMPLATE),
            "Capabilities": ["CAPABILITY_IAM"],
            "Parameters": [{"ParameterKey": "LambdaName", "ParameterValue": "touch-{{automation:EXECUTION_ID}}"}]}},
        {"name": "invoke", "action": "aws:invokeLambdaFunction", "inputs": {
            "FunctionName": "touch-{{automation:EXECUTION_ID}}",
            "Payload": '{"InstanceId": "{{ InstanceId }}", "Run": "{{automation:EXECUTION_ID}}"}'}},
        {"name": "readBack", "action": "aws:executeScript", "inputs": {
            "Runtime": "python3.11", "Handler": "script_handler", "Script": SCRIPT,
            "InputPayload": {"InstanceId": "{{ InstanceId }}"}},
         "outputs": [{"Name": "TouchedBy", "Selector": "$.Payload.TouchedBy", "Type": "String"}]},
        {"name": "runCommand", "action": "aws:runCommand", "inputs": {
            "DocumentName": "AWS-RunShellScript", "InstanceIds": ["{{ InstanceId }}"],
            "Parameters": {"commands": ["uptime"]}}},
        {"name": "deleteStack", "action": "aws:deleteStack", "inputs": {"StackName": "Touch{{automation:EXECUTION_ID}}"}},
    ]
    parameters = {"InstanceId": {"type": "String"}, "AutomationAssumeRole": {"type": "String", "default": ""}}
    finished = run("Team-Touch", steps, parameters, {"InstanceId": [instance], "AutomationAssumeRole": [ROLE]})
    execution_id = finished["AutomationExecutionId"]
    assert finished["AutomationExecutionStatus"] == "Success", finished.get("FailureMessage")
    steps_by_name = {s["StepName"]: s for s in finished["StepExecutions"]}
    # The Lambda's own Python ran against the sandbox: the tag is on the instance.
    tags = client("ec2").describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["Tags"]
    assert {"Key": "TouchedBy", "Value": execution_id} in tags
    assert json.loads(steps_by_name["invoke"]["Outputs"]["Payload"][0]) == {"tagged": instance}
    # The script really ran and read the tag back.
    assert steps_by_name["readBack"]["Outputs"]["TouchedBy"] == [execution_id]
    # Run Command went to moto and says plainly that nothing ran on a machine.
    assert "no command ran" in steps_by_name["runCommand"]["Outputs"]["Output"][0]
    command_id = steps_by_name["runCommand"]["Outputs"]["CommandId"][0]
    assert client("ssm").list_commands(CommandId=command_id)["Commands"][0]["DocumentName"] == "AWS-RunShellScript"
    # The stack (and the function it made) existed and is gone again.
    stacks = client("cloudformation").describe_stacks(StackName=steps_by_name["createStack"]["Outputs"]["StackId"][0])
    assert stacks["Stacks"][0]["StackStatus"] == "DELETE_COMPLETE"
    functions = [f["FunctionName"] for f in client("lambda").list_functions()["Functions"]]
    assert f"touch-{execution_id}" not in functions
    # Runs as: the role given in the parameter assumeRole references.
    assert sandbox.execution(execution_id)["RunsAs"] == ROLE


def test_runs_as_the_caller_without_assume_role(run, sandbox):
    steps = [{"name": "nap", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}}]
    finished = run("Team-Nap", steps, {}, {}, assume_role=False)
    assert finished["AutomationExecutionStatus"] == "Success"
    assert sandbox.execution(finished["AutomationExecutionId"])["RunsAs"] == "arn:aws:iam::123456789012:user/sandbox"


@pytest.mark.parametrize(
    "step, fragment",
    [
        ({"action": "aws:executeStateMachine", "inputs": {"stateMachineArn": "arn:aws:states:eu-west-1:1:x"}},
         "aws:executeStateMachine is not emulated by the Delegate sandbox"),
        ({"action": "aws:executeScript", "inputs": {"Runtime": "PowerShell 7.4", "Handler": "h", "Script": "x"}},
         "runtime PowerShell 7.4 is not emulated"),
        ({"action": "aws:invokeLambdaFunction", "inputs": {"FunctionName": "no-such-function"}},
         "Function not found: no-such-function"),
        ({"action": "aws:executeAwsApi", "inputs": {"Service": "ssm", "Api": "DescribeInstanceInformation"}},
         "not emulated by the Delegate sandbox"),
        ({"action": "aws:executeScript", "inputs": {"Runtime": "python3.11", "Handler": "script_handler",
                                                    "Script": "def script_handler(e, c):\n    raise ValueError('boom')"}},
         "ValueError: boom"),
    ],
)
def test_what_cannot_be_emulated_fails_saying_so(run, step, fragment):
    finished = run("Team-Refused", [{"name": "only", **step}], {}, {}, assume_role=False)
    assert finished["AutomationExecutionStatus"] == "Failed"
    assert fragment in finished["FailureMessage"]
