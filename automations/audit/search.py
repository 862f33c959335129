"""Auditor search and export over the audit log: allow-listed filters, keyset paging, constant-memory streams.

Every filter maps onto an index that ends in `sequence` (models/audit.py), and results are
always newest-first by sequence, so a page is one index range scan: no COUNT, no OFFSET. The
time range becomes a sequence range, which holds because audit.record keeps occurred_at
monotonic along the sequence.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import django_filters
from django import forms
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import Case, F, JSONField, Q, QuerySet, Value, When
from django.db.models.functions import NullIf
from django.db.models.expressions import RawSQL
from drf_spectacular.utils import extend_schema_field

from automations.models import AuditEvent

EXPORT_FIELDS = ("sequence", "occurred_at", "actor_id", "actor_name", "action", "request_id", "team", "runbook",
                 "resources", "account_id", "region", "details", "client_ip", "user_agent", "role_session_name",
                 "source_identity", "aws_request_id", "execution_id", "prev_hash", "hash")
# Not a column of the event: {id: Name tag} for the event's resources, from the names its request
# stored at submit (AutomationRequest.resource_names); null when none is known. Not hashed: the
# chain covers what happened, a Name tag is only how people recognise the resource.
NAMES_FIELD = "resource_names"
EXPORT_COLUMNS = (*EXPORT_FIELDS, NAMES_FIELD)
_BIGINT_MAX = 2**63 - 1


# The OpenAPI schema says integer (django-filter's NumberFilter would be documented as any number).
@extend_schema_field({"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1})
class _IntegerFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


def _integer(field_name: str, label: str) -> _IntegerFilter:
    return _IntegerFilter(field_name=field_name, label=label, min_value=1, max_value=_BIGINT_MAX)


class _UtcDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 moment, in UTC: PostgreSQL refuses offsets past ±15:59 (a 500 otherwise), and
    a moment that leaves years 1–9999 once in UTC cannot be compared at all."""

    def to_python(self, value):
        moment = super().to_python(value)
        if moment is None:
            return moment
        try:
            return moment.astimezone(dt.timezone.utc)
        except (OverflowError, ValueError) as error:
            raise forms.ValidationError("Give a moment between the years 1 and 9999 (UTC).", code="invalid") from error


class _UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = _UtcDateTimeField


def _text(field_name: str, label: str, max_length: int, **kwargs) -> django_filters.CharFilter:
    return django_filters.CharFilter(field_name=field_name, label=label, max_length=max_length, **kwargs)


class AuditEventFilter(django_filters.FilterSet):
    """Allow-listed filters only: never a user-chosen field name or order_by. Lengths are bounded.

    Labels are explicit: django-filter would otherwise derive them on every request.
    """

    # Partial and any case ("Bob", "bo"): people type what they remember, not the exact snapshot.
    actor = _text("actor_name", "Actor (username at the time; part of it, any case)", 150, lookup_expr="icontains")
    actor_id = _integer("actor_id", "Actor user id")
    action = _text("action", "Action", 60)
    action_prefix = _text("action", "Action starts with", 60, lookup_expr="startswith")
    team = _text("team", "Team", 64)
    runbook = _text("runbook", "Runbook (part of the name, any case)", 256, lookup_expr="icontains")
    request = _integer("request_id", "Request id")
    resource = _text("resources", "Resource: an id, part of one, or its Name tag (any case)", 256,
                     method="filter_resource")
    account_id = _text("account_id", "AWS account id", 12)
    region = _text("region", "AWS region", 32)
    execution_id = _text("execution_id", "Automation execution id", 36)
    aws_request_id = _text("aws_request_id", "AWS request id", 128)
    source_identity = _text("source_identity", "STS source identity", 256)
    since = _UtcDateTimeFilter(method="filter_since", label="Since (ISO 8601)")
    until = _UtcDateTimeFilter(method="filter_until", label="Until (ISO 8601, exclusive)")

    class Meta:
        model = AuditEvent
        fields: list[str] = []

    def filter_resource(self, queryset, name, value):
        return with_resource_text(queryset, value) if value.strip() else queryset

    # Time bounds become sequence bounds only (no occurred_at condition left for the planner to
    # prefer): then "team X in March" is one range scan of (team, sequence). Exact because
    # audit.record never lets occurred_at go backwards along the sequence.
    def filter_since(self, queryset, name, value):
        first = _first_sequence_at_or_after(value)
        return queryset.none() if first is None else queryset.filter(sequence__gte=first)

    def filter_until(self, queryset, name, value):
        first_after = _first_sequence_at_or_after(value)
        return queryset if first_after is None else queryset.filter(sequence__lt=first_after)


def with_resource(queryset: QuerySet[AuditEvent], resource_id: str) -> QuerySet[AuditEvent]:
    """Events whose resources list contains this id (GIN index on PostgreSQL)."""
    if connection.vendor == "postgresql":
        return queryset.filter(resources__contains=[resource_id])
    # SQLite (the demo) has no JSON containment: match the quoted element in the stored JSON text.
    return queryset.filter(resources__icontains=json.dumps(resource_id))


def ids_named(text: str, *, limit: int = 200) -> list[str]:
    """Resource ids whose Name tag (as stored with requests at submit) contains `text`, any case."""
    from automations.models import AutomationRequest

    wanted = text.casefold()
    found: dict[str, None] = {}
    for names in (AutomationRequest.objects.filter(resource_names__icontains=text)
                  .values_list("resource_names", flat=True)[:limit]):
        for resource_id, resource_name in (names or {}).items():
            if wanted in str(resource_name).casefold():
                found[resource_id] = None
    return list(found)


def with_resource_text(queryset: QuerySet[AuditEvent], text: str) -> QuerySet[AuditEvent]:
    """Events about a resource given as its exact id (indexed), part of an id, or its Name tag."""
    text = text.strip()
    matches = Q(pk__in=with_resource(queryset, text).values("pk"))
    matches |= Q(resources__icontains=text)  # a partial id, any case
    for resource_id in ids_named(text):
        matches |= Q(pk__in=with_resource(AuditEvent.objects.all(), resource_id).values("pk"))
    return queryset.filter(matches)


def _first_sequence_at_or_after(moment) -> int | None:
    # One probe of the occurred_at index turns a time bound into a sequence bound.
    return (AuditEvent.objects.filter(occurred_at__gte=moment).order_by("occurred_at", "sequence")
            .values_list("sequence", flat=True).first())


#
# Keyset pages for the auditor pages (the API uses DRF's CursorPagination on the same ordering)
#

@dataclass
class Page:
    events: list[AuditEvent]
    newer: int | None  # pass as ?after= to see newer events
    older: int | None  # pass as ?before= to see older events


def _cursor(value) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number <= _BIGINT_MAX else None


def keyset_page(queryset: QuerySet[AuditEvent], *, before=None, after=None, size: int = 50) -> Page:
    """Newest first. `before`/`after` are sequence numbers from the previous page's links."""
    before, after = _cursor(before), _cursor(after)
    if after is not None:
        rows = list(queryset.filter(sequence__gt=after).order_by("sequence")[:size + 1])
        more_newer = len(rows) > size
        events = rows[:size][::-1]
        return Page(events, newer=events[0].sequence if more_newer and events else None,
                    older=events[-1].sequence if events else after + 1)
    if before is not None:
        queryset = queryset.filter(sequence__lt=before)
    rows = list(queryset.order_by("-sequence")[:size + 1])
    events = rows[:size]
    return Page(events, newer=events[0].sequence if before is not None and events else None,
                older=events[-1].sequence if len(rows) > size else None)


#
# Export. PostgreSQL does the formatting: CSV through COPY, JSON Lines built by json_build_object
# and read through a server-side cursor; Python only moves ~64 KB pieces along, so memory stays
# flat and the rate is the database's (bench/audit.py). Other databases (the SQLite demo) take
# the Python path below, which writes the same columns.
#

_PIECE = 64 * 1024
_TABLE = '"automations_auditevent".'
_GUARDED = {"actor_name", "action", "team", "runbook", "account_id", "region", "user_agent", "role_session_name",
            "source_identity", "aws_request_id", "execution_id"}
_FORMULA_START = "('=', '+', '-', '@', E'\\t', E'\\r')"


def _pg_fast_path() -> bool:
    # COPY cannot take server-side parameters; Django's default client-side binding merges them.
    return connection.vendor == "postgresql" and not connection.settings_dict.get("OPTIONS", {}).get(
        "server_side_binding")


def _csv_expression(name: str) -> str:
    column = _TABLE + name
    if name == "occurred_at":
        return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
    if name == "client_ip":
        return f"host({column})"
    if name in _GUARDED:
        # The same guard as _guard_formula: a leading = + - @ tab or CR gets a quote in front.
        return f"CASE WHEN left({column}, 1) IN {_FORMULA_START} THEN chr(39) || {column} ELSE {column} END"
    return f"{column}::text" if name in ("resources", "details") else column


def _names_of(resources, stored) -> dict | None:
    """_names_expression in Python: the request's stored names when the event names resources."""
    return stored or None if resources and stored else None


def _names_expression():
    """The request's stored {id: Name} when the event names resources, else NULL.

    A LEFT JOIN on the request's primary key and no per-row JSON work: the whole map is the
    request's, and an event of a request carries that request's resources. (Picking each event's
    own keys out of the map per row halved the export rate in bench/audit.py.)
    """
    empty = Value({}, output_field=JSONField())
    return NullIf(Case(When(resources=[], then=empty), default=F("request__resource_names"),
                       output_field=JSONField()), empty)


def _select(events: QuerySet[AuditEvent], expressions: list[str]) -> tuple[str, tuple]:
    """The filtered, scoped queryset as SQL that selects `expressions` and then the names, in sequence order."""
    names = [f"x{i}" for i in range(len(expressions))]
    queryset = events.order_by("sequence").annotate(
        **{name: RawSQL(expression, ()) for name, expression in zip(names, expressions)},
        **{NAMES_FIELD: _names_expression()}).values_list(*names, NAMES_FIELD)
    return queryset.query.sql_with_params()


def _pg_csv(events: QuerySet[AuditEvent]) -> Iterator[bytes]:
    piece = bytearray(",".join(EXPORT_COLUMNS).encode() + b"\n")
    try:
        sql, params = _select(events, [_csv_expression(name) for name in EXPORT_FIELDS])
    except EmptyResultSet:  # e.g. `since` after the newest event: Django knows there is nothing to select
        yield bytes(piece)
        return
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy:
        for block in copy:  # libpq hands over one row at a time
            piece += block
            if len(piece) >= _PIECE:
                yield bytes(piece)
                piece.clear()
    yield bytes(piece)


def _pg_jsonl(events: QuerySet[AuditEvent]) -> Iterator[bytes]:
    # Selecting plain columns keeps their names, so row_to_json writes the keys (sorted like the
    # Python path); inet and timestamptz render as "10.0.0.1" and ISO 8601 in the session's UTC.
    try:
        sql, params = (events.order_by("sequence").annotate(**{NAMES_FIELD: _names_expression()})
                       .values_list(*sorted(EXPORT_COLUMNS)).query.sql_with_params())
    except EmptyResultSet:  # a queryset.none(): nothing to export
        return
    query = f"COPY (SELECT row_to_json(e)::text FROM ({sql}) e ORDER BY e.sequence) TO STDOUT"
    piece = bytearray()
    with connection.cursor() as cursor, cursor.cursor.copy(query, params) as copy:
        for block in copy:
            piece += block
            if len(piece) >= _PIECE:
                yield _unescape_copy_text(piece)
                piece.clear()
    yield _unescape_copy_text(piece)


def _unescape_copy_text(piece: bytearray) -> bytes:
    """Undo COPY's text-format escaping of a JSON line. JSON never contains a raw control
    character (they are \\uXXXX or \\n inside strings), so COPY's only escape here is the
    backslash itself, doubled. Blocks are whole lines, so no pair is ever split."""
    return bytes(piece).replace(b"\\\\", b"\\")


def _rows(events: QuerySet[AuditEvent]) -> Iterator[tuple]:
    """EXPORT_COLUMNS' values per event, the names last (see NAMES_FIELD)."""
    # Django reads SQLite in chunks; its transactions would take the write lock (demo), so none here.
    resources = EXPORT_FIELDS.index("resources")
    for row in (events.order_by("sequence").values_list(*EXPORT_FIELDS, "request__resource_names")
                .iterator(chunk_size=2000)):
        yield (*row[:-1], _names_of(row[resources], row[-1]))


def _guard_formula(value):
    # Spreadsheet apps execute cells that start with these; prefix a quote (OWASP CSV injection).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_cells(row: tuple) -> list:
    cells = []
    for value in row:
        if value is None:
            cells.append("")
        elif isinstance(value, str):
            cells.append(_guard_formula(value))
        elif isinstance(value, (dict, list)):
            cells.append(json.dumps(value, sort_keys=True, ensure_ascii=False))  # starts with { or [
        elif hasattr(value, "isoformat"):
            cells.append(value.isoformat(timespec="microseconds"))
        else:
            cells.append(value)
    return cells


def export_csv(events: QuerySet[AuditEvent]) -> Iterator[str | bytes]:
    """The events as CSV, oldest first, every cell that could start a formula defused."""
    if _pg_fast_path():
        yield from _pg_csv(events)
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # the default \r\n terminator also makes it quote a lone \r
    writer.writerow(EXPORT_COLUMNS)
    for row in _rows(events):
        writer.writerow(_csv_cells(row))
        if buffer.tell() >= _PIECE:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def export_jsonl(events: QuerySet[AuditEvent]) -> Iterator[str | bytes]:
    """The events as JSON Lines, oldest first, one object per event with every field."""
    if _pg_fast_path():
        yield from _pg_jsonl(events)
        return
    lines: list[str] = []
    occurred_at = EXPORT_FIELDS.index("occurred_at")
    for row in _rows(events):
        values = list(row)
        values[occurred_at] = values[occurred_at].isoformat(timespec="microseconds")
        lines.append(json.dumps(dict(zip(EXPORT_COLUMNS, values)), sort_keys=True, ensure_ascii=False))
        if len(lines) >= 500:
            yield "\n".join(lines) + "\n"
            lines.clear()
    if lines:
        yield "\n".join(lines) + "\n"
