"""Real processes for the dispatch tests (reliability-security.md §1.6): a redis-server of our own
on a free loopback port, real `celery -A portal worker` processes on the PostgreSQL *test*
database, a small TCP proxy that can cut PostgreSQL away from a worker, and the in-process
sandbox (reached by the workers over HTTP). No Docker, no mocks of our own database or broker.

Every process is started here and stopped here, by its own pid / process group.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import require, require_postgres
from tests.processes import RedisServer, TcpProxy, wait_until

ROOT = Path(__file__).resolve().parents[2]
# Small enough that a killed worker's message comes back within the test's patience.
VISIBILITY_TIMEOUT = 8


@pytest.fixture
def redis_server(tmp_path):
    require(shutil.which("redis-server") is not None, "redis-server on PATH", group="redis-server")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def pg_proxy(transactional_db):
    """A TCP proxy in front of PostgreSQL that can cut it away (SQLite has no server to cut)."""
    from django.db import connection

    require_postgres("a proxy in front of the PostgreSQL server")

    proxy = TcpProxy(int(connection.settings_dict.get("PORT") or 5432)).start()
    yield proxy
    proxy.stop()


#
# The test process publishes to our Redis, as the web would
#

@pytest.fixture
def broker(redis_server, settings):
    """Point this process's Celery app at the test Redis with the production transport options."""
    from portal.celery import app

    previous = (app.conf.broker_url, app.conf.broker_transport_options)

    def reset_pools():
        if app._pool is not None:
            with contextlib.suppress(Exception):
                app._pool.force_close_all()
        app._pool = None
        with contextlib.suppress(AttributeError, KeyError):
            app.__dict__["amqp"]._producer_pool = None

    app.conf.broker_url = redis_server.url
    app.conf.broker_transport_options = {**settings.REDIS_BROKER_TRANSPORT_OPTIONS,
                                         "visibility_timeout": VISIBILITY_TIMEOUT}
    reset_pools()
    yield app
    app.conf.broker_url, app.conf.broker_transport_options = previous
    reset_pools()


#
# Celery workers
#

class Worker:
    def __init__(self, name: str, proc: subprocess.Popen, log: Path):
        self.name, self.proc, self.log = name, proc, log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        with contextlib.suppress(OSError):
            return [int(pid) for pid in path.read_text().split()]
        return []

    def wait_ready(self, timeout: float = 30) -> Worker:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            return " ready." in self.output()
        wait_until(ready, timeout=timeout, what=f"worker {self.name} to be ready")
        return self

    def kill(self) -> None:
        """Power loss: SIGKILL the whole process group (main process and pool children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@pytest.fixture
def worker_factory(redis_server, sandbox, transactional_db, tmp_path):
    """start(name, concurrency=1, db_port=None, **env) → a ready Worker on the test database."""
    from django.db import connection

    require_postgres("Celery workers share the test database")
    db = connection.settings_dict
    started: list[Worker] = []

    def start(name: str = "w", *, concurrency: int = 1, db_port: int | None = None, wait: bool = True,
              **extra_env) -> Worker:
        user = db.get("USER") or "postgres"
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        port = db_port or db.get("PORT") or 5432
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DATABASE_URL": f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{port}/{db['NAME']}",
            "REDIS_URL": redis_server.url,
            "CELERY_BROKER_URL": redis_server.url,
            "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
            "CELERY_UNACKED_RESTORE_SECONDS": "1",
            "AWS_ENDPOINT_URL": sandbox.url,
            "AWS_ACCESS_KEY_ID": "AKIDTESTTESTTEST0000",
            "AWS_SECRET_ACCESS_KEY": "test-secret-key-not-real",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "DELEGATE_RATE_START": "50", "DELEGATE_RATE_STOP": "50", "DELEGATE_RATE_READ": "50",
            "DELEGATE_DISPATCH_RETRY_SECONDS": "0.5",
            "DELEGATE_DISPATCH_RETRY_MAX_SECONDS": "2",
            "DELEGATE_DISPATCH_LEASE_SECONDS": "30",
            "LOG_FORMAT": "json", "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **{key: str(value) for key, value in extra_env.items()},
        }
        env.pop("AWS_SESSION_TOKEN", None)
        log = tmp_path / f"worker-{name}-{len(started)}.log"
        handle = log.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "-P", "prefork", "-c", str(concurrency),
             "-n", f"{name}-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        worker = Worker(name, proc, log)
        started.append(worker)
        return worker.wait_ready() if wait else worker

    def start_many(*names: str, **options) -> list[Worker]:
        """Start several at once (interpreter start-up is the slow part), then wait for all."""
        workers = [start(name, wait=False, **options) for name in names]
        return [worker.wait_ready() for worker in workers]

    yield SimpleNamespace(start=start, start_many=start_many, started=started)
    for worker in started:
        worker.kill()  # the test is over: no need to let anything finish


#
# Requests to dispatch
#

SLEEP_RUNBOOK = """\
schemaVersion: "0.3"
description: Waits, then says it waited. Used by the dispatch tests to hold executions open.
assumeRole: "{{ AutomationAssumeRole }}"
parameters:
  AutomationAssumeRole:
    type: AWS::IAM::Role::Arn
    default: ""
  Note:
    type: String
    default: "dispatch test"
mainSteps:
  - name: wait
    action: aws:sleep
    inputs:
      Duration: PT%(seconds)dS
outputs:
  - wait.Output
"""


@pytest.fixture
def sleep_runbook(world, sandbox):
    """Returns make(seconds): a runbook the platform team may request, that sleeps `seconds`
    (before the sandbox's time scale), registered both in the sandbox and in our catalog."""
    import boto3

    from tests import factories as f

    ssm = boto3.client("ssm", region_name="eu-west-1", endpoint_url=sandbox.url)

    def make(seconds: int):
        name = f"Delegate-DispatchTest-{uuid.uuid4().hex[:8]}"
        content = SLEEP_RUNBOOK % {"seconds": seconds}
        ssm.create_document(Name=name, Content=content, DocumentType="Automation", DocumentFormat="YAML")
        runbook = f.RunbookFactory(account=world.account, name=name, owner="Self")
        version = f.RunbookVersionFactory(runbook=runbook, version="1", content=content, document_format="YAML")
        f.TeamRunbookFactory(team=world.platform, runbook=runbook)
        return version

    return make


@pytest.fixture
def approve(world):
    """approve(runbook=None, n=1): submit as alice and approve as bob, through the services."""
    from automations import services

    def _approve(version=None, *, n: int = 1, parameters=None):
        made = []
        runbook = version.runbook if version else world.runbook
        for _ in range(n):
            request = services.request_submit(
                actor=world.alice, team=world.platform, runbook_id=runbook.pk,
                parameters=parameters if parameters is not None else ({} if version else {"InstanceId": [world.web1]}))
            made.append(services.request_approve(request=request, actor=world.bob))
        return made

    return _approve


@pytest.fixture
def approved_in_bulk(world):
    """bulk(version, n): n requests already approved by bob, with their outbox rows, straight into
    the database (the "given" of load tests; services would take ~0.5 s a request here)."""
    from django.utils import timezone

    from automations.models import Approval, AutomationRequest, DispatchOutbox
    from automations.runbooks import AUTOMATION_ROLE_PARAMETER, fingerprint_for

    def bulk(version, n: int):
        now = timezone.now()
        requests = []
        for _ in range(n):
            request = AutomationRequest(
                team=world.platform, requester=world.alice, runbook=version.runbook, runbook_version=version,
                account=world.account, region="eu-west-1",
                parameters={AUTOMATION_ROLE_PARAMETER: [world.account.automation_role_arn]},
                status=AutomationRequest.Status.APPROVED, approved_at=now,
                document_hash=version.ssm_hash, run_as=world.account.automation_role_arn)
            request.fingerprint = fingerprint_for(request)
            requests.append(request)
        requests = AutomationRequest.objects.bulk_create(requests)
        Approval.objects.bulk_create(Approval(request=r, approver=world.bob, requester=world.alice,
                                              fingerprint=r.fingerprint) for r in requests)
        DispatchOutbox.objects.bulk_create(DispatchOutbox(request=r, next_attempt_at=now) for r in requests)
        return requests

    return bulk
