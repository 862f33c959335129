"""Database-level append-only guards for the audit tables, and the check that they are in place.

PostgreSQL: a row trigger refuses UPDATE and DELETE, a statement trigger refuses TRUNCATE (row
triggers never see a TRUNCATE). SQLite (the demo): triggers refuse UPDATE and DELETE (SQLite has no
TRUNCATE). QuerySet.update() and raw SQL bypass the model's save(), so these triggers are the real
guarantee against the application; the owner role can still drop them, which the hash chain, the
signed digests and the external stream detect (docs/audit.md).

Guarded: the events, and the database copies of the signed digests and archive manifests.
Installed by migrations 0002 and 0010; `check_after_migrate` runs at the end of every `migrate`
(post_migrate) and fails it when a guard is missing or disabled, because a table rebuild (SQLite's
way of altering a column) silently drops triggers: migration 0003 did exactly that. The database
role grants (automations.audit.roles) follow it as a second post_migrate receiver (apps.py).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

TABLE = "automations_auditevent"
DIGEST_TABLE = "automations_auditdigest"
MANIFEST_TABLE = "automations_auditarchivemanifest"
# table -> trigger name stem; the event table keeps the names migration 0002 gave it.
TABLES = {TABLE: "audit_event", DIGEST_TABLE: "audit_digest", MANIFEST_TABLE: "audit_manifest"}

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION delegate_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit records are append-only: % refused on %', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END $$;
"""


def _pg_install(table: str) -> str:
    stem = TABLES[table]
    return f"""
DROP TRIGGER IF EXISTS {stem}_no_update_delete ON {table};
CREATE TRIGGER {stem}_no_update_delete BEFORE UPDATE OR DELETE ON {table}
  FOR EACH ROW EXECUTE FUNCTION delegate_audit_append_only();
DROP TRIGGER IF EXISTS {stem}_no_truncate ON {table};
CREATE TRIGGER {stem}_no_truncate BEFORE TRUNCATE ON {table}
  FOR EACH STATEMENT EXECUTE FUNCTION delegate_audit_append_only();
"""


def _sqlite_install(table: str) -> list[str]:
    stem = TABLES[table]
    return [
        f"""CREATE TRIGGER IF NOT EXISTS {stem}_no_update BEFORE UPDATE ON {table}
            BEGIN SELECT RAISE(ABORT, 'audit records are append-only: UPDATE refused on {table}'); END;""",
        f"""CREATE TRIGGER IF NOT EXISTS {stem}_no_delete BEFORE DELETE ON {table}
            BEGIN SELECT RAISE(ABORT, 'audit records are append-only: DELETE refused on {table}'); END;""",
    ]


def expected_triggers(vendor: str, table: str) -> list[str]:
    stem = TABLES[table]
    if vendor == "postgresql":
        return [f"{stem}_no_update_delete", f"{stem}_no_truncate"]
    if vendor == "sqlite":
        return [f"{stem}_no_update", f"{stem}_no_delete"]
    return []


def _existing_tables(connection, tables) -> list[str]:
    present = set(connection.introspection.table_names())
    return [table for table in tables if table in present]


def install(connection, tables=None) -> None:
    """Create (or re-create) the guards on every guarded table that exists. Idempotent."""
    tables = _existing_tables(connection, tables or TABLES)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_PG_FUNCTION)
            for table in tables:
                cursor.execute(_pg_install(table))
        elif connection.vendor == "sqlite":
            for table in tables:
                for statement in _sqlite_install(table):
                    cursor.execute(statement)


def remove(connection, tables=None) -> None:
    tables = _existing_tables(connection, tables or TABLES)
    with connection.cursor() as cursor:
        for table in tables:
            for name in expected_triggers(connection.vendor, table):
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if connection.vendor == "postgresql"
                                                                    else ""))


def missing(connection) -> list[str]:
    """Guards that should exist but do not, or are disabled: '<table>.<trigger> (missing|disabled)'."""
    problems = []
    tables = _existing_tables(connection, TABLES)
    with connection.cursor() as cursor:
        for table in tables:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = %s::regclass"
                               " AND NOT tgisinternal", [table])
                found = dict(cursor.fetchall())
            elif connection.vendor == "sqlite":
                cursor.execute("SELECT name, 'O' FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [table])
                found = dict(cursor.fetchall())
            else:
                continue
            for name in expected_triggers(connection.vendor, table):
                if name not in found:
                    problems.append(f"{table}.{name} (missing)")
                elif found[name] == "D":
                    problems.append(f"{table}.{name} (disabled)")
    return problems


class GuardsMissing(Exception):
    pass


_lifted = threading.local()


def after_migrate_applies(**kwargs) -> bool:
    """Whether the post_migrate work (this check, then roles.grant_after_migrate) runs for this migrate."""
    if getattr(_lifted, "active", False):
        return False  # the test harness is emptying the database (guard_lifted_for_test_teardown)
    plan = kwargs.get("plan") or []
    if plan and all(backwards for _, backwards in plan):
        return False  # unapplying migrations (0002 removes the guards on its way down)
    return True


def check_after_migrate(using: str = "default", **kwargs) -> None:
    """post_migrate: refuse to finish a migrate that left an audit table unguarded.

    Connected before roles.grant_after_migrate (apps.py), so a refused migrate grants nothing.
    """
    from django.db import connections

    if not after_migrate_applies(**kwargs):
        return
    problems = missing(connections[using])
    if problems:
        raise GuardsMissing(
            "The audit tables' append-only guards are missing after migrate: " + ", ".join(problems)
            + ". A migration dropped them (an SQLite table rebuild does); add a migration that calls"
              " automations.audit.guards.install().")


@contextmanager
def guard_lifted_for_test_teardown(connection):
    """Only for the test harness: emptying the database between transactional tests.

    Production code never calls this; dedicated tests prove the guards themselves.
    """
    _lifted.active = True
    try:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                for table in _existing_tables(connection, TABLES):
                    cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER {TABLES[table]}_no_truncate")
            elif connection.vendor == "sqlite":
                remove(connection)
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    for table in _existing_tables(connection, TABLES):
                        cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {TABLES[table]}_no_truncate")
                elif connection.vendor == "sqlite":
                    install(connection)
    finally:
        _lifted.active = False
