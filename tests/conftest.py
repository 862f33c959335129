"""Shared fixtures. Tests talk to real things: PostgreSQL (CI), the sandbox over HTTP, real Redis and
Celery worker processes where a test is about workers. Under CI=true a missing service fails."""
import os
import shutil

import pytest

# Nothing in the test run may reach a real AWS account: dummy credentials, sandbox endpoints.
os.environ.update({
    "AWS_ACCESS_KEY_ID": "AKIDTESTTESTTEST0000",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key-not-real",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_EC2_METADATA_DISABLED": "true",
})
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ.pop("AWS_PROFILE", None)

IN_CI = os.environ.get("CI", "").lower() == "true"
# .ci/run runs the suite twice: "sqlite" (the README's fresh-machine path) and "postgres" (everything).
# Under CI=true a leg that does not say which it is must be the PostgreSQL one: no skips at all.
CI_LEG = os.environ.get("DELEGATE_CI_LEG", "").strip().lower() or "postgres"
CI_LEGS = ("sqlite", "postgres")

# Every skip reason starts with one of these group names, so the run can end with one line that says
# what did not run and how to run it (pytest_unconfigure below).
POSTGRES_ONLY = "PostgreSQL-only"
BROWSER = "browser journeys"
SKIP_GROUPS = {
    POSTGRES_ONLY: "set DATABASE_URL=postgres://USER@127.0.0.1:5432/delegate",
    BROWSER: "install Chromium: apt-get install chromium; they also need DATABASE_URL=postgres://…",
    "redis-server": "install Redis: apt-get install redis-server",
    "AWS CLI": "pip install -e .[test]",
    "test extras": "pip install -e .[test]",
}


def require(condition: bool, what: str, group: str = "test extras") -> None:
    """Skip locally when a tool is missing; fail under CI=true (CI must not pass by skipping)."""
    if not condition:
        if IN_CI:
            pytest.fail(f"CI requires {what}")
        pytest.skip(f"{group}: needs {what}")


def on_postgres() -> bool:
    from django.conf import settings

    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def require_postgres(what: str) -> None:
    """For behaviour only PostgreSQL has (row locks between connections, SKIP LOCKED, advisory locks,
    triggers, other processes on the test database). Skips on SQLite, also on CI's SQLite leg, where
    the PostgreSQL leg runs it; the session-start guard makes sure that leg really is on PostgreSQL."""
    if on_postgres():
        return
    if IN_CI and CI_LEG != "sqlite":
        pytest.fail(f"CI requires PostgreSQL for {what}")
    pytest.skip(f"{POSTGRES_ONLY}: {what}")


def _lift_audit_guard_for_flush():
    """Transactional tests empty the database with TRUNCATE, which the audit trigger refuses.

    Lift the guard only around that harness flush (DESIGN.md); dedicated tests prove the guard.
    """
    from django.db import connection
    from django.test import TransactionTestCase

    from automations.audit import guards as audit_guards

    original = TransactionTestCase._fixture_teardown
    if getattr(original, "_delegate_wrapped", False):
        return

    def _fixture_teardown(self):
        with audit_guards.guard_lifted_for_test_teardown(connection):
            original(self)

    _fixture_teardown._delegate_wrapped = True
    TransactionTestCase._fixture_teardown = _fixture_teardown


def pytest_configure(config):
    _lift_audit_guard_for_flush()


def pytest_sessionstart(session):
    """The CI guard: a real check before any test runs (a report header can be switched off)."""
    if not IN_CI:
        return
    if CI_LEG not in CI_LEGS:
        raise pytest.UsageError(f"DELEGATE_CI_LEG={CI_LEG!r}: expected one of {', '.join(CI_LEGS)}")
    if CI_LEG == "postgres" and not on_postgres():
        raise pytest.UsageError("CI=true (PostgreSQL leg) but DATABASE_URL does not point at PostgreSQL")
    if CI_LEG == "sqlite" and on_postgres():
        raise pytest.UsageError("DELEGATE_CI_LEG=sqlite but DATABASE_URL points at PostgreSQL")


# pytest-timeout's bound for tests that start processes (the default, 300 s, is in pyproject.toml).
PROCESS_TEST_TIMEOUT = 600

# Fixtures that start other processes on the test database (or cut PostgreSQL away): a test that
# uses one is PostgreSQL-only even when nobody marked it.
POSTGRES_FIXTURES = {"worker_factory", "pg_proxy", "celery_worker_and_beat", "stack", "postgres"}


def _postgres_skip_reason(item) -> str:
    marker = item.get_closest_marker("postgres")
    what = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "PostgreSQL features")
    group = BROWSER if item.get_closest_marker("browser") else POSTGRES_ONLY
    return f"{group}: needs PostgreSQL ({what})"


def pytest_collection_modifyitems(config, items):
    """Tests marked `postgres` skip on SQLite (with the reason), and tests/browser runs last.

    Browser last: its session-scoped `celery worker -B` keeps sweeping the outbox and syncing
    statuses on the test database until the session ends, so it would dispatch other tests'
    committed requests through its own broker (tests/integration saw exactly that)."""
    for item in items:
        if (item.get_closest_marker("integration") or item.get_closest_marker("browser")) \
                and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(PROCESS_TEST_TIMEOUT))
        if POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())) and not item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.postgres(reason="other processes share the test database"))
    if not on_postgres():
        if IN_CI and CI_LEG != "sqlite":
            return  # the session-start guard refuses this run anyway
        for item in items:
            if item.get_closest_marker("postgres"):
                item.add_marker(pytest.mark.skip(reason=_postgres_skip_reason(item)))
    browser = [item for item in items if "browser" in item.path.parts]
    if browser:
        items[:] = [item for item in items if "browser" not in item.path.parts] + browser


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _skip_groups(reporter) -> dict[str, int]:
    counts: dict[str, int] = {}
    for report in reporter.stats.get("skipped", []):
        reason = _skip_reason(report)
        group = next((name for name in SKIP_GROUPS if reason.startswith(f"{name}:")), "other")
        counts[group] = counts.get(group, 0) + 1
    return counts


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """Under CI a skip is a failure, except the PostgreSQL-only ones on the SQLite leg (the
    PostgreSQL leg runs them)."""
    session.config.delegate_tests_collected = session.testscollected
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not IN_CI or reporter is None:
        return
    allowed = {POSTGRES_ONLY, BROWSER} if CI_LEG == "sqlite" else set()
    refused = [report for report in reporter.stats.get("skipped", [])
               if not any(_skip_reason(report).startswith(f"{group}:") for group in allowed)]
    if refused:
        reporter.write_line(f"CI ({CI_LEG} leg) allows no skips here; skipped:", red=True, bold=True)
        for report in refused:
            reporter.write_line(f"  {report.nodeid}: {_skip_reason(report)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config):
    """The run's last line: which groups were skipped and how to run them."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or config.option.collectonly or not getattr(config, "delegate_tests_collected", 0):
        return  # nothing ran (a usage error, --co): nothing to say
    counts = _skip_groups(reporter)
    if not counts:
        reporter.write_line("skipped: nothing")
        return
    how = {**SKIP_GROUPS, "other": "reasons listed above"}
    if on_postgres():
        how[BROWSER] = "install Chromium: apt-get install chromium"
    elif os.path.exists(os.environ.get("DELEGATE_CHROMIUM", "/usr/bin/chromium")):
        how[BROWSER] = "set DATABASE_URL=postgres://USER@127.0.0.1:5432/delegate"
    parts = [f"{count} {group} ({how[group]})" for group, count in counts.items()]
    reporter.write_line("skipped: " + ", ".join(parts), yellow=True)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """On SQLite, the test database lives in a file, not in shared-cache memory. In memory, a second
    connection (another thread) gets "database table is locked" at once instead of waiting for the
    write lock as PostgreSQL's row locks make it wait; in a file, BEGIN IMMEDIATE waits (settings)."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("sqlite") / "test_delegate.sqlite3")
        # WAL: readers never wait for the writer; durability across power loss is not a test's concern.
        database.setdefault("OPTIONS", {})["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;"


@pytest.fixture(scope="session")
def sandbox():
    """The local AWS endpoint, in this process, on a free loopback port, fast time scale."""
    from automations import aws
    from sandbox import Sandbox

    server = Sandbox(port=0, time_scale=50.0).start()
    previous = {key: os.environ.get(key) for key in ("AWS_ENDPOINT_URL",)}
    os.environ["AWS_ENDPOINT_URL"] = server.url
    aws.reset_sessions()
    yield server
    server.stop()
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    aws.reset_sessions()


@pytest.fixture
def sb(sandbox):
    """The sandbox with its fault knobs reset and its call log emptied for this test."""
    sandbox.faults.reset()
    sandbox.calls.clear()
    yield sandbox
    sandbox.faults.reset()


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # PBKDF2's deliberate slowness is for attackers, not for fixtures.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _reset_pacing(settings):
    from automations.aws import pacing

    # Tests run many dispatches back to back; pacing has its own tests.
    settings.DELEGATE_AWS_RATE_LIMITS = {"start": 1000.0, "stop": 1000.0, "read": 1000.0, "signal": 1000.0,
                                         "preview": 1000.0, "preview_read": 1000.0}
    settings.REDIS_URL = ""
    pacing.reset()
    yield
    pacing.reset()


@pytest.fixture(autouse=True)
def _reset_notification_backoff():
    """A failed notification publish makes the process skip the broker for a while; one test's
    broker trouble must not decide whether the next test's publish is even tried."""
    from automations.services import notifications

    notifications.reset_publish_backoff()
    yield
    notifications.reset_publish_backoff()


@pytest.fixture
def redis_server_binary():
    path = shutil.which("redis-server")
    require(path is not None, "redis-server on PATH", group="redis-server")
    return path


class World:
    """Two teams in one sandbox account: platform (alice member; bob, frank leads) and data
    (dave member; erin lead); carol audits. Both may run AWS-RestartEC2Instance v1."""


def seeded_instance(name: str, region: str = "eu-west-1") -> str:
    from sandbox.inventory import seeded_id

    return seeded_id("i", region, name)


@pytest.fixture
def world(db):
    from django.contrib.auth.models import Group, Permission

    from automations.models import Membership
    from tests import factories as f

    w = World()
    w.account = f.AccountFactory()
    w.platform = f.TeamFactory(name="platform")
    w.data = f.TeamFactory(name="data")
    w.alice = f.UserFactory(username="alice")
    w.bob = f.UserFactory(username="bob")
    w.frank = f.UserFactory(username="frank")
    w.dave = f.UserFactory(username="dave")
    w.erin = f.UserFactory(username="erin")
    w.carol = f.UserFactory(username="carol")
    for user, team, role in ((w.alice, w.platform, "member"), (w.bob, w.platform, "lead"),
                             (w.frank, w.platform, "lead"), (w.dave, w.data, "member"), (w.erin, w.data, "lead")):
        Membership.objects.create(user=user, team=team, role=role)
    auditors = Group.objects.create(name="auditors")
    auditors.permissions.add(Permission.objects.get(codename="view_all_requests"))
    w.carol.groups.add(auditors)
    w.version = f.RunbookVersionFactory(runbook=f.RunbookFactory(account=w.account))
    w.runbook = w.version.runbook
    w.platform_policy = f.TeamRunbookFactory(team=w.platform, runbook=w.runbook)
    w.data_policy = f.TeamRunbookFactory(team=w.data, runbook=w.runbook)
    w.web1 = seeded_instance("web-1")
    w.web2 = seeded_instance("web-2")
    w.etl1 = seeded_instance("etl-1")
    w.bastion = seeded_instance("bastion")
    return w


@pytest.fixture
def submit(world, sb):
    """Submit a restart request as alice (or `actor`) for platform's web-1 unless told otherwise."""
    from automations import services

    def _submit(actor=None, team=None, parameters=None, **kwargs):
        return services.request_submit(
            actor=actor or world.alice, team=team or world.platform, runbook_id=world.runbook.pk,
            parameters=parameters if parameters is not None else {"InstanceId": [world.web1]}, **kwargs,
        )

    return _submit


def pytest_report_header(config):
    from django.conf import settings

    database = settings.DATABASES["default"]
    engine = database["ENGINE"].rsplit(".", 1)[-1]
    where = f"{database.get('HOST') or 'local'}:{database.get('PORT') or '-'}" if engine == "postgresql" else "file"
    leg = f", CI leg {CI_LEG}" if IN_CI else ""
    return f"database: {engine} at {where}, test database derived from {database['NAME']!s}{leg}"


def remove_sandbox_documents(sandbox, prefix: str) -> None:
    """Delete our own documents named `prefix`… from the session's sandbox: a test that creates one
    must not change what the next test's catalog sync lists (the sandbox lives for the whole run)."""
    import boto3

    ssm = boto3.client("ssm", region_name="eu-west-1", endpoint_url=sandbox.url)
    names = [document["Name"]
             for page in ssm.get_paginator("list_documents").paginate(Filters=[{"Key": "Owner", "Values": ["Self"]}])
             for document in page["DocumentIdentifiers"] if document["Name"].startswith(prefix)]
    for name in names:
        ssm.delete_document(Name=name)


@pytest.fixture
def fleet_documents_removed(sandbox):
    """For tests that create Delegate-Fleet-… documents (multi-account runbooks) in the sandbox."""
    yield
    remove_sandbox_documents(sandbox, "Delegate-Fleet-")
