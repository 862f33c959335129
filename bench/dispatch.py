"""Dispatch against the sandbox at AWS's real quotas: latency, sustained rate, calls per dispatch and poll.

    .venv/bin/python bench/dispatch.py                      # all three measurements, defaults below
    .venv/bin/python bench/dispatch.py --paced 20 --burst 60 --running 95 --workers 2

Real processes, as in production: PostgreSQL (its own database, BENCH_DISPATCH_DATABASE_URL,
default postgres://postgres@127.0.0.1:5432/delegate_bench_dispatch, dropped and recreated each
run; the name must contain "bench"), a redis-server of its own on a free port, `celery -A portal
worker` processes, and the sandbox in this process with AWS's quotas switched on:
StartAutomationExecution 1 call/s and Describe* 3 calls/s (the sandbox throttles beyond that),
100 running automations. Delegate paces itself at the same rates (DELEGATE_RATE_*).

1. paced:  approvals arriving one every --interval seconds (below the Start quota): latency from
           the approval's commit to the sandbox receiving the Start call that succeeded, p50/p99.
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


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="delegate-bench-"))
        self.procs: list[subprocess.Popen] = []

    # Processes ---------------------------------------------------------------------------------

    def start_redis(self) -> str:
        from tests.processes import RedisServer

        self.redis = RedisServer(self.tmp).start()
        return self.redis.url

    def start_workers(self, env: dict) -> None:
        from tests.processes import wait_until

        for index in range(self.args.workers):
            log = (self.tmp / f"worker-{index}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "portal", "worker", "-P", "prefork", "-c", "1",
                 "-n", f"bench{index}-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "--loglevel", "INFO"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            self.procs.append(proc)
            path = self.tmp / f"worker-{index}.log"
            wait_until(lambda: " ready." in path.read_text(errors="replace"), timeout=60, what="a worker")

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
                                           "DescribeAutomationStepExecutions": 3.0, "GetAutomationExecution": 3.0}
        self.seed()
        self.start_workers({**os.environ, **common, "PYTHONUNBUFFERED": "1"})

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

    def approve(self, version=None) -> tuple[object, float]:
        from automations import services

        runbook = (version or self.restart).runbook
        parameters = {} if version else {"InstanceId": [self.instance]}
        request = services.request_submit(actor=self.alice, team=self.team, runbook_id=runbook.pk,
                                          parameters=parameters)
        started = time.perf_counter()
        request = services.request_approve(request=request, actor=self.bob)  # commits, then publishes
        return request, time.perf_counter() - started

    def wait_running(self, ids: list[int], timeout: float) -> None:
        from automations import services, tasks
        from automations.models import AutomationRequest
        from tests.processes import wait_until

        def done():
            # As beat would: republish anything put back or lost.
            services.dispatch_outbox_sweep(publish=lambda pk: tasks._publish(pk, source="bench"))
            return not AutomationRequest.objects.filter(pk__in=ids, status__in=("approved", "dispatching")).exists()
        wait_until(done, timeout=timeout, what="every request to reach AWS", interval=0.5)

    def accepted_at(self, requests) -> dict[int, float]:
        """When the sandbox received the Start call that succeeded, per request id."""
        by_token = {str(r.client_token): r.pk for r in requests}
        return {by_token[c["client_token"]]: c["time"] for c in self.sandbox.calls.of(START)
                if c["error"] is None and c["client_token"] in by_token}

    # Measurements ------------------------------------------------------------------------------

    def paced(self) -> None:
        n, interval = self.args.paced, self.args.interval
        self.sandbox.calls.clear()
        made, web = [], []
        for _ in range(n):
            request, seconds = self.approve()
            made.append(request)
            web.append(seconds)
            time.sleep(interval)
        self.wait_running([r.pk for r in made], timeout=60 + n * 2)
        accepted = self.accepted_at(made)
        latency = [accepted[r.pk] - r.approved_at.timestamp() for r in made]
        print(f"\n1. paced: {n} approvals, one every {interval:g} s (Start quota 1/s)")
        print(f"   approval service call incl. on-commit publish: p50 {statistics.median(web) * 1000:.0f} ms, "
              f"p99 {percentile(web, 99) * 1000:.0f} ms")
        print(f"   approval -> AWS acceptance: p50 {statistics.median(latency) * 1000:.0f} ms, "
              f"p99 {percentile(latency, 99) * 1000:.0f} ms, max {max(latency) * 1000:.0f} ms")
        self.calls_per_dispatch(n, "per request (the submit's scope check + the dispatch)")

    def calls_per_dispatch(self, n: int, label: str = "per dispatch") -> None:
        counts = Counter((c["service"], c["operation"]) for c in self.sandbox.calls.snapshot())
        print(f"   calls {label}, over {n}: " + ", ".join(
            f"{service}:{operation} {count / n:.2f}" for (service, operation), count in sorted(counts.items())
            if operation in (START, "AssumeRole", "DescribeInstances")))

    def burst(self) -> None:
        from django.utils import timezone

        from automations import services, tasks
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
        while services.dispatch_outbox_sweep(publish=lambda pk: tasks._publish(pk, source="bench")):
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
    parser.add_argument("--workers", type=int, default=2, help="worker processes (concurrency 1 each)")
    args = parser.parse_args()
    print(f"bench/dispatch.py on {os.cpu_count()} CPUs, database {urlparse(BENCH_URL).path.lstrip('/')}")
    Bench(args).run()


if __name__ == "__main__":
    main()
