"""Helpers shared by the tests/test_audit*.py files."""
from __future__ import annotations

import datetime as dt
import io
from contextlib import contextmanager

from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from automations import audit
from automations.audit.guards import TABLE
from automations.models import AuditEvent
from tests.conftest import require_postgres


def seed_chain(n: int, make=None, *, start: dt.datetime | None = None, step: dt.timedelta = dt.timedelta(seconds=1)):
    """Append n valid, chained events in one bulk insert (what record() would write, minus the lock).

    `make(i)` returns field overrides for the i-th new event (actor_name, action, team, ...).
    """
    head = AuditEvent.objects.order_by("-sequence").values("sequence", "hash", "occurred_at").first()
    sequence = head["sequence"] if head else 0
    prev = head["hash"] if head else audit.GENESIS_HASH
    moment = start or (head["occurred_at"] + step if head else timezone.now() - n * step)
    events = []
    for i in range(n):
        sequence += 1
        fields = {"actor_name": "seed", "action": "seed.event", "details": {"i": i}, **(make(i) if make else {})}
        event = AuditEvent(sequence=sequence, occurred_at=moment, prev_hash=prev, **fields)
        event.hash = audit.compute_hash(prev, audit.chained_fields(event))
        prev = event.hash
        moment += step
        events.append(event)
    AuditEvent.objects.bulk_create(events, batch_size=2000)
    return events


@contextmanager
def row_trigger_disabled():
    """What a superuser who bypasses the append-only trigger can do (matrix row 28)."""
    require_postgres("audit triggers")
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER audit_event_no_update_delete")
    try:
        yield connection
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER audit_event_no_update_delete")


def sql(statement: str, params=()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


def verify(*args) -> tuple[int, str, str]:
    """Run manage.py verify_audit; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_audit", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, out.getvalue(), err.getvalue()


@contextmanager
def guards_bypassed(*tables: str):
    """What an attacker holding the table owner's or a superuser's database access can do, on either database:
    lift the append-only triggers (PostgreSQL: DISABLE TRIGGER; SQLite: drop them), then put them back."""
    tables = tables or (TABLE,)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for table in tables:
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            saved = []
        else:
            cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN (%s)"
                           % ", ".join("%s" for _ in tables), list(tables))
            saved = cursor.fetchall()
            for name, _ in saved:
                cursor.execute(f'DROP TRIGGER "{name}"')
    try:
        yield connection
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                for table in tables:
                    cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
            for _, statement in saved:
                cursor.execute(statement)
