"""StartExecutionPreview and GetExecutionPreview: what a run would touch, from document and targets.

`ExecutionPreview.Automation` has AWS's members:
- `StepPreviews` {Mutating, NonMutating, Undetermined}: each step of the document's default (or
  given) version, classified by its action. `aws:executeAwsApi` is NonMutating for
  Describe*/List*/Get* APIs and Mutating otherwise; EC2, image, tag and stack actions are
  Mutating; assertions, waits and flow control are NonMutating; Lambda, scripts, Run Command,
  Step Functions and any action the sandbox does not know are Undetermined (AWS: another service
  decides). An `aws:executeAutomation` step counts as the steps of the child document it names,
  as SSM serves it now (Undetermined when the name is a `{{ }}` variable). All three keys are
  always present.
- `Regions`: the region called; `TotalAccounts`: 1. With `TargetLocations` (multi-account and
  multi-Region): the Regions of the locations and the number of distinct member accounts they
  cover, OUs resolved through the organization as StartAutomationExecution resolves them (and
  refused as it refuses them: an unknown OU, a runbook with `aws:approve`).
- `TargetPreviews` [{Count, TargetType}]: with rate control, the targets resolved now (tags
  against the live inventory), by resource type; without, the AWS resource ids among the
  parameter values, by type.

The preview is computed when it is started and is `Success` (or `Failed` with the reason, e.g.
parameters the document refuses) by the first GetExecutionPreview. The classification is the
sandbox's model; AWS does not publish its rules.
"""

from __future__ import annotations

import re
import time
import uuid

from . import document_store, parameters, rate_control, target_locations
from .errors import AwsError, validation
from .ssm_automation import DOCUMENT_NAME, DOCUMENT_VERSION
from .state import Request

PREVIEW_ID = re.compile(r"^[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{12}$")
MUTATING_ACTIONS = {
    "aws:changeInstanceState", "aws:createImage", "aws:copyImage", "aws:deleteImage", "aws:createTags",
    "aws:createStack", "aws:deleteStack", "aws:runInstances",
}  # fmt: skip
NON_MUTATING_ACTIONS = {
    "aws:assertAwsResourceProperty", "aws:waitForAwsResourceProperty", "aws:branch", "aws:sleep", "aws:pause",
    "aws:approve", "aws:updateVariable",
}  # fmt: skip
READ_ONLY_API = re.compile(r"^(Describe|List|Get)[A-Z]")
MAX_CHILD_DEPTH = 5
# Resource ids the sandbox's world hands out, by their AWS resource type.
ID_TYPES = (
    (re.compile(r"^i-[0-9a-f]{8,17}$"), "AWS::EC2::Instance"),
    (re.compile(r"^vol-[0-9a-f]{8,17}$"), "AWS::EC2::Volume"),
    (re.compile(r"^snap-[0-9a-f]{8,17}$"), "AWS::EC2::Snapshot"),
    (re.compile(r"^ami-[0-9a-f]{8,17}$"), "AWS::EC2::Image"),
    (re.compile(r"^arn:aws[a-z-]*:cloudformation:"), "AWS::CloudFormation::Stack"),
)


def _id_type(value: str) -> str | None:
    return next((kind for pattern, kind in ID_TYPES if pattern.match(value)), None)


def _step_impacts(region, content: dict, counts: dict, depth: int = 0) -> None:
    for step in content.get("mainSteps") or []:
        action = step.get("action", "")
        inputs = step.get("inputs") or {}
        if action == "aws:executeAwsApi":
            api = str(inputs.get("Api", ""))
            impact = "Undetermined" if "{{" in api else "NonMutating" if READ_ONLY_API.match(api) else "Mutating"
        elif action == "aws:executeAutomation":
            child = _child_content(region, inputs, depth)
            if child is not None:
                _step_impacts(region, child, counts, depth + 1)
                continue
            impact = "Undetermined"
        elif action in MUTATING_ACTIONS:
            impact = "Mutating"
        elif action in NON_MUTATING_ACTIONS:
            impact = "NonMutating"
        else:
            impact = "Undetermined"
        counts[impact] += 1


def _child_content(region, inputs: dict, depth: int) -> dict | None:
    name, version = str(inputs.get("DocumentName", "")), inputs.get("DocumentVersion")
    if not name or "{{" in name or "{{" in str(version or "") or depth >= MAX_CHILD_DEPTH:
        return None
    try:
        record = document_store.resolve(region, name)
        return document_store.content_of(document_store.version_of(record, version))
    except AwsError:
        return None  # the run itself would fail that step; what it would touch is unknown


def _target_previews(region, content: dict, given: dict, inputs: dict) -> list[dict]:
    counts: dict[str, int] = {}
    if inputs.get("Targets"):
        doc_type = (content.get("targetType") or "").lstrip("/") or "ParameterValues"
        for value in rate_control.resolve_targets(region, inputs["Targets"]):
            kind = _id_type(value) or doc_type
            counts[kind] = counts.get(kind, 0) + 1
    elif inputs.get("TargetMaps"):
        counts["TargetMaps"] = len(inputs["TargetMaps"])
    else:
        for values in given.values():
            for value in values:
                kind = _id_type(str(value))
                if kind:
                    counts[kind] = counts.get(kind, 0) + 1
    return [{"Count": count, "TargetType": kind} for kind, count in sorted(counts.items())]


def _compute(region, content: dict, inputs: dict, locations: list[dict] | None = None) -> dict:
    given = inputs.get("Parameters") or {}
    if inputs.get("Targets") or inputs.get("TargetMaps"):
        if inputs.get("Targets") and not inputs.get("TargetParameterName"):
            raise parameters.invalid("TargetParameterName and Targets must be specified together.")
        targeted = {inputs.get("TargetParameterName")} | {k for m in inputs.get("TargetMaps") or [] for k in m}
        definitions = content.get("parameters") or {}
        parameters.validate({**content, "parameters": {k: v for k, v in definitions.items() if k not in targeted}},
                            {k: v for k, v in given.items() if k not in targeted})
    else:
        parameters.validate(content, given)
    counts = {"Mutating": 0, "NonMutating": 0, "Undetermined": 0}
    _step_impacts(region, content, counts)
    return {
        "StepPreviews": counts,
        "Regions": sorted({l["Region"] for l in locations}) if locations else [region.name],
        "TargetPreviews": _target_previews(region, content, given, inputs),
        "TotalAccounts": len({l["Account"] for l in locations}) if locations else 1,
    }


def start_execution_preview(req: Request) -> dict:
    p, region = req.params, req.region
    name = p.get("DocumentName") or ""
    if not DOCUMENT_NAME.match(name):
        raise validation(f"Value '{name}' at 'documentName' failed to satisfy constraint: Member must satisfy "
                         "regular expression pattern: ^[a-zA-Z0-9_\\-.:/]{3,128}$")
    version = p.get("DocumentVersion")
    if version is not None and not DOCUMENT_VERSION.match(version):
        raise validation(f"Value '{version}' at 'documentVersion' failed to satisfy constraint: Member must "
                         "satisfy regular expression pattern: ([$]LATEST|[$]DEFAULT|^[1-9][0-9]*$)")
    inputs = (p.get("ExecutionInputs") or {}).get("Automation") or {}
    record = document_store.resolve(region, name, "ValidationException")
    if record["DocumentType"] != "Automation":
        raise validation(f"{name} is not an Automation document.")
    document_version = document_store.version_of(record, version, "ValidationException")
    locations = None
    if inputs.get("TargetLocations") or inputs.get("TargetLocationsURL"):
        # Refused as StartAutomationExecution refuses them; each location runs the same document.
        target_locations.check_shape(inputs)
        target_locations.refuse_approval_steps(document_store.content_of(document_version))
        locations = target_locations.expand(region.state, inputs["TargetLocations"])
    preview = {"ExecutionPreviewId": str(uuid.uuid4())}
    try:
        preview["ExecutionPreview"] = {
            "Automation": _compute(region, document_store.content_of(document_version), inputs, locations)}
        preview["Status"] = "Success"
    except AwsError as exc:
        preview.update(Status="Failed", StatusMessage=f"{exc.code}: {exc.message}")
    preview["EndedAt"] = time.time()
    region.previews[preview["ExecutionPreviewId"]] = preview
    region.state.mark_dirty()
    return {"ExecutionPreviewId": preview["ExecutionPreviewId"]}


def get_execution_preview(req: Request) -> dict:
    preview_id = req.params.get("ExecutionPreviewId") or ""
    if not PREVIEW_ID.match(preview_id):
        raise validation(f"Value '{preview_id}' at 'executionPreviewId' failed to satisfy constraint: Member must "
                         "have length 36")
    preview = req.region.previews.get(preview_id)
    if preview is None:
        raise AwsError("ResourceNotFoundException", f"Execution preview {preview_id} does not exist.")
    return dict(preview)


OPERATIONS = {"StartExecutionPreview": start_execution_preview, "GetExecutionPreview": get_execution_preview}
