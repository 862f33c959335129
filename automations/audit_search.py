"""Auditor search and export over the audit log: allow-listed filters, keyset paging, constant-memory streams.

Every filter maps onto an index that ends in `sequence` (models/audit.py), and results are
always newest-first by sequence, so a page is one index range scan: no COUNT, no OFFSET. The
time range becomes a sequence range, which holds because audit.record keeps occurred_at
monotonic along the sequence.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Iterator

import django_filters
from django import forms
from django.db import connection, transaction
from django.db.models import QuerySet

from automations.models import AuditEvent

EXPORT_FIELDS = ("sequence", "occurred_at", "actor_id", "actor_name", "action", "request_id", "team", "runbook",
                 "resources", "account_id", "region", "details", "client_ip", "user_agent", "role_session_name",
                 "source_identity", "aws_request_id", "execution_id", "prev_hash", "hash")
_BIGINT_MAX = 2**63 - 1


class _IntegerFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


def _integer(field_name: str, label: str) -> _IntegerFilter:
    return _IntegerFilter(field_name=field_name, label=label, min_value=1, max_value=_BIGINT_MAX)


def _text(field_name: str, label: str, max_length: int, **kwargs) -> django_filters.CharFilter:
    return django_filters.CharFilter(field_name=field_name, label=label, max_length=max_length, **kwargs)


class AuditEventFilter(django_filters.FilterSet):
    """Allow-listed filters only: never a user-chosen field name or order_by. Lengths are bounded.

    Labels are explicit: django-filter would otherwise derive them on every request.
    """

    actor = _text("actor_name", "Actor (username at the time)", 150)
    actor_id = _integer("actor_id", "Actor user id")
    action = _text("action", "Action", 60)
    action_prefix = _text("action", "Action starts with", 60, lookup_expr="startswith")
    team = _text("team", "Team", 64)
    runbook = _text("runbook", "Runbook", 256)
    request = _integer("request_id", "Request id")
    resource = _text("resources", "Resource id", 256, method="filter_resource")
    account_id = _text("account_id", "AWS account id", 12)
    region = _text("region", "AWS region", 32)
    execution_id = _text("execution_id", "Automation execution id", 36)
    aws_request_id = _text("aws_request_id", "AWS request id", 128)
    source_identity = _text("source_identity", "STS source identity", 256)
    since = django_filters.IsoDateTimeFilter(method="filter_since", label="Since (ISO 8601)")
    until = django_filters.IsoDateTimeFilter(method="filter_until", label="Until (ISO 8601, exclusive)")

    class Meta:
        model = AuditEvent
        fields: list[str] = []

    def filter_resource(self, queryset, name, value):
        return with_resource(queryset, value) if value else queryset

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
# Export: a server-side cursor (PostgreSQL) read in chunks, written out in ~64 KB pieces
#

def _rows(events: QuerySet[AuditEvent]) -> Iterator[tuple]:
    rows = events.order_by("sequence").values_list(*EXPORT_FIELDS).iterator(chunk_size=2000)
    if connection.vendor == "postgresql":
        # Inside a transaction the named cursor needs no WITH HOLD, which would make PostgreSQL
        # materialise the whole result before the first row.
        with transaction.atomic():
            yield from rows
    else:
        # SQLite (demo) transactions take the write lock; a plain chunked read is enough there.
        yield from rows


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
            cells.append(_guard_formula(json.dumps(value, sort_keys=True, ensure_ascii=False)))
        elif hasattr(value, "isoformat"):
            cells.append(value.isoformat())
        else:
            cells.append(value)
    return cells


def export_csv(events: QuerySet[AuditEvent], *, batch: int = 500) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_FIELDS)
    pending = 0
    for row in _rows(events):
        writer.writerow(_csv_cells(row))
        pending += 1
        if pending >= batch:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


def export_jsonl(events: QuerySet[AuditEvent], *, batch: int = 500) -> Iterator[str]:
    lines: list[str] = []
    occurred_at = EXPORT_FIELDS.index("occurred_at")
    for row in _rows(events):
        values = list(row)
        values[occurred_at] = values[occurred_at].isoformat()
        lines.append(json.dumps(dict(zip(EXPORT_FIELDS, values)), sort_keys=True, ensure_ascii=False))
        if len(lines) >= batch:
            yield "\n".join(lines) + "\n"
            lines.clear()
    if lines:
        yield "\n".join(lines) + "\n"
