"""Auditor search and export over the audit log: filters, and constant-memory streaming."""
from __future__ import annotations

import csv
import io
import json
from typing import Iterator

import django_filters
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet

from automations.models import AuditEvent

EXPORT_FIELDS = ("sequence", "occurred_at", "actor_id", "actor_name", "action", "request_id", "team", "runbook",
                 "resources", "account_id", "region", "details", "client_ip", "user_agent", "role_session_name",
                 "source_identity", "aws_request_id", "execution_id", "prev_hash", "hash")


class AuditEventFilter(django_filters.FilterSet):
    """Allow-listed filters only: never a user-chosen field name or order_by."""

    actor = django_filters.CharFilter(field_name="actor_name")
    action = django_filters.CharFilter(field_name="action")
    action_prefix = django_filters.CharFilter(field_name="action", lookup_expr="startswith")
    team = django_filters.CharFilter(field_name="team")
    runbook = django_filters.CharFilter(field_name="runbook")
    request = django_filters.NumberFilter(field_name="request_id")
    execution_id = django_filters.CharFilter(field_name="execution_id")
    account_id = django_filters.CharFilter(field_name="account_id")
    region = django_filters.CharFilter(field_name="region")
    resource = django_filters.CharFilter(method="filter_resource")
    since = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields: list[str] = []

    def filter_resource(self, queryset, name, value):
        if not value:
            return queryset
        return queryset.filter(resources__contains=[value])


def _row(event: dict) -> list:
    values = []
    for name in EXPORT_FIELDS:
        value = event[name]
        if isinstance(value, (dict, list)):
            value = json.dumps(value, cls=DjangoJSONEncoder, sort_keys=True)
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        values.append("" if value is None else value)
    return values


def _guard_formula(value):
    # Spreadsheet apps execute cells that start with these; prefix a quote (OWASP CSV injection).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_csv(events: QuerySet[AuditEvent]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_FIELDS)
    yield buffer.getvalue()
    for event in events.order_by("sequence").values(*EXPORT_FIELDS).iterator(chunk_size=2000):
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_guard_formula(value) for value in _row(event)])
        yield buffer.getvalue()


def export_jsonl(events: QuerySet[AuditEvent]) -> Iterator[str]:
    for event in events.order_by("sequence").values(*EXPORT_FIELDS).iterator(chunk_size=2000):
        yield json.dumps(event, cls=DjangoJSONEncoder, sort_keys=True) + "\n"
