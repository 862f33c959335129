"""Runbook content (SSM schema 0.3): parameter schema parsing and the request fingerprint.

Runbooks are data synced from SSM, never declared in code. The schema parsed here is stored
per RunbookVersion; forms and validation read the stored schema. The content comes from SSM,
written by AWS, our admins or another account that shared it: parse it as untrusted input
(size bound, no YAML aliases, every constraint type-checked) so a strange document becomes a
"not offered" version instead of a crash in a web request later.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING

import yaml

from automations.canonical import canonical_json

if TYPE_CHECKING:
    from automations.models import AutomationRequest

PLAIN_TYPES = frozenset({"String", "StringList", "Integer", "Boolean", "MapList", "StringMap"})
KEPT_KEYS = (
    "type",
    "description",
    "default",
    "allowedValues",
    "allowedPattern",
    "displayType",
    "minItems",
    "maxItems",
    "minChars",
    "maxChars",
)
_COUNT_KEYS = ("minItems", "maxItems", "minChars", "maxChars")
# Always filled in by the server with the account's automation role; never user input.
AUTOMATION_ROLE_PARAMETER = "AutomationAssumeRole"
# SSM documents are at most 64 KB; anything much larger is not a runbook we should parse.
MAX_CONTENT_CHARS = 256 * 1024
MAX_PATTERN_CHARS = 2048
MAX_PARAMETERS = 200  # StartAutomationExecution accepts 1-200 parameters
_PARAMETER_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,50}$")  # the API's key length is 1-50
# Role-like parameters are server-owned (reliability-security.md §2.4): whoever chooses the role
# chooses the privileges. Instance profiles are roles too (attaching one grants its role).
_ROLE_NAME = re.compile(
    r"(AssumeRole|Role|RoleArn|RoleName|InstanceProfile|InstanceProfileArn|InstanceProfileName)$"
)
_ROLE_TYPES = frozenset(
    {
        "AWS::IAM::Role::Arn",
        "AWS::IAM::Role::Name",
        "AWS::IAM::InstanceProfile::Arn",
        "AWS::IAM::InstanceProfile::Name",
    }
)


class UnsupportedRunbook(ValueError):
    """Content that is not a schema 0.3 Automation runbook we can offer."""


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases: a few aliases can expand into billions of nodes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise UnsupportedRunbook("YAML aliases (*name) are not supported in runbooks")
        return super().compose_node(parent, index)


def load_document(content: str, document_format: str) -> dict:
    if not isinstance(content, str) or len(content) > MAX_CONTENT_CHARS:
        raise UnsupportedRunbook(f"Content is missing or larger than {MAX_CONTENT_CHARS // 1024} KiB")
    try:
        if str(document_format).upper() == "JSON":
            document = json.loads(content)
        else:
            document = yaml.load(content, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except (ValueError, RecursionError, yaml.YAMLError) as exc:
        raise UnsupportedRunbook(f"Content is not valid {document_format}: {str(exc)[:200]}") from exc
    if not isinstance(document, dict):
        raise UnsupportedRunbook("A runbook is a JSON or YAML object")
    if str(document.get("schemaVersion")) != "0.3":
        found = document.get("schemaVersion")
        raise UnsupportedRunbook(
            "Not an Automation runbook: Automation runbooks use schemaVersion 0.3, "
            + (f"this content says {str(found)[:20]!r}" if found is not None else "this content has no schemaVersion")
        )
    if not isinstance(document.get("mainSteps"), list) or not document["mainSteps"]:
        raise UnsupportedRunbook("Not an Automation runbook: it has no mainSteps")
    return document


def element_type(kind: str) -> str:
    """`List<AWS::EC2::Instance::Id>` -> `AWS::EC2::Instance::Id`; StringList -> String."""
    if kind.startswith("List<") and kind.endswith(">"):
        return kind[5:-1]
    return "String" if kind == "StringList" else kind


def is_list_type(kind: str) -> bool:
    """Types whose value is a list of separate strings on the wire (MapList is one JSON value)."""
    return kind == "StringList" or (kind.startswith("List<") and kind.endswith(">"))


def is_role_parameter(name: str, spec: dict) -> bool:
    """Role parameters are chosen by admins per account, never by requesters (docs/runbooks-and-forms.md)."""
    kind = str(spec.get("type", ""))
    return (
        name == AUTOMATION_ROLE_PARAMETER
        or element_type(kind) in _ROLE_TYPES
        or _ROLE_NAME.search(name) is not None
    )


def _is_aws_type(kind: str) -> bool:
    inner = element_type(kind)
    return inner.startswith("AWS::") and re.fullmatch(r"AWS(::[A-Za-z0-9]{1,64}){2,4}", inner) is not None


def _count(name: str, key: str, value) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, str))
        or not re.fullmatch(r"\d{1,6}", str(value))
    ):
        raise UnsupportedRunbook(f"{name}: {key} must be a whole number, not {str(value)[:40]!r}")
    return int(value)


def _scalar_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _clean_spec(name: str, spec: dict) -> dict:
    if not isinstance(spec, dict):
        raise UnsupportedRunbook(f"{name}: a parameter definition must be an object")
    kind = str(spec.get("type", ""))
    if kind not in PLAIN_TYPES and not _is_aws_type(kind):
        raise UnsupportedRunbook(f"{name}: unsupported parameter type {kind[:80]!r}")
    entry = {key: spec[key] for key in KEPT_KEYS if key in spec}
    entry["type"] = kind
    entry["description"] = str(spec.get("description", ""))[:4000]
    for key in _COUNT_KEYS:
        if key in spec:
            entry[key] = _count(name, key, spec[key])
    if "allowedValues" in spec:
        values = spec["allowedValues"]
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, (str, int, float, bool)) for v in values)
        ):
            raise UnsupportedRunbook(f"{name}: allowedValues must be a non-empty list of plain values")
        entry["allowedValues"] = [_scalar_text(v) for v in values]
    if "allowedPattern" in spec:
        pattern = spec["allowedPattern"]
        if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_CHARS:
            raise UnsupportedRunbook(
                f"{name}: allowedPattern must be text of at most {MAX_PATTERN_CHARS} characters"
            )
    if "displayType" in spec and spec["displayType"] not in ("textfield", "textarea"):
        entry.pop("displayType")
    entry["required"] = "default" not in spec
    entry["server_owned"] = is_role_parameter(name, spec)
    return entry


def parse_parameters(document: dict) -> dict[str, dict]:
    """The parameter schema of one runbook version, in the shape we store.

    Each entry keeps the SSM keys (type, description, default, allowedValues as strings,
    allowedPattern, displayType, min/max items and chars) plus `required` (no default),
    `server_owned` (a role: the server fills it in, a submitted value is refused) and
    `position` (the order in the document).
    """
    raw = document.get("parameters") or {}
    if not isinstance(raw, dict):
        raise UnsupportedRunbook("`parameters` must be an object")
    if len(raw) > MAX_PARAMETERS:
        raise UnsupportedRunbook(f"At most {MAX_PARAMETERS} parameters")
    schema: dict[str, dict] = {}
    for position, (name, spec) in enumerate(raw.items()):
        if not isinstance(name, str) or not _PARAMETER_NAME.match(name):
            raise UnsupportedRunbook(
                f"{str(name)[:60]!r}: parameter names are 1-50 letters, digits, '_', '.' or '-'"
            )
        schema[name] = _clean_spec(name, spec)
        # PostgreSQL's jsonb does not keep key order; the form shows parameters in the document's.
        schema[name]["position"] = position
    return schema


def ordered_parameters(
    schema: dict[str, dict], content: str = "", document_format: str = "JSON"
) -> list[tuple[str, dict]]:
    """The parameters in the document's order (versions stored before `position` read the content)."""
    if all("position" in spec for spec in schema.values()):
        return sorted(schema.items(), key=lambda item: item[1]["position"])
    try:
        rank = {
            name: i for i, name in enumerate(load_document(content, document_format).get("parameters") or {})
        }
    except UnsupportedRunbook:
        rank = {}
    return sorted(schema.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def pattern_problems(schema: dict[str, dict]) -> list[str]:
    """allowedPatterns no engine of ours can compile: such a version is not offered."""
    from automations.runbooks import validation  # validation does not import this module; keep it that way

    problems = []
    for name, spec in schema.items():
        pattern = spec.get("allowedPattern")
        if pattern is None:
            continue
        try:
            validation.compiled_pattern(pattern)
        except validation.PatternUnsupported as exc:
            problems.append(f"{name}: allowedPattern cannot be evaluated safely ({exc})")
    return problems


def step_summary(document: dict) -> list[dict]:
    return [
        {"name": str(step.get("name", ""))[:128], "action": str(step.get("action", ""))[:64]}
        for step in document.get("mainSteps") or []
        if isinstance(step, dict)
    ]


# What a step's action touches, for the catalog's category filter when a document has no
# Category tag. aws:executeAwsApi and friends name the service in their inputs.
_ACTION_SERVICES = {
    "aws:changeInstanceState": "EC2",
    "aws:createImage": "EC2",
    "aws:copyImage": "EC2",
    "aws:deleteImage": "EC2",
    "aws:runInstances": "EC2",
    "aws:createTags": "EC2",
    "aws:runCommand": "Systems Manager",
    "aws:createStack": "CloudFormation",
    "aws:deleteStack": "CloudFormation",
    "aws:invokeLambdaFunction": "Lambda",
    "aws:executeStateMachine": "Step Functions",
}
_SERVICE_NAMES = {
    "ec2": "EC2",
    "s3": "S3",
    "rds": "RDS",
    "ssm": "Systems Manager",
    "lambda": "Lambda",
    "iam": "IAM",
    "cloudformation": "CloudFormation",
    "dynamodb": "DynamoDB",
    "ecs": "ECS",
    "eks": "EKS",
    "kms": "KMS",
    "cloudwatch": "CloudWatch",
    "logs": "CloudWatch",
}


# Services named in a document's name, most specific first (RebootRdsInstance is RDS, not EC2).
_NAME_CATEGORIES = (
    (re.compile(r"S3|Bucket"), "S3"),
    (re.compile(r"Rds|RDS|DBInstance|Aurora"), "RDS"),
    (re.compile(r"Patch"), "Patching"),
    (re.compile(r"Lambda"), "Lambda"),
    (re.compile(r"EC2|Ec2|EBS|Ebs|Volume|Snapshot|Image|Ami|Instance"), "EC2"),
)
# Steps that are plumbing rather than what the runbook is about (a stack that runs a Lambda).
_PLUMBING = frozenset({"CloudFormation", "Lambda"})


def category_of(document: dict, tags: dict[str, str] | None = None, *, name: str = "") -> str:
    """The catalog category: a `Category` tag if the owner set one, else the AWS service the
    document's name names, else the one its steps touch most."""
    if tags and str(tags.get("Category", "")).strip():
        return str(tags["Category"]).strip()[:128]
    short = name.rsplit("/", 1)[-1]
    for pattern, category in _NAME_CATEGORIES:
        if pattern.search(short):
            return category
    counts: dict[str, int] = {}
    for step in document.get("mainSteps") or []:
        if not isinstance(step, dict):
            continue
        action = str(step.get("action", ""))
        inputs = step.get("inputs") if isinstance(step.get("inputs"), dict) else {}
        service = _ACTION_SERVICES.get(action)
        if action in ("aws:executeAwsApi", "aws:waitForAwsResourceProperty", "aws:assertAwsResourceProperty"):
            service = _SERVICE_NAMES.get(
                str(inputs.get("Service", "")).lower(), str(inputs.get("Service", ""))[:32]
            )
        if service:
            counts[service] = counts.get(service, 0) + 1
    if not counts:
        return "General"
    return max(sorted(counts), key=lambda service: (service not in _PLUMBING, counts[service]))


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def fingerprint_of(
    *,
    document: str,
    version: str,
    parameters: dict,
    targets: list,
    target_parameter_name: str,
    max_concurrency: str,
    max_errors: str,
    alarm: str,
    account: str,
    region: str,
) -> str:
    """SHA-256 over what an approver approves (docs/approvals-and-policy.md); the worker recomputes it before dispatch."""
    return hashlib.sha256(
        canonical_json(
            {
                "document": document,
                "version": version,
                "parameters": parameters,
                "targets": targets,
                "rate_control": {
                    "target_parameter_name": target_parameter_name,
                    "max_concurrency": max_concurrency,
                    "max_errors": max_errors,
                },
                "alarm": alarm,
                "account": account,
                "region": region,
            }
        )
    ).hexdigest()


def fingerprint_for(request: AutomationRequest) -> str:
    return fingerprint_of(
        document=request.runbook.name,
        version=request.runbook_version.version,
        parameters=request.parameters,
        targets=request.targets,
        target_parameter_name=request.target_parameter_name,
        max_concurrency=request.max_concurrency,
        max_errors=request.max_errors,
        alarm=request.alarm_name,
        account=request.account.account_id,
        region=request.region,
    )
