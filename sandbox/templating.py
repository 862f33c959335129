"""Runbook expressions: `{{ ... }}` interpolation, output selectors and ISO-8601 durations."""

from __future__ import annotations

import json
import re

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")


class Unresolved(Exception):
    """A `{{ name }}` that names nothing known; the step fails with this message."""


def render(value, lookup):
    """Resolve every placeholder in a step's inputs (nested dicts and lists included).

    A string that is exactly one placeholder becomes the raw typed value, so
    `"InstanceIds": "{{ InstanceId }}"` yields a list for a StringList parameter; inside a
    longer string the value is written as text. A list element that resolves to a list is
    spliced in, so `["{{ Ids }}"]` stays a flat list.
    """
    if isinstance(value, dict):
        return {key: render(item, lookup) for key, item in value.items()}
    if isinstance(value, list):
        out = []
        for item in value:
            resolved = render(item, lookup)
            if isinstance(item, str) and PLACEHOLDER.fullmatch(item.strip()) and isinstance(resolved, list):
                out.extend(resolved)
            else:
                out.append(resolved)
        return out
    if not isinstance(value, str):
        return value
    whole = PLACEHOLDER.fullmatch(value.strip())
    if whole:
        return lookup(whole.group(1))
    return PLACEHOLDER.sub(lambda m: as_text(lookup(m.group(1))), value)


def as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(as_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


_TOKEN = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+|\*)\]|\['([^']+)'\]")


def select(data, selector: str):
    """A JSONPath subset (`$.A.B[0].C`, `$.A[*].B`, `$['a b']`); KeyError if nothing matches."""
    path = selector.strip()
    if not path.startswith("$"):
        raise KeyError(selector)
    position, current, spread = 1, data, False
    while position < len(path):
        match = _TOKEN.match(path, position)
        if not match:
            raise KeyError(selector)
        position = match.end()
        name, index = match.group(1) or match.group(3), match.group(2)
        if index == "*":
            if not isinstance(current, list):
                raise KeyError(selector)
            spread = True
            continue
        if spread:
            current = [_step(item, name, index, selector) for item in current]
        else:
            current = _step(current, name, index, selector)
    return current


def _step(current, name, index, selector):
    if name is not None:
        if not isinstance(current, dict) or name not in current:
            raise KeyError(selector)
        return current[name]
    if not isinstance(current, list) or int(index) >= len(current):
        raise KeyError(selector)
    return current[int(index)]


_DURATION = re.compile(
    r"^P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


def duration_seconds(text: str) -> float:
    """`PT10M` -> 600.0. ValueError for anything else."""
    match = _DURATION.match(str(text).strip())
    if not match or not any(match.groups()) or str(text).strip().endswith("T"):
        raise ValueError(f"{text!r} is not an ISO-8601 duration such as PT10M")
    weeks, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds
