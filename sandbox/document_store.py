"""Where SSM documents live: content parsing, seeding, lookup by name or ARN, API views.

A region's documents are keyed by name, except documents shared from another account, which
are keyed (and listed) by their full ARN: AWS addresses those only by ARN (aws-api.md §15
item 5). Each record keeps every version's original text and format; GetDocument converts.
The document APIs themselves are in ssm_documents.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from pathlib import Path

import yaml

from .errors import AwsError

DOCUMENTS_DIR = Path(__file__).parent / "documents"
AMAZON = "Amazon"
ARN = re.compile(r"^arn:aws[a-z-]*:ssm:([a-z0-9-]*):(\d{12})?:document/([a-zA-Z0-9_\-.]{3,128})$")
PARAMETER_TYPES = {"String", "StringList", "Integer", "Boolean", "MapList", "StringMap"}
PLATFORMS = ["Windows", "Linux", "MacOS"]  # what AWS reports for Automation runbooks


# Content -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _parse_cached(text: str, fmt: str) -> str:
    data = json.loads(text) if fmt == "JSON" else yaml.safe_load(text)
    return json.dumps(data, default=str)  # cached as text so callers can't mutate the cache


def parse_content(text: str, fmt: str = "JSON") -> dict:
    """A document's content as a dict; InvalidDocumentContent if it isn't a JSON/YAML object."""
    try:
        data = json.loads(_parse_cached(text, fmt.upper()))
    except (ValueError, yaml.YAMLError) as exc:
        raise AwsError(
            "InvalidDocumentContent", f"The content for the document is not valid: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise AwsError("InvalidDocumentContent", "The content for the document is not valid: not an object.")
    return data


def content_of(version: dict) -> dict:
    """A JSON/YAML document's content; TEXT documents (ChangeCalendar iCalendar) have no structure: {}."""
    if version["DocumentFormat"] == "TEXT":
        return {}
    return parse_content(version["Content"], version["DocumentFormat"])


def render_content(version: dict, fmt: str) -> str:
    if fmt == version["DocumentFormat"] or fmt == "TEXT":
        return version["Content"]
    data = content_of(version)
    if fmt == "JSON":
        return json.dumps(data, indent=2)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def check_automation(content: dict) -> None:
    """The parts of schema 0.3 the engine relies on; AWS checks these at CreateDocument too."""
    if str(content.get("schemaVersion")) != "0.3":
        raise AwsError("InvalidDocumentSchemaVersion", "Automation documents must use schemaVersion 0.3.")
    steps = content.get("mainSteps")
    if not isinstance(steps, list) or not steps:
        raise AwsError("InvalidDocumentContent", "mainSteps must be a non-empty list.")
    names = [step.get("name") if isinstance(step, dict) else None for step in steps]
    if any(not name or not isinstance(name, str) for name in names) or len(set(names)) != len(names):
        raise AwsError("InvalidDocumentContent", "Every step needs a unique name.")
    for step in steps:
        if not str(step.get("action", "")).startswith("aws:"):
            raise AwsError("InvalidDocumentContent", f"Step {step['name']} has no valid action.")
        targets = [step.get("nextStep")] + [
            step.get(k)[5:] for k in ("onFailure", "onCancel") if str(step.get(k, "")).startswith("step:")
        ]
        for target in filter(None, targets):
            if target not in names:
                raise AwsError(
                    "InvalidDocumentContent", f"Step {step['name']} refers to unknown step {target}."
                )
    for name, spec in (content.get("parameters") or {}).items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if not kind or not (kind in PARAMETER_TYPES or kind.startswith(("AWS::", "List<AWS::"))):
            raise AwsError("InvalidDocumentContent", f"Parameter {name} has no valid type.")


# Seeding ---------------------------------------------------------------------------------------


def version_record(text: str, fmt: str, number: int, created: float, version_name: str | None = None) -> dict:
    return {
        "DocumentVersion": str(number),
        "Content": text,
        "DocumentFormat": fmt,
        "CreatedDate": created,
        "VersionName": version_name,
        "Status": "Active",
    }


def document_record(
    name: str,
    owner: str,
    versions: list[dict],
    default: str = "1",
    tags: dict | list | None = None,
    document_type: str = "Automation",
    display_name: str | None = None,
    target_type: str | None = None,
):
    if isinstance(tags, dict):
        tags = [{"Key": k, "Value": str(v)} for k, v in tags.items()]
    return {
        "Name": name,
        "Owner": owner,
        "DocumentType": document_type,
        "DisplayName": display_name,
        "TargetType": target_type,
        "Tags": tags or [],
        "DefaultVersion": default,
        "CreatedDate": versions[0]["CreatedDate"],
        "Versions": versions,
    }


def _fmt(path: Path) -> str:
    return {".json": "JSON", ".ics": "TEXT"}.get(path.suffix, "YAML")


@functools.lru_cache(maxsize=1)
def _seed_files() -> tuple:
    # amazon/ holds the fixture runbooks as AWS published them; amazon-children/ the AWS-owned
    # child documents they call (aws:executeAutomation), written for the sandbox after AWS's.
    amazon = tuple(
        (p.stem.replace("aws-", "AWS-", 1), p.read_text(), _fmt(p))
        for folder in ("amazon", "amazon-children")
        for p in sorted((DOCUMENTS_DIR / folder).glob("aws-*.*"))
    )
    catalog = yaml.safe_load((DOCUMENTS_DIR / "catalog.yaml").read_text())
    texts = {
        f: (DOCUMENTS_DIR / f).read_text()
        for kind in ("own", "shared")
        for entry in catalog.get(kind, [])
        for f in entry["files"]
    }
    return amazon, json.dumps(catalog), json.dumps(texts)


def seed(region) -> None:
    """AWS-owned runbooks, our own documents and one shared with us, into a new region."""
    amazon, catalog, texts = _seed_files()
    catalog, texts = json.loads(catalog), json.loads(texts)
    created = time.time() - 30 * 86400
    for name, text, fmt in amazon:
        region.documents[name] = document_record(name, AMAZON, [version_record(text, fmt, 1, created)])
    for kind in ("own", "shared"):
        for entry in catalog.get(kind, []):
            versions = [
                version_record(texts[f], _fmt(Path(f)), n, created + n * 3600)
                for n, f in enumerate(entry["files"], start=1)
            ]
            owner = region.account_id if kind == "own" else entry["owner"]
            key = entry["name"] if kind == "own" else arn(region.name, owner, entry["name"])
            region.documents[key] = document_record(
                key, owner, versions, str(entry.get("default_version", "1")), entry.get("tags"),
                document_type=entry.get("type", "Automation"),
            )


def arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:ssm:{region}:{account}:document/{name}"


# Lookup ------------------------------------------------------------------------------------------


def resolve(region, name: str | None, error: str = "InvalidDocument") -> dict:
    """The document a name or ARN refers to, as the caller's account sees it."""
    missing = AwsError(
        error,
        "The specified document does not exist."
        if error == "InvalidDocument"
        else f"Document with name {name} does not exist.",
    )
    if not name:
        raise missing
    match = ARN.match(name)
    if match:
        arn_region, account, plain = match.groups()
        if account in (None, "", region.account_id):
            name = plain  # our own or an AWS-owned document, written as an ARN
        elif arn_region != region.name:
            raise missing
        else:
            name = arn(region.name, account, plain)
    record = region.documents.get(name)
    if record is None:
        raise missing
    return record


def version_of(
    record: dict, version: str | None, error: str = "InvalidDocumentVersion", version_name: str | None = None
) -> dict:
    versions = record["Versions"]
    if version_name:
        found = [v for v in versions if v.get("VersionName") == version_name]
    elif version in (None, "", "$DEFAULT"):
        found = [v for v in versions if v["DocumentVersion"] == record["DefaultVersion"]]
    elif version == "$LATEST":
        found = versions[-1:]
    else:
        found = [v for v in versions if v["DocumentVersion"] == str(version)]
    if not found:
        raise AwsError(
            error,
            "The document version is not valid or does not exist."
            if error == "InvalidDocumentVersion"
            else f"Version {version} of document {record['Name']} does not exist.",
        )
    return found[0]


def default_value_text(value) -> str:
    """DescribeDocument's DefaultValue is a string; lists and maps come as JSON (aws-api.md §8.2)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _optional(record: dict, version: dict) -> dict:
    """Members AWS leaves out when they have no value."""
    values = {"VersionName": version.get("VersionName"), "DisplayName": record.get("DisplayName"),
              "TargetType": record.get("TargetType")}  # fmt: skip
    return {key: value for key, value in values.items() if value}


def description(record: dict, version: dict) -> dict:
    content = content_of(version)
    parameters = []
    for name, spec in (content.get("parameters") or {}).items():
        entry = {"Name": name, "Type": spec.get("type", "String"), "Description": spec.get("description", "")}
        if "default" in spec:
            entry["DefaultValue"] = default_value_text(spec["default"])
        parameters.append(entry)
    out = {
        "Hash": hashlib.sha256(version["Content"].encode()).hexdigest(),
        "HashType": "Sha256",
        "Name": record["Name"],
        "Owner": record["Owner"],
        "CreatedDate": version["CreatedDate"],
        "Status": version["Status"],
        "DocumentVersion": version["DocumentVersion"],
        "Description": content.get("description", ""),
        "Parameters": parameters,
        "PlatformTypes": PLATFORMS,
        "DocumentType": record["DocumentType"],
        "SchemaVersion": str(content.get("schemaVersion", "")),
        "LatestVersion": record["Versions"][-1]["DocumentVersion"],
        "DefaultVersion": record["DefaultVersion"],
        "DocumentFormat": version["DocumentFormat"],
        "Tags": record["Tags"],
    }
    return out | _optional(record, version)


def identifier(record: dict) -> dict:
    version = version_of(record, None)
    out = {
        "Name": record["Name"],
        "CreatedDate": record["CreatedDate"],
        "Owner": record["Owner"],
        "PlatformTypes": PLATFORMS,
        "DocumentVersion": record["DefaultVersion"],
        "DocumentType": record["DocumentType"],
        "SchemaVersion": str(content_of(version).get("schemaVersion", "")),
        "DocumentFormat": version["DocumentFormat"],
        "Tags": record["Tags"],
    }
    return out | _optional(record, version)
