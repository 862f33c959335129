"""Runbook parameters: validate StartAutomationExecution input against a document, as AWS does.

The API carries every value as a list of strings (aws-api.md §2). `validate` checks them
against the document's parameter definitions and returns two views:
- `typed`: Python values for `{{ Param }}` interpolation (StringList -> list, Integer -> int,
  Boolean -> bool, StringMap -> dict, MapList -> list of dicts);
- `wire`: the string-list map GetAutomationExecution reports, defaults included.

allowedPattern is applied with Python `re.fullmatch`, i.e. the whole value must match, which
is what Java's `Matcher.matches()` (the API side of SSM) does. For the usual anchored patterns
(`^...$`) this is the same as a search. Patterns using Java-only syntax fail loudly.
"""

from __future__ import annotations

import json
import re

from .errors import AwsError

SCALAR_TYPES = {"String", "Integer", "Boolean"}
# Format checks for the AWS resource types the fixtures and our documents use; other AWS::
# types are accepted as plain strings.
RESOURCE_FORMATS = {
    "AWS::EC2::Instance::Id": re.compile(r"^i-[0-9a-f]{8,17}$"),
    "AWS::IAM::Role::Arn": re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$"),
    "AWS::S3::Bucket::Name": re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
}


class ParameterError(Exception):
    pass


def invalid(message: str) -> AwsError:
    return AwsError("InvalidAutomationExecutionParametersException", message)


def element_type(kind: str) -> str:
    """`List<AWS::EC2::Instance::Id>` -> `AWS::EC2::Instance::Id`; StringList -> String."""
    if kind.startswith("List<") and kind.endswith(">"):
        return kind[5:-1]
    return "String" if kind == "StringList" else kind


def is_list(kind: str) -> bool:
    return kind in ("StringList", "MapList") or kind.startswith("List<")


def typed_default(kind: str, value):
    """A document default (YAML may give native types) as the typed value."""
    if kind == "Integer":
        return int(value)
    if kind == "Boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "StringMap":
        return json.loads(value) if isinstance(value, str) else dict(value or {})
    if kind == "MapList":
        return json.loads(value) if isinstance(value, str) else list(value or [])
    if is_list(kind):
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return "" if value is None else str(value)


def to_wire(kind: str, value) -> list[str]:
    """A typed value as the API's list of strings."""
    if kind == "Boolean":
        return ["true" if value else "false"]
    if kind in ("StringMap", "MapList"):
        return [json.dumps(value)]
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _check_text(name: str, spec: dict, kind: str, text: str) -> None:
    allowed = spec.get("allowedValues")
    if allowed is not None and text not in [str(v) for v in allowed]:
        raise ParameterError(f'Parameter "{name}" value "{text}" is not one of the allowed values {allowed}.')
    pattern = spec.get("allowedPattern")
    if pattern is not None:
        try:
            matched = re.fullmatch(pattern, text) is not None
        except re.error as exc:
            raise ParameterError(
                f'Parameter "{name}": allowedPattern {pattern!r} cannot be evaluated by the sandbox ({exc}).'
            ) from None
        if not matched:
            raise ParameterError(
                f'Parameter "{name}" value "{text}" does not match the allowed pattern {pattern}.'
            )
    low, high = spec.get("minChars"), spec.get("maxChars")
    if low is not None and len(text) < int(low):
        raise ParameterError(f'Parameter "{name}" value "{text}" is shorter than minChars {low}.')
    if high is not None and len(text) > int(high):
        raise ParameterError(f'Parameter "{name}" value is longer than maxChars {high}.')
    resource = RESOURCE_FORMATS.get(element_type(kind))
    if resource is not None and text and not resource.match(text):
        raise ParameterError(f'Parameter "{name}" value "{text}" is not a valid {element_type(kind)}.')


def _convert(name: str, spec: dict, values: list[str]):
    kind = spec.get("type", "String")
    if kind == "StringMap":
        if len(values) != 1:
            raise ParameterError(f'Parameter "{name}" (StringMap) takes one JSON object.')
        try:
            value = json.loads(values[0])
        except ValueError:
            raise ParameterError(f'Parameter "{name}" (StringMap) is not valid JSON.') from None
        if not isinstance(value, dict):
            raise ParameterError(f'Parameter "{name}" (StringMap) must be a JSON object.')
        return value
    if kind == "MapList":
        try:
            items = [json.loads(v) for v in values]
        except ValueError:
            raise ParameterError(f'Parameter "{name}" (MapList) is not valid JSON.') from None
        # Either one JSON array of maps or one JSON map per list entry.
        if len(items) == 1 and isinstance(items[0], list):
            items = items[0]
        if not all(isinstance(item, dict) for item in items):
            raise ParameterError(f'Parameter "{name}" (MapList) must be a list of JSON objects.')
        _check_items(name, spec, items)
        return items
    if is_list(kind):
        for text in values:
            _check_text(name, spec, kind, text)
        _check_items(name, spec, values)
        return list(values)
    if len(values) != 1:
        raise ParameterError(f'Parameter "{name}" ({kind}) takes exactly one value, got {len(values)}.')
    text = values[0]
    if kind == "Integer":
        if not re.fullmatch(r"-?[0-9]+", text):
            raise ParameterError(f'Parameter "{name}" (Integer) value "{text}" is not an integer.')
        _check_text(name, spec, kind, text)
        return int(text)
    if kind == "Boolean":
        if text not in ("true", "false"):
            raise ParameterError(f'Parameter "{name}" (Boolean) value "{text}" must be true or false.')
        return text == "true"
    _check_text(name, spec, kind, text)
    return text


def _check_items(name: str, spec: dict, items: list) -> None:
    low, high = spec.get("minItems"), spec.get("maxItems")
    if low is not None and len(items) < int(low):
        raise ParameterError(f'Parameter "{name}" has {len(items)} items, fewer than minItems {low}.')
    if high is not None and len(items) > int(high):
        raise ParameterError(f'Parameter "{name}" has {len(items)} items, more than maxItems {high}.')


def validate(content: dict, given: dict[str, list[str]]) -> tuple[dict, dict]:
    """(typed, wire) parameters, or InvalidAutomationExecutionParametersException naming every problem."""
    definitions = content.get("parameters") or {}
    problems = []
    unknown = sorted(set(given) - set(definitions))
    if unknown:
        problems.append(f"Parameters {unknown} are not defined in the document.")
    typed, wire = {}, {}
    for name, spec in definitions.items():
        kind = spec.get("type", "String")
        values = given.get(name)
        if values is None or values == []:
            if "default" not in spec:
                problems.append(f'Parameter "{name}" is required but was not provided.')
                continue
            try:
                typed[name] = typed_default(kind, spec["default"])
            except (TypeError, ValueError):
                problems.append(f'The default of parameter "{name}" is not a valid {kind}.')
                continue
            wire[name] = to_wire(kind, typed[name])
            continue
        try:
            typed[name] = _convert(name, spec, [str(v) for v in values])
        except ParameterError as exc:
            problems.append(str(exc))
            continue
        wire[name] = [str(v) for v in values]
    if problems:
        raise invalid(" ".join(problems))
    return typed, wire
