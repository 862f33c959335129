"""One multi-account request at issue 18's scale in the sandbox: time, AWS calls, sync calls, page time.

    nice -n 19 .venv/bin/python bench/multi_account.py [--accounts 50] [--regions 4] [--instances 20] \
        [--concurrency 20] [--sleep 2] [--fail N] [--baseline REV] [--rounds 15]
    DELEGATE_BENCH_MA_DB=/tmp/delegate-bench-ma-…/bench.sqlite3 \
        nice -n 19 .venv/bin/python bench/multi_account.py --pages-only [--baseline REV] [--rounds 15]

In one process: a SQLite database of its own (a temporary file, migrated), the sandbox, and
Delegate's services called directly (submit, approve, dispatch, status sync every --interval
seconds), as the worker and beat would. The sandbox's seeded organization (3 OUs, 12 members, the
demo's) is left alone; the bench adds an OU `Bench` of --accounts new member accounts through the
sandbox's Organizations API (world.add_member_accounts: CreateOrganizationalUnit, CreateAccount,
MoveAccount; then in each member IAM CreateRole for the execution role and --instances instances
per Region through EC2 RunInstances), grants that OU to the team and runs one request over it.
The runbook reads each account's instances and sleeps --sleep seconds (time scale 1).

Prints: the time from the approval to every child terminal, the Start and Describe calls used
(and throttles: the sandbox enforces AWS's 1 Start/s and 3 Describe/s per Region here), the
status-sync Describe calls per cycle while running and once done, and the request page's server
time and SQL statements (Django's test client in a process of its own, DEBUG off; with
--baseline REV the page is also served by revision REV, checked out in a temporary git worktree,
asked alternately round after round against the same database, so a noisy machine slows both alike).
"""
from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The page-serving processes (--serve) inherit the run's database through the environment.
DB = Path(os.environ.get("DELEGATE_BENCH_MA_DB") or Path(tempfile.mkdtemp(prefix="delegate-bench-ma-")) / "bench.sqlite3")
os.environ["DELEGATE_BENCH_MA_DB"] = str(DB)
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


def serve(tree: str) -> None:
    """One code tree answering "GET <path>" lines with "<ms> <cpu ms> <statements>" (stdin/stdout)."""
    sys.path.insert(0, tree)  # ahead of the editable install's finder: this tree's code
    os.chdir(tree)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="alice"))
    print("ready", flush=True)
    for line in sys.stdin:
        path = line.split(" ", 1)[1].strip()
        captured = []  # a counting visit, not timed (an execute wrapper: the connection closes per request)

        def count(execute, sql, params, many, context):
            captured.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            assert client.get(path).status_code == 200
        wall, cpu = time.perf_counter(), time.process_time()
        response = client.get(path)
        wall, cpu = (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000
        assert response.status_code == 200
        print(f"{wall:.2f} {cpu:.2f} {len(captured)} {len(response.content)}", flush=True)


class Tree:
    def __init__(self, name: str, path: Path):
        self.name = name
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", str(path)], cwd=path, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=os.environ.copy())
        assert self.process.stdout.readline().strip() == "ready"

    def visit(self, path: str) -> tuple[float, float, int, int]:
        self.process.stdin.write(f"GET {path}\n")
        self.process.stdin.flush()
        wall, cpu, statements, size = self.process.stdout.readline().split()
        return float(wall), float(cpu), int(statements), int(size)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def measure_pages(paths: list[str], baseline: str | None, rounds: int) -> None:
    baseline_dir = None
    trees = [Tree("working tree", ROOT)]
    try:
        if baseline:
            baseline_dir = Path(tempfile.mkdtemp(prefix="delegate-baseline-")) / "tree"
            subprocess.run(["git", "worktree", "add", "--detach", str(baseline_dir), baseline], cwd=ROOT,
                           check=True, capture_output=True)
            trees.append(Tree(f"baseline {baseline}", baseline_dir))
        for path in paths:
            seen = {tree.name: [] for tree in trees}
            for _ in range(rounds):
                for tree in trees:
                    seen[tree.name].append(tree.visit(path))
            for tree in trees:
                walls, cpus = [v[0] for v in seen[tree.name]], [v[1] for v in seen[tree.name]]
                statements, size = seen[tree.name][0][2], seen[tree.name][0][3]
                print(f"  {path} [{tree.name}]: median {statistics.median(walls):.1f} ms wall "
                      f"(p90 {sorted(walls)[int(0.9 * (len(walls) - 1))]:.1f}), median {statistics.median(cpus):.1f} ms "
                      f"CPU, {statements} SQL statements, {size // 1024} KiB")
    finally:
        for tree in trees:
            tree.close()
        if baseline_dir is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline_dir)], cwd=ROOT, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=50, help="member accounts in the bench's OU (1-50)")
    parser.add_argument("--regions", type=int, default=4)
    parser.add_argument("--instances", type=int, default=20, help="instances per account and Region")
    parser.add_argument("--concurrency", default="20", help="TargetLocationMaxConcurrency")
    parser.add_argument("--sleep", type=int, default=2)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between status-sync cycles")
    parser.add_argument("--fail", type=int, default=0,
                        help="locations made to fail (the first N accounts in the second Region: sandbox fault "
                             "fail_locations); TargetLocationMaxErrors is set to N so the others still run")
    parser.add_argument("--baseline", help="git revision whose request page is measured alongside")
    parser.add_argument("--rounds", type=int, default=15, help="page visits per tree")
    parser.add_argument("--pages-only", action="store_true",
                        help="measure the pages of request 1 in the database named by DELEGATE_BENCH_MA_DB "
                             "(a finished run's, kept in its temporary folder) without a new run")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.pages_only:
        print(f"pages of request 1 in {DB} ({args.rounds} visits):")
        return measure_pages(["/requests/1/", "/requests/1/?failed_only=1", "/api/v1/requests/1/"],
                             args.baseline, args.rounds)

    from sandbox import Sandbox
    from sandbox import world as org

    sb = Sandbox(port=0, time_scale=1.0).start()
    os.environ["AWS_ENDPOINT_URL"] = sb.url
    regions = REGIONS[:args.regions]
    seeding = time.monotonic()
    ou, members = org.add_member_accounts(sb, "Bench", args.accounts, regions, args.instances)
    print(f"sandbox: OU {ou} with {len(members)} new member accounts, execution role and {args.instances} "
          f"instances per Region each ({time.monotonic() - seeding:.0f} s to create)")
    sb.faults.fail_locations = {f"{member}:{regions[1 % len(regions)]}" for member in sorted(members)[:args.fail]}
    sb.faults.rate_limits = {"StartAutomationExecution": 1.0, "DescribeAutomationExecutions": 3.0,
                             "DescribeAutomationStepExecutions": 3.0}
    import django

    django.setup()
    from django.core.management import call_command
    from django.contrib.auth import get_user_model

    call_command("migrate", verbosity=0)
    from automations import services
    from automations.models import (Account, LocationExecution, Membership, Runbook, RunbookVersion, Team,
                                    TeamLocationGrant, TeamRunbook)
    from automations.runbooks import content_hash, identity_of, load_document, parse_parameters, step_summary

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
    RunbookVersion.objects.create(
        runbook=book, version="1", content=text, document_format="JSON", content_hash=content_hash(text),
        ssm_hash=content_hash(text), ssm_hash_type="Sha256", identity=identity_of(document),
        parameters=parse_parameters(document), steps=step_summary(document))
    TeamRunbook.objects.create(team=team, runbook=book, approvals_required=1, justification_required=False)
    TeamLocationGrant.objects.create(team=team, account=account, target_id=ou)

    request = services.request_submit(actor=alice, team=team, runbook_id=book.pk, parameters={},
                                      location_targets=[ou], location_regions=regions,
                                      location_max_concurrency=args.concurrency, location_max_errors=str(args.fail))
    total = request.location_count
    services.request_approve(request=request, actor=bob)
    sb.calls.clear()
    approved = time.monotonic()
    print(f"{total} locations ({len(request.location_accounts)} accounts x {len(regions)} Regions, "
          f"{args.instances} instances each), concurrency {args.concurrency}, {args.fail} made to fail, "
          f"runbook sleeps {args.sleep}s")
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
        if time.monotonic() - approved > 1200:
            raise SystemExit("gave up after 1200 s")
        time.sleep(args.interval)
    calls = sb.calls.snapshot()
    starts = [c for c in calls if c["operation"] == "StartAutomationExecution"]
    describes = [c for c in calls if c["operation"] in DESCRIBES]
    throttles = [c for c in calls if c["error"] in ("ThrottlingException", "Throttling")]
    before = len(describes)
    services.execution_statuses_sync()
    idle = len([c for c in sb.calls.snapshot() if c["operation"] in DESCRIBES]) - before
    statuses = collections.Counter(LocationExecution.objects.filter(request=request).values_list("aws_status", flat=True))
    print(f"approval -> all children terminal (seen by sync every {args.interval:g}s): {done_at - approved:.1f} s; "
          f"request {request.status}; children {dict(statuses)}")
    print(f"Start calls: {len(starts)}; Describe calls: {len(describes)} "
          f"(DescribeAutomationExecutions {sum(c['operation'] == DESCRIBES[0] for c in describes)}, "
          f"DescribeAutomationStepExecutions {sum(c['operation'] == DESCRIBES[1] for c in describes)}); "
          f"throttles: {len(throttles)}")
    print(f"status-sync Describe calls per cycle while running: {per_cycle}; after the end: {idle}")
    print(f"request page with the {total}-location matrix (server time, in process, SQLite, {args.rounds} visits):")
    measure_pages([f"/requests/{request.pk}/", f"/requests/{request.pk}/?failed_only=1",
                   f"/api/v1/requests/{request.pk}/"], args.baseline, args.rounds)
    sb.stop()


if __name__ == "__main__":
    main()
