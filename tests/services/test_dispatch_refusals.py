"""What dispatch records when it does not start a run: the audit event says why, a failure is
finished at a time, each claim and resume names its attempt, and the audit chain's range checks
hold (written to kill surviving mutants)."""
import datetime as dt

import pytest
from django.utils import timezone

from automations import services
from automations.audit import verify_chain
from automations.audit.guards import TABLE
from automations.models import AuditEvent, AutomationRequest, DispatchOutbox
from tests.audit_helpers import guards_bypassed, seed_chain, sql

Status = AutomationRequest.Status
START = "StartAutomationExecution"


@pytest.fixture(autouse=True)
def _quick_retries(settings):
    settings.DELEGATE_DISPATCH_RETRY_SECONDS = 1.0
    settings.DELEGATE_DISPATCH_RETRY_MAX_SECONDS = 4.0


@pytest.fixture
def approved(world, submit):
    def _approved(**kwargs):
        return services.request_approve(request=submit(**kwargs), actor=world.bob)
    return _approved


def test_a_deferred_attempt_says_why_in_the_audit_trail(approved, sb):
    request = approved()
    sb.faults.error_next(START, "AutomationExecutionLimitExceededException", n=1)
    assert services.request_dispatch(request_id=request.pk) == "deferred"
    details = AuditEvent.objects.get(request=request, action="dispatch.deferred").details
    assert details["reason"] == "AWS asked us to wait: AutomationExecutionLimitExceededException"
    assert details["attempt"] == 1 and details["from"] == Status.DISPATCHING and details["to"] == Status.APPROVED


def test_an_uncertain_attempt_says_why_in_the_audit_trail(approved, sb):
    request = approved()
    sb.faults.error_next(START, "InternalServerError", n=3, status=500)
    assert services.request_dispatch(request_id=request.pk) == "uncertain"
    details = AuditEvent.objects.get(request=request, action="dispatch.uncertain").details
    assert details["reason"] == "AWS did not confirm the start: InternalServerError"
    assert details["attempt"] == 1 and details["client_token"] == str(request.client_token)
    # x__dispatch__mutmut_201: AWS's request id of the unanswered call, under its name.
    assert details["aws_request_id"] == sb.calls.of(START)[-1]["aws_request_id"] != ""


def test_a_failed_start_is_finished_when_it_failed(approved, sb):
    request = approved()
    sb.faults.error_next(START, "AccessDeniedException", n=1, message="no")
    before = timezone.now()
    assert services.request_dispatch(request_id=request.pk) == "failed"
    request.refresh_from_db()
    assert request.status == Status.DISPATCH_FAILED
    assert request.finished_at is not None and before <= request.finished_at <= timezone.now()
    event = AuditEvent.objects.get(request=request, action="dispatch.failed")
    assert event.details["reason"].startswith("AWS refused to start the run: AccessDeniedException")
    # x__dispatch__mutmut_195: the AWS request id under the name operators search by.
    assert event.details["aws_request_id"] == sb.calls.of(START)[-1]["aws_request_id"] != ""
    assert event.details["operation"] == START


def test_a_refused_dispatch_is_finished_and_says_why(approved, sb):
    request = approved()
    AutomationRequest.objects.filter(pk=request.pk).update(approved_at=timezone.now() - dt.timedelta(days=30))
    assert services.request_dispatch(request_id=request.pk) == "refused"
    request.refresh_from_db()
    assert request.status == Status.DISPATCH_FAILED and request.finished_at is not None
    assert "approval validity ran out" in request.status_reason
    assert sb.calls.of(START) == []


def test_each_claim_and_each_resume_names_its_attempt(approved, sb):
    # x__claim__mutmut_100 and _106 (the claimed event's attempt), _125 (the resumed event's client_token).
    request = approved()
    sb.faults.error_next(START, "AutomationExecutionLimitExceededException", n=1)
    assert services.request_dispatch(request_id=request.pk) == "deferred"
    DispatchOutbox.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now())
    sb.faults.error_next(START, "InternalServerError", n=3, status=500)
    assert services.request_dispatch(request_id=request.pk) == "uncertain"
    DispatchOutbox.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now())
    assert services.request_dispatch(request_id=request.pk) == "started"
    claimed = AuditEvent.objects.filter(request=request, action="dispatch.claimed").order_by("sequence")
    assert [event.details["attempt"] for event in claimed] == [1, 2]
    resumed = AuditEvent.objects.get(request=request, action="dispatch.resumed").details
    assert resumed["attempt"] == 3 and resumed["client_token"] == str(request.client_token)


def test_a_message_for_an_expired_request_nobody_approved_is_refused_and_audited(world, submit, sb):
    # x__claim__mutmut_136 (`!= EXPIRED`): only a forged message names a request nobody approved;
    # one that expired after its approval is a late duplicate, skipped without a refusal.
    never = submit()
    AutomationRequest.objects.filter(pk=never.pk).update(status=Status.EXPIRED)
    assert services.request_dispatch(request_id=never.pk) == "refused"
    refused = AuditEvent.objects.get(request=never, action="dispatch.refused").details
    assert refused == {"reason": "not approved", "status": Status.EXPIRED}
    late = services.request_approve(request=submit(parameters={"InstanceId": [world.web2]}), actor=world.bob)
    AutomationRequest.objects.filter(pk=late.pk).update(status=Status.EXPIRED)
    assert services.request_dispatch(request_id=late.pk) == "skipped"
    assert not AuditEvent.objects.filter(request=late, action="dispatch.refused").exists()
    assert sb.calls.of(START) == []


def test_a_throttled_inventory_check_puts_the_request_back(approved, sb):
    # x__dispatch__mutmut_52 (the put-back without its attempt number crashes the dispatch).
    request = approved()
    sb.faults.error_next("DescribeInstances", "RequestLimitExceeded", n=20)
    assert services.request_dispatch(request_id=request.pk) == "deferred"
    details = AuditEvent.objects.get(request=request, action="dispatch.deferred").details
    assert details["reason"] == "inventory check failed: RequestLimitExceeded" and details["attempt"] == 1
    assert details["error"] == "RequestLimitExceeded"
    assert AutomationRequest.objects.get(pk=request.pk).status == Status.APPROVED
    assert sb.calls.of(START) == []


def test_the_start_runs_under_a_session_named_for_the_request_and_its_requester(approved, sb):
    # x__dispatch__mutmut_160: CloudTrail names the request in the role session (not "None").
    request = approved()
    assert services.request_dispatch(request_id=request.pk) == "started"
    expected = f"delegate-req-{request.pk}-alice"
    assert expected in [call["params"]["RoleSessionName"] for call in sb.calls.of("AssumeRole")]
    assert AuditEvent.objects.get(request=request, action="dispatch.started").role_session_name == expected


class WorkerDied(BaseException):
    """The worker process ends between AWS accepting the start and our commit (not an Exception:
    nothing of ours may catch it, as nothing catches a SIGKILL)."""


def test_a_worker_that_died_mid_call_is_resumed_with_a_clean_slate(approved, sb, monkeypatch):
    # x__claim__mutmut_166: the claim must clear the previous attempt's error, or the resume reports
    # an error this attempt never had.
    from automations import aws

    request = approved()
    sb.faults.error_next(START, "AutomationExecutionLimitExceededException", n=1)
    assert services.request_dispatch(request_id=request.pk) == "deferred"
    DispatchOutbox.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now())
    real_start = aws.start_automation

    def start_then_die(**kwargs):
        real_start(**kwargs)
        raise WorkerDied

    monkeypatch.setattr(aws, "start_automation", start_then_die)
    with pytest.raises(WorkerDied):
        services.request_dispatch(request_id=request.pk)
    monkeypatch.setattr(aws, "start_automation", real_start)
    assert DispatchOutbox.objects.get(pk=request.pk).last_error == ""
    DispatchOutbox.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now())
    assert services.request_dispatch(request_id=request.pk) == "started"
    resumed = AuditEvent.objects.get(request=request, action="dispatch.resumed").details
    assert resumed["previous_error"] == ""
    calls = sb.calls.of(START)  # refused, accepted (the worker died), accepted again: one token throughout
    assert len(calls) == 3 and {call["params"]["ClientToken"] for call in calls} == {str(request.client_token)}
    request.refresh_from_db()
    assert request.status == Status.RUNNING and request.execution is not None


def test_a_dead_workers_row_stays_due_when_the_broker_refuses_the_sweep(approved, sb, monkeypatch):
    # x_dispatch_outbox_sweep__mutmut_69: a `calling` row the sweep could not publish must be due again
    # at once, not after another lease.
    from automations import aws

    request = approved()
    real_start = aws.start_automation

    def start_then_die(**kwargs):
        real_start(**kwargs)
        raise WorkerDied

    monkeypatch.setattr(aws, "start_automation", start_then_die)
    with pytest.raises(WorkerDied):
        services.request_dispatch(request_id=request.pk)
    DispatchOutbox.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))

    def refusing(request_id):
        raise ConnectionError("broker down")

    assert services.dispatch_outbox_sweep(publish=refusing) == 0
    row = DispatchOutbox.objects.get(pk=request.pk)
    assert row.state == DispatchOutbox.State.CALLING and row.next_attempt_at <= timezone.now()


def test_an_inventory_check_aws_refuses_fails_the_request_saying_so(approved, sb):
    # x__dispatch__mutmut_63 (the failure without a reason crashes the dispatch).
    request = approved()
    sb.faults.error_next("DescribeInstances", "UnauthorizedOperation", n=20, status=403, message="not allowed")
    assert services.request_dispatch(request_id=request.pk) == "failed"
    request.refresh_from_db()
    assert request.status == Status.DISPATCH_FAILED
    assert request.status_reason == "Inventory check failed: UnauthorizedOperation not allowed"
    assert sb.calls.of(START) == []


def test_an_operator_fails_a_request_stuck_dispatching(approved, sb, monkeypatch):
    # x_request_mark_dispatch_failed__mutmut_8 (the audit action's name).
    from automations import aws

    request = approved()

    def die(**kwargs):
        raise WorkerDied

    monkeypatch.setattr(aws, "start_automation", die)
    with pytest.raises(WorkerDied):
        services.request_dispatch(request_id=request.pk)
    services.request_mark_dispatch_failed(request_id=request.pk, reason="operator: checked AWS, nothing ran")
    request.refresh_from_db()
    assert (request.status, request.status_reason) == (Status.DISPATCH_FAILED, "operator: checked AWS, nothing ran")
    event = AuditEvent.objects.get(request=request, action="dispatch.failed")
    assert event.details["reason"] == "operator: checked AWS, nothing ran"


def test_the_sweep_leaves_the_row_of_a_request_no_longer_approved(approved, sb):
    # x_dispatch_outbox_sweep__mutmut_23: a cancelled request's pending row is never published again.
    request = approved()
    AutomationRequest.objects.filter(pk=request.pk).update(status=Status.CANCELLED)
    published = []
    assert services.dispatch_outbox_sweep(publish=published.append) == 0
    assert published == []


class TestChainRanges:
    """verify_chain(start, end, anchor_hash) on either database: a range check sees only its range,
    and an anchor must match (tests/audit/test_integrity.py covers the command on PostgreSQL)."""

    def test_a_range_check_covers_its_range_only(self, db):
        events = seed_chain(8)
        assert verify_chain() is None
        with tampering():
            sql(f"UPDATE {TABLE} SET details = %s WHERE sequence = 2", ['{"i": 999}'])
        assert verify_chain().sequence == 2
        assert verify_chain(start=1, end=2).sequence == 2
        assert verify_chain(start=1, end=1) is None  # the edit is after the range
        assert verify_chain(start=4) is None  # without an anchor a range trusts its first prev_hash
        assert verify_chain(start=4, anchor_hash=events[2].hash) is None
        problem = verify_chain(start=4, end=6, anchor_hash="f" * 64)
        assert problem.sequence == 4 and "anchor" in problem.reason

    def test_a_deleted_event_inside_a_range_is_named(self, db):
        seed_chain(8)
        with tampering():
            sql(f"DELETE FROM {TABLE} WHERE sequence = 5")
        assert verify_chain(start=3, end=6).sequence == 5
        assert verify_chain(start=6, end=8) is None


def tampering():
    """A raw edit behind the model, as an attacker with the table owner's access would make it: the
    append-only triggers lifted on either database (tests/audit_helpers.guards_bypassed)."""
    return guards_bypassed()
