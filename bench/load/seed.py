"""Seed the load-test database: 50 teams, 550 people, 30 runbooks, 100,000 requests in every
status (with approvals and executions), then 1,000,000 chained audit events via bench/audit.py.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/delegate_bench_load \
        .venv/bin/python bench/load/seed.py [--requests 100000] [--events 1000000] [--fresh]

Small tables go through the ORM; the big ones are one INSERT ... SELECT generate_series each, so
100k requests take seconds. Refuses a database whose name lacks "bench" (as bench/audit.py does).
Everyone's password is `delegate-load`. People: user000..user499 (members, team = n % 50),
lead00..lead49 (one lead per team), auditor0..auditor4 (the auditors group).
"""
from __future__ import annotations

import argparse
import hashlib
import base64
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

# DEBUG is off here, as in production: this run's own secrets (portal/settings.py refuses to start without).
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("DELEGATE_AUDIT_DIGEST_KEY", "ed25519:" + base64.b64encode(os.urandom(32)).decode())


ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/delegate_bench_load"
URL = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
PASSWORD = "delegate-load"
TEAMS, MEMBERS, RUNBOOKS, OFFERED_PER_TEAM, AUDITORS = 50, 500, 30, 10, 5


def setup_django() -> None:
    name = urlparse(URL).path.lstrip("/")
    if "bench" not in name:
        sys.exit(f"refusing to seed {name!r}: the load database name must contain 'bench'")
    os.environ["DATABASE_URL"] = URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def ensure_database() -> None:
    import psycopg

    url = urlparse(URL)
    with psycopg.connect(url._replace(path="/postgres").geturl(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [url.path.lstrip("/")]).fetchone():
            conn.execute(f'CREATE DATABASE "{url.path.lstrip("/")}"')


def seed_people_and_catalog():
    """Users, teams, memberships, one account, 30 runbooks, 10 offered to each team."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, Permission

    from automations.models import Account, Membership, Runbook, RunbookVersion, Team, TeamRunbook
    from automations.runbooks import (
        content_hash,
        identity_of,
        load_document,
        parse_parameters,
        pattern_problems,
        step_summary,
    )

    User = get_user_model()
    hashed = make_password(PASSWORD)
    # Ids line up with bench/audit.py's actors: user{n:03d} is id n+1, lead{t:02d} is id 501+t.
    names = [f"user{n:03d}" for n in range(MEMBERS)] + [f"lead{t:02d}" for t in range(TEAMS)] \
        + [f"auditor{a}" for a in range(AUDITORS)]
    User.objects.bulk_create([User(id=i + 1, username=name, email=f"{name}@example.com", password=hashed)
                              for i, name in enumerate(names)])
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT setval(pg_get_serial_sequence('auth_user', 'id'), (SELECT max(id) FROM auth_user))")
    auditors, _ = Group.objects.get_or_create(name="auditors")
    auditors.permissions.add(Permission.objects.get(codename="view_all_requests"))
    auditors.user_set.add(*User.objects.filter(username__startswith="auditor"))

    account = Account.objects.create(
        account_id="123456789012", name="Load", regions=["eu-west-1"],
        dispatch_role_arn="arn:aws:iam::123456789012:role/DelegateDispatch",
        automation_role_arn="arn:aws:iam::123456789012:role/DelegateAutomation")
    teams = Team.objects.bulk_create([Team(name=f"team{t:02d}", display_name=f"Team {t:02d}",
                                           scope_tag_key="Team", scope_tag_value=f"team{t:02d}")
                                      for t in range(TEAMS)])
    for team in teams:
        team.accounts.add(account)
    users = {u.username: u for u in User.objects.all()}
    Membership.objects.bulk_create(
        [Membership(user=users[f"user{n:03d}"], team=teams[n % TEAMS], role="member") for n in range(MEMBERS)]
        + [Membership(user=users[f"lead{t:02d}"], team=teams[t], role="lead") for t in range(TEAMS)])

    content = (ROOT / "sandbox/documents/amazon/aws-RestartEC2Instance.json").read_text()
    document = load_document(content, "JSON")
    parameters = parse_parameters(document)
    runbooks = Runbook.objects.bulk_create([
        # Our own account's documents (not AWS-*), so bench/pages.py can create them in the sandbox: the
        # approver's page reads each version's SSM hash (DescribeDocument).
        Runbook(account=account, region="eu-west-1", name=f"Load-Runbook{r:02d}", owner="123456789012",
                owner_kind="self",
                display_name=f"Runbook {r:02d}", description=f"Restarts instances (load test runbook {r}).",
                category=("EC2", "Patching", "Storage")[r % 3], default_version="1", latest_version="1")
        for r in range(RUNBOOKS)])
    versions = RunbookVersion.objects.bulk_create([
        RunbookVersion(runbook=runbook, version="1", content=content, document_format="JSON",
                       content_hash=content_hash(content), ssm_hash=hashlib.sha256(content.encode()).hexdigest(),
                       ssm_hash_type="Sha256", identity=identity_of(document), parameters=parameters, steps=step_summary(document),
                       problems=pattern_problems(parameters))
        for runbook in runbooks])
    TeamRunbook.objects.bulk_create([
        TeamRunbook(team=teams[t], runbook=runbooks[(t + k) % RUNBOOKS], approvals_required=1)
        for t in range(TEAMS) for k in range(OFFERED_PER_TEAM)])
    return [t.pk for t in teams], [r.pk for r in runbooks], [v.pk for v in versions], account.pk


def existing_catalog():
    """Teams, runbooks, versions and account of an earlier seed (to re-seed only the requests)."""
    from automations.models import Account, RunbookVersion, Team

    account = Account.objects.filter(account_id="123456789012").first()
    if account is None:
        return None
    versions = list(RunbookVersion.objects.filter(runbook__account=account).order_by("runbook__name"))
    return ([t.pk for t in Team.objects.order_by("name")], [v.runbook_id for v in versions],
            [v.pk for v in versions], account.pk)


# Status by block (i / 50) % 100: 2% waiting for approval, 1% each rejected/withdrawn/expired/cancelled, 3% failed,
# 1% running, the rest succeeded. Waiting ones are recent; the rest spread over three years.
REQUESTS_SQL = """
INSERT INTO automations_automationrequest
  (id, team_id, requester_id, runbook_id, runbook_version_id, version_choice, account_id, region, parameters,
   target_parameter_name, targets, max_concurrency, max_errors, alarm_name, resources, justification, fingerprint,
   status, status_reason, client_token, created_at, approved_at, dispatched_at, finished_at,
   resource_names, document_hash, reason_code, run_as, execution_preview, location_accounts,
   location_max_concurrency, location_max_errors, location_regions, location_sources, location_targets,
   ticket_reference)
SELECT i, (%(teams)s::bigint[])[t + 1], u + 1, (%(runbooks)s::bigint[])[rb + 1], (%(versions)s::bigint[])[rb + 1],
       'default', %(account)s, 'eu-west-1',
       jsonb_build_object('InstanceId', jsonb_build_array(res), 'AutomationAssumeRole',
                          jsonb_build_array('arn:aws:iam::123456789012:role/DelegateAutomation')),
       '', '[]'::jsonb, '', '', '', jsonb_build_array(res), 'Load test request ' || i,
       md5(i::text) || md5((i + 1)::text), status, '', md5('token' || i)::uuid, created,
       CASE WHEN status IN ('submitted', 'rejected', 'withdrawn', 'expired') THEN NULL ELSE created + interval '5 minutes' END,
       CASE WHEN status IN ('succeeded', 'failed', 'running', 'cancelled') THEN created + interval '6 minutes' END,
       CASE WHEN status IN ('submitted', 'running') THEN NULL ELSE created + interval '9 minutes' END,
       '{}'::jsonb, '', '', '', '{}'::jsonb, '[]'::jsonb, '', '', '[]'::jsonb, '{}'::jsonb, '[]'::jsonb, ''
FROM (
  SELECT i, u, u %% %(n_teams)s AS t, ((u %% %(n_teams)s) + (b %% %(offered)s)) %% %(n_runbooks)s AS rb,
         'i-' || lpad(to_hex((u %% %(n_teams)s) * 400 + (b %% 400)), 17, '0') AS res,
         CASE WHEN b %% 100 < 2 THEN 'submitted' WHEN b %% 100 = 2 THEN 'rejected' WHEN b %% 100 = 3 THEN 'withdrawn'
              WHEN b %% 100 = 4 THEN 'expired' WHEN b %% 100 < 8 THEN 'failed' WHEN b %% 100 = 8 THEN 'running'
              WHEN b %% 100 = 9 THEN 'cancelled' ELSE 'succeeded' END AS status,
         CASE WHEN b %% 100 < 2 THEN now() - (i %% 1000) * interval '1 minute'
              ELSE now() - (%(n)s - i) * interval '15 minutes' END AS created
  -- u cycles through every team within each block of 50 consecutive i (19 and 50 are coprime);
  -- b, the block number, picks status, runbook and resource independently of the team.
  FROM (SELECT i, (i * 7919) %% %(n_members)s AS u, i / 50 AS b FROM generate_series(1::bigint, %(n)s::bigint) AS i) AS numbered
) AS rows
"""
APPROVALS_SQL = """
INSERT INTO automations_approval (request_id, approver_id, requester_id, fingerprint, comment, created_at)
SELECT r.id, %(n_members)s + 1 + ((r.requester_id - 1) %% %(n_teams)s), r.requester_id, r.fingerprint, 'ok', r.approved_at
FROM automations_automationrequest r WHERE r.approved_at IS NOT NULL
"""
EXECUTIONS_SQL = """
INSERT INTO automations_execution (request_id, execution_id, aws_status, current_step, steps, outputs, failure_message,
                                   executed_by, revision, started_at, ended_at)
SELECT r.id, md5('exec' || r.id)::uuid::text,
       CASE r.status WHEN 'succeeded' THEN 'Success' WHEN 'failed' THEN 'Failed' WHEN 'cancelled' THEN 'Cancelled'
                     ELSE 'InProgress' END,
       CASE WHEN r.status = 'running' THEN 'startInstances' ELSE '' END,
       jsonb_build_array(
         jsonb_build_object('name', 'stopInstances', 'action', 'aws:changeInstanceState', 'status', 'Success'),
         jsonb_build_object('name', 'startInstances', 'action', 'aws:changeInstanceState',
                            'status', CASE r.status WHEN 'succeeded' THEN 'Success' WHEN 'failed' THEN 'Failed'
                                                    WHEN 'cancelled' THEN 'Cancelled' ELSE 'InProgress' END)),
       '{}'::jsonb, CASE WHEN r.status = 'failed' THEN 'Step startInstances failed.' ELSE '' END,
       'arn:aws:sts::123456789012:assumed-role/DelegateDispatch/delegate-req-' || r.id, 1, r.dispatched_at,
       r.finished_at
FROM automations_automationrequest r WHERE r.dispatched_at IS NOT NULL
"""


def seed_requests(n: int, teams, runbooks, versions, account) -> None:
    from django.db import connection

    params = {"teams": teams, "runbooks": runbooks, "versions": versions, "account": account, "n": n,
              "n_teams": TEAMS, "n_members": MEMBERS, "n_runbooks": RUNBOOKS, "offered": OFFERED_PER_TEAM}
    with connection.cursor() as cursor:
        for label, sql in (("requests", REQUESTS_SQL), ("approvals", APPROVALS_SQL), ("executions", EXECUTIONS_SQL)):
            began = time.monotonic()
            cursor.execute(sql, params)
            print(f"seed: {cursor.rowcount:,} {label} in {time.monotonic() - began:.1f}s", flush=True)
        cursor.execute("SELECT setval(pg_get_serial_sequence('automations_automationrequest', 'id'), %s)", [n])
        cursor.execute("VACUUM ANALYZE automations_automationrequest")
        cursor.execute("VACUUM ANALYZE automations_approval")
        cursor.execute("VACUUM ANALYZE automations_execution")
        cursor.execute("ANALYZE")  # users, teams, memberships too: stale statistics pick bad plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the database first")
    args = parser.parse_args()
    name = urlparse(URL).path.lstrip("/")
    if "bench" not in name:
        sys.exit(f"refusing to seed {name!r}: the load database name must contain 'bench'")
    if args.fresh:
        import psycopg

        with psycopg.connect(urlparse(URL)._replace(path="/postgres").geturl(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    ensure_database()
    setup_django()
    from django.core.management import call_command

    from automations.models import AutomationRequest

    call_command("migrate", verbosity=0)
    if AutomationRequest.objects.exists():
        print(f"seed: {AutomationRequest.objects.count():,} requests already there (use --fresh to start over)")
    else:
        seed_requests(args.requests, *(existing_catalog() or seed_people_and_catalog()))
    # The audit engineer's seeder: 1M hash-chained events through COPY, actors aligned with ours.
    env = {**os.environ, "BENCH_DATABASE_URL": URL}
    subprocess.run([sys.executable, str(ROOT / "bench" / "audit.py"), "seed", "--events", str(args.events)],
                   env=env, check=True)


if __name__ == "__main__":
    main()
