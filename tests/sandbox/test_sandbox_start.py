"""StartAutomationExecution validation, idempotency, quotas and faults; STS AssumeRole."""

from __future__ import annotations

import threading
import uuid

import pytest
from botocore.exceptions import ClientError

pytestmark = []

RESTART = "AWS-RestartEC2Instance"
ROLE = "arn:aws:iam::123456789012:role/DelegateDispatch"
APPROVAL_PARAMS = {"Approvers": ["sandbox"], "SNSTopicArn": ["arn:aws:sns:eu-west-1:123456789012:AutomationX"]}


def code_of(call) -> str:
    with pytest.raises(ClientError) as excinfo:
        call()
    return excinfo.value.response["Error"]["Code"]


def message_of(call) -> str:
    with pytest.raises(ClientError) as excinfo:
        call()
    return excinfo.value.response["Error"]["Message"]


def rotate_params(instance: str) -> dict:
    return {"InstanceIds": [instance], "CollectorInstanceId": [instance]}


@pytest.fixture
def web(team_instances):
    return team_instances("platform")[0]


def test_start_validation_errors(ssm, web):
    start = ssm.start_automation_execution
    cases = [
        ({"DocumentName": "bad name!", "Parameters": {"InstanceId": [web]}}, "ValidationException"),
        ({"DocumentName": "Missing-Runbook"}, "AutomationDefinitionNotFoundException"),
        (
            {"DocumentName": RESTART, "DocumentVersion": "7", "Parameters": {"InstanceId": [web]}},
            "AutomationDefinitionVersionNotFoundException",
        ),
        ({"DocumentName": RESTART, "DocumentVersion": "latest"}, "ValidationException"),
        (
            {"DocumentName": RESTART, "Parameters": {"InstanceId": [web]}, "Mode": "Bogus"},
            "ValidationException",
        ),
        (
            {"DocumentName": RESTART, "Parameters": {"InstanceId": [web]}, "ClientToken": "x" * 36},
            "ValidationException",
        ),
        (
            {"DocumentName": RESTART, "Parameters": {"InstanceId": [web], "Nope": ["1"]}},
            "InvalidAutomationExecutionParametersException",
        ),
        ({"DocumentName": RESTART}, "InvalidAutomationExecutionParametersException"),
        (
            {
                "DocumentName": RESTART,
                "Parameters": {"InstanceId": [web]},
                "Tags": [{"Key": f"k{i}", "Value": "v"} for i in range(6)],
            },
            "ValidationException",
        ),
        (
            {
                "DocumentName": RESTART,
                "Parameters": {"InstanceId": [web]},
                "TargetParameterName": "InstanceId",
            },
            "ValidationException",
        ),
        (
            {"DocumentName": RESTART, "Targets": [{"Key": "ParameterValues", "Values": [web]}]},
            "ValidationException",
        ),
        (
            {
                "DocumentName": RESTART,
                "TargetParameterName": "InstanceId",
                "MaxConcurrency": "0",
                "Targets": [{"Key": "ParameterValues", "Values": [web]}],
            },
            "ValidationException",
        ),
        (
            {
                "DocumentName": RESTART,
                "TargetParameterName": "InstanceId",
                "MaxErrors": "1000%",
                "Targets": [{"Key": "ParameterValues", "Values": [web]}],
            },
            "ValidationException",
        ),
        (
            {
                "DocumentName": RESTART,
                "TargetParameterName": "InstanceId",
                "Targets": [
                    {"Key": "ParameterValues", "Values": [web]},
                    {"Key": "tag:Team", "Values": ["data"]},
                ],
            },
            "ValidationException",
        ),
        (
            {
                "DocumentName": RESTART,
                "TargetParameterName": "InstanceId",
                "Targets": [{"Key": "ResourceGroup", "Values": ["web"]}],
            },
            "InvalidTarget",
        ),
    ]
    for kwargs, expected in cases:
        assert code_of(lambda kwargs=kwargs: start(**kwargs)) == expected, kwargs
    assert ssm.describe_automation_executions()["AutomationExecutionMetadataList"] == []


@pytest.mark.parametrize(
    "name, values, fragment",
    [
        ("RetentionDays", ["3"], "allowed values"),
        ("RetentionDays", ["seven"], "not an integer"),
        ("Compress", ["yes"], "true or false"),
        ("LogGroup", ["Has Spaces"], "allowed pattern"),
        ("LogGroup", ["ab"], "minChars"),
        ("LogGroup", ["a" * 32], "maxChars"),
        ("Mode", ["shred"], "allowed values"),
        ("Paths", [f"/p{i}" for i in range(6)], "maxItems"),
        ("Labels", ["[1, 2]"], "JSON object"),
        ("Schedule", ["not json"], "not valid JSON"),
        ("CollectorInstanceId", ["web-1"], "not a valid AWS::EC2::Instance::Id"),
        ("InstanceIds", [], "required"),
    ],
)
def test_parameters_are_checked_against_the_document(ssm, web, name, values, fragment):
    parameters = {**rotate_params(web), name: values}
    message = message_of(
        lambda: ssm.start_automation_execution(DocumentName="Delegate-RotateLogs", Parameters=parameters)
    )
    assert fragment in message
    assert name in message


def test_valid_typed_parameters_are_accepted(ssm, web, sandbox):
    parameters = {
        **rotate_params(web),
        "RetentionDays": ["30"],
        "Compress": ["false"],
        "LogGroup": ["web-logs"],
        "Labels": ['{"env": "prod"}'],
        "Schedule": ['[{"Day": "Monday"}]'],
        "Paths": ["/a", "/b"],
    }
    execution_id = ssm.start_automation_execution(DocumentName="Delegate-RotateLogs", Parameters=parameters)[
        "AutomationExecutionId"
    ]
    execution = ssm.get_automation_execution(AutomationExecutionId=execution_id)["AutomationExecution"]
    assert execution["Parameters"]["RetentionDays"] == ["30"]
    assert execution["Parameters"]["Mode"] == ["rotate"]  # defaults are reported too
    assert execution["DocumentVersion"] == "1"
    sandbox.wait_for_execution(execution_id, timeout=10)


def test_client_token_idempotency(ssm, web, sandbox):
    token = str(uuid.uuid4())
    first = ssm.start_automation_execution(
        DocumentName=RESTART, Parameters={"InstanceId": [web]}, ClientToken=token
    )["AutomationExecutionId"]
    again = ssm.start_automation_execution(
        DocumentName=RESTART, Parameters={"InstanceId": [web]}, ClientToken=token.upper()
    )["AutomationExecutionId"]
    assert again == first
    assert (
        code_of(
            lambda: ssm.start_automation_execution(
                DocumentName=RESTART, Parameters={"InstanceId": [web, web]}, ClientToken=token
            )
        )
        == "IdempotentParameterMismatch"
    )
    assert len(sandbox.executions()) == 1
    assert sandbox.executions()[0]["ClientToken"] == token
    assert [c["client_token"] for c in sandbox.calls.of("StartAutomationExecution")] == [
        token,
        token.upper(),
        token,
    ]


def test_concurrency_limit(ssm, web, sandbox):
    sandbox.faults.concurrency_limit = 2
    params = {"InstanceId": [web], **APPROVAL_PARAMS}
    for _ in range(2):
        ssm.start_automation_execution(DocumentName="AWS-StopEC2InstanceWithApproval", Parameters=params)
    assert (
        code_of(
            lambda: ssm.start_automation_execution(
                DocumentName="AWS-StopEC2InstanceWithApproval", Parameters=params
            )
        )
        == "AutomationExecutionLimitExceededException"
    )
    sandbox.faults.concurrency_limit = 3
    ssm.start_automation_execution(DocumentName="AWS-StopEC2InstanceWithApproval", Parameters=params)


def test_rate_limit_throttles_without_retries(client, web, sandbox):
    ssm = client("ssm", retries=False)
    sandbox.faults.rate_limits = {"StartAutomationExecution": 1.0}
    ssm.start_automation_execution(DocumentName=RESTART, Parameters={"InstanceId": [web]})
    with pytest.raises(ssm.exceptions.ThrottlingException):
        ssm.start_automation_execution(DocumentName=RESTART, Parameters={"InstanceId": [web]})
    # Other operations and other regions have their own buckets.
    ssm.describe_automation_executions()
    client("ssm", region="us-east-1", retries=False).start_automation_execution(
        DocumentName=RESTART, Parameters={"InstanceId": [web]}
    )
    assert [c["error"] for c in sandbox.calls.of("StartAutomationExecution")] == [
        None,
        "ThrottlingException",
        None,
    ]


def test_queued_faults_then_recovery(client, web, sandbox):
    ssm = client("ssm", retries=False)
    sandbox.faults.throttle_next("StartAutomationExecution", 2)
    sandbox.faults.error_next("StartAutomationExecution", "InternalServerError", status=500)
    codes = [
        code_of(
            lambda: ssm.start_automation_execution(DocumentName=RESTART, Parameters={"InstanceId": [web]})
        )
        for _ in range(3)
    ]
    assert codes == ["ThrottlingException", "ThrottlingException", "InternalServerError"]
    assert ssm.start_automation_execution(DocumentName=RESTART, Parameters={"InstanceId": [web]})
    sts = client("sts", retries=False)
    sandbox.faults.throttle_next("AssumeRole")
    assert code_of(lambda: sts.assume_role(RoleArn=ROLE, RoleSessionName="s1")) == "Throttling"


def test_standard_retries_ride_out_throttling(client, web, sandbox):
    sandbox.faults.throttle_next("StartAutomationExecution", 1)  # one backoff of up to 1 s
    ssm = client("ssm")  # standard mode, 3 attempts
    ssm.start_automation_execution(
        DocumentName=RESTART, Parameters={"InstanceId": [web]}, ClientToken=str(uuid.uuid4())
    )
    calls = sandbox.calls.of("StartAutomationExecution")
    assert [c["error"] for c in calls] == ["ThrottlingException", None]
    assert len({c["client_token"] for c in calls}) == 1


def test_block_holds_calls_until_released(ssm, web, sandbox):
    handle = sandbox.faults.block("StartAutomationExecution")
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(
            ssm.start_automation_execution(DocumentName=RESTART, Parameters={"InstanceId": [web]})
        )
    )
    thread.start()
    assert handle.arrived.wait(5)
    assert sandbox.executions() == [] and handle.held == 1
    handle.release()
    thread.join(5)
    assert result["AutomationExecutionId"] == sandbox.executions()[0]["AutomationExecutionId"]


def test_assume_role_validation(client):
    sts = client("sts")
    good = {"RoleArn": ROLE, "RoleSessionName": "req-1"}
    cases = [
        dict(good, RoleArn="arn:aws:iam::123:role/Short-Account"),
        dict(good, RoleArn="arn:aws:s3:::bucket/not-a-role-at-all"),
        dict(good, RoleSessionName="has space"),
        dict(good, RoleSessionName="x" * 65),
        dict(good, SourceIdentity="aws:alice"),
        dict(good, SourceIdentity="bad identity"),
        dict(good, DurationSeconds=50000),
        dict(good, Tags=[{"Key": "team", "Value": "a"}, {"Key": "Team", "Value": "b"}]),
        dict(good, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)]),
        dict(good, Tags=[{"Key": "k" * 129, "Value": "v"}]),
    ]
    for kwargs in cases:
        with pytest.raises(ClientError) as excinfo:
            sts.assume_role(**kwargs)
        error = excinfo.value.response["Error"]
        assert (error["Code"], error["Type"]) == ("ValidationError", "Sender"), kwargs
    with pytest.raises(ClientError) as excinfo:
        sts.assume_role(**good, Policy="{not json")
    assert excinfo.value.response["Error"]["Code"] == "MalformedPolicyDocument"


def test_role_max_session_duration_and_chaining(client, sandbox):
    sts = client("sts")
    sandbox.state.role_max_session_duration[ROLE] = 3600
    assert "MaxSessionDuration" in message_of(
        lambda: sts.assume_role(RoleArn=ROLE, RoleSessionName="s1", DurationSeconds=7200)
    )
    credentials = sts.assume_role(RoleArn=ROLE, RoleSessionName="s1", SourceIdentity="alice")["Credentials"]
    chained = client("sts", credentials=credentials)
    other = "arn:aws:iam::123456789012:role/Other"
    assert "role chaining" in message_of(
        lambda: chained.assume_role(RoleArn=other, RoleSessionName="c1", DurationSeconds=7200)
    )
    again = chained.assume_role(RoleArn=other, RoleSessionName="c1")
    assert again["SourceIdentity"] == "alice"  # source identity carries over through chaining


def test_assumed_role_identity_is_recorded_on_the_execution(client, web, sandbox):
    sts = client("sts")
    response = sts.assume_role(
        RoleArn=ROLE,
        RoleSessionName="req-42-alice",
        SourceIdentity="alice",
        Tags=[{"Key": "requester", "Value": "alice"}, {"Key": "team", "Value": "platform"}],
        DurationSeconds=900,
    )
    credentials = response["Credentials"]
    assert credentials["AccessKeyId"].startswith("ASIA") and len(credentials["AccessKeyId"]) == 20
    assert response["SourceIdentity"] == "alice"
    arn = "arn:aws:sts::123456789012:assumed-role/DelegateDispatch/req-42-alice"
    assert response["AssumedRoleUser"]["Arn"] == arn
    assert client("sts", credentials=credentials).get_caller_identity()["Arn"] == arn
    assert sts.get_caller_identity()["Arn"] == "arn:aws:iam::123456789012:user/sandbox"

    ssm = client("ssm", credentials=credentials)
    execution_id = ssm.start_automation_execution(DocumentName=RESTART, Parameters={"InstanceId": [web]})[
        "AutomationExecutionId"
    ]
    execution = ssm.get_automation_execution(AutomationExecutionId=execution_id)["AutomationExecution"]
    assert execution["ExecutedBy"] == arn
    listed = ssm.describe_automation_executions()["AutomationExecutionMetadataList"][0]
    assert listed["ExecutedBy"] == arn
    snapshot = sandbox.executions()[0]
    assert snapshot["SourceIdentity"] == "alice"
    assert snapshot["SessionTags"] == [
        {"Key": "requester", "Value": "alice"},
        {"Key": "team", "Value": "platform"},
    ]
    call = sandbox.calls.of("StartAutomationExecution")[0]
    assert (call["session_name"], call["source_identity"], call["role_arn"]) == (
        "req-42-alice",
        "alice",
        ROLE,
    )
    assert call["aws_request_id"] and call["access_key_id"] == credentials["AccessKeyId"]
    assert call["params"]["Parameters"] == {"InstanceId": [web]}
    plain = client("ssm").start_automation_execution(DocumentName=RESTART, Parameters={"InstanceId": [web]})
    assert (
        sandbox.execution(plain["AutomationExecutionId"])["ExecutedBy"]
        == "arn:aws:iam::123456789012:user/sandbox"
    )


def test_expired_session_is_refused(client, sandbox):
    credentials = client("sts").assume_role(RoleArn=ROLE, RoleSessionName="short")["Credentials"]
    with sandbox.state.lock:
        sandbox.state.sessions[credentials["AccessKeyId"]]["Expiration"] = 0
    assert code_of(lambda: client("ssm", credentials=credentials).list_documents()) == "ExpiredTokenException"
    assert code_of(lambda: client("sts", credentials=credentials).get_caller_identity()) == "ExpiredToken"


def test_shared_document_starts_by_arn(ssm, ec2, web, sandbox):
    arn = "arn:aws:ssm:eu-west-1:210987654321:document/Ops-CollectDiagnostics"
    params = {"InstanceId": [web], "BucketName": ["diag-bucket"]}
    execution_id = ssm.start_automation_execution(DocumentName=arn, Parameters=params)[
        "AutomationExecutionId"
    ]
    execution = sandbox.wait_for_execution(execution_id, timeout=10)
    assert execution["AutomationExecutionStatus"] == "Success"
    assert execution["DocumentName"] == "Ops-CollectDiagnostics"
    instance_type = ec2.describe_instances(InstanceIds=[web])["Reservations"][0]["Instances"][0][
        "InstanceType"
    ]
    assert execution["Outputs"]["describeInstance.InstanceType"] == [instance_type]
    assert (
        code_of(
            lambda: ssm.start_automation_execution(DocumentName="Ops-CollectDiagnostics", Parameters=params)
        )
        == "AutomationDefinitionNotFoundException"
    )
