"""Multi-account, multi-Region automation in the sandbox: Organizations (moto), TargetLocations,
child executions running in each member account and region under the execution role there."""

from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

from sandbox import world

REGION = "eu-west-1"
REGIONS = ["eu-west-1", "us-east-1"]

# Reads the instances of the account and region it runs in and tags them with the execution id:
# the tag landing in the member account's own EC2 is the proof the child really ran there.
TAG_FLEET = {
    "schemaVersion": "0.3",
    "description": "Tag this account's platform instances",
    "parameters": {"Label": {"type": "String", "default": "patched"}},
    "mainSteps": [
        {
            "name": "findInstances",
            "action": "aws:executeAwsApi",
            "inputs": {
                "Service": "ec2",
                "Api": "DescribeInstances",
                "Filters": [{"Name": "tag:Team", "Values": ["platform"]}],
            },
            "outputs": [
                {"Name": "InstanceIds", "Selector": "$.Reservations[0].Instances[*].InstanceId", "Type": "StringList"}
            ],
        },
        {
            "name": "tagInstances",
            "action": "aws:executeAwsApi",
            "inputs": {
                "Service": "ec2",
                "Api": "CreateTags",
                "Resources": "{{ findInstances.InstanceIds }}",
                "Tags": [{"Key": "Delegate", "Value": "{{ Label }}-{{ global:ACCOUNT_ID }}-{{ global:REGION }}"}],
            },
        },
    ],
}


def _create(ssm, name: str, content: dict) -> None:
    ssm.create_document(Name=name, Content=json.dumps(content), DocumentType="Automation", DocumentFormat="JSON")


def _wait(ssm, execution_id: str, timeout: float = 30.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        execution = ssm.get_automation_execution(AutomationExecutionId=execution_id)["AutomationExecution"]
        if execution["AutomationExecutionStatus"] in ("Success", "Failed", "Cancelled", "TimedOut"):
            return execution
        time.sleep(0.05)
    raise AssertionError(f"{execution_id} did not finish")


def _children(client, ssm, parent_id: str) -> list[dict]:
    """Each child's metadata, read where AWS answers for it: in its own account and Region (a member
    session), found through the parent's steps (their ExecutionId output), never listed centrally."""
    steps = ssm.describe_automation_step_executions(AutomationExecutionId=parent_id, MaxResults=50)["StepExecutions"]
    sts, found = client("sts"), []
    for step in steps:
        child_id = (step.get("Outputs") or {}).get("ExecutionId", [None])[0]
        if not child_id:
            continue
        account, region = step["TargetLocation"]["Accounts"][0], step["TargetLocation"]["Regions"][0]
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{world.MEMBER_READ_ROLE}",
                                RoleSessionName="read")["Credentials"]
        member = client("ssm", region, credentials=creds)
        (meta,) = member.describe_automation_executions(Filters=[
            {"Key": "ParentExecutionId", "Values": [parent_id]},
            {"Key": "ExecutionId", "Values": [child_id]}])["AutomationExecutionMetadataList"]
        found.append(meta)
    return found


def test_the_world_has_an_organization_with_three_ous_and_twelve_members(client):
    orgs = client("organizations", "us-east-1")
    root = orgs.list_roots()["Roots"][0]["Id"]
    ous = orgs.list_organizational_units_for_parent(ParentId=root)["OrganizationalUnits"]
    assert sorted(ou["Name"] for ou in ous) == sorted(world.ORGANIZATIONAL_UNITS)
    members = [a for ou in ous for a in orgs.list_accounts_for_parent(ParentId=ou["Id"])["Accounts"]]
    assert len(members) == 12
    assert {ou["Id"] for ou in ous} == set(world.OU_IDS.values())
    # each member has its own instances, in its own moto backend
    member = members[0]["Id"]
    sts = client("sts")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{member}:role/{world.EXECUTION_ROLE}",
                            RoleSessionName="look")["Credentials"]
    ec2 = client("ec2", "us-east-1", credentials=creds)
    reservations = ec2.describe_instances()["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    assert len(instances) == 2 and all(i["InstanceId"].startswith("i-") for i in instances)
    central = client("ec2", "us-east-1")
    central_ids = {i["InstanceId"] for r in central.describe_instances()["Reservations"] for i in r["Instances"]}
    assert not central_ids & {i["InstanceId"] for i in instances}


def test_target_locations_over_three_ous_and_two_regions_with_one_location_failing(sandbox, client, ssm):
    _create(ssm, "Delegate-TagFleet", TAG_FLEET)
    failing = (world.MEMBER_ACCOUNTS["Staging"][1], "us-east-1")
    sandbox.faults.fail_locations = {f"{failing[0]}:{failing[1]}"}
    started = ssm.start_automation_execution(
        DocumentName="Delegate-TagFleet",
        Parameters={"Label": ["p1"]},
        TargetLocations=[{
            "Accounts": sorted(world.OU_IDS.values()),
            "Regions": REGIONS,
            "TargetLocationMaxConcurrency": "4",
            "TargetLocationMaxErrors": "2",
            "ExecutionRoleName": world.EXECUTION_ROLE,
        }],
    )
    parent_id = started["AutomationExecutionId"]
    parent = _wait(ssm, parent_id)
    assert parent["Mode"] == "Auto"
    assert parent["TargetLocations"][0]["Regions"] == REGIONS
    assert parent["AutomationExecutionStatus"] == "Failed"
    assert "1 of 24" in parent["FailureMessage"]
    meta = ssm.describe_automation_executions(Filters=[{"Key": "ExecutionId", "Values": [parent_id]}])
    assert meta["AutomationExecutionMetadataList"][0]["AutomationType"] == "CrossAccount"

    children = _children(client, ssm, parent_id)
    assert len(children) == 24
    # The central account neither lists nor reads them (AWS: view a child in its account and Region).
    assert ssm.describe_automation_executions(
        Filters=[{"Key": "ParentExecutionId", "Values": [parent_id]}])["AutomationExecutionMetadataList"] == []
    with pytest.raises(ClientError) as hidden:
        ssm.get_automation_execution(AutomationExecutionId=children[0]["AutomationExecutionId"])
    assert hidden.value.response["Error"]["Code"] == "AutomationExecutionNotFoundException"
    assert all(c["ParentAutomationExecutionId"] == parent_id for c in children)
    # Where each child ran: the parent's step executions, one per location.
    steps = ssm.describe_automation_step_executions(AutomationExecutionId=parent_id, MaxResults=50)["StepExecutions"]
    assert len(steps) == 24
    by_child = {s["Outputs"]["ExecutionId"][0]: s for s in steps}
    statuses = {c["AutomationExecutionId"]: c["AutomationExecutionStatus"] for c in children}
    failed = [cid for cid, status in statuses.items() if status == "Failed"]
    assert len(failed) == 1
    location = by_child[failed[0]]["TargetLocation"]
    assert (location["Accounts"][0], location["Regions"][0]) == failing
    assert location["ExecutionRoleName"] == world.EXECUTION_ROLE
    for child in children:
        account = by_child[child["AutomationExecutionId"]]["TargetLocation"]["Accounts"][0]
        assert child["ExecutedBy"].startswith(f"arn:aws:sts::{account}:assumed-role/{world.EXECUTION_ROLE}/")
        assert sandbox.execution(child["AutomationExecutionId"])["RunsAs"] == child["ExecutedBy"]

    # The effect landed in each member account's own EC2, in its region; not in the failing one.
    sts = client("sts")
    for step in steps:
        account, region = step["TargetLocation"]["Accounts"][0], step["TargetLocation"]["Regions"][0]
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{world.EXECUTION_ROLE}",
                                RoleSessionName="check")["Credentials"]
        ec2 = client("ec2", region, credentials=creds)
        tags = [
            {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("Delegate")
            for r in ec2.describe_instances(Filters=[{"Name": "tag:Team", "Values": ["platform"]}])["Reservations"]
            for i in r["Instances"]
        ]
        wanted = None if (account, region) == failing else f"p1-{account}-{region}"
        assert tags and all(tag == wanted for tag in tags), (account, region, tags)


def test_max_errors_stops_queueing_locations(sandbox, client, ssm):
    _create(ssm, "Delegate-TagFleet", TAG_FLEET)
    accounts = world.MEMBER_ACCOUNTS["Production"]
    sandbox.faults.fail_locations = {f"{a}:eu-west-1" for a in accounts}
    parent_id = ssm.start_automation_execution(
        DocumentName="Delegate-TagFleet",
        TargetLocations=[{"Accounts": accounts, "Regions": ["eu-west-1"],
                          "TargetLocationMaxConcurrency": "1", "TargetLocationMaxErrors": "1",
                          "ExecutionRoleName": world.EXECUTION_ROLE}],
    )["AutomationExecutionId"]
    parent = _wait(ssm, parent_id)
    assert parent["AutomationExecutionStatus"] == "Failed"
    assert len(_children(client, ssm, parent_id)) == 2  # "1" stops at the 2nd error; nothing more started


def test_a_missing_execution_role_fails_that_location(sandbox, client, ssm):
    _create(ssm, "Delegate-TagFleet", TAG_FLEET)
    account = world.MEMBER_ACCOUNTS["Development"][0]
    parent_id = ssm.start_automation_execution(
        DocumentName="Delegate-TagFleet",
        TargetLocations=[{"Accounts": [account], "Regions": ["eu-west-1"], "ExecutionRoleName": "NoSuchRole"}],
    )["AutomationExecutionId"]
    assert _wait(ssm, parent_id)["AutomationExecutionStatus"] == "Failed"
    (child,) = _children(client, ssm, parent_id)
    assert child["AutomationExecutionStatus"] == "Failed"
    assert "NoSuchRole" in child["FailureMessage"]


def test_runbooks_with_aws_approve_are_refused_for_multi_account_runs(ssm):
    with pytest.raises(ClientError) as refused:
        ssm.start_automation_execution(
            DocumentName="Delegate-PatchWithApproval",
            TargetLocations=[{"Accounts": [world.MEMBER_ACCOUNTS["Production"][0]], "Regions": ["eu-west-1"]}],
        )
    assert refused.value.response["Error"]["Code"] == "InvalidAutomationExecutionParametersException"
    assert "aws:approve" in refused.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    "location, fragment",
    [
        ({"Accounts": ["ou-nope-12345678"], "Regions": ["eu-west-1"]}, "ou-nope-12345678"),
        ({"Accounts": ["12345"], "Regions": ["eu-west-1"]}, "accounts"),
        ({"Accounts": ["300000000101"], "Regions": ["eu-west-1"], "TargetLocationMaxConcurrency": "0"},
         "targetLocationMaxConcurrency"),
    ],
)
def test_bad_target_locations_are_refused(ssm, location, fragment):
    with pytest.raises(ClientError) as refused:
        ssm.start_automation_execution(DocumentName="AWS-StopEC2Instance",
                                       Parameters={"InstanceId": ["i-0123456789abcdef0"]},
                                       TargetLocations=[location])
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert fragment in refused.value.response["Error"]["Message"]


def _preview(ssm, **inputs) -> dict:
    started = ssm.start_execution_preview(DocumentName="Delegate-LabelFleet",
                                          ExecutionInputs={"Automation": {"Parameters": {"Label": ["wave"]}, **inputs}})
    return ssm.get_execution_preview(ExecutionPreviewId=started["ExecutionPreviewId"])


def test_the_execution_preview_counts_the_accounts_and_regions_of_target_locations(ssm):
    """StartExecutionPreview with TargetLocations: AWS's TotalAccounts and Regions of the run, the
    OUs resolved through the organization, the steps counted once (each location runs the same)."""
    ous = [world.OU_IDS["Staging"], world.OU_IDS["Development"]]
    answer = _preview(ssm, TargetLocations=[{"Accounts": ous, "Regions": REGIONS}])
    assert answer["Status"] == "Success", answer.get("StatusMessage")
    automation = answer["ExecutionPreview"]["Automation"]
    assert automation["TotalAccounts"] == 8
    assert sorted(automation["Regions"]) == REGIONS
    assert automation["StepPreviews"] == {"Mutating": 1, "NonMutating": 1, "Undetermined": 0}

    single = _preview(ssm, TargetLocations=[{"Accounts": [world.MEMBER_ACCOUNTS["Production"][0]],
                                              "Regions": ["us-east-1"]}])["ExecutionPreview"]["Automation"]
    assert single["TotalAccounts"] == 1 and single["Regions"] == ["us-east-1"]


def test_the_execution_preview_refuses_what_the_start_would_refuse(ssm):
    with pytest.raises(ClientError) as refused:
        _preview(ssm, TargetLocations=[{"Accounts": ["ou-nope-12345678"], "Regions": ["eu-west-1"]}])
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "ou-nope-12345678" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as approval:
        ssm.start_execution_preview(DocumentName="Delegate-PatchWithApproval", ExecutionInputs={"Automation": {
            "TargetLocations": [{"Accounts": [world.MEMBER_ACCOUNTS["Production"][0]], "Regions": ["eu-west-1"]}]}})
    assert "aws:approve" in approval.value.response["Error"]["Message"]


def test_more_member_accounts_through_the_organizations_api_run_their_locations(sandbox, client, ssm):
    """world.add_member_accounts (bench/multi_account.py's 50 accounts): a new OU of new members made
    through Organizations, each with the execution role and its instances; a TargetLocations run over
    that OU acts in each of them, and the seeded organization keeps its twelve."""
    ou, accounts = world.add_member_accounts(sandbox, "Extra", 3, ["eu-west-1"], 2)
    orgs = client("organizations", "us-east-1")
    assert sorted(a["Id"] for a in orgs.list_accounts_for_parent(ParentId=ou)["Accounts"]) == sorted(accounts)
    assert len(set(accounts) & world.MEMBERS) == 0
    assert sum(len(orgs.list_accounts_for_parent(ParentId=o)["Accounts"]) for o in world.OU_IDS.values()) == 12
    _create(ssm, "Delegate-TagFleet", TAG_FLEET)
    parent_id = ssm.start_automation_execution(
        DocumentName="Delegate-TagFleet", Parameters={"Label": ["wide"]},
        TargetLocations=[{"Accounts": [ou], "Regions": ["eu-west-1"], "TargetLocationMaxConcurrency": "3",
                          "ExecutionRoleName": world.EXECUTION_ROLE}],
    )["AutomationExecutionId"]
    assert _wait(ssm, parent_id)["AutomationExecutionStatus"] == "Success"
    assert len(_children(client, ssm, parent_id)) == 3  # each read in its own account, through the read role
    creds = client("sts").assume_role(RoleArn=f"arn:aws:iam::{accounts[0]}:role/{world.EXECUTION_ROLE}",
                                      RoleSessionName="look")["Credentials"]
    instances = [i for r in client("ec2", credentials=creds).describe_instances()["Reservations"] for i in r["Instances"]]
    assert len(instances) == 2
    assert all({t["Key"]: t["Value"] for t in i["Tags"]}.get("Delegate") == f"wide-{accounts[0]}-eu-west-1"
               for i in instances)
