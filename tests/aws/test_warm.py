"""Workers start warm (issue 19): models loaded, STS client made and the read session assumed at
worker start, while every mutating call still assumes its own session naming its requester."""
import uuid

import pytest

from automations import aws
from automations.runbooks.start_body import start_body
from tests.conftest import seeded_instance

DISPATCH_ROLE = "arn:aws:iam::123456789012:role/DelegateDispatch"
AUTOMATION_ROLE = "arn:aws:iam::123456789012:role/DelegateAutomation"


def _start(requester: str) -> aws.AwsCall:
    return aws.start_automation(
        region="eu-west-1", role_arn=DISPATCH_ROLE, session_name=aws.role_session_name("delegate-req", "7", requester),
        source_identity=aws.sts_source_identity(requester), tags=aws.session_tags(requester=requester),
        body=start_body(document_name="AWS-RestartEC2Instance", document_version="1",
                        parameters={"InstanceId": [seeded_instance("web-1")], "AutomationAssumeRole": [AUTOMATION_ROLE]}),
        client_token=uuid.uuid4())


@pytest.fixture
def cold(sb):
    aws.reset_sessions()
    yield sb
    aws.reset_sessions()


def test_warm_assumes_the_read_session_before_any_task(cold):
    problems = aws.warm(regions=["eu-west-1"], read_roles=[DISPATCH_ROLE])
    assert problems == []
    assumed = cold.calls.of("AssumeRole")
    assert [c["params"]["RoleSessionName"] for c in assumed] == [aws.READ_SESSION_NAME]
    cold.calls.clear()
    aws.describe_instances(region="eu-west-1", role_arn=DISPATCH_ROLE, instance_ids=[seeded_instance("web-1")])
    assert cold.calls.of("AssumeRole") == []  # the check at dispatch reuses it


def test_each_start_still_assumes_a_session_naming_its_requester(cold):
    aws.warm(regions=["eu-west-1"], read_roles=[DISPATCH_ROLE])
    cold.calls.clear()
    first, second = _start("alice"), _start("bob")
    assumed = cold.calls.of("AssumeRole")
    assert [c["params"]["SourceIdentity"] for c in assumed] == ["alice", "bob"]
    starts = cold.calls.of("StartAutomationExecution")
    assert [c["source_identity"] for c in starts] == ["alice", "bob"]  # as AWS saw each Start
    assert (first.source_identity, second.source_identity) == ("alice", "bob")


def test_warm_reports_an_unreachable_read_role_and_does_not_raise(cold):
    cold.faults.error_next("AssumeRole", "AccessDenied", n=10, status=403)
    problems = aws.warm(regions=["eu-west-1"], read_roles=[DISPATCH_ROLE])
    assert problems and DISPATCH_ROLE in problems[0]
