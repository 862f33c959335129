"""Dispatch against the sandbox at AWS's real quotas: latency, sustained rate, calls per dispatch and poll.

    .venv/bin/python bench/dispatch.py                      # all three measurements, defaults below
    .venv/bin/python bench/dispatch.py --paced 20 --burst 60 --running 95 --workers 2
    .venv/bin/python bench/dispatch.py --baseline REV --paced 20 --burst 0 --running 0   # side by side

Real processes, as in production: PostgreSQL (its own database, BENCH_DISPATCH_DATABASE_URL,
default postgres://postgres@127.0.0.1:5432/delegate_bench_dispatch, dropped and recreated each
run; the name must contain "bench"), a redis-server of its own on a free port, `celery -A portal
worker` processes, and the sandbox in this process with AWS's quotas switched on:
StartAutomationExecution 1 call/s and Describe* 3 calls/s (the sandbox throttles beyond that),
100 running automations. Delegate paces itself at the same rates (DELEGATE_RATE_*).

1. paced:  approvals arriving one every --interval seconds (below the Start quota): latency from
           the approval's commit to the sandbox receiving the Start call that succeeded, p50/p99.
           The requests are submitted first (an approver decides later, as in real use; a submit
           asks AWS for an execution preview, 1 call/s); each tree's own code submits and approves
           them (a child process per tree) and each tree has its own workers and broker database
           (the pacing schedule is shared, as AWS's quotas are). With --baseline REV, REV (checked
           out in a temporary git worktree) and the working tree take turns, approval by approval,
           on the same database and sandbox, and both are printed with the ratio. The working
           tree's workers log each dispatch's phases (ms), printed as medians.
2. burst:  --burst approvals committed at once: the sustained Start rate (should sit at the
           1 call/s quota, no faster), throttles received, queueing latency, and STS/SSM/EC2
           calls per dispatch.
3. poll:   --running executions in flight: calls per status-sync cycle, the first one (every
           execution is news) and a steady one (nothing changed), STS included.
Prints the figures; docs/benchmarks.md records them by hand with the command.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

# DEBUG is off here, as in production: this run's own secrets (portal/settings.py refuses to start without).
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("DELEGATE_AUDIT_DIGEST_KEY", "ed25519:" + base64.b64encode(os.urandom(32)).decode())


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/delegate_bench_dispatch"
BENCH_URL = os.environ.get("BENCH_DISPATCH_DATABASE_URL", DEFAULT_URL)
START = "StartAutomationExecution"

SLEEP_RUNBOOK = """\
schemaVersion: "0.3"
description: Waits. The benchmark's long-running automation.
assumeRole: "{{ AutomationAssumeRole }}"
parameters:
  AutomationAssumeRole:
    type: AWS::IAM::Role::Arn
    default: ""
mainSteps:
  - name: wait
    action: aws:sleep
    inputs:
      Duration: PT%(seconds)dS
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def recreate_database() -> None:
    import psycopg

    url = urlparse(BENCH_URL)
    name = url.path.lstrip("/")
    if "bench" not in name:
        sys.exit(f"refusing to run against {name!r}: the benchmark database name must contain 'bench'")
    with psycopg.connect(url._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def approver(tree: str) -> None:
    """The child that submits and approves with one tree's code (web side), answering JSON lines:
    {"submit": n} -> {"ids": [...]}; {"approve": id} -> {"seconds": the approval service call}."""
    sys.path.insert(0, tree)  # ahead of the editable install's finder: this tree's code
    os.chdir(tree)
    import django

    django.setup()
    import automations
    from django.contrib.auth import get_user_model

    from automations import services
    from automations.models import AutomationRequest, Runbook, Team
    from sandbox.inventory import seeded_id

    assert automations.__file__.startswith(tree), (automations.__file__, tree)
    users = get_user_model().objects
    alice, bob = users.get(username="alice"), users.get(username="bob")
    team = Team.objects.get(name="platform")
    runbook = Runbook.objects.exclude(name="Delegate-BenchSleep").order_by("pk").first()
    instance = seeded_id("i", "eu-west-1", "web-1")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        if "submit" in ask:
            ids = [services.request_submit(actor=alice, team=team, runbook_id=runbook.pk,
                                           parameters={"InstanceId": [instance]}).pk for _ in range(ask["submit"])]
            print(json.dumps({"ids": ids}), flush=True)
        else:
            request = AutomationRequest.objects.get(pk=ask["approve"])
            started = time.perf_counter()
            services.request_approve(request=request, actor=bob)  # commits, then publishes
            print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)


class Tree:
    """One code tree in the run: its approver child, its workers and its broker database."""

    def __init__(self, label: str, path: Path, broker_db: int):
        self.label, self.path, self.broker_db = label, path, broker_db
        self.child: subprocess.Popen | None = None
        self.logs: list[Path] = []

    def env(self, common: dict, redis_url: str) -> dict:
        broker = redis_url.rsplit("/", 1)[0] + f"/{self.broker_db}"
        # The pacing schedule (REDIS_URL) is shared: AWS's quotas are per account and region.
        return {**os.environ, **common, "CELERY_BROKER_URL": broker, "PYTHONPATH": str(self.path),
                "PYTHONUNBUFFERED": "1"}

    def start_child(self, env: dict) -> None:
        self.child = subprocess.Popen([sys.executable, str(ROOT / "bench" / "dispatch.py"), "--approver", str(self.path)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=self.path,
                                      env={**env, "LOG_LEVEL": "WARNING"})
        assert json.loads(self.child.stdout.readline()).get("ready"), f"{self.label}: the approver did not start"

    def ask(self, **question) -> dict:
        self.child.stdin.write(json.dumps(question) + "\n")
        self.child.stdin.flush()
        return json.loads(self.child.stdout.readline())

    def phases(self) -> list[dict]:
        """The phases_ms of each dispatch.started line its workers logged."""
        found = []
        for path in self.logs:
            for line in path.read_text(errors="replace").splitlines():
                if '"dispatch.started"' in line and line.startswith("{"):
                    phases = json.loads(line).get("phases_ms")
                    if phases:
                        found.append(phases)
        return found


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="delegate-bench-"))
        self.procs: list[subprocess.Popen] = []
        self.trees = [Tree("working tree", ROOT, 0)]
        self.baseline_dir: Path | None = None

    # Processes ---------------------------------------------------------------------------------

    def start_redis(self) -> str:
        from tests.processes import RedisServer

        self.redis = RedisServer(self.tmp)
        if self.args.redis_port:
            self.redis.port = self.args.redis_port
        self.redis.start()
        return self.redis.url

    def start_workers(self, env: dict, tree: Tree) -> None:
        from tests.processes import wait_until

        for index in range(self.args.workers):
            path = self.tmp / f"worker-{tree.broker_db}-{index}.log"
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "portal", "worker", "-P", "prefork", "-c", "1",
                 "-n", f"bench{tree.broker_db}{index}-{uuid.uuid4().hex[:6]}@%h", "--without-gossip",
                 "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"],
                cwd=tree.path, env=env, stdout=path.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
            self.procs.append(proc)
            tree.logs.append(path)
            wait_until(lambda: " ready." in path.read_text(errors="replace"), timeout=90, what="a worker")

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
        if getattr(self, "redis", None):
            self.redis.stop()
        if getattr(self, "sandbox", None):
            self.sandbox.stop()
        for tree in self.trees:
            if tree.child is not None:
                tree.child.stdin.close()
                tree.child.wait(timeout=30)
        if self.baseline_dir is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(self.baseline_dir)], cwd=ROOT, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # Set-up ------------------------------------------------------------------------------------

    def setup(self) -> None:
        from sandbox import Sandbox

        recreate_database()
        self.sandbox = Sandbox(port=0, time_scale=50.0).start()
        redis_url = self.start_redis()
        common = {
            "DATABASE_URL": BENCH_URL, "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url,
            "AWS_ENDPOINT_URL": self.sandbox.url, "AWS_ACCESS_KEY_ID": "AKIDBENCHBENCHBENCH0",
            "AWS_SECRET_ACCESS_KEY": "bench-secret-not-real", "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_EC2_METADATA_DISABLED": "true", "DJANGO_SETTINGS_MODULE": "portal.settings",
            # AWS's own quotas (aws-api.md §9); the sandbox enforces the same below.
            "DELEGATE_RATE_START": "1", "DELEGATE_RATE_READ": "3",
            "DELEGATE_DISPATCH_RETRY_SECONDS": "1", "LOG_LEVEL": "WARNING", "DELEGATE_LOGIN_LOCKOUT": "false",
        }
        os.environ.update(common)
        for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
            os.environ.pop(key, None)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        self.sandbox.faults.rate_limits = {START: 1.0, "DescribeAutomationExecutions": 3.0,
                                           "DescribeAutomationStepExecutions": 3.0, "GetAutomationExecution": 3.0,
                                           "StartExecutionPreview": 1.0, "GetExecutionPreview": 1.0}
        self.seed()
        if self.args.baseline:
            self.baseline_dir = Path(tempfile.mkdtemp(prefix="delegate-baseline-")) / "tree"
            subprocess.run(["git", "worktree", "add", "--detach", str(self.baseline_dir), self.args.baseline],
                           cwd=ROOT, check=True, capture_output=True)
            self.trees.insert(0, Tree(f"baseline {self.args.baseline}", self.baseline_dir, 1))
        # Workers log at INFO: the working tree's dispatch.started lines carry the phases.
        common["LOG_LEVEL"] = "INFO"
        for tree in self.trees:
            env = tree.env(common, redis_url)
            self.start_workers(env, tree)
            tree.start_child(env)

    def seed(self) -> None:
        import boto3

        from automations.models import Membership
        from sandbox.inventory import seeded_id
        from tests import factories as f

        self.account = f.AccountFactory()
        self.team = f.TeamFactory(name="platform")
        self.alice, self.bob = f.UserFactory(username="alice"), f.UserFactory(username="bob")
        Membership.objects.create(user=self.alice, team=self.team, role="member")
        Membership.objects.create(user=self.bob, team=self.team, role="lead")
        self.restart = f.RunbookVersionFactory(runbook=f.RunbookFactory(account=self.account))
        f.TeamRunbookFactory(team=self.team, runbook=self.restart.runbook)
        self.instance = seeded_id("i", "eu-west-1", "web-1")
        name = "Delegate-BenchSleep"
        content = SLEEP_RUNBOOK % {"seconds": 30000}  # ten minutes at the sandbox's time scale
        boto3.client("ssm", region_name="eu-west-1", endpoint_url=self.sandbox.url).create_document(
            Name=name, Content=content, DocumentType="Automation", DocumentFormat="YAML")
        self.sleep = f.RunbookVersionFactory(runbook=f.RunbookFactory(account=self.account, name=name, owner="Self"),
                                             version="1", content=content, document_format="YAML")
        f.TeamRunbookFactory(team=self.team, runbook=self.sleep.runbook)

    # Helpers -----------------------------------------------------------------------------------

    def wait_running(self, ids: list[int], timeout: float) -> None:
        from automations import services
        from automations.services import publishing
        from automations.models import AutomationRequest
        from tests.processes import wait_until

        def done():
            # As beat would: republish anything put back or lost.
            services.dispatch_outbox_sweep(publish=lambda pk: publishing.publish_dispatch(pk, source="bench"))
            return not AutomationRequest.objects.filter(pk__in=ids, status__in=("approved", "dispatching")).exists()
        wait_until(done, timeout=timeout, what="every request to reach AWS", interval=0.5)

    def accepted_at(self, requests) -> dict[int, float]:
        """When the sandbox received the Start call that succeeded, per request id."""
        by_token = {str(r.client_token): r.pk for r in requests}
        return {by_token[c["client_token"]]: c["time"] for c in self.sandbox.calls.of(START)
                if c["error"] is None and c["client_token"] in by_token}

    # Measurements ------------------------------------------------------------------------------

    def paced(self) -> None:
        from automations.models import AutomationRequest

        n, interval = self.args.paced, self.args.interval
        made: dict[str, list[int]] = {tree.label: [] for tree in self.trees}
        if not self.args.approve_at_once:
            for tree in self.trees:  # submitted ahead: each submit asks AWS for a preview (1 call/s)
                made[tree.label] = tree.ask(submit=n)["ids"]
            time.sleep(2.5)  # the submits' preview slots are past
        self.sandbox.calls.clear()
        web: dict[str, list[float]] = {tree.label: [] for tree in self.trees}
        load_before = os.getloadavg()[0]
        for index in range(n):
            # Take turns, and alternate who goes first, so neither tree always follows the other.
            for tree in (self.trees if index % 2 == 0 else self.trees[::-1]):
                if self.args.approve_at_once:  # as an auto-approval would: the submit's preview just ran
                    made[tree.label] += tree.ask(submit=1)["ids"]
                web[tree.label].append(tree.ask(approve=made[tree.label][index])["seconds"])
                time.sleep(interval)
        every = [pk for ids in made.values() for pk in ids]
        self.wait_running(every, timeout=60 + len(every) * 2)
        requests = {r.pk: r for r in AutomationRequest.objects.filter(pk__in=every)}
        accepted = self.accepted_at(list(requests.values()))
        print(f"\n1. paced: {n} approvals per tree, one every {interval:g} s (Start quota 1/s), "
              f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
        rows = []
        for tree in self.trees:
            latency = [accepted[pk] - requests[pk].approved_at.timestamp() for pk in made[tree.label]]
            rows.append((tree.label, statistics.median(latency), percentile(latency, 99), max(latency)))
            print(f"   {tree.label}: approval service call incl. on-commit publish: p50 "
                  f"{statistics.median(web[tree.label]) * 1000:.0f} ms, p99 {percentile(web[tree.label], 99) * 1000:.0f} ms")
            print(f"   {tree.label}: approval -> AWS acceptance: p50 {rows[-1][1] * 1000:.0f} ms, "
                  f"p99 {rows[-1][2] * 1000:.0f} ms, max {rows[-1][3] * 1000:.0f} ms")
        if len(rows) == 2:
            print(f"   ratio working/baseline: p50 {rows[1][1] / rows[0][1]:.2f}, p99 {rows[1][2] / rows[0][2]:.2f}")
        phases = self.trees[-1].phases()
        if phases:
            names = list(dict.fromkeys(name for p in phases for name in p))
            print(f"   working tree, phases inside the worker over {len(phases)} dispatches (median / max ms): " +
                  ", ".join(f"{name} {statistics.median(p.get(name, 0.0) for p in phases):.1f} / "
                            f"{max(p.get(name, 0.0) for p in phases):.1f}" for name in names))
        self.calls_per_dispatch(n * len(self.trees), "per request (the approval's content check + the dispatch)",
                                operations=(START, "AssumeRole", "DescribeInstances", "DescribeDocument",
                                            "StartExecutionPreview", "GetExecutionPreview"))

    def calls_per_dispatch(self, n: int, label: str = "per dispatch",
                           operations=(START, "AssumeRole", "DescribeInstances")) -> None:
        counts = Counter((c["service"], c["operation"]) for c in self.sandbox.calls.snapshot())
        print(f"   calls {label}, over {n}: " + ", ".join(
            f"{service}:{operation} {count / n:.2f}" for (service, operation), count in sorted(counts.items())
            if operation in operations))

    def burst(self) -> None:
        from django.utils import timezone

        from automations import services
        from automations.services import publishing
        from automations.models import Approval, AutomationRequest, DispatchOutbox
        from automations.runbooks import AUTOMATION_ROLE_PARAMETER, fingerprint_for

        n = self.args.burst
        self.sandbox.calls.clear()
        now = timezone.now()
        requests = []
        for _ in range(n):  # committed approvals, the way a busy approval queue leaves them
            request = AutomationRequest(
                team=self.team, requester=self.alice, runbook=self.sleep.runbook, runbook_version=self.sleep,
                account=self.account, region="eu-west-1",
                parameters={AUTOMATION_ROLE_PARAMETER: [self.account.automation_role_arn]},
                status="approved", approved_at=now,
                document_hash=self.sleep.ssm_hash, run_as=self.account.automation_role_arn)
            request.fingerprint = fingerprint_for(request)
            requests.append(request)
        requests = AutomationRequest.objects.bulk_create(requests)
        Approval.objects.bulk_create(Approval(request=r, approver=self.bob, requester=self.alice,
                                              fingerprint=r.fingerprint) for r in requests)
        DispatchOutbox.objects.bulk_create(DispatchOutbox(request=r, next_attempt_at=now) for r in requests)
        while services.dispatch_outbox_sweep(publish=lambda pk: publishing.publish_dispatch(pk, source="bench")):
            pass
        self.wait_running([r.pk for r in requests], timeout=60 + n * 3)
        starts = sorted(c["time"] for c in self.sandbox.calls.of(START))
        ok = sorted(self.accepted_at(requests).values())
        throttled = sum(1 for c in self.sandbox.calls.of(START) if c["error"] == "ThrottlingException")
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        latency = [t - now.timestamp() for t in ok]
        print(f"\n2. burst: {n} approvals committed at once, {self.args.workers} workers")
        print(f"   sustained Start rate: {(len(ok) - 1) / (ok[-1] - ok[0]):.3f} calls/s accepted "
              f"(quota 1/s); {len(starts)} Start calls sent, {throttled} throttled by the sandbox; "
              f"closest two calls {min(gaps) * 1000:.0f} ms apart")
        print(f"   approval -> AWS acceptance under the backlog: p50 {statistics.median(latency):.1f} s, "
              f"p99 {percentile(latency, 99):.1f} s")
        self.calls_per_dispatch(n)
        self.running_ids = [r.pk for r in requests]

    def poll(self) -> None:
        import boto3

        from automations import aws, services
        from automations.models import AutomationRequest, Execution

        k = self.args.running
        have = list(self.running_ids) if hasattr(self, "running_ids") else []
        ssm = boto3.client("ssm", region_name="eu-west-1", endpoint_url=self.sandbox.url)
        self.sandbox.faults.concurrency_limit = max(100, k + len(have))
        limits = dict(self.sandbox.faults.rate_limits)
        self.sandbox.faults.rate_limits = {}  # setting the scene is not what is measured
        for _ in range(max(0, k - len(have))):
            execution_id = ssm.start_automation_execution(DocumentName=self.sleep.runbook.name)["AutomationExecutionId"]
            request = AutomationRequest.objects.create(
                team=self.team, requester=self.alice, runbook=self.sleep.runbook, runbook_version=self.sleep,
                account=self.account, region="eu-west-1", status="running", fingerprint="0" * 64)
            Execution.objects.create(request=request, execution_id=execution_id)
        self.sandbox.faults.rate_limits = limits
        running = AutomationRequest.objects.filter(status="running").count()
        aws.reset_sessions()  # a process that has not polled yet
        print(f"\n3. poll: {running} running executions, DescribeAutomationExecutions paced at 3 calls/s")
        steady = 0
        for cycle in range(1, 8):  # until two cycles in a row find nothing new
            self.sandbox.calls.clear()
            started = time.perf_counter()
            changed = services.execution_statuses_sync()
            seconds = time.perf_counter() - started
            counts = Counter(c["operation"] for c in self.sandbox.calls.snapshot())
            label = "cold session, every execution new" if cycle == 1 else (
                "nothing changed" if changed == 0 else "catching up (step budget 25 s per cycle)")
            print(f"   cycle {cycle} ({label}): {seconds:.2f} s, {changed} changed; calls: " + (", ".join(
                f"{operation} {count}" for operation, count in sorted(counts.items())) or "none"))
            steady = steady + 1 if changed == 0 else 0
            if steady == 2:
                break

    def run(self) -> None:
        try:
            self.setup()
            if self.args.paced:
                self.paced()
            if self.args.burst:
                self.burst()
            if self.args.running:
                self.poll()
        finally:
            self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paced", type=int, default=20, help="approvals for the latency run (0 skips)")
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between paced approvals")
    parser.add_argument("--burst", type=int, default=60, help="approvals committed at once (0 skips)")
    parser.add_argument("--running", type=int, default=95, help="executions in flight for the poll run (0 skips)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per tree (concurrency 1 each)")
    parser.add_argument("--baseline", help="git revision to measure alongside the working tree (paced run)")
    parser.add_argument("--approve-at-once", action="store_true",
                        help="paced run: submit each request right before approving it (its preview slot is then taken)")
    parser.add_argument("--redis-port", type=int, default=0, help="port of the benchmark's redis-server (default: free)")
    parser.add_argument("--approver", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.approver:
        approver(args.approver)
        return
    print(f"bench/dispatch.py on {os.cpu_count()} CPUs, database {urlparse(BENCH_URL).path.lstrip('/')}")
    Bench(args).run()


if __name__ == "__main__":
    main()
