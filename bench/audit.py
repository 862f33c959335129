"""Audit log at a million events: seed, verify, search p95, export rate and peak memory.

    .venv/bin/python bench/audit.py all            # seed 1M (if not there yet), then every measurement
    .venv/bin/python bench/audit.py seed --events 1000000 --fresh
    .venv/bin/python bench/audit.py verify | search | export --format csv|jsonl | explain

It uses its own database (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/delegate_bench)
and refuses any database whose name lacks "bench", so it never touches the test or demo data.
Seeding streams rows through COPY while building the hash chain in the same pass (the same
canonical form and hash as automations.audit.record), so verify_audit over 1M is timed too.
The shape is realistic rather than uniform: ~500 actors in 50 teams, 20,000 resources with a
skew toward a few hot ones, 30 runbooks, 10 accounts x 3 regions, three years of timestamps,
request stories (submit, approvals, dispatch, status, outcome) mixed with logins, refusals,
probes and exports. Results go to docs/benchmarks.md by hand.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import random
import resource
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

# DEBUG is off here, as in production: this run's own secrets (portal/settings.py refuses to start without).
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("DELEGATE_AUDIT_DIGEST_KEY", "ed25519:" + base64.b64encode(os.urandom(32)).decode())


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/delegate_bench"
BENCH_URL = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)

ACTORS, TEAMS, RESOURCES, RUNBOOKS, ACCOUNTS = 500, 50, 20_000, 30, 10
REGIONS = ("eu-west-1", "us-east-1", "ap-southeast-2")
YEARS = 3


def setup_django() -> None:
    name = urlparse(BENCH_URL).path.lstrip("/")
    if "bench" not in name:
        sys.exit(f"refusing to run against {name!r}: the benchmark database name must contain 'bench'")
    os.environ["DATABASE_URL"] = BENCH_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DELEGATE_LOGIN_LOCKOUT", "false")
    import django

    django.setup()


def ensure_database() -> None:
    import psycopg

    url = urlparse(BENCH_URL)
    name = url.path.lstrip("/")
    admin = url._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


#
# Seeding
#

def _zipf_index(rng: random.Random, n: int, s: float = 1.1) -> int:
    """A skewed pick in [0, n): a few values are hot, most are rare."""
    return min(n - 1, int(n * (rng.random() ** (1 + s * 2))))


def _stories(total: int, rng: random.Random):
    """Yield (action, fields) in time order until `total` events: request stories plus everything else."""
    request_id = 0
    while True:
        roll = rng.random()
        user = _zipf_index(rng, ACTORS)
        team = user % TEAMS
        actor = {"actor_id": user + 1, "actor_name": f"user{user:03d}"}
        ip = f"10.{team}.{user % 250}.{rng.randrange(1, 250)}"
        agent = rng.choice(("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", "python-requests/2.32", "curl/8.5.0"))
        if roll < 0.08:
            yield "login.ok", {**actor, "client_ip": ip, "user_agent": agent, "details": {"method": "password"}}
            continue
        if roll < 0.09:
            yield "login.fail", {"actor_name": f"anonymous:user{user:03d}", "client_ip": ip, "user_agent": agent,
                                 "details": {"username": f"user{user:03d}"}}
            continue
        if roll < 0.095:
            yield "authz.denied", {**actor, "client_ip": ip, "user_agent": agent,
                                   "details": {"status": 404, "path": f"/api/v1/requests/{rng.randrange(1, 10**5)}/"}}
            continue
        if roll < 0.096:
            yield "audit.exported", {**actor, "client_ip": ip, "details": {"format": "csv", "filters": {}}}
            continue
        request_id += 1
        account = team % ACCOUNTS
        region = REGIONS[(team // ACCOUNTS) % len(REGIONS)]
        per_team = RESOURCES // TEAMS
        resources = sorted({f"i-{(team * per_team + _zipf_index(rng, per_team)):017x}"
                            for _ in range(rng.choice((1, 1, 1, 2, 3)))})
        context = {"team": f"team{team:02d}", "runbook": f"AWS-Runbook{_zipf_index(rng, RUNBOOKS):02d}",
                   "resources": resources, "account_id": f"{100000000000 + account:012d}", "region": region,
                   "request_id": request_id}
        lead = {"actor_id": ACTORS + team + 1, "actor_name": f"lead{team:02d}"}
        yield "request.submitted", {**context, **actor, "client_ip": ip, "user_agent": agent,
                                    "details": {"version": "1", "fingerprint": f"{request_id:064x}"}}
        if rng.random() < 0.04:
            yield "request.rejected", {**context, **lead, "details": {"comment": "not now"}}
            continue
        yield "request.approval_added", {**context, **lead, "details": {"comment": "ok", "approvals": 1, "required": 1}}
        yield "request.approved", {**context, **lead, "details": {"from": "submitted", "to": "approved"}}
        yield "dispatch.claimed", {**context, "details": {"from": "approved", "to": "dispatching"}}
        execution = f"{request_id:08x}-0000-4000-8000-{request_id:012x}"
        session = f"delegate-req-{request_id}-{actor['actor_name']}"
        aws = {"role_session_name": session, "source_identity": actor["actor_name"],
               "aws_request_id": f"{rng.getrandbits(128):032x}", "execution_id": execution}
        yield "dispatch.started", {**context, **aws, "details": {"execution_id": execution}}
        yield "execution.status_changed", {**context, "execution_id": execution,
                                           "details": {"aws_status": "InProgress", "previous_aws_status": "Pending"}}
        final = "execution.succeeded" if rng.random() < 0.9 else "execution.failed"
        yield final, {**context, "execution_id": execution, "details": {"aws_status": final.split(".")[1].title()}}


def seed(total: int, fresh: bool) -> None:
    from django.core.management import call_command
    from django.db import connection

    from automations import audit
    from automations.audit.guards import TABLE
    from automations.canonical import canonical_json
    from automations.models import AuditEvent

    call_command("migrate", verbosity=0)
    existing = AuditEvent.objects.count()
    if existing and not fresh:
        print(f"seed: {existing:,} events already there (use --fresh to start over)")
        return
    with connection.cursor() as cursor:
        if existing:
            cursor.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER audit_event_no_truncate")
            cursor.execute(f"TRUNCATE {TABLE}")
            cursor.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER audit_event_no_truncate")
        # Bulk load without secondary indexes, then build them once (what a restore does too).
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
                       "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)", [TABLE, TABLE])
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')

    rng = random.Random(7)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=365 * YEARS)
    step = dt.timedelta(days=365 * YEARS) / total
    columns = ("sequence", "occurred_at", "actor_id", "actor_name", "action", "request_id", "team", "runbook",
               "resources", "account_id", "region", "details", "client_ip", "user_agent", "role_session_name",
               "source_identity", "aws_request_id", "execution_id", "prev_hash", "hash")
    blank = {name: "" for name in columns}
    blank.update(actor_id=None, request_id=None, client_ip=None, resources=[], details={})
    prev = audit.GENESIS_HASH
    began = time.monotonic()
    connection.ensure_connection()
    raw = connection.connection
    with raw.cursor() as cursor, cursor.copy(f"COPY {TABLE} ({', '.join(columns)}) FROM STDIN") as copy:
        for sequence, (action, fields) in enumerate(_stories(total, rng), start=1):
            if sequence > total:
                break
            occurred = start + step * sequence  # monotonic, as audit.record guarantees
            row = {**blank, **fields, "sequence": sequence, "occurred_at": occurred, "action": action}
            chained = {name: row[name] for name in audit.CHAINED_FIELDS}
            digest = audit.compute_hash(prev, chained)
            copy.write_row([*(row[name] for name in columns[:8]), canonical_json(row["resources"]).decode(),
                            row["account_id"], row["region"], canonical_json(row["details"]).decode(),
                            *(row[name] for name in columns[12:18]), prev, digest])
            prev = digest
            if sequence % 200_000 == 0:
                print(f"  {sequence:,} rows, {time.monotonic() - began:.0f}s", flush=True)
    raw.commit() if not raw.autocommit else None
    loaded = time.monotonic() - began
    began = time.monotonic()
    with connection.cursor() as cursor:
        for _, definition in indexes:
            cursor.execute(definition)
    indexed = time.monotonic() - began
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {TABLE}")
    print(f"seed: {total:,} events chained and loaded in {loaded:.1f}s; {len(indexes)} indexes built in {indexed:.1f}s")
    _ensure_auditor()


def _ensure_auditor():
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench-auditor", defaults={"is_superuser": True})
    return user


#
# Measurements
#

def verify_run() -> dict:
    from automations import audit

    began = time.monotonic()
    report = audit.check_chain()
    took = time.monotonic() - began
    assert report.problem is None, report.problem
    rate = report.checked / took
    print(f"verify: {report.checked:,} events in {took:.1f}s ({rate:,.0f} events/s), chain intact")
    return {"events": report.checked, "seconds": round(took, 1), "rate": round(rate)}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _query_shapes(rng: random.Random):
    """(name, params) generators: one per auditor question, with realistic and unlucky values."""
    from automations.models import AuditEvent

    head = AuditEvent.objects.order_by("-sequence").values_list("sequence", "occurred_at")[0]
    first = AuditEvent.objects.order_by("sequence").values_list("occurred_at", flat=True)[0]
    span = (head[1] - first).total_seconds()
    hot = [f"i-{(team * (RESOURCES // TEAMS)):017x}" for team in range(5)]

    def window(hours):
        begin = first + dt.timedelta(seconds=rng.uniform(0, span - hours * 3600))
        return {"since": begin.isoformat(), "until": (begin + dt.timedelta(hours=hours)).isoformat()}

    return [
        ("newest page", dict),
        ("actor", lambda: {"actor": f"user{_zipf_index(rng, ACTORS):03d}"}),
        ("actor (rare)", lambda: {"actor": f"user{rng.randrange(400, ACTORS):03d}"}),
        ("action", lambda: {"action": rng.choice(("login.fail", "request.rejected", "authz.denied", "dispatch.started"))}),
        ("action prefix", lambda: {"action_prefix": rng.choice(("login.", "dispatch.", "request."))}),
        ("team", lambda: {"team": f"team{rng.randrange(TEAMS):02d}"}),
        ("runbook", lambda: {"runbook": f"AWS-Runbook{rng.randrange(RUNBOOKS):02d}"}),
        ("resource", lambda: {"resource": f"i-{rng.randrange(RESOURCES):017x}"}),
        ("resource (hot)", lambda: {"resource": rng.choice(hot)}),
        ("account + region", lambda: {"account_id": f"{100000000000 + rng.randrange(ACCOUNTS):012d}",
                                      "region": rng.choice(REGIONS)}),
        ("request id", lambda: {"request": rng.randrange(1, 100_000)}),
        ("aws request id", lambda: {"aws_request_id": f"{rng.getrandbits(128):032x}"}),
        ("time range (1 day)", lambda: window(24)),
        ("team + 1 week", lambda: {"team": f"team{rng.randrange(TEAMS):02d}", **window(24 * 7)}),
        ("actor + action + 30 days", lambda: {"actor": f"user{_zipf_index(rng, ACTORS):03d}", "action": "request.submitted",
                                               **window(24 * 30)}),
    ]


def search_run(iterations: int) -> dict:
    from django.db import connection, reset_queries
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(_ensure_auditor())
    rng = random.Random(11)
    results, everything = {}, []
    for name, make in _query_shapes(rng):
        api.get("/api/v1/audit/", make())  # warm this shape once (plans, caches)
        timings = []
        for _ in range(iterations):
            params = make()
            began = time.perf_counter()
            response = api.get("/api/v1/audit/", params)
            timings.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, response.content[:300]
        # Deeper pages through the cursor: same cost as the first (keyset, no OFFSET).
        results[name] = {"p50": statistics.median(timings), "p95": _percentile(timings, 0.95), "max": max(timings)}
        everything += timings
        print(f"  {name:28s} p50 {results[name]['p50']:6.1f} ms  p95 {results[name]['p95']:6.1f} ms"
              f"  max {results[name]['max']:6.1f} ms", flush=True)
    page_timings, url, params = [], "/api/v1/audit/", {"team": "team07"}
    for _ in range(50):
        began = time.perf_counter()
        body = api.get(url, params).json()
        page_timings.append((time.perf_counter() - began) * 1000)
        url, params = body["next"], None
    results["50 pages deep (team)"] = {"p50": statistics.median(page_timings), "p95": _percentile(page_timings, 0.95),
                                       "max": max(page_timings)}
    everything += page_timings
    print(f"  {'50 pages deep (team)':28s} p50 {results['50 pages deep (team)']['p50']:6.1f} ms"
          f"  p95 {results['50 pages deep (team)']['p95']:6.1f} ms")
    overall = {"p50": statistics.median(everything), "p95": _percentile(everything, 0.95), "n": len(everything)}
    print(f"search: {overall['n']} requests through the API view, p50 {overall['p50']:.1f} ms, p95 {overall['p95']:.1f} ms")
    connection.close()
    reset_queries()
    return {"shapes": results, "overall": overall}


def explain_run() -> None:
    """The plan of every query shape: each must use an index on the audit table, never a Seq Scan."""
    from django.db import connection

    from automations import selectors
    from automations.api.views import AuditPagination
    from automations.audit.search import AuditEventFilter

    rng = random.Random(5)
    user = _ensure_auditor()
    bad = []
    for name, make in _query_shapes(rng):
        filtered = AuditEventFilter(make(), queryset=selectors.audit_events_visible_to(user)).qs
        page = filtered.order_by(*[f"-{AuditPagination.ordering.lstrip('-')}"])[:101]
        sql, params = page.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
        plan = plan if isinstance(plan, list) else json.loads(plan)
        nodes = []

        def walk(node):
            nodes.append(f"{node['Node Type']}{' on ' + node['Index Name'] if 'Index Name' in node else ''}")
            for child in node.get("Plans", []):
                walk(child)

        walk(plan[0]["Plan"])
        seq = [n for n in nodes if n.startswith("Seq Scan")]
        bad += [name] if seq else []
        print(f"  {name:28s} {plan[0]['Execution Time']:7.2f} ms  {' > '.join(nodes)}")
    print("explain: no sequential scans" if not bad else f"explain: SEQ SCAN in {bad}")


def export_run(fmt: str) -> dict:
    from rest_framework.test import APIRequestFactory, force_authenticate

    from automations.api.views import AuditExportApi

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    request = APIRequestFactory().get("/api/v1/audit/export/", {"format": fmt})
    force_authenticate(request, user=_ensure_auditor())
    began = time.monotonic()
    response = AuditExportApi.as_view()(request)
    rows = size = 0
    for chunk in response.streaming_content:
        size += len(chunk)
        rows += chunk.count(b"\n")
    took = time.monotonic() - began
    rows -= 1 if fmt == "csv" else 0  # the header line
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rate = rows / took
    print(f"export {fmt}: {rows:,} rows, {size / 2**20:,.0f} MiB in {took:.1f}s = {rate:,.0f} rows/s;"
          f" peak RSS {peak:.0f} MB (after start-up {baseline:.0f} MB)")
    return {"rows": rows, "seconds": round(took, 1), "rate": round(rate), "peak_mb": round(peak), "baseline_mb": round(baseline)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("all", "seed", "verify", "search", "explain", "export"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    args = parser.parse_args()
    ensure_database()
    if args.command == "all":
        # Each phase in its own process, so the export's peak memory is the export's alone.
        me = [sys.executable, __file__]
        subprocess.run([*me, "seed", "--events", str(args.events), *(["--fresh"] if args.fresh else [])], check=True)
        for step in (["verify"], ["explain"], ["search", "--iterations", str(args.iterations)],
                     ["export", "--format", "csv"], ["export", "--format", "jsonl"]):
            subprocess.run([*me, *step], check=True)
        return
    setup_django()
    if args.command == "seed":
        seed(args.events, args.fresh)
    elif args.command == "verify":
        verify_run()
    elif args.command == "search":
        search_run(args.iterations)
    elif args.command == "explain":
        explain_run()
    elif args.command == "export":
        export_run(args.format)


if __name__ == "__main__":
    main()
