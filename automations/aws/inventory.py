"""Resources a request acts on, and whether they are inside the team's scope.

A team's scope is the resources tagged with its scope tag (Team=platform): EC2 instances,
volumes, snapshots, images, security groups, subnets and VPCs, and CloudFormation stacks. EC2
ids are recognised by their shape wherever they appear in parameters or targets, so a plain
String parameter named InstanceId is checked as carefully as an AWS::EC2::Instance::Id one.
Resources of services Delegate reads no tags of (S3 buckets, RDS DB instances, SQS queues) are
named by their ARN (queues by URL) and are in scope only when an admin put them on the team's
allowlist (the caller passes it in: this module reads AWS, never the database). Anything of no
kind listed here is out of scope: an unknown kind fails closed.
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterable

from automations.aws import gateway as aws

_ID_KINDS = (
    (re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?$"), "instance"),
    (re.compile(r"^vol-[0-9a-f]{8}([0-9a-f]{9})?$"), "volume"),
    (re.compile(r"^snap-[0-9a-f]{8}([0-9a-f]{9})?$"), "snapshot"),
    (re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$"), "image"),
    (re.compile(r"^sg-[0-9a-f]{8}([0-9a-f]{9})?$"), "security_group"),
    (re.compile(r"^subnet-[0-9a-f]{8}([0-9a-f]{9})?$"), "subnet"),
    (re.compile(r"^vpc-[0-9a-f]{8}([0-9a-f]{9})?$"), "vpc"),
)
_STACK = re.compile(r"^arn:aws[a-z-]*:cloudformation:([a-z0-9-]+):(\d{12}):stack/([A-Za-z][A-Za-z0-9-]{0,127})(/[0-9a-f-]{1,64})?$")


_LISTED_KINDS = (
    (re.compile(r"^arn:aws[a-z-]*:s3:::[a-z0-9.-]{3,63}$"), "bucket"),
    (re.compile(r"^arn:aws[a-z-]*:rds:[a-z0-9-]+:\d{12}:db:[A-Za-z0-9-]{1,63}$"), "db_instance"),
    (re.compile(r"^https://sqs\.[a-z0-9-]+\.amazonaws\.com/\d{12}/[A-Za-z0-9_.-]{1,85}$"), "queue"),
)
EC2_KINDS = frozenset({"instance", "volume", "snapshot", "image", "security_group", "subnet", "vpc"})
# The Describe filter that selects each EC2 kind by id.
_ID_FILTERS = {"instance": "instance-id", "volume": "volume-id", "snapshot": "snapshot-id", "image": "image-id",
               "security_group": "group-id", "subnet": "subnet-id", "vpc": "vpc-id"}


def kind_of(value: str) -> str | None:
    for pattern, kind in (*_ID_KINDS, *_LISTED_KINDS):
        if pattern.match(value):
            return kind
    if _STACK.match(value):
        return "stack"
    return None


def canonical(kind: str, value: str, *, region: str, account_id: str) -> str:
    """How a resource of `kind` is named in request.resources: EC2 ids as they are, others by ARN."""
    if kind == "bucket":
        return f"arn:aws:s3:::{value}"
    if kind == "db_instance":
        return f"arn:aws:rds:{region}:{account_id}:db:{value}"
    if kind == "stack" and not value.startswith("arn:"):
        return f"arn:aws:cloudformation:{region}:{account_id}:stack/{value}"  # by name: the stack of that name here
    return value  # EC2 ids; queue URLs are already unique; stack ARNs as given


def resource_ids(parameters: dict[str, list[str]], targets: Iterable[dict] = (), *, kinds: dict[str, str] | None = None,
                 region: str = "", account_id: str = "", target_parameter: str = "") -> list[str]:
    """Every resource in the wire parameters and ParameterValues targets, in order, once.

    EC2 ids are recognised by shape in any parameter; `kinds` ({parameter: kind}) names the
    parameters whose values are buckets, DB instances or queues (their shape alone says nothing).
    """
    seen: dict[str, None] = {}
    for found in resources_by_parameter(parameters, targets, kinds=kinds, region=region, account_id=account_id,
                                        target_parameter=target_parameter).values():
        seen.update(dict.fromkeys(found))
    return list(seen)


def resources_by_parameter(parameters: dict[str, list[str]], targets: Iterable[dict] = (), *,
                           kinds: dict[str, str] | None = None, region: str = "", account_id: str = "",
                           target_parameter: str = "") -> dict[str, list[str]]:
    """{parameter: its resources as request.resources names them}, so a refusal names the field."""
    kinds = kinds or {}
    found: dict[str, dict[str, None]] = {}

    def add(parameter: str, value: str) -> None:
        kind = kinds.get(parameter)
        if kind and kind not in EC2_KINDS:
            found.setdefault(parameter, {})[canonical(kind, value, region=region, account_id=account_id)] = None
        elif kind_of(value) in EC2_KINDS:
            found.setdefault(parameter, {})[value] = None

    for name, values in parameters.items():
        for value in values:
            add(name, value)
    for target in targets:
        for value in target.get("Values", []):
            add(target_parameter, value)
    return {name: list(values) for name, values in found.items()}


def out_of_scope(ids: list[str], *, tag: tuple[str, str], region: str, role_arn: str,
                 allowlist: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """The ids that do not exist in this account and region or lack the team's scope tag; for
    resources without tags Delegate reads (buckets, DB instances, queues), those not allowlisted."""
    by_kind: dict[str, list[str]] = {}
    for resource_id in ids:
        by_kind.setdefault(kind_of(resource_id) or "unknown", []).append(resource_id)
    outside = list(by_kind.pop("unknown", []))
    for listed in ("bucket", "db_instance", "queue"):
        outside.extend(resource_id for resource_id in by_kind.pop(listed, []) if resource_id not in allowlist)
    key, value = tag
    for stack in by_kind.pop("stack", []):
        if not _stack_in_scope(stack, key, value, region, role_arn):
            outside.append(stack)
    for kind, kind_ids in by_kind.items():
        if kind not in EC2_KINDS:  # a kind no branch above checks: never in scope
            outside.extend(kind_ids)
            continue
        found = _in_scope(kind, kind_ids, key, value, region, role_arn)
        outside.extend(resource_id for resource_id in kind_ids if resource_id not in found)
    return outside


def _in_scope(kind: str, ids: list[str], key: str, value: str, region: str, role_arn: str) -> set[str]:
    # Filter by id and tag together: an unknown id simply does not come back (no NotFound error).
    items = aws.describe_ec2_resources(
        kind, region=region, role_arn=role_arn,
        filters=[{"Name": _ID_FILTERS[kind], "Values": ids}, {"Name": f"tag:{key}", "Values": [value]}],
    )
    return {item["id"] for item in items if item["state"] not in ("terminated", "shutting-down")}


def _stack_in_scope(stack: str, key: str, value: str, region: str, role_arn: str) -> bool:
    """A stack of this account and region, not deleted, carrying the team's scope tag."""
    match = _STACK.match(stack)
    if match is None or match.group(1) != region or match.group(2) != aws.account_of(role_arn):
        return False  # another region or account is never the team's, whatever its tags say
    tags = aws.stack_tags(region=region, role_arn=role_arn, stack=match.group(3) if match.group(4) is None else stack)
    return tags is not None and tags.get(key) == value


def team_resources(kind: str, *, tag: tuple[str, str], region: str, role_arn: str) -> list[dict]:
    """The team's resources of one kind, for pickers."""
    key, value = tag
    return aws.describe_ec2_resources(kind, region=region, role_arn=role_arn,
                                      filters=[{"Name": f"tag:{key}", "Values": [value]}])


#
# Pickers: searchable choices for resource parameters, from the team's live inventory
#

PICKER_CACHE_SECONDS = 30  # a page load and its searches share one DescribeInstances
PICKER_LIMIT = 50


def _label(item: dict) -> str:
    name = item.get("tags", {}).get("Name", "")
    return f"{name} ({item['id']})" if name else item["id"]


def picker_choices(kind: str, *, tag: tuple[str, str], account_id: str, region: str, role_arn: str,
                   query: str = "", limit: int = PICKER_LIMIT) -> list[dict]:
    """The team's resources of one kind matching `query` (id or Name tag), for a picker.

    Read through the shared read-only session and cached briefly per team scope, so typing in
    the search box does not call EC2 per keystroke. Raises aws.AwsError when EC2 is unreachable.
    """
    from django.core.cache import cache  # inventory is imported by services; keep Django out of import time

    key = "delegate:picker:" + hashlib.sha256(
        "\x1f".join((account_id, region, kind, tag[0], tag[1])).encode()).hexdigest()
    items = cache.get(key)
    if items is None:
        found = team_resources(kind, tag=tag, region=region, role_arn=role_arn)
        gone = ("terminated", "shutting-down", "deleted", "deleting")
        items = sorted(
            ({"id": item["id"], "label": _label(item), "state": item.get("state", ""),
              "type": item.get("type", "")} for item in found if item.get("state") not in gone),
            key=lambda item: item["label"].lower(),
        )
        cache.set(key, items, PICKER_CACHE_SECONDS)
    needle = query.strip().lower()[:100]
    matching = [item for item in items if needle in item["label"].lower()] if needle else items
    return matching[:limit]


def describe_targets(ids: list[str], *, region: str, role_arn: str) -> dict[str, dict | None]:
    """{id: {"kind", "state", "type", "tags"}} for the approver's preview and tag rules; None = not found."""
    by_kind: dict[str, list[str]] = {}
    for resource_id in ids:
        by_kind.setdefault(kind_of(resource_id) or "unknown", []).append(resource_id)
    found: dict[str, dict | None] = {resource_id: None for resource_id in ids}
    by_kind = {kind: kind_ids for kind, kind_ids in by_kind.items() if kind in EC2_KINDS}  # others: no Describe
    for kind, kind_ids in by_kind.items():
        # A filter, not an id list: an unknown id is simply absent instead of failing the whole call.
        for item in aws.describe_ec2_resources(kind, region=region, role_arn=role_arn,
                                               filters=[{"Name": _ID_FILTERS[kind], "Values": kind_ids}]):
            if item["id"] in found:
                found[item["id"]] = {"kind": kind, **item}
    return found


def resource_names(ids: list[str], *, region: str, role_arn: str) -> dict[str, str]:
    """{id: Name tag} for the ids that have one (stored with a request at submit)."""
    return {resource_id: item["tags"]["Name"]
            for resource_id, item in describe_targets(ids, region=region, role_arn=role_arn).items()
            if item is not None and item.get("tags", {}).get("Name")}


def resource_tags(ids: list[str], *, region: str, role_arn: str) -> dict[str, dict | None]:
    """{id: tags} (None for an id that does not exist or is terminated)."""
    return {
        resource_id: (None if item is None or item.get("state") in ("terminated", "shutting-down") else item["tags"])
        for resource_id, item in describe_targets(ids, region=region, role_arn=role_arn).items()
    }
