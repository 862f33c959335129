"""Wire-format helpers shared by the services: SigV4 scope, Query bodies, XML and timestamps."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request")


def parse_authorization(header: str | None) -> tuple[str | None, str | None, str | None]:
    """(access key id, region, service) from `AWS4-HMAC-SHA256 Credential=AKID/date/REGION/SERVICE/...`.

    No signature check: the sandbox trusts whoever calls it, like a local emulator should.
    """
    match = _CREDENTIAL.search(header or "")
    if not match:
        return None, None, None
    return match.group(1), match.group(3), match.group(4)


def parse_form(body: bytes, query: str = "") -> dict[str, str]:
    """An x-www-form-urlencoded Query request (body plus URL query string) as a flat dict."""
    pairs = parse_qsl(query, keep_blank_values=True) + parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    return dict(pairs)


def unflatten(flat: dict[str, str]) -> dict:
    """`Tags.member.1.Key=a` / `Filter.1.Value.2=b` into nested dicts and lists.

    Numbered segments become list positions (in number order) and a `member` level, which the
    Query protocol puts between a list and its items, is dropped.
    """
    root: dict = {}
    for key, value in flat.items():
        node = root
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # "X=1&X.1=2": keep the first, ignore the odd one
                break
        else:
            node[parts[-1]] = value
    return _lists(root)


def _lists(node):
    if not isinstance(node, dict):
        return node
    if set(node) == {"member"} and isinstance(node["member"], dict):
        node = node["member"]
    if node and all(key.isdigit() for key in node):
        return [_lists(node[key]) for key in sorted(node, key=int)]
    return {key: _lists(value) for key, value in node.items()}


def iso(timestamp: float | None) -> str | None:
    """Epoch seconds as the ISO-8601 UTC string the XML protocols use (aws-api.md §15 item 9)."""
    if timestamp is None:
        return None
    moment = dt.datetime.fromtimestamp(float(timestamp), tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> float:
    """An ISO-8601 string (with `Z` or an offset; naive means UTC) as epoch seconds."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def xml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


def xml_document(root: str, namespace: str, body: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{namespace}">{body}</{root}>'.encode()
