"""EC2 over the Query protocol: the seeded inventory, filters, pagination and the mutating calls."""

from __future__ import annotations

import pytest

from sandbox.inventory import seeded_id
from botocore.exceptions import ClientError

pytestmark = []


def code_of(call) -> str:
    with pytest.raises(ClientError) as excinfo:
        call()
    return excinfo.value.response["Error"]["Code"]


def instances(response) -> list[dict]:
    return [i for r in response["Reservations"] for i in r["Instances"]]


def test_seeded_inventory_is_deterministic_and_per_region(client, sandbox):
    from sandbox.inventory import seeded_id

    eu = instances(client("ec2").describe_instances())
    us = instances(client("ec2", region="us-east-1").describe_instances())
    assert len(eu) == len(us) == 9
    assert {i["InstanceId"] for i in eu}.isdisjoint({i["InstanceId"] for i in us})
    assert seeded_id("i", "eu-west-1", "web-1") in {i["InstanceId"] for i in eu}
    teams = [next((t["Value"] for t in i.get("Tags", []) if t["Key"] == "Team"), None) for i in eu]
    assert (teams.count("platform"), teams.count("data"), teams.count(None)) == (4, 3, 2)
    web = next(i for i in eu if {"Key": "Name", "Value": "web-1"} in i["Tags"])
    assert web["State"] == {"Code": 16, "Name": "running"}
    assert web["Placement"]["AvailabilityZone"] == "eu-west-1a"
    assert web["BlockDeviceMappings"][0]["Ebs"]["VolumeId"].startswith("vol-")
    assert web["LaunchTime"].year >= 2024
    assert instances(client("ec2", region="sa-east-1").describe_instances()) == []


def test_describe_instances_filters(ec2):
    def ids(**kwargs):
        return sorted(i["InstanceId"] for i in instances(ec2.describe_instances(**kwargs)))

    platform = ids(Filters=[{"Name": "tag:Team", "Values": ["platform"]}])
    assert len(platform) == 4
    assert len(ids(Filters=[{"Name": "tag:Team", "Values": ["platform", "data"]}])) == 7
    stopped_platform = ids(
        Filters=[
            {"Name": "tag:Team", "Values": ["platform"]},
            {"Name": "instance-state-name", "Values": ["stopped"]},
        ]
    )
    assert len(stopped_platform) == 1
    assert len(ids(Filters=[{"Name": "tag-key", "Values": ["Team"]}])) == 7
    assert ids(Filters=[{"Name": "instance-id", "Values": [platform[0]]}]) == [platform[0]]
    assert len(ids(Filters=[{"Name": "tag:Name", "Values": ["web-*"]}])) == 2  # wildcards
    assert ids(InstanceIds=platform[:2]) == platform[:2]
    assert (
        code_of(lambda: ec2.describe_instances(Filters=[{"Name": "colour", "Values": ["x"]}]))
        == "InvalidParameterValue"
    )


def test_describe_instances_errors_and_pagination(ec2):
    assert (
        code_of(lambda: ec2.describe_instances(InstanceIds=["i-0123456789abcdef0"]))
        == "InvalidInstanceID.NotFound"
    )
    # moto answers NotFound where EC2 says Malformed; the sandbox leaves that to moto.
    assert code_of(lambda: ec2.describe_instances(InstanceIds=["web-1"])).startswith("InvalidInstanceID.")
    first = ec2.describe_instances(MaxResults=5)
    assert len(instances(first)) == 5 and first["NextToken"]
    rest = ec2.describe_instances(MaxResults=5, NextToken=first["NextToken"])
    assert len(instances(rest)) == 4 and "NextToken" not in rest
    paged = [
        i
        for page in ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5})
        for r in page["Reservations"]
        for i in r["Instances"]
    ]
    assert len(paged) == 9
    assert code_of(lambda: ec2.describe_instances(MaxResults=2)) == "InvalidParameterValue"


def test_stop_and_start_instances(ec2, sandbox, team_instances):
    instance = team_instances("data")[0]
    stopping = ec2.stop_instances(InstanceIds=[instance])["StoppingInstances"][0]
    assert stopping["PreviousState"]["Name"] == "running" and stopping["CurrentState"]["Name"] == "stopping"
    assert code_of(lambda: ec2.start_instances(InstanceIds=[instance])) == "IncorrectInstanceState"
    ec2.get_waiter("instance_stopped").wait(
        InstanceIds=[instance], WaiterConfig={"Delay": 0.05, "MaxAttempts": 100}
    )
    starting = ec2.start_instances(InstanceIds=[instance])["StartingInstances"][0]
    assert starting["CurrentState"]["Name"] == "pending"
    ec2.get_waiter("instance_running").wait(
        InstanceIds=[instance], WaiterConfig={"Delay": 0.05, "MaxAttempts": 100}
    )
    assert sandbox.state_history(instance) == ["running", "stopping", "stopped", "pending", "running"]
    assert ec2.reboot_instances(InstanceIds=[instance])["ResponseMetadata"]["HTTPStatusCode"] == 200
    terminating = ec2.terminate_instances(InstanceIds=[instance])["TerminatingInstances"][0]
    assert terminating["CurrentState"]["Name"] == "shutting-down"
    assert (
        code_of(lambda: ec2.stop_instances(InstanceIds=[instance, "i-0123456789abcdef0"]))
        == "InvalidInstanceID.NotFound"
    )
    with pytest.raises(ClientError) as excinfo:
        ec2.stop_instances(InstanceIds=[instance], DryRun=True)
    assert excinfo.value.response["Error"]["Code"] == "DryRunOperation"


def test_modify_instance_type_requires_a_stopped_instance(ec2, team_instances):
    running = team_instances("platform")[0]
    assert (
        code_of(lambda: ec2.modify_instance_attribute(InstanceId=running, InstanceType={"Value": "m5.large"}))
        == "IncorrectInstanceState"
    )
    stopped = team_instances("platform", state="stopped")[0]
    ec2.modify_instance_attribute(InstanceId=stopped, InstanceType={"Value": "c5.large"})
    assert instances(ec2.describe_instances(InstanceIds=[stopped]))[0]["InstanceType"] == "c5.large"
    ec2.modify_instance_attribute(InstanceId=stopped, Attribute="instanceType", Value="c5.xlarge")
    assert instances(ec2.describe_instances(InstanceIds=[stopped]))[0]["InstanceType"] == "c5.xlarge"


def test_volumes_snapshots_and_images(ec2, team_instances):
    spare = ec2.describe_volumes(
        Filters=[{"Name": "status", "Values": ["available"]}, {"Name": "tag:Team", "Values": ["platform"]}]
    )["Volumes"]
    assert len(spare) == 1
    attached = ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [team_instances("platform")[0]]}]
    )["Volumes"]
    assert attached[0]["Attachments"][0]["State"] == "attached"
    snapshot = ec2.create_snapshot(VolumeId=spare[0]["VolumeId"], Description="before change")
    # moto completes snapshots at once (real EBS takes minutes): a known, documented difference.
    assert snapshot["State"] in ("pending", "completed") and snapshot["VolumeId"] == spare[0]["VolumeId"]
    ec2.get_waiter("snapshot_completed").wait(
        SnapshotIds=[snapshot["SnapshotId"]], WaiterConfig={"Delay": 0.05, "MaxAttempts": 100}
    )
    copy = ec2.copy_snapshot(SourceSnapshotId=snapshot["SnapshotId"], SourceRegion="eu-west-1")
    assert copy["SnapshotId"] != snapshot["SnapshotId"]
    ec2.delete_snapshot(SnapshotId=snapshot["SnapshotId"])
    assert (
        code_of(lambda: ec2.describe_snapshots(SnapshotIds=[snapshot["SnapshotId"]]))
        == "InvalidSnapshot.NotFound"
    )
    attachment = ec2.attach_volume(
        VolumeId=spare[0]["VolumeId"], InstanceId=team_instances("platform")[0], Device="/dev/sdf"
    )
    assert attachment["State"] == "attaching"
    assert (
        code_of(
            lambda: ec2.attach_volume(
                VolumeId=spare[0]["VolumeId"], InstanceId=team_instances("data")[0], Device="/dev/sdg"
            )
        )
        == "VolumeInUse"
    )
    image_id = ec2.create_image(InstanceId=team_instances("platform")[0], Name="web-backup")["ImageId"]
    # EC2 refuses a duplicate AMI name (InvalidAMIName.Duplicate); moto does not (a documented moto gap).
    ec2.get_waiter("image_available").wait(
        ImageIds=[image_id], WaiterConfig={"Delay": 0.05, "MaxAttempts": 100}
    )
    images = ec2.describe_images(Owners=["self"])["Images"]
    assert {"web-backup", "platform-golden-2024", "data-golden-2024"} <= {i["Name"] for i in images}
    assert next(i for i in images if i["ImageId"] == image_id)["State"] == "available"
    base = ec2.describe_images(Filters=[{"Name": "name", "Values": ["al2023-ami-*"]}])["Images"]
    assert [i["ImageId"] for i in base] == [seeded_id("ami", "eu-west-1", "al2023")]


def test_tags(ec2, team_instances):
    instance = team_instances("data")[0]
    ec2.create_tags(
        Resources=[instance], Tags=[{"Key": "Owner", "Value": "erin"}, {"Key": "Team", "Value": "ml"}]
    )
    tags = {
        t["Key"]: t["Value"] for t in instances(ec2.describe_instances(InstanceIds=[instance]))[0]["Tags"]
    }
    assert tags["Owner"] == "erin" and tags["Team"] == "ml"
    described = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [instance]}])["Tags"]
    assert {(t["Key"], t["ResourceType"]) for t in described} >= {("Owner", "instance"), ("Team", "instance")}
    # EC2 refuses tags on an unknown instance; moto accepts them (a documented moto gap).
