"""Approvals: separation of duties (service, API and database), the races (two approvers at the
same instant; approve against withdraw), IDOR, aws:approve steps answered from the portal, and a
lead deciding a multi-approver request end to end through the UI (also on the seeded demo data).
"""
import datetime as dt
import os
import threading

import boto3
import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from automations import services, tasks
from automations.errors import InvalidRequest, NotAllowed, TransitionNotAllowed
from automations.models import (
    Approval,
    AuditEvent,
    AutomationRequest,
    DispatchOutbox,
    Execution,
    Membership,
    Runbook,
    StepApproval,
    StepDecision,
    TeamRunbook,
)
from automations.services import dispatch, notifications, policies
from tests import factories as f
from tests.conftest import require_postgres, seeded_instance
from tests.processes import wait_until

Status = AutomationRequest.Status
# reliability-security.md §6 row 9 asks for 200 rounds; the default keeps the suite fast.
RACE_ROUNDS = int(os.environ.get("DELEGATE_RACE_ROUNDS", "100"))


def race(*calls):
    """Run the calls in threads released together by a barrier; each thread has its own DB connection."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait(timeout=10)
            results[index] = call()
        except Exception as error:  # noqa: BLE001 - the outcome is what the test inspects
            results[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


@pytest.fixture
def quiet_publish(monkeypatch):
    """The race tests are about the database; record publishes instead of talking to a broker."""
    published = []
    monkeypatch.setattr(dispatch, "dispatch_publish_after_approval", published.append)
    monkeypatch.setattr(notifications, "publish", lambda delivery_id: True)
    return published


def copies(request, n: int):
    """n more submitted requests like `request` (the given state, made directly: submit costs AWS calls)."""
    for _ in range(n):
        yield AutomationRequest.objects.create(
            team=request.team, requester=request.requester, runbook=request.runbook,
            runbook_version=request.runbook_version, account=request.account, region=request.region,
            parameters=request.parameters, resources=request.resources, fingerprint=request.fingerprint,
            document_hash=request.document_hash, run_as=request.run_as)


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


class TestSeparationOfDuties:
    def test_requester_never_approves_even_as_lead_and_it_is_audited(self, world, submit):
        request = submit(actor=world.frank)
        with pytest.raises(NotAllowed) as error:
            services.request_approve(request=request, actor=world.frank)
        assert error.value.code == "self_approval"
        refused = AuditEvent.objects.get(request=request, action="approval.refused")
        assert refused.actor == world.frank and refused.details["code"] == "self_approval"
        with pytest.raises(NotAllowed):
            services.request_reject(request=request, actor=world.frank)
        assert not Approval.objects.exists()

    def test_api_answers_403_with_a_stable_code(self, world, submit):
        request = submit(actor=world.bob)
        response = client_for(world.bob).post(f"/api/v1/requests/{request.pk}/approve/", {}, format="json")
        assert response.status_code == 403 and response.json()["code"] == "self_approval"

    def test_database_refuses_self_approval_and_self_step_decision(self, world, submit):
        request = submit()
        with pytest.raises(IntegrityError), transaction.atomic():
            Approval.objects.create(request=request, approver=world.alice, requester=world.alice,
                                    fingerprint=request.fingerprint)
        execution = Execution.objects.create(request=request, execution_id="0" * 36)
        entry = StepApproval.objects.create(execution=execution, step_execution_id="s-1", step_name="approve")
        with pytest.raises(IntegrityError), transaction.atomic():
            StepDecision.objects.create(step_approval=entry, approver=world.alice, requester=world.alice,
                                        decision="Approve")

    def test_other_teams_lead_gets_404_not_403(self, world, submit):
        request = submit()
        assert client_for(world.erin).post(f"/api/v1/requests/{request.pk}/approve/", {},
                                           format="json").status_code == 404
        assert client_for(world.dave).get(f"/api/v1/requests/{request.pk}/").status_code == 404
        request.refresh_from_db()
        assert request.status == Status.SUBMITTED

    def test_approval_is_bound_to_the_fingerprint(self, world, submit):
        request = services.request_approve(request=submit(), actor=world.bob)
        approval = Approval.objects.get(request=request)
        assert approval.fingerprint == request.fingerprint
        added = AuditEvent.objects.get(request=request, action="request.approval_added")
        assert added.details["fingerprint"] == request.fingerprint

    def test_emergency_flag_through_the_api(self, world, submit):
        response = client_for(world.bob).post(f"/api/v1/requests/{submit().pk}/approve/",
                                              {"emergency": True, "comment": "outage"}, format="json")
        assert response.status_code == 403 and response.json()["code"] == "no_freeze"


class TestOnePolicyPass:
    """An approval asks policy once (automations.policy.approval_decision), not once per question."""

    @pytest.fixture
    def counted(self, monkeypatch):
        from automations import policy
        from automations.policy import rules

        calls: list[str] = []
        for name in ("freeze_at", "seats", "policy_for"):
            original = getattr(rules, name)

            def counting(*args, _name=name, _original=original, **kwargs):
                calls.append(_name)
                return _original(*args, **kwargs)
            monkeypatch.setattr(rules, name, counting)  # calls inside the policy package
            monkeypatch.setattr(policy, name, counting)  # calls through the package (services, pages)
        return calls

    def test_an_emergency_approval_in_a_freeze_computes_the_freeze_once(self, world, submit, quiet_publish, counted):
        from tests.policy.test_policy import freeze

        freeze(world.platform)
        request = submit()
        counted.clear()
        services.request_approve(request=request, actor=world.bob, comment="outage", emergency=True)
        assert counted.count("freeze_at") == 1
        assert counted.count("seats") == 1
        counted.clear()
        services.request_approve(request=request, actor=world.frank, comment="confirmed", emergency=True)
        request.refresh_from_db()
        assert request.status == Status.APPROVED
        assert counted.count("freeze_at") == 1 and counted.count("seats") == 1

    def test_a_plain_approval_asks_each_question_once(self, world, submit, quiet_publish, counted):
        request = submit()
        counted.clear()
        services.request_approve(request=request, actor=world.bob)
        assert {name: counted.count(name) for name in ("freeze_at", "seats")} == {"freeze_at": 1, "seats": 1}


@pytest.mark.postgres(reason="row locks between connections")
@pytest.mark.django_db(transaction=True)
class TestRaces:
    """Separate connections, committed data, a barrier: the real thing, looped."""

    @pytest.fixture(autouse=True)
    def _postgres_only(self):
        require_postgres("row locks between connections")

    def test_two_approvers_at_once_make_one_transition_and_one_outbox_row(self, world, submit, quiet_publish):
        for request in copies(submit(), RACE_ROUNDS):
            results = race(lambda: services.request_approve(request=request, actor=world.bob),
                           lambda: services.request_approve(request=request, actor=world.frank))
            won = [r for r in results if isinstance(r, AutomationRequest)]
            lost = [r for r in results if isinstance(r, TransitionNotAllowed)]
            assert len(won) == 1 and len(lost) == 1, results
            assert won[0].status == Status.APPROVED
            # The outbox row's key is the request (at most one row by construction); what can
            # double is the transition's side effects: the publish, the audit event, the approval.
            assert quiet_publish.count(request.pk) == 1
            assert DispatchOutbox.objects.get(pk=request.pk).attempts == 0
            assert AuditEvent.objects.filter(request=request, action="request.approved").count() == 1
            assert Approval.objects.filter(request=request).count() == 1
        assert len(quiet_publish) == RACE_ROUNDS  # one publish per approved request

    def test_two_of_two_approvers_at_once_both_count_once(self, world, submit, quiet_publish):
        world.platform_policy.approvals_required = 2
        world.platform_policy.save()
        for request in copies(submit(), max(1, RACE_ROUNDS * 2 // 5)):
            results = race(lambda: services.request_approve(request=request, actor=world.bob),
                           lambda: services.request_approve(request=request, actor=world.frank))
            assert all(isinstance(r, AutomationRequest) for r in results), results
            assert sorted(r.status for r in results) == [Status.APPROVED, Status.SUBMITTED]
            assert Approval.objects.filter(request=request).count() == 2
            assert quiet_publish.count(request.pk) == 1
            assert AuditEvent.objects.filter(request=request, action="request.approved").count() == 1

    def test_approve_against_withdraw_has_one_winner(self, world, submit, quiet_publish):
        outcomes = []
        for request in copies(submit(), max(1, RACE_ROUNDS * 2 // 5)):
            results = race(lambda: services.request_approve(request=request, actor=world.bob),
                           lambda: services.request_withdraw(request=request, actor=world.alice))
            errors = [r for r in results if isinstance(r, Exception)]
            assert len(errors) == 1 and isinstance(errors[0], TransitionNotAllowed), results
            request.refresh_from_db()
            outcomes.append(request.status)
            has_outbox = DispatchOutbox.objects.filter(pk=request.pk).exists()
            assert has_outbox == (request.status == Status.APPROVED)
            assert request.status in (Status.APPROVED, Status.WITHDRAWN)
            # The winner's result is the one that returned, and only its event was recorded.
            [winner] = [r for r in results if isinstance(r, AutomationRequest)]
            assert winner.status == request.status
            finals = AuditEvent.objects.filter(request=request, action__in=("request.approved", "request.withdrawn"))
            assert list(finals.values_list("action", flat=True)) == [
                "request.approved" if request.status == Status.APPROVED else "request.withdrawn"]
        # Which one wins is the scheduler's business; a withdrawn request is never published.
        assert len(quiet_publish) == outcomes.count(Status.APPROVED)
        assert set(quiet_publish) <= {r.pk for r in AutomationRequest.objects.filter(status=Status.APPROVED)}
        print(f"approve vs withdraw over {len(outcomes)} rounds: {outcomes.count(Status.APPROVED)} approved, "
              f"{outcomes.count(Status.WITHDRAWN)} withdrawn")

    def test_two_approvers_at_once_over_http_answer_200_and_409(self, world, submit, quiet_publish):
        for request in copies(submit(), 10):
            url = f"/api/v1/requests/{request.pk}/approve/"
            codes = race(lambda: client_for(world.bob).post(url, {}, format="json").status_code,
                         lambda: client_for(world.frank).post(url, {}, format="json").status_code)
            assert sorted(codes) == [200, 409], codes
            assert quiet_publish.count(request.pk) == 1


STEP_RUNBOOK = "AWS-StopEC2InstanceWithApproval"


@pytest.fixture
def step_runbook(world):
    runbook = f.RunbookFactory(account=world.account, name=STEP_RUNBOOK)
    f.RunbookVersionFactory(runbook=runbook, filename="aws-StopEC2InstanceWithApproval.json")
    f.TeamRunbookFactory(team=world.platform, runbook=runbook)
    return runbook


def running_with_waiting_step(world, step_runbook, instance):
    request = services.request_submit(actor=world.alice, team=world.platform, runbook_id=step_runbook.pk, parameters={
        "InstanceId": [instance],
        "SNSTopicArn": "arn:aws:sns:eu-west-1:123456789012:AutomationApprovals"})
    request = services.request_approve(request=request, actor=world.bob)
    services.request_dispatch(request_id=request.pk)

    def waiting():
        services.execution_statuses_sync()
        steps = Execution.objects.get(request=request).steps
        return any(s["action"] == "aws:approve" and s["status"] == "Waiting" for s in steps)

    wait_until(waiting, timeout=30, what="the aws:approve step to wait")
    return request


class TestRunbookApproveSteps:
    def test_waiting_step_reaches_the_queue_and_frank_approves_it_as_himself(
            self, world, step_runbook, sb, client, django_capture_on_commit_callbacks, monkeypatch):
        monkeypatch.setattr(notifications, "publish", lambda delivery_id: True)
        instance = seeded_instance("api-2")
        request = running_with_waiting_step(world, step_runbook, instance)
        with django_capture_on_commit_callbacks(execute=True):
            assert policies.step_approvals_sync() == 1
        assert policies.step_approvals_sync() == 0  # once per step
        entry = StepApproval.objects.get(execution__request=request)
        assert entry.step_name == "approve" and entry.state == "waiting"
        assert AuditEvent.objects.filter(request=request, action="step.waiting").count() == 1
        assert request.notifications.filter(event="step.waiting").exists()
        # The requester and other teams cannot answer.
        with pytest.raises(NotAllowed):
            policies.step_decide(step_approval=entry, actor=world.alice, decision="Approve")
        with pytest.raises(NotAllowed):
            policies.step_decide(step_approval=entry, actor=world.erin, decision="Approve")
        client.force_login(world.frank)
        queue = client.get("/approvals/")
        assert b"Runbook steps waiting for you" in queue.content and f"#{request.pk}".encode() in queue.content
        response = client.post(f"/approvals/steps/{entry.pk}/", {"decision": "Approve", "comment": "go"})
        assert response.status_code == 302
        signal = [c for c in sb.calls if c["operation"] == "SendAutomationSignal"][-1]
        assert signal["params"]["SignalType"] == "Approve"
        assert signal["source_identity"] == "frank"
        assert signal["session_name"] == f"delegate-approve-{request.pk}-frank"
        event = AuditEvent.objects.get(request=request, action="step.approved")
        assert event.actor == world.frank and event.source_identity == "frank"
        assert event.aws_request_id == signal["aws_request_id"]
        entry.refresh_from_db()
        assert entry.state == "approved"  # MinRequiredApprovals is 1 in this runbook
        with pytest.raises(TransitionNotAllowed):
            policies.step_decide(step_approval=entry, actor=world.bob, decision="Approve")

        def finished():
            services.execution_statuses_sync()
            return AutomationRequest.objects.get(pk=request.pk).status == Status.SUCCEEDED
        try:
            wait_until(finished, timeout=30, what="the run to finish after approval")
        finally:
            boto3.client("ec2", region_name="eu-west-1", endpoint_url=sb.url).start_instances(InstanceIds=[instance])

    def test_rejecting_the_step_fails_the_run(self, world, step_runbook, sb, monkeypatch):
        monkeypatch.setattr(notifications, "publish", lambda delivery_id: True)
        request = running_with_waiting_step(world, step_runbook, seeded_instance("api-1"))
        policies.step_approvals_sync()
        entry = StepApproval.objects.get(execution__request=request)
        policies.step_decide(step_approval=entry, actor=world.bob, decision="Reject", comment="not now")
        assert AuditEvent.objects.get(request=request, action="step.rejected").details["comment"] == "not now"

        def failed():
            services.execution_statuses_sync()
            return AutomationRequest.objects.get(pk=request.pk).status == Status.FAILED
        wait_until(failed, timeout=30, what="the rejected run to fail")
        policies.step_approvals_sync()
        entry.refresh_from_db()
        assert entry.state == "rejected"


def _decide_through_the_ui(client, users, request, *, expect_texts=()):
    """Each user logs in, finds the request in the queue, reads the page, approves."""
    messages = []
    for user in users:
        client.force_login(user)
        queue = client.get("/approvals/")
        assert f"#{request.pk}".encode() in queue.content, f"{user} does not see #{request.pk} in the queue"
        page = client.get(f"/requests/{request.pk}/")
        assert page.status_code == 200 and b">Approve</button>" in page.content
        for text in expect_texts:
            assert text.encode() in page.content, text
        response = client.post(f"/requests/{request.pk}/approve/", {"comment": f"ok from {user}"}, follow=True)
        messages.append([str(m) for m in response.context["messages"]])
        assert f"#{request.pk}".encode() not in client.get("/approvals/").content
    return messages


class TestUserInterface:
    def test_recent_runs_are_this_teams_runs_of_the_runbook_on_these_targets(self, world, submit):
        """What an approver reads under "Recent runs": this team's, newest first; another team's run
        on the same target is not listed even for an approver who may see it (an auditor)."""
        from automations.web.approvals import recent_runs

        from django.contrib.auth.models import Group

        world.bob.groups.add(Group.objects.get(name="auditors"))
        ours = submit()
        theirs = submit()
        AutomationRequest.objects.filter(pk=theirs.pk).update(team=world.data)
        elsewhere = submit(parameters={"InstanceId": [world.web2]})
        newest = submit()
        bob = type(world.bob).objects.get(pk=world.bob.pk)
        assert [run.pk for run in recent_runs(bob, newest)] == [ours.pk]
        assert elsewhere.pk not in [run.pk for run in recent_runs(bob, newest)]

    def test_two_leads_decide_a_two_approver_request_end_to_end(self, world, submit, sb, client):
        world.platform_policy.approvals_required = 2
        world.platform_policy.save()
        earlier = services.request_approve(request=submit(), actor=world.bob)  # a recent run on web-1
        earlier = services.request_approve(request=earlier, actor=world.frank)
        request = submit(justification="disk full on web-1")
        messages = _decide_through_the_ui(client, [world.bob, world.frank], request, expect_texts=(
            "Policy that applies", "Needs 2 distinct approvers from the team", "AWS-RestartEC2Instance",
            world.web1, "Team=platform", "InstanceId", world.account.automation_role_arn, "eu-west-1",
            world.account.account_id, "disk full on web-1", "Recent runs", f"#{earlier.pk}",
        ))
        assert messages[0] == ["Approval recorded; more approvals are needed."]
        assert messages[1] == ["Approved; the run will start shortly."]
        request.refresh_from_db()
        assert request.status == Status.APPROVED
        assert sorted(request.approvals.values_list("approver__username", flat=True)) == ["bob", "frank"]
        page = client.get(f"/requests/{request.pk}/").content
        assert b"Approved by" in page and b">Approve</button>" not in page

    def test_requester_sees_no_approve_button_on_own_request(self, world, submit, client):
        request = submit(actor=world.bob)
        client.force_login(world.bob)
        page = client.get(f"/requests/{request.pk}/")
        assert b">Approve</button>" not in page.content
        assert client.post(f"/requests/{request.pk}/approve/", {"comment": "me"}).status_code == 302
        request.refresh_from_db()
        assert request.status == Status.SUBMITTED

    def test_delegation_page_creates_and_revokes(self, world, client):
        henry = f.UserFactory(username="henry")
        Membership.objects.create(user=henry, team=world.platform)
        client.force_login(world.bob)
        ends_at = (timezone.now() + dt.timedelta(days=5)).strftime("%Y-%m-%d %H:%M")
        too_long = (timezone.now() + dt.timedelta(days=500)).strftime("%Y-%m-%d %H:%M")
        response = client.post("/approvals/delegations/", {"team": world.platform.pk, "delegate": "henry",
                                                           "ends_at": too_long, "reason": "leave"})
        assert response.status_code == 200 and b"At most 90 days." in response.content
        response = client.post("/approvals/delegations/", {"team": world.platform.pk, "delegate": "henry",
                                                           "ends_at": ends_at, "reason": "leave"})
        assert response.status_code == 302
        delegation = world.bob.delegations_given.get()
        assert delegation.delegate == henry
        client.post(f"/approvals/delegations/{delegation.pk}/revoke/")
        delegation.refresh_from_db()
        assert delegation.revoked_at is not None
        client.force_login(world.frank)  # not frank's delegation: 404
        assert client.post(f"/approvals/delegations/{delegation.pk}/revoke/").status_code == 404

    def test_freeze_shows_and_emergency_override_through_the_form(self, world, submit, client):
        from tests.policy.test_policy import freeze

        freeze(world.platform)
        request = submit()
        client.force_login(world.bob)
        page = client.get(f"/requests/{request.pk}/").content
        assert b"Change freeze" in page and b'name="emergency"' in page
        client.post(f"/requests/{request.pk}/approve/", {"comment": "outage", "emergency": "on"})
        client.force_login(world.frank)
        client.post(f"/requests/{request.pk}/approve/", {"comment": "confirmed", "emergency": "on"})
        request.refresh_from_db()
        assert request.status == Status.APPROVED


class TestDemo:
    def test_seeded_resize_needs_bob_and_frank(self, db, sb, client, monkeypatch):
        """The demo's AWS-ResizeInstance: two approvals for platform, decided by its leads in the UI."""
        monkeypatch.setenv("AWS_ENDPOINT_URL", sb.url)
        call_command("seed_demo", stdout=open("/dev/null", "w"))
        from django.contrib.auth import get_user_model

        users = {u.username: u for u in get_user_model().objects.filter(username__in=["alice", "bob", "frank"])}
        team_policy = TeamRunbook.objects.select_related("team", "runbook").get(
            team__name="platform", runbook__name="AWS-ResizeInstance", runbook__region="eu-west-1")
        assert team_policy.approvals_required == 2
        assert sorted(team_policy.team.memberships.filter(role="lead").values_list("user__username", flat=True)) \
            == ["bob", "frank"]
        request = services.request_submit(
            actor=users["alice"], team=team_policy.team, runbook_id=team_policy.runbook_id,
            parameters={"InstanceId": seeded_instance("web-2"), "InstanceType": "t3.large"},
            justification="more memory for the cache")
        messages = _decide_through_the_ui(client, [users["bob"], users["frank"]], request,
                                          expect_texts=("Needs 2 distinct approvers", "InstanceType", "t3.large"))
        assert messages[-1] == ["Approved; the run will start shortly."]
        request.refresh_from_db()
        assert request.status == Status.APPROVED
        assert Runbook.objects.filter(name="AWS-ResizeInstance").exists()


PAUSE_RUNBOOK = "Delegate-PatchWithApproval"


@pytest.fixture
def pause_runbook(world):
    runbook = f.RunbookFactory(account=world.account, name=PAUSE_RUNBOOK)
    f.RunbookVersionFactory(runbook=runbook, filename="../own/Delegate-PatchWithApproval.yaml")
    f.TeamRunbookFactory(team=world.platform, runbook=runbook)
    return runbook


def _step_waiting(request, action: str, name: str):
    def waiting():
        services.execution_statuses_sync()
        steps = Execution.objects.get(request=request).steps
        return any(s["action"] == action and s["name"] == name and s["status"] == "Waiting" for s in steps)
    return waiting


class TestPauseSteps:
    """aws:pause steps are resumed from the portal by the request's approvers, never by the requester."""

    def test_pause_counts_in_the_badge_and_a_lead_resumes_it(self, world, pause_runbook, sb, client, monkeypatch):
        monkeypatch.setattr(notifications, "publish", lambda delivery_id: True)
        instance = seeded_instance("web-1")
        request = services.request_submit(actor=world.alice, team=world.platform, runbook_id=pause_runbook.pk,
                                          parameters={"InstanceIds": [instance]})  # Approvers: Delegate's
        request = services.request_approve(request=request, actor=world.bob)
        services.request_dispatch(request_id=request.pk)
        wait_until(_step_waiting(request, "aws:approve", "approvePatching"), timeout=30, what="the approve step")
        policies.step_approvals_sync()
        approve = StepApproval.objects.get(execution__request=request, step_name="approvePatching")
        policies.step_decide(step_approval=approve, actor=world.bob, decision="Approve", comment="patch it")
        wait_until(_step_waiting(request, "aws:pause", "verifyBeforeReboot"), timeout=30, what="the pause step")
        assert policies.step_approvals_sync() == 1
        pause = StepApproval.objects.get(execution__request=request, step_name="verifyBeforeReboot")
        assert pause.action == "aws:pause" and pause.state == "waiting"
        # A pause is resumed, not approved; the requester may not resume her own run.
        with pytest.raises(InvalidRequest):
            policies.step_decide(step_approval=pause, actor=world.bob, decision="Approve")
        with pytest.raises(NotAllowed):
            policies.step_decide(step_approval=pause, actor=world.alice, decision="Resume")
        client.force_login(world.alice)
        mine = client.get(f"/requests/{request.pk}/").content.decode()
        assert "is waiting to be resumed" in mine and "then step rebootInstances runs" in mine
        assert 'value="Resume"' not in mine
        client.force_login(world.frank)
        queue = client.get("/approvals/").content.decode()
        assert "verifyBeforeReboot" in queue and 'value="Resume"' in queue
        page = client.get(f"/requests/{request.pk}/").content.decode()
        assert 'value="Resume"' in page and "then step rebootInstances runs" in page
        assert _badge(client.get("/requests/").content.decode()) == 1  # the waiting step counts on every page
        response = client.post(f"/approvals/steps/{pause.pk}/", {"decision": "Resume", "next": "request"})
        assert response.status_code == 302 and response["Location"] == f"/requests/{request.pk}/"
        signal = [c for c in sb.calls if c["operation"] == "SendAutomationSignal"][-1]
        assert signal["params"]["SignalType"] == "Resume" and "Payload" not in signal["params"]
        assert signal["source_identity"] == "frank"
        assert signal["session_name"] == f"delegate-resume-{request.pk}-frank"
        event = AuditEvent.objects.get(request=request, action="step.resumed")
        assert event.actor == world.frank and event.aws_request_id == signal["aws_request_id"]
        pause.refresh_from_db()
        assert pause.state == "resumed"
        assert _badge(client.get("/requests/").content.decode()) == 0

        def finished():
            services.execution_statuses_sync()
            return AutomationRequest.objects.get(pk=request.pk).status == Status.SUCCEEDED
        wait_until(finished, timeout=30, what="the run to finish after Resume")


def _badge(html: str) -> int:
    """The number in the navigation's Approvals badge (0 when none is shown)."""
    import re

    found = re.search(r'Approvals\s*(?:<[^>]+>\s*)*?<span[^>]*class="[^"]*count[^"]*"[^>]*>(\d+)', html)
    return int(found.group(1)) if found else 0
