"""Key/value and list editors for StringMap and MapList parameters on the request form, without JavaScript.

A StringMap is edited as rows of a key box and a value box; a MapList as a list of entries, each
entry a small box of Key=value lines. Both render a few empty rows more than they hold: to add
more, the requester previews (the page comes back with the values and fresh empty rows), so
nothing needs a script. A raw value posted under the parameter's own name (Key=value lines or
JSON, as older pages and scripts send) is still read.

Like every field of the request form these only shape input: the editors turn the rows into the
text the service reads (Key=value lines, or JSON where a key holds "=" or for a MapList), and
automations.runbooks.validation judges it, with the same messages as the API.
"""
from __future__ import annotations

import json

from django import forms

SPARE_ROWS = 2
MIN_ROWS = 3
MAX_ROWS = 100  # SSM's own limits are far lower; this only bounds the page


def _getlist(data, key: str) -> list[str]:
    values = data.getlist(key) if hasattr(data, "getlist") else data.get(key, [])
    values = values if isinstance(values, list) else [values]
    return [value if isinstance(value, str) else "" for value in values][:MAX_ROWS]


def map_text(pairs: list[tuple[str, str]]) -> str:
    """Rows as the text the service reads; blank rows dropped, a value without a key kept (refused there)."""
    rows = [(key.strip(), value.strip()) for key, value in pairs if key.strip() or value.strip()]
    if any("=" in key for key, _ in rows) and len({key for key, _ in rows}) == len(rows):
        return json.dumps(dict(rows), ensure_ascii=False)  # a key holding "=" cannot be a Key=value line
    return "\n".join(f"{key}={value}" for key, value in rows)


def map_pairs(value) -> list[tuple[str, str]]:
    """What the editor shows for a value: a dict (a default), the wire JSON (a re-run), or lines."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError:
                return [(text, "")]
        else:
            pairs = []
            for line in text.splitlines():
                if line.strip():
                    key, _, item = line.partition("=")
                    pairs.append((key.strip(), item.strip()))
            return pairs
    if isinstance(value, dict):
        return [(str(key), item if isinstance(item, str) else json.dumps(item)) for key, item in value.items()]
    return []


class KeyValueWidget(forms.Widget):
    """Rows of <name>__key / <name>__value inputs, paired by position."""

    template_name = "automations/widgets/key_value.html"

    def value_from_datadict(self, data, files, name):
        keys, values = _getlist(data, name + "__key"), _getlist(data, name + "__value")
        if not keys and not values:
            return data.get(name)  # raw Key=value lines or JSON
        values += [""] * (len(keys) - len(values))
        keys += [""] * (len(values) - len(keys))
        return map_text(list(zip(keys, values)))

    def value_omitted_from_data(self, data, files, name):
        return name not in data and name + "__key" not in data

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        pairs = map_pairs(value)
        pairs += [("", "")] * max(SPARE_ROWS, MIN_ROWS - len(pairs))
        context["widget"]["rows"] = [{"number": i, "key": k, "value": v} for i, (k, v) in enumerate(pairs, start=1)]
        return context


def entry_text(value) -> str:
    """One MapList entry as Key=value lines (JSON for anything that is not a flat map of text)."""
    if isinstance(value, dict) and all(isinstance(k, str) and "=" not in k and isinstance(v, str)
                                       and "\n" not in v for k, v in value.items()):
        return "\n".join(f"{key}={item}" for key, item in value.items())
    return json.dumps(value, ensure_ascii=False)


def _entry(text: str):
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    entry = {}
    for line in text.splitlines():
        if line.strip():
            key, equals, item = line.partition("=")
            if not equals or not key.strip():
                return text  # not a map: the service refuses the list with its own words
            entry[key.strip()] = item.strip()
    return entry


class MapListWidget(forms.Widget):
    """One <name>__entry box per map, Key=value lines in each."""

    template_name = "automations/widgets/map_list.html"

    def value_from_datadict(self, data, files, name):
        entries = _getlist(data, name + "__entry")
        if not entries:
            return data.get(name)  # raw JSON
        return json.dumps([_entry(text) for text in entries if text.strip()], ensure_ascii=False)

    def value_omitted_from_data(self, data, files, name):
        return name not in data and name + "__entry" not in data

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        items = value
        if isinstance(items, list) and len(items) == 1 and isinstance(items[0], str):
            items = items[0]
        if isinstance(items, str):
            try:
                items = json.loads(items) if items.strip() else []
            except ValueError:
                items = [items]
        items = items if isinstance(items, list) else []
        texts = [entry_text(item) if not isinstance(item, str) else item for item in items]
        texts += [""] * max(1, MIN_ROWS - 1 - len(texts))
        context["widget"]["entries"] = [{"number": i, "text": text} for i, text in enumerate(texts, start=1)]
        return context
