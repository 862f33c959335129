"""Dispatch through the services against the sandbox: the outbox, the claim, errors put back, held
or failed, the running cap, the sweeper (rows 2, 3, 7, 11-13 of reliability-security.md §6).
Crash and broker tests with real worker processes are in tests/integration/."""
import datetime as dt
import threading

import pytest
from django.db import transaction
from django.utils import timezone

from automations import services, tasks
from automations.ops import metrics
from automations.errors import TransitionNotAllowed
from automations.models import AuditEvent, AutomationRequest, DispatchOutbox
from automations.services import dispatch, publishing
from tests.conftest import require_postgres

Status = AutomationRequest.Status
State = DispatchOutbox.State
START = "StartAutomationExecution"


def actions_for(request):
    return list(AuditEvent.objects.filter(request=request).order_by("sequence").values_list("action", flat=True))


def outbox(request) -> DispatchOutbox:
    return DispatchOutbox.objects.get(pk=request.pk)


def make_due(request):
    DispatchOutbox.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))


def in_process(pk):
    """A publish that runs the task body right here (the sweeper's contract: publish(pk))."""
    tasks.dispatch_request.run(pk)


@pytest.fixture
def approved(world, submit):
    def _approved(**kwargs):
        return services.request_approve(request=submit(**kwargs), actor=world.bob)
    return _approved


@pytest.fixture(autouse=True)
def _quick_retries(settings):
    settings.DELEGATE_DISPATCH_RETRY_SECONDS = 1.0
    settings.DELEGATE_DISPATCH_RETRY_MAX_SECONDS = 4.0


def sample(metric, **labels) -> float:
    name = metric._name
    for family in metric.collect():
        for s in family.samples:
            if s.name in (f"{name}_total", f"{name}_count", name) and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


class TestOutbox:
    def test_publish_after_commit_marks_the_row_enqueued(self, world, submit, django_capture_on_commit_callbacks,
                                                         monkeypatch):
        published = []
        monkeypatch.setattr(publishing, "publish_dispatch", lambda pk, source: published.append((pk, source)))
        with django_capture_on_commit_callbacks(execute=True):
            request = services.request_approve(request=submit(), actor=world.bob)
        assert published == [(request.pk, "approval")]
        row = outbox(request)
        assert row.state == State.ENQUEUED and row.next_attempt_at > timezone.now()
        assert services.dispatch_outbox_sweep(publish=in_process) == 0  # in the queue: left alone

    def test_broker_down_leaves_the_row_pending_and_the_approval_stands(self, world, submit, monkeypatch,
                                                                       django_capture_on_commit_callbacks):
        def broker_down(pk, source):
            raise ConnectionRefusedError("Error 111 connecting to 127.0.0.1:6379")
        monkeypatch.setattr(publishing, "publish_dispatch", broker_down)
        with django_capture_on_commit_callbacks(execute=True):
            request = services.request_approve(request=submit(), actor=world.bob)
        assert request.status == Status.APPROVED
        assert outbox(request).state == State.PENDING

    def test_lost_publish_is_swept_and_dispatched_once(self, approved, sb):
        """Row 2: the process died after commit, before publishing (no on-commit callback ran here)."""
        request = approved()
        assert outbox(request).state == State.PENDING
        assert services.dispatch_outbox_sweep(publish=in_process) == 1
        request.refresh_from_db()
        assert request.status == Status.RUNNING
        assert len(sb.calls.of(START)) == 1
        assert services.dispatch_outbox_sweep(publish=in_process) == 0

    def test_rolled_back_approval_publishes_nothing(self, world, submit, sb, django_capture_on_commit_callbacks):
        """Row 3: an exception after the approve inside the same transaction."""
        request = submit()
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            with pytest.raises(RuntimeError), transaction.atomic():
                services.request_approve(request=request, actor=world.bob)
                raise RuntimeError("something after the approval failed")
        assert callbacks == []
        request.refresh_from_db()
        assert request.status == Status.SUBMITTED
        assert not DispatchOutbox.objects.exists()
        assert "request.approved" not in actions_for(request)
        assert services.dispatch_outbox_sweep(publish=in_process) == 0
        assert sb.calls.of(START) == []

    def test_sweep_stops_at_a_broker_error_and_keeps_the_rest_due(self, approved):
        first, second = approved(), approved()

        def broker_down(pk):
            raise ConnectionRefusedError("down")
        assert services.dispatch_outbox_sweep(publish=broker_down) == 0
        for request in (first, second):
            row = outbox(request)
            assert row.state == State.PENDING and row.next_attempt_at <= timezone.now()

    @pytest.mark.postgres(reason="SKIP LOCKED")
    @pytest.mark.django_db(transaction=True)
    def test_a_row_locked_by_another_sweeper_is_skipped(self, approved, monkeypatch):
        require_postgres("SKIP LOCKED")
        monkeypatch.setattr(publishing, "publish_dispatch", lambda pk, source: None)  # committed for real: no broker here
        locked, free = approved(), approved()
        DispatchOutbox.objects.update(state=State.PENDING, next_attempt_at=timezone.now())
        holding, release = threading.Event(), threading.Event()

        def other_sweeper():
            from django.db import connection as own
            with transaction.atomic():
                list(DispatchOutbox.objects.select_for_update().filter(pk=locked.pk))
                holding.set()
                release.wait(10)
            own.close()
        thread = threading.Thread(target=other_sweeper)
        thread.start()
        try:
            holding.wait(10)
            published = []
            assert services.dispatch_outbox_sweep(publish=published.append) == 1
            assert published == [free.pk]
        finally:
            release.set()
            thread.join()


class TestClaim:
    def test_started_once_with_latency_metric(self, approved, sb):
        before = sample(metrics.DISPATCH_LATENCY)
        request = approved()
        assert services.request_dispatch(request_id=request.pk) == "started"
        assert services.request_dispatch(request_id=request.pk) == "skipped"  # a duplicate is a no-op
        request.refresh_from_db()
        assert request.status == Status.RUNNING
        assert len(sb.calls.of(START)) == 1
        assert actions_for(request)[-2:] == ["dispatch.claimed", "dispatch.started"]
        assert outbox(request).state == State.STARTED
        assert sample(metrics.DISPATCH_LATENCY) == before + 1

    @staticmethod
    def deliver_twice_at_once(world, submit, monkeypatch):
        """Row 7 in one process: two threads, two database connections, one request."""
        monkeypatch.setattr(publishing, "publish_dispatch", lambda pk, source: None)  # committed for real: no broker here
        request = services.request_approve(request=submit(), actor=world.bob)
        barrier = threading.Barrier(2)
        outcomes = []

        def deliver():
            from django.db import connection as own
            barrier.wait(timeout=10)
            try:
                outcomes.append(services.request_dispatch(request_id=request.pk))
            finally:
                own.close()
        threads = [threading.Thread(target=deliver) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        return request, outcomes

    @pytest.mark.django_db(transaction=True)
    def test_two_deliveries_at_the_same_instant_start_once(self, world, submit, sb, monkeypatch):
        """Both engines: whoever calls AWS, it is one execution under the request's one ClientToken,
        recorded and audited once. (On SQLite the second delivery resumes and repeats the token.)"""
        before = {e["AutomationExecutionId"] for e in sb.executions()}
        request, outcomes = self.deliver_twice_at_once(world, submit, monkeypatch)
        assert sorted(outcomes) == ["skipped", "started"]
        request.refresh_from_db()
        assert {c["client_token"] for c in sb.calls.of(START)} == {str(request.client_token)}
        # This runbook's executions only: another test's multi-account run may still be starting children.
        new = [e["AutomationExecutionId"] for e in sb.executions() if e["AutomationExecutionId"] not in before
               and e.get("DocumentName") == request.runbook.name]
        assert new == [request.execution.execution_id]
        assert AuditEvent.objects.filter(request=request, action="dispatch.started").count() == 1

    @pytest.mark.postgres(reason="the per-request advisory lock")
    @pytest.mark.django_db(transaction=True)
    def test_two_deliveries_at_the_same_instant_call_aws_once(self, world, submit, sb, monkeypatch):
        """On PostgreSQL the second delivery finds the attempt lock held and never calls AWS."""
        request, outcomes = self.deliver_twice_at_once(world, submit, monkeypatch)
        assert sorted(outcomes) == ["skipped", "started"]
        assert len(sb.calls.of(START)) == 1

    def test_running_cap_waits_without_calling_aws(self, approved, sb, settings):
        settings.DELEGATE_MAX_RUNNING_PER_REGION = 1
        settings.DELEGATE_DISPATCH_RETRY_SECONDS = 10
        running, waiting = approved(), approved()
        assert services.request_dispatch(request_id=running.pk) == "started"
        # Its approval's message was published (the row is enqueued); capped, the row goes back to
        # pending with its wait, so an early message is skipped (x__claim__mutmut_80 left it enqueued).
        services.dispatch_outbox_mark_enqueued(request_id=waiting.pk)
        assert outbox(waiting).state == State.ENQUEUED
        assert services.request_dispatch(request_id=waiting.pk) == "capped"
        waiting.refresh_from_db()
        assert waiting.status == Status.APPROVED
        row = outbox(waiting)
        assert row.state == State.PENDING and row.next_attempt_at > timezone.now()
        assert "cap" in row.last_error
        assert len(sb.calls.of(START)) == 1
        assert "dispatch.claimed" not in actions_for(waiting)  # no audit noise while waiting
        # An early message waits for its time; once due and a slot is free, it goes.
        assert services.request_dispatch(request_id=waiting.pk) == "skipped"
        AutomationRequest.objects.filter(pk=running.pk).update(status=Status.SUCCEEDED)
        make_due(waiting)
        assert services.request_dispatch(request_id=waiting.pk) == "started"

    def test_run_at_in_the_future_waits(self, approved, sb):
        request = approved()
        later = timezone.now() + dt.timedelta(hours=1)
        AutomationRequest.objects.filter(pk=request.pk).update(run_at=later)
        assert services.request_dispatch(request_id=request.pk) == "skipped"
        assert outbox(request).next_attempt_at == later
        assert sb.calls.of(START) == []

    def test_forged_message_for_a_rejected_request_is_audited(self, world, submit, sb):
        request = services.request_reject(request=submit(), actor=world.bob, comment="no")
        assert services.request_dispatch(request_id=request.pk) == "refused"
        event = AuditEvent.objects.get(request=request, action="dispatch.refused")
        assert event.details["reason"] == "not approved"
        assert sb.calls.of(START) == []

    def test_malformed_task_arguments_never_reach_the_database(self):
        # No database fixture here: any query would raise instead of returning.
        for garbage in ("1 OR 1=1", None, -3, 0, True, {"pk": 1}, 2**70, [1]):
            assert tasks.dispatch_request.run(garbage) == "refused"


class TestErrors:
    def test_limit_exceeded_puts_back_with_a_jittered_delay(self, approved, sb):
        """Row 12 in one process: not a failure; approved again, due later, audited."""
        request = approved()
        sb.faults.error_next(START, "AutomationExecutionLimitExceededException", n=1)
        assert services.request_dispatch(request_id=request.pk) == "deferred"
        request.refresh_from_db()
        assert request.status == Status.APPROVED and request.status_reason == ""
        row = outbox(request)
        assert row.state == State.PENDING
        assert timezone.now() + dt.timedelta(seconds=0.4) < row.next_attempt_at < timezone.now() + dt.timedelta(seconds=1.1)
        event = AuditEvent.objects.get(request=request, action="dispatch.deferred")
        assert event.details["error"] == "AutomationExecutionLimitExceededException"
        assert len(sb.calls.of(START)) == 1  # not retried by botocore: the outbox waits instead
        make_due(request)
        assert services.dispatch_outbox_sweep(publish=in_process) == 1
        request.refresh_from_db()
        assert request.status == Status.RUNNING

    def test_backoff_grows_and_is_capped(self, settings):
        settings.DELEGATE_DISPATCH_RETRY_SECONDS = 2
        settings.DELEGATE_DISPATCH_RETRY_MAX_SECONDS = 10
        for attempt, (low, high) in {1: (1, 2), 2: (2, 4), 3: (4, 8), 9: (5, 10)}.items():
            for _ in range(20):
                assert low <= dispatch._backoff(attempt).total_seconds() <= high

    def test_throttled_on_every_attempt_is_put_back(self, approved, sb):
        """Row 11: botocore's retries (3 attempts) all throttled: AWS surely did nothing."""
        request = approved()
        sb.faults.throttle_next(START, 3)
        assert services.request_dispatch(request_id=request.pk) == "deferred"
        starts = sb.calls.of(START)
        assert len(starts) == 3 and {c["client_token"] for c in starts} == {str(request.client_token)}
        request.refresh_from_db()
        assert request.status == Status.APPROVED

    def test_server_error_holds_the_request_and_retries_with_the_same_token(self, approved, sb):
        """A 5xx may hide an accepted call: stay dispatching (not cancellable, never expires), retry later."""
        request = approved()
        sb.faults.error_next(START, "InternalServerError", n=3, status=500)
        assert services.request_dispatch(request_id=request.pk) == "uncertain"
        request.refresh_from_db()
        assert request.status == Status.DISPATCHING
        row = outbox(request)
        assert row.state == State.CALLING and row.next_attempt_at > timezone.now()
        event = AuditEvent.objects.get(request=request, action="dispatch.uncertain")
        assert event.details["client_token"] == str(request.client_token)
        with pytest.raises(TransitionNotAllowed):
            services.request_cancel(request=request, actor=request.requester)
        assert services.dispatch_outbox_sweep(publish=in_process) == 0  # not due yet
        make_due(request)
        assert services.dispatch_outbox_sweep(publish=in_process) == 1
        request.refresh_from_db()
        assert request.status == Status.RUNNING
        assert "dispatch.resumed" in actions_for(request)
        assert {c["client_token"] for c in sb.calls.of(START)} == {str(request.client_token)}

    def test_sts_throttled_puts_back(self, approved, sb):
        request = approved()
        sb.faults.error_next("AssumeRole", "Throttling", n=5)
        assert services.request_dispatch(request_id=request.pk) == "deferred"
        assert sb.calls.of(START) == []

    @pytest.mark.parametrize("code", ["InvalidAutomationExecutionParametersException", "IdempotentParameterMismatch",
                                      "AutomationDefinitionNotFoundException", "AccessDeniedException"])
    def test_permanent_errors_fail_at_once_with_a_clear_message(self, approved, sb, code):
        """Row 13: one call, dispatch_failed, the reason is shown to the user and audited."""
        request = approved()
        sb.faults.error_next(START, code, n=1, message="the runbook said no")
        assert services.request_dispatch(request_id=request.pk) == "failed"
        request.refresh_from_db()
        assert request.status == Status.DISPATCH_FAILED
        assert code in request.status_reason and "the runbook said no" in request.status_reason
        assert len(sb.calls.of(START)) == 1
        assert outbox(request).state == State.FAILED
        assert AuditEvent.objects.get(request=request, action="dispatch.failed").details["error"] == code
        assert services.dispatch_outbox_sweep(publish=in_process) == 0

    def test_sts_access_denied_fails_without_calling_ssm(self, approved, sb):
        request = approved()
        sb.faults.error_next("AssumeRole", "AccessDenied", n=1, status=403)
        assert services.request_dispatch(request_id=request.pk) == "failed"
        assert sb.calls.of(START) == []


class TestResume:
    def test_a_request_left_dispatching_by_a_dead_worker_is_resumed_after_its_lease(self, approved, sb):
        """The claim committed, then the worker vanished (message lost with Redis, say)."""
        request = approved()
        with transaction.atomic():
            locked = AutomationRequest.objects.select_for_update().get(pk=request.pk)
            from automations.services.transitions import transition
            transition(locked, to=Status.DISPATCHING, actor=None, action="dispatch.claimed")
            DispatchOutbox.objects.filter(pk=request.pk).update(
                state=State.CALLING, attempts=1, next_attempt_at=timezone.now() + dt.timedelta(minutes=2))
        assert services.dispatch_outbox_sweep(publish=in_process) == 0  # the lease still runs
        make_due(request)
        assert services.dispatch_outbox_sweep(publish=in_process) == 1
        request.refresh_from_db()
        assert request.status == Status.RUNNING
        assert outbox(request).attempts == 2
        assert actions_for(request)[-2:] == ["dispatch.resumed", "dispatch.started"]

    def test_resume_after_aws_accepted_converges_on_the_same_execution(self, approved, sb):
        """The crash came after AWS accepted: the same ClientToken returns the same execution."""
        request = approved()
        sb.faults.error_next(START, "InternalServerError", n=3, status=500)
        services.request_dispatch(request_id=request.pk)  # uncertain
        import boto3
        ssm = boto3.client("ssm", region_name="eu-west-1", endpoint_url=sb.url)
        first = ssm.start_automation_execution(
            DocumentName=request.runbook.name, DocumentVersion=request.runbook_version.version,
            Parameters=request.parameters, ClientToken=str(request.client_token),
            Tags=[{"Key": "delegate:request-id", "Value": str(request.pk)},
                  {"Key": "delegate:requester", "Value": "alice"}, {"Key": "delegate:team", "Value": "platform"}],
        )["AutomationExecutionId"]  # what AWS had done behind the 500
        make_due(request)
        services.dispatch_outbox_sweep(publish=in_process)
        request.refresh_from_db()
        assert request.status == Status.RUNNING
        assert request.execution.execution_id == first
        token = str(request.client_token)
        assert len([e for e in sb.executions() if e.get("ClientToken") == token]) == 1


class TestSweepCommand:
    def test_sweep_outbox_once_without_beat(self, approved, monkeypatch):
        from io import StringIO

        from django.core.management import call_command

        request = approved()
        out = StringIO()
        call_command("sweep_outbox", "--dry-run", stdout=out)
        assert f"#{request.pk} pending" in out.getvalue() and "1 due" in out.getvalue()
        published = []
        monkeypatch.setattr(publishing, "publish_dispatch", lambda pk, source: published.append((pk, source)))
        out = StringIO()
        call_command("sweep_outbox", stdout=out)
        assert published == [(request.pk, "command")] and "published 1" in out.getvalue()
        assert outbox(request).state == State.ENQUEUED
