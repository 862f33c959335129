"""Runbook content (SSM schema 0.3): parameter schema parsing and the request fingerprint.

Runbooks are data synced from SSM, never declared in code. The schema parsed here is stored
per RunbookVersion; forms and validation read the stored schema.
"""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import re2
import yaml

from automations.canonical import canonical_json

if TYPE_CHECKING:
    from automations.models import AutomationRequest

PLAIN_TYPES = frozenset({"String", "StringList", "Integer", "Boolean", "MapList", "StringMap"})
KEPT_KEYS = ("type", "description", "default", "allowedValues", "allowedPattern", "displayType",
             "minItems", "maxItems", "minChars", "maxChars")
# Always filled in by the server with the account's automation role; never user input.
AUTOMATION_ROLE_PARAMETER = "AutomationAssumeRole"


class UnsupportedRunbook(ValueError):
    """Content that is not a schema 0.3 Automation runbook we can offer."""


def load_document(content: str, document_format: str) -> dict:
    try:
        document = json.loads(content) if document_format.upper() == "JSON" else yaml.safe_load(content)
    except (ValueError, yaml.YAMLError) as exc:
        raise UnsupportedRunbook(f"Content is not valid {document_format}: {exc}") from exc
    if not isinstance(document, dict):
        raise UnsupportedRunbook("A runbook is a JSON or YAML object")
    if str(document.get("schemaVersion")) != "0.3":
        raise UnsupportedRunbook("Automation runbooks use schemaVersion 0.3")
    return document


def is_role_parameter(name: str, spec: dict) -> bool:
    """Role parameters are chosen by admins per account, never by requesters (DESIGN.md)."""
    return (
        name == AUTOMATION_ROLE_PARAMETER
        or spec.get("type") == "AWS::IAM::Role::Arn"
        or name.endswith("AssumeRole")
        or name.endswith("RoleArn")
    )


def parse_parameters(document: dict) -> dict[str, dict]:
    """The parameter schema of one runbook version, in the shape we store."""
    schema: dict[str, dict] = {}
    raw = document.get("parameters") or {}
    if not isinstance(raw, dict):
        raise UnsupportedRunbook("`parameters` must be an object")
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise UnsupportedRunbook(f"{name}: a parameter definition must be an object")
        kind = str(spec.get("type", ""))
        if kind not in PLAIN_TYPES and not _is_aws_type(kind):
            raise UnsupportedRunbook(f"{name}: unsupported parameter type {kind!r}")
        entry = {key: spec[key] for key in KEPT_KEYS if key in spec}
        entry["type"] = kind
        entry["required"] = "default" not in spec
        entry["server_owned"] = is_role_parameter(name, spec)
        schema[name] = entry
    return schema


def _is_aws_type(kind: str) -> bool:
    inner = kind[5:-1] if kind.startswith("List<") and kind.endswith(">") else kind
    return inner.startswith("AWS::")


def pattern_problems(schema: dict[str, dict]) -> list[str]:
    """allowedPatterns RE2 cannot compile: such a version is not offered (we never backtrack on user input)."""
    problems = []
    for name, spec in schema.items():
        pattern = spec.get("allowedPattern")
        if pattern is None:
            continue
        try:
            re2.compile(pattern)
        except Exception as exc:  # re2 raises its own error type
            problems.append(f"{name}: allowedPattern cannot be evaluated safely ({exc})")
    return problems


def step_summary(document: dict) -> list[dict]:
    return [
        {"name": str(step.get("name", "")), "action": str(step.get("action", ""))}
        for step in document.get("mainSteps") or []
        if isinstance(step, dict)
    ]


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def fingerprint_of(*, document: str, version: str, parameters: dict, targets: list, target_parameter_name: str,
                   max_concurrency: str, max_errors: str, alarm: str, account: str, region: str) -> str:
    """SHA-256 over what an approver approves (DESIGN.md); the worker recomputes it before dispatch."""
    return hashlib.sha256(canonical_json({
        "document": document, "version": version, "parameters": parameters,
        "targets": targets,
        "rate_control": {"target_parameter_name": target_parameter_name, "max_concurrency": max_concurrency,
                         "max_errors": max_errors},
        "alarm": alarm, "account": account, "region": region,
    })).hexdigest()


def fingerprint_for(request: AutomationRequest) -> str:
    return fingerprint_of(
        document=request.runbook.name, version=request.runbook_version.version, parameters=request.parameters,
        targets=request.targets, target_parameter_name=request.target_parameter_name,
        max_concurrency=request.max_concurrency, max_errors=request.max_errors, alarm=request.alarm_name,
        account=request.account.account_id, region=request.region,
    )
