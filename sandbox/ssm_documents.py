"""The SSM document APIs (aws-api.md §8): create, update, describe, fetch, list, delete.

Lookup, seeding and the response views live in document_store.py.
"""

from __future__ import annotations

import re
import time

from . import change_calendar
from . import document_store as store
from .errors import AwsError, validation
from .paging import page
from .state import Request

NAME = re.compile(r"^[a-zA-Z0-9_\-.]{3,128}$")
VERSION = re.compile(r"^([$]LATEST|[$]DEFAULT|[1-9][0-9]*)$")
VERSION_NAME = re.compile(r"^[a-zA-Z0-9_\-.]{1,128}$")
# CreateDocument refuses these prefixes in any case (AWSEC2, AWSSupport... all start with "aws").
RESERVED_PREFIXES = ("aws", "amazon", "amzn")
DOCUMENT_TYPES = {
    "Command", "Policy", "Automation", "Session", "Package", "ApplicationConfiguration",
    "ApplicationConfigurationSchema", "DeploymentStrategy", "ChangeCalendar", "Automation.ChangeTemplate",
    "ProblemAnalysis", "ProblemAnalysisTemplate", "CloudFormation", "ConformancePackTemplate", "QuickSetup",
    "ManualApprovalPolicy", "AutoApprovalPolicy",
}  # fmt: skip
MAX_CONTENT_BYTES = 64 * 1024


def _own(region, name: str) -> dict:
    record = store.resolve(region, name)
    if record["Owner"] != region.account_id:
        raise AwsError("InvalidDocumentOperation", "You can only change documents that your account owns.")
    return record


# Operations --------------------------------------------------------------------------------------


def _format(value: str | None) -> str:
    fmt = (value or "JSON").upper()
    if fmt not in ("JSON", "YAML", "TEXT"):
        raise validation(
            f"Value '{value}' at 'documentFormat' failed to satisfy constraint: "
            "Member must satisfy enum value set: [YAML, JSON, TEXT]"
        )
    return fmt


def _new_version_text(p: dict, document_type: str) -> tuple[str, str]:
    text = p.get("Content")
    if not text:
        raise validation("Value null at 'content' failed to satisfy constraint: Member must not be null")
    if len(text.encode()) > MAX_CONTENT_BYTES:
        raise AwsError("MaxDocumentSizeExceeded", "The size limit of a document is 64 KB.")
    fmt = _format(p.get("DocumentFormat"))
    if document_type == "ChangeCalendar":
        change_calendar.check_content(text)  # iCalendar text with its X-CALENDAR-TYPE
    elif fmt != "TEXT":
        content = store.parse_content(text, fmt)
        if document_type == "Automation":
            store.check_automation(content)
    version_name = p.get("VersionName")
    if version_name is not None and not VERSION_NAME.match(version_name):
        raise validation(
            f"Value '{version_name}' at 'versionName' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: ^[a-zA-Z0-9_\\-.]{1,128}$"
        )
    return text, fmt


def create_document(req: Request) -> dict:
    p, region = req.params, req.region
    name = p.get("Name") or ""
    if not NAME.match(name):
        raise validation(
            f"Value '{name}' at 'name' failed to satisfy constraint: Member must satisfy "
            "regular expression pattern: ^[a-zA-Z0-9_\\-.]{3,128}$"
        )
    if name.lower().startswith(RESERVED_PREFIXES):
        raise validation(
            "Document name cannot start with the reserved prefixes aws, amazon or amzn (in any case)."
        )
    document_type = p.get("DocumentType") or "Command"
    if document_type not in DOCUMENT_TYPES:
        raise AwsError("InvalidDocumentType", f"Document type {document_type} is not supported.")
    if name in region.documents:
        raise AwsError("DocumentAlreadyExists", "The specified document already exists.")
    text, fmt = _new_version_text(p, document_type)
    tags = [{"Key": t["Key"], "Value": t.get("Value", "")} for t in p.get("Tags") or []]
    record = store.document_record(
        name,
        region.account_id,
        [store.version_record(text, fmt, 1, time.time(), p.get("VersionName"))],
        tags=tags,
        document_type=document_type,
        display_name=p.get("DisplayName"),
        target_type=p.get("TargetType"),
    )
    region.documents[name] = record
    return {"DocumentDescription": store.description(record, record["Versions"][0])}


def update_document(req: Request) -> dict:
    p = req.params
    record = _own(req.region, p.get("Name"))
    latest = record["Versions"][-1]
    if p.get("DocumentVersion") not in (None, "$LATEST", latest["DocumentVersion"]):
        raise AwsError("InvalidDocumentVersion", "Only the latest version of a document can be updated.")
    text, fmt = _new_version_text(p, record["DocumentType"])
    if text == latest["Content"]:
        raise AwsError(
            "DuplicateDocumentContent",
            "The content of the association document matches another "
            "document. Change the content of the document and try again.",
        )
    if p.get("VersionName") and any(v.get("VersionName") == p["VersionName"] for v in record["Versions"]):
        raise AwsError(
            "DuplicateDocumentVersionName", "The version name has already been used in this document."
        )
    version = store.version_record(
        text, fmt, int(latest["DocumentVersion"]) + 1, time.time(), p.get("VersionName")
    )
    record["Versions"].append(version)
    for key in ("DisplayName", "TargetType"):
        if p.get(key):
            record[key] = p[key]
    return {"DocumentDescription": store.description(record, version)}


def update_document_default_version(req: Request) -> dict:
    p = req.params
    record = _own(req.region, p.get("Name"))
    if not re.fullmatch(r"[1-9][0-9]*", str(p.get("DocumentVersion", ""))):
        raise AwsError("InvalidDocumentVersion", "The default version must be a version number.")
    version = store.version_of(record, p["DocumentVersion"])
    record["DefaultVersion"] = version["DocumentVersion"]
    out = {"Name": record["Name"], "DefaultVersion": record["DefaultVersion"]}
    if version.get("VersionName"):
        out["DefaultVersionName"] = version["VersionName"]
    return {"Description": out}


def delete_document(req: Request) -> dict:
    p, region = req.params, req.region
    record = _own(region, p.get("Name"))
    if p.get("DocumentVersion") or p.get("VersionName"):
        version = store.version_of(record, p.get("DocumentVersion"), version_name=p.get("VersionName"))
        if version["DocumentVersion"] == record["DefaultVersion"]:
            raise AwsError("InvalidDocumentOperation", "You can't delete the default version of a document.")
        record["Versions"].remove(version)
    else:
        del region.documents[record["Name"]]
    return {}


def describe_document(req: Request) -> dict:
    p = req.params
    record = store.resolve(req.region, p.get("Name"))
    _check_version_syntax(p.get("DocumentVersion"))
    version = store.version_of(record, p.get("DocumentVersion"), version_name=p.get("VersionName"))
    return {"Document": store.description(record, version)}


def _check_version_syntax(version: str | None) -> None:
    if version is not None and not VERSION.match(version):
        raise validation(
            f"Value '{version}' at 'documentVersion' failed to satisfy constraint: Member must "
            "satisfy regular expression pattern: ([$]LATEST|[$]DEFAULT|^[1-9][0-9]*$)"
        )


def get_document(req: Request) -> dict:
    p = req.params
    record = store.resolve(req.region, p.get("Name"))
    _check_version_syntax(p.get("DocumentVersion"))
    version = store.version_of(record, p.get("DocumentVersion"), version_name=p.get("VersionName"))
    fmt = _format(p.get("DocumentFormat"))
    out = {
        "Name": record["Name"],
        "CreatedDate": version["CreatedDate"],
        "DocumentVersion": version["DocumentVersion"],
        "Status": version["Status"],
        "Content": store.render_content(version, fmt),
        "DocumentType": record["DocumentType"],
        "DocumentFormat": fmt,
    }
    if version.get("VersionName"):
        out["VersionName"] = version["VersionName"]
    if record.get("DisplayName"):
        out["DisplayName"] = record["DisplayName"]
    return out


def _owner_matches(record: dict, value: str, account: str) -> bool:
    owner = record["Owner"]
    if value == "Self":
        return owner == account
    if value == "Amazon":
        return owner == store.AMAZON
    if value == "Private":  # "shared with me" (aws-api.md §8.1)
        return owner not in (account, store.AMAZON)
    if value in ("Public", "ThirdParty"):
        return False  # the sandbox has no public or third-party documents
    if re.fullmatch(r"\d{12}", value):
        return owner == value
    raise validation(
        f"Invalid value '{value}' for the Owner filter: use Self, Amazon, Private, Public "
        "or ThirdParty (omit the filter to see everything)."
    )


def _filter_matches(record: dict, key: str, values: list[str], account: str) -> bool:
    if key == "Owner":
        if len(values) != 1:
            raise validation("The Owner filter takes exactly one value.")
        return _owner_matches(record, values[0], account)
    if key == "DocumentType":
        return record["DocumentType"] in values
    if key == "Name":
        return any(
            record["Name"].startswith(v) or record["Name"].split("/")[-1].startswith(v) for v in values
        )
    if key == "PlatformTypes":
        return any(v in store.PLATFORMS for v in values)
    if key == "TargetType":
        return (record.get("TargetType") or "/") in values
    if key == "SearchKeyword":
        return any(v.lower() in record["Name"].lower() for v in values)
    if key.startswith("tag:"):
        tags = {t["Key"]: t["Value"] for t in record["Tags"]}
        return key[4:] in tags and (not values or tags[key[4:]] in values)
    raise AwsError("InvalidFilterKey", f"The filter key {key} is not valid.")


def list_documents(req: Request) -> dict:
    p, region = req.params, req.region
    filters = [(f.get("Key", ""), list(f.get("Values") or [])) for f in p.get("Filters") or []]
    filters += [(f.get("key", ""), [f.get("value", "")]) for f in p.get("DocumentFilterList") or []]
    if len(p.get("Filters") or []) > 6:
        raise validation("Member must have length less than or equal to 6 (filters)")
    records = sorted(region.documents.values(), key=lambda r: r["Name"])
    records = [r for r in records if all(_filter_matches(r, k, v, region.account_id) for k, v in filters)]
    chunk, token = page(
        records, operation="ListDocuments", max_results=p.get("MaxResults"), next_token=p.get("NextToken")
    )
    result = {"DocumentIdentifiers": [store.identifier(r) for r in chunk]}
    if token:
        result["NextToken"] = token
    return result


def list_document_versions(req: Request) -> dict:
    p = req.params
    record = store.resolve(req.region, p.get("Name"))
    versions = [
        {
            "Name": record["Name"],
            "DocumentVersion": v["DocumentVersion"],
            "CreatedDate": v["CreatedDate"],
            "IsDefaultVersion": v["DocumentVersion"] == record["DefaultVersion"],
            "DocumentFormat": v["DocumentFormat"],
            "Status": v["Status"],
            **({"VersionName": v["VersionName"]} if v.get("VersionName") else {}),
        }
        for v in record["Versions"]
    ]
    chunk, token = page(
        versions,
        operation="ListDocumentVersions",
        max_results=p.get("MaxResults"),
        next_token=p.get("NextToken"),
    )
    return {"DocumentVersions": chunk, **({"NextToken": token} if token else {})}


OPERATIONS = {
    "CreateDocument": create_document,
    "UpdateDocument": update_document,
    "UpdateDocumentDefaultVersion": update_document_default_version,
    "DeleteDocument": delete_document,
    "DescribeDocument": describe_document,
    "GetDocument": get_document,
    "ListDocuments": list_documents,
    "ListDocumentVersions": list_document_versions,
}
