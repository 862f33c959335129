"""The execution engine: real effects on the inventory, signals, branches, failures, rate control."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from sandbox.statuses import TERMINAL
from tests.processes import wait_until

pytestmark = []

# Approvers are enforced (as AWS does): the test clients are user "sandbox" or the DelegateDispatch role.
APPROVAL_PARAMS = {"Approvers": ["sandbox", "DelegateDispatch"], "SNSTopicArn": ["arn:aws:sns:eu-west-1:123456789012:AutomationX"]}


def code_of(call) -> str:
    with pytest.raises(ClientError) as excinfo:
        call()
    return excinfo.value.response["Error"]["Code"]


def steps_by_name(execution: dict) -> dict[str, str]:
    return {s["StepName"]: s["StepStatus"] for s in execution["StepExecutions"]}


@pytest.fixture
def start(ssm, sandbox):
    """start(document, **parameters) -> execution id; a parameter value may be a string or a list."""

    def run(document: str, mode: str = "Auto", **parameters) -> str:
        params = {k: v if isinstance(v, list) else [v] for k, v in parameters.items()}
        return ssm.start_automation_execution(DocumentName=document, Parameters=params, Mode=mode)[
            "AutomationExecutionId"
        ]

    return run


@pytest.fixture
def create_runbook(ssm):
    def create(name: str, steps: list[dict], parameters: dict | None = None) -> str:
        content = {"schemaVersion": "0.3", "parameters": parameters or {}, "mainSteps": steps}
        ssm.create_document(Name=name, DocumentType="Automation", Content=json.dumps(content))
        return name

    return create


def test_restart_goes_through_every_state(start, sandbox, ssm, team_instances):
    web1, web2 = team_instances("platform")[:2]
    began = time.monotonic()
    execution_id = start("AWS-RestartEC2Instance", InstanceId=[web1, web2])
    execution = sandbox.wait_for_execution(execution_id, timeout=10)
    assert time.monotonic() - began < 2  # ~10 s of EC2 transitions at time_scale 50
    assert execution["AutomationExecutionStatus"] == "Success"
    for instance in (web1, web2):
        assert sandbox.state_history(instance) == ["running", "stopping", "stopped", "pending", "running"]
        assert sandbox.instance_state(instance) == "running"
    got = ssm.get_automation_execution(AutomationExecutionId=execution_id)["AutomationExecution"]
    assert [s["StepStatus"] for s in got["StepExecutions"]] == ["Success", "Success"]
    stop = got["StepExecutions"][0]
    assert json.loads(stop["Inputs"]["InstanceIds"]) == [web1, web2]
    assert json.loads(stop["Inputs"]["DesiredState"]) == "stopped"
    assert stop["ExecutionStartTime"] <= stop["ExecutionEndTime"]
    assert got["ProgressCounters"]["SuccessSteps"] == 2
    assert got["ExecutionEndTime"] >= got["ExecutionStartTime"]


def test_restart_takes_about_ten_seconds_at_scale_one():
    """The sandbox's own timings: a restart's transitions sum to ~9 s before scaling."""
    from sandbox import inventory

    total = inventory.TRANSITIONS["stopping"][1] + inventory.TRANSITIONS["pending"][1]
    assert 8 <= total <= 11


def test_status_moves_from_in_progress_to_success(start, sandbox, team_instances):
    execution_id = start("AWS-StopEC2Instance", InstanceId=team_instances("data")[0])
    seen: list[str] = []

    def finished() -> bool:
        status = sandbox.execution(execution_id)["AutomationExecutionStatus"]
        if not seen or seen[-1] != status:
            seen.append(status)
        return status in TERMINAL

    wait_until(finished, timeout=30, interval=0.005, what=f"the execution to finish (seen {seen})")
    assert "InProgress" in seen
    assert seen[-1] == "Success", seen


def test_approve_waits_then_approve_signal_runs_the_rest(start, ssm, sandbox, team_instances):
    instance = team_instances("platform")[0]
    execution_id = start("AWS-StopEC2InstanceWithApproval", InstanceId=instance, **APPROVAL_PARAMS)
    waiting = sandbox.wait_for_execution(execution_id, statuses=("Waiting",), timeout=5)
    assert steps_by_name(waiting)["approve"] == "Waiting"
    assert sandbox.instance_state(instance) == "running"
    assert (
        code_of(lambda: ssm.send_automation_signal(AutomationExecutionId=execution_id, SignalType="Resume"))
        == "InvalidAutomationSignalException"
    )
    ssm.send_automation_signal(
        AutomationExecutionId=execution_id, SignalType="Approve", Payload={"Comment": ["looks fine"]}
    )
    finished = sandbox.wait_for_execution(execution_id, timeout=10)
    assert finished["AutomationExecutionStatus"] == "Success"
    approve = finished["StepExecutions"][0]
    assert approve["Outputs"]["ApprovalStatus"] == ["Approved"]
    assert json.loads(approve["Outputs"]["ApproverDecisions"][0])["Comment"] == "looks fine"
    assert sandbox.instance_state(instance) == "stopped"
    assert (
        code_of(lambda: ssm.send_automation_signal(AutomationExecutionId=execution_id, SignalType="Approve"))
        == "InvalidAutomationSignalException"
    )


def test_reject_fails_the_step_and_the_execution(start, ssm, sandbox, team_instances):
    instance = team_instances("platform")[0]
    execution_id = start("AWS-TerminateEC2InstanceWithApproval", InstanceId=instance, **APPROVAL_PARAMS)
    sandbox.wait_for_execution(execution_id, statuses=("Waiting",), timeout=5)
    ssm.send_automation_signal(
        AutomationExecutionId=execution_id, SignalType="Reject", Payload={"Comment": ["not today"]}
    )
    finished = sandbox.wait_for_execution(execution_id, timeout=5)
    assert finished["AutomationExecutionStatus"] == "Failed"
    assert steps_by_name(finished) == {"approve": "Failed", "stopInstances": "Pending"}
    assert "not today" in finished["StepExecutions"][0]["FailureMessage"]
    assert "not today" in finished["FailureMessage"]
    assert sandbox.instance_state(instance) == "running"


def test_signal_errors(ssm):
    assert (
        code_of(lambda: ssm.send_automation_signal(AutomationExecutionId="0" * 36, SignalType="Approve"))
        == "AutomationExecutionNotFoundException"
    )
    assert (
        code_of(lambda: ssm.send_automation_signal(AutomationExecutionId="0" * 36, SignalType="Bogus"))
        == "ValidationException"
    )


def test_pause_and_resume_with_patch_runbook(start, ssm, sandbox, team_instances):
    instance = team_instances("platform")[0]
    execution_id = start("Delegate-PatchWithApproval", InstanceIds=instance, Approvers="sandbox")
    sandbox.wait_for_execution(execution_id, statuses=("Waiting",), timeout=5)
    ssm.send_automation_signal(AutomationExecutionId=execution_id, SignalType="Approve")
    deadline = time.monotonic() + 5
    while steps_by_name(sandbox.execution(execution_id))["verifyBeforeReboot"] != "Waiting":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert sandbox.execution(execution_id)["AutomationExecutionStatus"] == "Waiting"
    ssm.send_automation_signal(AutomationExecutionId=execution_id, SignalType="Resume")
    finished = sandbox.wait_for_execution(execution_id, timeout=10)
    assert finished["AutomationExecutionStatus"] == "Success"
    assert finished["Outputs"] == {"waitUntilRunning.FinalState": ["running"]}
    install = next(s for s in finished["StepExecutions"] if s["StepName"] == "installPatches")
    # aws:runCommand goes to moto's Run Command and says plainly that nothing ran on a machine.
    assert "no command ran" in install["Outputs"]["Output"][0]
    assert "no command ran" in install["Response"]


@pytest.mark.parametrize(
    "mode, compress, taken, skipped",
    [
        ("rotate-and-upload", "true", "rotateAndUpload", "rotateOnly"),
        ("rotate-and-upload", "false", "rotateOnly", "rotateAndUpload"),
        ("rotate", "true", "rotateOnly", "rotateAndUpload"),
    ],
)
def test_branch_with_and_and_boolean(start, sandbox, ec2, team_instances, mode, compress, taken, skipped):
    instance = team_instances("platform")[0]
    execution_id = start(
        "Delegate-RotateLogs",
        InstanceIds=instance,
        CollectorInstanceId=instance,
        Mode=mode,
        Compress=compress,
    )
    finished = sandbox.wait_for_execution(execution_id, timeout=10)
    assert finished["AutomationExecutionStatus"] == "Success", finished.get("FailureMessage")
    statuses = steps_by_name(finished)
    assert (statuses[taken], statuses[skipped]) == ("Success", "Pending")  # skipped steps stay Pending
    assert statuses["settle"] == statuses["tagInstances"] == "Success"
    tags = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["Tags"]
    assert {"Key": "LastLogRotation", "Value": execution_id} in tags
    assert finished["Outputs"][f"{skipped}.CommandId"] == [
        "No output available yet because the step is not successfully executed"
    ]


@pytest.mark.parametrize(
    "kms_key, branch_taken", [("", "PutBucketKeysAES256"), ("mrk-1234abcd", "PutBucketKeysKMS")]
)
def test_enable_s3_bucket_keys_branches_on_not_string_equals(start, sandbox, kms_key, branch_taken):
    params = {"BucketName": "delegate-sandbox-platform-logs"}
    if kms_key:
        params["KmsKeyId"] = kms_key
    finished = sandbox.wait_for_execution(start("AWS-EnableS3BucketKeys", **params), timeout=10)
    assert finished["AutomationExecutionStatus"] == "Success", finished.get("FailureMessage")
    assert steps_by_name(finished)[branch_taken] == "Success"
    assert steps_by_name(finished)["VerifyS3BucketKeysEnabled"] == "Success"


def test_fail_step_with_continue_goes_on(start, sandbox, team_instances):
    sandbox.faults.fail_step = {"stopInstances"}
    instance = team_instances("data")[0]
    finished = sandbox.wait_for_execution(start("AWS-StopEC2Instance", InstanceId=instance), timeout=10)
    # onFailure: Continue makes the step non-critical, so the execution still succeeds.
    assert steps_by_name(finished) == {"stopInstances": "Failed", "forceStopInstances": "Success"}
    assert finished["AutomationExecutionStatus"] == "Success"
    assert "fail_step" in finished["StepExecutions"][0]["FailureMessage"]
    assert sandbox.instance_state(instance) == "stopped"


def test_fail_step_with_abort_stops_the_execution(start, sandbox, team_instances):
    sandbox.faults.fail_step = {"stopInstances"}
    instance = team_instances("data")[0]
    finished = sandbox.wait_for_execution(start("AWS-RestartEC2Instance", InstanceId=instance), timeout=10)
    assert finished["AutomationExecutionStatus"] == "Failed"
    assert steps_by_name(finished) == {"stopInstances": "Failed", "startInstances": "Pending"}
    assert "stopInstances" in finished["FailureMessage"]
    assert sandbox.state_history(instance) == ["running"]


def test_fail_step_with_jump_runs_the_cleanup_step(create_runbook, start, sandbox, team_instances):
    # AWS-ResizeInstance's shape (its own stack template is elided in the fixtures): a failing
    # critical step jumps to the cleanup step; the steps in between stay Pending.
    create_runbook(
        "Team-ResizeShape",
        [
            {"name": "prepare", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}},
            {"name": "stopInstances", "action": "aws:changeInstanceState", "onFailure": "step:cleanup",
             "inputs": {"InstanceIds": ["{{ InstanceId }}"], "DesiredState": "stopped"}},
            {"name": "resizeInstance", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}},
            {"name": "startInstances", "action": "aws:changeInstanceState",
             "inputs": {"InstanceIds": ["{{ InstanceId }}"], "DesiredState": "running"}},
            {"name": "cleanup", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}},
        ],
        {"InstanceId": {"type": "String"}},
    )
    sandbox.faults.fail_step = {"stopInstances"}
    finished = sandbox.wait_for_execution(start("Team-ResizeShape", InstanceId=team_instances("data")[0]), timeout=10)
    statuses = steps_by_name(finished)
    assert statuses == {
        "prepare": "Success",
        "stopInstances": "Failed",
        "resizeInstance": "Pending",
        "startInstances": "Pending",
        "cleanup": "Success",
    }
    assert finished["AutomationExecutionStatus"] == "Failed"  # the failed step is critical


def test_max_attempts_retries_a_failing_step(start, sandbox, ec2, team_instances):
    sandbox.faults.fail_step = {"createImage"}
    instance = team_instances("platform")[0]
    finished = sandbox.wait_for_execution(start("AWS-CreateImage", InstanceId=instance), timeout=10)
    step = finished["StepExecutions"][0]
    assert (finished["AutomationExecutionStatus"], step["StepStatus"], step["MaxAttempts"]) == (
        "Failed",
        "Failed",
        3,
    )
    assert step["Response"].startswith("Attempt 2 of 3 failed")
    sandbox.faults.fail_step = set()
    finished = sandbox.wait_for_execution(start("AWS-CreateImage", InstanceId=instance), timeout=10)
    image_id = finished["StepExecutions"][0]["Outputs"]["ImageId"][0]
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["State"] == "available" and image["Name"].startswith(instance)


def test_stop_cancels_a_waiting_execution(start, ssm, sandbox, team_instances):
    execution_id = start(
        "AWS-StopEC2InstanceWithApproval", InstanceId=team_instances("platform")[0], **APPROVAL_PARAMS
    )
    sandbox.wait_for_execution(execution_id, statuses=("Waiting",), timeout=5)
    ssm.stop_automation_execution(AutomationExecutionId=execution_id, Type="Cancel")
    assert ssm.get_automation_execution(AutomationExecutionId=execution_id)["AutomationExecution"][
        "AutomationExecutionStatus"
    ] in ("Cancelling", "Cancelled")
    finished = sandbox.wait_for_execution(execution_id, timeout=5)
    assert finished["AutomationExecutionStatus"] == "Cancelled"
    assert steps_by_name(finished)["approve"] == "Cancelled"
    assert (
        code_of(lambda: ssm.stop_automation_execution(AutomationExecutionId=execution_id))
        == "InvalidAutomationStatusUpdateException"
    )
    assert (
        code_of(lambda: ssm.stop_automation_execution(AutomationExecutionId="0" * 36))
        == "AutomationExecutionNotFoundException"
    )


def test_on_cancel_runs_the_named_step(create_runbook, start, ssm, sandbox):
    create_runbook(
        "Team-Cancellable",
        [
            {
                "name": "longWait",
                "action": "aws:sleep",
                "inputs": {"Duration": "PT1H"},
                "onCancel": "step:cleanup",
            },
            {"name": "never", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}, "isEnd": True},
            {"name": "cleanup", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}},
        ],
    )
    execution_id = start("Team-Cancellable")
    sandbox.wait_for_execution(execution_id, statuses=("InProgress",), timeout=5)
    ssm.stop_automation_execution(AutomationExecutionId=execution_id)
    finished = sandbox.wait_for_execution(execution_id, timeout=5)
    assert finished["AutomationExecutionStatus"] == "Cancelled"
    assert steps_by_name(finished) == {"longWait": "Cancelled", "never": "Pending", "cleanup": "Success"}


def test_step_timeout(create_runbook, start, sandbox):
    create_runbook(
        "Team-TooSlow",
        [
            {"name": "slow", "action": "aws:sleep", "timeoutSeconds": 2, "inputs": {"Duration": "PT30S"}},
            {"name": "after", "action": "aws:sleep", "inputs": {"Duration": "PT1S"}},
        ],
    )
    finished = sandbox.wait_for_execution(start("Team-TooSlow"), timeout=5)
    assert finished["AutomationExecutionStatus"] == "TimedOut"
    assert steps_by_name(finished) == {"slow": "TimedOut", "after": "Pending"}


def test_unresolvable_reference_fails_the_step(create_runbook, start, sandbox):
    create_runbook(
        "Team-BadRef",
        [
            {"name": "first", "action": "aws:sleep", "inputs": {"Duration": "{{ nothing.Here }}"}},
        ],
    )
    finished = sandbox.wait_for_execution(start("Team-BadRef"), timeout=5)
    assert finished["AutomationExecutionStatus"] == "Failed"
    assert "nothing.Here" in finished["StepExecutions"][0]["FailureMessage"]


def test_outputs_interpolation_and_globals(create_runbook, start, sandbox, team_instances):
    instance = team_instances("platform")[0]
    create_runbook(
        "Team-Outputs",
        [
            {
                "name": "describe",
                "action": "aws:executeAwsApi",
                "inputs": {"Service": "ec2", "Api": "DescribeInstances", "InstanceIds": ["{{ Id }}"]},
                "outputs": [
                    {
                        "Name": "State",
                        "Selector": "$.Reservations[0].Instances[0].State.Name",
                        "Type": "String",
                    },
                    {
                        "Name": "Tags",
                        "Selector": "$.Reservations[0].Instances[0].Tags[*].Key",
                        "Type": "StringList",
                    },
                ],
            },
            {
                "name": "check",
                "action": "aws:branch",
                "inputs": {
                    "Choices": [
                        {"NextStep": "tag", "Variable": "{{ describe.State }}", "StringEquals": "running"}
                    ]
                },
            },
            {
                "name": "tag",
                "action": "aws:createTags",
                "inputs": {
                    "ResourceType": "EC2",
                    "ResourceIds": ["{{ Id }}"],
                    "Tags": [{"Key": "Where", "Value": "{{ global:REGION }}/{{ global:ACCOUNT_ID }}"}],
                },
            },
        ],
        parameters={"Id": {"type": "String"}},
    )
    finished = sandbox.wait_for_execution(start("Team-Outputs", Id=instance), timeout=5)
    assert finished["AutomationExecutionStatus"] == "Success", finished.get("FailureMessage")
    describe = finished["StepExecutions"][0]
    assert describe["Outputs"] == {"State": ["running"], "Tags": ["Name", "Team"]}
    tag = finished["StepExecutions"][2]
    assert json.loads(tag["Inputs"]["Tags"]) == [{"Key": "Where", "Value": "eu-west-1/123456789012"}]


def test_interactive_mode_runs_steps_on_signal(start, ssm, sandbox, team_instances):
    instance = team_instances("data")[0]
    execution_id = start("AWS-RestartEC2Instance", mode="Interactive", InstanceId=instance)
    waiting = sandbox.wait_for_execution(execution_id, statuses=("Waiting",), timeout=5)
    assert steps_by_name(waiting) == {"stopInstances": "Pending", "startInstances": "Pending"}
    assert (
        code_of(
            lambda: ssm.send_automation_signal(
                AutomationExecutionId=execution_id, SignalType="StartStep", Payload={"StepName": ["nope"]}
            )
        )
        == "AutomationStepNotFoundException"
    )
    ssm.send_automation_signal(
        AutomationExecutionId=execution_id, SignalType="StartStep", Payload={"StepName": ["stopInstances"]}
    )
    deadline = time.monotonic() + 5
    while steps_by_name(sandbox.execution(execution_id))["stopInstances"] != "Success":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert sandbox.wait_for_execution(execution_id, statuses=("Waiting",), timeout=5)
    assert sandbox.instance_state(instance) == "stopped"
    ssm.send_automation_signal(
        AutomationExecutionId=execution_id, SignalType="StartStep", Payload={"StepName": ["startInstances"]}
    )
    assert sandbox.wait_for_execution(execution_id, timeout=5)["AutomationExecutionStatus"] == "Success"


def test_describe_executions_with_ten_ids_and_other_filters(start, ssm, sandbox, team_instances):
    instance = team_instances("platform")[0]
    ids = [
        start("AWS-StopEC2InstanceWithApproval", InstanceId=instance, **APPROVAL_PARAMS) for _ in range(11)
    ]
    other = start("AWS-StartEC2Instance", InstanceId=instance)
    found = ssm.describe_automation_executions(Filters=[{"Key": "ExecutionId", "Values": ids[:10]}])
    listed = found["AutomationExecutionMetadataList"]
    assert sorted(e["AutomationExecutionId"] for e in listed) == sorted(ids[:10])
    assert "Parameters" not in listed[0] and "StepExecutions" not in listed[0]
    assert (
        code_of(lambda: ssm.describe_automation_executions(Filters=[{"Key": "ExecutionId", "Values": ids}]))
        == "ValidationException"
    )
    assert (
        code_of(lambda: ssm.describe_automation_executions(Filters=[{"Key": "Colour", "Values": ["x"]}]))
        == "InvalidFilterKey"
    )
    assert code_of(lambda: ssm.describe_automation_executions(MaxResults=51)) == "ValidationException"
    assert (
        code_of(
            lambda: ssm.describe_automation_executions(
                Filters=[{"Key": "ExecutionStatus", "Values": ["Sleeping"]}]
            )
        )
        == "InvalidFilterValue"
    )
    sandbox.wait_for_execution(other, timeout=10)
    by_prefix = ssm.describe_automation_executions(
        Filters=[{"Key": "DocumentNamePrefix", "Values": ["AWS-Start"]}]
    )
    assert [e["AutomationExecutionId"] for e in by_prefix["AutomationExecutionMetadataList"]] == [other]
    anded = ssm.describe_automation_executions(
        Filters=[
            {"Key": "ExecutionId", "Values": [ids[0], other]},
            {"Key": "ExecutionStatus", "Values": ["Success"]},
        ]
    )
    assert [e["AutomationExecutionId"] for e in anded["AutomationExecutionMetadataList"]] == [other]
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (
        ssm.describe_automation_executions(Filters=[{"Key": "StartTimeAfter", "Values": [future]}])[
            "AutomationExecutionMetadataList"
        ]
        == []
    )
    pages = list(
        ssm.get_paginator("describe_automation_executions").paginate(PaginationConfig={"PageSize": 5})
    )
    assert [len(p["AutomationExecutionMetadataList"]) for p in pages] == [5, 5, 2]


def test_describe_step_executions(start, ssm, sandbox, team_instances):
    execution_id = start("AWS-RestartEC2Instance", InstanceId=team_instances("platform")[0])
    sandbox.wait_for_execution(execution_id, timeout=10)
    steps = ssm.describe_automation_step_executions(AutomationExecutionId=execution_id)["StepExecutions"]
    assert [s["StepName"] for s in steps] == ["stopInstances", "startInstances"]
    reverse = ssm.describe_automation_step_executions(AutomationExecutionId=execution_id, ReverseOrder=True)
    assert [s["StepName"] for s in reverse["StepExecutions"]] == ["startInstances", "stopInstances"]
    named = ssm.describe_automation_step_executions(
        AutomationExecutionId=execution_id, Filters=[{"Key": "StepName", "Values": ["startInstances"]}]
    )
    assert [s["StepName"] for s in named["StepExecutions"]] == ["startInstances"]
    paged = ssm.describe_automation_step_executions(AutomationExecutionId=execution_id, MaxResults=1)
    assert len(paged["StepExecutions"]) == 1 and paged["NextToken"]
    assert (
        code_of(
            lambda: ssm.describe_automation_step_executions(
                AutomationExecutionId=execution_id, Filters=[{"Key": "Bogus", "Values": ["x"]}]
            )
        )
        == "InvalidFilterKey"
    )


def test_rate_control_respects_max_concurrency(ssm, sandbox, team_instances):
    targets = team_instances("platform") + team_instances("platform", state="stopped")
    parent_id = ssm.start_automation_execution(
        DocumentName="AWS-RestartEC2Instance",
        TargetParameterName="InstanceId",
        Targets=[{"Key": "tag:Team", "Values": ["platform"]}],
        MaxConcurrency="2",
        MaxErrors="0",
    )["AutomationExecutionId"]
    parent = sandbox.wait_for_execution(parent_id, timeout=15)
    assert parent["AutomationExecutionStatus"] == "Success"
    assert sorted(parent["ResolvedTargets"]["ParameterValues"]) == sorted(targets)
    assert parent["TargetsSummary"] == {
        "TotalCount": 4,
        "StartedCount": 4,
        "SuccessfulCount": 4,
        "FailedCount": 0,
        "CompletedCount": 4,
    }
    children = ssm.describe_automation_executions(
        Filters=[{"Key": "ParentExecutionId", "Values": [parent_id]}]
    )["AutomationExecutionMetadataList"]
    assert sorted(c["Target"] for c in children) == sorted(targets)
    assert {c["AutomationExecutionStatus"] for c in children} == {"Success"}
    spans = [(c["ExecutionStartTime"], c["ExecutionEndTime"]) for c in children]
    for moment, _ in spans:  # never more than MaxConcurrency children running at once
        assert sum(1 for start, end in spans if start <= moment < end) <= 2
    assert all(sandbox.instance_state(i) == "running" for i in targets)


def test_rate_control_stops_after_max_errors(ssm, sandbox):
    sandbox.faults.fail_step = {"stopInstances"}
    values = ["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2", "i-0aaaaaaaaaaaaaaa3", "i-0aaaaaaaaaaaaaaa4"]
    parent_id = ssm.start_automation_execution(
        DocumentName="AWS-RestartEC2Instance",
        TargetParameterName="InstanceId",
        Targets=[{"Key": "ParameterValues", "Values": values}],
        MaxConcurrency="1",
        MaxErrors="1",
    )["AutomationExecutionId"]
    parent = sandbox.wait_for_execution(parent_id, timeout=10)
    assert parent["AutomationExecutionStatus"] == "Failed"
    assert parent["TargetsSummary"]["StartedCount"] == 2  # "1" stops at the 2nd error
    assert parent["TargetsSummary"]["FailedCount"] == 2
    assert "MaxErrors" in parent["FailureMessage"]


def test_stopping_a_rate_control_parent_cancels_its_children(ssm, sandbox, team_instances):
    parent_id = ssm.start_automation_execution(
        DocumentName="AWS-StopEC2InstanceWithApproval",
        TargetParameterName="InstanceId",
        Targets=[{"Key": "tag:Team", "Values": ["data"]}],
        MaxConcurrency="5",
        Parameters=APPROVAL_PARAMS,
    )["AutomationExecutionId"]
    deadline = time.monotonic() + 5
    while sum(e["AutomationExecutionStatus"] == "Waiting" for e in sandbox.executions()) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    ssm.stop_automation_execution(AutomationExecutionId=parent_id)
    assert sandbox.wait_for_execution(parent_id, timeout=5)["AutomationExecutionStatus"] == "Cancelled"
    assert {e["AutomationExecutionStatus"] for e in sandbox.executions()} == {"Cancelled"}


def test_execute_automation_runs_a_child(create_runbook, start, sandbox, team_instances):
    instance = team_instances("data")[0]
    create_runbook(
        "Team-Nested",
        [
            {
                "name": "child",
                "action": "aws:executeAutomation",
                "inputs": {
                    "DocumentName": "AWS-StopEC2Instance",
                    "RuntimeParameters": {"InstanceId": ["{{ Id }}"]},
                },
            },
        ],
        parameters={"Id": {"type": "String"}},
    )
    parent = sandbox.wait_for_execution(start("Team-Nested", Id=instance), timeout=10)
    assert parent["AutomationExecutionStatus"] == "Success", parent.get("FailureMessage")
    child_id = parent["StepExecutions"][0]["Outputs"]["ExecutionId"][0]
    child = sandbox.execution(child_id)
    assert child["ParentAutomationExecutionId"] == parent["AutomationExecutionId"]
    assert child["AutomationExecutionStatus"] == "Success"
    assert sandbox.instance_state(instance) == "stopped"


# Every fixture runbook, with its effect checked: tests/sandbox/test_sandbox_fidelity.py.


def test_many_concurrent_executions_share_one_engine_thread(create_runbook, ssm, sandbox):
    sandbox.faults.concurrency_limit = 200
    create_runbook(
        "Team-Hold",
        [
            {"name": "hold", "action": "aws:pause", "inputs": {}},
            {"name": "nap", "action": "aws:sleep", "inputs": {"Duration": "PT10S"}},
        ],
    )
    threads_before = threading.active_count()
    ids = [
        ssm.start_automation_execution(DocumentName="Team-Hold")["AutomationExecutionId"] for _ in range(150)
    ]
    for execution_id in ids:
        sandbox.wait_for_execution(execution_id, statuses=("Waiting",), timeout=10)
    assert sum(e["AutomationExecutionStatus"] == "Waiting" for e in sandbox.executions()) == 150
    assert threading.active_count() <= threads_before + 2  # no thread per execution
    for execution_id in ids:
        ssm.send_automation_signal(AutomationExecutionId=execution_id, SignalType="Resume")
    for execution_id in ids:
        assert sandbox.wait_for_execution(execution_id, timeout=20)["AutomationExecutionStatus"] == "Success"


def test_enforced_approvers(client, start, sandbox, team_instances):
    sandbox.faults.enforce_approvers = True
    execution_id = start(
        "AWS-StopEC2InstanceWithApproval",
        InstanceId=team_instances("platform")[0],
        Approvers=["arn:aws:iam::123456789012:role/TeamLead"],
        SNSTopicArn=APPROVAL_PARAMS["SNSTopicArn"],
    )
    sandbox.wait_for_execution(execution_id, statuses=("Waiting",), timeout=5)
    assert (
        code_of(
            lambda: client("ssm").send_automation_signal(
                AutomationExecutionId=execution_id, SignalType="Approve"
            )
        )
        == "AccessDeniedException"
    )
    credentials = client("sts").assume_role(
        RoleArn="arn:aws:iam::123456789012:role/TeamLead", RoleSessionName="bob"
    )["Credentials"]
    client("ssm", credentials=credentials).send_automation_signal(
        AutomationExecutionId=execution_id, SignalType="Approve"
    )
    assert sandbox.wait_for_execution(execution_id, timeout=10)["AutomationExecutionStatus"] == "Success"


def _control(sandbox, path: str, body: dict | None = None) -> dict:
    """The control API over HTTP, as the demo and other processes use it."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(sandbox.url + path, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _tag_of(ec2, instance: str, key: str) -> str | None:
    tags = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0].get("Tags", [])
    return next((t["Value"] for t in tags if t["Key"] == key), None)


def test_engine_pause_freezes_executions_until_resumed(sandbox, ssm, ec2, create_runbook, start, team_instances):
    """The engine-pause fault: nothing moves while paused (status calls still answer), all moves after."""
    instance = team_instances("platform")[0]
    create_runbook(
        "Test-SleepThenTag",
        [
            {"name": "nap", "action": "aws:sleep", "inputs": {"Duration": "PT10S"}},  # 0.2 s at scale 50
            {"name": "tag", "action": "aws:createTags",
             "inputs": {"ResourceType": "EC2", "ResourceIds": ["{{ InstanceId }}"],
                        "Tags": [{"Key": "Napped", "Value": "{{ automation:EXECUTION_ID }}"}]}},
        ],
        {"InstanceId": {"type": "String"}},
    )
    # Paused mid-run: the sleep step is in progress when the switch is thrown.
    running = start("Test-SleepThenTag", InstanceId=instance)
    sandbox.wait_for_execution(running, statuses=("InProgress",), timeout=5)
    assert _control(sandbox, "/_sandbox/faults", {"engine_paused": True})["engine_paused"] is True
    frozen = sandbox.execution(running)
    # Started while paused: accepted, and stays Pending.
    waiting = start("Test-SleepThenTag", InstanceId=instance)
    time.sleep(0.6)  # three times the sleep step's whole (scaled) duration
    for execution_id, status in ((running, frozen["AutomationExecutionStatus"]), (waiting, "Pending")):
        got = ssm.get_automation_execution(AutomationExecutionId=execution_id)["AutomationExecution"]
        assert got["AutomationExecutionStatus"] == status  # status calls answer while paused
    assert sandbox.execution(running)["StepExecutions"] == frozen["StepExecutions"]
    assert set(steps_by_name(sandbox.execution(waiting)).values()) == {"Pending"}
    assert _tag_of(ec2, instance, "Napped") is None
    assert _control(sandbox, "/_sandbox/faults")["engine_paused"] is True

    assert _control(sandbox, "/_sandbox/faults", {"engine_paused": False})["engine_paused"] is False
    for execution_id in (running, waiting):
        finished = sandbox.wait_for_execution(execution_id, timeout=10)
        assert finished["AutomationExecutionStatus"] == "Success", finished.get("FailureMessage")
    assert _tag_of(ec2, instance, "Napped") in (running, waiting)
    with pytest.raises(urllib.error.HTTPError) as refused:  # a clear error, and nothing changes
        _control(sandbox, "/_sandbox/faults", {"engine_paused": "yes"})
    assert refused.value.code == 400 and "engine_paused" in refused.value.read().decode()
    assert sandbox.faults.engine_paused is False


def test_engine_pause_knob_in_python_and_reset(sandbox, start, team_instances):
    """`faults.engine_paused` is a plain knob too; reset() resumes the engine."""
    sandbox.faults.engine_paused = True
    execution_id = start("AWS-StopEC2Instance", InstanceId=team_instances("data")[0])
    time.sleep(0.3)
    assert sandbox.execution(execution_id)["AutomationExecutionStatus"] == "Pending"
    assert sandbox.faults.snapshot()["engine_paused"] is True
    sandbox.faults.reset()
    assert sandbox.faults.engine_paused is False
    assert sandbox.wait_for_execution(execution_id, timeout=10)["AutomationExecutionStatus"] == "Success"
