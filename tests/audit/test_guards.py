"""Issue 13, findings 3 and 4: the database itself refuses to change the audit record.

Finding 3: migration 0003's AlterField rebuilt the SQLite table and dropped its triggers. Here a fresh
database is migrated from zero (SQLite and PostgreSQL) and must refuse UPDATE, DELETE and TRUNCATE on
the audit events, digests and archive manifests; `migrate` must fail loudly when a guard is missing.
Finding 4: the application's PostgreSQL role gets INSERT/SELECT on those tables and owns nothing, so
the refusals come from PostgreSQL's privileges, not only from triggers the owner could drop.
"""
import io
import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from automations import audit
from tests.audit_helpers import seed_chain
from tests.conftest import require_postgres

ROOT = Path(__file__).resolve().parents[2]
GUARDED = {
    "automations_auditevent": "(sequence, occurred_at, actor_name, action, team, runbook, resources, account_id,"
                              " region, details, user_agent, role_session_name, source_identity, aws_request_id,"
                              " execution_id, prev_hash, hash) VALUES (1, '2026-01-01 00:00:00+00:00', 'x', 'y', '',"
                              " '', '[]', '', '', '{}', '', '', '', '', '', '" + "0" * 64 + "', '" + "a" * 64 + "')",
    "automations_auditdigest": "(number, last_sequence, document, recorded_at)"
                               " VALUES (1, 1, '{}', '2026-01-01 00:00:00+00:00')",
    "automations_auditarchivemanifest": "(first_sequence, last_sequence, document, recorded_at)"
                                        " VALUES (1, 1, '{}', '2026-01-01 00:00:00+00:00')",
}


class FreshDatabase:
    """An empty database of the given vendor, outside the test database, migrated by a real `manage.py migrate`."""

    def __init__(self, vendor: str, tmp_path: Path):
        self.vendor = vendor
        if vendor == "sqlite":
            self.path = tmp_path / "fresh.sqlite3"
            self.url = f"sqlite:///{self.path}"
        else:
            base = settings.DATABASES["default"]
            require_postgres("a second PostgreSQL database migrated from zero")
            self.params = {"host": base["HOST"] or "127.0.0.1", "port": base["PORT"] or 5432, "user": base["USER"],
                           "password": base["PASSWORD"] or None}
            self.name = f"{connection.settings_dict['NAME']}_fresh_{secrets.token_hex(3)}"[:63]
            with self._pg("postgres") as admin:
                admin.execute(f'CREATE DATABASE "{self.name}"')
            password = f":{base['PASSWORD']}" if base["PASSWORD"] else ""
            self.url = f"postgres://{base['USER']}{password}@{self.params['host']}:{self.params['port']}/{self.name}"

    def _pg(self, dbname: str):
        import psycopg

        return psycopg.connect(dbname=dbname, autocommit=True, **self.params)

    def migrate(self, **extra_env: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "DATABASE_URL": self.url, "DJANGO_SETTINGS_MODULE": "portal.settings",
               "LOG_LEVEL": "WARNING", **extra_env}
        return subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)

    def execute(self, statement: str) -> None:
        if self.vendor == "sqlite":
            with sqlite3.connect(self.path) as db:
                db.execute(statement)
        else:
            with self._pg(self.name) as db:
                db.execute(statement)

    def count(self, table: str) -> int:
        if self.vendor == "sqlite":
            with sqlite3.connect(self.path) as db:
                return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        with self._pg(self.name) as db:
            return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def refusal(self, statement: str) -> str:
        errors = (sqlite3.DatabaseError,) if self.vendor == "sqlite" else (__import__("psycopg").Error,)
        try:
            self.execute(statement)
        except errors as error:
            return str(error)
        pytest.fail(f"the database accepted: {statement}")

    def drop(self):
        if self.vendor == "postgresql":
            with self._pg("postgres") as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database(request, tmp_path):
    database = FreshDatabase(request.param, tmp_path)
    yield database
    database.drop()


def test_a_database_migrated_from_zero_refuses_update_delete_and_truncate(fresh_database):
    result = fresh_database.migrate()
    assert result.returncode == 0, result.stdout + result.stderr
    for table, values in GUARDED.items():
        fresh_database.execute(f"INSERT INTO {table} {values}")
        assert "append-only" in fresh_database.refusal(f"UPDATE {table} SET last_sequence = 2"
                                                       if table != "automations_auditevent"
                                                       else f"UPDATE {table} SET action = 'edited'")
        assert "append-only" in fresh_database.refusal(f"DELETE FROM {table}")
        if fresh_database.vendor == "postgresql":  # SQLite has no TRUNCATE (DELETE without WHERE is refused above)
            assert "append-only" in fresh_database.refusal(f"TRUNCATE {table}")
        assert fresh_database.count(table) == 1


def test_migrate_fails_loudly_when_a_guard_is_missing(fresh_database):
    assert fresh_database.migrate().returncode == 0
    if fresh_database.vendor == "sqlite":
        fresh_database.execute("DROP TRIGGER audit_event_no_delete")
        missing = "audit_event_no_delete"
    else:
        fresh_database.execute("ALTER TABLE automations_auditevent DISABLE TRIGGER audit_event_no_truncate")
        missing = "audit_event_no_truncate"
    result = fresh_database.migrate()
    assert result.returncode != 0
    assert "append-only guards" in result.stderr and missing in result.stderr


def test_migrate_grants_the_application_role_only_after_the_guard_check_passes(tmp_path):
    """apps.py connects two post_migrate receivers: the guard check, then the role grants (audit.roles)."""
    database = FreshDatabase("postgresql", tmp_path)
    role = f"delegate_app_test_{secrets.token_hex(4)}"
    with database._pg("postgres") as admin:
        admin.execute(f"CREATE ROLE {role} NOLOGIN")

    def may(table: str, privilege: str) -> bool:
        with database._pg(database.name) as db:
            return db.execute("SELECT has_table_privilege(%s, %s, %s)", [role, table, privilege]).fetchone()[0]

    try:
        result = database.migrate(DELEGATE_DB_APP_ROLE=role)
        assert result.returncode == 0, result.stdout + result.stderr
        assert may("automations_team", "UPDATE") and may("automations_auditevent", "INSERT")
        assert not may("automations_auditevent", "UPDATE") and not may("automations_auditevent", "TRUNCATE")

        # A migrate the guard check refuses grants nothing.
        database.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        database.execute("ALTER TABLE automations_auditevent DISABLE TRIGGER audit_event_no_truncate")
        result = database.migrate(DELEGATE_DB_APP_ROLE=role)
        assert result.returncode != 0 and "append-only guards" in result.stderr
        assert not may("automations_team", "UPDATE") and not may("automations_auditevent", "INSERT")
    finally:
        database.drop()
        with database._pg("postgres") as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def refused(statement: str) -> str:
    with pytest.raises(DatabaseError) as error, transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(statement)
    return str(error.value)


@pytest.mark.django_db
def test_the_application_role_is_refused_by_postgresql():
    require_postgres("database roles")
    role = f"delegate_app_test_{secrets.token_hex(4)}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} NOLOGIN")
    try:
        call_command("db_roles", "--grant", "--app", role, stdout=io.StringIO())
        seed_chain(2)
        with connection.cursor() as cursor:
            cursor.execute(f"SET ROLE {role}")
        try:
            with transaction.atomic():  # the runtime's INSERT and SELECT work
                audit.record(action="test.as_application_role", actor=None)
            for table in GUARDED:
                for statement in (f"UPDATE {table} SET id = id", f"DELETE FROM {table}", f"TRUNCATE {table}"):
                    assert f"permission denied for table {table}" in refused(statement), statement
                assert "must be owner of table" in refused(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            assert "must be owner of relation automations_auditevent" in refused(
                "DROP TRIGGER audit_event_no_update_delete ON automations_auditevent")
            with connection.cursor() as cursor:
                cursor.execute("UPDATE automations_team SET name = name")  # other tables: normal runtime rights
                cursor.execute("SELECT count(*) FROM pg_class WHERE relowner = current_user::regrole")
                assert cursor.fetchone()[0] == 0, "the application role owns objects"
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET ROLE")
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP OWNED BY {role}")
            cursor.execute(f"DROP ROLE {role}")


def test_db_roles_prints_the_two_roles():
    out = io.StringIO()
    call_command("db_roles", "--sql", "--owner", "delegate_owner", "--app", "delegate_app", stdout=out)
    text = out.getvalue()
    assert "CREATE ROLE delegate_owner" in text and "CREATE ROLE delegate_app" in text
    assert "ALTER DATABASE" in text and "OWNER TO delegate_owner" in text
    grants = io.StringIO()
    call_command("db_roles", "--sql", "--grants-only", "--app", "delegate_app", stdout=grants)
    for table in GUARDED:
        assert f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {table} FROM delegate_app" in grants.getvalue()
