"""Server-side validation of runbook parameters against a version's stored schema.

The web form and the API both end here, so they accept and refuse exactly the same input.
Output is SSM's wire shape: {name: [str, ...]}. Regexes run on RE2 (linear time) after a
length bound, so a hostile allowedPattern or value cannot hang a process.
"""
from __future__ import annotations

import json
import re

import re2

from automations.errors import InvalidRequest, ServerOwnedParameter

MAX_VALUE_CHARS = 512  # SSM accepts at most 512 characters per value
MAX_LIST_ITEMS = 50  # and at most 50 values per parameter
_INTEGER = re.compile(r"^-?\d{1,18}$")
MAX_CONCURRENCY = re.compile(r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$")
MAX_ERRORS = re.compile(r"^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$")
ALARM_NAME = re.compile(r"^[^\x00-\x1f]{1,255}$")
_regex_cache: dict[str, object] = {}


def compiled_pattern(pattern: str):
    compiled = _regex_cache.get(pattern)
    if compiled is None:
        options = re2.Options()
        options.max_mem = 8 << 20  # bound RE2's own memory for huge patterns
        compiled = re2.compile(pattern, options)
        _regex_cache[pattern] = compiled
    return compiled


def matches_pattern(pattern: str, value: str) -> bool:
    """AWS applies allowedPattern as a search; the fixture patterns carry their own anchors."""
    if len(value) > MAX_VALUE_CHARS:
        return False
    return compiled_pattern(pattern).search(value) is not None


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        # Forms send one value per line (or comma-separated); the API may send a list.
        return [part.strip() for part in re.split(r"[\n,]", value) if part.strip()]
    return [value]


def _check_string(name: str, spec: dict, value, errors: list[str]) -> str | None:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        errors.append("Enter text.")
        return None
    text = str(value)
    if len(text) > MAX_VALUE_CHARS:
        errors.append(f"At most {MAX_VALUE_CHARS} characters.")
        return None
    if "\x00" in text:
        errors.append("Control characters are not allowed.")
        return None
    if "minChars" in spec and len(text) < int(spec["minChars"]):
        errors.append(f"At least {spec['minChars']} characters.")
    if "maxChars" in spec and len(text) > int(spec["maxChars"]):
        errors.append(f"At most {spec['maxChars']} characters.")
    if spec.get("allowedValues") and text not in [str(v) for v in spec["allowedValues"]]:
        errors.append("Choose one of: " + ", ".join(str(v) for v in spec["allowedValues"]) + ".")
    elif spec.get("allowedPattern") and not matches_pattern(spec["allowedPattern"], text):
        errors.append(f"Does not match the required pattern {spec['allowedPattern']}.")
    return text


def validate_value(name: str, spec: dict, raw) -> tuple[list[str] | None, list[str]]:
    """One parameter: (wire value or None when omitted, error messages)."""
    kind = spec["type"]
    errors: list[str] = []
    empty = raw is None or raw == "" or raw == []
    if empty:
        if spec.get("required"):
            return None, ["This parameter is required."]
        return None, []
    if kind == "Boolean":
        text = str(raw).lower() if isinstance(raw, (bool, str)) else None
        if text not in ("true", "false"):
            return None, ["Enter true or false."]
        return [text], []
    if kind == "Integer":
        text = str(raw) if not isinstance(raw, bool) and isinstance(raw, (int, str)) else ""
        if not _INTEGER.match(text.strip()):
            return None, ["Enter a whole number."]
        return [str(int(text))], []
    if kind in ("StringMap", "MapList"):
        value = raw
        if isinstance(raw, str):
            if len(raw) > MAX_VALUE_CHARS:
                return None, [f"At most {MAX_VALUE_CHARS} characters of JSON."]
            try:
                value = json.loads(raw)
            except ValueError:
                return None, ["Enter valid JSON."]
        if kind == "StringMap" and not isinstance(value, dict):
            return None, ["Enter a JSON object, e.g. {\"key\": \"value\"}."]
        if kind == "MapList" and not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            return None, ["Enter a JSON list of objects, e.g. [{\"key\": \"value\"}]."]
        encoded = json.dumps(value, separators=(",", ":"), sort_keys=True)
        if len(encoded) > MAX_VALUE_CHARS:
            return None, [f"At most {MAX_VALUE_CHARS} characters of JSON."]
        return [encoded], []
    if kind == "StringList" or kind.startswith("List<"):
        items = _as_list(raw)
        if len(items) > MAX_LIST_ITEMS:
            return None, [f"At most {MAX_LIST_ITEMS} values."]
        if "minItems" in spec and len(items) < int(spec["minItems"]):
            errors.append(f"At least {spec['minItems']} values.")
        if "maxItems" in spec and len(items) > int(spec["maxItems"]):
            errors.append(f"At most {spec['maxItems']} values.")
        cleaned = []
        for item in items:
            item_errors: list[str] = []
            text = _check_string(name, spec, item, item_errors)
            if item_errors:
                errors.extend(f"{str(item)[:60]!r}: {message}" for message in item_errors)
            elif text:
                cleaned.append(text)
        if not cleaned and not errors and spec.get("required"):
            errors.append("This parameter is required.")
        return (cleaned or None), errors
    # String and single-valued AWS:: resource types
    if isinstance(raw, list):
        if len(raw) != 1:
            return None, ["Enter exactly one value."]
        raw = raw[0]
    text = _check_string(name, spec, raw, errors)
    if text == "" and spec.get("required"):
        errors.append("This parameter is required.")
    return ([text] if text else None), errors


def validate_parameters(schema: dict[str, dict], raw: dict) -> dict[str, list[str]]:
    """All parameters of one version: SSM wire values, or InvalidRequest with per-field errors.

    Server-owned parameters (roles) must not appear at all; the service fills them in.
    """
    if not isinstance(raw, dict):
        raise InvalidRequest("Parameters must be an object of name → value.", errors={"parameters": ["Expected an object."]})
    owned = sorted(name for name in raw if name in schema and schema[name].get("server_owned"))
    if owned:
        raise ServerOwnedParameter(
            f"{', '.join(owned)} is set by Delegate, not by requesters.",
            errors={name: ["This value is chosen by Delegate's administrators and cannot be set."] for name in owned},
        )
    unknown = sorted(str(name)[:60] for name in raw if name not in schema)
    errors: dict[str, list[str]] = {name: ["This runbook version has no such parameter."] for name in unknown}
    wire: dict[str, list[str]] = {}
    for name, spec in schema.items():
        if spec.get("server_owned"):
            continue
        value, messages = validate_value(name, spec, raw.get(name))
        if messages:
            errors[name] = messages
        elif value is not None:
            wire[name] = value
    if errors:
        raise InvalidRequest("Some parameters are not valid.", errors=errors)
    return wire
