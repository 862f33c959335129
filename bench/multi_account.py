"""One multi-account request over the sandbox's organization: time, AWS calls, sync calls, page time.

    .venv/bin/python bench/multi_account.py [--regions 4] [--concurrency 12] [--sleep 2]

In one process: a SQLite database of its own (a temporary file, migrated), the sandbox (its seeded
organization: 3 OUs, 12 member accounts) and Delegate's services called directly (submit, approve,
dispatch, status sync every --interval seconds), as the worker and beat would. The runbook reads
each account's instances and sleeps --sleep seconds (time scale 1), so every location takes a while.
Prints: the time from the approval to every child terminal, the Start and Describe calls used
(and throttles: the sandbox enforces 1 Start/s and 3 Describe/s per Region here), the status-sync
calls per cycle while running and once done, and the request page's server time (Django's test
client in process). The organization has 12 members, so the run covers 12 × --regions locations,
not the 200 of issue 18; docs/benchmarks.md records figures by hand with the command.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB = Path(tempfile.mkdtemp(prefix="delegate-bench-ma-")) / "bench.sqlite3"
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "portal.settings", "DATABASE_URL": f"sqlite:///{DB}", "DJANGO_DEBUG": "false",
    "LOG_LEVEL": "WARNING", "REDIS_URL": "", "AWS_ACCESS_KEY_ID": "AKIDBENCHBENCH000000",
    "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_EC2_METADATA_DISABLED": "true",
    "DELEGATE_LOGIN_LOCKOUT": "false", "DELEGATE_VAR_DIR": str(DB.parent),
})
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("DELEGATE_AUDIT_DIGEST_KEY", "ed25519:" + base64.b64encode(os.urandom(32)).decode())
REGIONS = ["eu-west-1", "us-east-1", "eu-central-1", "us-west-2", "ap-southeast-2", "eu-north-1"]
DESCRIBES = ("DescribeAutomationExecutions", "DescribeAutomationStepExecutions")


def runbook(seconds: int) -> dict:
    return {
        "schemaVersion": "0.3", "description": "Reads this account's instances, then waits.", "parameters": {},
        "mainSteps": [
            {"name": "look", "action": "aws:executeAwsApi",
             "inputs": {"Service": "ec2", "Api": "DescribeInstances"}},
            {"name": "wait", "action": "aws:sleep", "inputs": {"Duration": f"PT{seconds}S"}},
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=4)
    parser.add_argument("--concurrency", default="12")
    parser.add_argument("--sleep", type=int, default=2)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between status-sync cycles")
    args = parser.parse_args()

    from sandbox import Sandbox
    from sandbox import world as org

    sb = Sandbox(port=0, time_scale=1.0).start()
    os.environ["AWS_ENDPOINT_URL"] = sb.url
    sb.faults.rate_limits = {"StartAutomationExecution": 1.0, "DescribeAutomationExecutions": 3.0,
                             "DescribeAutomationStepExecutions": 3.0}
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.contrib.auth import get_user_model

    call_command("migrate", verbosity=0)
    from automations import services
    from automations.models import (Account, LocationExecution, Membership, Runbook, RunbookVersion, Team,
                                    TeamLocationGrant, TeamRunbook)
    from automations.runbooks import content_hash, identity_of, load_document, parse_parameters, step_summary

    regions = REGIONS[:args.regions]
    account = Account.objects.create(account_id=sb.state.account_id, name="central", regions=regions,
                                     dispatch_role_arn=f"arn:aws:iam::{sb.state.account_id}:role/DelegateDispatch",
                                     automation_role_arn=f"arn:aws:iam::{sb.state.account_id}:role/DelegateAutomation")
    team = Team.objects.create(name="platform")
    users = get_user_model().objects
    alice, bob = users.create_user("alice", password="x"), users.create_user("bob", password="x")
    Membership.objects.create(team=team, user=alice, role="member")
    Membership.objects.create(team=team, user=bob, role="lead")
    text = json.dumps(runbook(args.sleep))
    name = f"Bench-Fleet-{uuid.uuid4().hex[:6]}"
    import boto3

    boto3.client("ssm", region_name="eu-west-1", endpoint_url=sb.url).create_document(
        Name=name, Content=text, DocumentType="Automation", DocumentFormat="JSON")
    document = load_document(text, "JSON")
    book = Runbook.objects.create(account=account, region="eu-west-1", name=name, owner="Self", owner_kind="self",
                                  default_version="1", latest_version="1", allow_unmanaged_identity=True)
    version = RunbookVersion.objects.create(
        runbook=book, version="1", content=text, document_format="JSON", content_hash=content_hash(text),
        ssm_hash=content_hash(text), ssm_hash_type="Sha256", identity=identity_of(document),
        parameters=parse_parameters(document), steps=step_summary(document))
    TeamRunbook.objects.create(team=team, runbook=book, approvals_required=1, justification_required=False)
    for ou in org.OU_IDS.values():
        TeamLocationGrant.objects.create(team=team, account=account, target_id=ou)

    request = services.request_submit(actor=alice, team=team, runbook_id=book.pk, parameters={},
                                      location_targets=sorted(org.OU_IDS.values()), location_regions=regions,
                                      location_max_concurrency=args.concurrency, location_max_errors="0")
    total = request.location_count
    services.request_approve(request=request, actor=bob)
    sb.calls.clear()
    approved = time.monotonic()
    print(f"{total} locations ({len(request.location_accounts)} accounts x {len(regions)} Regions), "
          f"concurrency {args.concurrency}, runbook sleeps {args.sleep}s")
    print("dispatch:", services.request_dispatch(request_id=request.pk))
    per_cycle, done_at = [], None
    while True:
        before = len([c for c in sb.calls.snapshot() if c["operation"] in DESCRIBES])
        services.execution_statuses_sync()
        after = len([c for c in sb.calls.snapshot() if c["operation"] in DESCRIBES])
        per_cycle.append(after - before)
        children = list(LocationExecution.objects.filter(request=request).values_list("aws_status", flat=True))
        finished = sum(1 for s in children if s in ("Success", "Failed", "Cancelled", "TimedOut"))
        if done_at is None and finished == total:
            done_at = time.monotonic()
        request.refresh_from_db()
        if request.is_terminal and done_at is not None:
            break
        if time.monotonic() - approved > 600:
            raise SystemExit("gave up after 600 s")
        time.sleep(args.interval)
    calls = sb.calls.snapshot()
    starts = [c for c in calls if c["operation"] == "StartAutomationExecution"]
    describes = [c for c in calls if c["operation"] in DESCRIBES]
    throttles = [c for c in calls if c["error"] in ("ThrottlingException", "Throttling")]
    before = len(describes)
    services.execution_statuses_sync()
    idle = len([c for c in sb.calls.snapshot() if c["operation"] in DESCRIBES]) - before
    print(f"approval -> all children terminal (seen by sync every {args.interval:g}s): {done_at - approved:.1f} s; "
          f"request {request.status}")
    print(f"Start calls: {len(starts)}; Describe calls: {len(describes)} "
          f"(DescribeAutomationExecutions {sum(c['operation'] == DESCRIBES[0] for c in describes)}, "
          f"DescribeAutomationStepExecutions {sum(c['operation'] == DESCRIBES[1] for c in describes)}); "
          f"throttles: {len(throttles)}")
    print(f"status-sync Describe calls per cycle while running: {per_cycle}; after the end: {idle}")
    client = Client()
    client.force_login(alice)
    times = []
    for _ in range(15):
        started = time.perf_counter()
        response = client.get(f"/requests/{request.pk}/")
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    print(f"request page with the {total}-location matrix: median {statistics.median(times):.1f} ms, "
          f"max {max(times):.1f} ms (server time, in process, SQLite)")
    sb.stop()


if __name__ == "__main__":
    main()
