"""EC2 operations on the sandbox inventory, in botocore's member names (PascalCase dicts).

The same functions answer the Query-protocol HTTP API (through `ec2_xml.py`) and the
runbook engine's `aws:executeAwsApi` / `aws:waitForAwsResourceProperty` steps, so a runbook
sees exactly what boto3 would.
"""

from __future__ import annotations

import hashlib
import time
from fnmatch import fnmatchcase

from . import inventory
from .errors import AwsError
from .paging import page
from .protocol import iso
from .state import Request

TIME_KEYS = {"LaunchTime", "CreateTime", "StartTime", "AttachTime"}


def public(record):
    """A copy without internal `_` keys and with timestamps as ISO strings, as boto3 returns them."""
    if isinstance(record, dict):
        return {
            key: (iso(value) if key in TIME_KEYS and isinstance(value, (int, float)) else public(value))
            for key, value in record.items()
            if not key.startswith("_")
        }
    if isinstance(record, list):
        return [public(item) for item in record]
    return record


def _ids(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _tag_values(record: dict) -> dict[str, str]:
    return {tag["Key"]: tag.get("Value", "") for tag in record.get("Tags", [])}


def _matches(record: dict, filters: list[dict], fields: dict) -> bool:
    """EC2 filter semantics: values of one filter ORed (with * and ? wildcards), filters ANDed."""
    for spec in filters or []:
        name, wanted = spec.get("Name", ""), [str(v) for v in _ids(spec.get("Values"))]
        if name.startswith("tag:"):
            tags = _tag_values(record)
            actual = [tags[name[4:]]] if name[4:] in tags else []
        elif name == "tag-key":
            actual = list(_tag_values(record))
        elif name == "tag-value":
            actual = list(_tag_values(record).values())
        elif name in fields:
            actual = [str(v).lower() if isinstance(v, bool) else str(v) for v in fields[name](record)]
        else:
            raise AwsError("InvalidParameterValue", f"The filter '{name}' is invalid")
        if not any(fnmatchcase(a, w) for a in actual for w in wanted):
            return False
    return True


def _paged(req: Request, items: list, operation: str, lo: int, hi: int):
    max_results = req.params.get("MaxResults")
    if max_results is not None:
        max_results = int(max_results)
    return page(
        items,
        operation=operation,
        max_results=max_results,
        next_token=req.params.get("NextToken"),
        default=hi,
        limit=hi,
        minimum=lo,
        error_code="InvalidParameterValue",
    )


# Instances ---------------------------------------------------------------------------------

INSTANCE_FILTERS = {
    "instance-id": lambda r: [r["InstanceId"]],
    "instance-state-name": lambda r: [r["State"]["Name"]],
    "instance-state-code": lambda r: [r["State"]["Code"]],
    "instance-type": lambda r: [r["InstanceType"]],
    "availability-zone": lambda r: [r["Placement"]["AvailabilityZone"]],
    "image-id": lambda r: [r["ImageId"]],
    "vpc-id": lambda r: [r["VpcId"]],
    "subnet-id": lambda r: [r["SubnetId"]],
    "private-ip-address": lambda r: [r["PrivateIpAddress"]],
}


def describe_instances(req: Request) -> dict:
    region, p = req.region, req.params
    ids = _ids(p.get("InstanceIds"))
    if ids and p.get("MaxResults") is not None:
        raise AwsError(
            "InvalidParameterCombination",
            "The parameter instancesSet cannot be used with the parameter maxResults",
        )
    records = (
        [inventory.instance(region, instance_id) for instance_id in ids]
        if ids
        else sorted(_settled(region).values(), key=lambda r: r["InstanceId"])
    )
    records = [r for r in records if _matches(r, p.get("Filters"), INSTANCE_FILTERS)]
    chunk, token = _paged(req, records, "DescribeInstances", 5, 1000)
    result = {
        "Reservations": [
            {
                "ReservationId": "r-0" + hashlib.sha256(r["InstanceId"].encode()).hexdigest()[:16],
                "OwnerId": region.account_id,
                "Groups": [],
                "Instances": [public(r)],
            }
            for r in chunk
        ]
    }
    if token:
        result["NextToken"] = token
    return result


def _settled(region) -> dict:
    inventory.settle(region)
    return region.instances


def _state_change(req: Request, action: str, result_key: str) -> dict:
    ids = _ids(req.params.get("InstanceIds"))
    if not ids:
        raise AwsError("MissingParameter", "The request must contain the parameter InstanceId")
    for instance_id in ids:  # EC2 checks every id before changing any instance
        inventory.instance(req.region, instance_id)
    changes = []
    for instance_id in ids:
        previous, current = inventory.change_state(req.region, instance_id, action)
        changes.append({"InstanceId": instance_id, "CurrentState": current, "PreviousState": previous})
    return {result_key: changes}


def start_instances(req: Request) -> dict:
    return _state_change(req, "start", "StartingInstances")


def stop_instances(req: Request) -> dict:
    return _state_change(req, "stop", "StoppingInstances")


def terminate_instances(req: Request) -> dict:
    return _state_change(req, "terminate", "TerminatingInstances")


def reboot_instances(req: Request) -> dict:
    ids = _ids(req.params.get("InstanceIds"))
    for instance_id in ids:
        record = inventory.instance(req.region, instance_id)
        if record["State"]["Name"] != "running":
            raise AwsError(
                "IncorrectInstanceState", f"The instance '{instance_id}' is not in the 'running' state."
            )
    return {"Return": True}  # a reboot keeps the instance "running"


def modify_instance_attribute(req: Request) -> dict:
    p = req.params
    record = inventory.instance(req.region, p.get("InstanceId", ""))
    new_type = p.get("InstanceType")
    if isinstance(new_type, dict):
        new_type = new_type.get("Value")
    if new_type is None and (p.get("Attribute") or "") == "instanceType":
        new_type = p.get("Value")
    if not new_type:
        raise AwsError(
            "UnsupportedOperation",
            "The Delegate sandbox models only the InstanceType attribute in ModifyInstanceAttribute.",
        )
    if record["State"]["Name"] != "stopped":
        raise AwsError(
            "IncorrectInstanceState", f"The instance '{record['InstanceId']}' is not in the 'stopped' state."
        )
    record["InstanceType"] = new_type
    return {}


# Volumes, snapshots, images ------------------------------------------------------------------

VOLUME_FILTERS = {
    "volume-id": lambda r: [r["VolumeId"]],
    "status": lambda r: [r["State"]],
    "size": lambda r: [r["Size"]],
    "volume-type": lambda r: [r["VolumeType"]],
    "snapshot-id": lambda r: [r["SnapshotId"]],
    "availability-zone": lambda r: [r["AvailabilityZone"]],
    "attachment.instance-id": lambda r: [a["InstanceId"] for a in r["Attachments"]],
    "attachment.device": lambda r: [a["Device"] for a in r["Attachments"]],
    "attachment.status": lambda r: [a["State"] for a in r["Attachments"]],
}
SNAPSHOT_FILTERS = {
    "snapshot-id": lambda r: [r["SnapshotId"]],
    "volume-id": lambda r: [r["VolumeId"]],
    "status": lambda r: [r["State"]],
    "owner-id": lambda r: [r["OwnerId"]],
    "description": lambda r: [r["Description"]],
}
IMAGE_FILTERS = {
    "image-id": lambda r: [r["ImageId"]],
    "name": lambda r: [r["Name"]],
    "state": lambda r: [r["State"]],
    "owner-id": lambda r: [r["OwnerId"]],
    "is-public": lambda r: [r["Public"]],
    "architecture": lambda r: [r["Architecture"]],
}


def _lookup(records: dict, ids: list[str], code: str, label: str) -> list[dict]:
    missing = [i for i in ids if i not in records]
    if missing:
        raise AwsError(code, f"The {label} '{missing[0]}' does not exist.")
    return [records[i] for i in ids]


def _named_or_all(records: dict, ids: list[str], code: str, label: str) -> list[dict]:
    """The records the request names (NotFound if one is missing), or all of them in id order."""
    return _lookup(records, ids, code, label) if ids else [records[key] for key in sorted(records)]


def describe_volumes(req: Request) -> dict:
    p = req.params
    ids = _ids(p.get("VolumeIds"))
    records = _named_or_all(req.region.volumes, ids, "InvalidVolume.NotFound", "volume")
    records = [r for r in records if _matches(r, p.get("Filters"), VOLUME_FILTERS)]
    chunk, token = _paged(req, records, "DescribeVolumes", 5, 500)
    return {"Volumes": public(chunk), **({"NextToken": token} if token else {})}


def describe_snapshots(req: Request) -> dict:
    p = req.params
    inventory.settle(req.region)
    ids = _ids(p.get("SnapshotIds"))
    records = _named_or_all(req.region.snapshots, ids, "InvalidSnapshot.NotFound", "snapshot")
    owners = {req.region.account_id if o == "self" else o for o in _ids(p.get("OwnerIds"))}
    records = [
        r
        for r in records
        if (not owners or r["OwnerId"] in owners) and _matches(r, p.get("Filters"), SNAPSHOT_FILTERS)
    ]
    chunk, token = _paged(req, records, "DescribeSnapshots", 5, 1000)
    return {"Snapshots": public(chunk), **({"NextToken": token} if token else {})}


def describe_images(req: Request) -> dict:
    p = req.params
    inventory.settle(req.region)
    ids = _ids(p.get("ImageIds"))
    records = _named_or_all(req.region.images, ids, "InvalidAMIID.NotFound", "image id")
    owners = {
        req.region.account_id if o == "self" else (inventory.AMAZON_OWNER if o == "amazon" else o)
        for o in _ids(p.get("Owners"))
    }
    records = [
        r
        for r in records
        if r["State"] != "deregistered"
        and (not owners or r["OwnerId"] in owners)
        and _matches(r, p.get("Filters"), IMAGE_FILTERS)
    ]
    chunk, token = _paged(req, records, "DescribeImages", 5, 1000)
    return {"Images": public(chunk), **({"NextToken": token} if token else {})}


def _spec_tags(p: dict, resource_type: str) -> list[dict]:
    tags = []
    for spec in p.get("TagSpecifications") or []:
        if spec.get("ResourceType", resource_type) == resource_type:
            tags.extend({"Key": t["Key"], "Value": t.get("Value", "")} for t in spec.get("Tags") or [])
    return tags


def create_image(req: Request) -> dict:
    p, region = req.params, req.region
    record = inventory.instance(region, p.get("InstanceId", ""))
    name = p.get("Name") or ""
    if not 3 <= len(name) <= 128:
        raise AwsError("InvalidAMIName.Malformed", "AMI names must be between 3 and 128 characters long.")
    if any(
        image["Name"] == name and image["OwnerId"] == region.account_id for image in region.images.values()
    ):
        raise AwsError("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by another AMI.")
    if record["State"]["Name"] in ("pending", "shutting-down", "terminated"):
        raise AwsError(
            "IncorrectInstanceState", f"The instance '{record['InstanceId']}' is {record['State']['Name']}."
        )
    image_id = inventory.new_id("ami")
    region.images[image_id] = inventory.make_image(
        region,
        image_id,
        name,
        region.account_id,
        p.get("Description", ""),
        _spec_tags(p, "image"),
        time.time(),
        state="pending",
        source_instance=record["InstanceId"],
    )
    return {"ImageId": image_id}


def create_snapshot(req: Request) -> dict:
    p, region = req.params, req.region
    volume = _lookup(region.volumes, [p.get("VolumeId", "")], "InvalidVolume.NotFound", "volume")[0]
    snapshot_id = inventory.new_id("snap")
    region.snapshots[snapshot_id] = inventory.make_snapshot(
        region,
        snapshot_id,
        volume["VolumeId"],
        volume["Size"],
        p.get("Description", ""),
        _spec_tags(p, "snapshot"),
        time.time(),
        state="pending",
    )
    return public(region.snapshots[snapshot_id])


def copy_snapshot(req: Request) -> dict:
    p, region = req.params, req.region
    source_region = req.state.region(p.get("SourceRegion") or region.name)
    inventory.settle(source_region)
    source = _lookup(
        source_region.snapshots, [p.get("SourceSnapshotId", "")], "InvalidSnapshot.NotFound", "snapshot"
    )[0]
    if source["State"] != "completed":
        raise AwsError("IncorrectState", f"Snapshot '{source['SnapshotId']}' is not completed yet.")
    snapshot_id = inventory.new_id("snap")
    description = p.get("Description") or f"[Copied {source['SnapshotId']} from {source_region.name}]"
    region.snapshots[snapshot_id] = inventory.make_snapshot(
        region,
        snapshot_id,
        source["VolumeId"],
        source["VolumeSize"],
        description,
        _spec_tags(p, "snapshot"),
        time.time(),
        state="pending",
    )
    return {"SnapshotId": snapshot_id, "Tags": region.snapshots[snapshot_id]["Tags"]}


def delete_snapshot(req: Request) -> dict:
    snapshot_id = req.params.get("SnapshotId", "")
    _lookup(req.region.snapshots, [snapshot_id], "InvalidSnapshot.NotFound", "snapshot")
    del req.region.snapshots[snapshot_id]
    return {}


def attach_volume(req: Request) -> dict:
    p, region = req.params, req.region
    volume = _lookup(region.volumes, [p.get("VolumeId", "")], "InvalidVolume.NotFound", "volume")[0]
    record = inventory.instance(region, p.get("InstanceId", ""))
    device = p.get("Device") or ""
    if not device:
        raise AwsError("MissingParameter", "The request must contain the parameter device")
    if volume["State"] != "available":
        raise AwsError("VolumeInUse", f"{volume['VolumeId']} is already attached to an instance")
    if volume["AvailabilityZone"] != record["Placement"]["AvailabilityZone"]:
        raise AwsError(
            "InvalidVolume.ZoneMismatch", "The volume is not in the same availability zone as the instance."
        )
    if any(m["DeviceName"] == device for m in record["BlockDeviceMappings"]):
        raise AwsError("InvalidParameterValue", f"Attachment point {device} is already in use")
    now = time.time()
    attachment = {
        "VolumeId": volume["VolumeId"],
        "InstanceId": record["InstanceId"],
        "Device": device,
        "State": "attached",
        "AttachTime": now,
        "DeleteOnTermination": False,
    }
    volume["Attachments"] = [attachment]
    volume["State"] = "in-use"
    record["BlockDeviceMappings"].append(
        {
            "DeviceName": device,
            "Ebs": {
                "AttachTime": now,
                "DeleteOnTermination": False,
                "Status": "attached",
                "VolumeId": volume["VolumeId"],
            },
        }
    )
    return public({**attachment, "State": "attaching"})


# Tags ------------------------------------------------------------------------------------------

RESOURCE_KINDS = {
    "i-": ("instances", "instance", "InvalidInstanceID.NotFound"),
    "vol-": ("volumes", "volume", "InvalidVolume.NotFound"),
    "snap-": ("snapshots", "snapshot", "InvalidSnapshot.NotFound"),
    "ami-": ("images", "image", "InvalidAMIID.NotFound"),
}


def _resource(region, resource_id: str) -> tuple[dict, str]:
    for prefix, (kind, resource_type, code) in RESOURCE_KINDS.items():
        if resource_id.startswith(prefix):
            record = getattr(region, kind).get(resource_id)
            if record is None:
                raise AwsError(code, f"The ID '{resource_id}' does not exist")
            return record, resource_type
    raise AwsError("InvalidID", f"The ID '{resource_id}' is not valid")


def create_tags(req: Request) -> dict:
    p = req.params
    resources = [_resource(req.region, rid)[0] for rid in _ids(p.get("Resources"))]
    for record in resources:
        for tag in p.get("Tags") or []:
            record["Tags"] = [t for t in record["Tags"] if t["Key"] != tag["Key"]]
            record["Tags"].append({"Key": tag["Key"], "Value": tag.get("Value", "")})
    return {}


TAG_FILTERS = {
    "resource-id": lambda r: [r["ResourceId"]],
    "resource-type": lambda r: [r["ResourceType"]],
    "key": lambda r: [r["Key"]],
    "value": lambda r: [r["Value"]],
}


def describe_tags(req: Request) -> dict:
    rows = []
    for kind, resource_type, _ in RESOURCE_KINDS.values():
        for resource_id, record in sorted(getattr(req.region, kind).items()):
            for tag in record.get("Tags", []):
                rows.append(
                    {
                        "ResourceId": resource_id,
                        "ResourceType": resource_type,
                        "Key": tag["Key"],
                        "Value": tag.get("Value", ""),
                    }
                )
    # Here the filters name the tag row's own fields, not the resource's tags.
    rows = [row for row in rows if _matches({"Tags": []} | row, req.params.get("Filters"), TAG_FILTERS)]
    chunk, token = _paged(req, rows, "DescribeTags", 5, 1000)
    return {"Tags": chunk, **({"NextToken": token} if token else {})}


OPERATIONS = {
    "DescribeInstances": describe_instances,
    "StartInstances": start_instances,
    "StopInstances": stop_instances,
    "RebootInstances": reboot_instances,
    "TerminateInstances": terminate_instances,
    "ModifyInstanceAttribute": modify_instance_attribute,
    "DescribeVolumes": describe_volumes,
    "DescribeSnapshots": describe_snapshots,
    "DescribeImages": describe_images,
    "CreateImage": create_image,
    "CreateSnapshot": create_snapshot,
    "CopySnapshot": copy_snapshot,
    "DeleteSnapshot": delete_snapshot,
    "AttachVolume": attach_volume,
    "CreateTags": create_tags,
    "DescribeTags": describe_tags,
}
