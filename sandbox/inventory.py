"""The EC2 inventory: seeded instances, volumes, snapshots and AMIs, and how their states move.

Records use botocore's member names (PascalCase), so `ec2.py` returns them almost as they are
and runbook selectors such as `$.Reservations[0].Instances[0].State.Name` work on them.
Transitions are lazy: a record in a transitional state carries `_until` (epoch seconds) and
`settle()` finishes every transition that is due whenever the inventory is read. No thread
is needed and a transition survives a restart from a state file.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from .errors import AwsError
from .protocol import iso

STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}
# Seconds each transition takes at time_scale 1 (real EC2 takes tens of seconds; a restart
# runbook then lasts about ten seconds, long enough to watch in the demo).
TRANSITIONS = {
    "pending": ("running", 4.0),
    "stopping": ("stopped", 5.0),
    "shutting-down": ("terminated", 5.0),
}
IMAGE_SECONDS = 6.0
SNAPSHOT_SECONDS = 4.0
AMAZON_OWNER = "137112412989"  # the account that owns Amazon Linux AMIs

# (name, team, instance type, initial state); two untagged instances have no Team tag.
SEED_INSTANCES = [
    ("web-1", "platform", "t3.medium", "running"),
    ("web-2", "platform", "t3.medium", "running"),
    ("api-1", "platform", "m5.large", "running"),
    ("api-2", "platform", "m5.large", "stopped"),
    ("etl-1", "data", "r5.large", "running"),
    ("warehouse-1", "data", "r5.xlarge", "running"),
    ("notebook-1", "data", "t3.large", "stopped"),
    ("bastion", None, "t3.micro", "running"),
    (None, None, "t3.nano", "running"),
]


def seeded_id(prefix: str, region: str, name: str) -> str:
    """Deterministic ids, so tests and the demo can name seeded resources across restarts."""
    return f"{prefix}-0" + hashlib.sha256(f"{region}/{name}".encode()).hexdigest()[:16]


def new_id(prefix: str) -> str:
    return f"{prefix}-0" + secrets.token_hex(8)


def _tags(name: str | None, team: str | None) -> list[dict]:
    tags = []
    if name:
        tags.append({"Key": "Name", "Value": name})
    if team:
        tags.append({"Key": "Team", "Value": team})
    return tags


def seed(region) -> None:
    now = time.time()
    zone = region.name + "a"
    vpc = seeded_id("vpc", region.name, "main")
    subnet = seeded_id("subnet", region.name, "main")
    base_image = seeded_id("ami", region.name, "al2023")
    region.images[base_image] = make_image(
        region,
        base_image,
        "al2023-ami-2023.6-x86_64",
        AMAZON_OWNER,
        "Amazon Linux 2023 AMI",
        [],
        now - 90 * 86400,
        public=True,
    )
    for index, (name, team, instance_type, state) in enumerate(SEED_INSTANCES):
        key = name or f"untagged-{index}"
        instance_id = seeded_id("i", region.name, key)
        volume_id = seeded_id("vol", region.name, key + "/root")
        launched = now - 86400 * (index + 3)
        region.instances[instance_id] = {
            "InstanceId": instance_id,
            "ImageId": base_image,
            "InstanceType": instance_type,
            "State": {"Code": STATE_CODES[state], "Name": state},
            "PrivateDnsName": f"ip-10-0-1-{10 + index}.{region.name}.compute.internal",
            "PrivateIpAddress": f"10.0.1.{10 + index}",
            "PublicDnsName": "",
            "StateTransitionReason": "",
            "AmiLaunchIndex": 0,
            "LaunchTime": launched,
            "Placement": {"AvailabilityZone": zone, "Tenancy": "default"},
            "SubnetId": subnet,
            "VpcId": vpc,
            "Architecture": "x86_64",
            "RootDeviceName": "/dev/xvda",
            "RootDeviceType": "ebs",
            "VirtualizationType": "hvm",
            "Hypervisor": "xen",
            "EbsOptimized": False,
            "BlockDeviceMappings": [
                {
                    "DeviceName": "/dev/xvda",
                    "Ebs": {
                        "AttachTime": launched,
                        "DeleteOnTermination": True,
                        "Status": "attached",
                        "VolumeId": volume_id,
                    },
                }
            ],
            "SecurityGroups": [
                {
                    "GroupId": seeded_id("sg", region.name, team or "default"),
                    "GroupName": f"{team or 'default'}-sg",
                }
            ],
            "Tags": _tags(name, team),
            "_history": [state],
        }
        region.volumes[volume_id] = make_volume(
            region,
            volume_id,
            8,
            zone,
            _tags(f"{key}-root", team),
            launched,
            attachment=(instance_id, "/dev/xvda"),
        )
    for team in ("platform", "data"):
        spare = seeded_id("vol", region.name, f"{team}/spare")
        region.volumes[spare] = make_volume(
            region, spare, 20, zone, _tags(f"{team}-spare", team), now - 7 * 86400
        )
        snapshot = seeded_id("snap", region.name, f"{team}/backup")
        region.snapshots[snapshot] = make_snapshot(
            region, snapshot, spare, 20, f"{team} nightly backup", _tags(f"{team}-backup", team), now - 86400
        )
        image = seeded_id("ami", region.name, f"{team}/golden")
        region.images[image] = make_image(
            region,
            image,
            f"{team}-golden-2024",
            region.account_id,
            f"{team} golden image",
            _tags(f"{team}-golden", team),
            now - 30 * 86400,
        )
    legacy = seeded_id("snap", region.name, "untagged/legacy")
    region.snapshots[legacy] = make_snapshot(
        region,
        legacy,
        seeded_id("vol", region.name, "bastion/root"),
        8,
        "legacy snapshot",
        [],
        now - 40 * 86400,
    )


def make_volume(region, volume_id, size, zone, tags, created, attachment=None, snapshot_id="") -> dict:
    volume = {
        "VolumeId": volume_id,
        "Size": size,
        "SnapshotId": snapshot_id,
        "AvailabilityZone": zone,
        "State": "in-use" if attachment else "available",
        "CreateTime": created,
        "VolumeType": "gp3",
        "Iops": 3000,
        "Encrypted": True,
        "Tags": tags,
        "Attachments": [],
    }
    if attachment:
        instance_id, device = attachment
        volume["Attachments"].append(
            {
                "VolumeId": volume_id,
                "InstanceId": instance_id,
                "Device": device,
                "State": "attached",
                "AttachTime": created,
                "DeleteOnTermination": True,
            }
        )
    return volume


def make_snapshot(
    region, snapshot_id, volume_id, size, description, tags, started, state="completed"
) -> dict:
    snapshot = {
        "SnapshotId": snapshot_id,
        "VolumeId": volume_id,
        "VolumeSize": size,
        "Description": description,
        "State": state,
        "StartTime": started,
        "Progress": "100%" if state == "completed" else "0%",
        "OwnerId": region.account_id,
        "Encrypted": True,
        "Tags": tags,
    }
    if state == "pending":
        snapshot["_until"] = time.time() + region.scaled(SNAPSHOT_SECONDS)
    return snapshot


def make_image(
    region,
    image_id,
    name,
    owner,
    description,
    tags,
    created,
    state="available",
    public=False,
    source_instance=None,
) -> dict:
    image = {
        "ImageId": image_id,
        "Name": name,
        "Description": description,
        "OwnerId": owner,
        "State": state,
        "CreationDate": iso(created),
        "Public": public,
        "Architecture": "x86_64",
        "ImageType": "machine",
        "RootDeviceName": "/dev/xvda",
        "RootDeviceType": "ebs",
        "VirtualizationType": "hvm",
        "Hypervisor": "xen",
        "ImageLocation": f"{owner}/{name}",
        "PlatformDetails": "Linux/UNIX",
        "Tags": tags,
    }
    if state == "pending":
        image["_until"] = time.time() + region.scaled(IMAGE_SECONDS)
    if source_instance:
        image["SourceInstanceId"] = source_instance
    return image


def settle(region, now: float | None = None) -> None:
    """Finish every transition whose time has come."""
    now = time.time() if now is None else now
    for instance in region.instances.values():
        until = instance.get("_until")
        if until is not None and until <= now:
            _set_state(instance, TRANSITIONS[instance["State"]["Name"]][0])
            del instance["_until"]
            region.state.mark_dirty()
    for kind, final in (("images", "available"), ("snapshots", "completed")):
        for record in getattr(region, kind).values():
            if record.get("_until") is not None and record["_until"] <= now:
                record["State"] = final
                if kind == "snapshots":
                    record["Progress"] = "100%"
                del record["_until"]
                region.state.mark_dirty()


def _set_state(instance: dict, name: str) -> None:
    instance["State"] = {"Code": STATE_CODES[name], "Name": name}
    instance["_history"].append(name)


def _begin(region, instance: dict, transitional: str) -> None:
    _set_state(instance, transitional)
    instance["_until"] = time.time() + region.scaled(TRANSITIONS[transitional][1])
    region.state.mark_dirty()


_INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")


def check_instance_id(instance_id: str) -> None:
    if not _INSTANCE_ID.fullmatch(instance_id or ""):
        raise AwsError("InvalidInstanceID.Malformed", f'Invalid id: "{instance_id}"')


def instance(region, instance_id: str) -> dict:
    check_instance_id(instance_id)
    settle(region)
    record = region.instances.get(instance_id)
    if record is None:
        raise AwsError("InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist")
    return record


def change_state(region, instance_id: str, action: str) -> tuple[dict, dict]:
    """Start, stop or terminate one instance; (previous state, current state) as EC2 reports them.

    Mirrors EC2's rules: stopping a stopped instance is a no-op, starting one that is still
    stopping is IncorrectInstanceState, and nothing but terminate touches a terminated one.
    """
    record = instance(region, instance_id)
    previous = dict(record["State"])
    current = previous["Name"]
    incorrect = AwsError(
        "IncorrectInstanceState",
        f"The instance '{instance_id}' is not in a state from which it can be {action}ed (it is {current}).",
    )
    if action == "start":
        if current == "stopped":
            _begin(region, record, "pending")
        elif current not in ("pending", "running"):
            raise incorrect
    elif action == "stop":
        if current == "running":
            _begin(region, record, "stopping")
            record["StateTransitionReason"] = f"User initiated ({iso(time.time())})"
        elif current not in ("stopping", "stopped"):
            raise incorrect
    elif action == "terminate":
        if current not in ("shutting-down", "terminated"):
            _begin(region, record, "shutting-down")
    else:
        raise ValueError(action)
    return previous, dict(record["State"])
