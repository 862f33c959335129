"""The request lifecycle as a Hypothesis state machine over the public services, the database and the sandbox.

Rules are what people, workers, the broker, AWS and time do; invariants are what must hold after
every one of them. Each example runs inside a savepoint that is rolled back at its end, against a
document of its own in the session's sandbox, with `django.utils.timezone.now` on a clock that only
the rules move. tests/property/test_lifecycle_machine.py runs it; docs/testing-property-mutation.md
says how to run a long exploration.
"""
from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Q
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from automations import services
from automations.audit import verify_chain
from automations.errors import ContentChanged, DomainError, NotAllowed, TransitionNotAllowed
from automations.models import (
    TERMINAL_STATUSES,
    TRANSITIONS,
    Approval,
    AuditEvent,
    AutomationRequest,
    Execution,
    TeamRunbook,
)
from automations.runbooks import fingerprint_for
from tests import factories as f

Status = AutomationRequest.Status
START = "StartAutomationExecution"
REGION = "eu-west-1"
# Requests that were never approved, or stopped before they reached AWS: nothing may run for them.
NEVER_STARTED = (Status.WITHDRAWN, Status.REJECTED, Status.EXPIRED)
LEADS = ("bob", "frank", "gina")
PEOPLE = ("alice", "bob", "frank", "gina", "carol")


def document_text(generation: int) -> str:
    """The runbook's content; every generation has the same parameters and a different step."""
    return (
        "schemaVersion: '0.3'\n"
        f"description: Property-test runbook, content generation {generation}\n"
        "assumeRole: '{{ AutomationAssumeRole }}'\n"
        "parameters:\n"
        "  AutomationAssumeRole:\n"
        "    type: String\n"
        "    default: ''\n"
        "  Note:\n"
        "    type: String\n"
        "    default: none\n"
        "    allowedPattern: '^[a-z]{1,12}$'\n"
        "mainSteps:\n"
        f"  - name: wait{generation}\n"
        "    action: aws:sleep\n"
        "    inputs:\n"
        f"      Duration: PT{5 + generation}S\n"  # about a tenth of a second at the sandbox's time scale
    )


class WorkerDied(BaseException):
    """The worker process vanished right after AWS accepted the start, before our commit.

    A BaseException, like SystemExit: no `except Exception` in our code may swallow a dead process.
    """


class Clock:
    """A settable `timezone.now`: time moves only when a rule moves it."""

    def __init__(self, start: dt.datetime):
        self.start = start
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def reset(self) -> None:
        self.now = self.start

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@dataclass
class Harness:
    """What the test function hands the machine: fixtures and the fault switch on the gateway."""

    sb: object
    ssm: object  # a boto3 SSM client on the sandbox, for changing the document under the approval
    clock: Clock
    users: dict
    team: object
    account: object
    kill_after_accept: bool = False


@dataclass
class Tracked:
    """What the machine remembers about one request between steps."""

    token: str
    requester_id: int
    terminal: str | None = None
    approved_generation: int | None = None
    started_generation: int | None = None
    history: list = field(default_factory=list)


class LifecycleMachine(RuleBasedStateMachine):
    harness: Harness | None = None
    # What the examples reached (dispatch outcomes, final statuses, faults met): the test asserts the
    # budget covers the interesting paths, so a machine that stops reaching them fails loudly.
    reached: Counter = Counter()
    # The approved content must be the content that runs (issue 12: dispatch re-reads the hash).
    check_content_binding = True

    requests = Bundle("requests")

    def __init__(self):
        super().__init__()
        h = self.h = self.harness
        h.clock.reset()
        h.kill_after_accept = False
        h.sb.faults.reset()
        # AWS's executions advance only when a rule says so: what a step sees never depends on
        # how busy the machine is (the engine's pause knob, held for the whole example).
        h.sb.engine.stop()
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self.doc_name = f"Delegate-Property-{uuid.uuid4().hex[:16]}"
        self.generation = 0
        h.ssm.create_document(Name=self.doc_name, Content=document_text(0), DocumentType="Automation",
                              DocumentFormat="YAML")
        runbook = f.RunbookFactory(account=h.account, name=self.doc_name, owner="Self",
                                   owner_kind="self", default_version="1", latest_version="1")
        text = document_text(0)
        from automations.runbooks import content_hash, load_document, parse_parameters, step_summary
        document = load_document(text, "YAML")
        f.RunbookVersionFactory(runbook=runbook, version="1", document_format="YAML", content=text,
                                content_hash=content_hash(text), parameters=parse_parameters(document),
                                steps=step_summary(document), problems=[])
        self.runbook = runbook
        self.required = 1
        self.tracked: dict[int, Tracked] = {}

    def teardown(self):
        h = self.h
        try:
            for status in sorted(set(AutomationRequest.objects.filter(pk__in=list(self.tracked))
                                     .values_list("status", flat=True))):
                self.reached[f"ended {status}"] += 1
            for action in set(AuditEvent.objects.filter(request_id__in=list(self.tracked))
                              .values_list("action", flat=True)):
                self.reached[f"audited {action}"] += 1
            h.kill_after_accept = False
            h.sb.faults.reset()
            h.sb.engine.start()
            try:
                h.ssm.delete_document(Name=self.doc_name)
            except Exception:  # noqa: BLE001 - a swap may have left no document; nothing to clean
                pass
        finally:
            transaction.set_rollback(True)
            self._atomic.__exit__(None, None, None)

    # Setup -----------------------------------------------------------------------------------

    # People --------------------------------------------------------------------------------------

    def _submit(self, requester, note, run_at_minutes):
        run_at = None if run_at_minutes is None else self.h.clock.now + dt.timedelta(minutes=run_at_minutes)
        try:
            request = services.request_submit(
                actor=self.h.users[requester], team=self.h.team, runbook_id=self.runbook.pk,
                parameters={"Note": [note]}, run_at=run_at,
            )
        except DomainError as error:
            raise AssertionError(f"a valid request was refused: {error.code} {error.detail}") from error
        self.tracked[request.pk] = Tracked(token=str(request.client_token), requester_id=request.requester_id)
        if request.status == Status.APPROVED:
            self.tracked[request.pk].approved_generation = self.generation
        return request.pk

    SUBMIT = dict(requester=st.sampled_from(["alice", "alice", "bob"]), note=st.sampled_from(["a", "b"]),
                  run_at_minutes=st.sampled_from([None, None, None, 20, 150]))

    @initialize(target=requests, required=st.sampled_from([0, 1, 1, 2]), approved=st.booleans(), **SUBMIT)
    def policy_and_first_request(self, required, approved, requester, note, run_at_minutes):
        """The team may run the runbook with 0, 1 or 2 approvals; unapproved requests expire after
        2 h, an approval is valid for 1 h (from approval or run-at). Then the first request, which in
        half the examples the leads approve at once, so the steps go to what happens after approval."""
        self.required = required
        TeamRunbook.objects.create(team=self.h.team, runbook=self.runbook, approvals_required=required,
                                   request_expiry_hours=2, approval_validity_hours=1, justification_required=False)
        pk = self._submit(requester, note, run_at_minutes)
        if approved:
            for lead in [name for name in LEADS if self.h.users[name].pk != self.tracked[pk].requester_id][:required]:
                self.approve(pk, lead)
        return pk

    @rule(target=requests, **SUBMIT)
    def submit(self, requester, note, run_at_minutes):
        return self._submit(requester, note, run_at_minutes)

    @rule(pk=requests, approver=st.sampled_from(LEADS * 3 + PEOPLE))
    def approve(self, pk, approver):
        request = AutomationRequest.objects.get(pk=pk)
        user = self.h.users[approver]
        before = request.status
        try:
            after = services.request_approve(request=request, actor=user)
        except ContentChanged:
            # Issue 12: the content changed under the request; the approval does not count and
            # Delegate invalidates the request (rejected, reason content_changed).
            request.refresh_from_db()
            assert before == Status.SUBMITTED and user.pk != request.requester_id
            assert request.status == Status.REJECTED and request.reason_code == "content_changed", request.status
            self.reached["approval refused: the content changed"] += 1
            return
        except (NotAllowed, TransitionNotAllowed) as error:
            if before == Status.SUBMITTED and user.pk == request.requester_id:
                assert error.code == "self_approval", error.code
            if before == Status.SUBMITTED and approver in ("carol", "alice") and user.pk != request.requester_id:
                assert error.code == "not_a_lead", error.code
            return
        assert user.pk != request.requester_id, "the requester approved their own request"
        assert approver in LEADS, f"{approver} is not in the approver pool but approved"
        assert before == Status.SUBMITTED, f"approved a request that was {before}"
        if after.status == Status.APPROVED:
            self.tracked[pk].approved_generation = self.generation

    @rule(pk=requests, actor=st.sampled_from(LEADS + ("alice", "carol")))
    def reject(self, pk, actor):
        request = AutomationRequest.objects.get(pk=pk)
        user = self.h.users[actor]
        before = request.status
        try:
            services.request_reject(request=request, actor=user, comment="no")
        except (NotAllowed, TransitionNotAllowed):
            return
        assert user.pk != request.requester_id and actor in LEADS and before == Status.SUBMITTED

    @rule(pk=requests, by_requester=st.booleans())
    def withdraw(self, pk, by_requester):
        request = AutomationRequest.objects.get(pk=pk)
        user = request.requester if by_requester else self.h.users["frank"]
        if user.pk == request.requester_id and not by_requester:
            user = self.h.users["gina"]
        try:
            services.request_withdraw(request=request, actor=user)
        except (NotAllowed, TransitionNotAllowed) as error:
            if not by_requester:
                assert isinstance(error, NotAllowed)
            return
        assert by_requester, "someone other than the requester withdrew the request"

    @rule(data=st.data(), actor=st.sampled_from(["requester", "requester", "frank", "carol"]))
    def cancel(self, data, actor):
        """Cancel a request that is on its way or running (others only ever refuse)."""
        active = sorted(AutomationRequest.objects.filter(
            pk__in=list(self.tracked), status__in=(Status.APPROVED, Status.DISPATCHING, Status.RUNNING),
        ).values_list("pk", flat=True))
        if not active:
            return
        request = AutomationRequest.objects.get(pk=data.draw(st.sampled_from(active), label="pk"))
        user = request.requester if actor == "requester" else self.h.users[actor]
        status = request.status
        try:
            services.request_cancel(request=request, actor=user, reason="changed my mind")
        except (NotAllowed, TransitionNotAllowed) as error:
            self.reached[f"cancel of a {status} request refused: {error.code}"] += 1
            return
        except DomainError as error:  # AWS refused the stop: audited, nothing changed
            assert error.code == "aws_error"
            return
        assert actor != "carol", "someone who is neither the requester nor a lead cancelled"

    # Time ------------------------------------------------------------------------------------------

    @rule(minutes=st.sampled_from([1, 3, 40, 90, 300]), beat=st.booleans())
    def time_passes(self, minutes, beat):
        """The clock moves (past run-at times, leases, back-offs, expiry); maybe the expiry tick runs."""
        self.h.clock.advance(dt.timedelta(minutes=minutes))
        if beat:
            self.reached[f"expiry tick expired {min(services.request_expire_stale(), 1)}+"] += 1

    # Workers, broker, AWS --------------------------------------------------------------------------

    def _inject(self, fault: str) -> None:
        faults = self.h.sb.faults
        if fault == "throttled":
            faults.throttle_next(START, 3)  # every botocore attempt: AWS surely did nothing
        elif fault == "server_error":
            faults.error_next(START, "InternalServerError", n=3, status=500)
        elif fault == "sts_throttled":
            faults.error_next("AssumeRole", "Throttling", n=5)
        elif fault == "worker_dies":
            self.h.kill_after_accept = True

    def _after_attempt(self) -> None:
        self.h.kill_after_accept = False
        self.h.sb.faults.reset()  # leftover queued errors must not leak into later steps

    @rule(pk=requests)
    def message_for_any_request(self, pk):
        """A dispatch message names any request: a duplicate, a late redelivery, or a forged one."""
        self.deliver(pk, "none")

    def deliver(self, pk, fault):
        """A dispatch message arrives (first delivery, a duplicate, or a redelivery after a crash)."""
        self._inject(fault)
        try:
            self.reached[f"delivery with {fault}: {services.request_dispatch(request_id=pk)}"] += 1
        except WorkerDied:
            self.reached["worker died after AWS accepted"] += 1
        finally:
            self._after_attempt()

    @rule(data=st.data(), fault=st.sampled_from(["none", "none", "throttled", "server_error", "sts_throttled",
                                                 "worker_dies", "worker_dies"]))
    def deliver_to_an_approved_request(self, data, fault):
        """The message of a request that is due (approved, run-at passed) or starting arrives: where
        the faults matter most."""
        now = self.h.clock.now
        waiting = sorted(AutomationRequest.objects.filter(pk__in=list(self.tracked)).filter(
            Q(status=Status.DISPATCHING) | Q(status=Status.APPROVED, run_at__isnull=True)
            | Q(status=Status.APPROVED, run_at__lte=now)).values_list("pk", flat=True))
        if not waiting:
            return
        self.deliver(data.draw(st.sampled_from(waiting), label="pk"), fault)

    @rule(pk=requests)
    def publish_succeeded(self, pk):
        """The approval's on-commit publish reached the broker (the sweeper then leaves the row alone)."""
        services.dispatch_outbox_mark_enqueued(request_id=pk)

    @rule(broker=st.sampled_from(["up", "up", "refusing"]),
          fault=st.sampled_from(["none", "none", "server_error", "worker_dies"]))
    def sweep(self, broker, fault):
        """The outbox sweeper republishes due rows; each message is handled at once, or the broker refuses."""
        def publish(pk):
            if broker == "refusing":
                raise ConnectionRefusedError("Error 111 connecting to the broker")
            services.request_dispatch(request_id=pk)

        self._inject(fault)
        try:
            published = services.dispatch_outbox_sweep(publish=publish)
            self.reached[f"sweep with the broker {broker}: {'published' if published else 'nothing published'}"] += 1
        except WorkerDied:
            pass
        finally:
            self._after_attempt()

    def _aws_finishes_running_executions(self):
        """AWS's engine runs until every execution of this example ended (stopped ones end Cancelled)."""
        sb = self.h.sb
        sb.engine.start()
        try:
            for execution in self._executions():
                sb.wait_for_execution(execution["AutomationExecutionId"], timeout=30)
        finally:
            sb.engine.stop()

    @rule(aws_finished=st.booleans())
    def status_sync(self, aws_finished):
        """The status sync polls AWS and mirrors what it reports: with the runs still going, or after
        AWS's engine ran every execution of this example to its end (stopped ones end Cancelled)."""
        if aws_finished:
            self._aws_finishes_running_executions()
        self.reached[f"status sync changed {min(services.execution_statuses_sync(), 1)}+"] += 1

    @rule()
    def document_changes(self):
        """Someone deletes the runbook and creates it again under the same name: SSM calls it version 1
        again, with different steps (issue 12's content swap)."""
        self.generation += 1
        self.h.ssm.delete_document(Name=self.doc_name)
        self.h.ssm.create_document(Name=self.doc_name, Content=document_text(self.generation),
                                   DocumentType="Automation", DocumentFormat="YAML")

    @rule()
    def settle(self):
        """Everything transient clears: AWS and the broker behave, leases and back-offs run out, the
        sweeper runs. No request may stay stuck starting, and every execution AWS accepted is ours."""
        self.h.clock.advance(dt.timedelta(minutes=5))
        for _ in range(3):
            services.dispatch_outbox_sweep(publish=lambda pk: services.request_dispatch(request_id=pk))
        for pk in self.tracked:
            request = AutomationRequest.objects.get(pk=pk)
            assert request.status != Status.DISPATCHING, f"#{pk} is stuck dispatching after the sweeper ran"
            if request.status == Status.APPROVED:
                assert request.run_at and request.run_at > self.h.clock.now, \
                    f"#{pk} is approved and due but was not started"
            accepted = self._accepted(self.tracked[pk].token)
            if accepted:
                assert Execution.objects.filter(request_id=pk, execution_id=accepted[0]["AutomationExecutionId"]).exists(), \
                    f"AWS runs {accepted[0]['AutomationExecutionId']} for #{pk} but we never recorded it"

    # What AWS saw --------------------------------------------------------------------------------------

    def _executions(self) -> list[dict]:
        """Executions of this example's document, from the sandbox's own state (not via our code)."""
        sb = self.h.sb
        with sb.state.lock:
            region = sb.state.regions.get(REGION)
            raw = [e for e in region.executions.values() if e.get("DocumentName") == self.doc_name] if region else []
            return [{"AutomationExecutionId": e["AutomationExecutionId"], "ClientToken": e.get("_client_token"),
                     "Status": e["AutomationExecutionStatus"]} for e in raw]

    def _accepted(self, token: str) -> list[dict]:
        return [e for e in self._executions() if (e["ClientToken"] or "").lower() == token.lower()]

    # Invariants ---------------------------------------------------------------------------------------

    @invariant()
    def audit_chain_verifies(self):
        problem = verify_chain()
        assert problem is None, problem

    @invariant()
    def every_execution_in_aws_belongs_to_one_request(self):
        tokens = {t.token.lower() for t in self.tracked.values()}
        for execution in self._executions():
            assert (execution["ClientToken"] or "").lower() in tokens, f"started without a request's token: {execution}"

    @invariant()
    def requests_are_consistent(self):
        if not self.tracked:
            return
        requests = {r.pk: r for r in AutomationRequest.objects.filter(pk__in=list(self.tracked))}
        events_by_request: dict[int, list] = {pk: [] for pk in self.tracked}
        for request_id, action, details in (AuditEvent.objects.filter(request_id__in=list(self.tracked))
                                            .order_by("sequence").values_list("request_id", "action", "details")):
            events_by_request[request_id].append((action, details))
        approvals = {}
        for approval in Approval.objects.filter(request_id__in=list(self.tracked)):
            approvals.setdefault(approval.request_id, []).append(approval)
            assert approval.approver_id != self.tracked[approval.request_id].requester_id, \
                "the requester counts as an approver"
        for pk, tracked in self.tracked.items():
            request = requests[pk]
            events = events_by_request[pk]
            self._status_history_is_audited(request, events)
            self._terminal_stays(request, tracked)
            self._execution_is_single_and_approved(request, tracked, events, approvals.get(pk, []))

    def _status_history_is_audited(self, request, events):
        """Exactly one audit event per status change: the from/to events chain from submitted to now."""
        assert events and events[0][0] == "request.submitted", [a for a, _ in events]
        status = Status.SUBMITTED
        for action, details in events:
            if "from" in details and "to" in details:
                assert details["from"] == status, f"#{request.pk} {action}: from {details['from']}, was {status}"
                assert details["to"] in TRANSITIONS.get(status, ()), f"#{request.pk} {status} -> {details['to']}"
                status = details["to"]
        assert status == request.status, f"#{request.pk} is {request.status}; its audit trail ends at {status}"

    def _terminal_stays(self, request, tracked):
        if tracked.terminal is not None:
            assert request.status == tracked.terminal, f"#{request.pk} left terminal {tracked.terminal} for {request.status}"
        elif request.status in TERMINAL_STATUSES:
            tracked.terminal = request.status

    def _execution_is_single_and_approved(self, request, tracked, events, approvals):
        accepted = self._accepted(tracked.token)
        assert len(accepted) <= 1, f"AWS accepted {len(accepted)} executions for #{request.pk}"
        rows = list(Execution.objects.filter(request=request))
        assert len(rows) <= 1
        if rows:
            assert accepted and rows[0].execution_id == accepted[0]["AutomationExecutionId"], \
                f"#{request.pk} records {rows[0].execution_id}, AWS has {accepted}"
        reached_aws = any(d.get("to") == Status.DISPATCHING for _, d in events)
        if not reached_aws:
            assert not accepted and not rows, f"#{request.pk} started without ever being claimed for dispatch"
        if request.status in NEVER_STARTED or (
                request.status == Status.CANCELLED and not reached_aws):
            assert not accepted, f"#{request.pk} is {request.status} but AWS started it"
        if not accepted:
            return
        if tracked.started_generation is None:
            tracked.started_generation = self.generation
            if tracked.approved_generation is not None and tracked.started_generation != tracked.approved_generation:
                self.reached["started after the content changed under the approval"] += 1
        good = {a.approver_id for a in approvals
                if a.fingerprint == request.fingerprint and a.approver_id != request.requester_id}
        assert len(good) >= self.required, f"#{request.pk} started with {len(good)} of {self.required} approvals"
        assert fingerprint_for(request) == request.fingerprint, f"#{request.pk} changed after approval"
        if self.required == 0:
            assert any(action == "request.auto_approved" for action, _ in events)
        if self.check_content_binding:
            assert tracked.started_generation == tracked.approved_generation, (
                f"#{request.pk} was approved for content generation {tracked.approved_generation} "
                f"and AWS started generation {tracked.started_generation} (issue 12)")
