"""Fidelity: every fixture runbook and every sandbox document runs, and what it says it did is true.

For each run that ends in Success the effect is read back over the AWS API (moto's state); an
expected failure is asserted with its message. The resulting table goes to docs/sandbox.md
(between the GENERATED markers), so the docs say exactly what this test saw.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from sandbox.inventory import seeded_id

REGION = "eu-west-1"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "sandbox.md"
FIXTURES = Path(__file__).resolve().parents[2] / "sandbox" / "documents" / "amazon"
ME = "arn:aws:iam::123456789012:user/sandbox"  # who the test's clients are (keys test/test)
SNS = "arn:aws:sns:eu-west-1:123456789012:Approvals"
ROLE = "arn:aws:iam::123456789012:role/platform-automation"
# The fixtures keep AWS's steps but elide the inline CloudFormation templates ("TemplateBody": "..."),
# so their aws:createStack fails as CloudFormation would, and nothing after it runs.
TEMPLATE_ELIDED = "Template format error: the TemplateBody is not a CloudFormation template with Resources (it is '...')"
QUEUE_TEMPLATE = json.dumps({"Resources": {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "{name}"}}}})


def sid(name: str, kind: str = "i") -> str:
    return seeded_id(kind, REGION, name)


@pytest.fixture
def aws(client):
    return {name: client(name) for name in ("ssm", "ec2", "cloudformation", "autoscaling", "s3", "sqs")}


def _instance(aws, instance_id: str) -> dict:
    return aws["ec2"].describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def _lifecycle(aws, instance_id: str) -> str:
    return aws["autoscaling"].describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"][0][
        "LifecycleState"
    ]


def _stack(aws, name: str) -> str:
    body = QUEUE_TEMPLATE.replace("{name}", f"{name}-queue")
    aws["cloudformation"].create_stack(StackName=name, TemplateBody=body)
    return name


def _stack_gone(aws, name: str) -> bool:
    try:
        stacks = aws["cloudformation"].describe_stacks(StackName=name)["Stacks"]
    except ClientError:
        return True
    return stacks[0]["StackStatus"] == "DELETE_COMPLETE"


def _queue_exists(aws, name: str) -> bool:
    return any(url.endswith("/" + name) for url in aws["sqs"].list_queues().get("QueueUrls", []))


# (document, parameters, approve?, expected status, failure fragment, effect check -> text)
def cases(aws, sandbox):
    spare = sid("platform/spare", "vol")
    return [
        ("AWS-ASGEnterStandby", {"InstanceId": [sid("web-2")], "AutomationAssumeRole": [ROLE]}, False, "Success", None,
         lambda: _lifecycle(aws, sid("web-2")) == "Standby" and "web-2 is Standby in its Auto Scaling group"),
        ("AWS-ASGExitStandbyWithApproval", {"InstanceId": [sid("web-2")], "Approvers": [ME], "SNSTopicArn": [SNS],
                                             "AutomationAssumeRole": [ROLE], "LambdaRoleArn": [ROLE]},
         True, "Success", None,
         lambda: _lifecycle(aws, sid("web-2")) == "InService" and "web-2 is InService again (child AWS-ASGExitStandby)"),
        ("AWS-AttachEBSVolume", {"Device": ["/dev/sdh"], "InstanceId": [sid("web-1")], "VolumeId": [spare]}, False,
         "Failed", TEMPLATE_ELIDED, None),
        ("AWS-CopySnapshot", {"SnapshotId": [sid("platform/backup", "snap")], "SourceRegion": [REGION]}, False,
         "Failed", TEMPLATE_ELIDED, None),
        ("AWS-CreateImage", {"InstanceId": [sid("api-1")]}, False, "Success", None,
         lambda: any(i["State"] == "available" for i in aws["ec2"].describe_images(
             Owners=["self"], Filters=[{"Name": "name", "Values": [f"{sid('api-1')}_*"]}])["Images"])
         and "an AMI named <api-1 id>_<execution id> exists and is available"),
        ("AWS-CreateManagedInstance", {"AmiId": [sid("al2023", "ami")], "VpcId": ["vpc-12345678"],
                                        "SubnetId": ["subnet-12345678"], "RoleName": ["managed"],
                                        "GroupName": ["managed-sg"], "KeyPairName": ["demo"]},
         False, "Failed", TEMPLATE_ELIDED, None),
        ("AWS-CreateSnapshot", {"VolumeId": [spare]}, False, "Failed", TEMPLATE_ELIDED, None),
        ("AWS-DeleteCloudFormation", {"StackNameOrId": [_stack(aws, "fidelity-one")]}, False, "Success", None,
         lambda: _stack_gone(aws, "fidelity-one") and not _queue_exists(aws, "fidelity-one-queue")
         and "the stack and its SQS queue are gone"),
        ("AWS-DeleteCloudFormationWithApproval", {"StackNameOrId": [_stack(aws, "fidelity-two")], "Approvers": [ME],
                                                  "SNSTopicArn": [SNS]}, True, "Success", None,
         lambda: _stack_gone(aws, "fidelity-two") and "the stack is gone after approval"),
        ("AWS-DeleteSnapshot", {"SnapshotId": [sid("untagged/legacy", "snap")]}, False, "Failed", TEMPLATE_ELIDED, None),
        ("AWS-DetachEBSVolume", {"VolumeId": [sid("untagged-8/root", "vol")]}, False, "Success", None,
         lambda: aws["ec2"].describe_volumes(VolumeIds=[sid("untagged-8/root", "vol")])["Volumes"][0]["State"]
         == "available" and "the root volume of the untagged instance is detached (available)"),
        ("AWS-EnableS3BucketKeys", {"BucketName": ["delegate-sandbox-data-logs"]}, False, "Success", None,
         lambda: aws["s3"].get_bucket_encryption(Bucket="delegate-sandbox-data-logs")[
             "ServerSideEncryptionConfiguration"]["Rules"][0].get("BucketKeyEnabled") is True
         and "GetBucketEncryption shows BucketKeyEnabled"),
        ("AWS-RebootRdsInstance", {"InstanceId": ["platform-db"]}, False, "Failed", TEMPLATE_ELIDED, None),
        ("AWS-ResizeInstance", {"InstanceId": [sid("web-1")], "InstanceType": ["m5.xlarge"]}, False, "Failed",
         TEMPLATE_ELIDED, None),
        ("AWS-RestartEC2Instance", {"InstanceId": [sid("etl-1")]}, False, "Success", None,
         lambda: sandbox.state_history(sid("etl-1"))[-4:] == ["stopping", "stopped", "pending", "running"]
         and "etl-1 went stopping, stopped, pending, running"),
        ("AWS-StartEC2Instance", {"InstanceId": [sid("api-2")]}, False, "Success", None,
         lambda: _instance(aws, sid("api-2"))["State"]["Name"] == "running" and "api-2 is running"),
        ("AWS-StartEC2InstanceWithApproval", {"InstanceId": [sid("notebook-1")], "Approvers": [ME], "SNSTopicArn": [SNS]},
         True, "Success", None,
         lambda: _instance(aws, sid("notebook-1"))["State"]["Name"] == "running" and "notebook-1 is running"),
        ("AWS-StopEC2Instance", {"InstanceId": [sid("warehouse-1")]}, False, "Success", None,
         lambda: _instance(aws, sid("warehouse-1"))["State"]["Name"] == "stopped" and "warehouse-1 is stopped"),
        ("AWS-StopEC2InstanceWithApproval", {"InstanceId": [sid("api-1")], "Approvers": [ME], "SNSTopicArn": [SNS]},
         True, "Success", None,
         lambda: _instance(aws, sid("api-1"))["State"]["Name"] == "stopped" and "api-1 is stopped"),
        ("AWS-TerminateEC2InstanceWithApproval", {"InstanceId": [sid("bastion")], "Approvers": [ME],
                                                  "SNSTopicArn": [SNS]}, True, "Success", None,
         lambda: _instance(aws, sid("bastion"))["State"]["Name"] == "terminated" and "bastion is terminated"),
        ("AWS-UpdateCloudFormationWithApproval", {"StackNameOrId": [_stack(aws, "fidelity-three")],
                                                   "TemplateUrl": ["https://example.com/template.json"], "LambdaAssumeRole": [ROLE],
                                                   "Approvers": [ME], "SNSTopicArn": [SNS]}, True, "Failed",
         TEMPLATE_ELIDED, None),
    ]


def _markdown(rows: list[tuple]) -> str:
    lines = ["| runbook | outcome | effect checked / failure message |", "|---|---|---|"]
    for name, status, text in rows:
        lines.append(f"| `{name}` | {status} | {text.replace('|', '/')} |")
    return "\n".join(lines)


def test_every_runbook_does_what_its_outcome_says(aws, sandbox):
    ssm = aws["ssm"]
    rows = []
    for name, params, approve, expected, fragment, effect in cases(aws, sandbox):
        execution_id = ssm.start_automation_execution(DocumentName=name, Parameters=params)["AutomationExecutionId"]
        if approve:
            sandbox.wait_for_execution(execution_id, statuses=("Waiting", "Failed"), timeout=20)
            ssm.send_automation_signal(AutomationExecutionId=execution_id, SignalType="Approve")
        finished = sandbox.wait_for_execution(execution_id, timeout=60)
        status, message = finished["AutomationExecutionStatus"], finished.get("FailureMessage", "")
        assert status == expected, (name, message)
        if expected == "Success":
            checked = effect()
            assert checked, f"{name} reported Success but its effect is not there"
            rows.append((name, status, checked))
        else:
            assert fragment in message, (name, message)
            rows.append((name, status, message))
    table = _markdown(rows)
    text = DOCS.read_text() if DOCS.exists() else "# The sandbox\n"
    begin, end = "<!-- GENERATED by tests/sandbox/test_sandbox_fidelity.py -->", "<!-- END GENERATED -->"
    block = f"{begin}\n{table}\n{end}"
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: block, text, flags=re.S) if begin in text else (
        text.rstrip() + "\n\n" + block + "\n")
    DOCS.write_text(text)
