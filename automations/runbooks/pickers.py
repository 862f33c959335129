"""Which runbook parameters get a resource picker, and of what kind (pure: no AWS call here)."""
from __future__ import annotations

import re
from dataclasses import dataclass

# Resource types with a strict picker: the value must be one of the team's resources.
PICKER_TYPES = {
    "AWS::EC2::Instance::Id": "instance", "AWS::EC2::Volume::Id": "volume",
    "AWS::EC2::Snapshot::Id": "snapshot", "AWS::EC2::Image::Id": "image",
}
# Plain String/StringList parameters named like resource ids get suggestions beside free text:
# the name is a hint, not a contract (AWS-RebootRdsInstance's InstanceId is an RDS instance).
_NAME_HINTS = (
    (re.compile(r"InstanceIds?$"), "instance"), (re.compile(r"VolumeIds?$"), "volume"),
    (re.compile(r"SnapshotIds?$"), "snapshot"), (re.compile(r"(ImageIds?|AmiIds?)$"), "image"),
)
_OTHER_SERVICE = re.compile(r"\b(RDS|DB instance|database|Aurora|Lightsail|WorkSpaces?)\b", re.IGNORECASE)
KIND_LABELS = {"instance": "instances", "volume": "volumes", "snapshot": "snapshots", "image": "images"}


@dataclass(frozen=True)
class Picker:
    kind: str  # instance | volume | snapshot | image
    strict: bool  # an AWS:: type: only the team's resources; else suggestions beside free text
    multiple: bool


def picker_for(name: str, spec: dict) -> Picker | None:
    """Which picker, if any, a parameter gets."""
    kind = str(spec.get("type", ""))
    multiple = kind == "StringList" or kind.startswith("List<")
    inner = kind[5:-1] if kind.startswith("List<") and kind.endswith(">") else kind
    if inner in PICKER_TYPES:
        return Picker(PICKER_TYPES[inner], strict=True, multiple=multiple)
    if kind not in ("String", "StringList") or spec.get("allowedValues"):
        return None
    if _OTHER_SERVICE.search(str(spec.get("description", ""))):
        return None
    for pattern, hinted in _NAME_HINTS:
        if pattern.search(name):
            return Picker(hinted, strict=False, multiple=multiple)
    return None
