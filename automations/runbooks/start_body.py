"""The one builder of the StartAutomationExecution request body: the preview shows it, the worker sends it."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from automations.models import AutomationRequest


def start_body(
    *,
    document_name: str,
    document_version: str,
    parameters: dict[str, list[str]],
    target_parameter_name: str = "",
    targets: list | None = None,
    max_concurrency: str = "",
    max_errors: str = "",
    alarm_name: str = "",
    location_targets: list[str] | None = None,
    location_regions: list[str] | None = None,
    location_max_concurrency: str = "",
    location_max_errors: str = "",
) -> dict:
    """The request body without ClientToken and Tags (the gateway adds those: they are fixed per
    request when it is saved, so a preview cannot show them).

    Parameters are in name order, so the body is the same whether the values come from the form
    or from the database (PostgreSQL's jsonb does not keep key order).
    https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_StartAutomationExecution.html
    """
    body: dict = {
        "DocumentName": document_name,
        "DocumentVersion": document_version,
        "Parameters": {name: parameters[name] for name in sorted(parameters)},
    }
    if target_parameter_name:
        body["TargetParameterName"] = target_parameter_name
        body["Targets"] = targets or []
        if max_concurrency:
            body["MaxConcurrency"] = max_concurrency
        if max_errors:
            body["MaxErrors"] = max_errors
    if alarm_name:
        body["AlarmConfiguration"] = {"IgnorePollAlarmFailure": False, "Alarms": [{"Name": alarm_name}]}
    if location_targets:
        from django.conf import settings

        location: dict = {"Accounts": list(location_targets), "Regions": list(location_regions or [])}
        if location_max_concurrency:
            location["TargetLocationMaxConcurrency"] = location_max_concurrency
        if location_max_errors:
            location["TargetLocationMaxErrors"] = location_max_errors
        # The role SSM assumes in every member account is the operator's, never the requester's.
        location["ExecutionRoleName"] = settings.DELEGATE_EXECUTION_ROLE_NAME
        body["TargetLocations"] = [location]
    return body


def start_body_for(request: AutomationRequest) -> dict:
    """The body for a request, saved or an unsaved preview."""
    return start_body(
        document_name=request.runbook.name,
        document_version=request.runbook_version.version,
        parameters=request.parameters,
        target_parameter_name=request.target_parameter_name,
        targets=request.targets,
        max_concurrency=request.max_concurrency,
        max_errors=request.max_errors,
        alarm_name=request.alarm_name,
        location_targets=request.location_targets,
        location_regions=request.location_regions,
        location_max_concurrency=request.location_max_concurrency,
        location_max_errors=request.location_max_errors,
    )


def start_body_text(body: dict) -> str:
    """The body as the preview page prints it."""
    return json.dumps(body, indent=2, ensure_ascii=False)
