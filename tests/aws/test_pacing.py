"""The shared schedule that paces AWS calls (automations.aws.pacing): its arithmetic, its Redis script
across real processes, and the gateway hook that paces every botocore attempt."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from automations import aws
from automations.aws import pacing
from tests.conftest import require
from tests.processes import RedisServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def redis_server(tmp_path):
    import shutil

    require(shutil.which("redis-server") is not None, "redis-server on PATH")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def rates(settings):
    def set_rates(**classes):
        settings.DELEGATE_AWS_RATE_LIMITS = {**settings.DELEGATE_AWS_RATE_LIMITS, **classes}
    return set_rates


class FakeClock:
    """pacing's clock, moved only by pacing's own sleeps: the schedule's arithmetic, exactly, however
    busy the machine (the wall-clock behaviour is measured in bench/dispatch.py and the tests below)."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_800_000_000.0 + self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(pacing, "time", fake)  # pacing's module global only, not the time module
    return fake


class TestSchedule:
    def test_calls_leave_one_interval_apart_without_a_burst(self, rates, clock):
        rates(start=20.0)
        stamps = []
        for _ in range(6):
            pacing.acquire("start", account_id="1", region="eu-west-1")
            stamps.append(clock.now)
        interval = 1 / 20 + pacing.GUARD_SECONDS
        assert stamps[0] == 1000.0  # the first call goes at once
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        assert min(gaps) >= interval - 1e-9  # 1/20 s (+ guard) between any two: no burst
        assert max(gaps) <= interval + 0.01 + 1e-9  # and no more than the jitter on top
        assert len(clock.sleeps) == 5

    def test_keys_are_per_account_region_and_class(self, rates, clock):
        rates(start=1.0, read=1.0)
        for account, region, api_class in (("1", "eu-west-1", "start"), ("2", "eu-west-1", "start"),
                                           ("1", "us-east-1", "start"), ("1", "eu-west-1", "read")):
            assert pacing.acquire(api_class, account_id=account, region=region) == 0.0
        assert clock.sleeps == []  # four different schedules: nobody waited
        pacing.acquire("start", account_id="1", region="eu-west-1")
        assert clock.sleeps and sum(clock.sleeps) >= 1.0  # the same schedule again: it waited

    def test_a_slot_too_far_away_is_refused_at_once(self, rates, clock):
        rates(start=1.0)
        pacing.acquire("start", account_id="1", region="eu-west-1")
        with pytest.raises(pacing.PacingTimeout) as error:
            pacing.acquire("start", account_id="1", region="eu-west-1", timeout=0.2)
        assert clock.sleeps == []  # refused at once, no sleeping
        assert isinstance(error.value, aws.TransientAwsError)  # callers treat it like throttling
        granted, wait, _ = pacing.take("start", account_id="1", region="eu-west-1")
        assert not granted and wait == pytest.approx(1.0 + pacing.GUARD_SECONDS)

    def test_redis_schedule(self, rates, settings, redis_server):
        settings.REDIS_URL = redis_server.url
        pacing.reset()
        rates(start=10.0)
        assert pacing.take("start", account_id="1", region="eu-west-1").granted
        granted, wait, _ = pacing.take("start", account_id="1", region="eu-west-1")
        assert not granted and 0 < wait <= 0.1 + pacing.GUARD_SECONDS  # the rest of one interval
        assert pacing.take("start", account_id="1", region="us-east-1").granted  # another key, its own schedule
        time.sleep(wait)
        assert pacing.take("start", account_id="1", region="eu-west-1").granted
        key = pacing.key_for("start", account_id="1", region="eu-west-1")
        assert 0 < redis_server.client().pttl(key) <= 1200  # the key cleans itself up

    def test_redis_unreachable_is_a_pacing_timeout_not_a_hang(self, settings, redis_server):
        settings.REDIS_URL = redis_server.url
        pacing.reset()
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(pacing.PacingTimeout):
            pacing.acquire("start", account_id="1", region="eu-west-1")
        assert time.monotonic() - started < 3


# One process of the cross-process test: wait until a common start time, then take N calls the
# way acquire() does, recording when each was granted on Redis's clock (the process's own clock
# would add its scheduling delays, which no pacer can remove; see docs/operations.md).
_CONTENDER = """
import json, os, sys, time
import django
django.setup()
from automations.aws import pacing
start_at, n = float(sys.argv[1]), int(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))
stamps = []
while len(stamps) < n:
    answer = pacing.take("start", account_id="123456789012", region="eu-west-1")
    if answer.granted:
        stamps.append(answer.at)
    else:
        time.sleep(answer.wait)
print(json.dumps(stamps))
"""


def test_the_rate_holds_across_processes(redis_server):
    """Four real processes hammer one schedule at once: the merged grants never beat the rate."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "REDIS_URL": redis_server.url,
           "DELEGATE_RATE_START": "10", "LOG_LEVEL": "WARNING"}
    start_at = time.time() + 4.0  # time for the interpreters to start
    procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, str(start_at), "8"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(4)]
    stamps = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        stamps += json.loads(out.strip().splitlines()[-1])
    stamps.sort()
    assert len(stamps) == 32
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert min(gaps) >= 0.1 + pacing.GUARD_SECONDS - 1e-6, f"two calls {min(gaps):.4f}s apart at 10 calls/s"
    for i, first in enumerate(stamps):  # no one-second window holds more than the rate allows
        assert sum(1 for s in stamps[i:] if s < first + 1.0) <= 11
    assert stamps[-1] - stamps[0] >= 31 * (0.1 + pacing.GUARD_SECONDS) - 0.05


class TestGatewayHook:
    def test_only_ssm_automation_calls_are_paced(self, rates, monkeypatch):
        seen = []
        monkeypatch.setattr(pacing, "acquire", lambda api_class, **kw: seen.append((api_class, kw["account_id"])) or 0.0)
        role = "arn:aws:iam::210987654321:role/DelegateDispatch"
        for service, operation in (("sts", "AssumeRole"), ("ec2", "DescribeInstances"), ("ssm", "ListDocuments"),
                                   ("ssm", "StartAutomationExecution"), ("ssm", "DescribeAutomationExecutions"),
                                   ("ssm", "StopAutomationExecution")):
            pacing.pace_aws_call(service=service, operation=operation, region="eu-west-1", role_arn=role, attempt=1)
        assert seen == [("start", "210987654321"), ("read", "210987654321"), ("stop", "210987654321")]

    def test_botocore_retries_are_paced_too(self, world, submit, sb, rates):
        """A throttled Start is retried by botocore; the retry waits for its own slot."""
        from automations import services

        rates(start=4.0)
        sb.faults.throttle_next("StartAutomationExecution", 2)
        request = services.request_approve(request=submit(), actor=world.bob)
        services.request_dispatch(request_id=request.pk)
        request.refresh_from_db()
        assert request.status == "running"
        starts = sb.calls.of("StartAutomationExecution")
        assert [c["error"] for c in starts] == ["ThrottlingException", "ThrottlingException", None]
        assert {c["client_token"] for c in starts} == {str(request.client_token)}
        gaps = [b["time"] - a["time"] for a, b in zip(starts, starts[1:])]
        assert min(gaps) >= 0.25 - 0.02
