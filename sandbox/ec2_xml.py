"""The EC2 Query protocol: wire parameters in, `http://ec2.amazonaws.com/doc/2016-11-15/` XML out.

EC2's wire names differ from botocore's member names in a handful of regular ways (element
names checked against botocore's ec2 service-2 model):
- requests number list items after the singular name: `InstanceId.1`, `Filter.1.Value.1`;
- responses use lowerCamel element names, lists are `<xxxSet><item>…</item></xxxSet>`, and a
  few members have their own names (`State` is `instanceState` on an instance, `status` on a
  volume, `imageState` on an image).
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from .protocol import unflatten, xml_document, xml_scalar

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"

# Wire list name -> botocore member name (only applied when the value is a list).
_LIST_MEMBERS = {
    "InstanceId": "InstanceIds",
    "Filter": "Filters",
    "Value": "Values",
    "Tag": "Tags",
    "ResourceId": "Resources",
    "VolumeId": "VolumeIds",
    "SnapshotId": "SnapshotIds",
    "ImageId": "ImageIds",
    "ExecutableBy": "ExecutableUsers",
    "TagSpecification": "TagSpecifications",
    "BlockDeviceMapping": "BlockDeviceMappings",
    "GroupId": "Groups",
}
# `Owner.N` is OwnerIds for snapshots but Owners for images.
_OP_LIST_MEMBERS = {"DescribeSnapshots": {"Owner": "OwnerIds"}, "DescribeImages": {"Owner": "Owners"}}
_INTEGERS = {"MaxResults", "Size", "VolumeSize", "Iops", "DurationSeconds"}
_BOOLEANS = {"DryRun", "NoReboot", "Force", "Encrypted", "Hibernate", "DeleteOnTermination"}


def parse_request(operation: str, flat: dict[str, str]) -> dict:
    """Flat Query parameters (without Action/Version) as botocore-style input members."""
    renames = {**_LIST_MEMBERS, **_OP_LIST_MEMBERS.get(operation, {})}
    return _members(unflatten(flat), renames)


def _members(node, renames: dict):
    if isinstance(node, list):
        return [_members(item, renames) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        value = _members(value, renames)
        if isinstance(value, list) and key in renames:
            key = renames[key]
        elif isinstance(value, str) and key in _INTEGERS and value.lstrip("-").isdigit():
            value = int(value)
        elif isinstance(value, str) and key in _BOOLEANS and value in ("true", "false"):
            value = value == "true"
        out[key] = value
    return out


# Responses -------------------------------------------------------------------------------------

_LIST_ELEMENTS = {
    "Reservations": "reservationSet",
    "Instances": "instancesSet",
    "Groups": "groupSet",
    "SecurityGroups": "groupSet",
    "BlockDeviceMappings": "blockDeviceMapping",
    "Tags": "tagSet",
    "StartingInstances": "instancesSet",
    "StoppingInstances": "instancesSet",
    "TerminatingInstances": "instancesSet",
    "Volumes": "volumeSet",
    "Attachments": "attachmentSet",
    "Snapshots": "snapshotSet",
    "Images": "imagesSet",
    "ProductCodes": "productCodes",
}
_FIELD_ELEMENTS = {
    "PublicDnsName": "dnsName",
    "StateTransitionReason": "reason",
    "PublicIpAddress": "ipAddress",
    "Return": "return",
}
# (list the record sits in, member) -> element; None is the top level of a response.
_CONTEXT_ELEMENTS = {
    ("Instances", "State"): "instanceState",
    ("Images", "State"): "imageState",
    ("Images", "OwnerId"): "imageOwnerId",
    ("Images", "Public"): "isPublic",
    ("Volumes", "State"): "status",
    ("Attachments", "State"): "status",
    ("Snapshots", "State"): "status",
}
# Responses whose top level is itself one record (CreateSnapshot returns a Snapshot).
_ROOT_CONTEXT = {"CreateSnapshot": "Snapshots", "AttachVolume": "Attachments"}


def _element(key: str, context: str | None) -> str:
    if (context, key) in _CONTEXT_ELEMENTS:
        return _CONTEXT_ELEMENTS[(context, key)]
    if key in _LIST_ELEMENTS:
        return _LIST_ELEMENTS[key]
    return _FIELD_ELEMENTS.get(key, key[:1].lower() + key[1:])


def _xml(value, context: str | None) -> str:
    parts = []
    for key, item in value.items():
        if item is None:
            continue
        name = _element(key, context)
        if isinstance(item, list):
            inner = "".join(
                f"<item>{_xml(v, key) if isinstance(v, dict) else xml_scalar(v)}</item>" for v in item
            )
        elif isinstance(item, dict):
            inner = _xml(item, context)
        else:
            inner = xml_scalar(item)
        parts.append(f"<{name}>{inner}</{name}>")
    return "".join(parts)


def render(operation: str, result: dict, request_id: str) -> bytes:
    # Operations with no output members answer <return>true</return>, as EC2 does.
    body = _xml(result or {"Return": True}, _ROOT_CONTEXT.get(operation))
    return xml_document(f"{operation}Response", NAMESPACE, f"<requestId>{request_id}</requestId>{body}")


def render_error(code: str, message: str, request_id: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{request_id}</RequestID>"
        f"</Response>"
    ).encode()
