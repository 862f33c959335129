"""The whole request lifecycle under a Hypothesis state machine (tests/property/lifecycle.py).

CI runs a fixed, derandomized budget. A long exploration with fresh randomness:

    DELEGATE_HYPOTHESIS_PROFILE=explore python -m pytest -q -p no:cacheprovider tests/property

(DELEGATE_HYPOTHESIS_EXAMPLES overrides the number of examples of either profile.)
"""
import datetime as dt
import os

import boto3
import botocore.retries.standard
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from automations import aws
from automations.models import Membership
from tests import factories as f
from tests.property.lifecycle import Clock, Harness, LifecycleMachine, WorkerDied

PROFILES = {
    # ≥ 200 examples of ≤ 15 steps each, the same ones on every run: CI stays fast and repeatable.
    "ci": dict(max_examples=200, stateful_step_count=15, derandomize=True),
    # Fresh randomness, longer stories; run it by hand (docs/testing-property-mutation.md).
    "explore": dict(max_examples=3000, stateful_step_count=40, derandomize=False),
}
PROFILE = os.environ.get("DELEGATE_HYPOTHESIS_PROFILE", "ci")


def machine_settings(**overrides) -> settings:
    options = {**PROFILES[PROFILE], **overrides}
    if os.environ.get("DELEGATE_HYPOTHESIS_EXAMPLES"):
        options["max_examples"] = int(os.environ["DELEGATE_HYPOTHESIS_EXAMPLES"])
    return settings(deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], **options)


@pytest.fixture
def harness(db, sb, monkeypatch, settings):
    """Five people in one team, a settable clock, and a switch that kills the worker after AWS accepted."""
    settings.DELEGATE_DISPATCH_RETRY_SECONDS = 1.0
    settings.DELEGATE_DISPATCH_RETRY_MAX_SECONDS = 4.0
    account = f.AccountFactory()
    team = f.TeamFactory(name="platform")
    users = {name: f.UserFactory(username=name) for name in ("alice", "bob", "frank", "gina", "carol")}
    for name, role in (("alice", "member"), ("bob", "lead"), ("frank", "lead"), ("gina", "lead")):
        Membership.objects.create(user=users[name], team=team, role=role)
    clock = Clock(dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC))
    monkeypatch.setattr("django.utils.timezone.now", clock)
    h = Harness(sb=sb, ssm=boto3.client("ssm", region_name="eu-west-1", endpoint_url=sb.url), clock=clock,
                users=users, team=team, account=account)
    real_start = aws.start_automation

    def start_then_maybe_die(**kwargs):
        call = real_start(**kwargs)  # AWS has accepted: the execution exists from here on
        if h.kill_after_accept:
            raise WorkerDied("worker killed after StartAutomationExecution returned, before the commit")
        return call

    monkeypatch.setattr(aws, "start_automation", start_then_maybe_die)
    # botocore sleeps up to seconds between retries of a throttled or failed call; the outcome is the
    # same without the wait, and the budget goes to more examples instead.
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    yield h
    if not sb.engine._thread or not sb.engine._thread.is_alive():
        sb.engine.start()


# The paths the budget must reach, or the invariants were checked over too little.
MILESTONES = (
    "ended succeeded", "ended cancelled", "ended withdrawn", "ended rejected", "ended expired", "ended running",
    "audited request.auto_approved", "audited request.approval_added", "audited dispatch.started",
    "audited dispatch.uncertain", "audited dispatch.resumed",
    "worker died after AWS accepted", "sweep with the broker refusing: nothing published",
    "sweep with the broker up: published",
)
# Reached by most CI runs but not every one: the draws are derandomized, yet what a step meets still
# depends on timing (CI missed each of these once on 2026-12-03 with unchanged draws). They are
# printed with the rest; deterministic tests pin each path: dispatch.deferred in
# tests/services/test_dispatch.py, a cancel asked of AWS and the cancelled execution in
# tests/services/test_lifecycle.py and tests/audit/test_lifecycle.py.
USUALLY_REACHED = ("audited dispatch.deferred", "audited request.cancel_requested", "audited execution.cancelled")


@pytest.mark.timeout(1800)  # 200 examples against the real database and sandbox: minutes, not seconds
def test_lifecycle_invariants_hold_under_every_interleaving(harness):
    LifecycleMachine.harness = harness
    LifecycleMachine.reached.clear()
    try:
        run_state_machine_as_test(LifecycleMachine, settings=machine_settings())
    finally:
        LifecycleMachine.harness = None
    reached = LifecycleMachine.reached
    print("\n".join(f"{count:5d}  {name}" for name, count in sorted(reached.items())))
    missed = [m for m in USUALLY_REACHED if not reached[m]]
    if missed:
        print(f"not reached this run (each pinned by a deterministic test): {', '.join(missed)}")
    if PROFILE == "ci" and not os.environ.get("DELEGATE_HYPOTHESIS_EXAMPLES"):
        assert not [m for m in MILESTONES if not reached[m]], "the budget no longer reaches these paths"
