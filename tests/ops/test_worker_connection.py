"""Issue 19: a worker keeps its database connection from task to task (Celery's Django fixup
closed it around every task), and nothing session-scoped outlives a task on it."""
import psycopg
import pytest
from django.conf import settings
from django.db import connection

from automations import locks, tasks
from tests.conftest import require_postgres

KEY = 0x5445_5354_0000_0001


def test_celery_is_told_to_keep_the_connection():
    from portal.celery import app

    assert app.conf.get("CELERY_DB_REUSE_MAX") == settings.CELERY_DB_REUSE_MAX >= 100


@pytest.mark.django_db(transaction=True)
def test_a_kept_connection_is_reused_and_a_forgotten_session_lock_released():
    require_postgres("advisory locks seen from another connection")
    connection.ensure_connection()
    kept = connection.connection
    tasks._database_ready(task=None)  # task_prerun: a young, healthy connection stays
    assert connection.connection is kept
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [KEY])  # a lock a task forgot to release
    tasks._unbind_request_id(task=None)  # task_postrun
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    with psycopg.connect(**{k: v for k, v in params.items() if k in ("host", "port", "user", "password", "dbname")}) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [KEY]).fetchone()[0] is True
        other.execute("SELECT pg_advisory_unlock(%s)", [KEY])


@pytest.mark.django_db(transaction=True)
def test_a_connection_past_its_age_is_replaced(settings):
    require_postgres("the worker's PostgreSQL connection")
    connection.ensure_connection()
    kept = connection.connection
    connection.close_at = 0  # CONN_MAX_AGE ran out
    tasks._database_ready(task=None)
    assert connection.connection is not kept
    locks.release_session_locks()  # harmless with no connection open
