"""Canonical JSON: the same bytes for the same content, every time (fingerprints and audit hashes)."""
import datetime as dt
import json
import uuid
from decimal import Decimal


def _default(value):
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, (uuid.UUID, Decimal)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def canonical_json(value) -> bytes:
    """Sorted keys, no whitespace, UTF-8; datetimes as UTC `…Z`, UUIDs as strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default).encode()


def json_roundtrip(value):
    """What a JSON column gives back after storing `value` (tuples become lists, etc.)."""
    return json.loads(canonical_json(value))
