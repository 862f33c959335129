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
# The usual name of the parameter a document's assumeRole references. Only a default: what is
# server-owned is whatever parameter `assumeRole` references (any name, any case): see identity_of.
AUTOMATION_ROLE_PARAMETER = "AutomationAssumeRole"
# SSM documents are at most 64 KB; anything much larger is not a runbook we should parse.
MAX_CONTENT_CHARS = 256 * 1024
MAX_PATTERN_CHARS = 2048
MAX_PARAMETERS = 200  # StartAutomationExecution accepts 1-200 parameters
_PARAMETER_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,50}$")  # the API's key length is 1-50
# Role-like parameters (reliability-security.md §2.4): whoever chooses the role chooses the
# privileges. Instance profiles are roles too (attaching one grants its role). Which *kind* of
# role a parameter is (role_kind_of) decides who chooses it.
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


class RoleKind:
    """Who chooses a role-like (or approval) parameter's value (docs/runbooks-and-forms.md)."""

    AUTOMATION = "automation"  # the role assumeRole names: the account's automation role
    HANDOFF = "handoff"  # a role the run hands to Lambda/CloudFormation: admin, per account and runbook parameter
    SUBJECT = "subject"  # a role the change acts on (to attach, for a cluster): the team's allowlist
    APPROVERS = "approvers"  # aws:approve Approvers: the principal Delegate signals as
    MIN_APPROVALS = "min_approvals"  # aws:approve MinRequiredApprovals: Delegate counts its own quorum

    CHOICES = (
        (AUTOMATION, "Automation role (what the run executes as)"),
        (HANDOFF, "Role handed to Lambda/CloudFormation (set by an admin per runbook)"),
        (SUBJECT, "Role the change acts on (requesters pick from the team's allowlist)"),
        (APPROVERS, "aws:approve Approvers (Delegate's signalling principal)"),
        (MIN_APPROVALS, "aws:approve MinRequiredApprovals (Delegate counts approvals)"),
    )
    SERVER_OWNED = frozenset({AUTOMATION, HANDOFF, APPROVERS, MIN_APPROVALS})


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]{1,50})\s*\}\}")
# Step inputs that hand a role to another service, which then acts with it (not the subject of the change).
_HANDOFF_INPUTS = {
    ("aws:createStack", "RoleARN"),
    ("aws:updateStack", "RoleARN"),
    ("lambda", "Role"),  # lambda CreateFunction / UpdateFunctionConfiguration
    ("cloudformation", "RoleARN"),  # cloudformation CreateStack / UpdateStack
    ("cloudformation", "RoleArn"),
}
# Stack parameters whose name says the stack hands the role to a Lambda function it creates.
_HANDOFF_NAME = re.compile(r"(AssumeRole|^Lambda.*Role)", re.IGNORECASE)


def identity_of(document: dict) -> dict:
    """Whom AWS runs the document's steps as, read from its `assumeRole`.

    {"kind": "parameter", "parameter": NAME}: a `{{ NAME }}` reference (any name, any case);
    {"kind": "literal", "role": TEXT}: a fixed role (or an expression we do not resolve);
    {"kind": "absent"}: no assumeRole, so the run uses the caller's credentials (the dispatch session).
    """
    raw = document.get("assumeRole")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {"kind": "absent"}
    text = str(raw).strip()[:2048]
    whole = _PLACEHOLDER.fullmatch(text)
    if whole:
        return {"kind": "parameter", "parameter": whole.group(1)}
    return {"kind": "literal", "role": text}


def _references(value) -> set[str]:
    """Parameter names a step input refers to with {{ name }} (nested values included)."""
    if isinstance(value, str):
        return set(_PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return set().union(*(_references(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_references(v) for v in value)) if value else set()
    return set()


def _derived_kinds(document: dict) -> dict[str, str]:
    """Kinds the document itself tells, by where a parameter is referenced."""
    kinds: dict[str, str] = {}
    identity = identity_of(document)
    if identity["kind"] == "parameter":
        kinds[identity["parameter"]] = RoleKind.AUTOMATION
    for step in document.get("mainSteps") or []:
        if not isinstance(step, dict) or not isinstance(step.get("inputs"), dict):
            continue
        action, inputs = str(step.get("action", "")), step["inputs"]
        if action == "aws:approve":
            for name in _references(inputs.get("Approvers")):
                kinds.setdefault(name, RoleKind.APPROVERS)
            for name in _references(inputs.get("MinRequiredApprovals")):
                kinds.setdefault(name, RoleKind.MIN_APPROVALS)
            continue
        service = str(inputs.get("Service", "")).lower()
        for key, value in inputs.items():
            if (action, key) in _HANDOFF_INPUTS or (service, key) in _HANDOFF_INPUTS:
                for name in _references(value):
                    kinds.setdefault(name, RoleKind.HANDOFF)
        for entry in inputs.get("Parameters") or [] if action in ("aws:createStack", "aws:updateStack") else []:
            if isinstance(entry, dict) and _HANDOFF_NAME.search(str(entry.get("ParameterKey", ""))):
                for name in _references(entry.get("ParameterValue")):
                    kinds.setdefault(name, RoleKind.HANDOFF)
    return kinds


def is_role_like(name: str, spec: dict) -> bool:
    """A parameter that names an IAM role or instance profile, by its type or its name."""
    return element_type(str(spec.get("type", ""))) in _ROLE_TYPES or _ROLE_NAME.search(name) is not None


def role_kind_of(name: str, spec: dict, derived: dict[str, str]) -> str:
    """The kind of a parameter ("" for an ordinary one): where the document references it first,
    then its name (…AssumeRole and Lambda…Role are handed off), else a role-like name is the
    subject of the change. Admins may override it per runbook (RoleParameter)."""
    if name in derived:
        return derived[name]
    if not is_role_like(name, spec):
        return ""
    return RoleKind.HANDOFF if _HANDOFF_NAME.search(name) else RoleKind.SUBJECT


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


def _clean_spec(name: str, spec: dict, derived: dict[str, str] | None = None) -> dict:
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
    entry["role_kind"] = role_kind_of(name, spec, derived or {})
    entry["server_owned"] = entry["role_kind"] in RoleKind.SERVER_OWNED
    return entry


def parse_parameters(document: dict) -> dict[str, dict]:
    """The parameter schema of one runbook version, in the shape we store.

    Each entry keeps the SSM keys (type, description, default, allowedValues as strings,
    allowedPattern, displayType, min/max items and chars) plus `required` (no default),
    `role_kind` (RoleKind, "" for ordinary parameters), `server_owned` (the server fills it in,
    a submitted value is refused) and `position` (the order in the document).
    """
    raw = document.get("parameters") or {}
    if not isinstance(raw, dict):
        raise UnsupportedRunbook("`parameters` must be an object")
    if len(raw) > MAX_PARAMETERS:
        raise UnsupportedRunbook(f"At most {MAX_PARAMETERS} parameters")
    schema: dict[str, dict] = {}
    derived = _derived_kinds(document)
    for position, (name, spec) in enumerate(raw.items()):
        if not isinstance(name, str) or not _PARAMETER_NAME.match(name):
            raise UnsupportedRunbook(
                f"{str(name)[:60]!r}: parameter names are 1-50 letters, digits, '_', '.' or '-'"
            )
        schema[name] = _clean_spec(name, spec, derived)
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


_API_ACTIONS = ("aws:executeAwsApi", "aws:waitForAwsResourceProperty", "aws:assertAwsResourceProperty")
# Inputs that carry code or commands: shown collapsed, but in full, to the approver.
_CODE_INPUTS = ("Script", "InputPayload", "Payload", "TemplateBody", "commands", "Parameters")
MAX_SHOWN_CODE = 20000


def step_summary(document: dict) -> list[dict]:
    """Each step's name and action, and for AWS API steps the service and API it calls."""
    steps = []
    for step in document.get("mainSteps") or []:
        if not isinstance(step, dict):
            continue
        entry = {"name": str(step.get("name", ""))[:128], "action": str(step.get("action", ""))[:64]}
        inputs = step.get("inputs") if isinstance(step.get("inputs"), dict) else {}
        if entry["action"] in _API_ACTIONS:
            entry["service"] = str(inputs.get("Service", ""))[:64]
            entry["api"] = str(inputs.get("Api", ""))[:128]
        steps.append(entry)
    return steps


def step_details(content: str, document_format: str) -> list[dict]:
    """What the approver reads: every step with its action, service and API, and its inputs as
    text (scripts and inline code in full, shown collapsed). Parsed from the exact content."""
    try:
        document = load_document(content, document_format)
    except UnsupportedRunbook as error:
        return [{"name": "(unreadable)", "action": "", "inputs": str(error)}]
    details = []
    for entry, step in zip(step_summary(document), [s for s in document.get("mainSteps") or [] if isinstance(s, dict)]):
        inputs = step.get("inputs") if isinstance(step.get("inputs"), dict) else {}
        code = {key: inputs[key] for key in _CODE_INPUTS if key in inputs and entry["action"] != "aws:createStack"}
        if entry["action"] == "aws:createStack" and "TemplateBody" in inputs:
            code = {"TemplateBody": inputs["TemplateBody"]}
        rest = {key: value for key, value in inputs.items() if key not in code and key not in ("Service", "Api")}
        details.append({
            **entry,
            "inputs": json.dumps(rest, indent=1, sort_keys=True, default=str)[:MAX_SHOWN_CODE],
            "code": "\n\n".join(
                f"# {key}\n{value if isinstance(value, str) else json.dumps(value, indent=1, default=str)}"
                for key, value in code.items())[:MAX_SHOWN_CODE],
        })
    return details


def content_diff(old: str, new: str) -> str:
    """A unified diff of two contents (normalised to sorted, indented JSON so formatting is not noise)."""
    import difflib

    def lines(text: str) -> list[str]:
        for fmt in ("JSON", "YAML"):
            try:
                return json.dumps(load_document(text, fmt), indent=1, sort_keys=True, default=str).splitlines()
            except UnsupportedRunbook:
                continue
        return text.splitlines()

    return "\n".join(difflib.unified_diff(lines(old), lines(new), "last run by this team", "this request",
                                           lineterm="", n=2))[:MAX_SHOWN_CODE]


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
    owner: str,
    version: str,
    document_hash: str,
    parameters: dict,
    targets: list,
    target_parameter_name: str,
    max_concurrency: str,
    max_errors: str,
    alarm: str,
    account: str,
    region: str,
    run_at: str,
    locations: dict | None = None,
    execution_preview: dict | None = None,
    ticket_reference: str = "",
) -> str:
    """SHA-256 over what an approver approves (DESIGN.md); the worker recomputes it before dispatch.

    `execution_preview`: the figures of AWS's execution preview at submit (steps by impact,
    accounts, regions, targets per type), when AWS gave one; left out otherwise, so requests
    without a preview keep the fingerprint they were approved under.

    `document_hash` is the content hash SSM reports for that exact version (DescribeDocument
    Hash, SHA-256): a document deleted and re-created under the same name and version number
    has another hash, so an approval of the old content never starts the new one.
    """
    return hashlib.sha256(
        canonical_json(
            {
                "document": document,
                "owner": owner,
                "version": version,
                "document_hash": document_hash,
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
                "run_at": run_at,
                # Multi-account runs only, so single-account fingerprints stay what they were.
                **({"locations": locations} if locations else {}),
                **({"execution_preview": execution_preview} if execution_preview else {}),
                # Only when there is one: requests stored before tickets existed keep their fingerprint.
                **({"ticket_reference": ticket_reference} if ticket_reference else {}),
            }
        )
    ).hexdigest()


def fingerprint_for(request: AutomationRequest) -> str:
    return fingerprint_of(
        document=request.runbook.name,
        owner=request.runbook.owner,
        version=request.runbook_version.version,
        document_hash=request.document_hash,
        parameters=request.parameters,
        targets=request.targets,
        target_parameter_name=request.target_parameter_name,
        max_concurrency=request.max_concurrency,
        max_errors=request.max_errors,
        alarm=request.alarm_name,
        account=request.account.account_id,
        region=request.region,
        run_at=request.run_at.isoformat() if request.run_at else "",
        locations={
            "targets": list(request.location_targets), "regions": list(request.location_regions),
            "accounts": list(request.location_accounts), "max_concurrency": request.location_max_concurrency,
            "max_errors": request.location_max_errors,
        } if request.location_targets else None,
        execution_preview=_preview_figures(request),
        ticket_reference=request.ticket_reference,
    )


def _preview_figures(request: AutomationRequest) -> dict | None:
    preview = request.execution_preview or {}
    return preview.get("figures") if preview.get("status") == "Success" else None
