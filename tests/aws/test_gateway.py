"""The exact AWS calls, with botocore's Stubber (narrow unit tests of the gateway)."""
import uuid

import boto3
import pytest
from botocore.stub import Stubber

from automations import aws
from automations.runbooks.start_body import start_body

CREDENTIALS = {"AccessKeyId": "ASIAEXAMPLEEXAMPLE12", "SecretAccessKey": "x" * 40, "SessionToken": "token",
               "Expiration": "2030-01-01T00:00:00Z"}


def _clients():
    sts = boto3.client("sts", region_name="eu-west-1", endpoint_url="https://sts.invalid")
    ssm = boto3.client("ssm", region_name="eu-west-1", endpoint_url="https://ssm.invalid")
    return sts, ssm


def test_start_assumes_the_dispatch_role_naming_the_human_and_forces_token():
    sts, ssm = _clients()
    token = uuid.uuid4()
    tags = aws.session_tags(requester="alice", team="platform", **{"request-id": "7"})
    with Stubber(sts) as sts_stub, Stubber(ssm) as ssm_stub:
        sts_stub.add_response(
            "assume_role",
            {"Credentials": CREDENTIALS, "AssumedRoleUser": {
                "Arn": "arn:aws:sts::123456789012:assumed-role/DelegateDispatch/delegate-req-7-alice",
                "AssumedRoleId": "AROAEXAMPLE:delegate-req-7-alice"}, "SourceIdentity": "alice",
             "ResponseMetadata": {"RequestId": "sts-1"}},
            expected_params={"RoleArn": "arn:aws:iam::123456789012:role/DelegateDispatch",
                             "RoleSessionName": "delegate-req-7-alice", "SourceIdentity": "alice",
                             "Tags": [{"Key": "requester", "Value": "alice"}, {"Key": "team", "Value": "platform"},
                                      {"Key": "request-id", "Value": "7"}],
                             "DurationSeconds": 900},
        )
        ssm_stub.add_response(
            "start_automation_execution",
            {"AutomationExecutionId": "4a1b7c2e-1111-4222-8333-444455556666", "ResponseMetadata": {"RequestId": "req-1"}},
            expected_params={"DocumentName": "AWS-RestartEC2Instance", "DocumentVersion": "1",
                             "Parameters": {"InstanceId": ["i-0123456789abcdef0"],
                                            "AutomationAssumeRole": ["arn:aws:iam::123456789012:role/DelegateAutomation"]},
                             "ClientToken": str(token)},
        )
        call = aws.start_automation(
            region="eu-west-1", role_arn="arn:aws:iam::123456789012:role/DelegateDispatch",
            session_name=aws.role_session_name("delegate-req", "7", "alice"),
            source_identity=aws.sts_source_identity("alice"), tags=tags,
            body=start_body(document_name="AWS-RestartEC2Instance", document_version="1",
                            parameters={"InstanceId": ["i-0123456789abcdef0"],
                                        "AutomationAssumeRole": ["arn:aws:iam::123456789012:role/DelegateAutomation"]}),
            client_token=token, sts_client=sts, ssm_client=ssm,
        )
    assert call.execution_id == "4a1b7c2e-1111-4222-8333-444455556666"
    assert call.aws_request_id == "req-1"
    assert call.role_session_name == "delegate-req-7-alice"
    assert call.source_identity == "alice"


@pytest.mark.parametrize("code, transient", [
    ("ThrottlingException", True), ("AutomationExecutionLimitExceededException", True),
    ("InternalServerError", True), ("InvalidAutomationExecutionParametersException", False),
    ("AutomationDefinitionNotFoundException", False), ("IdempotentParameterMismatch", False),
])
def test_errors_are_classified(code, transient):
    sts, ssm = _clients()
    with Stubber(sts) as sts_stub, Stubber(ssm) as ssm_stub:
        sts_stub.add_response("assume_role", {"Credentials": CREDENTIALS, "AssumedRoleUser": {
            "Arn": "arn:aws:sts::1:assumed-role/R/s", "AssumedRoleId": "AROAX:s"}})
        ssm_stub.add_client_error("start_automation_execution", service_error_code=code,
                                  http_status_code=500 if code == "InternalServerError" else 400)
        with pytest.raises(aws.TransientAwsError if transient else aws.PermanentAwsError) as error:
            aws.start_automation(region="eu-west-1", role_arn="arn:aws:iam::1:role/R", session_name="s-1",
                                 source_identity="alice", tags=[],
                                 body=start_body(document_name="Doc", document_version="1", parameters={}),
                                 client_token=uuid.uuid4(), sts_client=sts, ssm_client=ssm)
    assert error.value.code == code


@pytest.mark.parametrize("username, expected", [
    ("alice", "alice"), ("alice smith", "alice-smith"), ("o'brien+x@corp.com", "o-brien-x@corp.com"),
    ("a", "a-"), ("aws:admin", "u-aws-admin"), ("Ωmega", "-mega"),
])
def test_source_identity_is_sanitised_to_sts_pattern(username, expected):
    import re

    value = aws.sts_source_identity(username)
    assert value == expected
    assert re.fullmatch(r"[A-Za-z0-9_=,.@-]{2,256}", value)


def test_session_name_fits_sts_limits():
    import re

    name = aws.role_session_name("delegate-req", "123456", "x" * 100 + " y")
    assert len(name) == 64 and re.fullmatch(r"[\w+=,.@-]{2,64}", name)


def test_describe_batches_ten_ids_per_call():
    ssm = boto3.client("ssm", region_name="eu-west-1", endpoint_url="https://ssm.invalid")
    ids = [f"{i:08d}-1111-4222-8333-444455556666" for i in range(23)]
    with Stubber(ssm) as stub:
        for start in (0, 10, 20):
            stub.add_response("describe_automation_executions", {"AutomationExecutionMetadataList": [
                {"AutomationExecutionId": i, "AutomationExecutionStatus": "InProgress"} for i in ids[start:start + 10]]},
                expected_params={"Filters": [{"Key": "ExecutionId", "Values": ids[start:start + 10]}], "MaxResults": 50})
        found = aws.describe_executions(region="eu-west-1", role_arn="r", execution_ids=ids, ssm_client=ssm)
    assert [item["AutomationExecutionId"] for item in found] == ids
